/* SPDX-License-Identifier: BSD-3-Clause
 *
 * flow6_table.c: creation and updates of a worker's IPv6 flow table
 * (flow6_table.h).
 */
#include <errno.h>
#include <sys/mman.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include "flow6_table.h"
#include "table_memory.h"

/* Slots of the index: a power of two holding four per flow (two keys
 * each, at most half full: short probe runs). */
static uint32_t
slots_for(uint32_t capacity)
{
	uint32_t slots = 16;

	while (slots < 4 * (uint64_t)capacity)
		slots <<= 1;
	return slots;
}

size_t
rplb_flow6_table_memory(uint32_t capacity)
{
	return sizeof(struct rplb_flow6_table) +
	       (size_t)slots_for(capacity) * sizeof(struct rplb_flow6_slot) +
	       ((size_t)capacity + 1) * sizeof(struct rplb_flow6) +
	       (size_t)capacity * sizeof(uint32_t);
}

void
rplb_flow6_table_reset(struct rplb_flow6_table *table)
{
	uint32_t i;

	memset(table->slots, 0, ((size_t)table->slot_mask + 1) * sizeof(*table->slots));
	memset(table->flows, 0, ((size_t)table->capacity + 1) * sizeof(*table->flows));
	for (i = 0; i <= table->capacity; i++)
		table->flows[i].state = RPLB_FLOW6_FREE;
	/* Popped from the top: low indexes first. */
	for (i = 0; i < table->capacity; i++)
		table->free_stack[i] = table->capacity - i;
	table->free_count = table->capacity;
	table->aging_cursor = 1;
}

struct rplb_flow6_table *
rplb_flow6_table_create(uint32_t capacity, int socket_id)
{
	struct rplb_flow6_table *table;
	uint32_t slots = slots_for(capacity);

	if (capacity == 0 || capacity > (UINT32_MAX >> 3)) {
		rte_errno = EINVAL;
		return NULL;
	}
	table = rte_zmalloc_socket("rplb_flow6_table", sizeof(*table), RTE_CACHE_LINE_SIZE,
				   socket_id);
	if (table == NULL)
		goto nomem;
	table->from_mmap = rplb_table_memory_from_mmap();
	table->slot_mask = slots - 1;
	table->capacity = capacity;
	table->slots = rplb_table_memory_alloc("rplb_flow6_table",
					       (size_t)slots * sizeof(*table->slots),
					       socket_id, table->from_mmap);
	table->flows = rplb_table_memory_alloc("rplb_flow6_table",
					       ((size_t)capacity + 1) * sizeof(*table->flows),
					       socket_id, table->from_mmap);
	table->free_stack = rplb_table_memory_alloc("rplb_flow6_table",
						    (size_t)capacity * sizeof(*table->free_stack),
						    socket_id, table->from_mmap);
	if (table->slots == NULL || table->flows == NULL || table->free_stack == NULL)
		goto nomem;
	rplb_flow6_table_reset(table);
	return table;
nomem:
	rplb_flow6_table_free(table);
	rte_errno = ENOMEM;
	return NULL;
}

void
rplb_flow6_table_free(struct rplb_flow6_table *table)
{
	if (table == NULL)
		return;
	rplb_table_memory_free(table->slots,
			       ((size_t)table->slot_mask + 1) * sizeof(*table->slots),
			       table->from_mmap);
	rplb_table_memory_free(table->flows,
			       ((size_t)table->capacity + 1) * sizeof(*table->flows),
			       table->from_mmap);
	rplb_table_memory_free(table->free_stack,
			       (size_t)table->capacity * sizeof(*table->free_stack),
			       table->from_mmap);
	rte_free(table);
}

static void
slot_add(struct rplb_flow6_table *table, uint32_t hash, uint32_t ref)
{
	uint32_t i = hash & table->slot_mask;

	/* Never full: four slots per flow. */
	while (table->slots[i].ref != 0)
		i = (i + 1) & table->slot_mask;
	table->slots[i] = (struct rplb_flow6_slot){ .hash = hash, .ref = ref };
}

/* Remove the slot holding ref (found from its hash) and shift the probe
 * run after it back, so no lookup meets a hole before its key. */
static void
slot_remove(struct rplb_flow6_table *table, uint32_t hash, uint32_t ref)
{
	const uint32_t mask = table->slot_mask;
	uint32_t i = hash & mask, j, home;

	while (table->slots[i].ref != ref) {
		if (table->slots[i].ref == 0)
			return;     /* not stored (cannot happen) */
		i = (i + 1) & mask;
	}
	for (j = i;;) {
		j = (j + 1) & mask;
		if (table->slots[j].ref == 0)
			break;
		home = table->slots[j].hash & mask;
		/* Slot j may move to the hole at i unless its home lies in
		 * (i, j], cyclically. */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			table->slots[i] = table->slots[j];
			i = j;
		}
	}
	table->slots[i] = (struct rplb_flow6_slot){ 0 };
}

static uint32_t
backend_hash_of(const struct rplb_flow6 *flow)
{
	struct rplb_flow6_key key;

	rplb_flow6_backend_key(flow->backend_ip, flow->backend_port, flow->client_ip,
			       flow->client_port, flow->proto, &key);
	return rplb_flow6_key_hash(&key);
}

uint32_t
rplb_flow6_insert(struct rplb_flow6_table *table, const struct rplb_flow6_key *client_key,
		  uint32_t client_hash, const uint8_t backend_ip[16], uint16_t backend_port)
{
	struct rplb_flow6 *flow;
	uint32_t index;

	if (table->free_count == 0)
		return RPLB_NO_FLOW6;
	index = table->free_stack[--table->free_count];
	flow = &table->flows[index];
	memset(flow, 0, sizeof(*flow));
	memcpy(flow->client_ip, client_key->src, 16);
	memcpy(flow->vip, client_key->dst, 16);
	flow->client_port = client_key->src_port;
	flow->vport = client_key->dst_port;
	flow->proto = client_key->proto;
	memcpy(flow->backend_ip, backend_ip, 16);
	flow->backend_port = backend_port;
	slot_add(table, client_hash, index << 1);
	slot_add(table, backend_hash_of(flow), index << 1 | 1);
	return index;
}

void
rplb_flow6_remove(struct rplb_flow6_table *table, uint32_t index)
{
	struct rplb_flow6 *flow = &table->flows[index];
	struct rplb_flow6_key key;

	if (flow->state == RPLB_FLOW6_FREE)
		return;
	rplb_flow6_client_key(flow, &key);
	slot_remove(table, rplb_flow6_key_hash(&key), index << 1);
	slot_remove(table, backend_hash_of(flow), index << 1 | 1);
	flow->state = RPLB_FLOW6_FREE;
	table->free_stack[table->free_count++] = index;
}

void
rplb_flow6_move(struct rplb_flow6_table *table, uint32_t index, const uint8_t backend_ip[16],
		uint16_t backend_port)
{
	struct rplb_flow6 *flow = &table->flows[index];

	slot_remove(table, backend_hash_of(flow), index << 1 | 1);
	memcpy(flow->backend_ip, backend_ip, 16);
	flow->backend_port = backend_port;
	slot_add(table, backend_hash_of(flow), index << 1 | 1);
}
