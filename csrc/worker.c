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
	struct rplb_worker *w;
	unsigned int side;

	if (params == NULL || engine == NULL) {
		rte_errno = EINVAL;
		return NULL;
	}
	w = rte_zmalloc_socket("rplb_worker", sizeof(*w), RTE_CACHE_LINE_SIZE,
			       params->socket_id);
	if (w == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	w->port_id[RPLB_FRONTEND] = params->frontend_port;
	w->port_id[RPLB_BACKEND] = params->backend_port;
	w->rx_queue = params->rx_queue;
	for (side = 0; side < RPLB_SIDES; side++) {
		w->tx[side].port_id = w->port_id[side];
		w->tx[side].queue_id = params->tx_queue;
		w->tx_cksum_offload[side] = params->tx_cksum_offload[side];
		w->rx_cksum_offload[side] = params->rx_cksum_offload[side];
	}
	w->drain_tsc = (rte_get_tsc_hz() + US_PER_S - 1) / US_PER_S * params->drain_us;
	w->engine = engine;
	w->engine_state = engine_state;
	w->socket_id = params->socket_id;
	w->lcore_id = LCORE_ID_ANY;
	return w;
}

void
rplb_worker_free(struct rplb_worker *w)
{
	rte_free(w);
}

void
rplb_worker_request_stop(struct rplb_worker *w)
{
	__atomic_store_n(&w->stop_requested, 1, __ATOMIC_RELEASE);
}

void
rplb_worker_rearm(struct rplb_worker *w)
{
	__atomic_store_n(&w->stop_requested, 0, __ATOMIC_RELEASE);
}

const struct rplb_lcore_counters *
rplb_worker_counters(const struct rplb_worker *w)
{
	return &w->counters;
}

static inline uint16_t
receive(struct rplb_worker *w, unsigned int side, struct rte_mbuf **pkts)
{
	uint16_t n, i;

	n = rte_eth_rx_burst(w->port_id[side], w->rx_queue, pkts, RPLB_BURST);
	if (n == 0)
		return 0;
	w->counters.port[side].rx_packets += n;
	for (i = 0; i < n; i++)
		w->counters.port[side].rx_bytes += pkts[i]->pkt_len;
	return n;
}

int
rplb_worker_main(void *arg)
{
	struct rplb_worker *w = arg;
	const struct rplb_engine *engine = w->engine;
	struct rte_mbuf *pkts[RPLB_BURST];
	uint64_t now, last_drain;
	unsigned int side;
	int rc;

	w->lcore_id = rte_lcore_id();
	if (engine->start != NULL) {
		rc = engine->start(w);
		if (rc != 0)
			return rc;
	}

	last_drain = rte_rdtsc();
	while (!__atomic_load_n(&w->stop_requested, __ATOMIC_ACQUIRE)) {
		uint16_t received = 0;

		for (side = 0; side < RPLB_SIDES; side++) {
			uint16_t n = receive(w, side, pkts);

			if (n == 0)
				continue;
			received += n;
			engine->process_burst(w, side, pkts, n);
		}

		now = rte_rdtsc();
		if (unlikely(now - last_drain > w->drain_tsc)) {
			for (side = 0; side < RPLB_SIDES; side++)
				rplb_worker_flush(w, side);
			last_drain = now;
		}
		if (engine->housekeeping != NULL)
			engine->housekeeping(w, now, received == 0);
	}

	for (side = 0; side < RPLB_SIDES; side++)
		rplb_worker_flush(w, side);
	if (engine->stop != NULL)
		engine->stop(w);
	return 0;
}
