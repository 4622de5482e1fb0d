/* SPDX-License-Identifier: BSD-3-Clause
 *
 * flow_table.h: the flows of one worker lcore.
 *
 * One record per flow, reachable through two rte_hash keys: the client-side
 * 5-tuple (client -> vip:port) and the backend-side one (backend -> client),
 * so both directions find it with one bulk lookup.  Only the owning worker
 * touches it: no locks, no RCU.  Records come from a preallocated stack:
 * nothing is allocated per packet.
 */
#ifndef RPLB_FLOW_TABLE_H
#define RPLB_FLOW_TABLE_H

#include <stdint.h>

#include <rte_debug.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
#include <nmmintrin.h>
#endif
#include <string.h>

#include "packet.h"

#define RPLB_NO_FLOW UINT32_MAX

struct rplb_flow {
	struct rplb_flow_key client_key;
	uint32_t backend_ip;
	uint16_t backend_port;
	uint16_t service_id;
	uint32_t backend_id;
	uint8_t state;              /* enum rplb_flow_state */
	uint8_t in_use;
	uint16_t reserved;
	uint64_t last_seen_tsc;
};

struct rplb_flow_table {
	struct rte_hash *keys;      /* key -> (void *)(uintptr_t)record index */
	struct rplb_flow *flows;
	uint32_t *free_stack;
	uint32_t free_count;
	uint32_t capacity;
	uint32_t aging_cursor;
};

struct rplb_flow_table *rplb_flow_table_create(const char *name, uint32_t capacity,
					       int socket_id);
void rplb_flow_table_free(struct rplb_flow_table *ft);
/* Bytes one stored flow costs: its record plus two keys in the hash. */
size_t rplb_flow_table_bytes_per_flow(void);

/* rte_hash_crc(key, 16, 0), without its loop and its run-time check of
 * the CRC32 instruction (the build's -march has SSE4.2). */
static inline uint32_t
rplb_flow_key_hash(const struct rplb_flow_key *key)
{
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
	uint64_t w[2];

	memcpy(w, key, sizeof(w));
	return (uint32_t)_mm_crc32_u64(_mm_crc32_u64(0, w[0]), w[1]);
#else
	return rte_hash_crc(key, sizeof(*key), 0);
#endif
}

static inline void
rplb_backend_key(const struct rplb_flow *flow, struct rplb_flow_key *key)
{
	key->src_ip = flow->backend_ip;
	key->dst_ip = flow->client_key.src_ip;
	key->src_port = flow->backend_port;
	key->dst_port = flow->client_key.src_port;
	key->proto = flow->client_key.proto;
	key->direction = RPLB_DIR_BACKEND;
	key->zero = 0;
}

/* Store a new flow under both keys.  Returns its record index, or
 * RPLB_NO_FLOW when the table is full (nothing is left half-inserted). */
static inline uint32_t
rplb_flow_insert(struct rplb_flow_table *ft, const struct rplb_flow_key *client_key,
		 uint32_t client_hash, uint32_t backend_ip, uint16_t backend_port)
{
	struct rplb_flow_key backend_key;
	struct rplb_flow *flow;
	uint32_t index;

	if (unlikely(ft->free_count == 0))
		return RPLB_NO_FLOW;
	index = ft->free_stack[ft->free_count - 1];
	flow = &ft->flows[index];
	flow->client_key = *client_key;
	flow->backend_ip = backend_ip;
	flow->backend_port = backend_port;
	rplb_backend_key(flow, &backend_key);

	if (unlikely(rte_hash_add_key_with_hash_data(ft->keys, client_key, client_hash,
						     (void *)(uintptr_t)index) < 0))
		return RPLB_NO_FLOW;
	if (unlikely(rte_hash_add_key_with_hash_data(ft->keys, &backend_key,
						     rplb_flow_key_hash(&backend_key),
						     (void *)(uintptr_t)index) < 0)) {
		rte_hash_del_key_with_hash(ft->keys, client_key, client_hash);
		return RPLB_NO_FLOW;
	}
	ft->free_count--;
	flow->in_use = 1;
	return index;
}

/* Point an existing flow at another backend (its old one was removed). */
static inline int
rplb_flow_move(struct rplb_flow_table *ft, uint32_t index, uint32_t backend_ip,
	       uint16_t backend_port)
{
	struct rplb_flow *flow = &ft->flows[index];
	struct rplb_flow_key backend_key;

	rplb_backend_key(flow, &backend_key);
	rte_hash_del_key_with_hash(ft->keys, &backend_key, rplb_flow_key_hash(&backend_key));
	flow->backend_ip = backend_ip;
	flow->backend_port = backend_port;
	rplb_backend_key(flow, &backend_key);
	return rte_hash_add_key_with_hash_data(ft->keys, &backend_key,
					       rplb_flow_key_hash(&backend_key),
					       (void *)(uintptr_t)index);
}

static inline void
rplb_flow_remove(struct rplb_flow_table *ft, uint32_t index)
{
	struct rplb_flow *flow = &ft->flows[index];
	struct rplb_flow_key backend_key;

	RTE_ASSERT(flow->in_use && ft->free_count < ft->capacity);
	rplb_backend_key(flow, &backend_key);
	rte_hash_del_key_with_hash(ft->keys, &flow->client_key,
				   rplb_flow_key_hash(&flow->client_key));
	rte_hash_del_key_with_hash(ft->keys, &backend_key, rplb_flow_key_hash(&backend_key));
	flow->in_use = 0;
	ft->free_stack[ft->free_count++] = index;
}

#endif /* RPLB_FLOW_TABLE_H */
