/* SPDX-License-Identifier: BSD-3-Clause
 *
 * worker.c: the poll-mode loop of one worker lcore (after DPDK's l3fwd):
 * rx burst on each port -> engine -> buffered tx, drained on a timer.
 */
#include <errno.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_prefetch.h>

#include "worker.h"

const char *
rplb_engine_name(const struct rplb_engine *engine)
{
	return engine->name;
}

struct rplb_worker *
rplb_worker_create(const struct rplb_worker_params *params,
		   const struct rplb_engine *engine, void *engine_state)
{
	struct rplb_worker *worker;
	unsigned int side;

	if (params == NULL || engine == NULL) {
		rte_errno = EINVAL;
		return NULL;
	}
	worker = rte_zmalloc_socket("rplb_worker", sizeof(*worker), RTE_CACHE_LINE_SIZE,
			       params->socket_id);
	if (worker == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	worker->port_id[RPLB_FRONTEND] = params->frontend_port;
	worker->port_id[RPLB_BACKEND] = params->backend_port;
	worker->rx_queue = params->rx_queue;
	for (side = 0; side < RPLB_SIDES; side++) {
		worker->tx[side].port_id = worker->port_id[side];
		worker->tx[side].queue_id = params->tx_queue;
		worker->tx_cksum_offload[side] = params->tx_cksum_offload[side];
		worker->rx_cksum_offload[side] = params->rx_cksum_offload[side];
	}
	worker->drain_tsc = (rte_get_tsc_hz() + US_PER_S - 1) / US_PER_S * params->drain_us;
	worker->engine = engine;
	worker->engine_state = engine_state;
	worker->socket_id = params->socket_id;
	worker->lcore_id = LCORE_ID_ANY;
	return worker;
}

void
rplb_worker_free(struct rplb_worker *worker)
{
	rte_free(worker);
}

void
rplb_worker_request_stop(struct rplb_worker *worker)
{
	__atomic_store_n(&worker->stop_requested, 1, __ATOMIC_RELEASE);
}

void
rplb_worker_rearm(struct rplb_worker *w)
{
	__atomic_store_n(&w->stop_requested, 0, __ATOMIC_RELEASE);
}

const struct rplb_lcore_counters *
rplb_worker_counters(const struct rplb_worker *worker)
{
	return &worker->counters;
}

static inline uint16_t
receive(struct rplb_worker *worker, unsigned int side, struct rte_mbuf **pkts)
{
	uint16_t n, i;

	n = rte_eth_rx_burst(worker->port_id[side], worker->rx_queue, pkts, RPLB_BURST);
	if (n == 0)
		return 0;
	worker->counters.port[side].rx_packets += n;
	for (i = 0; i < n; i++)
		worker->counters.port[side].rx_bytes += pkts[i]->pkt_len;
	return n;
}

int
rplb_worker_main(void *arg)
{
	struct rplb_worker *worker = arg;
	const struct rplb_engine *engine = worker->engine;
	struct rte_mbuf *pkts[RPLB_BURST];
	uint64_t now, last_drain;
	unsigned int side;
	int err;

	worker->lcore_id = rte_lcore_id();
	if (engine->start != NULL) {
		err = engine->start(worker);
		if (err != 0)
			return err;
	}

	last_drain = rte_rdtsc();
	while (!__atomic_load_n(&worker->stop_requested, __ATOMIC_ACQUIRE)) {
		uint16_t received = 0;

		for (side = 0; side < RPLB_SIDES; side++) {
			uint16_t n = receive(worker, side, pkts);

			if (n == 0)
				continue;
			received += n;
			engine->process_burst(worker, side, pkts, n);
		}

		now = rte_rdtsc();
		if (unlikely(now - last_drain > worker->drain_tsc)) {
			for (side = 0; side < RPLB_SIDES; side++)
				rplb_worker_flush(worker, side);
			last_drain = now;
		}
		if (engine->housekeeping != NULL)
			engine->housekeeping(worker, now, received == 0);
	}

	for (side = 0; side < RPLB_SIDES; side++)
		rplb_worker_flush(worker, side);
	if (engine->stop != NULL)
		engine->stop(worker);
	return 0;
}
