/* SPDX-License-Identifier: BSD-3-Clause
 *
 * engine_fwd.c: pass-through engine (testpmd's io mode): every frame leaves
 * by the other port unchanged.
 */
#include "worker.h"

static void
fwd_process_burst(struct rplb_worker *worker, unsigned int in_side,
		  struct rte_mbuf **pkts, uint16_t n)
{
	unsigned int out_side = in_side ^ 1;
	uint16_t i;

	worker->counters.events[RPLB_EV_PASSED_THROUGH] += n;
	for (i = 0; i < n; i++)
		rplb_worker_send(worker, out_side, pkts[i]);
}

static const struct rplb_engine fwd_engine = {
	.name = "fwd",
	.process_burst = fwd_process_burst,
};

const struct rplb_engine *
rplb_engine_fwd(void)
{
	return &fwd_engine;
}
