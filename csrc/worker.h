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
#include <rte_ring.h>

#include "rplb.h"
#include "steer.h"

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

/* The rings between several workers (rplb_handoff_create): one
 * single-producer, single-consumer ring per ordered pair of workers, and
 * the steering that says which worker owns a frame.  Read-only once the
 * workers run. */
struct rplb_handoff {
	struct rplb_steering steering;
	uint32_t n_workers;
	int socket_id;
	struct rte_ring *rings[];   /* [from * n_workers + to]; NULL where from == to */
};

/* Frames of one rx burst this worker hands to one other worker, enqueued
 * on its ring at the end of the burst's steering pass: each an mbuf's
 * address with the side it came from in bit 0 (worker.c, handed_over). */
struct rplb_handoff_stage {
	uint16_t count;
	void *entries[RPLB_BURST];
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
	/* The appliance's own address on the backend network (network byte
	 * order), or 0: every frame from the backends is compared with it
	 * (rplb_worker_to_kernel). */
	uint32_t local_addr;
	/* With several workers: the rings between them (NULL: this worker is
	 * alone, and nothing is steered), this worker's index among them, its
	 * ring to each other worker (outgoing[handoff_index] is NULL) and the
	 * rings from the others (n_workers - 1 of them). */
	struct rplb_handoff *handoff;
	uint16_t handoff_index;
	struct rte_ring **outgoing;
	struct rte_ring **incoming;
	/* The other workers a steering pass staged frames for, in order. */
	uint16_t n_staged;
	uint16_t *staged_for;
	struct rplb_handoff_stage *stages;      /* one per worker */

	struct rplb_tx_buffer tx[RPLB_SIDES] __rte_cache_aligned;
	struct rplb_lcore_counters counters;

	/* The exception path, touched only by frames that cross it: its port
	 * (kernel.port_id) and queue pair, the frames buffered for the kernel,
	 * and the rate limits, one per enum rplb_kernel_class (GCRA: a frame
	 * is allowed while the theoretical time of its class's next frame,
	 * kernel_next_tsc, is at most kernel_burst_tsc ahead of now; each
	 * allowed frame moves it kernel_tsc_per_frame on). */
	uint64_t kernel_next_tsc[2] __rte_cache_aligned;
	uint64_t kernel_tsc_per_frame;
	uint64_t kernel_burst_tsc;
	struct rplb_tx_buffer kernel;
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

/* Frames for the kernel interface are rate-limited in two classes apart,
 * so that a flood from elsewhere cannot starve the health checks: those
 * from an address of a configured backend (the checks' replies, the
 * backends' ARP) and all others. */
enum rplb_kernel_class {
	RPLB_KERNEL_FROM_BACKENDS,
	RPLB_KERNEL_FROM_OTHERS,
};

/* A frame from the backend network for the appliance's own address
 * (local_addr): to the kernel interface, or dropped and counted beyond its
 * class's rate limit.  Returns 0, taking nothing, when this worker has no
 * kernel interface (local_addr 0): the caller goes on as for any other
 * frame.  Out of line: only frames that cross come here. */
int rplb_worker_to_kernel(struct rplb_worker *worker, struct rte_mbuf *m,
			  enum rplb_kernel_class class);

/* Hand the frames buffered for the kernel interface to it now (the worker
 * loop does at each drain period; harnesses that call the engine directly
 * do when they flush). */
void rplb_worker_flush_kernel(struct rplb_worker *worker);
/* rplb_handoff_create with rings of ring_size entries (a power of two)
 * instead of rplb_handoff_ring_size's: the fuzz harness fills small ones. */
struct rplb_handoff *rplb_handoff_create_with_rings(unsigned int n_workers,
						    unsigned int ring_size, int socket_id);

/* Several workers (worker->handoff set): keep in pkts[0..n) the frames of
 * an rx burst from in_side that this worker owns, and hand the others to
 * their owners' rings.  Returns how many were kept (worker.c). */
uint16_t rplb_worker_steer_burst(struct rplb_worker *worker, unsigned int in_side,
				 struct rte_mbuf **pkts, uint16_t n);

/* Several workers: process what the other workers handed to this one, a
 * burst per ring, each frame as received from the side the worker that
 * received it polled (its port's: mbuf->port), which travels with it.
 * Returns how many frames. */
unsigned int rplb_worker_take_handed_over(struct rplb_worker *worker);

#endif /* RPLB_WORKER_H */
