/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_icmp.c: pass 1's slow path for ICMP errors (destination unreachable,
 * all codes; time exceeded; parameter problem) about a load-balanced
 * packet, translated both ways so that path-MTU discovery and the like
 * work through rplb:
 *
 *   from the clients, to a VIP: the quote is vip:port -> client:port, a
 *   packet a backend sent (e.g. "fragmentation needed" from a router
 *   between the clients and rplb about a server's segment)
 *     its flow (looked up by the quote's client key)
 *         -> to that flow's backend: outer destination and quoted source
 *            become the backend's ip and ip:port
 *     no flow, for a service -> the same, to the service's Maglev choice
 *            for the quoted client tuple (the choice a new flow would get,
 *            and an ECMP peer would make); no state is created
 *     no flow, no service, or a quote of another protocol
 *         -> unchanged, out the backend port (icmp_errors_unmatched)
 *     a quote too short or broken, or not from the VIP it is sent to
 *         -> dropped (icmp_error_malformed)
 *   from the backend side: the quote is client:port -> backend ip:port, a
 *   client's packet after rplb (e.g. "fragmentation needed" from a router
 *   between rplb and the backends about an upload)
 *     its flow (looked up by the backend-side key)
 *         -> quoted destination back to vip:port, out the frontend; the
 *            outer source too when it is the backend itself (a backend's
 *            own "port unreachable", as IPVS does)
 *     no flow, a backend of exactly one service -> the same, statelessly
 *     anything else -> unchanged (icmp_errors_unmatched)
 *
 * The lookups are single ones, outside the burst's bulk lookup: errors are
 * rare, and the common path stays without a test for them.  An error in
 * the same burst as the packet that creates its flow sees no flow yet and
 * takes the Maglev choice, which is that flow's backend.
 *
 * Called from pass 1 (lb_classify.h) through lb_slow_paths.h.
 */
#include <stdint.h>

#include "icmp_error.h"
#include "lb_burst.h"
#include "lb_slow_paths.h"

/* An error whose quote names no flow or service: out the other side as it
 * came. */
static inline void
icmp_error_unmatched(struct rplb_worker *worker, struct rte_mbuf *m, unsigned int out_side)
{
	worker->counters.events[RPLB_EV_ICMP_ERRORS_UNMATCHED]++;
	rplb_worker_send(worker, out_side, m);
}

void
rplb_lb_icmp_error_from_client(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		       struct rte_mbuf *m, struct rplb_parsed *parsed)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rte_ipv4_hdr *ip = parsed->ip;
	struct rplb_icmp_quote quote;
	struct rplb_flow_key key;
	uint32_t hash, index, backend_ip, vip;
	uint16_t backend_port;
	enum rplb_event event;

	switch (rplb_parse_icmp_quote(m, parsed, &quote)) {
	case RPLB_QUOTE_BAD:
		rplb_worker_drop(worker, RPLB_DROP_ICMP_ERROR_MALFORMED, m);
		return;
	case RPLB_QUOTE_OTHER:
		icmp_error_unmatched(worker, m, RPLB_BACKEND);
		return;
	default:
		break;
	}
	/* A router sends an error to its quote's source: one about a packet
	 * from another address can only be forged. */
	if (quote.ip->src_addr != ip->dst_addr) {
		rplb_worker_drop(worker, RPLB_DROP_ICMP_ERROR_MALFORMED, m);
		return;
	}
	/* The quote is vip:port -> client:port; the flow's client key is its
	 * reverse. */
	key = (struct rplb_flow_key){
		.src_ip = quote.ip->dst_addr, .dst_ip = quote.ip->src_addr,
		.src_port = quote.ports->dst_port, .dst_port = quote.ports->src_port,
		.proto = quote.proto, .direction = RPLB_DIR_CLIENT,
	};
	hash = rplb_flow_key_hash(&key);
	index = rplb_flow_lookup(lb_worker->flows, &key, hash);
	if (index != RPLB_NO_FLOW) {
		const struct rplb_flow *flow = &lb_worker->flows->flows[index];

		backend_ip = flow->backend_ip;
		backend_port = flow->backend_port;
		event = RPLB_EV_ICMP_ERRORS_TO_BACKEND;
	} else {
		const struct rplb_lb_service *service =
			rplb_find_service(tables, key.dst_ip, key.dst_port, key.proto);
		uint32_t pick;

		if (service == NULL) {
			icmp_error_unmatched(worker, m, RPLB_BACKEND);
			return;
		}
		pick = rplb_maglev_pick(service, hash);
		if (pick == RPLB_NO_BACKEND) {
			rplb_worker_drop(worker, RPLB_DROP_ICMP_ERROR_NO_BACKEND, m);
			return;
		}
		backend_ip = tables->backends[pick].ip;
		backend_port = tables->backends[pick].port;
		event = RPLB_EV_ICMP_ERRORS_TO_BACKEND_STATELESS;
	}
	if (dropped_bad_checksum(worker, m))
		return;
	vip = ip->dst_addr;
	rplb_rewrite_quote(&quote, &quote.ip->src_addr, &quote.ports->src_port, backend_ip,
			   backend_port);
	rplb_rewrite_ip_addr(ip, &ip->dst_addr, backend_ip,
			     rplb_cksum_fold(rplb_cksum_delta32(vip, backend_ip)));
	worker->counters.events[event]++;
	rplb_worker_send(worker, RPLB_BACKEND, m);
}

void
rplb_lb_icmp_error_from_backend(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
			struct rte_mbuf *m, struct rplb_parsed *parsed)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rte_ipv4_hdr *ip = parsed->ip;
	struct rplb_icmp_quote quote;
	struct rplb_flow_key key;
	uint32_t index, backend_ip, vip;
	uint16_t vport;
	enum rplb_event event;

	if (rplb_parse_icmp_quote(m, parsed, &quote) != RPLB_QUOTE_TCP_UDP) {
		icmp_error_unmatched(worker, m, RPLB_FRONTEND);
		return;
	}
	/* The quote is client:port -> backend ip:port; the flow's
	 * backend-side key is its reverse. */
	key = (struct rplb_flow_key){
		.src_ip = quote.ip->dst_addr, .dst_ip = quote.ip->src_addr,
		.src_port = quote.ports->dst_port, .dst_port = quote.ports->src_port,
		.proto = quote.proto, .direction = RPLB_DIR_BACKEND,
	};
	index = rplb_flow_lookup(lb_worker->flows, &key, rplb_flow_key_hash(&key));
	if (index != RPLB_NO_FLOW) {
		const struct rplb_flow *flow = &lb_worker->flows->flows[index];

		vip = flow->vip;
		vport = flow->vport;
		event = RPLB_EV_ICMP_ERRORS_TO_CLIENT;
	} else {
		const struct rplb_owner_slot *owner =
			rplb_find_owner(tables, key.src_ip, key.src_port, key.proto);
		const struct rplb_lb_service *service;

		if (owner == NULL || owner->service_index == RPLB_SERVICE_SHARED) {
			icmp_error_unmatched(worker, m, RPLB_FRONTEND);
			return;
		}
		service = &tables->services[owner->service_index];
		vip = service->vip;
		vport = service->port;
		event = RPLB_EV_ICMP_ERRORS_TO_CLIENT_STATELESS;
	}
	if (dropped_bad_checksum(worker, m))
		return;
	backend_ip = quote.ip->dst_addr;
	rplb_rewrite_quote(&quote, &quote.ip->dst_addr, &quote.ports->dst_port, vip, vport);
	/* The backend's own error (its kernel's "port unreachable"): it
	 * leaves from the VIP, the address the client knows. */
	if (ip->src_addr == backend_ip)
		rplb_rewrite_ip_addr(ip, &ip->src_addr, vip,
				     rplb_cksum_fold(rplb_cksum_delta32(backend_ip, vip)));
	worker->counters.events[event]++;
	rplb_worker_send(worker, RPLB_FRONTEND, m);
}
