/* SPDX-License-Identifier: BSD-3-Clause
 *
 * worker.c: the poll-mode loop of one worker lcore (after DPDK's l3fwd):
 * rx burst on each port -> engine -> buffered tx, drained on a timer; and
 * the exception path's two directions: frames for the appliance's own
 * address to its kernel interface, what that interface sends out of the
 * backend port (docs/fastpath.md, "The exception path").
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
	if (params->local_addr != 0) {
		if (params->kernel_rate == 0 || params->kernel_burst == 0) {
			rte_free(worker);
			rte_errno = EINVAL;
			return NULL;
		}
		worker->local_addr = params->local_addr;
		worker->kernel.port_id = params->kernel_port;
		worker->kernel.queue_id = params->kernel_queue;
		worker->kernel_tsc_per_frame = RTE_MAX(rte_get_tsc_hz() / params->kernel_rate, 1ull);
		worker->kernel_burst_tsc = worker->kernel_tsc_per_frame * params->kernel_burst;
	}
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

/* Hand what is buffered for the kernel interface to it; what it refuses
 * is freed and counted. */
static void
flush_to_kernel(struct rplb_worker *worker)
{
	struct rplb_tx_buffer *buf = &worker->kernel;
	uint16_t sent, i;

	if (buf->count == 0)
		return;
	sent = rte_eth_tx_burst(buf->port_id, buf->queue_id, buf->pkts, buf->count);
	if (unlikely(sent < buf->count)) {
		worker->counters.drops[RPLB_DROP_KERNEL_FULL] += buf->count - sent;
		for (i = sent; i < buf->count; i++)
			rte_pktmbuf_free(buf->pkts[i]);
	}
	buf->count = 0;
}

void
rplb_worker_flush_kernel(struct rplb_worker *worker)
{
	if (worker->local_addr != 0)
		flush_to_kernel(worker);
}

int
rplb_worker_to_kernel(struct rplb_worker *worker, struct rte_mbuf *m,
		      enum rplb_kernel_class class)
{
	struct rplb_tx_buffer *buf = &worker->kernel;
	uint64_t *next = &worker->kernel_next_tsc[class == RPLB_KERNEL_FROM_BACKENDS ? 0 : 1];
	uint64_t now;

	if (worker->local_addr == 0)
		return 0;
	/* The rate limit bounds what a flood to this address costs the lcore:
	 * a frame to the kernel is a system call (net_tap writes each one). */
	now = rte_rdtsc();
	if (*next > now + worker->kernel_burst_tsc) {
		rplb_worker_drop(worker, RPLB_DROP_KERNEL_RATE, m);
		return 1;
	}
	*next = RTE_MAX(*next, now) + worker->kernel_tsc_per_frame;
	worker->counters.events[RPLB_EV_TO_KERNEL]++;
	buf->pkts[buf->count++] = m;
	if (buf->count == RPLB_BURST)
		flush_to_kernel(worker);
	return 1;
}

/* What the kernel interface sent (its ARP, its probes' packets, its
 * answers to pings) goes out of the backend port.  Read once per drain
 * period, not every loop iteration: each read of a net_tap queue is a
 * system call, and these frames are few and not in a hurry. */
static void
receive_from_kernel(struct rplb_worker *worker)
{
	struct rte_mbuf *pkts[RPLB_BURST];
	uint64_t bytes = 0;
	uint16_t n, i;

	n = rte_eth_rx_burst(worker->kernel.port_id, worker->kernel.queue_id, pkts, RPLB_BURST);
	if (n == 0)
		return;
	for (i = 0; i < n; i++)
		bytes += pkts[i]->pkt_len;
	worker->counters.events[RPLB_EV_FROM_KERNEL] += n;
	rplb_worker_send_bulk(worker, RPLB_BACKEND, pkts, n, bytes);
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
			if (worker->local_addr != 0) {
				flush_to_kernel(worker);
				receive_from_kernel(worker);
			}
			for (side = 0; side < RPLB_SIDES; side++)
				rplb_worker_flush(worker, side);
			last_drain = now;
		}
		if (engine->housekeeping != NULL)
			engine->housekeeping(worker, now, received == 0);
	}

	if (worker->local_addr != 0)
		flush_to_kernel(worker);
	for (side = 0; side < RPLB_SIDES; side++)
		rplb_worker_flush(worker, side);
	if (engine->stop != NULL)
		engine->stop(worker);
	return 0;
}
