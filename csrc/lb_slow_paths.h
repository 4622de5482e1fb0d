/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_slow_paths.h: the load-balancing engine's rare frames, handled out of
 * line in translation units of their own (lb_icmp.c: ICMP errors about a
 * flow; lb_fragments.c: IPv4 and IPv6
 * fragments).  Pass 1 (lb_classify.h) calls
 * them from its slow paths, housekeeping and stop from engine_lb.c.
 *
 * Why files of their own, not more static functions of engine_lb.c: GCC
 * decides what to inline by the size of the whole translation unit, and
 * with this code in engine_lb.c it stopped inlining helpers of the hot
 * loops (the bucket match of the bulk lookup among them).  Here they
 * cannot weigh on those decisions; the common path has no test for them.
 *
 * Each takes the frame over: it is sent, held or dropped, and counted.
 */
#ifndef RPLB_LB_SLOW_PATHS_H
#define RPLB_LB_SLOW_PATHS_H

#include <stdint.h>

#include <rte_ip.h>
#include <rte_mbuf.h>

#include "lb.h"
#include "fragment_table.h"
#include "packet.h"
#include "packet6.h"
#include "worker.h"

/* An ICMP error from the clients to a VIP (parsed: its outer headers,
 * RPLB_PARSE_ICMP). */
void rplb_lb_icmp_error_from_client(struct rplb_worker *worker,
				    const struct rplb_lb_tables *tables, struct rte_mbuf *m,
				    struct rplb_parsed *parsed);
/* An ICMP error from the backend side. */
void rplb_lb_icmp_error_from_backend(struct rplb_worker *worker,
				     const struct rplb_lb_tables *tables, struct rte_mbuf *m,
				     struct rplb_parsed *parsed);
/* A fragment of a datagram rplb translates: to a VIP from the clients
 * (TCP, UDP, ICMP), or from a backend address from the backends (TCP,
 * UDP); rplb_parse_ipv4 said RPLB_PARSE_FRAGMENT. */
void rplb_lb_fragment(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		      struct rte_mbuf *m, struct rte_ipv4_hdr *ip, unsigned int in_side);
/* A fragment of an IPv6 datagram rplb translates: to a VIP from the
 * clients, or from a backend address from the backends (any upper layer:
 * the first fragment's decides); rplb_parse_ipv6 said
 * RPLB_PARSE6_FRAGMENT. */
void rplb_lb_fragment6(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		       struct rte_mbuf *m, const struct rplb_parsed6 *parsed, unsigned int in_side);
/* The first fragment of an IPv6 datagram (lb_ipv6.c): through the path of
 * a whole packet, which writes the datagram's verdict. */
void rplb_lb_first_fragment6(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
			     struct rte_mbuf *m, const struct rplb_parsed6 *parsed,
			     unsigned int in_side, struct rplb_fragment_datagram *datagram);
/* Housekeeping: incomplete datagrams older than their timeout forgotten
 * (a few per call; many when idle), their held fragments freed. */
void rplb_lb_expire_fragments(struct rplb_worker *worker, uint32_t now, int idle);
/* The worker stops: every datagram forgotten, every held fragment freed. */
void rplb_lb_flush_fragments(struct rplb_worker *worker);
/* An IPv6 frame (EtherType 0x86DD) from in_side: lb_ipv6.c. */
void rplb_lb_ipv6(struct rplb_worker *worker, struct rte_mbuf *m, unsigned int in_side);
/* A frame from the clients that is not IPv4: IPv6 (its fast path first),
 * or passed through. */
void rplb_lb_client_not_ipv4(struct rplb_worker *worker, struct rte_mbuf *m);
/* An IPv6 frame from the backends (its fast path first). */
void rplb_lb_backend_ipv6(struct rplb_worker *worker, struct rte_mbuf *m);
/* Housekeeping: up to budget IPv6 flow records aged. */
void rplb_lb_age_flows6(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
			uint32_t now, unsigned int budget);

#endif /* RPLB_LB_SLOW_PATHS_H */
