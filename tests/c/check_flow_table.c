/* SPDX-License-Identifier: BSD-3-Clause
 *
 * check_flow_table.c: a model-based check of the cuckoo flow table.
 *
 *   rplb-check-flow-table [--capacity N] [--rounds R] [--seed S]
 *                         [--churn-rounds C] [--churn-load P]
 *
 * Fills a table of N flows to the last record (at the default capacity its
 * buckets are then 85% full, the most the sizing allows), with random
 * 5-tuples, then for R rounds removes, moves and re-inserts random flows.
 * After every phase each stored flow must be found under both of its keys
 * by the single and the bulk lookup, and keys of removed flows, or old
 * backend keys of moved flows, must not be found; and every bucket's
 * overflow bit and spill count must match the keys that live in their
 * secondary bucket.
 *
 * Then churn: down to P% of the records, and C rounds that each replace a
 * quarter of the stored flows with new ones.  A table that has been full
 * once and churns at a lower load must not read more buckets per miss
 * than a table freshly filled with the same flows: the overflow bits
 * must follow the keys, not remember every key that ever spilled.  The
 * JSON line reports both tables' share of misses that read two buckets.
 *
 * Any difference from the model aborts with a message naming the flow;
 * the end prints one JSON line.  Built with -Ddebug_checks=true
 * (RTE_ASSERT) and sanitizers by tests/test_flow_table.py.
 */
#include "check_eal.h"   /* first: it sets _XOPEN_SOURCE */

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>

#include "flow_table.h"
#include "stats.h"

struct model_flow {
	struct rplb_flow_key client_key;
	uint32_t backend_ip;
	uint16_t backend_port;
	uint32_t index;             /* RPLB_NO_FLOW: not stored */
};

static uint64_t rng_state;

static uint64_t
rng(void)
{
	/* splitmix64: reproducible from --seed on every platform. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void
fail(const char *what, uint32_t flow)
{
	fprintf(stderr, "check-flow-table: %s (model flow %u)\n", what, flow);
	abort();
}

/* Every bucket's spill count and overflow bit against the keys the
 * buckets hold: the count of bucket b is the number of keys whose primary
 * bucket is b that live elsewhere (saturated at UINT8_MAX), and the bit is
 * set exactly where the count is not 0. */
static void
check_spills(const struct rplb_flow_table *table)
{
	uint32_t buckets = table->bucket_mask + 1, b, slot;
	uint32_t *spilled = calloc(buckets, sizeof(*spilled));

	if (spilled == NULL)
		fail("no memory for the spill check", 0);
	for (b = 0; b < buckets; b++) {
		for (slot = 0; slot < RPLB_BUCKET_SLOTS; slot++) {
			uint32_t primary = rplb_primary_bucket(table, table->buckets[b].sig[slot]);

			if (table->buckets[b].ref[slot] != RPLB_EMPTY_REF && primary != b)
				spilled[primary]++;
		}
	}
	for (b = 0; b < buckets; b++) {
		if (table->spilled[b] != UINT8_MAX && table->spilled[b] != spilled[b])
			fail("a bucket's spill count differs from the keys in secondary buckets", b);
		if (rplb_bucket_overflowed(table, b) != (table->spilled[b] != 0))
			fail("a bucket's overflow bit differs from its spill count", b);
	}
	free(spilled);
}

/* The share of lookups for absent keys that read a second bucket: those
 * whose primary bucket's overflow bit is set. */
static double
two_bucket_misses(const struct rplb_flow_table *table)
{
	const uint32_t probes = 100000;
	uint32_t i, two = 0;

	for (i = 0; i < probes; i++)
		two += (uint32_t)rplb_bucket_overflowed(table, rplb_primary_bucket(table,
										   (uint32_t)rng()));
	return (double)two / probes;
}

static uint32_t
overflowed_buckets(const struct rplb_flow_table *table)
{
	uint32_t b, overflowed = 0;

	for (b = 0; b <= table->bucket_mask; b++)
		overflowed += (uint32_t)rplb_bucket_overflowed(table, b);
	return overflowed;
}

static void
check_all(const struct rplb_flow_table *table, const struct model_flow *model, uint32_t n)
{
	struct rplb_flow_key keys[32];
	uint32_t hashes[32], found[32], owner[32];
	uint32_t i, batch = 0, stored = 0, j;

	for (i = 0; i < n; i++) {
		const struct model_flow *entry = &model[i];
		struct rplb_flow_key backend_key;
		uint32_t hash = rplb_flow_key_hash(&entry->client_key);
		uint32_t got = rplb_flow_lookup(table, &entry->client_key, hash);

		if (got != entry->index)
			fail("client key: lookup disagrees with the model", i);
		backend_key = (struct rplb_flow_key){
			.src_ip = entry->backend_ip, .dst_ip = entry->client_key.src_ip,
			.src_port = entry->backend_port, .dst_port = entry->client_key.src_port,
			.proto = entry->client_key.proto, .direction = RPLB_DIR_BACKEND,
		};
		got = rplb_flow_lookup(table, &backend_key, rplb_flow_key_hash(&backend_key));
		if (got != entry->index)
			fail("backend key: lookup disagrees with the model", i);
		if (entry->index != RPLB_NO_FLOW) {
			const struct rplb_flow *flow = &table->flows[entry->index];

			stored++;
			if (flow->state == RPLB_FLOW_FREE || flow->backend_ip != entry->backend_ip ||
			    flow->client_ip != entry->client_key.src_ip)
				fail("record does not hold the flow", i);
		}
		keys[batch] = entry->client_key;
		hashes[batch] = hash;
		owner[batch] = i;
		if (++batch == 32 || i + 1 == n) {
			rplb_flow_lookup_bulk(table, keys, sizeof(keys[0]), hashes, batch, RPLB_DIR_CLIENT,
					      found);
			for (j = 0; j < batch; j++)
				if (found[j] != model[owner[j]].index)
					fail("bulk lookup disagrees with the model", owner[j]);
			batch = 0;
		}
	}
	if (stored != table->capacity - table->free_count)
		fail("stored count differs from the free stack", stored);
	check_spills(table);
}

static void
random_flow(struct model_flow *entry)
{
	uint64_t r = rng();

	entry->client_key = (struct rplb_flow_key){
		.src_ip = (uint32_t)r, .dst_ip = 0x6400000a | (uint32_t)(r >> 32 & 0x3) << 24,
		.src_port = (uint16_t)(r >> 34), .dst_port = (uint16_t)(r >> 50) ? 80 : 443,
		.proto = (r >> 63) ? 6 : 17, .direction = RPLB_DIR_CLIENT,
	};
	r = rng();
	entry->backend_ip = 0x0a000000 | (uint32_t)(r & 0xff);
	entry->backend_port = (uint16_t)(r >> 8);
	entry->index = RPLB_NO_FLOW;
}

static int
insert(struct rplb_flow_table *table, struct model_flow *entry)
{
	uint32_t index = rplb_flow_insert(table, &entry->client_key,
					  rplb_flow_key_hash(&entry->client_key),
					  entry->backend_ip, entry->backend_port,
					  rplb_flow_backend_key_hash(&entry->client_key,
								     entry->backend_ip,
								     entry->backend_port));

	if (index == RPLB_NO_FLOW)
		return -1;
	table->flows[index].state = RPLB_FLOW_TCP_ESTABLISHED;
	entry->index = index;
	return 0;
}

int
main(int argc, char **argv)
{
	struct option longopts[] = {
		{"capacity", required_argument, NULL, 'c'},
		{"rounds", required_argument, NULL, 'r'},
		{"seed", required_argument, NULL, 's'},
		{"churn-rounds", required_argument, NULL, 'C'},
		{"churn-load", required_argument, NULL, 'L'},
		{NULL, 0, NULL, 0},
	};
	uint32_t capacity = 55705, rounds = 20, churn_rounds = 20, churn_load = 50;
	uint32_t i, round, duplicates = 0, overflowed, stored;
	uint64_t insert_failures = 0, moves = 0, removals = 0, reinserts = 0, churned = 0;
	uint32_t overflowed_churned, overflowed_fresh;
	double misses_churned, misses_fresh;
	struct rplb_flow_table *table, *fresh;
	struct model_flow *model;
	int opt;

	rng_state = 1;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			capacity = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'r':
			rounds = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 's':
			rng_state = strtoull(optarg, NULL, 0);
			break;
		case 'C':
			churn_rounds = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'L':
			churn_load = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [--capacity N] [--rounds R] [--seed S] "
				"[--churn-rounds C] [--churn-load P]\n", argv[0]);
			return 2;
		}
	}
	if (check_eal_init("rplb-check-flow-table", "0", NULL) < 0)
		return 1;
	table = rplb_flow_table_create(capacity, SOCKET_ID_ANY);
	model = calloc(capacity, sizeof(*model));
	if (table == NULL || model == NULL) {
		fprintf(stderr, "check-flow-table: no memory for %u flows\n", capacity);
		return 1;
	}

	/* Fill every record.  A random tuple that repeats an earlier one (the
	 * table must refuse nothing else) is drawn again. */
	for (i = 0; i < capacity; i++) {
		random_flow(&model[i]);
		if (rplb_flow_lookup(table, &model[i].client_key,
				     rplb_flow_key_hash(&model[i].client_key)) != RPLB_NO_FLOW) {
			duplicates++;
			i--;
			continue;
		}
		if (insert(table, &model[i]) < 0) {
			insert_failures++;
			fail("insert failed before the table was full", i);
		}
	}
	if (table->free_count != 0)
		fail("records left after filling", table->free_count);
	check_all(table, model, capacity);
	{
		struct model_flow extra;

		random_flow(&extra);
		if (insert(table, &extra) == 0)
			fail("insert into a full table succeeded", capacity);
	}

	for (round = 0; round < rounds; round++) {
		/* Remove a random third, move a random third of the rest to
		 * another backend, then fill up again with new flows. */
		for (i = 0; i < capacity; i++) {
			struct model_flow *entry = &model[i];
			uint64_t r = rng() % 3;

			if (r == 0) {
				rplb_flow_remove(table, entry->index);
				entry->index = RPLB_NO_FLOW;
				removals++;
			} else if (r == 1) {
				uint32_t ip = 0x0a000100 | (uint32_t)(rng() & 0xff);
				uint16_t port = (uint16_t)rng();

				if (rplb_flow_move(table, entry->index, ip, port) < 0)
					fail("move found no room in a table with free records", i);
				entry->backend_ip = ip;
				entry->backend_port = port;
				moves++;
			}
		}
		check_all(table, model, capacity);
		for (i = 0; i < capacity; i++) {
			struct model_flow *entry = &model[i];

			if (entry->index != RPLB_NO_FLOW)
				continue;
			do
				random_flow(entry);
			while (rplb_flow_lookup(table, &entry->client_key,
						rplb_flow_key_hash(&entry->client_key)) != RPLB_NO_FLOW);
			if (insert(table, entry) < 0)
				fail("re-insert failed below capacity", i);
			reinserts++;
		}
		check_all(table, model, capacity);
	}

	/* Buckets whose keys spilled into their secondary bucket, at the
	 * highest load: the lookups above checked that those keys are still
	 * found (overflow bits). */
	overflowed = overflowed_buckets(table);

	/* Churn at a lower load: down to churn_load percent, then rounds that
	 * each replace a random quarter of the stored flows. */
	stored = capacity;
	for (i = 0; i < capacity && stored > (uint64_t)capacity * churn_load / 100; i++) {
		rplb_flow_remove(table, model[i].index);
		model[i].index = RPLB_NO_FLOW;
		stored--;
	}
	check_all(table, model, capacity);
	for (round = 0; round < churn_rounds; round++) {
		for (i = 0; i < capacity; i++) {
			struct model_flow *entry = &model[i];

			if (entry->index == RPLB_NO_FLOW || rng() % 4 != 0)
				continue;
			rplb_flow_remove(table, entry->index);
			do
				random_flow(entry);
			while (rplb_flow_lookup(table, &entry->client_key,
						rplb_flow_key_hash(&entry->client_key)) != RPLB_NO_FLOW);
			if (insert(table, entry) < 0)
				fail("churn: insert failed below capacity", i);
			churned++;
		}
		check_all(table, model, capacity);
	}
	overflowed_churned = overflowed_buckets(table);
	misses_churned = two_bucket_misses(table);

	/* The same flows, inserted into a fresh table. */
	fresh = rplb_flow_table_create(capacity, SOCKET_ID_ANY);
	if (fresh == NULL)
		fail("no memory for the fresh table", capacity);
	for (i = 0; i < capacity; i++) {
		struct model_flow copy = model[i];

		if (copy.index != RPLB_NO_FLOW && insert(fresh, &copy) < 0)
			fail("fresh table: insert failed below capacity", i);
	}
	check_spills(fresh);
	overflowed_fresh = overflowed_buckets(fresh);
	misses_fresh = two_bucket_misses(fresh);

	printf("{\"capacity\": %u, \"buckets\": %u, \"bucket_load_full\": %.3f, \"rounds\": %u, "
	       "\"removals\": %" PRIu64 ", \"moves\": %" PRIu64 ", \"reinserts\": %" PRIu64 ", "
	       "\"insert_failures\": %" PRIu64 ", \"duplicate_draws\": %u, "
	       "\"overflowed_buckets\": %u, \"churn_rounds\": %u, \"churn_load\": %u, "
	       "\"churned\": %" PRIu64 ", \"stored_after_churn\": %u, "
	       "\"overflowed_buckets_after_churn\": %u, \"overflowed_buckets_fresh\": %u, "
	       "\"two_bucket_misses_after_churn\": %.4f, \"two_bucket_misses_fresh\": %.4f}\n",
	       capacity, table->bucket_mask + 1,
	       2.0 * capacity / ((double)(table->bucket_mask + 1) * RPLB_BUCKET_SLOTS), rounds,
	       removals, moves, reinserts, insert_failures, duplicates, overflowed, churn_rounds,
	       churn_load, churned, stored, overflowed_churned, overflowed_fresh, misses_churned,
	       misses_fresh);
	rplb_flow_table_free(fresh);
	rplb_flow_table_free(table);
	free(model);
	check_eal_cleanup();
	return 0;
}
