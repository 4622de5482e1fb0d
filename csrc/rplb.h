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
struct rplb_handoff;
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
	/* The exception path (docs/fastpath.md), when local_addr is not 0:
	 * local_addr is the IPv4 address (network byte order) of the
	 * appliance's own kernel interface on the backend network, whose port
	 * (a net_tap) is kernel_port, and this worker's queue pair on it is
	 * kernel_queue.  What the backend network sends to that address goes
	 * to the kernel, what the kernel sends goes out of the backend port.
	 * kernel_rate: frames per second this worker hands the kernel at most
	 * (a flood beyond it is dropped and counted, so that it never costs
	 * forwarding more than that); kernel_burst: how many may come at
	 * once.  All 0 (a zeroed struct): no exception path. */
	uint32_t local_addr;
	uint16_t kernel_port;
	uint16_t kernel_queue;
	uint32_t kernel_rate;
	uint32_t kernel_burst;
	/* Several workers of the load-balancing engine: the rings between
	 * them and this worker's index there (< its n_workers).  NULL: the
	 * worker is alone (or needs no steering), and nothing of the
	 * steering runs. */
	struct rplb_handoff *handoff;
	uint16_t handoff_index;
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

/* lcore_function_t: pass to rte_eal_remote_launch() with the worker.  A
 * worker stopped (and waited for) may be launched again after
 * rplb_worker_rearm(). */
int rplb_worker_main(void *worker);
void rplb_worker_request_stop(struct rplb_worker *worker);
void rplb_worker_rearm(struct rplb_worker *worker);
const struct rplb_lcore_counters *rplb_worker_counters(const struct rplb_worker *worker);

/* ---- several workers: steering and handoff ------------------------------ */

/* Both directions of a flow must reach the worker that holds it: its
 * owner, a function of the client's address (steer.h).  A worker keeps the
 * frames it owns and hands the others to their owner over a
 * single-producer, single-consumer ring, one per ordered pair of workers.
 * The rings into one worker hold about RPLB_HANDOFF_FRAMES_PER_WORKER
 * frames together (rplb_handoff_ring_size): room for a few milliseconds
 * of its traffic should it stall (an oversubscribed CPU), while the mbufs
 * they may hold grow with the workers, not with their square. */
#define RPLB_HANDOFF_FRAMES_PER_WORKER 4096
#define RPLB_HANDOFF_MIN_RING 64
/* The most workers one handoff connects (its rings grow with the square). */
#define RPLB_MAX_WORKERS 128

/* Entries of each ring between n_workers workers: the largest power of two
 * whose n_workers - 1 rings take at most RPLB_HANDOFF_FRAMES_PER_WORKER,
 * and at least RPLB_HANDOFF_MIN_RING (a ring holds one fewer frame). */
unsigned int rplb_handoff_ring_size(unsigned int n_workers);
/* The rings between n_workers (2..RPLB_MAX_WORKERS) workers, steering in
 * software.  NULL + rte_errno (EINVAL, ENOMEM). */
struct rplb_handoff *rplb_handoff_create(unsigned int n_workers, int socket_id);
/* Call after every worker using it stopped and discarded what it held. */
void rplb_handoff_free(struct rplb_handoff *handoff);
/* Bytes of DPDK heap the handoff of n_workers takes, with the handoff
 * state of its workers (computed without EAL, for operators). */
size_t rplb_handoff_memory(unsigned int n_workers);
/* The ports spread frames over the workers' queues by the client address
 * themselves (rte_flow RSS, Toeplitz with rss_key, key_len bytes, over
 * reta_size indirection entries filled round robin): only frames they
 * cannot spread by it are steered, by the same function.  Before the
 * workers are launched.  0 or -EINVAL. */
int rplb_handoff_steer_in_hardware(struct rplb_handoff *handoff, const uint8_t *rss_key,
				   unsigned int key_len, unsigned int reta_size);
/* The index of the worker that owns client_addr (network byte order). */
unsigned int rplb_handoff_owner(const struct rplb_handoff *handoff, uint32_t client_addr);
/* The same for software steering among n_workers, without a handoff (no
 * EAL needed): what tests use to place frames. */
unsigned int rplb_steer_software_owner(uint32_t client_addr, unsigned int n_workers);
/* After every worker of the handoff stopped: free what the others handed
 * to this one and it never took (counted, drop handoff_at_stop).  Returns
 * how many. */
unsigned int rplb_worker_discard_handed_over(struct rplb_worker *worker);

/* ---- load-balancing tables (built by the control plane) ---------------- */

/* A backend id: the backend's counter slot (which also indexes the
 * tables' backends) in its low RPLB_BACKEND_SLOT_BITS bits, a generation
 * above them.  Flows remember it.  The control plane bumps a slot's
 * generation whenever the slot changes hands, so an id names one backend
 * of one service for as long as flows may hold it: a flow whose backend id
 * is still configured under the flow's service_id skips the service
 * lookup.  A slot's ids repeat after RPLB_BACKEND_GENERATIONS reuses. */
#define RPLB_BACKEND_GENERATIONS (1u << (32 - RPLB_BACKEND_SLOT_BITS))

static inline uint32_t
rplb_backend_slot(uint32_t backend_id)
{
	return backend_id & (RPLB_MAX_BACKENDS - 1);
}

static inline uint32_t
rplb_backend_generation(uint32_t backend_id)
{
	return backend_id >> RPLB_BACKEND_SLOT_BITS;
}

/* generation is taken modulo RPLB_BACKEND_GENERATIONS. */
static inline uint32_t
rplb_backend_id(uint32_t slot, uint32_t generation)
{
	return (slot & (RPLB_MAX_BACKENDS - 1)) | generation << RPLB_BACKEND_SLOT_BITS;
}

/* Entries of one service's Maglev table.  The control plane requires a
 * prime size (the permutations need it); the engine does not. */
#define RPLB_MAGLEV_MIN_SIZE 3
#define RPLB_MAGLEV_MAX_SIZE 1000003
#define RPLB_MAX_WEIGHT UINT16_MAX
/* Flows per worker (the flow table's records, buckets and keys are sized
 * from it at start). */
#define RPLB_MAX_FLOW_TABLE_SIZE (1u << 24)

/* Specs handed over by Python as numpy structured arrays, in any order.
 * The dtypes are generated from rplb_layout (contract.c), so there is one
 * definition. */
/* A service and its backends are of one address family (family: 4 or 6;
 * NAT64/46 is out of scope).  An IPv4 address is in vip / ip, its vip6 /
 * ip6 all zero; an IPv6 address in vip6 / ip6, its vip / ip zero. */
struct rplb_service_spec {
	uint32_t vip;            /* IPv4, network byte order */
	uint16_t port;           /* network byte order */
	uint8_t proto;           /* IPPROTO_TCP or IPPROTO_UDP */
	uint8_t family;          /* 4 or 6 */
	uint32_t service_id;     /* stable counter slot, < RPLB_MAX_SERVICES */
	uint8_t vip6[16];        /* IPv6, network byte order */
};

struct rplb_backend_spec {
	uint32_t ip;             /* IPv4, network byte order */
	uint16_t port;           /* network byte order */
	uint16_t weight;
	uint32_t backend_id;     /* rplb_backend_id() */
	uint32_t service_id;     /* of its service spec (whose family it has) */
	uint8_t ip6[16];         /* IPv6, network byte order */
};

/* One service's Maglev table: which backend slot serves each entry.  It
 * is shared by every table generation that keeps the service unchanged
 * (reference counted: the control plane holds one reference, each
 * generation one; freed with the last), so an edit builds and copies only
 * the tables of the services it changes. */
struct rplb_maglev;

/* A table of size entries; owners[i] is an index into backend_ids (the
 * service's backends) or -1 for no backend.  The table is checked against
 * the service at every publish: each of backend_ids must be configured
 * under it.  Returns the caller's reference, or NULL + rte_errno (EINVAL,
 * ENOMEM). */
struct rplb_maglev *rplb_maglev_create(const int32_t *owners, uint32_t size,
				       const uint32_t *backend_ids, uint32_t n_backends,
				       int socket_id);
/* Drop one reference (NULL is ignored).  Any thread of the control plane. */
void rplb_maglev_release(struct rplb_maglev *maglev);
uint32_t rplb_maglev_size(const struct rplb_maglev *maglev);

/* Everything one table generation is built from. */
struct rplb_table_specs {
	const struct rplb_service_spec *services;
	uint32_t n_services;
	const struct rplb_backend_spec *backends;
	uint32_t n_backends;
	/* One per service spec, in the same order; NULL: the service has no
	 * backend of weight > 0 (new flows to it are dropped). */
	struct rplb_maglev *const *maglevs;
	uint32_t timeout_s[RPLB_FLOW_STATES];   /* by enum rplb_flow_state */
	uint32_t strict;         /* drop client traffic to backend addresses */
};

/* Bytes of DPDK heap one table generation of this size takes (computed
 * without EAL, from the sizes its allocations use).  While a change is
 * published the old generation lives on until every worker moved on:
 * twice this at peak.  The services' Maglev tables are shared between
 * generations and counted apart: rplb_lb_maglev_memory for one of size
 * entries naming n_backends backends. */
size_t rplb_lb_tables_memory(uint32_t n_services, uint32_t n_backends);
size_t rplb_lb_maglev_memory(uint32_t size, uint32_t n_backends);

struct rplb_lb_params {
	uint32_t flow_table_size;   /* flows per worker, <= RPLB_MAX_FLOW_TABLE_SIZE */
	uint32_t max_workers;
	uint32_t timeout_s[RPLB_FLOW_STATES];   /* of the first, empty tables */
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
/* Create the flow table (and counters, flow sample) of one more worker,
 * on the memory of its lcore's socket, and register the lcore with the
 * tables' RCU; returns its index or -errno.  Call before that worker is
 * launched. */
int rplb_lb_add_worker(struct rplb_lb *lb, unsigned int lcore_id);

/* Build the next table generation from specs and publish it to the
 * workers without stopping them: swap one pointer, wait until every
 * running worker has adopted it, free the generation it replaces.  Specs
 * are checked first: -EINVAL (with a log line naming the bad entry) or
 * -ENOMEM change nothing.  The flow timeouts are part of the generation.
 * Blocks (call without the GIL); concurrent calls are serialised.  The
 * specs and Maglev tables stay the caller's. */
int rplb_lb_publish(struct rplb_lb *lb, const struct rplb_table_specs *specs);

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
	uint8_t family;          /* 4: the addresses are the uint32_t ones; 6: the *_ip6 ones */
	uint8_t reserved;
	uint32_t idle_ms;
	uint8_t client_ip6[16];  /* network byte order; zero for IPv4 */
	uint8_t vip6[16];
	uint8_t backend_ip6[16];
};

#define RPLB_FLOW_SAMPLE_MAX 256

/* Ask a worker for up to max (<= RPLB_FLOW_SAMPLE_MAX) of its flows: the
 * worker copies them between bursts (only it may read its flow table).
 * Waits up to timeout_ms; returns how many were copied into out, or
 * -ETIMEDOUT (the worker is not running).  Callers serialise requests. */
int rplb_lb_flow_sample(struct rplb_lb *lb, unsigned int worker,
			struct rplb_flow_sample *out, unsigned int max, unsigned int timeout_ms);

/* Per-worker counters of the engine (index from rplb_lb_add_worker):
 * RPLB_MAX_SERVICES and RPLB_MAX_BACKENDS entries, written by that
 * worker only. */
const struct rplb_service_counters *rplb_lb_service_counters(const struct rplb_lb *lb,
							     unsigned int worker);
const struct rplb_backend_counters *rplb_lb_backend_counters(const struct rplb_lb *lb,
							     unsigned int worker);
unsigned int rplb_lb_worker_count(const struct rplb_lb *lb);
/* Flows stored in one worker's flow table now (read while it runs). */
uint32_t rplb_lb_worker_flows(const struct rplb_lb *lb, unsigned int worker);
/* Bytes of memory one stored flow costs (flow record + its two keys). */
size_t rplb_lb_flow_memory(const struct rplb_lb *lb);

/* Memory estimates for operators (rplb-dpdk --check-config), computed
 * without EAL from the sizes the allocations use; the allocator's own
 * overhead (a cache line or two per allocation) aside.  The tables:
 * rplb_lb_tables_memory and rplb_lb_maglev_memory above.  One worker's
 * state: its flow table, its fragment state, its counters, its flow
 * sample (fragment bounds as in rplb_lb_params; the held fragments' mbufs
 * come from the pool and are not counted here). */
size_t rplb_lb_worker_memory(uint32_t flow_table_size, uint32_t fragment_datagrams,
			     uint32_t fragment_held);

/* ---- what Python reads of the C side (contract.c) ---------------------- */

/* Every limit and encoding constant the control plane needs, by name. */
struct rplb_constant {
	const char *name;
	int64_t value;
};
/* Terminated by an entry with name == NULL. */
extern const struct rplb_constant rplb_constants[];

/* Fields of the structs Python reads or writes as numpy arrays.  kind:
 * 'u' or 'i' (unsigned or signed integer of size bytes), or 's' for a
 * struct named by type; count > 1 for an array field. */
struct rplb_field_layout {
	const char *struct_name;
	const char *field;
	uint32_t offset;
	uint32_t size;           /* of one element */
	uint32_t count;
	char kind;
	const char *type;        /* kind 's': the struct's name */
};
/* Terminated by an entry with struct_name == NULL. */
extern const struct rplb_field_layout rplb_layout[];

struct rplb_struct_size {
	const char *name;
	uint32_t size;
};
/* Terminated by an entry with name == NULL. */
extern const struct rplb_struct_size rplb_struct_sizes[];

#ifdef __cplusplus
}
#endif

#endif /* RPLB_H */
