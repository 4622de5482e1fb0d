/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb.h: data of the load-balancing engine.
 *
 * struct rplb_lb_tables is immutable once published: the control plane
 * builds a new generation for every change and swaps the pointer
 * (lb_tables.c); the services' Maglev tables are shared between
 * generations.  Workers read it without locks and report quiescent
 * states to the RCU.
 */
#ifndef RPLB_LB_H
#define RPLB_LB_H

#include <pthread.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_common.h>
#include <rte_hash_crc.h>
#include <rte_rcu_qsbr.h>

#include "flow6_table.h"
#include "flow_sample.h"
#include "flow_table.h"
#include "fragment_table.h"
#include "rplb.h"

#define RPLB_NO_BACKEND UINT32_MAX
#define RPLB_SERVICE_SHARED UINT16_MAX  /* backend ip:port owned by several services */
#define RPLB_NO_SERVICE UINT16_MAX      /* service_id of an unused backend slot */

struct rplb_maglev {
	uint32_t refcount;          /* atomic: the control plane's threads share it */
	uint32_t size;
	uint32_t n_backends;
	uint32_t *backend_ids;      /* the service's backends (after slots) */
	uint32_t slots[];           /* size backend slots or RPLB_NO_BACKEND */
};

struct rplb_lb_service {
	uint32_t vip;
	uint16_t port;
	uint8_t proto;
	uint8_t reserved;
	uint16_t service_id;
	uint16_t reserved2;
	uint32_t maglev_size;
	const uint32_t *maglev;     /* maglev_size backend slots or RPLB_NO_BACKEND */
};

/* At its slot (rplb_backend_slot) in rplb_lb_tables.backends.  port,
 * service_id, backend_id: the order of the same fields of a flow record,
 * so one 8-byte compare tells whether a flow's backend is configured. */
struct rplb_lb_backend {
	uint32_t ip;
	uint16_t port;
	uint16_t service_id;        /* of its service; RPLB_NO_SERVICE: unused slot */
	/* An unused slot keeps the id of its last backend: the flows that
	 * still hold it count down the slot's active_flows, flows of older
	 * owners do not (rplb_lb_count_flow_end). */
	uint32_t backend_id;
	/* Checksum changes of rewriting the service's vip:port to ip:port. */
	struct rplb_cksum_deltas to_backend;
};

/* Open-addressing slot: (vip, port, proto) -> service index.  The first
 * 8 bytes compare as one word (rplb_slot_word). */
struct rplb_service_slot {
	uint32_t vip;
	uint16_t port;
	uint8_t proto;
	uint8_t used;
	uint16_t service_index;
	const struct rplb_lb_service *service;      /* &services[service_index] */
};

/* Open-addressing slot: backend (ip, port, proto) -> owning service; same
 * first 8 bytes as rplb_service_slot. */
struct rplb_owner_slot {
	uint32_t ip;
	uint16_t port;
	uint8_t proto;
	uint8_t used;
	uint16_t service_index;     /* or RPLB_SERVICE_SHARED */
};

/* IPv6 (lb_ipv6.c): an open-addressing slot (vip6, port, proto) -> service
 * index; empty: used 0. */
struct rplb_service6_slot {
	uint8_t vip6[16];
	uint16_t port;
	uint8_t proto;
	uint8_t used;
	uint16_t service_index;
	const struct rplb_lb_service *service;
};

/* IPv6: backend (ip6, port, proto) -> owning service (or SHARED). */
struct rplb_owner6_slot {
	uint8_t ip6[16];
	uint16_t port;
	uint8_t proto;
	uint8_t used;
	uint16_t service_index;
};

/* An IPv6 address in an open-addressing set (all zero: empty; :: is never
 * a VIP or a backend, lb_tables.c refuses it). */
struct rplb_addr6_slot {
	uint8_t addr[16];
};

struct rplb_lb_tables {
	/* Generations are numbered from 1, one more per publish: a worker
	 * adopts each one it meets (adopt_tables in engine_lb.c). */
	uint64_t generation;
	uint32_t n_services;
	uint32_t n_backends;
	uint32_t service_mask;      /* slots - 1, a power of two minus one */
	uint32_t vip_mask;
	uint32_t owner_mask;
	uint32_t backend_ip_mask;
	uint32_t strict;            /* RPLB_TABLES_STRICT given */
	struct rplb_service_slot *service_slots;
	uint32_t *vip_slots;        /* 0 = empty (0.0.0.0 is never a VIP) */
	uint32_t *backend_ip_slots; /* every backend address, same scheme */
	struct rplb_owner_slot *owner_slots;
	struct rplb_lb_service *services;
	/* RPLB_MAX_BACKENDS, indexed by slot (backend_id's low bits): a flow
	 * finds its backend without an index table. */
	struct rplb_lb_backend *backends;
	/* Idle time after which a flow is forgotten, by enum rplb_flow_state,
	 * in flow clock ticks: published with the tables, so a change that
	 * fails changes no timeout either. */
	uint32_t timeout_ticks[RPLB_FLOW_STATES];
	/* Slots that changed hands in this generation (their backend id is
	 * not the one the previous generation had there), and, per slot, the
	 * generation in which its current backend took it: a worker that
	 * adopts this generation zeroes the active_flows of those slots
	 * (adopt_tables in engine_lb.c). */
	uint32_t n_reused;
	uint32_t *reused_slots;
	uint32_t *slot_taken_in;    /* RPLB_MAX_BACKENDS generation numbers (low 32 bits) */
	/* One reference per service (NULL: no Maglev table), released with
	 * the generation. */
	struct rplb_maglev **maglevs;
	/* IPv6 services (lb_ipv6.c), apart from the IPv4 ones so that the
	 * IPv4 lookups stay as they were.  Their services, backends and
	 * Maglev tables are in the arrays above (vip / ip 0 there); the
	 * 16-byte addresses are here. */
	uint32_t n_services6;
	uint32_t service6_mask;
	uint32_t vip6_mask;
	uint32_t owner6_mask;
	uint32_t backend_ip6_mask;
	struct rplb_service6_slot *service6_slots;
	struct rplb_addr6_slot *vip6_slots;
	struct rplb_addr6_slot *backend_ip6_slots;
	struct rplb_owner6_slot *owner6_slots;
	/* By service index (the services array): an IPv6 service's VIP. */
	struct rplb_addr6_slot *service_vip6;
	/* By backend slot, like backends: an IPv6 backend's address (only
	 * slots whose backend is IPv6 are written). */
	struct rplb_addr6_slot *backend_ip6;
};

/* One worker's own state: its entry of rplb_lb.workers, a cache line of
 * its own (the worker writes generation_seen).  Every piece of per-flow
 * state (flows, fragments) lives here, never in shared state, so that
 * workers fed by the client address (a client's packets, its replies, its
 * fragments and the ICMP errors quoting it all reach one worker, steer.h)
 * never look at each other's. */
struct rplb_lb_worker {
	struct rplb_flow_table *flows;
	struct rplb_flow6_table *flows6;    /* IPv6 flows (lb_ipv6.c) */
	struct rplb_fragment_table *fragments;
	struct rplb_flow_sample_slot *sample;
	struct rplb_service_counters *service_counters;
	struct rplb_backend_counters *backend_counters;
	unsigned int lcore_id;
	/* The flow clock (rplb_flow_clock) of the last housekeeping call,
	 * what every packet of the next loop iteration stamps its flow with:
	 * the worker loop reads the TSC once an iteration anyway, and a
	 * packet that read it again (rdtsc is slow in a virtual machine)
	 * would pay more for it than for its whole lookup.  A flow's idle
	 * time comes out at most one iteration short. */
	uint32_t clock_now;
	/* The generation this worker adopted last (0: none yet). */
	uint64_t generation_seen;
} __rte_cache_aligned;

struct rplb_lb {
	struct rplb_lb_tables *tables;          /* the published generation */
	struct rte_rcu_qsbr *qsbr;
	pthread_mutex_t publish_lock;           /* one publish at a time */
	uint32_t flow_table_size;
	/* Each worker's fragment state (rplb_lb_params). */
	uint32_t fragment_datagrams;
	uint32_t fragment_held;
	uint32_t fragment_timeout_s;
	int socket_id;
	unsigned int max_workers;
	unsigned int n_workers;
	struct rplb_lb_worker workers[];
};

/* rte_hash_crc_4byte without its run-time check of the CRC32 instruction. */
static inline uint32_t
rplb_crc32_4byte(uint32_t data, uint32_t init)
{
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
	return _mm_crc32_u32(init, data);
#else
	return rte_hash_crc_4byte(data, init);
#endif
}

static inline uint32_t
rplb_lookup_hash(uint32_t addr, uint16_t port, uint8_t proto)
{
	return rplb_crc32_4byte(addr, ((uint32_t)port << 8) | proto);
}

/* The (addr, port, proto, used) head of a slot as one 64-bit word: a probe
 * is one compare, and an empty slot (used 0) never equals a wanted word.
 * Built in a register where the byte order allows: built in memory, its
 * narrow stores and wide load missed store forwarding, on the path of
 * every new flow. */
static inline uint64_t
rplb_slot_word(uint32_t addr, uint16_t port, uint8_t proto)
{
#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
	RTE_BUILD_BUG_ON(offsetof(struct rplb_service_slot, port) != 4 ||
			 offsetof(struct rplb_service_slot, proto) != 6 ||
			 offsetof(struct rplb_service_slot, used) != 7);
	return addr | (uint64_t)port << 32 | (uint64_t)proto << 48 | (uint64_t)1 << 56;
#else
	struct rplb_service_slot head = {.vip = addr, .port = port, .proto = proto, .used = 1};
	uint64_t word;

	memcpy(&word, &head, sizeof(word));
	return word;
#endif
}

/* Index of the slot whose head is want, or -1 (open addressing, linear
 * probing; slots is an array of stride-byte slots). */
static inline int64_t
rplb_find_slot(const void *slots, size_t stride, uint32_t mask, uint32_t hash, uint64_t want)
{
	uint32_t i = hash & mask;

	/* Service and owner slots share the head's layout, not alignment:
	 * bytes, not a struct pointer. */
	RTE_BUILD_BUG_ON(offsetof(struct rplb_service_slot, used) !=
			 offsetof(struct rplb_owner_slot, used));
	for (;; i = (i + 1) & mask) {
		const uint8_t *slot = (const uint8_t *)slots + (size_t)i * stride;
		uint64_t word;

		memcpy(&word, slot, sizeof(word));
		if (word == want)
			return i;
		if (!slot[offsetof(struct rplb_service_slot, used)])
			return -1;
	}
}

static inline const struct rplb_lb_service *
rplb_find_service(const struct rplb_lb_tables *tables, uint32_t vip, uint16_t port,
		  uint8_t proto)
{
	int64_t i = rplb_find_slot(tables->service_slots, sizeof(*tables->service_slots),
				   tables->service_mask, rplb_lookup_hash(vip, port, proto),
				   rplb_slot_word(vip, port, proto));

	return i < 0 ? NULL : tables->service_slots[i].service;
}

/* Membership in an open-addressing set of addresses (0 marks empty). */
static inline int
rplb_address_in(const uint32_t *slots, uint32_t mask, uint32_t addr)
{
	uint32_t i = rplb_crc32_4byte(addr, 0) & mask;

	for (;; i = (i + 1) & mask) {
		if (slots[i] == 0)
			return 0;
		if (slots[i] == addr)
			return 1;
	}
}

static inline int
rplb_is_vip(const struct rplb_lb_tables *tables, uint32_t addr)
{
	return rplb_address_in(tables->vip_slots, tables->vip_mask, addr);
}

static inline int
rplb_is_backend_ip(const struct rplb_lb_tables *tables, uint32_t addr)
{
	return rplb_address_in(tables->backend_ip_slots, tables->backend_ip_mask, addr);
}

static inline const struct rplb_owner_slot *
rplb_find_owner(const struct rplb_lb_tables *tables, uint32_t ip, uint16_t port, uint8_t proto)
{
	int64_t i = rplb_find_slot(tables->owner_slots, sizeof(*tables->owner_slots),
				   tables->owner_mask, rplb_lookup_hash(ip, port, proto),
				   rplb_slot_word(ip, port, proto));

	return i < 0 ? NULL : &tables->owner_slots[i];
}

/* ---- IPv6 lookups (lb_ipv6.c) ---- */

/* Hash of a 16-byte address with a port and a protocol. */
static inline uint32_t
rplb_lookup6_hash(const uint8_t addr[16], uint16_t port, uint8_t proto)
{
	uint64_t words[2];

	memcpy(words, addr, sizeof(words));
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
	return (uint32_t)_mm_crc32_u64(_mm_crc32_u64(((uint32_t)port << 8) | proto, words[0]),
				       words[1]);
#else
	return rte_hash_crc_8byte(words[1], rte_hash_crc_8byte(words[0],
								((uint32_t)port << 8) | proto));
#endif
}

static inline int
rplb_addr6_zero(const uint8_t addr[16])
{
	uint64_t words[2];

	memcpy(words, addr, sizeof(words));
	return (words[0] | words[1]) == 0;
}

static inline int
rplb_addr6_equal(const uint8_t a[16], const uint8_t b[16])
{
	uint64_t wa[2], wb[2];

	memcpy(wa, a, sizeof(wa));
	memcpy(wb, b, sizeof(wb));
	return ((wa[0] ^ wb[0]) | (wa[1] ^ wb[1])) == 0;
}

static inline const struct rplb_lb_service *
rplb_find_service6(const struct rplb_lb_tables *tables, const uint8_t vip6[16], uint16_t port,
		   uint8_t proto)
{
	uint32_t i = rplb_lookup6_hash(vip6, port, proto) & tables->service6_mask;

	if (tables->n_services6 == 0)
		return NULL;
	for (;; i = (i + 1) & tables->service6_mask) {
		const struct rplb_service6_slot *slot = &tables->service6_slots[i];

		if (!slot->used)
			return NULL;
		if (slot->port == port && slot->proto == proto && rplb_addr6_equal(slot->vip6, vip6))
			return slot->service;
	}
}

static inline const struct rplb_owner6_slot *
rplb_find_owner6(const struct rplb_lb_tables *tables, const uint8_t ip6[16], uint16_t port,
		 uint8_t proto)
{
	uint32_t i = rplb_lookup6_hash(ip6, port, proto) & tables->owner6_mask;

	for (;; i = (i + 1) & tables->owner6_mask) {
		const struct rplb_owner6_slot *slot = &tables->owner6_slots[i];

		if (!slot->used)
			return NULL;
		if (slot->port == port && slot->proto == proto && rplb_addr6_equal(slot->ip6, ip6))
			return slot;
	}
}

static inline int
rplb_address6_in(const struct rplb_addr6_slot *slots, uint32_t mask, const uint8_t addr[16])
{
	uint32_t i = rplb_lookup6_hash(addr, 0, 0) & mask;

	for (;; i = (i + 1) & mask) {
		if (rplb_addr6_zero(slots[i].addr))
			return 0;
		if (rplb_addr6_equal(slots[i].addr, addr))
			return 1;
	}
}

static inline int
rplb_is_vip6(const struct rplb_lb_tables *tables, const uint8_t addr[16])
{
	return rplb_address6_in(tables->vip6_slots, tables->vip6_mask, addr);
}

static inline int
rplb_is_backend_ip6(const struct rplb_lb_tables *tables, const uint8_t addr[16])
{
	return rplb_address6_in(tables->backend_ip6_slots, tables->backend_ip6_mask, addr);
}

/* Maglev slot of a flow: Lemire's multiply-shift instead of a division. */
static inline uint32_t
rplb_maglev_pick(const struct rplb_lb_service *service, uint32_t flow_hash)
{
	return service->maglev[((uint64_t)flow_hash * service->maglev_size) >> 32];
}

/* A flow of this worker ends (expired, moved to another backend, or
 * replaced): its backend's slot counts one active flow fewer, unless the
 * slot has changed hands since the flow took it (the slot's count is its
 * new backend's, zeroed when the worker adopted the tables that handed it
 * over).  backends: of the generation this worker adopted. */
static inline void
rplb_lb_count_flow_end(struct rplb_lb_worker *lb_worker, const struct rplb_lb_backend *backends,
		       uint32_t backend_id)
{
	uint32_t slot = rplb_backend_slot(backend_id);

	if (likely(backends[slot].backend_id == backend_id))
		lb_worker->backend_counters[slot].active_flows--;
}

#endif /* RPLB_LB_H */
