/* SPDX-License-Identifier: BSD-3-Clause
 *
 * worker.h: what an engine sees of the worker that runs it.
 *
 * Modelled on testpmd's struct fwd_engine: the worker owns the ports, the
 * tx buffers and the counters; an engine only decides, per burst, where each
 * packet goes (rplb_worker_send) or that it is dropped (rplb_worker_drop).
 */
#ifndef RPLB_WORKER_H
#define RPLB_WORKER_H

#include <stdint.h>
#include <string.h>

#include <rte_ethdev.h>
#include <rte_mbuf.h>

#include "rplb.h"

struct rplb_engine {
	const char *name;
	/* Called once on the worker lcore before the loop; non-zero aborts. */
	int (*start)(struct rplb_worker *worker);
	/* Every packet of pkts[0..n) must end in rplb_worker_send or _drop. */
	void (*process_burst)(struct rplb_worker *worker, unsigned int in_side,
			      struct rte_mbuf **pkts, uint16_t n);
	/* Once per loop iteration, after tx: aging, quiescent state. */
	void (*housekeeping)(struct rplb_worker *worker, uint64_t now_tsc, int idle);
	/* Called once on the worker lcore after the loop. */
	void (*stop)(struct rplb_worker *worker);
};

struct rplb_tx_buffer {
	uint16_t port_id;
	uint16_t queue_id;
	uint16_t count;
	struct rte_mbuf *pkts[RPLB_BURST];
};

struct rplb_worker {
	/* Written by the control plane only, read once per loop iteration. */
	volatile uint32_t stop_requested __rte_cache_aligned;

	/* Read-mostly configuration. */
	uint16_t port_id[RPLB_SIDES] __rte_cache_aligned;
	uint16_t rx_queue;
	uint8_t tx_cksum_offload[RPLB_SIDES];
	uint8_t rx_cksum_offload[RPLB_SIDES];   /* the port flags bad checksums */
	uint64_t drain_tsc;
	const struct rplb_engine *engine;
	void *engine_state;         /* shared by workers (e.g. struct rplb_lb) */
	void *engine_local;         /* this worker's own engine data */
	unsigned int lcore_id;
	int socket_id;

	struct rplb_tx_buffer tx[RPLB_SIDES] __rte_cache_aligned;
	struct rplb_lcore_counters counters;
};

/* Transmit what is buffered for one side; free and count what the port
 * refused (a full ring must not stall the loop). */
static __rte_always_inline void
rplb_worker_flush(struct rplb_worker *worker, unsigned int side)
{
	struct rplb_tx_buffer *buf = &worker->tx[side];
	uint16_t sent, i;

	if (buf->count == 0)
		return;
	sent = rte_eth_tx_burst(buf->port_id, buf->queue_id, buf->pkts, buf->count);
	worker->counters.port[side].tx_packets += sent;
	if (unlikely(sent < buf->count)) {
		worker->counters.port[side].tx_dropped += buf->count - sent;
		worker->counters.drops[RPLB_DROP_TX_FULL] += buf->count - sent;
		for (i = sent; i < buf->count; i++)
			rte_pktmbuf_free(buf->pkts[i]);
	}
	buf->count = 0;
}

/* Buffer m (of bytes bytes, m->pkt_len) for out_side's port. */
static inline void
rplb_worker_send_len(struct rplb_worker *worker, unsigned int out_side, struct rte_mbuf *m,
		     uint32_t bytes)
{
	struct rplb_tx_buffer *buf = &worker->tx[out_side];

	worker->counters.port[out_side].tx_bytes += bytes;
	buf->pkts[buf->count++] = m;
	if (unlikely(buf->count == RPLB_BURST))
		rplb_worker_flush(worker, out_side);
}

static inline void
rplb_worker_send(struct rplb_worker *worker, unsigned int out_side, struct rte_mbuf *m)
{
	rplb_worker_send_len(worker, out_side, m, m->pkt_len);
}

/* Buffer n packets (of bytes bytes in all) for out_side's port: an engine
 * that collects a burst's worth in an array of its own, its count in a
 * register, hands them over once. */
static inline void
rplb_worker_send_bulk(struct rplb_worker *worker, unsigned int out_side, struct rte_mbuf **pkts,
		      unsigned int n, uint64_t bytes)
{
	struct rplb_tx_buffer *buf = &worker->tx[out_side];

	worker->counters.port[out_side].tx_bytes += bytes;
	while (n > 0) {
		unsigned int room = RPLB_BURST - buf->count;
		unsigned int k = RTE_MIN(room, n);

		memcpy(&buf->pkts[buf->count], pkts, k * sizeof(*pkts));
		buf->count += k;
		pkts += k;
		n -= k;
		if (buf->count == RPLB_BURST)
			rplb_worker_flush(worker, out_side);
	}
}

static inline void
rplb_worker_drop(struct rplb_worker *worker, enum rplb_drop_reason reason, struct rte_mbuf *m)
{
	worker->counters.drops[reason]++;
	rte_pktmbuf_free(m);
}

#endif /* RPLB_WORKER_H */
