/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_flow_state.h: the state of a flow, from the TCP flags its packets
 * carry (each state has its own idle timeout: enum rplb_flow_state).
 *
 *            SYN                    no SYN, from the client
 *   (new) --------> TCP_SYN ---------------------------> TCP_ESTABLISHED
 *     |                |                                        |
 *     | FIN/RST        | FIN/RST                                | FIN/RST
 *     v                v                                        v
 *   TCP_CLOSING <------+----------------------------------------+
 *     |
 *     | SYN without ACK from the client: a new connection on the same
 *     v tuple (reopens_tuple), a new flow with a fresh Maglev choice
 *
 * UDP flows stay UDP.  A TCP flow first seen without SYN (picked up after
 * a restart) starts established.
 *
 * The fast path's test is one AND: each record keeps, next to its state,
 * the flags that could move it out of that state (state_change_flags), so
 * a packet with none of them, nearly every packet, takes no other branch.
 * Private to engine_lb.c (static, inlined into the resolve pass).
 */
#ifndef RPLB_LB_FLOW_STATE_H
#define RPLB_LB_FLOW_STATE_H

#include <stdint.h>
#include <netinet/in.h>

#include <rte_common.h>
#include <rte_tcp.h>

#include "flow_table.h"
#include "stats.h"

static inline uint8_t
initial_state(const struct rplb_flow_key *key, uint8_t tcp_flags)
{
	if (key->proto == IPPROTO_UDP)
		return RPLB_FLOW_UDP;
	if (tcp_flags & (RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG))
		return RPLB_FLOW_TCP_CLOSING;
	/* A flow picked up mid-stream (after a restart) is established. */
	return (tcp_flags & RTE_TCP_SYN_FLAG) ? RPLB_FLOW_TCP_SYN : RPLB_FLOW_TCP_ESTABLISHED;
}

/* The TCP flags that may change a flow's state, by state (or reopen its
 * tuple: reopens_tuple): a packet with none of them leaves the flow as it
 * is, and that is nearly every packet.  Each record keeps its state's
 * entry (set_state), so one test settles it.  UDP packets carry no flags.
 * A segment without any flag changes nothing (TCP discards a segment
 * without ACK).  256 entries: indexed by a state byte, no range test. */
static const uint8_t state_change_flags[256] = {
	[RPLB_FLOW_UDP] = 0,
	[RPLB_FLOW_TCP_SYN] = 0xff,
	[RPLB_FLOW_TCP_ESTABLISHED] = RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG,
	[RPLB_FLOW_TCP_CLOSING] = RTE_TCP_SYN_FLAG,
};

static inline void
set_state(struct rplb_flow *flow, uint8_t state)
{
	/* rplb_flow_is_first_match: no state byte equals a key's protocol. */
	RTE_BUILD_BUG_ON((int)RPLB_FLOW_STATES > (int)IPPROTO_TCP);
	flow->state = state;
	flow->state_change_flags = state_change_flags[state];
}

static inline int
state_may_change(const struct rplb_flow *flow, uint8_t tcp_flags)
{
	return tcp_flags & flow->state_change_flags;
}

/* A packet whose flags may change its flow's state (state_may_change).
 * Never inlined: the rare path, kept out of the resolve loop's registers
 * (left to itself, GCC inlines it once the file grows). */
static __rte_noinline void
change_state(struct rplb_flow *flow, uint8_t tcp_flags, int from_client)
{
	if (tcp_flags & (RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG))
		set_state(flow, RPLB_FLOW_TCP_CLOSING);
	else if (flow->state == RPLB_FLOW_TCP_SYN && from_client && !(tcp_flags & RTE_TCP_SYN_FLAG))
		set_state(flow, RPLB_FLOW_TCP_ESTABLISHED);
}

static inline void
track_state(struct rplb_flow *flow, uint8_t tcp_flags, int from_client)
{
	if (unlikely(state_may_change(flow, tcp_flags)))
		change_state(flow, tcp_flags, from_client);
}

/* A client's SYN (without ACK) on the tuple of a closing flow opens a new
 * connection: it becomes a new flow with a fresh Maglev choice, so a
 * drained backend (weight 0) gets no new connection through a reused
 * client port. */
static __rte_always_inline int
reopens_tuple(const struct rplb_flow *flow, uint8_t tcp_flags)
{
	return flow->state == RPLB_FLOW_TCP_CLOSING &&
	       (tcp_flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) == RTE_TCP_SYN_FLAG;
}

#endif /* RPLB_LB_FLOW_STATE_H */
