/* SPDX-License-Identifier: BSD-3-Clause
 *
 * flow6_table.h: the IPv6 flows of one worker lcore (lb_ipv6.c), apart
 * from the IPv4 ones (flow_table.h) so that the IPv4 table keeps its
 * 32-byte records and 16-byte keys.
 *
 * One 72-byte record per flow, reachable through two 40-byte keys like an
 * IPv4 flow: the client-side one (client -> vip:port) and the backend-side
 * one (backend -> client).  The index is an open-addressing array of
 * (32-bit hash, 32-bit reference) slots with linear probing, four slots
 * per flow (two keys, at most half full): a lookup reads one slot line
 * and, when the hash matches, the record.  Deletion shifts the run back
 * (no tombstones), so a miss stops at the first empty slot.
 *
 * Invariants:
 *   - record 0 is never a flow: a reference of 0 is an empty slot;
 *   - a reference is index << 1 | direction;
 *   - a record's first 37 bytes are its client-side key's (client, vip,
 *     client port, vport, proto), so a client key compares with memcmp.
 *
 * Only the owning worker touches it: no locks.  Records come from a stack
 * allocated at start: nothing is allocated per packet.
 */
#ifndef RPLB_FLOW6_TABLE_H
#define RPLB_FLOW6_TABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <rte_common.h>
#include <rte_hash_crc.h>
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

#define RPLB_FLOW6_FREE 0xff            /* state of an unused record */
#define RPLB_NO_FLOW6 UINT32_MAX
/* The IPv6 flows a worker holds: its IPv4 flow table size divided by this
 * (at least RPLB_FLOW6_MIN_CAPACITY).  An IPv6 flow takes about 3.4 times
 * an IPv4 flow's memory (docs/fastpath.md, "IPv6"). */
#define RPLB_FLOW6_FRACTION 4
#define RPLB_FLOW6_MIN_CAPACITY 64

/* A 5-tuple of either direction, as on the wire (addresses, ports in
 * network order); 40 bytes, hashed as five 64-bit words. */
struct rplb_flow6_key {
	uint8_t src[16];
	uint8_t dst[16];
	uint16_t src_port;
	uint16_t dst_port;
	uint8_t proto;
	uint8_t direction;          /* RPLB_DIR_CLIENT or RPLB_DIR_BACKEND */
	uint16_t zero;
};

struct rplb_flow6 {
	/* The client-side key's first 37 bytes, in its order. */
	uint8_t client_ip[16];
	uint8_t vip[16];
	uint16_t client_port;
	uint16_t vport;
	uint8_t proto;
	uint8_t state;              /* enum rplb_flow_state, or RPLB_FLOW6_FREE */
	uint8_t state_change_flags; /* as in struct rplb_flow */
	uint8_t reserved;
	uint8_t backend_ip[16];
	/* backend_port, service_id, backend_id: the order of struct
	 * rplb_lb_backend's port, service_id, backend_id (one compare). */
	uint16_t backend_port;
	uint16_t service_id;
	uint32_t backend_id;
	uint32_t last_seen;         /* rplb_flow_clock() ticks */
	/* The L4 checksum change of a reply's rewrite (backend ip:port ->
	 * vip:port), kept up to date with the backend. */
	uint16_t to_client_l4;
	uint16_t reserved2;
};

struct rplb_flow6_slot {
	uint32_t hash;
	uint32_t ref;               /* index << 1 | direction; 0: empty */
};

struct rplb_flow6_table {
	struct rplb_flow6_slot *slots;
	struct rplb_flow6 *flows;   /* capacity + 1: record 0 unused */
	uint32_t *free_stack;
	uint32_t slot_mask;
	uint32_t free_count;
	uint32_t capacity;
	uint32_t aging_cursor;
	int from_mmap;              /* arrays from mmap, not the DPDK heap */
};

/* The capacity of the IPv6 table that goes with an IPv4 table of
 * flow_table_size flows. */
static inline uint32_t
rplb_flow6_capacity(uint32_t flow_table_size)
{
	return RTE_MAX(flow_table_size / RPLB_FLOW6_FRACTION, (uint32_t)RPLB_FLOW6_MIN_CAPACITY);
}

struct rplb_flow6_table *rplb_flow6_table_create(uint32_t capacity, int socket_id);
void rplb_flow6_table_free(struct rplb_flow6_table *table);
/* Bytes a table of this capacity takes, its header included (no EAL). */
size_t rplb_flow6_table_memory(uint32_t capacity);
void rplb_flow6_table_reset(struct rplb_flow6_table *table);

static inline uint32_t
rplb_flow6_key_hash(const struct rplb_flow6_key *key)
{
	uint64_t w[5];

	RTE_BUILD_BUG_ON(sizeof(*key) != sizeof(w));
	memcpy(w, key, sizeof(w));
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
	return (uint32_t)_mm_crc32_u64(_mm_crc32_u64(_mm_crc32_u64(_mm_crc32_u64(
		_mm_crc32_u64(0, w[0]), w[1]), w[2]), w[3]), w[4]);
#else
	return rte_hash_crc(key, sizeof(*key), 0);
#endif
}

static inline int
rplb_flow6_has_key(const struct rplb_flow6 *flow, const struct rplb_flow6_key *key)
{
	RTE_BUILD_BUG_ON(offsetof(struct rplb_flow6, proto) != offsetof(struct rplb_flow6_key, proto));
	if (key->direction == 0)
		return memcmp(flow, key, offsetof(struct rplb_flow6_key, proto) + 1) == 0;
	return memcmp(flow->backend_ip, key->src, 16) == 0 &&
	       memcmp(flow->client_ip, key->dst, 16) == 0 &&
	       flow->backend_port == key->src_port && flow->client_port == key->dst_port &&
	       flow->proto == key->proto;
}

/* The record index of key, or RPLB_NO_FLOW6. */
static inline uint32_t
rplb_flow6_lookup(const struct rplb_flow6_table *table, const struct rplb_flow6_key *key,
		  uint32_t hash)
{
	uint32_t i = hash & table->slot_mask;

	for (;; i = (i + 1) & table->slot_mask) {
		const struct rplb_flow6_slot *slot = &table->slots[i];

		if (slot->ref == 0)
			return RPLB_NO_FLOW6;
		if (slot->hash == hash && (slot->ref & 1) == key->direction &&
		    rplb_flow6_has_key(&table->flows[slot->ref >> 1], key))
			return slot->ref >> 1;
	}
}

static inline void
rplb_flow6_client_key(const struct rplb_flow6 *flow, struct rplb_flow6_key *key)
{
	memset(key, 0, sizeof(*key));
	memcpy(key->src, flow->client_ip, 16);
	memcpy(key->dst, flow->vip, 16);
	key->src_port = flow->client_port;
	key->dst_port = flow->vport;
	key->proto = flow->proto;
}

static inline void
rplb_flow6_backend_key(const uint8_t backend_ip[16], uint16_t backend_port,
		       const uint8_t client_ip[16], uint16_t client_port, uint8_t proto,
		       struct rplb_flow6_key *key)
{
	memset(key, 0, sizeof(*key));
	memcpy(key->src, backend_ip, 16);
	memcpy(key->dst, client_ip, 16);
	key->src_port = backend_port;
	key->dst_port = client_port;
	key->proto = proto;
	key->direction = 1;
}

/* Store a new flow under its client key (with its hash) and its backend
 * key; returns its index, or RPLB_NO_FLOW6 when the table is full.  The
 * record's other fields are the caller's. */
uint32_t rplb_flow6_insert(struct rplb_flow6_table *table, const struct rplb_flow6_key *client_key,
			   uint32_t client_hash, const uint8_t backend_ip[16],
			   uint16_t backend_port);
/* Forget a flow: both its keys and its record. */
void rplb_flow6_remove(struct rplb_flow6_table *table, uint32_t index);
/* The flow goes to another backend: its backend key changes. */
void rplb_flow6_move(struct rplb_flow6_table *table, uint32_t index, const uint8_t backend_ip[16],
		     uint16_t backend_port);

#endif /* RPLB_FLOW6_TABLE_H */
