/* SPDX-License-Identifier: BSD-3-Clause
 *
 * flow_table.c: creation of a worker's flow table, and the cuckoo moves
 * that free a slot when both buckets of a new key are full (the rare path;
 * lookups, inserts and removals are inline in flow_table.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include "flow_table.h"
#include "table_memory.h"

/* Buckets are sized for both keys of every record at most this full: a
 * two-choice, 8-way cuckoo table inserts reliably well beyond it. */
#define MAX_LOAD_PERCENT 85
#define MIN_BUCKETS 8
/* Breadth-first search for a path of moves: up to three levels. */
#define BFS_NODES 128
/* Four days between wraps of the 32-bit flow clock (timeouts <= 1 day). */
#define CLOCK_WRAP_SECONDS (4 * 86400ull)

static uint32_t
bucket_count(uint32_t capacity)
{
	uint64_t keys = 2ull * capacity;
	uint64_t need = (keys * 100 + RPLB_BUCKET_SLOTS * MAX_LOAD_PERCENT - 1) /
			(RPLB_BUCKET_SLOTS * MAX_LOAD_PERCENT);

	return (uint32_t)rte_align64pow2(RTE_MAX(need, (uint64_t)MIN_BUCKETS));
}

uint32_t
rplb_flow_clock_shift(uint64_t tsc_hz)
{
	uint32_t shift = 0;

	while ((1ull << (32 + shift)) / RTE_MAX(tsc_hz, 1ull) < CLOCK_WRAP_SECONDS)
		shift++;
	return shift;
}

static size_t
overflow_bytes(uint32_t buckets)
{
	return (size_t)(buckets + 63) / 64 * sizeof(uint64_t);
}

/* The flows' records and the sentinel before them. */
static size_t
records_bytes(uint32_t capacity)
{
	return ((size_t)capacity + 1) * sizeof(struct rplb_flow);
}

/* One count of spilled keys per bucket (rplb_flow_table.spilled). */
static size_t
spilled_bytes(uint32_t buckets)
{
	return (size_t)buckets * sizeof(uint8_t);
}

/* Buckets, their overflow bits and spill counts, records and free stack of
 * a table. */
static size_t
table_bytes(uint32_t buckets, uint32_t capacity)
{
	return (size_t)buckets * sizeof(struct rplb_flow_bucket) + overflow_bytes(buckets) +
	       spilled_bytes(buckets) + records_bytes(capacity) +
	       (size_t)capacity * sizeof(uint32_t);
}

size_t
rplb_flow_table_bytes(const struct rplb_flow_table *table)
{
	return table_bytes(table->bucket_mask + 1, table->capacity);
}

void
rplb_flow_table_reset(struct rplb_flow_table *table)
{
	uint32_t i, j;

	for (i = 0; i <= table->bucket_mask; i++) {
		for (j = 0; j < RPLB_BUCKET_SLOTS; j++) {
			table->buckets[i].sig[j] = RPLB_EMPTY_SIG;
			table->buckets[i].ref[j] = RPLB_EMPTY_REF;
		}
	}
	memset(table->overflowed, 0, overflow_bytes(table->bucket_mask + 1));
	memset(table->spilled, 0, spilled_bytes(table->bucket_mask + 1));
	memset(&table->flows[RPLB_SENTINEL_RECORD], 0, sizeof(table->flows[RPLB_SENTINEL_RECORD]));
	for (i = 0; i <= table->capacity; i++)
		table->flows[i].state = RPLB_FLOW_FREE;
	/* Hand out low indices first: they are the warm part of the array. */
	for (i = 0; i < table->capacity; i++)
		table->free_stack[i] = table->capacity - 1 - i + RPLB_FIRST_FLOW_RECORD;
	table->free_count = table->capacity;
	table->aging_cursor = RPLB_FIRST_FLOW_RECORD;
}

/* The table's arrays: table_memory.h says where they live. */
static void *
table_alloc(const struct rplb_flow_table *table, size_t size, int socket_id)
{
	return rplb_table_memory_alloc("rplb_flow_table", size, socket_id, table->from_mmap);
}

static void
table_free(const struct rplb_flow_table *table, void *memory, size_t size)
{
	rplb_table_memory_free(memory, size, table->from_mmap);
}

struct rplb_flow_table *
rplb_flow_table_create(uint32_t capacity, int socket_id)
{
	struct rplb_flow_table *table;
	uint32_t buckets;

	if (capacity == 0 || capacity > RPLB_FLOW_TABLE_MAX_CAPACITY) {
		rte_errno = EINVAL;
		return NULL;
	}
	buckets = bucket_count(capacity);
	table = rte_zmalloc_socket("rplb_flow_table", sizeof(*table), RTE_CACHE_LINE_SIZE, socket_id);
	if (table == NULL)
		goto nomem;
	table->capacity = capacity;
	table->bucket_mask = buckets - 1;
	table->secondary_shift = 32 - rte_log2_u32(buckets);
	table->clock_shift = rplb_flow_clock_shift(rte_get_tsc_hz());
	table->from_mmap = rplb_table_memory_from_mmap();
	table->buckets = table_alloc(table, (size_t)buckets * sizeof(struct rplb_flow_bucket),
				     socket_id);
	table->flows = table_alloc(table, records_bytes(capacity), socket_id);
	table->free_stack = table_alloc(table, (size_t)capacity * sizeof(uint32_t), socket_id);
	table->overflowed = table_alloc(table, overflow_bytes(buckets), socket_id);
	table->spilled = table_alloc(table, spilled_bytes(buckets), socket_id);
	if (table->buckets == NULL || table->flows == NULL || table->free_stack == NULL ||
	    table->overflowed == NULL || table->spilled == NULL)
		goto nomem;
	rplb_flow_table_reset(table);
	return table;

nomem:
	rplb_flow_table_free(table);
	rte_errno = ENOMEM;
	return NULL;
}

void
rplb_flow_table_free(struct rplb_flow_table *table)
{
	if (table == NULL)
		return;
	table_free(table, table->buckets,
		   (size_t)(table->bucket_mask + 1) * sizeof(struct rplb_flow_bucket));
	table_free(table, table->flows, records_bytes(table->capacity));
	table_free(table, table->free_stack, (size_t)table->capacity * sizeof(uint32_t));
	table_free(table, table->overflowed, overflow_bytes(table->bucket_mask + 1));
	table_free(table, table->spilled, spilled_bytes(table->bucket_mask + 1));
	rte_free(table);
}

size_t
rplb_flow_table_memory(uint32_t capacity)
{
	capacity = RTE_MAX(capacity, 1u);
	return sizeof(struct rplb_flow_table) + table_bytes(bucket_count(capacity), capacity);
}

size_t
rplb_flow_table_bytes_per_flow(uint32_t capacity)
{
	capacity = RTE_MAX(capacity, 1u);
	return (table_bytes(bucket_count(capacity), capacity) + capacity - 1) / capacity;
}

/* A node of the search: a bucket, reached by moving the entry in slot
 * `slot` of its parent's bucket here (roots: the new key's own buckets). */
struct bfs_node {
	uint32_t bucket;
	int32_t parent;
	uint32_t slot;
};

static int
queued(const struct bfs_node *queue, unsigned int tail, uint32_t bucket)
{
	unsigned int i;

	for (i = 0; i < tail; i++)
		if (queue[i].bucket == bucket)
			return 1;
	return 0;
}

static void
move_entry(struct rplb_flow_table *table, uint32_t from_bucket, uint32_t from_slot,
	   uint32_t to_bucket, uint32_t to_slot)
{
	struct rplb_flow_bucket *from = &table->buckets[from_bucket];
	struct rplb_flow_bucket *to = &table->buckets[to_bucket];

	/* The signature is the key's full hash. */
	uint32_t primary = rplb_primary_bucket(table, from->sig[from_slot]);

	to->sig[to_slot] = from->sig[from_slot];
	to->ref[to_slot] = from->ref[from_slot];
	from->sig[from_slot] = RPLB_EMPTY_SIG;
	from->ref[from_slot] = RPLB_EMPTY_REF;
	/* The key moves between its two buckets: into its secondary bucket
	 * or back home, and the spill count of its primary follows. */
	rplb_note_placement(table, primary, to_bucket);
	if (from_bucket != primary)
		rplb_note_unspilled(table, primary);
}

/* Breadth-first over buckets, so the path of moves is the shortest; no
 * bucket is visited twice, so a path never moves an entry it has already
 * moved.  The moves run from the far end back to the new key's bucket:
 * each entry moves into a slot just vacated, to its other bucket. */
int64_t
rplb_flow_make_room(struct rplb_flow_table *table, uint32_t hash)
{
	struct bfs_node queue[BFS_NODES];
	unsigned int head = 0, tail = 0;
	uint32_t first = rplb_primary_bucket(table, hash), second = rplb_secondary_bucket(table, hash);

	queue[tail++] = (struct bfs_node){first, -1, 0};
	if (second != first)
		queue[tail++] = (struct bfs_node){second, -1, 0};

	for (; head < tail; head++) {
		const struct rplb_flow_bucket *bucket = &table->buckets[queue[head].bucket];
		uint32_t slot;

		for (slot = 0; slot < RPLB_BUCKET_SLOTS; slot++) {
			uint32_t sig = bucket->sig[slot];
			uint32_t home = rplb_primary_bucket(table, sig);
			uint32_t other = home == queue[head].bucket ?
					 rplb_secondary_bucket(table, sig) : home;
			uint32_t free_slots;
			int32_t node;

			if (other == queue[head].bucket)
				continue;
			free_slots = rplb_bucket_match(table->buckets[other].ref, RPLB_EMPTY_REF);
			if (free_slots != 0) {
				uint32_t vacated = slot;

				move_entry(table, queue[head].bucket, slot, other,
					   (uint32_t)__builtin_ctz(free_slots));
				for (node = (int32_t)head; queue[node].parent >= 0;
				     node = queue[node].parent) {
					const struct bfs_node *step = &queue[node];

					move_entry(table, queue[step->parent].bucket, step->slot,
						   step->bucket, vacated);
					vacated = step->slot;
				}
				return queue[node].bucket;
			}
			if (tail < BFS_NODES && !queued(queue, tail, other))
				queue[tail++] = (struct bfs_node){other, (int32_t)head, slot};
		}
	}
	return -1;
}
