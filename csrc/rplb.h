/* SPDX-License-Identifier: BSD-3-Clause
 *
 * rplb.h: the one header the Python bridge (rplb/_csrc.pxd) sees.
 *
 * The fast path is a DPDK poll-mode worker (worker.c) that receives bursts
 * on the frontend and backend ports, hands them to a pluggable engine
 * (engine_fwd.c: pass-through; engine_lb.c: reverse-proxy load balancing)
 * and sends the result with buffered, timed-drain transmission.
 *
 * Conventions: functions return 0 or a negative errno; constructors return
 * NULL and set rte_errno.  Nothing here calls rte_exit() or Python.
 */
#ifndef RPLB_H
#define RPLB_H

#include <stddef.h>
#include <stdint.h>

#include <rte_common.h>

#include "stats.h"

#ifdef __cplusplus
extern "C" {
#endif

struct rplb_worker;
struct rplb_engine;
struct rplb_lb;
struct rplb_lb_tables;

/* ---- worker ------------------------------------------------------------ */

/* The most packets a worker reads from a port at once and hands its engine
 * (its rx burst), and the size of each tx buffer.  64, not DPDK's usual 32:
 * the load balancer's bulk lookup prefetches a burst's buckets, then its
 * records, then reads them, and with twice the packets between a prefetch
 * and its read a flow table in DRAM costs less; the per-burst work is also
 * shared by more packets (docs/performance.md has the figures). */
#define RPLB_BURST 64

struct rplb_worker_params {
	uint16_t frontend_port;
	uint16_t backend_port;
	uint16_t rx_queue;
	uint16_t tx_queue;
	/* Per output side: the port offers IPv4 + TCP + UDP TX checksum offload
	 * and it was enabled at configure time. */
	uint8_t tx_cksum_offload[RPLB_SIDES];
	/* Per input side: RX checksum offload is enabled (the port flags bad
	 * checksums; without it the engine skips that test). */
	uint8_t rx_cksum_offload[RPLB_SIDES];
	uint32_t drain_us;          /* flush partially filled tx buffers after this */
	int socket_id;
};

const struct rplb_engine *rplb_engine_fwd(void);
const struct rplb_engine *rplb_engine_lb(void);
const char *rplb_engine_name(const struct rplb_engine *engine);

/* engine_state: NULL for the pass-through engine, the struct rplb_lb for
 * the load-balancing engine. */
struct rplb_worker *rplb_worker_create(const struct rplb_worker_params *params,
				       const struct rplb_engine *engine,
				       void *engine_state);
void rplb_worker_free(struct rplb_worker *worker);

/* lcore_function_t: pass to rte_eal_remote_launch() with the worker. */
int rplb_worker_main(void *worker);
void rplb_worker_request_stop(struct rplb_worker *worker);
const struct rplb_lcore_counters *rplb_worker_counters(const struct rplb_worker *worker);

/* ---- load-balancing tables (built by the control plane) ---------------- */

/* Specs handed over by Python as numpy structured arrays.  The dtypes are
 * generated from rplb_spec_layout below, so there is one definition. */
struct rplb_service_spec {
	uint32_t vip;            /* network byte order */
	uint16_t port;           /* network byte order */
	uint8_t proto;           /* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t reserved;
	uint32_t service_id;     /* stable counter slot, < RPLB_MAX_SERVICES */
	uint32_t first_backend;  /* index of its first backend spec */
	uint32_t n_backends;
};

struct rplb_backend_spec {
	uint32_t ip;             /* network byte order */
	uint16_t port;           /* network byte order */
	uint16_t weight;
	/* counter slot | generation << RPLB_BACKEND_SLOT_BITS.  Flows remember
	 * it: an id must keep naming a backend of the same vip:proto:port
	 * while flows may hold it (the control plane bumps the generation
	 * whenever a slot changes hands), because a flow whose backend id is
	 * still configured under the flow's service_id skips the service
	 * lookup. */
	uint32_t backend_id;
	uint32_t service_index;  /* index of its service spec */
};

struct rplb_field_layout {
	const char *struct_name;
	const char *field;
	uint32_t offset;
	uint32_t size;
};
/* Terminated by an entry with struct_name == NULL. */
extern const struct rplb_field_layout rplb_spec_layout[];
size_t rplb_spec_size(const char *struct_name);

struct rplb_lb_params {
	uint32_t flow_table_size;   /* flows per worker */
	uint32_t max_workers;
	uint32_t timeout_s[RPLB_FLOW_STATES];
	int socket_id;
	/* IPv4 fragments, per worker (fragment_table.h): datagrams tracked at
	 * once (0: RPLB_FRAGMENT_DEFAULT_DATAGRAMS), fragments held until
	 * their datagram's first fragment comes (mbufs out of the pool; 0:
	 * none are held, such fragments are dropped), and the seconds an
	 * incomplete datagram is kept (0: RPLB_FRAGMENT_DEFAULT_TIMEOUT_S). */
	uint32_t fragment_datagrams;
	uint32_t fragment_held;
	uint32_t fragment_timeout_s;
};

/* Shared state of the load-balancing engine: the published tables, their
 * RCU, and the per-worker flow tables.  NULL + rte_errno on failure. */
struct rplb_lb *rplb_lb_create(const struct rplb_lb_params *params);
void rplb_lb_free(struct rplb_lb *lb);
/* Create the flow table of one more worker; returns its index or -errno.
 * Call before that worker is launched. */
int rplb_lb_add_worker(struct rplb_lb *lb, unsigned int lcore_id);
int rplb_lb_set_timeouts(struct rplb_lb *lb, const uint32_t timeout_s[RPLB_FLOW_STATES]);

/* Flags of rplb_lb_tables_create. */
#define RPLB_TABLES_STRICT 1u   /* drop client traffic to backend addresses */

/* Build immutable tables from specs.  maglev is n_services * maglev_size
 * entries: the index into backends of the slot's owner, or -1.
 * NULL + rte_errno (EINVAL with a log line naming the bad entry, ENOMEM). */
struct rplb_lb_tables *rplb_lb_tables_create(const struct rplb_service_spec *services,
					     uint32_t n_services,
					     const struct rplb_backend_spec *backends,
					     uint32_t n_backends,
					     const int32_t *maglev, uint32_t maglev_size,
					     uint32_t flags, int socket_id);
void rplb_lb_tables_free(struct rplb_lb_tables *tables);

/* Publish tables to the workers without stopping them: swap the pointer,
 * wait until every worker passed a quiescent point, free the old tables.
 * Blocks (call without the GIL).  Takes ownership of tables. */
int rplb_lb_publish(struct rplb_lb *lb, struct rplb_lb_tables *tables);

/* A copy of one stored flow, for operators (rplbctl flows). */
struct rplb_flow_sample {
	uint32_t client_ip;      /* network byte order, like the other addresses */
	uint32_t vip;
	uint32_t backend_ip;
	uint16_t client_port;    /* network byte order */
	uint16_t vport;
	uint16_t backend_port;
	uint16_t service_id;
	uint32_t backend_id;
	uint8_t proto;
	uint8_t state;           /* enum rplb_flow_state */
	uint16_t reserved;
	uint32_t idle_ms;
};

#define RPLB_FLOW_SAMPLE_MAX 256

/* Ask a worker for up to max (<= RPLB_FLOW_SAMPLE_MAX) of its flows: the
 * worker copies them between bursts (only it may read its flow table).
 * Waits up to timeout_ms; returns how many were copied into out, or
 * -ETIMEDOUT (the worker is not running).  Callers serialise requests. */
int rplb_lb_flow_sample(struct rplb_lb *lb, unsigned int worker,
			struct rplb_flow_sample *out, unsigned int max, unsigned int timeout_ms);

/* Per-worker counters of the engine (index from rplb_lb_add_worker). */
const struct rplb_service_counters *rplb_lb_service_counters(const struct rplb_lb *lb,
							     unsigned int worker);
const struct rplb_backend_counters *rplb_lb_backend_counters(const struct rplb_lb *lb,
							     unsigned int worker);
unsigned int rplb_lb_worker_count(const struct rplb_lb *lb);
/* Bytes of memory one stored flow costs (flow record + its two keys). */
size_t rplb_lb_flow_memory(const struct rplb_lb *lb);

/* Memory estimates for operators (rplb-dpdk --check-config), computed
 * without EAL from the sizes the allocations use; the allocator's own
 * overhead (a cache line or two per allocation) aside.
 * One generation of tables (while a change is published, the old one
 * lives until every worker moved on: twice this at peak): */
size_t rplb_lb_tables_memory(uint32_t n_services, uint32_t n_backends, uint32_t maglev_size);
/* One worker's state: its flow table, its fragment state, its counters,
 * its flow sample (fragment bounds as in rplb_lb_params; the held
 * fragments' mbufs come from the pool and are not counted here). */
size_t rplb_lb_worker_memory(uint32_t flow_table_size, uint32_t fragment_datagrams,
			     uint32_t fragment_held);

#ifdef __cplusplus
}
#endif

#endif /* RPLB_H */
