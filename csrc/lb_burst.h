/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_burst.h: what the passes of the load-balancing engine share while one
 * burst goes through them (engine_lb.c runs the passes; lb_classify.h is
 * pass 1, lb_resolve.h pass 3).
 *
 *   - struct lookup_record: one per packet that needs the flow table,
 *     written once by classify, completed by the match pass, read by
 *     resolve;
 *   - struct resolve_context: what the resolve loop keeps in registers;
 *   - the verdicts every pass may give a packet (pass through, drop) and
 *     the counters a packet or a flow updates.
 *
 * Private to engine_lb.c, which includes it once: every function here is
 * static and meant to be inlined into the passes.
 */
#ifndef RPLB_LB_BURST_H
#define RPLB_LB_BURST_H

#include <stdint.h>
#include <string.h>

#include <rte_mbuf.h>

#include "flow_table.h"
#include "lb.h"
#include "packet.h"
#include "worker.h"

/* One packet on its way through the flow table.  Classify fills the first
 * part (packet, parse, key, hash, bucket), the match pass the second
 * (first_ref, first_flow), and prepare_new_flows the third for the client
 * packets whose flow is missing. */
struct lookup_record {
	struct rte_mbuf *m;
	struct rplb_parsed parsed;
	/* 16-byte aligned: rplb_flow_has_key_in compares it with one load. */
	struct rplb_flow_key key __rte_aligned(16);
	uint32_t hash;              /* of key */
	const struct rplb_flow_bucket *bucket;  /* the key's primary bucket */
	uint32_t first_ref;         /* rplb_flow_match_first's answer */
	/* Its record (see rplb_ref_record); rplb_sentinel() where no
	 * signature matched. */
	struct rplb_flow *first_flow;
	/* Client side, when prepare_new_flows found no flow: the packet's
	 * service, or NULL when it is not for one. */
	const struct rplb_lb_service *service;
	/* The same packets, with a service: the Maglev choice and the hash of
	 * the backend-side key the new flow will have. */
	uint32_t new_backend;
	uint32_t new_backend_hash;
};

/* What the resolve loop of a burst keeps in registers (or its own stack
 * slots), not behind the pointers it was reached through.  Why: every
 * store the loop makes to a packet (16-bit checksums, ports) or to a
 * counter might, as far as C's aliasing rules let the compiler know, write
 * into the tables, the worker or the lb_worker struct, so a value read
 * through one of those pointers would be read again after each such store,
 * per packet.  A value copied into a local struct whose address never
 * escapes cannot be aliased, and the compiler keeps it in a register.
 * For that, its fields must stay scalars (the send array itself lives
 * outside, in resolve_burst's frame) and every function given it must be
 * inlined, or the struct would have to live in memory.
 *   - the arrays it indexes: the tables' backends, this lcore's backend
 *     counters;
 *   - what it sends out the other side: collected in an array, handed to
 *     the worker's tx buffer once a burst (rplb_worker_send_bulk), so the
 *     tx buffer's count, memory a 16-bit packet store might alias, is not
 *     reloaded and stored per packet. */
struct resolve_context {
	/* Constants in each copy of the loop (engine_lb.c: resolve_burst and
	 * its copies): no per-packet test of the ports' checksum offloads.
	 * tx_offload: the out port computes checksums; rx_checked: the in
	 * port flags bad ones. */
	int tx_offload;
	int rx_checked;
	uint32_t now;               /* rplb_flow_clock() */
	const struct rplb_lb_backend *backends;
	struct rplb_backend_counters *backend_counters;
	struct rte_mbuf **next_out; /* the next free entry of an array of RPLB_BURST */
	uint64_t bytes;
};

static __rte_always_inline void
send_after_burst(struct resolve_context *context, struct rte_mbuf *m, uint32_t bytes)
{
	*context->next_out++ = m;
	context->bytes += bytes;
}

/* Add to a counter only this lcore writes (the control plane reads it).
 * On x86 one read-modify-write add to memory.  Why asm: left to itself,
 * GCC's SLP vectorizer pairs the adjacent packet and byte counters into
 * one 16-byte vector load, add and store, which takes more instructions
 * than two adds and puts a vector register on the path of every packet.
 * A single writer needs no atomic: the control plane's 64-bit aligned
 * loads see the old or the new value. */
static inline void
counter_add(uint64_t *counter, uint64_t value)
{
#if defined(RTE_ARCH_X86_64)
	asm("addq %1, %0" : "+m" (*counter) : "er" (value));
#else
	*counter += value;
#endif
}

/* A packet of a flow, counted in its backend's slot: its service's totals
 * are summed from its backends' by the control plane (struct
 * rplb_service_counters). */
static __rte_always_inline void
count_packet(struct resolve_context *context, uint32_t slot, uint32_t bytes)
{
	struct rplb_backend_counters *counters = &context->backend_counters[slot];

	counter_add(&counters->packets, 1);
	counter_add(&counters->bytes, bytes);
}

/* A new flow, counted under its backend only (struct
 * rplb_service_counters: the control plane adds a service's up). */
static inline void
count_flow_start(struct resolve_context *context, uint32_t backend_id)
{
	struct rplb_backend_counters *counters =
		&context->backend_counters[rplb_backend_slot(backend_id)];

	counters->new_flows++;
	counters->active_flows++;
}

/* A flow moved or replaced by the resolve loop ends (a rare path), counted
 * by rplb_lb_count_flow_end (lb.h).  Out of line: its test of the slot's
 * owner would otherwise take a register of the resolve loop, which then
 * kept the tables' backends on the stack (one more load per packet).
 * (Unused where lb_burst.h is included for its helpers alone: lb_icmp.c.) */
static __rte_noinline __rte_unused void
count_flow_end(struct rplb_lb_worker *lb_worker, const struct rplb_lb_backend *backends,
	       uint32_t backend_id)
{
	rplb_lb_count_flow_end(lb_worker, backends, backend_id);
}

/* Store 8 bytes as one plain store.  Why asm: GCC's SLP vectorizer pairs
 * two adjacent 8-byte stores of register values (the lookup record's
 * packet and header pointers, the key's two words) into one 16-byte store,
 * which it first has to build with movq and pinsrq: more instructions
 * than the two plain stores.  The asm's memory operand is a store the
 * vectorizer cannot see, so it cannot pair it. */
static __rte_always_inline void
store_word(void *dst, uint64_t value)
{
#if defined(RTE_ARCH_X86_64)
	typedef uint64_t __attribute__((may_alias)) word;

	asm("movq %1, %0" : "=m" (*(word *)dst) : "r" (value));
#else
	memcpy(dst, &value, sizeof(value));
#endif
}

/* Not for the load balancer: out the other side unchanged.  Returns 0
 * (no lookup), for the classify functions. */
static inline int
pass_through(struct rplb_worker *worker, struct rte_mbuf *m, unsigned int out_side)
{
	worker->counters.events[RPLB_EV_PASSED_THROUGH]++;
	rplb_worker_send(worker, out_side, m);
	return 0;
}

/* Drops (and counts) a frame whose checksum the NIC found bad; 1 if so.
 * Only frames that rplb would rewrite or answer are checked: with TX
 * checksum offload the NIC would recompute a bad checksum and hide it. */
static inline int
dropped_bad_checksum(struct rplb_worker *worker, struct rte_mbuf *m)
{
	if (likely(!rplb_rx_cksum_bad(m)))
		return 0;
	rplb_worker_drop(worker, RPLB_DROP_BAD_CHECKSUM, m);
	return 1;
}

/* dropped_bad_checksum in a resolve loop: only where the in port checks
 * checksums (without RX offload the flags are never set, and rx_checked,
 * a constant in that copy of the loop, removes the test). */
static __rte_always_inline int
dropped_bad_checksum_in(struct rplb_worker *worker, const struct resolve_context *context,
			struct rte_mbuf *m)
{
	return context->rx_checked && dropped_bad_checksum(worker, m);
}

/* A frame from the clients for no service (TCP/UDP to no vip:proto:port
 * of one, or not TCP/UDP): another port of a VIP passes; so does anything
 * else, unless strict keeps clients from reaching the backends directly. */
static inline void
pass_not_for_service(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		     struct rte_mbuf *m, uint32_t dst_addr)
{
	if (unlikely(tables->strict) && !rplb_is_vip(tables, dst_addr) &&
	    rplb_is_backend_ip(tables, dst_addr)) {
		rplb_worker_drop(worker, RPLB_DROP_STRICT, m);
		return;
	}
	pass_through(worker, m, RPLB_BACKEND);
}

#endif /* RPLB_LB_BURST_H */
