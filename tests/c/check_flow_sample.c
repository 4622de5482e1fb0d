/* SPDX-License-Identifier: BSD-3-Clause
 *
 * check_flow_sample.c: the flow-sample protocol between the control plane
 * and a worker (csrc/flow_sample.h), against the load-balancing engine's
 * own housekeeping.
 *
 *   rplb-check-flow-sample [--capacity N] [--rounds R]
 *
 * A flow table of N records holds flows spread over the whole of it.  In
 * one thread, step by step:
 *   - slices: one housekeeping call looks at no more than its budget of
 *     records, and a request is answered over several calls;
 *   - stale answers: the complete answer to a request is never taken for
 *     a newer request's (it has more entries than the newer one wants);
 *   - superseded scans: a request posted while an older one is half
 *     scanned restarts the scan and gets exactly its own entries;
 *   - bounds: no answer holds more than its request asked for, nor more
 *     than RPLB_FLOW_SAMPLE_MAX; the C API refuses more.
 * Then for real: the worker runs on its own lcore, and two control-plane
 * threads call rplb_lb_flow_sample R times each with random sizes and
 * timeouts from 0 ms (requests abandoned half answered, superseded by the
 * next), each into a buffer of exactly the size it asked for, so ASan
 * catches any answer that overflows it.  Prints one JSON line; any
 * failure aborts with a message.  Built with sanitizers and debug checks
 * by tests/test_flow_sample.py.
 */
#include "check_eal.h"   /* first: it sets _XOPEN_SOURCE */

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>

#include "lb.h"
#include "worker.h"

static struct rplb_lb *lb;
static struct rplb_worker *worker;
static uint32_t stored_flows;

static void
fail(const char *what, long value)
{
	fprintf(stderr, "check-flow-sample: %s (%ld)\n", what, value);
	abort();
}

static void
housekeeping(int idle)
{
	worker->engine->housekeeping(worker, rte_rdtsc(), idle);
}

/* Fill the table, then keep every 397th record: flows from the first
 * record to the last, fewer than a full answer, so the scan goes through
 * all of it. */
static void
spread_flows(struct rplb_flow_table *table)
{
	uint32_t i, index;

	for (i = 0; i < table->capacity; i++) {
		struct rplb_flow_key key = {
			.src_ip = rte_cpu_to_be_32(0xc6120000u + i),
			.dst_ip = rte_cpu_to_be_32(0x0a000064),
			.src_port = rte_cpu_to_be_16((uint16_t)(1024 + i % 50000)),
			.dst_port = rte_cpu_to_be_16(80), .proto = IPPROTO_TCP,
			.direction = RPLB_DIR_CLIENT,
		};
		uint32_t backend_ip = rte_cpu_to_be_32(0xc0a80101);
		uint16_t backend_port = rte_cpu_to_be_16(8080);

		index = rplb_flow_insert(table, &key, rplb_flow_key_hash(&key), backend_ip,
					 backend_port,
					 rplb_flow_backend_key_hash(&key, backend_ip, backend_port));
		if (index == RPLB_NO_FLOW)
			fail("insert failed below capacity", i);
		table->flows[index].state = RPLB_FLOW_TCP_ESTABLISHED;
		table->flows[index].last_seen = rplb_flow_clock(table, rte_rdtsc());
	}
	for (index = RPLB_FIRST_FLOW_RECORD; index < RPLB_FIRST_FLOW_RECORD + table->capacity;
	     index++) {
		if (index % 397 != 0)
			rplb_flow_remove(table, index);
		else
			stored_flows++;
	}
}

/* Every entry names a flow stored in the table. */
static void
check_entries(const struct rplb_flow_table *table, const struct rplb_flow_sample *out, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		struct rplb_flow_key key = {
			.src_ip = out[i].client_ip, .dst_ip = out[i].vip,
			.src_port = out[i].client_port, .dst_port = out[i].vport,
			.proto = out[i].proto, .direction = RPLB_DIR_CLIENT,
		};

		if (out[i].state >= RPLB_FLOW_STATES ||
		    rplb_flow_lookup(table, &key, rplb_flow_key_hash(&key)) == RPLB_NO_FLOW)
			fail("an entry names no stored flow", i);
	}
}

/* Housekeeping calls (busy) until request is answered; how many. */
static unsigned int
serve_until_answered(struct rplb_flow_sample_slot *slot, uint32_t request, unsigned int limit)
{
	unsigned int calls = 0;

	while (__atomic_load_n(&slot->answered, __ATOMIC_ACQUIRE) != request) {
		uint32_t cursor = slot->cursor;

		if (++calls > limit)
			fail("request not answered within the calls a whole scan needs", calls);
		housekeeping(0);
		if (slot->serving == request && slot->cursor > cursor &&
		    slot->cursor - cursor > 256)
			fail("one housekeeping call looked at more records than its budget",
			     slot->cursor - cursor);
	}
	return calls;
}

static void
check_steps(struct rplb_flow_table *table, unsigned int *slices)
{
	struct rplb_flow_sample_slot *slot = lb->workers[0].sample;
	/* The scan covers the IPv4 records, then the IPv6 ones (flow_sample.c). */
	unsigned int whole_scan = (table->capacity + lb->workers[0].flows6->capacity) / 256 + 2;
	struct rplb_flow_sample *big = malloc(RPLB_FLOW_SAMPLE_MAX * sizeof(*big));
	struct rplb_flow_sample *small;
	uint32_t request;
	int n, i;

	if (big == NULL)
		fail("no memory", 0);
	/* Slices: the answer needs the whole table, many calls. */
	request = rplb_flow_sample_post(slot, RPLB_FLOW_SAMPLE_MAX);
	housekeeping(0);
	if (rplb_flow_sample_take(slot, request, big, RPLB_FLOW_SAMPLE_MAX) != -EAGAIN)
		fail("one call answered a request that needs the whole table", 0);
	*slices = 1 + serve_until_answered(slot, request, whole_scan);
	if (*slices < table->capacity / 256)
		fail("the answer came in too few slices", *slices);
	n = rplb_flow_sample_take(slot, request, big, RPLB_FLOW_SAMPLE_MAX);
	if (n != (int)RTE_MIN(stored_flows, (uint32_t)RPLB_FLOW_SAMPLE_MAX))
		fail("a full answer has the wrong number of entries", n);
	check_entries(table, big, n);

	/* Stale answers: the complete answer above (every flow) is never
	 * taken for a request of 4, which gets exactly 4. */
	request = rplb_flow_sample_post(slot, 4);
	small = malloc(4 * sizeof(*small));
	if (small == NULL)
		fail("no memory", 0);
	if (rplb_flow_sample_take(slot, request, small, 4) != -EAGAIN)
		fail("the answer to an older request was taken for a newer one", 0);
	serve_until_answered(slot, request, whole_scan);
	n = rplb_flow_sample_take(slot, request, small, 4);
	if (n != 4)
		fail("a request of 4 got another count", n);
	check_entries(table, small, n);

	/* Superseded scans: a request for every flow half scanned, then one of 4:
	 * the scan starts over and the answer is the table's first 4 flows. */
	request = rplb_flow_sample_post(slot, RPLB_FLOW_SAMPLE_MAX);
	for (i = 0; i < 50; i++)
		housekeeping(0);
	if (slot->answered == request || slot->filled == 0)
		fail("the large request should be half answered", slot->filled);
	request = rplb_flow_sample_post(slot, 4);
	serve_until_answered(slot, request, whole_scan);
	n = rplb_flow_sample_take(slot, request, small, 4);
	if (n != 4)
		fail("a superseding request of 4 got another count", n);
	for (i = 0; i < n; i++)
		if (small[i].client_ip != big[i].client_ip ||
		    small[i].client_port != big[i].client_port)
			fail("a superseding request did not start its scan over", i);

	/* Bounds: a request for more than the buffer gets at most the
	 * buffer, and the C API refuses more than it. */
	request = rplb_flow_sample_post(slot, 100000);
	if (slot->max != RPLB_FLOW_SAMPLE_MAX)
		fail("a request's max was not clamped to the buffer", slot->max);
	serve_until_answered(slot, request, whole_scan);
	if (rplb_flow_sample_take(slot, request, big, RPLB_FLOW_SAMPLE_MAX) >
	    RPLB_FLOW_SAMPLE_MAX)
		fail("an answer larger than the buffer", 0);
	if (rplb_lb_flow_sample(lb, 0, big, RPLB_FLOW_SAMPLE_MAX + 1, 0) != -EINVAL)
		fail("rplb_lb_flow_sample accepted more than RPLB_FLOW_SAMPLE_MAX", 0);
	if (rplb_lb_flow_sample(lb, 1, big, 1, 0) != -EINVAL)
		fail("rplb_lb_flow_sample accepted a worker that does not exist", 1);
	free(small);
	free(big);
}

struct caller {
	pthread_t thread;
	uint32_t rounds;
	uint64_t seed;
	uint64_t answered, timed_out, entries;
};

static uint64_t
next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A control-plane thread: requests of random sizes, each into a buffer of
 * exactly that size, with timeouts short enough to abandon many. */
static void *
call_flow_sample(void *arg)
{
	struct caller *caller = arg;
	static const unsigned int timeouts_ms[] = {0, 0, 1, 2, 50};
	uint32_t round;

	for (round = 0; round < caller->rounds; round++) {
		uint64_t r = next_random(&caller->seed);
		unsigned int max = (unsigned int)(r % (RPLB_FLOW_SAMPLE_MAX + 1));
		struct rplb_flow_sample *out = malloc(RTE_MAX(max, 1u) * sizeof(*out));
		int n, i;

		if (out == NULL)
			fail("no memory", 0);
		n = rplb_lb_flow_sample(lb, 0, out, max,
					timeouts_ms[(r >> 32) % RTE_DIM(timeouts_ms)]);
		if (n == -ETIMEDOUT) {
			caller->timed_out++;
		} else if (n < 0 || (unsigned int)n > max) {
			fail("rplb_lb_flow_sample answered outside [0, max]", n);
		} else {
			for (i = 0; i < n; i++)
				if (out[i].state >= RPLB_FLOW_STATES || out[i].proto != IPPROTO_TCP)
					fail("an entry is not a flow", i);
			caller->answered++;
			caller->entries += (uint64_t)n;
		}
		free(out);
	}
	return NULL;
}

int
main(int argc, char **argv)
{
	static const char *const vdevs[] = {"--vdev", "net_null0,no-rx=1", "--vdev",
					    "net_null1,no-rx=1", NULL};
	static const struct option longopts[] = {
		{"capacity", required_argument, NULL, 'c'},
		{"rounds", required_argument, NULL, 'r'},
		{NULL, 0, NULL, 0},
	};
	struct rplb_lb_params lb_params = {
		.max_workers = 1, .timeout_s = {60, 10, 300, 10}, .socket_id = SOCKET_ID_ANY,
	};
	struct rplb_worker_params worker_params = {
		.frontend_port = 0, .backend_port = 1, .drain_us = 100, .socket_id = SOCKET_ID_ANY,
	};
	struct caller callers[2] = {{.seed = 1}, {.seed = 2}};
	uint32_t capacity = 100000, rounds = 2000;
	struct rte_mempool *pool;
	unsigned int worker_lcore, slices, i;
	int opt;

	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			capacity = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'r':
			rounds = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [--capacity N] [--rounds R]\n", argv[0]);
			return 2;
		}
	}
	if (check_eal_init("rplb-check-flow-sample", "0-1", vdevs) < 0)
		return 1;
	worker_lcore = rte_get_next_lcore(rte_get_main_lcore(), 1, 0);
	lb_params.flow_table_size = capacity;
	lb = rplb_lb_create(&lb_params);
	if (lb == NULL || rplb_lb_add_worker(lb, worker_lcore) < 0)
		fail("no load balancer", rte_errno);
	worker = rplb_worker_create(&worker_params, rplb_engine_lb(), lb);
	if (worker == NULL)
		fail("no worker", rte_errno);
	spread_flows(lb->workers[0].flows);

	/* Step by step, the engine's housekeeping called from this thread as
	 * if it were the worker's lcore (its RCU registration included). */
	worker->lcore_id = worker_lcore;
	if (worker->engine->start(worker) != 0)
		fail("engine start", 0);
	check_steps(lb->workers[0].flows, &slices);
	worker->engine->stop(worker);

	/* For real: the worker on its lcore (net_null ports, never any rx: it
	 * idles, and answers with its idle budget). */
	pool = rte_pktmbuf_pool_create("check", 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
				       SOCKET_ID_ANY);
	if (pool == NULL)
		fail("no mbuf pool", rte_errno);
	for (i = 0; i < 2; i++)
		if (rte_eth_dev_configure(i, 1, 1, &(struct rte_eth_conf){0}) < 0 ||
		    rte_eth_tx_queue_setup(i, 0, 256, SOCKET_ID_ANY, NULL) < 0 ||
		    rte_eth_rx_queue_setup(i, 0, 256, SOCKET_ID_ANY, NULL, pool) < 0 ||
		    rte_eth_dev_start(i) < 0)
			fail("port setup", i);
	if (rte_eal_remote_launch(rplb_worker_main, worker, worker_lcore) != 0)
		fail("worker launch", worker_lcore);
	for (i = 0; i < 2; i++) {
		callers[i].rounds = rounds;
		if (pthread_create(&callers[i].thread, NULL, call_flow_sample, &callers[i]) != 0)
			fail("caller thread", i);
	}
	for (i = 0; i < 2; i++)
		pthread_join(callers[i].thread, NULL);
	rplb_worker_request_stop(worker);
	if (rte_eal_wait_lcore(worker_lcore) != 0)
		fail("worker stopped with an error", worker_lcore);

	printf("{\"capacity\": %u, \"stored_flows\": %u, \"slices_for_a_full_answer\": %u, "
	       "\"rounds\": %u, \"answered\": %" PRIu64 ", \"timed_out\": %" PRIu64 ", "
	       "\"entries\": %" PRIu64 "}\n",
	       capacity, stored_flows, slices, rounds * 2,
	       callers[0].answered + callers[1].answered,
	       callers[0].timed_out + callers[1].timed_out,
	       callers[0].entries + callers[1].entries);
	fflush(stdout);
	rplb_worker_free(worker);
	rplb_lb_free(lb);
	for (i = 0; i < 2; i++) {
		rte_eth_dev_stop(i);
		rte_eth_dev_close(i);
	}
	rte_mempool_free(pool);
	check_eal_cleanup();
	return 0;
}
