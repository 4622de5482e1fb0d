/* SPDX-License-Identifier: BSD-3-Clause
 *
 * worker.c: the poll-mode loop of one worker lcore (after DPDK's l3fwd):
 * rx burst on each port -> engine -> buffered tx, drained on a timer; and
 * the exception path's two directions: frames for the appliance's own
 * address to its kernel interface, what that interface sends out of the
 * backend port (docs/fastpath.md, "The exception path").  With several
 * workers, each rx burst is steered first (the frames of clients another
 * worker owns go to its ring, steer.h), and the frames the others handed
 * over are processed after this worker's own.
 */
#include <errno.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_prefetch.h>
#include <rte_ring.h>

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
	const struct rplb_handoff *handoff;
	struct rplb_worker *worker;
	unsigned int side, n_workers, other;
	size_t size;

	if (params == NULL || engine == NULL ||
	    (params->handoff != NULL && params->handoff_index >= params->handoff->n_workers)) {
		rte_errno = EINVAL;
		return NULL;
	}
	handoff = params->handoff;
	n_workers = handoff != NULL ? handoff->n_workers : 0;
	/* With several workers, the worker's handoff state follows it in the
	 * same allocation: its rings (outgoing, incoming), the list of
	 * workers staged for, and a stage per worker. */
	size = RTE_ALIGN_CEIL(sizeof(*worker), RTE_CACHE_LINE_SIZE);
	if (handoff != NULL)
		size += 2 * n_workers * sizeof(struct rte_ring *) + n_workers * sizeof(uint16_t) +
			RTE_CACHE_LINE_SIZE + n_workers * sizeof(struct rplb_handoff_stage);
	worker = rte_zmalloc_socket("rplb_worker", size, RTE_CACHE_LINE_SIZE, params->socket_id);
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
	if (handoff != NULL) {
		uint8_t *next = (uint8_t *)worker + RTE_ALIGN_CEIL(sizeof(*worker), RTE_CACHE_LINE_SIZE);
		unsigned int self = params->handoff_index, n_in = 0;

		worker->handoff = params->handoff;
		worker->handoff_index = (uint16_t)self;
		worker->outgoing = (struct rte_ring **)next;
		next += n_workers * sizeof(struct rte_ring *);
		worker->incoming = (struct rte_ring **)next;
		next += n_workers * sizeof(struct rte_ring *);
		worker->staged_for = (uint16_t *)next;
		next += n_workers * sizeof(uint16_t);
		worker->stages = (struct rplb_handoff_stage *)RTE_PTR_ALIGN_CEIL(next,
										 RTE_CACHE_LINE_SIZE);
		for (other = 0; other < n_workers; other++) {
			worker->outgoing[other] = handoff->rings[self * n_workers + other];
			if (other != self)
				worker->incoming[n_in++] = handoff->rings[other * n_workers + self];
		}
	}
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

/* ---- several workers: the steering pass and the handoff ---------------- */

/* A frame handed over travels as its mbuf's address with the side it was
 * received from in bit 0 (mbufs are cache-line aligned).  Why not read
 * mbuf->port at the other end: the taker would then touch every mbuf's
 * header, a line still in the receiving core's cache, one after the other
 * just to sort the burst by side; with the side in the pointer it sorts
 * without touching any, and prefetches the headers while it does. */
static inline void *
handed_over(struct rte_mbuf *m, unsigned int side)
{
	RTE_BUILD_BUG_ON(__alignof__(struct rte_mbuf) < 2 || RPLB_SIDES > 2);
	return (void *)((uintptr_t)m | side);
}

static inline struct rte_mbuf *
handed_over_mbuf(void *entry)
{
	return (struct rte_mbuf *)((uintptr_t)entry & ~(uintptr_t)1);
}

static inline unsigned int
handed_over_side(void *entry)
{
	return (unsigned int)((uintptr_t)entry & 1);
}

/* Hand what the steering pass staged to each owner's ring, in one burst
 * per owner; what a full ring refuses is dropped and counted. */
static void
hand_over_staged(struct rplb_worker *worker)
{
	unsigned int i;

	for (i = 0; i < worker->n_staged; i++) {
		const unsigned int owner = worker->staged_for[i];
		struct rplb_handoff_stage *stage = &worker->stages[owner];
		unsigned int sent, k;

		sent = rte_ring_sp_enqueue_burst(worker->outgoing[owner], stage->entries,
						 stage->count, NULL);
		worker->counters.events[RPLB_EV_HANDOFF_SENT] += sent;
		if (unlikely(sent < stage->count)) {
			worker->counters.drops[RPLB_DROP_HANDOFF_FULL] += stage->count - sent;
			for (k = sent; k < stage->count; k++)
				rte_pktmbuf_free(handed_over_mbuf(stage->entries[k]));
		}
		stage->count = 0;
	}
	worker->n_staged = 0;
}

/* The owner of frame m from in_side (a constant at each call): self for a
 * frame that needs no flow, or (hardware steering) that the port spread by
 * its client already. */
static __rte_always_inline unsigned int
frame_owner(const struct rplb_steering *steering, const struct rte_mbuf *m,
	    const unsigned int in_side, const int software, unsigned int self)
{
	uint32_t client;

	if (!rplb_steer_client(m, in_side, software, &client))
		return self;
	return rplb_steer_owner_of(steering, client);
}

/* Stage frame m, received from in_side, for owner's ring. */
static __rte_always_inline void
stage(struct rplb_worker *worker, unsigned int owner, struct rte_mbuf *m, unsigned int in_side)
{
	struct rplb_handoff_stage *stage = &worker->stages[owner];

	if (stage->count == 0)
		worker->staged_for[worker->n_staged++] = (uint16_t)owner;
	stage->entries[stage->count++] = handed_over(m, in_side);
}

/* The steering pass of one rx burst from in_side (a constant at each
 * call): software, every frame's owner is computed; hardware, the port
 * spread the frames by their client already, and only those it cannot
 * have (ICMP errors) are looked at.  Nearly every frame is its own when
 * the port steers well: the loop keeps them in place, without a store,
 * until the first frame to hand over; a second loop then packs the rest.
 * No prefetch: each frame costs a few loads and a CRC32, independent of
 * the previous frame's, so the core overlaps the first lines of several
 * frames by itself (and the engine's classify pass prefetches its own). */
static __rte_always_inline uint16_t
steer_burst(struct rplb_worker *worker, const unsigned int in_side, struct rte_mbuf **pkts,
	    uint16_t n, const int software)
{
	const struct rplb_steering *steering = &worker->handoff->steering;
	const unsigned int self = worker->handoff_index;
	unsigned int owner;
	uint16_t kept, i;

	for (i = 0; i < n; i++) {
		owner = frame_owner(steering, pkts[i], in_side, software, self);
		if (unlikely(owner != self))
			break;
	}
	if (likely(i == n))
		return n;
	kept = i;
	stage(worker, owner, pkts[i], in_side);
	for (i++; i < n; i++) {
		struct rte_mbuf *m = pkts[i];

		owner = frame_owner(steering, m, in_side, software, self);
		if (owner == self)
			pkts[kept++] = m;
		else
			stage(worker, owner, m, in_side);
	}
	hand_over_staged(worker);
	return kept;
}

uint16_t
rplb_worker_steer_burst(struct rplb_worker *worker, unsigned int in_side, struct rte_mbuf **pkts,
			uint16_t n)
{
	const int software = worker->handoff->steering.mode == RPLB_STEER_SOFTWARE;

	if (in_side == RPLB_FRONTEND)
		return software ? steer_burst(worker, RPLB_FRONTEND, pkts, n, 1) :
				  steer_burst(worker, RPLB_FRONTEND, pkts, n, 0);
	return software ? steer_burst(worker, RPLB_BACKEND, pkts, n, 1) :
			  steer_burst(worker, RPLB_BACKEND, pkts, n, 0);
}

/* Rounds a loop iteration takes from one ring at most: one burst keeps
 * pace with a producer that hands over a burst per iteration; a second
 * lets a ring that filled during a slow iteration catch up. */
#define TAKE_ROUNDS 2

unsigned int
rplb_worker_take_handed_over(struct rplb_worker *worker)
{
	const unsigned int n_rings = worker->handoff->n_workers - 1;
	void *entries[RPLB_BURST];
	struct rte_mbuf *by_side[RPLB_SIDES][RPLB_BURST];
	unsigned int ring, round, total = 0;

	for (ring = 0; ring < n_rings; ring++) {
		for (round = 0; round < TAKE_ROUNDS; round++) {
			unsigned int n, i, count[RPLB_SIDES] = {0, 0};

			n = rte_ring_sc_dequeue_burst(worker->incoming[ring], entries, RPLB_BURST, NULL);
			if (n == 0)
				break;
			total += n;
			/* Sorted by the side each was received from (the engine takes
			 * a burst of one side), both lines of every header prefetched:
			 * they are in the other core's cache, the engine reads the
			 * first of each and the free after tx the second (its pool). */
			for (i = 0; i < n; i++) {
				struct rte_mbuf *m = handed_over_mbuf(entries[i]);
				const unsigned int side = handed_over_side(entries[i]);

				rte_prefetch0(m);
				rte_prefetch0(RTE_PTR_ADD(m, RTE_CACHE_LINE_SIZE));
				by_side[side][count[side]++] = m;
			}
			/* Then every frame's first line, whose address is in the
			 * header: the headers were all asked for at once above, so
			 * they arrive together, and so do these; the engine's own
			 * prefetch, a few frames ahead, would wait for each in turn. */
			for (i = 0; i < count[RPLB_FRONTEND]; i++)
				rte_prefetch0(rte_pktmbuf_mtod(by_side[RPLB_FRONTEND][i], void *));
			for (i = 0; i < count[RPLB_BACKEND]; i++)
				rte_prefetch0(rte_pktmbuf_mtod(by_side[RPLB_BACKEND][i], void *));
			if (count[RPLB_FRONTEND] > 0)
				worker->engine->process_burst(worker, RPLB_FRONTEND, by_side[RPLB_FRONTEND],
							      (uint16_t)count[RPLB_FRONTEND]);
			if (count[RPLB_BACKEND] > 0)
				worker->engine->process_burst(worker, RPLB_BACKEND, by_side[RPLB_BACKEND],
							      (uint16_t)count[RPLB_BACKEND]);
			if (n < RPLB_BURST)
				break;
		}
	}
	worker->counters.events[RPLB_EV_HANDOFF_RECEIVED] += total;
	return total;
}

unsigned int
rplb_worker_discard_handed_over(struct rplb_worker *worker)
{
	void *entries[RPLB_BURST];
	unsigned int ring, n, i, total = 0;

	if (worker->handoff == NULL)
		return 0;
	for (ring = 0; ring + 1 < worker->handoff->n_workers; ring++) {
		while ((n = rte_ring_sc_dequeue_burst(worker->incoming[ring], entries, RPLB_BURST,
						      NULL)) > 0) {
			for (i = 0; i < n; i++)
				rte_pktmbuf_free(handed_over_mbuf(entries[i]));
			total += n;
		}
	}
	worker->counters.drops[RPLB_DROP_HANDOFF_AT_STOP] += total;
	return total;
}

/* ---- the loop ------------------------------------------------------------ */

/* steered: a constant at each call.  Alone (0), the loop is rx -> engine
 * per side, with nothing of the steering in it; with several workers (1),
 * each rx burst goes through the steering pass first, and the frames the
 * other workers handed over are taken after this worker's own rx. */
static __rte_always_inline void
run(struct rplb_worker *worker, const int steered)
{
	const struct rplb_engine *engine = worker->engine;
	struct rte_mbuf *pkts[RPLB_BURST];
	uint64_t now, last_drain;
	unsigned int side;

	last_drain = rte_rdtsc();
	while (!__atomic_load_n(&worker->stop_requested, __ATOMIC_ACQUIRE)) {
		unsigned int received = 0;

		for (side = 0; side < RPLB_SIDES; side++) {
			uint16_t n = receive(worker, side, pkts);

			if (n == 0)
				continue;
			received += n;
			if (steered) {
				n = rplb_worker_steer_burst(worker, side, pkts, n);
				if (n == 0)
					continue;
			}
			engine->process_burst(worker, side, pkts, n);
		}
		if (steered)
			received += rplb_worker_take_handed_over(worker);

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
}

int
rplb_worker_main(void *arg)
{
	struct rplb_worker *worker = arg;
	const struct rplb_engine *engine = worker->engine;
	unsigned int side;
	int err;

	worker->lcore_id = rte_lcore_id();
	if (engine->start != NULL) {
		err = engine->start(worker);
		if (err != 0)
			return err;
	}

	if (worker->handoff == NULL)
		run(worker, 0);
	else
		run(worker, 1);

	if (worker->local_addr != 0)
		flush_to_kernel(worker);
	for (side = 0; side < RPLB_SIDES; side++)
		rplb_worker_flush(worker, side);
	if (engine->stop != NULL)
		engine->stop(worker);
	return 0;
}
