/* SPDX-License-Identifier: BSD-3-Clause
 *
 * engine_lb.c: the reverse-proxy load-balancing engine.  docs/fastpath.md
 * follows a packet through it; this file runs the passes in order.
 *
 * Per burst, in passes, so that the flow table is looked up in bulk (the
 * loads of a whole burst overlap instead of each packet waiting for its
 * own):
 *   1. classify (lb_classify.h): every packet gets its verdict (pass
 *      through, drop, answer an ICMP echo to a VIP) or, every well-formed
 *      TCP/UDP frame, a lookup record with its flow key and hash; its
 *      primary bucket is prefetched;
 *   2. match (flow_table.h, rplb_flow_match_first): each key's primary
 *      bucket is read, its first signature match noted and that record
 *      prefetched;
 *   2b. prepare new flows (client side, only in a burst with a miss): the
 *      keys nothing matched are looked up in full; the misses look up
 *      their service, pick a backend (Maglev) and prefetch what their
 *      insert will write;
 *   3. resolve (lb_resolve.h): each looked-up packet is confirmed against
 *      its record, then known flow, new flow, stateless reply, or not for
 *      a service after all (pass through); rewritten and sent.
 * Then, once per loop iteration, housekeeping: the RCU quiescent state,
 * a flow-sample request if one is pending, and a slice of aging.
 *
 * The flow table comes first because it answers for nearly every packet:
 * a flow whose backend is still configured under the flow's service is
 * still valid (a backend id, with its generation, is never reused for
 * another service's backend: rplb.h), so a known flow needs no service
 * lookup at all.
 */
#include <errno.h>
#include <string.h>
#include <netinet/in.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_prefetch.h>

#include "lb.h"
#include "lb_burst.h"
#include "lb_classify.h"
#include "lb_flow_state.h"
#include "lb_resolve.h"
#include "packet.h"
#include "worker.h"

/* Packets whose first line is loaded ahead of the one classified: enough
 * to cover a DRAM load at the classify loop's pace. */
#define PREFETCH_AHEAD 4
/* Records aged per loop iteration under load, and when idle.  Small under
 * load: aging takes a little of every loop iteration rather than a pause;
 * still, in full bursts at line rate a million-record table is swept in
 * about a second, far finer than any timeout (docs/fastpath.md works it
 * out). */
#define AGING_BUDGET_BUSY 8
#define AGING_BUDGET_IDLE 512
/* Records a flow-sample request looks at per loop iteration (it scans the
 * whole table, if it must, over many iterations: flow_sample.h).  Under
 * load a slice takes about as long as a burst of work, not a stall. */
#define SAMPLE_BUDGET_BUSY 256
#define SAMPLE_BUDGET_IDLE 4096

/* Pass 2b: the client-side packets without a signature match in their
 * primary bucket (first_flow the sentinel): look each one up in full (its
 * secondary bucket was prefetched, if it can hold the key).  Found: its
 * reference and record go in first_ref and first_flow.  Not found
 * (first_flow stays the sentinel): find its service and pick its backend.
 * A new flow writes a free record and the bucket of its backend-side key,
 * both cold in a large table: start loading them for every miss of the
 * burst before the first insert. */
static inline void
prepare_new_flows(const struct rplb_flow_table *flow_table, const struct rplb_lb_tables *tables,
		  struct lookup_record *lookups, const struct lookup_record *end)
{
	uint32_t free_top = flow_table->free_count;
	struct lookup_record *lookup;

	for (lookup = lookups; lookup < end; lookup++) {
		uint32_t index, pick;

		if (likely(lookup->first_flow != rplb_sentinel(flow_table)))
			continue;
		index = rplb_flow_lookup_unmatched(flow_table, &lookup->key, lookup->hash);
		if (index != RPLB_NO_FLOW) {
			lookup->first_ref = rplb_flow_ref(index, RPLB_DIR_CLIENT);
			lookup->first_flow = &flow_table->flows[index];
			continue;
		}
		lookup->service = rplb_find_service(tables, lookup->key.dst_ip, lookup->key.dst_port,
						    lookup->key.proto);
		if (lookup->service == NULL)
			continue;
		pick = rplb_maglev_pick(lookup->service, lookup->hash);
		lookup->new_backend = pick;
		if (pick == RPLB_NO_BACKEND)
			continue;
		lookup->new_backend_hash = rplb_flow_backend_key_hash(&lookup->key,
								      tables->backends[pick].ip,
								      tables->backends[pick].port);
		rplb_flow_prefetch(flow_table, lookup->new_backend_hash);
		if (free_top > 0)
			rte_prefetch0(&flow_table->flows[flow_table->free_stack[--free_top]]);
	}
}

/* Pass 3: resolve, rewrite and send each looked-up packet of a burst
 * from in_side.  tx_offload and rx_checked (struct resolve_context) are
 * constants in the copies below, so their tests vanish from the loop. */
static __rte_always_inline void
resolve_burst(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	      const struct rplb_lb_tables *tables, const unsigned int in_side,
	      struct lookup_record *lookups, const struct lookup_record *end,
	      const int tx_offload, const int rx_checked)
{
	struct rplb_flow_table *flow_table = lb_worker->flows;
	struct changed_filter flows_changed;
	struct rte_mbuf *out_pkts[RPLB_BURST];
	struct resolve_context context = {
		.tx_offload = tx_offload, .rx_checked = rx_checked,
		.now = lb_worker->clock_now,
		.backends = tables->backends, .backend_counters = lb_worker->backend_counters,
		.next_out = out_pkts, .bytes = 0,
	};
	struct lookup_record *lookup = lookups;

	if (in_side == RPLB_FRONTEND) {
		/* Until a packet changes a flow, every bulk lookup answer is
		 * current: a loop without the flows_changed test, then one with. */
		memset(&flows_changed, 0, sizeof(flows_changed));
		for (; lookup < end; lookup++) {
			if (resolve_from_client(worker, lb_worker, &context, flow_table, tables, lookup,
						&flows_changed, 0)) {
				lookup++;
				break;
			}
		}
		for (; lookup < end; lookup++)
			resolve_from_client(worker, lb_worker, &context, flow_table, tables, lookup,
					    &flows_changed, 1);
		worker->counters.events[RPLB_EV_TO_BACKEND] += context.next_out - out_pkts;
	} else {
		for (; lookup < end; lookup++)
			resolve_from_backend(worker, lb_worker, &context, tables, lookup,
					     rplb_flow_confirm(flow_table, &lookup->key, lookup->hash,
							       lookup->first_ref, RPLB_DIR_BACKEND));
	}
	rplb_worker_send_bulk(worker, in_side == RPLB_FRONTEND ? RPLB_BACKEND : RPLB_FRONTEND,
			      out_pkts, context.next_out - out_pkts, context.bytes);
}

/* The copies of the resolve loop.  Why copies: in each, the side and the
 * two offloads are constants, so the loop has no per-packet test of them
 * and no register holding them.  Why functions of their own (noinline):
 * inlined into process_burst_from, the resolve loop and the classify loop
 * shared one register allocation, and a change to either moved spills
 * into the other.  Only two of the four run on a given pair of ports (one
 * per direction).  Ports with exactly one of the two offloads take
 * resolve_burst inlined with run-time flags: rare, not worth two more
 * copies. */
static __rte_noinline void
resolve_from_clients_in_software(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
				 const struct rplb_lb_tables *tables,
				 struct lookup_record *lookups, const struct lookup_record *end)
{
	resolve_burst(worker, lb_worker, tables, RPLB_FRONTEND, lookups, end, 0, 0);
}

static __rte_noinline void
resolve_from_clients_offloaded(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
			       const struct rplb_lb_tables *tables,
			       struct lookup_record *lookups, const struct lookup_record *end)
{
	resolve_burst(worker, lb_worker, tables, RPLB_FRONTEND, lookups, end, 1, 1);
}

static __rte_noinline void
resolve_from_backends_in_software(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
				  const struct rplb_lb_tables *tables,
				  struct lookup_record *lookups, const struct lookup_record *end)
{
	resolve_burst(worker, lb_worker, tables, RPLB_BACKEND, lookups, end, 0, 0);
}

static __rte_noinline void
resolve_from_backends_offloaded(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
				const struct rplb_lb_tables *tables,
				struct lookup_record *lookups, const struct lookup_record *end)
{
	resolve_burst(worker, lb_worker, tables, RPLB_BACKEND, lookups, end, 1, 1);
}

/* A worker meets a table generation for the first time, at the start of a
 * burst or between bursts, before any packet uses it: the slots it hands
 * to new backends start counting their active flows from zero.  Every
 * running worker adopts every generation (rplb_lb_publish waits for it
 * before the next one can be published), so the generation's own list of
 * those slots is enough; a worker that missed generations (it was
 * stopped) looks at every slot instead. */
static __rte_noinline void
adopt_tables(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	     const struct rplb_lb_tables *tables)
{
	uint32_t i;

	if (tables->generation == lb_worker->generation_seen + 1) {
		for (i = 0; i < tables->n_reused; i++)
			lb_worker->backend_counters[tables->reused_slots[i]].active_flows = 0;
	} else if (lb_worker->generation_seen != 0) {
		for (i = 0; i < RPLB_MAX_BACKENDS; i++)
			if (tables->slot_taken_in[i] > (uint32_t)lb_worker->generation_seen)
				lb_worker->backend_counters[i].active_flows = 0;
	}
	lb_worker->generation_seen = tables->generation;
	worker->counters.events[RPLB_EV_TABLES_SEEN]++;
}

/* One burst from one side; inlined into lb_process_burst once per side,
 * so neither copy tests the side per packet. */
static __rte_always_inline void
process_burst_from(struct rplb_worker *worker, const unsigned int in_side,
		   struct rte_mbuf **pkts, uint16_t n)
{
	struct rplb_lb *lb = worker->engine_state;
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	/* The tables of this burst: the worker holds them until its next
	 * quiescent state (lb_housekeeping), so the control plane frees them
	 * only after the burst. */
	const struct rplb_lb_tables *tables = __atomic_load_n(&lb->tables, __ATOMIC_ACQUIRE);
	struct rplb_flow_table *flow_table = lb_worker->flows;
	struct lookup_record lookups[RPLB_BURST];
	struct lookup_record *lookup = lookups, *end;
	struct rplb_flow_table table_header;
	int unmatched = 0;
	unsigned int i;
	/* Read once a burst: the ports' offloads do not change under it. */
	const int tx_offload = worker->tx_cksum_offload[in_side == RPLB_FRONTEND ? RPLB_BACKEND :
										   RPLB_FRONTEND];
	const int rx_checked = worker->rx_cksum_offload[in_side];
	/* The appliance's own address (classify_from_backend), read once a
	 * burst: a register the classify loop compares with, not a load per
	 * packet through the worker pointer, which every store to a packet
	 * might alias. */
	const uint32_t local_addr = worker->local_addr;

	if (unlikely(tables->generation != lb_worker->generation_seen))
		adopt_tables(worker, lb_worker, tables);
	/* Pass 1: classify. */
	for (i = 0; i < n && i < PREFETCH_AHEAD; i++)
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
	/* A pointer, not an index, into the lookups: the loop keeps its few
	 * registers for the packet.  The last PREFETCH_AHEAD packets have
	 * nothing left to prefetch: a loop of their own, so neither tests it
	 * per packet. */
	for (i = 0; i + PREFETCH_AHEAD < n; i++) {
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i + PREFETCH_AHEAD], void *));
		lookup = classify(worker, tables, flow_table, in_side, pkts[i], lookup, local_addr);
	}
	for (; i < n; i++)
		lookup = classify(worker, tables, flow_table, in_side, pkts[i], lookup, local_addr);
	end = lookup;
	if (end == lookups)
		return;

	/* Pass 2: the bulk lookup's first half (its second, the confirmation,
	 * is in the resolve loop, which reads each record anyway).  It reads
	 * the table through a copy of its header.  Why: the loop stores
	 * pointers into the lookup records, and a store through a pointer
	 * might, for all the compiler knows, change *flow_table, so it would
	 * load flow_table->flows and the bucket mask again after every store.
	 * A local copy whose address the loop never stores cannot change:
	 * the record array's address stays in a register. */
	table_header = *flow_table;
	for (lookup = lookups; lookup < end; lookup++)
		lookup->first_ref = rplb_flow_match_first(&table_header, lookup->bucket, lookup->hash,
							  in_side == RPLB_FRONTEND ?
							  RPLB_DIR_CLIENT : RPLB_DIR_BACKEND,
							  &lookup->first_flow, &unmatched);
	/* Pass 2b: only a burst with a key that matched nothing. */
	if (unmatched && in_side == RPLB_FRONTEND)
		prepare_new_flows(flow_table, tables, lookups, end);
	/* Pass 3: one copy of the resolve loop for ports without checksum
	 * offloads, one for ports with both, one for the rest. */
	if (!tx_offload && !rx_checked)
		(in_side == RPLB_FRONTEND ? resolve_from_clients_in_software :
					    resolve_from_backends_in_software)(worker, lb_worker,
									       tables, lookups, end);
	else if (tx_offload && rx_checked)
		(in_side == RPLB_FRONTEND ? resolve_from_clients_offloaded :
					    resolve_from_backends_offloaded)(worker, lb_worker, tables,
									     lookups, end);
	else
		resolve_burst(worker, lb_worker, tables, in_side, lookups, end, tx_offload,
			      rx_checked);
}

static void
lb_process_burst(struct rplb_worker *worker, unsigned int in_side, struct rte_mbuf **pkts,
		 uint16_t n)
{
	if (in_side == RPLB_FRONTEND)
		process_burst_from(worker, RPLB_FRONTEND, pkts, n);
	else
		process_burst_from(worker, RPLB_BACKEND, pkts, n);
}

static __rte_noinline void
expire_flow(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	    const struct rplb_lb_tables *tables, uint32_t index)
{
	rplb_lb_count_flow_end(lb_worker, tables->backends, lb_worker->flows->flows[index].backend_id);
	rplb_flow_remove(lb_worker->flows, index);
	worker->counters.events[RPLB_EV_FLOWS_EXPIRED]++;
}

/* Once per loop iteration, after the bursts and their tx: the RCU
 * quiescent state, a slice of a pending flow-sample request, and a slice
 * of aging (a few records per iteration, many when idle, so there is never
 * a stop-the-world sweep). */
static void
lb_housekeeping(struct rplb_worker *worker, uint64_t now_tsc, int idle)
{
	struct rplb_lb *lb = worker->engine_state;
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rplb_flow_table *flow_table = lb_worker->flows;
	unsigned int budget = idle ? AGING_BUDGET_IDLE : AGING_BUDGET_BUSY;
	uint32_t cursor = flow_table->aging_cursor, end;
	unsigned int offset;
	const struct rplb_flow *flow, *last;
	uint32_t now = rplb_flow_clock(flow_table, now_tsc);
	const struct rplb_lb_tables *tables;

	lb_worker->clock_now = now;
	/* Between bursts this worker holds no table reference: tell the RCU,
	 * so a publish waiting to free older tables may go on (lb_tables.c). */
	rte_rcu_qsbr_quiescent(lb->qsbr, lb_worker->lcore_id);
	/* The tables this call ages with, held until the next quiescent
	 * state; a new generation is adopted before anything uses it. */
	tables = __atomic_load_n(&lb->tables, __ATOMIC_ACQUIRE);
	if (unlikely(tables->generation != lb_worker->generation_seen))
		adopt_tables(worker, lb_worker, tables);
	if (unlikely(rplb_flow_sample_wanted(lb_worker->sample)))
		rplb_flow_sample_serve(lb_worker->sample, flow_table, lb_worker->flows6, now_tsc,
				       idle ? SAMPLE_BUDGET_IDLE : SAMPLE_BUDGET_BUSY);

	/* The records from the cursor on, up to the budget or the table's end
	 * (the next call starts over at the first flow, past the sentinel):
	 * nearly always free or fresh. */
	end = RTE_MIN(cursor + budget, RPLB_FIRST_FLOW_RECORD + flow_table->capacity);
	/* A pointer walks the records (the index is needed only to expire). */
	for (flow = &flow_table->flows[cursor], last = &flow_table->flows[end]; flow < last;
	     flow++) {
		/* The flow clock wraps: idle time is a difference modulo 2^32. */
		if (flow->state != RPLB_FLOW_FREE &&
		    unlikely((uint32_t)(now - flow->last_seen) > tables->timeout_ticks[flow->state]))
			expire_flow(worker, lb_worker, tables, (uint32_t)(flow - flow_table->flows));
	}
	/* IPv6 flows (lb_ipv6.c), while there are any. */
	if (unlikely(lb_worker->flows6->free_count != lb_worker->flows6->capacity))
		rplb_lb_age_flows6(worker, tables, now, budget);
	/* Incomplete fragmented datagrams past their timeout. */
	if (unlikely(lb_worker->fragments->oldest != RPLB_NO_DATAGRAM))
		rplb_lb_expire_fragments(worker, now, idle);
	cursor = end;
	if (cursor == RPLB_FIRST_FLOW_RECORD + flow_table->capacity)
		cursor = RPLB_FIRST_FLOW_RECORD;
	flow_table->aging_cursor = cursor;
	/* The records the next call ages are cold in a large table (the
	 * loads above stalled on them): start loading them now, a burst
	 * ahead.  A prefetch never faults, so none is range-checked; the
	 * addresses are integers, not pointers past the array. */
	for (offset = 0; offset < AGING_BUDGET_BUSY * sizeof(struct rplb_flow);
	     offset += RTE_CACHE_LINE_SIZE)
		rte_prefetch0((const void *)((uintptr_t)&flow_table->flows[cursor] + offset));
}

static int
lb_start(struct rplb_worker *worker)
{
	struct rplb_lb *lb = worker->engine_state;
	unsigned int i;

	for (i = 0; i < lb->n_workers; i++) {
		if (lb->workers[i].lcore_id == worker->lcore_id) {
			worker->engine_local = &lb->workers[i];
			lb->workers[i].clock_now = rplb_flow_clock(lb->workers[i].flows, rte_rdtsc());
			rte_rcu_qsbr_thread_online(lb->qsbr, worker->lcore_id);
			return 0;
		}
	}
	/* rplb_lb_add_worker() was not called for this lcore. */
	return -ENOENT;
}

static void
lb_stop(struct rplb_worker *worker)
{
	struct rplb_lb *lb = worker->engine_state;

	/* Held fragments go back to the pool before the ports close: their
	 * datagrams end here, incomplete. */
	rplb_lb_flush_fragments(worker);
	rte_rcu_qsbr_thread_offline(lb->qsbr, worker->lcore_id);
}

static const struct rplb_engine lb_engine = {
	.name = "lb",
	.start = lb_start,
	.process_burst = lb_process_burst,
	.housekeeping = lb_housekeeping,
	.stop = lb_stop,
};

const struct rplb_engine *
rplb_engine_lb(void)
{
	return &lb_engine;
}
