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
	uint64_t need = (keys * 100 + RPLB_FT_SLOTS * MAX_LOAD_PERCENT - 1) /
			(RPLB_FT_SLOTS * MAX_LOAD_PERCENT);

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

/* The flow table's arrays are touched by the CPU only (never by a NIC), so
 * they need not come from DPDK's heap.  With hugepages they do.  Without
 * (--no-huge: VMs, containers, CI) that heap is 4 KB pages of a shared
 * memfd, which transparent huge pages do not cover, and a table of a
 * million flows then costs a TLB miss on nearly every lookup; anonymous
 * memory marked MADV_HUGEPAGE gets 2 MB pages wherever THP is "always"
 * or "madvise". */
static void *
table_alloc(struct rplb_flow_table *ft, size_t size, int socket_id)
{
	void *p;

	if (!ft->from_mmap)
		return rte_malloc_socket("rplb_flow_table", size, RTE_CACHE_LINE_SIZE, socket_id);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	/* Advice only: without THP the table still works, on 4 KB pages. */
	(void)madvise(p, size, MADV_HUGEPAGE);
	return p;
}

static void
table_free(const struct rplb_flow_table *ft, void *p, size_t size)
{
	if (p == NULL)
		return;
	if (ft->from_mmap)
		munmap(p, size);
	else
		rte_free(p);
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

/* Buckets, their overflow bits, records and free stack of a table. */
static size_t
table_bytes(uint32_t buckets, uint32_t capacity)
{
	return (size_t)buckets * sizeof(struct rplb_flow_bucket) + overflow_bytes(buckets) +
	       records_bytes(capacity) + (size_t)capacity * sizeof(uint32_t);
}

size_t
rplb_flow_table_bytes(const struct rplb_flow_table *ft)
{
	return table_bytes(ft->bucket_mask + 1, ft->capacity);
}

void
rplb_flow_table_reset(struct rplb_flow_table *ft)
{
	uint32_t i, j;

	for (i = 0; i <= ft->bucket_mask; i++) {
		for (j = 0; j < RPLB_FT_SLOTS; j++) {
			ft->buckets[i].sig[j] = RPLB_FT_EMPTY_SIG;
			ft->buckets[i].ref[j] = RPLB_FT_EMPTY;
		}
	}
	memset(ft->overflowed, 0, overflow_bytes(ft->bucket_mask + 1));
	memset(&ft->flows[RPLB_FT_SENTINEL], 0, sizeof(ft->flows[RPLB_FT_SENTINEL]));
	for (i = 0; i <= ft->capacity; i++)
		ft->flows[i].state = RPLB_FLOW_FREE;
	/* Hand out low indices first: they are the warm part of the array. */
	for (i = 0; i < ft->capacity; i++)
		ft->free_stack[i] = ft->capacity - 1 - i + RPLB_FT_FIRST_FLOW;
	ft->free_count = ft->capacity;
	ft->aging_cursor = RPLB_FT_FIRST_FLOW;
}

struct rplb_flow_table *
rplb_flow_table_create(uint32_t capacity, int socket_id)
{
	struct rplb_flow_table *ft;
	uint32_t buckets;

	if (capacity == 0 || capacity > RPLB_FT_MAX_CAPACITY) {
		rte_errno = EINVAL;
		return NULL;
	}
	buckets = bucket_count(capacity);
	ft = rte_zmalloc_socket("rplb_flow_table", sizeof(*ft), RTE_CACHE_LINE_SIZE, socket_id);
	if (ft == NULL)
		goto nomem;
	ft->capacity = capacity;
	ft->bucket_mask = buckets - 1;
	ft->alt_shift = 32 - rte_log2_u32(buckets);
	ft->clock_shift = rplb_flow_clock_shift(rte_get_tsc_hz());
	ft->from_mmap = !rte_eal_has_hugepages();
	ft->buckets = table_alloc(ft, (size_t)buckets * sizeof(struct rplb_flow_bucket),
				  socket_id);
	ft->flows = table_alloc(ft, records_bytes(capacity), socket_id);
	ft->free_stack = table_alloc(ft, (size_t)capacity * sizeof(uint32_t), socket_id);
	ft->overflowed = table_alloc(ft, overflow_bytes(buckets), socket_id);
	if (ft->buckets == NULL || ft->flows == NULL || ft->free_stack == NULL ||
	    ft->overflowed == NULL)
		goto nomem;
	rplb_flow_table_reset(ft);
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
	table_free(ft, ft->buckets, (size_t)(ft->bucket_mask + 1) * sizeof(struct rplb_flow_bucket));
	table_free(ft, ft->flows, records_bytes(ft->capacity));
	table_free(ft, ft->free_stack, (size_t)ft->capacity * sizeof(uint32_t));
	table_free(ft, ft->overflowed, overflow_bytes(ft->bucket_mask + 1));
	rte_free(ft);
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
move_entry(struct rplb_flow_table *ft, uint32_t from_bucket, uint32_t from_slot,
	   uint32_t to_bucket, uint32_t to_slot)
{
	struct rplb_flow_bucket *from = &ft->buckets[from_bucket];
	struct rplb_flow_bucket *to = &ft->buckets[to_bucket];

	to->sig[to_slot] = from->sig[from_slot];
	to->ref[to_slot] = from->ref[from_slot];
	/* The signature is the key's full hash. */
	rplb_ft_placed(ft, rplb_ft_primary(ft, to->sig[to_slot]), to_bucket);
	from->sig[from_slot] = RPLB_FT_EMPTY_SIG;
	from->ref[from_slot] = RPLB_FT_EMPTY;
}

/* Breadth-first over buckets, so the path of moves is the shortest; no
 * bucket is visited twice, so a path never moves an entry it has already
 * moved.  The moves run from the far end back to the new key's bucket:
 * each entry moves into a slot just vacated, to its other bucket. */
int64_t
rplb_flow_make_room(struct rplb_flow_table *ft, uint32_t hash)
{
	struct bfs_node queue[BFS_NODES];
	unsigned int head = 0, tail = 0;
	uint32_t first = rplb_ft_primary(ft, hash), second = rplb_ft_secondary(ft, hash);

	queue[tail++] = (struct bfs_node){first, -1, 0};
	if (second != first)
		queue[tail++] = (struct bfs_node){second, -1, 0};

	for (; head < tail; head++) {
		const struct rplb_flow_bucket *bucket = &ft->buckets[queue[head].bucket];
		uint32_t slot;

		for (slot = 0; slot < RPLB_FT_SLOTS; slot++) {
			uint32_t sig = bucket->sig[slot];
			uint32_t home = rplb_ft_primary(ft, sig);
			uint32_t other = home == queue[head].bucket ? rplb_ft_secondary(ft, sig) : home;
			uint32_t free_slots;
			int32_t node;

			if (other == queue[head].bucket)
				continue;
			free_slots = rplb_ft_match8(ft->buckets[other].ref, RPLB_FT_EMPTY);
			if (free_slots != 0) {
				uint32_t vacated = slot;

				move_entry(ft, queue[head].bucket, slot, other,
					   (uint32_t)__builtin_ctz(free_slots));
				for (node = (int32_t)head; queue[node].parent >= 0;
				     node = queue[node].parent) {
					const struct bfs_node *n = &queue[node];

					move_entry(ft, queue[n->parent].bucket, n->slot, n->bucket,
						   vacated);
					vacated = n->slot;
				}
				return queue[node].bucket;
			}
			if (tail < BFS_NODES && !queued(queue, tail, other))
				queue[tail++] = (struct bfs_node){other, (int32_t)head, slot};
		}
	}
	return -1;
}
