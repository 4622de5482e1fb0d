/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_resolve.h: pass 3 of the load-balancing engine.  Each looked-up
 * packet is settled against the flow table and rewritten:
 *
 *   from the clients
 *     its flow is the first match, backend still configured
 *         -> to that backend (to_known_flow: nearly every packet)
 *     a flow, but its backend is gone   -> the flow moves (ensure_backend)
 *     a flow of a replaced service, or a SYN reopening a closed tuple
 *                                       -> the flow starts over
 *     no flow, for a service            -> a new flow (Maglev), to its backend
 *     no flow, no service               -> passed through (or strict drop)
 *   from the backends
 *     a flow                            -> to the client, as vip:port
 *     no flow, backend of one service   -> to the client, statelessly
 *     no flow, backend of several       -> unchanged (reply_unmatched)
 *     no flow, no backend               -> passed through
 *
 * The first match's record is confirmed here, not in the match pass: the
 * packet needs the record anyway, so the compare costs no extra load.
 *
 * Private to engine_lb.c (static, inlined into each copy of the resolve
 * loop, where tx_offload and rx_checked are constants).
 */
#ifndef RPLB_LB_RESOLVE_H
#define RPLB_LB_RESOLVE_H

#include <stdint.h>
#include <string.h>

#include "lb_burst.h"
#include "lb_flow_state.h"

/* The backend's service is the packet's: a flow's backend is configured
 * under the flow's service (configured_backend), and a new flow's backend
 * comes from its service's Maglev table. */
static __rte_always_inline void
send_to_backend(struct resolve_context *context, struct lookup_record *lookup,
		const struct rplb_lb_backend *backend, uint32_t slot)
{
	struct rte_mbuf *m = lookup->m;
	struct rplb_parsed parsed = lookup->parsed;
	struct rplb_l4_ports *ports = parsed.l4;
	uint32_t bytes = m->pkt_len;

	rplb_rewrite_addr_port(m, &parsed, &parsed.ip->dst_addr, &ports->dst_port,
			       backend->ip, backend->port, backend->to_backend, context->tx_offload);
	count_packet(context, slot, bytes);
	send_after_burst(context, m, bytes);
}

/* A packet of a known flow, to the flow's configured backend, unless the
 * NIC found its checksum bad; state_changes: its flags may change the
 * flow's state (state_may_change), a constant at each call. */
static __rte_always_inline void
to_known_backend(struct rplb_worker *worker, struct resolve_context *context,
		 struct lookup_record *lookup, struct rplb_flow *flow,
		 const struct rplb_lb_backend *backend, uint32_t slot, const int state_changes)
{
	if (dropped_bad_checksum_in(worker, context, lookup->m))
		return;
	flow->last_seen = context->now;
	if (state_changes)
		change_state(flow, lookup->parsed.tcp_flags, 1);
	send_to_backend(context, lookup, backend, slot);
}

/* The packet's source is (old_ip, old_port), a backend's: it leaves as
 * (vip, port). */
static __rte_always_inline void
send_to_client(struct resolve_context *context, struct lookup_record *lookup, uint32_t old_ip,
	       uint16_t old_port, uint32_t vip, uint16_t port)
{
	struct rplb_l4_ports *ports = lookup->parsed.l4;

	rplb_rewrite_addr_port(lookup->m, &lookup->parsed, &lookup->parsed.ip->src_addr,
			       &ports->src_port, vip, port,
			       rplb_cksum_deltas(old_ip, old_port, vip, port), context->tx_offload);
	send_after_burst(context, lookup->m, lookup->m->pkt_len);
}

/* The client-key hashes of the flows this burst created, moved or removed,
 * as a 256-bit filter of their top bits.  Why: the match pass looked up
 * the whole burst before any packet was resolved, so a packet whose flow
 * an earlier packet of the same burst created, moved or removed holds a
 * stale answer (a removed record must never be removed twice).  Only a
 * packet with the same client key can see such a record, and it has the
 * same hash: a packet whose bit is clear has an up-to-date answer. */
struct changed_filter {
	uint64_t any;
	uint64_t bits[4];
};

static inline int
maybe_changed(const struct changed_filter *filter, uint32_t hash)
{
	return filter->any && ((filter->bits[hash >> 30] >> ((hash >> 24) & 63)) & 1);
}

static inline void
mark_changed(struct changed_filter *filter, uint32_t hash)
{
	filter->any = 1;
	filter->bits[hash >> 30] |= 1ull << ((hash >> 24) & 63);
}

/* The flow's backend if it is still configured under the flow's service
 * (weight 0 included), else NULL.  Backend ids carry a generation, so a
 * stale id never names the backend that took over its slot; and a backend
 * id is never reused for another service's backend (rplb.h), so a backend
 * configured under the flow's service makes that service the one at the
 * flow's vip:proto:port: a known flow needs no service lookup.  Port,
 * service id and backend id lie in the same order in both records: one
 * 8-byte compare. */
static inline const struct rplb_lb_backend *
configured_backend(const struct rplb_lb_backend *backends, const struct rplb_flow *flow)
{
	const struct rplb_lb_backend *backend = &backends[rplb_backend_slot(flow->backend_id)];
	uint64_t flow_word, backend_word;

	RTE_BUILD_BUG_ON(offsetof(struct rplb_flow, service_id) -
			 offsetof(struct rplb_flow, backend_port) != 2 ||
			 offsetof(struct rplb_flow, backend_id) -
			 offsetof(struct rplb_flow, backend_port) != 4);
	RTE_BUILD_BUG_ON(offsetof(struct rplb_lb_backend, service_id) -
			 offsetof(struct rplb_lb_backend, port) != 2 ||
			 offsetof(struct rplb_lb_backend, backend_id) -
			 offsetof(struct rplb_lb_backend, port) != 4);
	memcpy(&flow_word, &flow->backend_port, sizeof(flow_word));
	memcpy(&backend_word, &backend->port, sizeof(backend_word));
	return likely(flow_word == backend_word) ? backend : NULL;
}

/* Two flows must never share a backend-side key (backend ip:port <->
 * client ip:port, proto): the backend holds one connection on that tuple,
 * and its replies can name only one VIP.  It happens when a client reuses
 * a source port for another VIP served by the same backend while the
 * first connection's flow is still stored (closing flows stay 10 s), or
 * when a flow moves to a backend where the client's tuple is taken.  The
 * flow that takes the key now (new, or moved) takes it over: the older
 * flow loses it and ends (flows_superseded).  backend_hash: of the key;
 * mover: the flow that moves there (its old key may be this very key,
 * when its backend came back under a new id), or RPLB_NO_FLOW.  Out of
 * line: rplb_flow_hash_may_be_stored answers "no" first for nearly every
 * new flow. */
static __rte_noinline void
supersede_backend_key(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		      const struct rplb_lb_backend *backends, uint32_t backend_ip,
		      uint16_t backend_port, uint32_t client_ip, uint16_t client_port,
		      uint8_t proto, uint32_t backend_hash, uint32_t mover,
		      struct changed_filter *flows_changed)
{
	struct rplb_flow_table *flow_table = lb_worker->flows;
	struct rplb_flow_key client_key;
	uint32_t index = rplb_flow_lookup_backend_side(flow_table, backend_ip, backend_port,
						       client_ip, client_port, proto, backend_hash);

	if (index == RPLB_NO_FLOW || index == mover)
		return;
	/* A later packet of this burst with the older flow's client key holds
	 * a stale answer now. */
	rplb_client_key(&flow_table->flows[index], &client_key);
	mark_changed(flows_changed, rplb_flow_key_hash(&client_key));
	count_flow_end(lb_worker, backends, flow_table->flows[index].backend_id);
	rplb_flow_remove(flow_table, index);
	worker->counters.events[RPLB_EV_FLOWS_SUPERSEDED]++;
}

/* The new flow's backend-side key may be stored already
 * (rplb_flow_hash_may_be_stored): end the flow that holds it, if one
 * does, and insert.  Out of line: nearly every new flow does without. */
static __rte_noinline uint32_t
insert_superseding(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		   const struct rplb_lb_tables *tables, const struct rplb_flow_key *client_key,
		   uint32_t client_hash, const struct rplb_lb_backend *backend,
		   uint32_t backend_hash, struct changed_filter *flows_changed)
{
	supersede_backend_key(worker, lb_worker, tables->backends, backend->ip, backend->port,
			      client_key->src_ip, client_key->src_port, client_key->proto,
			      backend_hash, RPLB_NO_FLOW, flows_changed);
	return rplb_flow_insert(lb_worker->flows, client_key, client_hash, backend->ip,
				backend->port, backend_hash);
}

/* The flow's backend, if it is still configured; otherwise the flow moves
 * to the current Maglev choice.  NULL when the packet must be dropped
 * because the service has no backend left.  The flow may have been
 * removed (no room for its new key): state FREE. */
static inline const struct rplb_lb_backend *
ensure_backend(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
	       const struct rplb_lb_tables *tables, const struct rplb_lb_service *service,
	       uint32_t flow_index, uint32_t flow_hash, struct changed_filter *flows_changed)
{
	struct rplb_flow *flow = &lb_worker->flows->flows[flow_index];
	const struct rplb_lb_backend *backend = configured_backend(tables->backends, flow);
	uint32_t pick, backend_hash;

	if (likely(backend != NULL))
		return backend;

	pick = rplb_maglev_pick(service, flow_hash);
	if (pick == RPLB_NO_BACKEND)
		return NULL;
	backend = &tables->backends[pick];
	count_flow_end(lb_worker, tables->backends, flow->backend_id);
	mark_changed(flows_changed, flow_hash);
	backend_hash = rplb_backend_side_hash(backend->ip, backend->port, flow->client_ip,
					      flow->client_port, flow->proto);
	if (rplb_flow_hash_may_be_stored(lb_worker->flows, backend_hash))
		supersede_backend_key(worker, lb_worker, tables->backends, backend->ip,
				      backend->port, flow->client_ip, flow->client_port,
				      flow->proto, backend_hash, flow_index, flows_changed);
	if (rplb_flow_move(lb_worker->flows, flow_index, backend->ip, backend->port) < 0) {
		/* No room for its new backend key: forget the flow; the stateless
		 * path still rewrites replies of a backend owned by one service. */
		rplb_flow_remove(lb_worker->flows, flow_index);
		worker->counters.events[RPLB_EV_FLOW_TABLE_FULL]++;
		return backend;
	}
	flow->backend_id = backend->backend_id;
	lb_worker->backend_counters[rplb_backend_slot(backend->backend_id)].active_flows++;
	worker->counters.events[RPLB_EV_FLOWS_MOVED]++;
	return backend;
}

/* A packet of a known flow whose backend is still configured under its
 * service (so no service lookup is needed): sent, and 1; else 0. */
static __rte_always_inline int
to_known_flow(struct rplb_worker *worker, struct resolve_context *context,
	      struct lookup_record *lookup, struct rplb_flow *flow)
{
	const struct rplb_lb_backend *backend = configured_backend(context->backends, flow);
	const uint32_t slot = rplb_backend_slot(flow->backend_id);   /* backend's, when not NULL */
	const uint8_t tcp_flags = lookup->parsed.tcp_flags;

	if (unlikely(backend == NULL))
		return 0;
	/* Nearly every packet: its flags leave the state as it is (a copy of
	 * the path of its own, so nothing is kept for the state change). */
	if (likely(!state_may_change(flow, tcp_flags))) {
		to_known_backend(worker, context, lookup, flow, backend, slot, 0);
		return 1;
	}
	if (!reopens_tuple(flow, tcp_flags)) {
		to_known_backend(worker, context, lookup, flow, backend, slot, 1);
		return 1;
	}
	return 0;
}

/* A client-side packet of a new flow, of a flow whose backend is gone, of
 * a reopened tuple, or of no service at all; index: its flow, or
 * RPLB_NO_FLOW.  Always inlined although it is not the common path: out
 * of line, its call and the spills around it cost every new flow more
 * than the code it runs (docs/performance.md). */
static __rte_always_inline void
new_or_changed_flow(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		    struct resolve_context *context, struct rplb_flow_table *flow_table,
		    const struct rplb_lb_tables *tables, struct lookup_record *lookup,
		    struct changed_filter *flows_changed, uint32_t index)
{
	const uint32_t flow_hash = lookup->hash;
	/* No signature matched, and prepare_new_flows found no flow: it found
	 * the service and chose the backend already. */
	const int prepared = lookup->first_flow == rplb_sentinel(flow_table);
	const struct rplb_lb_service *service;
	const struct rplb_lb_backend *backend;
	struct rplb_flow *flow;
	uint32_t pick, backend_hash;

	service = prepared ? lookup->service :
		rplb_find_service(tables, lookup->key.dst_ip, lookup->key.dst_port,
				  lookup->key.proto);
	if (service == NULL) {
		pass_not_for_service(worker, tables, lookup->m, lookup->key.dst_ip);
		return;
	}
	if (dropped_bad_checksum_in(worker, context, lookup->m))
		return;
	if (index != RPLB_NO_FLOW) {
		flow = &flow_table->flows[index];
		if (likely(flow->service_id == service->service_id &&
			   !reopens_tuple(flow, lookup->parsed.tcp_flags))) {
			backend = ensure_backend(worker, lb_worker, tables, service, index, flow_hash,
						 flows_changed);
			if (unlikely(backend == NULL)) {
				rplb_worker_drop(worker, RPLB_DROP_NO_BACKEND, lookup->m);
				return;
			}
			if (likely(flow->state != RPLB_FLOW_FREE)) {
				flow->last_seen = context->now;
				track_state(flow, lookup->parsed.tcp_flags, 1);
				send_to_backend(context, lookup, backend,
						rplb_backend_slot(backend->backend_id));
				return;
			}
		} else {
			/* The service was replaced under the same vip:proto:port, or
			 * the client reopens the tuple: start over. */
			count_flow_end(lb_worker, tables->backends, flow->backend_id);
			rplb_flow_remove(flow_table, index);
			mark_changed(flows_changed, flow_hash);
		}
	}

	/* A prepared miss has its backend chosen already. */
	pick = prepared ? lookup->new_backend : rplb_maglev_pick(service, flow_hash);
	if (unlikely(pick == RPLB_NO_BACKEND)) {
		rplb_worker_drop(worker, RPLB_DROP_NO_BACKEND, lookup->m);
		return;
	}
	backend = &tables->backends[pick];
	backend_hash = prepared ? lookup->new_backend_hash :
		rplb_flow_backend_key_hash(&lookup->key, backend->ip, backend->port);
	if (likely(!rplb_flow_hash_may_be_stored(flow_table, backend_hash)))
		index = rplb_flow_insert(flow_table, &lookup->key, flow_hash, backend->ip,
					 backend->port, backend_hash);
	else
		index = insert_superseding(worker, lb_worker, tables, &lookup->key, flow_hash,
					   backend, backend_hash, flows_changed);
	if (unlikely(index == RPLB_NO_FLOW)) {
		worker->counters.events[RPLB_EV_FLOW_TABLE_FULL]++;
	} else {
		flow = &flow_table->flows[index];
		flow->service_id = service->service_id;
		flow->backend_id = backend->backend_id;
		set_state(flow, initial_state(&lookup->key, lookup->parsed.tcp_flags));
		flow->last_seen = context->now;
		count_flow_start(context, backend->backend_id);
		worker->counters.events[RPLB_EV_FLOWS_CREATED]++;
		mark_changed(flows_changed, flow_hash);
	}
	RTE_ASSERT(backend->service_id == service->service_id);
	send_to_backend(context, lookup, backend, rplb_backend_slot(backend->backend_id));
}

/* A client-side packet: lookup->first_ref is its first signature match
 * (rplb_flow_match_first), with its record in lookup->first_flow; or,
 * where no signature matched (first_flow the sentinel), prepare_new_flows
 * found no flow and prepared a new one.  may_be_stale: some flow of this
 * burst was created, moved or removed before this packet (flows_changed
 * says which), a constant at each call.  Returns 0 when the packet
 * changed no flow. */
static __rte_always_inline int
resolve_from_client(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		    struct resolve_context *context, struct rplb_flow_table *flow_table,
		    const struct rplb_lb_tables *tables, struct lookup_record *lookup,
		    struct changed_filter *flows_changed, const int may_be_stale)
{
	uint32_t index;

	/* The hash and the first match's reference are read where they are
	 * needed: loaded up front, they would take registers on the path of
	 * nearly every packet, which needs neither. */
	if ((!may_be_stale || likely(!maybe_changed(flows_changed, lookup->hash))) &&
	    likely(rplb_flow_is_first_match(&lookup->key, lookup->first_ref, lookup->first_flow,
					    RPLB_DIR_CLIENT))) {
		/* Nearly every packet: its flow is the first match, whose record
		 * is at hand. */
		if (likely(to_known_flow(worker, context, lookup, lookup->first_flow)))
			return 0;
		index = rplb_ref_index(lookup->first_ref);
	} else {
		/* An earlier packet of this burst with this key's hash created,
		 * moved or removed its flow, and the bulk lookup's answer for this
		 * one may be stale (struct changed_filter); or the flow is not the
		 * first match.  Look again, unless a prepared miss of an unchanged
		 * key. */
		const int prepared = lookup->first_flow == rplb_sentinel(flow_table);

		index = prepared && (!may_be_stale || !maybe_changed(flows_changed, lookup->hash)) ?
			RPLB_NO_FLOW : rplb_flow_lookup(flow_table, &lookup->key, lookup->hash);
		if (index != RPLB_NO_FLOW &&
		    to_known_flow(worker, context, lookup, &flow_table->flows[index]))
			return 0;
	}

	new_or_changed_flow(worker, lb_worker, context, flow_table, tables, lookup, flows_changed,
			    index);
	return 1;
}

/* A backend-side packet; index: its flow (the bulk lookup's answer,
 * confirmed), or RPLB_NO_FLOW.  A reply never creates or changes a flow,
 * so no answer of the burst goes stale on this side. */
static __rte_always_inline void
resolve_from_backend(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		     struct resolve_context *context, const struct rplb_lb_tables *tables,
		     struct lookup_record *lookup, uint32_t index)
{
	const struct rplb_owner_slot *owner;
	const struct rplb_lb_service *service;

	if (likely(index != RPLB_NO_FLOW)) {
		struct rplb_flow *flow = &lb_worker->flows->flows[index];

		if (dropped_bad_checksum_in(worker, context, lookup->m))
			return;
		flow->last_seen = context->now;
		track_state(flow, lookup->parsed.tcp_flags, 0);
		count_packet(context, rplb_backend_slot(flow->backend_id), lookup->m->pkt_len);
		worker->counters.events[RPLB_EV_TO_CLIENT_FLOW]++;
		send_to_client(context, lookup, flow->backend_ip, flow->backend_port, flow->vip,
			       flow->vport);
		return;
	}
	/* No flow: a reply from a backend is rewritten statelessly when the
	 * backend serves one service; anything else passes. */
	owner = rplb_find_owner(tables, lookup->key.src_ip, lookup->key.src_port,
				lookup->key.proto);
	if (owner == NULL) {
		pass_through(worker, lookup->m, RPLB_FRONTEND);
		return;
	}
	if (dropped_bad_checksum_in(worker, context, lookup->m))
		return;
	if (owner->service_index == RPLB_SERVICE_SHARED) {
		worker->counters.events[RPLB_EV_REPLY_UNMATCHED]++;
		send_after_burst(context, lookup->m, lookup->m->pkt_len);
		return;
	}
	service = &tables->services[owner->service_index];
	lb_worker->service_counters[service->service_id].packets++;
	lb_worker->service_counters[service->service_id].bytes += lookup->m->pkt_len;
	worker->counters.events[RPLB_EV_TO_CLIENT_STATELESS]++;
	send_to_client(context, lookup, lookup->key.src_ip, lookup->key.src_port, service->vip,
		       service->port);
}

#endif /* RPLB_LB_RESOLVE_H */
