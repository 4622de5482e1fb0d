/* SPDX-License-Identifier: BSD-3-Clause
 *
 * flow_sample.h: copies of a worker's flows for operators (rplbctl flows),
 * taken without a lock on the fast path.
 *
 * Only the worker may read its flow table, so the control plane asks and
 * the worker answers between bursts, a slice of the table per loop
 * iteration (one scan of a large table in one go would stall rx):
 *
 *   control plane (rplb_lb_flow_sample)     worker (lb_housekeeping)
 *   -----------------------------------     -------------------------------
 *   max = m                     (relaxed)
 *   request = s                 (release) -> request != answered   (acquire)
 *                                            s is new: scan from record 1,
 *                                              for min(m, RPLB_FLOW_SAMPLE_MAX)
 *                                            copy flows, a budget of records
 *                                              per loop iteration ...
 *                                            count = n
 *   answered == s ?             (acquire) <- answered = s           (release)
 *   copy min(count, m, MAX) entries
 *
 * Every request has its own sequence number.  A request that timed out is
 * superseded by the next one: the worker starts over when it sees a new
 * number, and a late answer carries the old number, so it is never taken
 * for the new request's.  The worker bounds its answer by the max it read
 * after the sequence number (published before it), the control plane its
 * copy by its own max and the buffer: neither side trusts the other's
 * count.  Control-plane callers are serialised by the slot's lock (never
 * taken by the worker).
 */
#ifndef RPLB_FLOW_SAMPLE_H
#define RPLB_FLOW_SAMPLE_H

#include <pthread.h>
#include <stdint.h>

#include <rte_common.h>

#include "flow6_table.h"
#include "flow_table.h"
#include "rplb.h"

struct rplb_flow_sample_slot {
	/* Written by the control plane, read by the worker once per loop
	 * iteration; answered and count are written by the worker only when
	 * an answer is complete, so the line stays shared while idle. */
	uint32_t request;       /* sequence number of the latest request (0: none yet) */
	uint32_t max;           /* entries that request wants, stored before request */
	uint32_t answered;      /* sequence number of the last complete answer */
	uint32_t count;         /* entries in buffer for `answered` */

	/* The worker's own: the scan under way (a line of its own, so the
	 * control plane polling `answered` does not take it from the worker
	 * at every record). */
	uint32_t serving __rte_cache_aligned;   /* the request being answered */
	uint32_t serving_max;   /* its max, at most RPLB_FLOW_SAMPLE_MAX */
	uint32_t cursor;        /* the next record to look at */
	uint32_t filled;        /* entries of buffer copied so far */

	/* Control plane only: serialises callers of rplb_lb_flow_sample. */
	pthread_mutex_t lock __rte_cache_aligned;
	uint32_t last_request;  /* the last sequence number handed out */

	struct rplb_flow_sample buffer[RPLB_FLOW_SAMPLE_MAX] __rte_cache_aligned;
};

/* A slot on the DPDK heap of socket_id, or NULL + rte_errno. */
struct rplb_flow_sample_slot *rplb_flow_sample_slot_create(int socket_id);
void rplb_flow_sample_slot_free(struct rplb_flow_sample_slot *slot);

/* ---- control plane (hold slot->lock around a post and its take) ---- */

/* Ask for up to max entries (clamped to RPLB_FLOW_SAMPLE_MAX); returns the
 * request's sequence number.  Supersedes any request still unanswered. */
uint32_t rplb_flow_sample_post(struct rplb_flow_sample_slot *slot, unsigned int max);

/* The answer to request, copied into out (room for max entries): how
 * many, or -EAGAIN while the worker has not completed it. */
int rplb_flow_sample_take(struct rplb_flow_sample_slot *slot, uint32_t request,
			  struct rplb_flow_sample *out, unsigned int max);

/* ---- worker ------------------------------------------------------------ */

/* A request waits for its answer: one load and compare per loop
 * iteration, the rest out of line. */
static inline int
rplb_flow_sample_wanted(const struct rplb_flow_sample_slot *slot)
{
	return __atomic_load_n(&slot->request, __ATOMIC_ACQUIRE) != slot->answered;
}

/* Look at up to budget more records of the table for the latest request,
 * and publish the answer when it is complete (enough entries, or the whole
 * table seen).  Call between bursts, on the table's own worker. */
void rplb_flow_sample_serve(struct rplb_flow_sample_slot *slot,
			    const struct rplb_flow_table *table,
			    const struct rplb_flow6_table *table6, uint64_t now_tsc,
			    unsigned int budget);

#endif /* RPLB_FLOW_SAMPLE_H */
