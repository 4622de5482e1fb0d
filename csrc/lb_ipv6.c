/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_ipv6.c: IPv6 services.  Pass 1 (lb_classify.h) hands every IPv6
 * frame here, one at a time, from the branch that already sorted out
 * frames that are not IPv4: the IPv4 burst pays no new test.  Here a frame
 * is parsed (the extension chain walked, packet6.h), looked up in the
 * worker's IPv6 flow table (flow6_table.h), rewritten and sent, with the
 * same rules as an IPv4 packet in lb_resolve.h:
 *
 *   from the clients
 *     TCP/UDP of a flow whose backend is configured -> to that backend
 *     a flow whose backend is gone      -> moves to the Maglev choice
 *     a flow of a replaced service, or a SYN reopening a closed tuple
 *                                       -> starts over
 *     no flow, for a service            -> a new flow (Maglev)
 *     ICMPv6 echo request to a VIP      -> answered (echo reply)
 *     to a VIP: broken length or L4 header, a bad extension chain, UDP
 *     with checksum 0                   -> dropped, counted by reason
 *     a fragment to a VIP               -> translated fragment by fragment
 *                                          (lb_fragments.c), the first
 *                                          one by the rules here
 *     anything else (ND, RA, MLD, ...)  -> passed through unchanged
 *     ICMPv6 error (1-4) to a VIP       -> translated by its quote, to the
 *                                          backend (lb_ipv6.c: icmp6 below)
 *   from the backends
 *     ICMPv6 error (1-4)                -> translated by its quote, to the
 *                                          client
 *     a fragment from a backend address -> translated fragment by fragment
 *     TCP/UDP of a flow                 -> to the client, as vip:port
 *     no flow, backend of one service   -> to the client, statelessly
 *     no flow, backend of several       -> unchanged (reply_unmatched)
 *     anything else                     -> passed through unchanged
 *
 * IPv6 has no header checksum; the L4 checksum is updated incrementally
 * (RFC 1624) for the address and port change, in software whatever the
 * port offers: one precomputed delta per backend towards it, one computed
 * from the flow towards the client.
 *
 * A datagram's first fragment takes the same path as a whole packet, with
 * its datagram (first, NULL for a whole packet): each way out of the path
 * writes there what the later fragments get (note_* below).  Its L4
 * checksum covers the whole datagram, whose pseudo-header changes as a
 * whole packet's does: the same delta is right.
 */
#include <stdint.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "fragment_table.h"
#include "icmp_error.h"
#include "lb_burst.h"
#include "lb_slow_paths.h"
#include "packet6.h"

/* The TCP flags that may change an IPv6 flow's state, by state: the
 * table of lb_flow_state.h (same states, same timeouts). */
static const uint8_t state_change_flags6[256] = {
	[RPLB_FLOW_UDP] = 0,
	[RPLB_FLOW_TCP_SYN] = 0xff,
	[RPLB_FLOW_TCP_ESTABLISHED] = RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG,
	[RPLB_FLOW_TCP_CLOSING] = RTE_TCP_SYN_FLAG,
};

static inline void
set_state6(struct rplb_flow6 *flow, uint8_t state)
{
	flow->state = state;
	flow->state_change_flags = state_change_flags6[state];
}

static inline uint8_t
initial_state6(uint8_t proto, uint8_t tcp_flags)
{
	if (proto == IPPROTO_UDP)
		return RPLB_FLOW_UDP;
	if (tcp_flags & (RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG))
		return RPLB_FLOW_TCP_CLOSING;
	return (tcp_flags & RTE_TCP_SYN_FLAG) ? RPLB_FLOW_TCP_SYN : RPLB_FLOW_TCP_ESTABLISHED;
}

static __rte_noinline void
change_state6(struct rplb_flow6 *flow, uint8_t tcp_flags, int from_client)
{
	if (tcp_flags & (RTE_TCP_FIN_FLAG | RTE_TCP_RST_FLAG))
		set_state6(flow, RPLB_FLOW_TCP_CLOSING);
	else if (flow->state == RPLB_FLOW_TCP_SYN && from_client && !(tcp_flags & RTE_TCP_SYN_FLAG))
		set_state6(flow, RPLB_FLOW_TCP_ESTABLISHED);
}

static inline void
track_state6(struct rplb_flow6 *flow, uint8_t tcp_flags, int from_client)
{
	if (unlikely(tcp_flags & flow->state_change_flags))
		change_state6(flow, tcp_flags, from_client);
}

static inline int
reopens_tuple6(const struct rplb_flow6 *flow, uint8_t tcp_flags)
{
	return flow->state == RPLB_FLOW_TCP_CLOSING &&
	       (tcp_flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) == RTE_TCP_SYN_FLAG;
}

/* The flow's backend if it is still configured under the flow's service,
 * else NULL (lb_resolve.h: configured_backend, the same 8-byte compare). */
static inline const struct rplb_lb_backend *
configured_backend6(const struct rplb_lb_backend *backends, const struct rplb_flow6 *flow)
{
	const struct rplb_lb_backend *backend = &backends[rplb_backend_slot(flow->backend_id)];
	uint64_t flow_word, backend_word;

	RTE_BUILD_BUG_ON(offsetof(struct rplb_flow6, service_id) -
			 offsetof(struct rplb_flow6, backend_port) != 2 ||
			 offsetof(struct rplb_flow6, backend_id) -
			 offsetof(struct rplb_flow6, backend_port) != 4);
	memcpy(&flow_word, &flow->backend_port, sizeof(flow_word));
	memcpy(&backend_word, &backend->port, sizeof(backend_word));
	return likely(flow_word == backend_word) ? backend : NULL;
}

static inline uint16_t *
l4_checksum(const struct rplb_parsed6 *parsed)
{
	return parsed->proto == IPPROTO_UDP ? &((struct rte_udp_hdr *)parsed->l4)->dgram_cksum :
					      &((struct rte_tcp_hdr *)parsed->l4)->cksum;
}

/* Replace an address and a port of a TCP/UDP packet and update its
 * checksum by delta (never leaving a UDP checksum of 0: UDP over IPv6
 * must carry one, and 0 came in only for packets dropped before this). */
static inline void
rewrite6(const struct rplb_parsed6 *parsed, uint8_t *addr_field, const uint8_t new_addr[16],
	 uint16_t *port_field, uint16_t new_port, uint16_t delta)
{
	uint16_t *cksum = l4_checksum(parsed);

	memcpy(addr_field, new_addr, 16);
	*port_field = new_port;
	*cksum = rplb_cksum_update(*cksum, delta);
	if (parsed->proto == IPPROTO_UDP && *cksum == 0)
		*cksum = 0xffff;
}

/* What the later fragments of a first fragment's datagram get (first:
 * NULL for a whole packet, nothing to note). */
static inline void
note_pass(struct rplb_fragment_datagram *first, enum rplb_event event)
{
	if (unlikely(first != NULL))
		rplb_fragment_set_verdict(first, RPLB_FRAGMENT_PASS, (uint8_t)event);
}

static inline void
note_translation(struct rplb_fragment_datagram *first, enum rplb_event event,
		 const uint8_t new_addr[16], uint32_t count)
{
	if (likely(first == NULL))
		return;
	rplb_fragment_set_verdict(first, RPLB_FRAGMENT_TRANSLATE, (uint8_t)event);
	memcpy(first->new_addr6, new_addr, 16);
	first->count = count;
}

/* A counted drop, of the whole datagram for a first fragment. */
static inline void
drop6(struct rplb_worker *worker, struct rplb_fragment_datagram *first,
      enum rplb_drop_reason reason, struct rte_mbuf *m)
{
	if (unlikely(first != NULL))
		rplb_fragment_set_verdict(first, RPLB_FRAGMENT_DROP, (uint8_t)reason);
	rplb_worker_drop(worker, reason, m);
}

/* A frame passed unchanged to out_side. */
static inline void
pass6(struct rplb_worker *worker, struct rplb_fragment_datagram *first, struct rte_mbuf *m,
      unsigned int out_side)
{
	note_pass(first, RPLB_EV_PASSED_THROUGH);
	pass_through(worker, m, out_side);
}

static inline void
count_packet6(struct rplb_lb_worker *lb_worker, uint32_t backend_id, uint32_t bytes)
{
	struct rplb_backend_counters *counters =
		&lb_worker->backend_counters[rplb_backend_slot(backend_id)];

	counters->packets++;
	counters->bytes += bytes;
}

static inline void
send_to_backend6(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		 const struct rplb_lb_tables *tables, struct rte_mbuf *m,
		 const struct rplb_parsed6 *parsed, const struct rplb_lb_backend *backend,
		 struct rplb_fragment_datagram *first)
{
	struct rplb_l4_ports *ports = parsed->l4;
	uint32_t slot = rplb_backend_slot(backend->backend_id);

	note_translation(first, RPLB_EV_TO_BACKEND, tables->backend_ip6[slot].addr, slot);
	rewrite6(parsed, parsed->ip->dst_addr, tables->backend_ip6[slot].addr, &ports->dst_port,
		 backend->port, backend->to_backend.l4);
	count_packet6(lb_worker, backend->backend_id, m->pkt_len);
	worker->counters.events[RPLB_EV_TO_BACKEND]++;
	rplb_worker_send(worker, RPLB_BACKEND, m);
}

/* Source (old_addr, old_port), a backend's, becomes (vip, vport). */
static inline void
send_to_client6(struct rplb_worker *worker, struct rte_mbuf *m, const struct rplb_parsed6 *parsed,
		const uint8_t vip[16], uint16_t vport)
{
	struct rplb_l4_ports *ports = parsed->l4;
	struct rplb_cksum_deltas deltas = rplb_cksum_deltas6(parsed->ip->src_addr, ports->src_port,
							     vip, vport);

	rewrite6(parsed, parsed->ip->src_addr, vip, &ports->src_port, vport, deltas.l4);
	rplb_worker_send(worker, RPLB_FRONTEND, m);
}

/* Counted drops of a TCP/UDP packet about to be rewritten: UDP without a
 * checksum (invalid over IPv6: RFC 8200 8.1), or a checksum the NIC found
 * bad.  1 if dropped. */
static inline int
dropped_before_rewrite(struct rplb_worker *worker, struct rte_mbuf *m,
		       const struct rplb_parsed6 *parsed, struct rplb_fragment_datagram *first)
{
	if (unlikely(parsed->proto == IPPROTO_UDP && *l4_checksum(parsed) == 0)) {
		drop6(worker, first, RPLB_DROP_IPV6_UDP_ZERO_CHECKSUM, m);
		return 1;
	}
	if (likely(!rplb_rx_cksum_bad(m)))
		return 0;
	drop6(worker, first, RPLB_DROP_BAD_CHECKSUM, m);
	return 1;
}

/* The checksum change of rewriting a reply of the flow from its backend
 * to its VIP: kept in the record, so a reply adds it as a request adds its
 * backend's. */
static uint16_t
to_client_delta(const struct rplb_flow6 *flow)
{
	return rplb_cksum_deltas6(flow->backend_ip, flow->backend_port, flow->vip,
				  flow->vport).l4;
}

/* End the flow that holds this backend-side key, if one does and it is
 * not mover (the "new flow takes over the backend-side key" rule of
 * lb_resolve.h: supersede_backend_key). */
static void
supersede_backend_key6(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		       const struct rplb_lb_tables *tables, const uint8_t backend_ip[16],
		       uint16_t backend_port, const uint8_t client_ip[16], uint16_t client_port,
		       uint8_t proto, uint32_t mover)
{
	struct rplb_flow6_table *table = lb_worker->flows6;
	struct rplb_flow6_key key;
	uint32_t index;

	rplb_flow6_backend_key(backend_ip, backend_port, client_ip, client_port, proto, &key);
	index = rplb_flow6_lookup(table, &key, rplb_flow6_key_hash(&key));
	if (index == RPLB_NO_FLOW6 || index == mover)
		return;
	rplb_lb_count_flow_end(lb_worker, tables->backends, table->flows[index].backend_id);
	rplb_flow6_remove(table, index);
	worker->counters.events[RPLB_EV_FLOWS_SUPERSEDED]++;
}

/* A new flow of service for the client key (hash), to its Maglev choice;
 * the packet is sent (or dropped: no backend). */
static void
new_flow6(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	  const struct rplb_lb_tables *tables, struct rte_mbuf *m,
	  const struct rplb_parsed6 *parsed, const struct rplb_lb_service *service,
	  const struct rplb_flow6_key *key, uint32_t hash, uint32_t now,
	  struct rplb_fragment_datagram *first)
{
	struct rplb_flow6_table *table = lb_worker->flows6;
	const struct rplb_lb_backend *backend;
	const uint8_t *backend_ip;
	uint32_t pick = rplb_maglev_pick(service, hash), index;

	if (unlikely(pick == RPLB_NO_BACKEND)) {
		drop6(worker, first, RPLB_DROP_NO_BACKEND, m);
		return;
	}
	backend = &tables->backends[pick];
	backend_ip = tables->backend_ip6[pick].addr;
	supersede_backend_key6(worker, lb_worker, tables, backend_ip, backend->port, key->src,
			       key->src_port, key->proto, RPLB_NO_FLOW6);
	index = rplb_flow6_insert(table, key, hash, backend_ip, backend->port);
	if (unlikely(index == RPLB_NO_FLOW6)) {
		/* Served without state, as an IPv4 flow would be: its replies
		 * take the stateless path. */
		worker->counters.events[RPLB_EV_IPV6_FLOW_TABLE_FULL]++;
	} else {
		struct rplb_flow6 *flow = &table->flows[index];

		flow->service_id = service->service_id;
		flow->backend_id = backend->backend_id;
		flow->to_client_l4 = to_client_delta(flow);
		set_state6(flow, initial_state6(key->proto, parsed->tcp_flags));
		flow->last_seen = now;
		lb_worker->backend_counters[pick].new_flows++;
		lb_worker->backend_counters[pick].active_flows++;
		worker->counters.events[RPLB_EV_FLOWS_CREATED]++;
	}
	send_to_backend6(worker, lb_worker, tables, m, parsed, backend, first);
}

/* A flow whose backend is no longer configured moves to the service's
 * current Maglev choice (lb_resolve.h: ensure_backend); NULL: no backend
 * left. */
static const struct rplb_lb_backend *
move_flow6(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	   const struct rplb_lb_tables *tables, const struct rplb_lb_service *service,
	   uint32_t index, uint32_t hash)
{
	struct rplb_flow6 *flow = &lb_worker->flows6->flows[index];
	const struct rplb_lb_backend *backend;
	uint32_t pick = rplb_maglev_pick(service, hash);

	if (pick == RPLB_NO_BACKEND)
		return NULL;
	backend = &tables->backends[pick];
	rplb_lb_count_flow_end(lb_worker, tables->backends, flow->backend_id);
	supersede_backend_key6(worker, lb_worker, tables, tables->backend_ip6[pick].addr,
			       backend->port, flow->client_ip, flow->client_port, flow->proto, index);
	rplb_flow6_move(lb_worker->flows6, index, tables->backend_ip6[pick].addr, backend->port);
	flow->backend_id = backend->backend_id;
	flow->to_client_l4 = to_client_delta(flow);
	lb_worker->backend_counters[pick].active_flows++;
	worker->counters.events[RPLB_EV_FLOWS_MOVED]++;
	return backend;
}

/* From the clients, not for a service (or not TCP/UDP): passes, unless
 * strict keeps clients from the backends' addresses. */
static void
pass_not_for_service6(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		      struct rte_mbuf *m, const uint8_t dst[16], struct rplb_fragment_datagram *first)
{
	if (unlikely(tables->strict) && tables->n_services6 != 0 && !rplb_is_vip6(tables, dst) &&
	    rplb_is_backend_ip6(tables, dst)) {
		drop6(worker, first, RPLB_DROP_STRICT, m);
		return;
	}
	pass6(worker, first, m, RPLB_BACKEND);
}

static inline void
client_key6(const struct rplb_parsed6 *parsed, uint8_t direction, struct rplb_flow6_key *key)
{
	const struct rplb_l4_ports *ports = parsed->l4;

	memcpy(key->src, parsed->ip->src_addr, 16);
	memcpy(key->dst, parsed->ip->dst_addr, 16);
	key->src_port = ports->src_port;
	key->dst_port = ports->dst_port;
	key->proto = parsed->proto;
	key->direction = direction;
	key->zero = 0;
}

static void
tcp_udp_from_client(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		    const struct rplb_lb_tables *tables, struct rte_mbuf *m,
		    const struct rplb_parsed6 *parsed, struct rplb_fragment_datagram *first)
{
	struct rplb_flow6_table *table = lb_worker->flows6;
	const struct rplb_lb_service *service;
	const struct rplb_lb_backend *backend;
	struct rplb_flow6_key key;
	struct rplb_flow6 *flow = NULL;
	uint32_t hash, index, now;

	client_key6(parsed, RPLB_DIR_CLIENT, &key);
	hash = rplb_flow6_key_hash(&key);
	index = rplb_flow6_lookup(table, &key, hash);
	now = lb_worker->clock_now;
	if (likely(index != RPLB_NO_FLOW6)) {
		flow = &table->flows[index];
		backend = configured_backend6(tables->backends, flow);
		if (likely(backend != NULL && !reopens_tuple6(flow, parsed->tcp_flags))) {
			if (dropped_before_rewrite(worker, m, parsed, first))
				return;
			flow->last_seen = now;
			track_state6(flow, parsed->tcp_flags, 1);
			send_to_backend6(worker, lb_worker, tables, m, parsed, backend, first);
			return;
		}
	}
	service = rplb_find_service6(tables, parsed->ip->dst_addr, key.dst_port, key.proto);
	if (service == NULL) {
		pass_not_for_service6(worker, tables, m, parsed->ip->dst_addr, first);
		return;
	}
	if (dropped_before_rewrite(worker, m, parsed, first))
		return;
	if (flow != NULL) {
		if (flow->service_id == service->service_id &&
		    !reopens_tuple6(flow, parsed->tcp_flags)) {
			backend = move_flow6(worker, lb_worker, tables, service, index, hash);
			if (backend == NULL) {
				drop6(worker, first, RPLB_DROP_NO_BACKEND, m);
				return;
			}
			flow->last_seen = now;
			track_state6(flow, parsed->tcp_flags, 1);
			send_to_backend6(worker, lb_worker, tables, m, parsed, backend, first);
			return;
		}
		/* The service was replaced under the same vip:proto:port, or
		 * the client reopens the tuple: start over. */
		rplb_lb_count_flow_end(lb_worker, tables->backends, flow->backend_id);
		rplb_flow6_remove(table, index);
	}
	new_flow6(worker, lb_worker, tables, m, parsed, service, &key, hash, now, first);
}

/* An ICMPv6 echo request to a VIP becomes its reply, in place:
 * reflected (rplb_reflect_ipv6), type 129 (the checksum's only change). */
static void
echo_reply6(struct rplb_worker *worker, struct rte_mbuf *m, const struct rplb_parsed6 *parsed,
	    struct rplb_fragment_datagram *first)
{
	uint8_t *icmp = parsed->l4;
	uint16_t old_word, new_word, cksum;

	rplb_reflect_ipv6(m, parsed->ip);
	memcpy(&old_word, icmp, sizeof(old_word));
	icmp[0] = RPLB_ICMP6_ECHO_REPLY;
	memcpy(&new_word, icmp, sizeof(new_word));
	memcpy(&cksum, icmp + 2, sizeof(cksum));
	cksum = rplb_cksum_apply(cksum, rplb_cksum_delta16(old_word, new_word));
	memcpy(icmp + 2, &cksum, sizeof(cksum));
	/* The later fragments of a ping in fragments: reflected alike. */
	if (unlikely(first != NULL))
		rplb_fragment_set_verdict(first, RPLB_FRAGMENT_ECHO, RPLB_EV_ICMP_ECHO_REPLIED);
	worker->counters.events[RPLB_EV_ICMP_ECHO_REPLIED]++;
	rplb_worker_send(worker, RPLB_FRONTEND, m);
}

/* ---- ICMPv6 errors (destination unreachable, packet too big, time
 * exceeded, parameter problem), translated both ways as ICMPv4's are
 * (lb_icmp.c): the same cases, the same counters.  The differences: the
 * quote is an IPv6 header (no header checksum) and the TCP/UDP header
 * right after it (a quote with extension headers is another protocol's:
 * passed unchanged); the ICMPv6 checksum covers a pseudo-header, so a
 * change of the outer address changes it too.  Every changed field lies
 * at an even offset of the message: each 16-bit word's change adds to
 * the ICMPv6 checksum (RFC 1624). */

#define RPLB_ICMP6_ERROR_HEADER 8

static inline int
is_icmp6_error(uint8_t type)
{
	return type >= 1 && type <= 4;
}

struct icmp6_quote {
	uint8_t *icmp;
	struct rte_ipv6_hdr *ip;        /* the quoted header */
	struct rplb_l4_ports *ports;
	uint32_t l4_bytes;              /* quoted bytes of the L4 header and on */
	uint8_t proto;
};

/* RPLB_QUOTE_TCP_UDP, _OTHER or _BAD (icmp_error.h's verdicts).  The whole
 * message must lie in the first segment; BAD: less than an IPv6 header
 * and 8 bytes quoted, or a quoted header that is not IPv6. */
static enum rplb_quote
parse_icmp6_quote(const struct rte_mbuf *m, const struct rplb_parsed6 *parsed,
		  struct icmp6_quote *quote)
{
	uint32_t offset = (uint32_t)((uint8_t *)parsed->l4 - rte_pktmbuf_mtod(m, uint8_t *));
	uint32_t message = parsed->l4_length;
	struct rte_ipv6_hdr *inner;

	if (offset + message > m->data_len ||
	    message < RPLB_ICMP6_ERROR_HEADER + sizeof(*inner) + 8)
		return RPLB_QUOTE_BAD;
	inner = (struct rte_ipv6_hdr *)((uint8_t *)parsed->l4 + RPLB_ICMP6_ERROR_HEADER);
	if ((inner->vtc_flow & RTE_BE32(0xf0000000)) != RTE_BE32(0x60000000))
		return RPLB_QUOTE_BAD;
	if (inner->proto != IPPROTO_TCP && inner->proto != IPPROTO_UDP)
		return RPLB_QUOTE_OTHER;
	quote->icmp = parsed->l4;
	quote->ip = inner;
	quote->ports = (struct rplb_l4_ports *)(inner + 1);
	quote->l4_bytes = message - RPLB_ICMP6_ERROR_HEADER - sizeof(*inner);
	quote->proto = inner->proto;
	return RPLB_QUOTE_TCP_UDP;
}

/* A 16-byte address of the message replaced; the change to the sum. */
static uint32_t
store_address6(uint8_t *field, const uint8_t new_addr[16])
{
	uint32_t delta = rplb_cksum_delta128(field, new_addr);

	memcpy(field, new_addr, 16);
	return delta;
}

/* Rewrite one endpoint of the quote (its source or destination address and
 * port) to (new_addr, new_port), with the quoted L4 checksum when quoted;
 * returns the change to the ICMPv6 checksum's sum. */
static uint32_t
rewrite_icmp6_quote(struct icmp6_quote *quote, uint8_t *addr_field, uint16_t *port_field,
		    const uint8_t new_addr[16], uint16_t new_port)
{
	struct rplb_cksum_deltas deltas = rplb_cksum_deltas6(addr_field, *port_field, new_addr,
							     new_port);
	uint32_t sum = store_address6(addr_field, new_addr);
	uint16_t *l4_cksum;

	sum += rplb_quote_store16(port_field, new_port);
	if (quote->proto == IPPROTO_UDP) {
		l4_cksum = &((struct rte_udp_hdr *)quote->ports)->dgram_cksum;
		if (*l4_cksum != 0) {
			uint16_t updated = rplb_cksum_update(*l4_cksum, deltas.l4);

			sum += rplb_quote_store16(l4_cksum, updated == 0 ? 0xffff : updated);
		}
	} else if (quote->l4_bytes >= RPLB_QUOTED_TCP_CKSUM_END) {
		l4_cksum = &((struct rte_tcp_hdr *)quote->ports)->cksum;
		sum += rplb_quote_store16(l4_cksum, rplb_cksum_update(*l4_cksum, deltas.l4));
	}
	return sum;
}

static inline void
icmp6_apply(struct icmp6_quote *quote, uint32_t sum)
{
	uint16_t cksum;

	memcpy(&cksum, quote->icmp + 2, sizeof(cksum));
	cksum = rplb_cksum_apply(cksum, sum);
	memcpy(quote->icmp + 2, &cksum, sizeof(cksum));
}

static inline void
icmp6_error_unmatched(struct rplb_worker *worker, struct rte_mbuf *m, unsigned int out_side)
{
	worker->counters.events[RPLB_EV_ICMP_ERRORS_UNMATCHED]++;
	rplb_worker_send(worker, out_side, m);
}

/* An ICMPv6 error to a VIP: its quote is vip:port -> client:port. */
static void
icmp6_error_from_client(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
			const struct rplb_lb_tables *tables, struct rte_mbuf *m,
			const struct rplb_parsed6 *parsed)
{
	struct rte_ipv6_hdr *ip = parsed->ip;
	struct icmp6_quote quote;
	struct rplb_flow6_key key;
	const uint8_t *backend_ip;
	uint16_t backend_port;
	enum rplb_event event;
	uint32_t hash, index, sum;

	switch (parse_icmp6_quote(m, parsed, &quote)) {
	case RPLB_QUOTE_BAD:
		rplb_worker_drop(worker, RPLB_DROP_ICMP_ERROR_MALFORMED, m);
		return;
	case RPLB_QUOTE_OTHER:
		icmp6_error_unmatched(worker, m, RPLB_BACKEND);
		return;
	default:
		break;
	}
	/* A router sends an error to its quote's source. */
	if (!rplb_addr6_equal(quote.ip->src_addr, ip->dst_addr)) {
		rplb_worker_drop(worker, RPLB_DROP_ICMP_ERROR_MALFORMED, m);
		return;
	}
	memset(&key, 0, sizeof(key));
	memcpy(key.src, quote.ip->dst_addr, 16);
	memcpy(key.dst, quote.ip->src_addr, 16);
	key.src_port = quote.ports->dst_port;
	key.dst_port = quote.ports->src_port;
	key.proto = quote.proto;
	hash = rplb_flow6_key_hash(&key);
	index = rplb_flow6_lookup(lb_worker->flows6, &key, hash);
	if (index != RPLB_NO_FLOW6) {
		const struct rplb_flow6 *flow = &lb_worker->flows6->flows[index];

		backend_ip = flow->backend_ip;
		backend_port = flow->backend_port;
		event = RPLB_EV_ICMP_ERRORS_TO_BACKEND;
	} else {
		const struct rplb_lb_service *service =
			rplb_find_service6(tables, key.dst, key.dst_port, key.proto);
		uint32_t pick;

		if (service == NULL) {
			icmp6_error_unmatched(worker, m, RPLB_BACKEND);
			return;
		}
		pick = rplb_maglev_pick(service, hash);
		if (pick == RPLB_NO_BACKEND) {
			rplb_worker_drop(worker, RPLB_DROP_ICMP_ERROR_NO_BACKEND, m);
			return;
		}
		backend_ip = tables->backend_ip6[pick].addr;
		backend_port = tables->backends[pick].port;
		event = RPLB_EV_ICMP_ERRORS_TO_BACKEND_STATELESS;
	}
	if (dropped_bad_checksum(worker, m))
		return;
	sum = rewrite_icmp6_quote(&quote, quote.ip->src_addr, &quote.ports->src_port, backend_ip,
				  backend_port);
	/* The pseudo-header's destination. */
	sum += store_address6(ip->dst_addr, backend_ip);
	icmp6_apply(&quote, sum);
	worker->counters.events[event]++;
	rplb_worker_send(worker, RPLB_BACKEND, m);
}

/* An ICMPv6 error from the backend side: its quote is client:port ->
 * backend ip:port. */
static void
icmp6_error_from_backend(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
			 const struct rplb_lb_tables *tables, struct rte_mbuf *m,
			 const struct rplb_parsed6 *parsed)
{
	struct rte_ipv6_hdr *ip = parsed->ip;
	struct icmp6_quote quote;
	struct rplb_flow6_key key;
	uint8_t backend_ip[16];
	const uint8_t *vip;
	uint16_t vport;
	enum rplb_event event;
	uint32_t index, sum;

	if (parse_icmp6_quote(m, parsed, &quote) != RPLB_QUOTE_TCP_UDP) {
		icmp6_error_unmatched(worker, m, RPLB_FRONTEND);
		return;
	}
	rplb_flow6_backend_key(quote.ip->dst_addr, quote.ports->dst_port, quote.ip->src_addr,
			       quote.ports->src_port, quote.proto, &key);
	index = rplb_flow6_lookup(lb_worker->flows6, &key, rplb_flow6_key_hash(&key));
	if (index != RPLB_NO_FLOW6) {
		const struct rplb_flow6 *flow = &lb_worker->flows6->flows[index];

		vip = flow->vip;
		vport = flow->vport;
		event = RPLB_EV_ICMP_ERRORS_TO_CLIENT;
	} else {
		const struct rplb_owner6_slot *owner =
			rplb_find_owner6(tables, key.src, key.src_port, key.proto);

		if (owner == NULL || owner->service_index == RPLB_SERVICE_SHARED) {
			icmp6_error_unmatched(worker, m, RPLB_FRONTEND);
			return;
		}
		vip = tables->service_vip6[owner->service_index].addr;
		vport = tables->services[owner->service_index].port;
		event = RPLB_EV_ICMP_ERRORS_TO_CLIENT_STATELESS;
	}
	if (dropped_bad_checksum(worker, m))
		return;
	memcpy(backend_ip, quote.ip->dst_addr, 16);
	sum = rewrite_icmp6_quote(&quote, quote.ip->dst_addr, &quote.ports->dst_port, vip, vport);
	/* The backend's own error (its kernel's "port unreachable") leaves
	 * from the VIP, the address the client knows. */
	if (rplb_addr6_equal(ip->src_addr, backend_ip))
		sum += store_address6(ip->src_addr, vip);
	icmp6_apply(&quote, sum);
	worker->counters.events[event]++;
	rplb_worker_send(worker, RPLB_FRONTEND, m);
}

/* A frame from the clients (or a datagram's first fragment: first). */
static void
from_client6(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	     const struct rplb_lb_tables *tables, struct rte_mbuf *m, struct rte_ipv6_hdr *ip,
	     const struct rplb_parsed6 *parsed, enum rplb_parse6 verdict,
	     struct rplb_fragment_datagram *first)
{
	if (likely(verdict == RPLB_PARSE6_TCP_UDP)) {
		tcp_udp_from_client(worker, lb_worker, tables, m, parsed, first);
		return;
	}
	if (tables->n_services6 == 0 || !rplb_is_vip6(tables, ip->dst_addr)) {
		pass_not_for_service6(worker, tables, m, ip->dst_addr, first);
		return;
	}
	switch (verdict) {
	case RPLB_PARSE6_BAD_LENGTH:
	case RPLB_PARSE6_L4_BAD:
		drop6(worker, first, RPLB_DROP_MALFORMED, m);
		return;
	case RPLB_PARSE6_BAD_CHAIN:
		drop6(worker, first, RPLB_DROP_IPV6_EXTENSION_CHAIN, m);
		return;
	case RPLB_PARSE6_FRAGMENT:
		rplb_lb_fragment6(worker, tables, m, parsed, RPLB_FRONTEND);
		return;
	case RPLB_PARSE6_ICMP: {
		const uint8_t *icmp = parsed->l4;

		/* An error in fragments is passed, as IPv4's (lb_fragments.c):
		 * its later fragments carry the rest of its quote. */
		if (is_icmp6_error(icmp[0]) && first == NULL) {
			icmp6_error_from_client(worker, lb_worker, tables, m, parsed);
			return;
		}
		if (icmp[0] == RPLB_ICMP6_ECHO_REQUEST && icmp[1] == 0) {
			if (rplb_rx_cksum_bad(m)) {
				drop6(worker, first, RPLB_DROP_BAD_CHECKSUM, m);
				return;
			}
			echo_reply6(worker, m, parsed, first);
			return;
		}
		break;
	}
	default:
		break;
	}
	pass6(worker, first, m, RPLB_BACKEND);
}

/* A frame from the backends (or a datagram's first fragment: first). */
static void
from_backend6(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	      const struct rplb_lb_tables *tables, struct rte_mbuf *m,
	      const struct rplb_parsed6 *parsed, enum rplb_parse6 verdict,
	      struct rplb_fragment_datagram *first)
{
	struct rplb_flow6_table *table = lb_worker->flows6;
	const struct rplb_owner6_slot *owner;
	const struct rplb_lb_service *service;
	struct rplb_flow6_key key;
	const uint8_t *vip;
	uint32_t index;

	if (verdict == RPLB_PARSE6_ICMP && tables->n_services6 != 0 && first == NULL &&
	    is_icmp6_error(((const uint8_t *)parsed->l4)[0])) {
		icmp6_error_from_backend(worker, lb_worker, tables, m, parsed);
		return;
	}
	/* A backend's reply its kernel fragmented. */
	if (unlikely(verdict == RPLB_PARSE6_FRAGMENT) && tables->n_services6 != 0 &&
	    rplb_is_backend_ip6(tables, parsed->ip->src_addr)) {
		rplb_lb_fragment6(worker, tables, m, parsed, RPLB_BACKEND);
		return;
	}
	if (verdict != RPLB_PARSE6_TCP_UDP || tables->n_services6 == 0) {
		pass6(worker, first, m, RPLB_FRONTEND);
		return;
	}
	client_key6(parsed, RPLB_DIR_BACKEND, &key);
	index = rplb_flow6_lookup(table, &key, rplb_flow6_key_hash(&key));
	if (likely(index != RPLB_NO_FLOW6)) {
		struct rplb_flow6 *flow = &table->flows[index];

		if (dropped_before_rewrite(worker, m, parsed, first))
			return;
		flow->last_seen = lb_worker->clock_now;
		track_state6(flow, parsed->tcp_flags, 0);
		count_packet6(lb_worker, flow->backend_id, m->pkt_len);
		worker->counters.events[RPLB_EV_TO_CLIENT_FLOW]++;
		note_translation(first, RPLB_EV_TO_CLIENT_FLOW, flow->vip,
				 rplb_backend_slot(flow->backend_id));
		send_to_client6(worker, m, parsed, flow->vip, flow->vport);
		return;
	}
	owner = rplb_find_owner6(tables, parsed->ip->src_addr, key.src_port, key.proto);
	if (owner == NULL) {
		pass6(worker, first, m, RPLB_FRONTEND);
		return;
	}
	if (owner->service_index == RPLB_SERVICE_SHARED) {
		note_pass(first, RPLB_EV_REPLY_UNMATCHED);
		worker->counters.events[RPLB_EV_REPLY_UNMATCHED]++;
		rplb_worker_send(worker, RPLB_FRONTEND, m);
		return;
	}
	if (dropped_before_rewrite(worker, m, parsed, first))
		return;
	service = &tables->services[owner->service_index];
	vip = tables->service_vip6[owner->service_index].addr;
	lb_worker->service_counters[service->service_id].packets++;
	lb_worker->service_counters[service->service_id].bytes += m->pkt_len;
	worker->counters.events[RPLB_EV_TO_CLIENT_STATELESS]++;
	note_translation(first, RPLB_EV_TO_CLIENT_STATELESS, vip,
			 RPLB_FRAGMENT_COUNT_SERVICE | service->service_id);
	send_to_client6(worker, m, parsed, vip, service->port);
}

/* The slow path of every IPv6 frame the fast path below did not finish. */
void
rplb_lb_ipv6(struct rplb_worker *worker, struct rte_mbuf *m, unsigned int in_side)
{
	const struct rplb_lb *lb = worker->engine_state;
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	/* The burst's generation or a newer one: either stays allocated
	 * until this worker's next quiescent state (lb_classify.h:
	 * slow_path_tables). */
	const struct rplb_lb_tables *tables = __atomic_load_n(&lb->tables, __ATOMIC_ACQUIRE);
	struct rte_ipv6_hdr *ip = rplb_ipv6_header(m);
	struct rplb_parsed6 parsed;
	enum rplb_parse6 verdict;

	if (ip == NULL) {
		pass_through(worker, m, in_side == RPLB_FRONTEND ? RPLB_BACKEND : RPLB_FRONTEND);
		return;
	}
	verdict = rplb_parse_ipv6(m, ip, &parsed);
	if (in_side == RPLB_FRONTEND)
		from_client6(worker, lb_worker, tables, m, ip, &parsed, verdict, NULL);
	else
		from_backend6(worker, lb_worker, tables, m, &parsed, verdict, NULL);
}

void
rplb_lb_first_fragment6(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
			struct rte_mbuf *m, const struct rplb_parsed6 *parsed, unsigned int in_side,
			struct rplb_fragment_datagram *datagram)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	enum rplb_parse6 verdict = (enum rplb_parse6)parsed->first_l4;

	if (in_side == RPLB_FRONTEND)
		from_client6(worker, lb_worker, tables, m, parsed->ip, parsed, verdict, datagram);
	else
		from_backend6(worker, lb_worker, tables, m, parsed, verdict, datagram);
}

/* Housekeeping: a slice of the IPv6 flows aged (lb_housekeeping). */
void
rplb_lb_age_flows6(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		   uint32_t now, unsigned int budget)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rplb_flow6_table *table = lb_worker->flows6;
	uint32_t cursor = table->aging_cursor, end = RTE_MIN(cursor + budget, table->capacity + 1);

	for (; cursor < end; cursor++) {
		struct rplb_flow6 *flow = &table->flows[cursor];

		if (flow->state != RPLB_FLOW6_FREE &&
		    (uint32_t)(now - flow->last_seen) > tables->timeout_ticks[flow->state]) {
			rplb_lb_count_flow_end(lb_worker, tables->backends, flow->backend_id);
			rplb_flow6_remove(table, cursor);
			worker->counters.events[RPLB_EV_FLOWS_EXPIRED]++;
		}
	}
	table->aging_cursor = cursor > table->capacity ? 1 : cursor;
}

/* ---- the fast path: a packet of an established flow ---------------------
 *
 * The frame nearly every IPv6 packet is: Ethernet + IPv6 without extension
 * headers + TCP/UDP whose headers lie in the first segment, of a stored
 * flow whose backend is still configured, with no TCP flag that could
 * change the flow's state.  Hashed and compared straight from the packet
 * (the two addresses lie side by side in the IPv6 header, in the key's
 * order for both directions), rewritten with a checksum delta known in
 * advance (the backend's towards it, the flow's own towards the client).
 * Anything else returns 0 and takes the full path (rplb_lb_ipv6), which
 * parses the frame again: that costs only frames that are not this one. */
static __rte_always_inline int
established6(struct rplb_worker *worker, struct rte_mbuf *m, const unsigned int in_side)
{
	uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ipv6_hdr *ip = (struct rte_ipv6_hdr *)(frame + sizeof(struct rte_ether_hdr));
	struct rplb_l4_ports *ports = (struct rplb_l4_ports *)(ip + 1);
	const struct rplb_lb *lb = worker->engine_state;
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	const struct rplb_flow6_table *table = lb_worker->flows6;
	const struct rplb_lb_tables *tables;
	const struct rplb_lb_backend *backend;
	struct rplb_flow6 *flow;
	uint64_t addrs[4], tail;
	uint32_t payload, ports_word, hash, i, ref;
	uint16_t *cksum, delta;
	uint8_t proto = ip->proto, tcp_flags;

	if (unlikely(m->data_len < sizeof(struct rte_ether_hdr) + sizeof(*ip) +
				   sizeof(struct rte_tcp_hdr)) ||
	    (ip->vtc_flow & RTE_BE32(0xf0000000)) != RTE_BE32(0x60000000) ||
	    ((struct rte_ether_hdr *)frame)->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV6))
		return 0;
	payload = rte_be_to_cpu_16(ip->payload_len);
	if (sizeof(struct rte_ether_hdr) + sizeof(*ip) + payload > m->data_len)
		return 0;
	if (likely(proto == IPPROTO_TCP)) {
		const struct rte_tcp_hdr *tcp = (const struct rte_tcp_hdr *)ports;
		uint32_t header = (uint32_t)(tcp->data_off >> 4) * 4;

		if (header < sizeof(*tcp) || header > payload)
			return 0;
		tcp_flags = tcp->tcp_flags;
		cksum = &((struct rte_tcp_hdr *)ports)->cksum;
	} else if (proto == IPPROTO_UDP) {
		struct rte_udp_hdr *udp = (struct rte_udp_hdr *)ports;

		if (payload < sizeof(*udp) || udp->dgram_cksum == 0)
			return 0;
		tcp_flags = 0;
		cksum = &udp->dgram_cksum;
	} else {
		return 0;
	}
	if (unlikely(m->ol_flags & (RTE_MBUF_F_RX_IP_CKSUM_BAD | RTE_MBUF_F_RX_L4_CKSUM_BAD)))
		return 0;

	/* The key's five words: both addresses, then ports, proto and
	 * direction (struct rplb_flow6_key). */
	memcpy(addrs, ip->src_addr, sizeof(addrs));
	memcpy(&ports_word, ports, sizeof(ports_word));
	tail = ports_word | (uint64_t)proto << 32 | (uint64_t)(in_side == RPLB_BACKEND) << 40;
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
	hash = (uint32_t)_mm_crc32_u64(_mm_crc32_u64(_mm_crc32_u64(_mm_crc32_u64(
		_mm_crc32_u64(0, addrs[0]), addrs[1]), addrs[2]), addrs[3]), tail);
#else
	{
		struct rplb_flow6_key key;

		memcpy(&key, addrs, sizeof(addrs));
		memcpy((uint8_t *)&key + sizeof(addrs), &tail, sizeof(tail));
		hash = rplb_flow6_key_hash(&key);
	}
#endif
	for (i = hash & table->slot_mask;; i = (i + 1) & table->slot_mask) {
		const struct rplb_flow6_slot *slot = &table->slots[i];

		ref = slot->ref;
		if (ref == 0)
			return 0;
		if (slot->hash != hash || (ref & 1) != (in_side == RPLB_BACKEND))
			continue;
		flow = &table->flows[ref >> 1];
		if (in_side == RPLB_FRONTEND) {
			/* The record's first 37 bytes are the client key's. */
			uint64_t record_tail;

			memcpy(&record_tail, (const uint8_t *)flow + sizeof(addrs), sizeof(record_tail));
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_1__)
			{
				__m128i diff = _mm_or_si128(
					_mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)flow),
						      _mm_loadu_si128((const __m128i *)(const void *)ip->src_addr)),
					_mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)flow + 1),
						      _mm_loadu_si128((const __m128i *)(const void *)ip->dst_addr)));

				if (_mm_testz_si128(diff, diff) &&
				    ((record_tail ^ tail) & 0xffffffffffull) == 0)
					break;
			}
#else
			if (memcmp(flow, addrs, sizeof(addrs)) == 0 &&
			    ((record_tail ^ tail) & 0xffffffffffull) == 0)
				break;
#endif
		} else {
			uint64_t backend_ip[2], client_ip[2];

			memcpy(backend_ip, flow->backend_ip, sizeof(backend_ip));
			memcpy(client_ip, flow->client_ip, sizeof(client_ip));
			if (((backend_ip[0] ^ addrs[0]) | (backend_ip[1] ^ addrs[1]) |
			     (client_ip[0] ^ addrs[2]) | (client_ip[1] ^ addrs[3])) == 0 &&
			    flow->backend_port == ports->src_port &&
			    flow->client_port == ports->dst_port && flow->proto == proto)
				break;
		}
	}
	if (unlikely(tcp_flags & flow->state_change_flags))
		return 0;
	tables = __atomic_load_n(&lb->tables, __ATOMIC_ACQUIRE);
	if (in_side == RPLB_FRONTEND) {
		uint32_t slot;

		backend = configured_backend6(tables->backends, flow);
		if (unlikely(backend == NULL))
			return 0;
		slot = rplb_backend_slot(flow->backend_id);
		memcpy(ip->dst_addr, tables->backend_ip6[slot].addr, 16);
		ports->dst_port = backend->port;
		delta = backend->to_backend.l4;
		worker->counters.events[RPLB_EV_TO_BACKEND]++;
	} else {
		memcpy(ip->src_addr, flow->vip, 16);
		ports->src_port = flow->vport;
		delta = flow->to_client_l4;
		worker->counters.events[RPLB_EV_TO_CLIENT_FLOW]++;
	}
	*cksum = rplb_cksum_update(*cksum, delta);
	if (proto == IPPROTO_UDP && *cksum == 0)
		*cksum = 0xffff;
	flow->last_seen = lb_worker->clock_now;
	{
		struct rplb_backend_counters *counters =
			&lb_worker->backend_counters[rplb_backend_slot(flow->backend_id)];

		counter_add(&counters->packets, 1);
		counter_add(&counters->bytes, m->pkt_len);
	}
	rplb_worker_send(worker, in_side == RPLB_FRONTEND ? RPLB_BACKEND : RPLB_FRONTEND, m);
	return 1;
}

void
rplb_lb_client_not_ipv4(struct rplb_worker *worker, struct rte_mbuf *m)
{
	const struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);

	/* established6 checks the EtherType itself. */
	if (likely(established6(worker, m, RPLB_FRONTEND)))
		return;
	if (m->data_len >= sizeof(*eth) && eth->ether_type == RTE_BE16(RTE_ETHER_TYPE_IPV6))
		rplb_lb_ipv6(worker, m, RPLB_FRONTEND);
	else
		pass_through(worker, m, RPLB_BACKEND);
}

void
rplb_lb_backend_ipv6(struct rplb_worker *worker, struct rte_mbuf *m)
{
	if (likely(established6(worker, m, RPLB_BACKEND)))
		return;
	rplb_lb_ipv6(worker, m, RPLB_BACKEND);
}
