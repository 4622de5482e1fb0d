/* SPDX-License-Identifier: BSD-3-Clause */
#include <errno.h>
#include <stdio.h>

#include <rte_errno.h>
#include <rte_malloc.h>

#include "flow_table.h"

struct rplb_flow_table *
rplb_flow_table_create(const char *name, uint32_t capacity, int socket_id)
{
	struct rte_hash_parameters params = {
		.name = name,
		/* Two keys per flow; rte_hash needs at least 8 entries. */
		.entries = RTE_MAX(2 * capacity, 8u),
		.key_len = sizeof(struct rplb_flow_key),
		.hash_func = rte_hash_crc,
		.hash_func_init_val = 0,
		.socket_id = socket_id,
		/* Extendable buckets: the table holds all its entries instead of
		 * failing inserts early on cuckoo-path exhaustion. */
		.extra_flag = RTE_HASH_EXTRA_FLAGS_EXT_TABLE,
	};
	struct rplb_flow_table *ft;
	uint32_t i;

	if (capacity == 0) {
		rte_errno = EINVAL;
		return NULL;
	}
	ft = rte_zmalloc_socket("rplb_flow_table", sizeof(*ft), RTE_CACHE_LINE_SIZE, socket_id);
	if (ft == NULL)
		goto nomem;
	ft->capacity = capacity;
	ft->flows = rte_zmalloc_socket("rplb_flows", (size_t)capacity * sizeof(struct rplb_flow),
				       RTE_CACHE_LINE_SIZE, socket_id);
	ft->free_stack = rte_malloc_socket("rplb_flow_free", (size_t)capacity * sizeof(uint32_t),
					   RTE_CACHE_LINE_SIZE, socket_id);
	if (ft->flows == NULL || ft->free_stack == NULL)
		goto nomem;
	ft->keys = rte_hash_create(&params);
	if (ft->keys == NULL) {
		int err = rte_errno;

		rplb_flow_table_free(ft);
		rte_errno = err;
		return NULL;
	}
	/* Hand out low indices first: they are the warm part of the array. */
	for (i = 0; i < capacity; i++)
		ft->free_stack[i] = capacity - 1 - i;
	ft->free_count = capacity;
	return ft;

nomem:
	rplb_flow_table_free(ft);
	rte_errno = ENOMEM;
	return NULL;
}

void
rplb_flow_table_free(struct rplb_flow_table *ft)
{
	if (ft == NULL)
		return;
	rte_hash_free(ft->keys);
	rte_free(ft->flows);
	rte_free(ft->free_stack);
	rte_free(ft);
}

size_t
rplb_flow_table_bytes_per_flow(void)
{
	/* rte_hash stores per entry the key, a data pointer, and in its buckets
	 * a 16-bit signature and a 32-bit key index; ext buckets double that. */
	size_t per_key = sizeof(struct rplb_flow_key) + sizeof(void *) + 2 * (2 + 4);

	return sizeof(struct rplb_flow) + sizeof(uint32_t) + 2 * per_key;
}
