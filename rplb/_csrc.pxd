# cython: language_level=3
# Declarations of rplb's own C API (csrc/rplb.h, csrc/stats.h) only.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t


# Limits and layouts are not declared field by field here: Python reads
# them from the tables of csrc/contract.c (rplb/contract.py), so they are
# defined once, in the C headers.
cdef extern from "stats.h" nogil:
    enum:
        RPLB_SIDES
        RPLB_DROP_REASONS
        RPLB_EVENTS
        RPLB_FLOW_STATES
        RPLB_MAX_SERVICES
        RPLB_MAX_BACKENDS

    struct rplb_lcore_counters:
        pass
    struct rplb_service_counters:
        pass
    struct rplb_backend_counters:
        pass

    const char *rplb_drop_names[]
    const char *rplb_event_names[]
    const char *rplb_flow_state_names[]
    const char *rplb_side_names[]


cdef extern from "maglev_fill.h" nogil:
    int rplb_maglev_fill(const uint32_t *offset, const uint32_t *skip, const uint32_t *weight,
                         uint32_t n, uint32_t size, int32_t *table)


cdef extern from "rplb.h" nogil:
    int RPLB_BURST
    struct rplb_worker:
        pass
    struct rplb_engine:
        pass
    struct rplb_lb:
        pass
    struct rplb_lb_tables:
        pass
    struct rplb_handoff:
        pass

    struct rplb_worker_params:
        uint16_t frontend_port
        uint16_t backend_port
        uint16_t rx_queue
        uint16_t tx_queue
        uint8_t tx_cksum_offload[RPLB_SIDES]
        uint8_t rx_cksum_offload[RPLB_SIDES]
        uint32_t drain_us
        int socket_id
        uint32_t local_addr
        uint16_t kernel_port
        uint16_t kernel_queue
        uint32_t kernel_rate
        uint32_t kernel_burst
        rplb_handoff *handoff
        uint16_t handoff_index

    const rplb_engine *rplb_engine_fwd()
    const rplb_engine *rplb_engine_lb()
    const char *rplb_engine_name(const rplb_engine *engine)
    rplb_worker *rplb_worker_create(const rplb_worker_params *params,
                                    const rplb_engine *engine, void *engine_state)
    void rplb_worker_free(rplb_worker *worker)
    int rplb_worker_main(void *worker)
    void rplb_worker_request_stop(rplb_worker *worker)
    void rplb_worker_rearm(rplb_worker *worker)
    const rplb_lcore_counters *rplb_worker_counters(const rplb_worker *worker)

    unsigned int rplb_handoff_ring_size(unsigned int n_workers)
    int RPLB_MAX_WORKERS
    rplb_handoff *rplb_handoff_create(unsigned int n_workers, int socket_id)
    void rplb_handoff_free(rplb_handoff *handoff)
    size_t rplb_handoff_memory(unsigned int n_workers)
    int rplb_handoff_steer_in_hardware(rplb_handoff *handoff, const uint8_t *rss_key,
                                       unsigned int key_len, unsigned int reta_size)
    unsigned int rplb_handoff_owner(const rplb_handoff *handoff, uint32_t client_addr)
    unsigned int rplb_steer_software_owner(uint32_t client_addr, unsigned int n_workers)
    unsigned int rplb_worker_discard_handed_over(rplb_worker *worker)

    struct rplb_service_spec:
        pass
    struct rplb_backend_spec:
        pass

    uint32_t rplb_backend_slot(uint32_t backend_id)
    uint32_t rplb_backend_generation(uint32_t backend_id)
    uint32_t rplb_backend_id(uint32_t slot, uint32_t generation)

    struct rplb_maglev:
        pass
    rplb_maglev *rplb_maglev_create(const int32_t *owners, uint32_t size,
                                    const uint32_t *backend_ids, uint32_t n_backends,
                                    int socket_id)
    void rplb_maglev_release(rplb_maglev *maglev)
    uint32_t rplb_maglev_size(const rplb_maglev *maglev)

    struct rplb_table_specs:
        const rplb_service_spec *services
        uint32_t n_services
        const rplb_backend_spec *backends
        uint32_t n_backends
        rplb_maglev **maglevs
        uint32_t timeout_s[RPLB_FLOW_STATES]
        uint32_t strict
    size_t rplb_lb_tables_memory(uint32_t n_services, uint32_t n_backends)
    size_t rplb_lb_maglev_memory(uint32_t size, uint32_t n_backends)

    struct rplb_lb_params:
        uint32_t flow_table_size
        uint32_t max_workers
        uint32_t timeout_s[RPLB_FLOW_STATES]
        int socket_id
        uint32_t fragment_datagrams
        uint32_t fragment_held
        uint32_t fragment_timeout_s

    rplb_lb *rplb_lb_create(const rplb_lb_params *params)
    void rplb_lb_free(rplb_lb *lb)
    int rplb_lb_add_worker(rplb_lb *lb, unsigned int lcore_id)
    int rplb_lb_publish(rplb_lb *lb, const rplb_table_specs *specs)
    struct rplb_flow_sample:
        uint32_t client_ip
        uint32_t vip
        uint32_t backend_ip
        uint16_t client_port
        uint16_t vport
        uint16_t backend_port
        uint16_t service_id
        uint32_t backend_id
        uint8_t proto
        uint8_t state
        uint8_t family
        uint32_t idle_ms
        uint8_t client_ip6[16]
        uint8_t vip6[16]
        uint8_t backend_ip6[16]
    int RPLB_FLOW_SAMPLE_MAX
    int rplb_lb_flow_sample(rplb_lb *lb, unsigned int worker, rplb_flow_sample *out,
                            unsigned int max, unsigned int timeout_ms)
    const rplb_service_counters *rplb_lb_service_counters(const rplb_lb *lb, unsigned int worker)
    const rplb_backend_counters *rplb_lb_backend_counters(const rplb_lb *lb, unsigned int worker)
    unsigned int rplb_lb_worker_count(const rplb_lb *lb)
    uint32_t rplb_lb_worker_flows(const rplb_lb *lb, unsigned int worker)
    size_t rplb_lb_flow_memory(const rplb_lb *lb)
    size_t rplb_lb_worker_memory(uint32_t flow_table_size, uint32_t fragment_datagrams,
                                 uint32_t fragment_held)


cdef extern from "fragment_table.h" nogil:
    uint32_t RPLB_FRAGMENT_DEFAULT_DATAGRAMS
    uint32_t RPLB_FRAGMENT_DEFAULT_HELD
    uint32_t RPLB_FRAGMENT_DEFAULT_TIMEOUT_S

    struct rplb_constant:
        const char *name
        int64_t value
    const rplb_constant rplb_constants[]
    struct rplb_field_layout:
        const char *struct_name
        const char *field
        uint32_t offset
        uint32_t size
        uint32_t count
        char kind
        const char *type
    const rplb_field_layout rplb_layout[]
    struct rplb_struct_size:
        const char *name
        uint32_t size
    const rplb_struct_size rplb_struct_sizes[]


cdef extern from "telemetry.h" nogil:
    int RPLB_TEL_NAME_LEN
    int RPLB_TEL_STATS
    int RPLB_TEL_SERVICES
    struct rplb_tel_entry:
        char group[64]
        char name[64]
        char str[64]
        uint64_t value
        uint8_t is_str
    int rplb_telemetry_register()
    int rplb_telemetry_publish(unsigned int cmd, const rplb_tel_entry *entries, unsigned int n)


cdef extern from "metrics_text.h" nogil:
    size_t rplb_metrics_family_bound(size_t name_length, const uint64_t *label_offsets,
                                     size_t rows)
    int64_t rplb_metrics_write_family(char *out, size_t capacity, const char *name,
                                      size_t name_length, const char *labels,
                                      size_t labels_length, const uint64_t *label_offsets,
                                      const int64_t *values, size_t rows)
