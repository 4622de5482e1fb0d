/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_classify.h: pass 1 of the load-balancing engine.  Each packet of a
 * burst gets its verdict, or goes on to the flow table:
 *
 *   from the clients (frontend port)
 *     Ethernet + IPv4 + TCP/UDP, well formed  -> look up (lookup record)
 *     ICMP echo request to a VIP              -> answered (echo reply)
 *     ICMP error to a VIP                     -> translated by its quote
 *                                                (lb_icmp.c)
 *     TCP/UDP/ICMP fragment to a VIP          -> translated fragment by
 *                                                fragment (lb_fragments.c)
 *     broken IPv4 / L4 header to a VIP        -> dropped (malformed)
 *     to a backend address, strict mode       -> dropped (strict)
 *     anything else                           -> passed through
 *   from the backends (backend port)
 *     ARP about, ICMP/TCP/UDP to the appliance's own address
 *                                             -> its kernel interface
 *     Ethernet + IPv4 + TCP/UDP, well formed  -> look up
 *     ICMP error                              -> translated by its quote
 *     TCP/UDP fragment from a backend address -> translated fragment by
 *                                                fragment
 *     anything else                           -> passed through
 *
 * The common frame takes one straight run of tests (rplb_parse_common);
 * everything else leaves that path at its first failed test and is sorted
 * out by the full parser, off the hot path: classify_vip_other for the
 * clients' side, classify_backend_other for the backends'.  ICMP errors
 * and fragments go on from there to files of their own
 * (lb_slow_paths.h): the common path has no test for them.
 *
 * Private to engine_lb.c (static, inlined into the classify loop).
 */
#ifndef RPLB_LB_CLASSIFY_H
#define RPLB_LB_CLASSIFY_H

#include <stdint.h>
#include <string.h>

#include "icmp_error.h"
#include "lb_burst.h"
#include "lb_slow_paths.h"

/* A TCP/UDP frame (either direction) goes on to the flow lookup.  Returns
 * 1, with *lookup (its key's hash included) filled in.  The classify
 * functions work on locals and write the lookup record only here, once:
 * each store through the record (or to a byte of the packet) might, for
 * all the compiler knows, change what the other pointers point to, and it
 * would reload them after every one. */
static __rte_always_inline int
admit_for_lookup(struct rte_mbuf *m, struct lookup_record *lookup,
		 const struct rplb_parsed *parsed, uint8_t direction)
{
	const struct rte_ipv4_hdr *ip = parsed->ip;

	store_word(&lookup->m, (uintptr_t)m);
	store_word(&lookup->parsed.ip, (uintptr_t)parsed->ip);
	lookup->parsed.l4 = parsed->l4;
	lookup->parsed.tcp_flags = parsed->tcp_flags;
#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
	{
		/* The key in two registers, hashed from them: addresses and ports
		 * are adjacent on the wire in the key's order, and proto,
		 * direction, zero fill its last 4 bytes.  (Built in memory, its
		 * narrow stores followed by the hash's 8-byte loads would miss
		 * store forwarding.) */
		uint64_t words[2];
		uint32_t ports;

		memcpy(&words[0], &ip->src_addr, sizeof(words[0]));
		memcpy(&ports, parsed->l4, sizeof(ports));
		words[1] = rplb_flow_key_word1(ports, parsed->proto, direction);
		store_word(&lookup->key, words[0]);
		store_word((uint8_t *)&lookup->key + sizeof(words[0]), words[1]);
		lookup->hash = rplb_flow_words_hash(words[0], words[1]);
	}
#else
	memcpy(&lookup->key.src_ip, &ip->src_addr, 2 * sizeof(uint32_t));
	memcpy(&lookup->key.src_port, parsed->l4, 2 * sizeof(uint16_t));
	lookup->key.proto = parsed->proto;
	lookup->key.direction = direction;
	lookup->key.zero = 0;
	lookup->hash = rplb_flow_key_hash(&lookup->key);
#endif
	return 1;
}

/* The tables for a slow path of pass 1, read again rather than passed
 * down from the burst: passed, they took a register of the classify loop
 * (two more instructions per packet, a spill and its reload).  This is the
 * burst's generation or one published during the burst; either stays
 * allocated until this worker's next quiescent state, after the burst
 * (lb_housekeeping). */
static inline const struct rplb_lb_tables *
slow_path_tables(const struct rplb_worker *worker)
{
	const struct rplb_lb *lb = worker->engine_state;

	return __atomic_load_n(&lb->tables, __ATOMIC_ACQUIRE);
}

/* An IPv6 frame from the backends goes to its own path (lb_ipv6.c); 1,
 * or 0 for another frame.  Called only where a frame was found not to be
 * IPv4, so the IPv4 frames pay no test for it. */
static inline int
diverted_ipv6(struct rplb_worker *worker, struct rte_mbuf *m)
{
	const struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);

	if (m->data_len < sizeof(*eth) || eth->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV6))
		return 0;
	rplb_lb_backend_ipv6(worker, m);
	return 1;
}

/* A frame from the clients to a VIP that is not well-formed TCP/UDP: the
 * slow path of the clients' side.  Not inlined: it keeps the classify
 * loop small, and no common frame comes here. */
static __rte_noinline int
classify_vip_other(struct rplb_worker *worker, struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
		   struct rplb_parsed parsed, enum rplb_parse verdict)
{
	const struct rplb_lb_tables *tables = slow_path_tables(worker);

	switch (verdict) {
	case RPLB_PARSE_IPV4_BAD:
	case RPLB_PARSE_L4_BAD:
		rplb_worker_drop(worker, RPLB_DROP_MALFORMED, m);
		return 0;
	case RPLB_PARSE_FRAGMENT:
		if (ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP ||
		    ip->next_proto_id == IPPROTO_ICMP) {
			rplb_lb_fragment(worker, tables, m, ip, RPLB_FRONTEND);
			return 0;
		}
		break;
	case RPLB_PARSE_ICMP: {
		struct rte_icmp_hdr *icmp = parsed.l4;

		if (rplb_is_icmp_error(icmp->icmp_type)) {
			rplb_lb_icmp_error_from_client(worker, tables, m, &parsed);
			return 0;
		}
		if (icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0)
			break;
		if (dropped_bad_checksum(worker, m))
			return 0;
		rplb_icmp_echo_to_reply(m, &parsed);
		worker->counters.events[RPLB_EV_ICMP_ECHO_REPLIED]++;
		rplb_worker_send(worker, RPLB_FRONTEND, m);
		return 0;
	}
	default:
		break;
	}
	return pass_through(worker, m, RPLB_BACKEND);
}

/* Pass 1 for a frame from the clients.  Returns 1 when it needs a lookup
 * (TCP/UDP); only other frames ask whether they are for a VIP.  A TCP/UDP
 * frame for no service is found out in the resolve pass, after its flow
 * lookup missed: asking first would cost every packet a VIP lookup. */
static __rte_always_inline int
classify_from_client(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		     struct rte_mbuf *m, struct lookup_record *lookup)
{
	struct rplb_parsed parsed;
	struct rte_ipv4_hdr *ip;
	enum rplb_parse verdict = RPLB_PARSE_TCP_UDP;

	if (likely(rplb_parse_common(m, &parsed))) {
		ip = parsed.ip;
	} else {
		ip = rplb_ipv4_header(m);
		if (ip == NULL)
			goto pass;
		verdict = rplb_parse_ipv4(m, ip, &parsed);
	}
	if (likely(verdict == RPLB_PARSE_TCP_UDP))
		return admit_for_lookup(m, lookup, &parsed, RPLB_DIR_CLIENT);
	if (rplb_is_vip(tables, ip->dst_addr))
		return classify_vip_other(worker, m, ip, parsed, verdict);
	pass_not_for_service(worker, tables, m, ip->dst_addr);
	return 0;

pass:
	/* Not IPv4: IPv6 takes its own path (lb_ipv6.c), the rest passes. */
	rplb_lb_client_not_ipv4(worker, m);
	return 0;
}

/* A frame from the backend network for the appliance's own address, from
 * src_addr: to its kernel interface, whose rate limit counts the frames
 * of the backends' addresses apart (rplb_kernel_class).  1 if taken (0:
 * the worker has no kernel interface).  It finds the tables itself rather
 * than take them from the classify loop, which would then keep them in a
 * register for this rare call: the worker holds every generation it
 * loads until its next quiescent state, so this one stays valid too. */
static __rte_noinline int
to_kernel(struct rplb_worker *worker, struct rte_mbuf *m, uint32_t src_addr)
{
	return rplb_worker_to_kernel(worker, m,
				     rplb_is_backend_ip(slow_path_tables(worker), src_addr) ?
				     RPLB_KERNEL_FROM_BACKENDS : RPLB_KERNEL_FROM_OTHERS);
}

/* A frame from the backends that is not the common frame: the slow path
 * of the backends' side.  ARP about the appliance's own address, and ICMP,
 * TCP or UDP to it (fragments and ICMP errors too: the kernel reassembles
 * the ones and reads the others itself), go to its kernel interface
 * (rplb_worker_to_kernel).  Then: TCP/UDP the fast parse did not take
 * (e.g. with IPv4 options) is looked up (returns 1); ICMP errors are
 * translated by their quote, fragments from backend addresses fragment by
 * fragment; the rest passes through.  Not inlined, like
 * classify_vip_other: no common frame comes here. */
static __rte_noinline int
classify_backend_other(struct rplb_worker *worker, struct rte_mbuf *m,
		       struct lookup_record *lookup)
{
	const struct rplb_lb_tables *tables;
	struct rplb_parsed parsed;
	struct rte_ipv4_hdr *ip = rplb_ipv4_header(m);
	uint32_t sender = 0;

	if (ip == NULL) {
		if (diverted_ipv6(worker, m))
			return 0;
		if (rplb_arp_target(m, &sender) == worker->local_addr &&
		    to_kernel(worker, m, sender))
			return 0;
		return pass_through(worker, m, RPLB_FRONTEND);
	}
	if (ip->dst_addr == worker->local_addr && (ip->version_ihl >> 4) == 4 &&
	    (ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP ||
	     ip->next_proto_id == IPPROTO_ICMP) && to_kernel(worker, m, ip->src_addr))
		return 0;
	tables = slow_path_tables(worker);
	switch (rplb_parse_ipv4(m, ip, &parsed)) {
	case RPLB_PARSE_TCP_UDP:
		return admit_for_lookup(m, lookup, &parsed, RPLB_DIR_BACKEND);
	case RPLB_PARSE_ICMP:
		if (rplb_is_icmp_error(((struct rte_icmp_hdr *)parsed.l4)->icmp_type)) {
			rplb_lb_icmp_error_from_backend(worker, tables, m, &parsed);
			return 0;
		}
		break;
	case RPLB_PARSE_FRAGMENT:
		/* A backend's reply its kernel fragmented.  Only fragments
		 * from backend addresses are tracked: the backend network's
		 * other traffic passes as it always did, never held. */
		if ((ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP) &&
		    rplb_is_backend_ip(tables, ip->src_addr)) {
			rplb_lb_fragment(worker, tables, m, ip, RPLB_BACKEND);
			return 0;
		}
		break;
	default:
		break;
	}
	return pass_through(worker, m, RPLB_FRONTEND);
}

/* Pass 1 for a frame from the backends.  A TCP/UDP frame to the
 * appliance's own address (its health checks' replies) goes to its kernel
 * interface: the one compare every frame from the backends pays for the
 * exception path.  Before the lookup, not after it: such a frame could
 * otherwise match a flow (a client spoofing that address) or be rewritten
 * statelessly as a backend's reply. */
static __rte_always_inline int
classify_from_backend(struct rplb_worker *worker, struct rte_mbuf *m,
		      struct lookup_record *lookup, uint32_t local_addr)
{
	struct rplb_parsed parsed;

	if (likely(rplb_parse_common(m, &parsed))) {
		if (unlikely(parsed.ip->dst_addr == local_addr) &&
		    to_kernel(worker, m, parsed.ip->src_addr))
			return 0;
		return admit_for_lookup(m, lookup, &parsed, RPLB_DIR_BACKEND);
	}
	return classify_backend_other(worker, m, lookup);
}

/* Pass 1 for one packet from in_side (a constant at each call); returns
 * where the next lookup record goes: past lookup when this packet needs a
 * lookup, with its primary bucket prefetched (read in the match pass, a
 * whole burst later).  local_addr: the worker's, the appliance's own
 * address (classify_from_backend). */
static __rte_always_inline struct lookup_record *
classify(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
	 const struct rplb_flow_table *flow_table, const unsigned int in_side, struct rte_mbuf *m,
	 struct lookup_record *lookup, uint32_t local_addr)
{
	int needs_lookup;

	if (in_side == RPLB_FRONTEND)
		needs_lookup = classify_from_client(worker, tables, m, lookup);
	else
		needs_lookup = classify_from_backend(worker, m, lookup, local_addr);
	if (!needs_lookup)
		return lookup;
	lookup->bucket = rplb_flow_prefetch(flow_table, lookup->hash);
	return lookup + 1;
}

#endif /* RPLB_LB_CLASSIFY_H */
