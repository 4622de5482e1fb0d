/* SPDX-License-Identifier: BSD-3-Clause
 *
 * fragment_table.c: the datagrams in fragments of one worker (see
 * fragment_table.h).  Only fragments come here, so none of this is on the
 * path of an unfragmented packet.
 *
 * The datagrams are found through open addressing (linear probing over a
 * power-of-two array of indices at most half full; removal shifts the
 * following entries back, so no tombstones pile up), and kept in a list
 * by age, oldest first: all share one timeout, so the oldest is the first
 * to expire, and the one a new datagram replaces when the table is full.
 * Held fragments sit in an array of their own, chained per datagram in
 * arrival order.
 */
#include <errno.h>
#include <string.h>

#include <rte_common.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include "fragment_table.h"
#include "lb.h"

static uint32_t
slot_count(uint32_t max_datagrams)
{
	return (uint32_t)rte_align32pow2(RTE_MAX(2 * max_datagrams, 8u));
}

size_t
rplb_fragment_table_memory(uint32_t max_datagrams, uint32_t max_held)
{
	return sizeof(struct rplb_fragment_table) +
	       (size_t)max_datagrams * (sizeof(struct rplb_fragment_datagram) + sizeof(uint32_t)) +
	       (size_t)slot_count(max_datagrams) * sizeof(uint32_t) +
	       (size_t)max_held * (sizeof(struct rte_mbuf *) + sizeof(uint16_t));
}

struct rplb_fragment_table *
rplb_fragment_table_create(uint32_t max_datagrams, uint32_t max_held, uint32_t timeout_ticks,
			   int socket_id)
{
	struct rplb_fragment_table *table;
	uint32_t i, slots = slot_count(max_datagrams);

	if (max_datagrams == 0 || max_datagrams > RPLB_FRAGMENT_MAX_DATAGRAMS ||
	    max_held > RPLB_FRAGMENT_MAX_HELD || timeout_ticks == 0) {
		rte_errno = EINVAL;
		return NULL;
	}
	table = rte_zmalloc_socket("rplb_fragments", sizeof(*table), RTE_CACHE_LINE_SIZE,
				   socket_id);
	if (table == NULL)
		goto nomem;
	table->datagrams = rte_zmalloc_socket("rplb_fragments",
					      (size_t)max_datagrams * sizeof(*table->datagrams),
					      RTE_CACHE_LINE_SIZE, socket_id);
	table->slots = rte_malloc_socket("rplb_fragments", (size_t)slots * sizeof(uint32_t),
					 RTE_CACHE_LINE_SIZE, socket_id);
	table->free_datagrams = rte_malloc_socket("rplb_fragments",
						  (size_t)max_datagrams * sizeof(uint32_t),
						  RTE_CACHE_LINE_SIZE, socket_id);
	/* One entry at least, so that no pointer is NULL with max_held 0. */
	table->held_frames = rte_zmalloc_socket("rplb_fragments",
						(size_t)RTE_MAX(max_held, 1u) * sizeof(struct rte_mbuf *),
						RTE_CACHE_LINE_SIZE, socket_id);
	table->held_next = rte_malloc_socket("rplb_fragments",
					     (size_t)RTE_MAX(max_held, 1u) * sizeof(uint16_t),
					     RTE_CACHE_LINE_SIZE, socket_id);
	if (table->datagrams == NULL || table->slots == NULL || table->free_datagrams == NULL ||
	    table->held_frames == NULL || table->held_next == NULL)
		goto nomem;
	table->slot_mask = slots - 1;
	table->max_datagrams = max_datagrams;
	table->max_held = max_held;
	table->timeout_ticks = timeout_ticks;
	for (i = 0; i < slots; i++)
		table->slots[i] = RPLB_NO_DATAGRAM;
	/* Low indices on top: they are handed out first. */
	for (i = 0; i < max_datagrams; i++)
		table->free_datagrams[i] = max_datagrams - 1 - i;
	table->n_free_datagrams = max_datagrams;
	for (i = 0; i < max_held; i++)
		table->held_next[i] = i + 1 < max_held ? (uint16_t)(i + 1) : RPLB_NO_HELD;
	table->free_held = max_held > 0 ? 0 : RPLB_NO_HELD;
	table->oldest = table->newest = RPLB_NO_DATAGRAM;
	return table;

nomem:
	rplb_fragment_table_free(table);
	rte_errno = ENOMEM;
	return NULL;
}

void
rplb_fragment_table_free(struct rplb_fragment_table *table)
{
	struct rplb_fragment_losses losses = {0, 0};

	if (table == NULL)
		return;
	if (table->datagrams != NULL && table->slots != NULL && table->held_frames != NULL &&
	    table->held_next != NULL && table->free_datagrams != NULL)
		rplb_fragment_flush(table, &losses);
	rte_free(table->datagrams);
	rte_free(table->slots);
	rte_free(table->free_datagrams);
	rte_free(table->held_frames);
	rte_free(table->held_next);
	rte_free(table);
}

static uint32_t
key_hash(const struct rplb_fragment_key *key)
{
	uint32_t words[sizeof(*key) / sizeof(uint32_t)], hash = 0;
	unsigned int i;

	RTE_BUILD_BUG_ON(sizeof(*key) != 40);
	memcpy(words, key, sizeof(words));
	for (i = 0; i < RTE_DIM(words); i++)
		hash = rplb_crc32_4byte(words[i], hash);
	return hash;
}

static uint32_t
home_slot(const struct rplb_fragment_table *table, const struct rplb_fragment_datagram *datagram)
{
	return key_hash(&datagram->key) & table->slot_mask;
}

uint32_t
rplb_fragment_find(const struct rplb_fragment_table *table, const struct rplb_fragment_key *key)
{
	uint32_t slot = key_hash(key) & table->slot_mask;

	for (;; slot = (slot + 1) & table->slot_mask) {
		uint32_t index = table->slots[slot];

		if (index == RPLB_NO_DATAGRAM ||
		    memcmp(&table->datagrams[index].key, key, sizeof(*key)) == 0)
			return index;
	}
}

/* Free the datagram's held frames; how many. */
static uint64_t
free_held(struct rplb_fragment_table *table, uint32_t index)
{
	struct rte_mbuf *m;
	uint64_t freed = 0;

	while ((m = rplb_fragment_next_held(table, index)) != NULL) {
		rte_pktmbuf_free(m);
		freed++;
	}
	return freed;
}

void
rplb_fragment_remove(struct rplb_fragment_table *table, uint32_t index,
		     struct rplb_fragment_losses *losses)
{
	struct rplb_fragment_datagram *datagram = &table->datagrams[index];
	uint32_t slot = home_slot(table, datagram), next;

	losses->frames += free_held(table, index);
	while (table->slots[slot] != index)
		slot = (slot + 1) & table->slot_mask;
	/* Backward-shift deletion: an entry after the hole moves into it
	 * when its home slot does not lie (cyclically) between the hole and
	 * the entry, so every entry stays reachable from its home slot. */
	for (next = (slot + 1) & table->slot_mask; table->slots[next] != RPLB_NO_DATAGRAM;
	     next = (next + 1) & table->slot_mask) {
		uint32_t home = home_slot(table, &table->datagrams[table->slots[next]]);

		if (((next - home) & table->slot_mask) >= ((next - slot) & table->slot_mask)) {
			table->slots[slot] = table->slots[next];
			slot = next;
		}
	}
	table->slots[slot] = RPLB_NO_DATAGRAM;
	/* Out of the age list. */
	if (datagram->older != RPLB_NO_DATAGRAM)
		table->datagrams[datagram->older].newer = datagram->newer;
	else
		table->oldest = datagram->newer;
	if (datagram->newer != RPLB_NO_DATAGRAM)
		table->datagrams[datagram->newer].older = datagram->older;
	else
		table->newest = datagram->older;
	table->free_datagrams[table->n_free_datagrams++] = index;
}

uint32_t
rplb_fragment_create(struct rplb_fragment_table *table, const struct rplb_fragment_key *key,
		     uint32_t now, struct rplb_fragment_losses *losses)
{
	struct rplb_fragment_datagram *datagram;
	uint32_t index, slot;

	if (table->n_free_datagrams == 0) {
		/* Full: the oldest goes, so that a flood of datagrams never
		 * completed cannot keep new ones out. */
		losses->datagrams++;
		rplb_fragment_remove(table, table->oldest, losses);
	}
	index = table->free_datagrams[--table->n_free_datagrams];
	datagram = &table->datagrams[index];
	*datagram = (struct rplb_fragment_datagram){
		.key = *key,
		.verdict = RPLB_FRAGMENT_PENDING,
		.first_held = RPLB_NO_HELD, .last_held = RPLB_NO_HELD,
		.count = RPLB_FRAGMENT_COUNT_NONE, .created = now,
		.older = table->newest, .newer = RPLB_NO_DATAGRAM,
	};
	if (table->newest != RPLB_NO_DATAGRAM)
		table->datagrams[table->newest].newer = index;
	else
		table->oldest = index;
	table->newest = index;
	for (slot = home_slot(table, datagram); table->slots[slot] != RPLB_NO_DATAGRAM;
	     slot = (slot + 1) & table->slot_mask)
		;
	table->slots[slot] = index;
	return index;
}

enum rplb_fragment_news
rplb_fragment_add(struct rplb_fragment_datagram *datagram, uint32_t offset, uint32_t end,
		  int more)
{
	uint16_t (*runs)[2] = datagram->runs;
	unsigned int i, n = datagram->n_runs, first, last;

	/* Whole, or partly, beyond the end a last fragment gave; or a last
	 * fragment that ends before what came. */
	if (datagram->last_seen && (end > datagram->end || (!more && end != datagram->end)))
		return RPLB_FRAGMENT_OVERLAP;
	for (i = 0; i < n; i++) {
		if (offset >= runs[i][0] && end <= runs[i][1])
			return RPLB_FRAGMENT_DUPLICATE;
		if (offset < runs[i][1] && end > runs[i][0])
			return RPLB_FRAGMENT_OVERLAP;
	}
	if (!more && n > 0 && runs[n - 1][1] > end)
		return RPLB_FRAGMENT_OVERLAP;
	/* The runs this one touches (ends meeting), merged with it. */
	for (first = 0; first < n && runs[first][1] < offset; first++)
		;
	for (last = first; last < n && runs[last][0] <= end; last++)
		;
	/* [first, last): the runs it joins (none: it goes in at first). */
	if (first == last) {
		if (n == RPLB_FRAGMENT_RUNS)
			return RPLB_FRAGMENT_SCATTERED;
		memmove(&runs[first + 1], &runs[first], (n - first) * sizeof(runs[0]));
		runs[first][0] = (uint16_t)offset;
		runs[first][1] = (uint16_t)end;
		datagram->n_runs = (uint8_t)(n + 1);
	} else {
		runs[first][0] = (uint16_t)RTE_MIN((uint32_t)runs[first][0], offset);
		runs[first][1] = (uint16_t)RTE_MAX((uint32_t)runs[last - 1][1], end);
		memmove(&runs[first + 1], &runs[last], (n - last) * sizeof(runs[0]));
		datagram->n_runs = (uint8_t)(n - (last - first - 1));
	}
	if (!more) {
		datagram->last_seen = 1;
		datagram->end = (uint16_t)end;
	}
	return RPLB_FRAGMENT_NEW;
}

int
rplb_fragment_complete(const struct rplb_fragment_datagram *datagram)
{
	return datagram->last_seen && datagram->n_runs == 1 && datagram->runs[0][0] == 0 &&
	       datagram->runs[0][1] == datagram->end;
}

int
rplb_fragment_hold(struct rplb_fragment_table *table, uint32_t index, struct rte_mbuf *m)
{
	struct rplb_fragment_datagram *datagram = &table->datagrams[index];
	uint16_t held = table->free_held;

	if (held == RPLB_NO_HELD)
		return -1;
	table->free_held = table->held_next[held];
	table->held_frames[held] = m;
	table->held_next[held] = RPLB_NO_HELD;
	if (datagram->last_held != RPLB_NO_HELD)
		table->held_next[datagram->last_held] = held;
	else
		datagram->first_held = held;
	datagram->last_held = held;
	datagram->held++;
	table->n_held++;
	return 0;
}

struct rte_mbuf *
rplb_fragment_next_held(struct rplb_fragment_table *table, uint32_t index)
{
	struct rplb_fragment_datagram *datagram = &table->datagrams[index];
	uint16_t held = datagram->first_held;
	struct rte_mbuf *m;

	if (held == RPLB_NO_HELD)
		return NULL;
	m = table->held_frames[held];
	table->held_frames[held] = NULL;
	datagram->first_held = table->held_next[held];
	if (datagram->first_held == RPLB_NO_HELD)
		datagram->last_held = RPLB_NO_HELD;
	table->held_next[held] = table->free_held;
	table->free_held = held;
	datagram->held--;
	table->n_held--;
	return m;
}

unsigned int
rplb_fragment_expire(struct rplb_fragment_table *table, uint32_t now, unsigned int budget,
		     struct rplb_fragment_losses *losses)
{
	unsigned int expired = 0;

	/* The flow clock wraps: ages are differences modulo 2^32. */
	while (expired < budget && table->oldest != RPLB_NO_DATAGRAM &&
	       (uint32_t)(now - table->datagrams[table->oldest].created) > table->timeout_ticks) {
		losses->datagrams++;
		rplb_fragment_remove(table, table->oldest, losses);
		expired++;
	}
	return expired;
}

void
rplb_fragment_flush(struct rplb_fragment_table *table, struct rplb_fragment_losses *losses)
{
	while (table->oldest != RPLB_NO_DATAGRAM) {
		losses->datagrams++;
		rplb_fragment_remove(table, table->oldest, losses);
	}
}
