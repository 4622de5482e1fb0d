/* SPDX-License-Identifier: BSD-3-Clause
 *
 * check_flow_table.c: a model-based check of the cuckoo flow table.
 *
 *   rplb-check-flow-table [--capacity N] [--rounds R] [--seed S]
 *
 * Fills a table of N flows to the last record (at the default capacity its
 * buckets are then 85% full, the most the sizing allows), with random
 * 5-tuples, then for R rounds removes, moves and re-inserts random flows.
 * After every phase each stored flow must be found under both of its keys
 * by the single and the bulk lookup, and keys of removed flows, or old
 * backend keys of moved flows, must not be found.  Any difference from the
 * model aborts with a message naming the flow; the end prints one JSON
 * line.  Built with -Ddebug_checks=true (RTE_ASSERT) and sanitizers by
 * tests/test_flow_table.py.
 */
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

static void
check_all(const struct rplb_flow_table *table, const struct model_flow *model, uint32_t n)
{
	struct rplb_flow_key keys[32];
	uint32_t hashes[32], found[32], owner[32];
	uint32_t i, batch = 0, stored = 0, j;

	for (i = 0; i < n; i++) {
		const struct model_flow *expected = &model[i];
		struct rplb_flow_key backend_key;
		uint32_t hash = rplb_flow_key_hash(&expected->client_key);
		uint32_t got = rplb_flow_lookup(table, &expected->client_key, hash);

		if (got != expected->index)
			fail("client key: lookup disagrees with the model", i);
		backend_key = (struct rplb_flow_key){
			.src_ip = expected->backend_ip, .dst_ip = expected->client_key.src_ip,
			.src_port = expected->backend_port, .dst_port = expected->client_key.src_port,
			.proto = expected->client_key.proto, .direction = RPLB_DIR_BACKEND,
		};
		got = rplb_flow_lookup(table, &backend_key, rplb_flow_key_hash(&backend_key));
		if (got != expected->index)
			fail("backend key: lookup disagrees with the model", i);
		if (expected->index != RPLB_NO_FLOW) {
			const struct rplb_flow *flow = &table->flows[expected->index];

			stored++;
			if (flow->state == RPLB_FLOW_FREE || flow->backend_ip != expected->backend_ip ||
			    flow->client_ip != expected->client_key.src_ip)
				fail("record does not hold the flow", i);
		}
		keys[batch] = expected->client_key;
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
}

static void
random_flow(struct model_flow *expected)
{
	uint64_t r = rng();

	expected->client_key = (struct rplb_flow_key){
		.src_ip = (uint32_t)r, .dst_ip = 0x6400000a | (uint32_t)(r >> 32 & 0x3) << 24,
		.src_port = (uint16_t)(r >> 34), .dst_port = (uint16_t)(r >> 50) ? 80 : 443,
		.proto = (r >> 63) ? 6 : 17, .direction = RPLB_DIR_CLIENT,
	};
	r = rng();
	expected->backend_ip = 0x0a000000 | (uint32_t)(r & 0xff);
	expected->backend_port = (uint16_t)(r >> 8);
	expected->index = RPLB_NO_FLOW;
}

static int
insert(struct rplb_flow_table *table, struct model_flow *expected)
{
	uint32_t index = rplb_flow_insert(table, &expected->client_key, rplb_flow_key_hash(&expected->client_key),
					  expected->backend_ip, expected->backend_port,
					  rplb_flow_backend_key_hash(&expected->client_key, expected->backend_ip,
								     expected->backend_port));

	if (index == RPLB_NO_FLOW)
		return -1;
	table->flows[index].state = RPLB_FLOW_TCP_ESTABLISHED;
	expected->index = index;
	return 0;
}

int
main(int argc, char **argv)
{
	char *eal_argv[] = {argv[0], "--no-huge", "-m", "512", "--no-pci", "-l", "0",
			    "--log-level", "lib.eal:error", NULL};
	struct option longopts[] = {
		{"capacity", required_argument, NULL, 'c'},
		{"rounds", required_argument, NULL, 'r'},
		{"seed", required_argument, NULL, 's'},
		{NULL, 0, NULL, 0},
	};
	uint32_t capacity = 55705, rounds = 20, i, round, duplicates = 0, overflowed = 0;
	uint64_t insert_failures = 0, moves = 0, removals = 0, reinserts = 0;
	struct rplb_flow_table *table;
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
		default:
			fprintf(stderr, "usage: %s [--capacity N] [--rounds R] [--seed S]\n", argv[0]);
			return 2;
		}
	}
	if (rte_eal_init(RTE_DIM(eal_argv) - 1, eal_argv) < 0) {
		fprintf(stderr, "check-flow-table: EAL: %s\n", rte_strerror(rte_errno));
		return 1;
	}
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
			struct model_flow *expected = &model[i];
			uint64_t r = rng() % 3;

			if (r == 0) {
				rplb_flow_remove(table, expected->index);
				expected->index = RPLB_NO_FLOW;
				removals++;
			} else if (r == 1) {
				uint32_t ip = 0x0a000100 | (uint32_t)(rng() & 0xff);
				uint16_t port = (uint16_t)rng();

				if (rplb_flow_move(table, expected->index, ip, port) < 0)
					fail("move found no room in a table with free records", i);
				expected->backend_ip = ip;
				expected->backend_port = port;
				moves++;
			}
		}
		check_all(table, model, capacity);
		for (i = 0; i < capacity; i++) {
			struct model_flow *expected = &model[i];

			if (expected->index != RPLB_NO_FLOW)
				continue;
			do
				random_flow(expected);
			while (rplb_flow_lookup(table, &expected->client_key,
						rplb_flow_key_hash(&expected->client_key)) != RPLB_NO_FLOW);
			if (insert(table, expected) < 0)
				fail("re-insert failed below capacity", i);
			reinserts++;
		}
		check_all(table, model, capacity);
	}

	/* Buckets whose keys spilled into their secondary bucket: the lookups
	 * above checked that those keys are still found (overflow bits). */
	for (i = 0; i <= table->bucket_mask; i++)
		overflowed += (uint32_t)rplb_bucket_overflowed(table, i);
	printf("{\"capacity\": %u, \"buckets\": %u, \"bucket_load_full\": %.3f, \"rounds\": %u, "
	       "\"removals\": %" PRIu64 ", \"moves\": %" PRIu64 ", \"reinserts\": %" PRIu64 ", "
	       "\"insert_failures\": %" PRIu64 ", \"duplicate_draws\": %u, "
	       "\"overflowed_buckets\": %u}\n",
	       capacity, table->bucket_mask + 1,
	       2.0 * capacity / ((double)(table->bucket_mask + 1) * RPLB_BUCKET_SLOTS), rounds,
	       removals, moves, reinserts, insert_failures, duplicates, overflowed);
	rplb_flow_table_free(table);
	free(model);
	rte_eal_cleanup();
	return 0;
}
