/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_fragments.c: pass 1's slow path for IPv4 fragments, and lb_ipv6.c's
 * for IPv6 fragments, translated one by one, without reassembly
 * (docs/fastpath.md, 3.1, says why; 3.2 for IPv6):
 *
 *   from the clients: fragments to a VIP (IPv4: TCP, UDP, ICMP; IPv6: any)
 *   from the backends: fragments from a backend address (IPv4: TCP, UDP;
 *   IPv6: any)
 *   (other fragments are passed through as before, never held)
 *
 * Both families share the worker's fragment table (keyed by family) and
 * everything below but their first fragment: IPv4's is resolved here,
 * IPv6's by lb_ipv6.c's path for a whole packet (rplb_lb_first_fragment6),
 * which notes the datagram's verdict.  A later IPv6 fragment has no
 * header checksum to update: its address is replaced, nothing else.
 *
 *   first fragment (offset 0: it carries the ports)
 *       looked up in the flow table like a whole packet, by the same code
 *       (new_or_changed_flow, resolve_from_backend: it may create, move
 *       or supersede a flow), rewritten (address, port, L4 checksum: the
 *       checksum covers the whole datagram, and the port lies in this
 *       fragment only), and its verdict noted for the datagram: which
 *       address becomes which, or pass, answer (ICMP echo), drop
 *   a later fragment whose datagram has its verdict
 *       the same: its address rewritten (IPv4 checksum by the same
 *       change; it has no L4 header), or passed, answered, dropped
 *   a later fragment before its datagram's first
 *       held (bounded), and given the verdict when the first comes
 *
 * Nothing else changes: the IP ID, DF, the offsets and the fragments'
 * sizes leave as they came, so the receiver reassembles what the sender
 * cut.  The first fragment's L4 checksum is always updated in software
 * (a NIC's offload would sum the fragment alone).
 *
 * A fragment is counted as its datagram's packets are (to_backend,
 * to_client_by_flow, passed_through, icmp_echo_replied ...); a translated
 * one also in its backend's (or service's) packets and bytes.  The drops
 * of fragment_table.h have their own reasons.
 *
 * Called from pass 1 (lb_classify.h), housekeeping and stop through
 * lb_slow_paths.h.  It runs the resolve pass's own code on a first
 * fragment (lb_resolve.h, static and inlined here too).
 */
#include <stdint.h>

#include <rte_cycles.h>

#include "fragment_table.h"
#include "lb_burst.h"
#include "packet6.h"
#include "lb_resolve.h"
#include "lb_slow_paths.h"

/* Add up what the fragment state freed or forgot: frames as frame_reason,
 * datagrams as datagram_event. */
static inline void
count_fragment_losses(struct rplb_worker *worker, const struct rplb_fragment_losses *losses,
		      enum rplb_drop_reason frame_reason, enum rplb_event datagram_event)
{
	worker->counters.drops[frame_reason] += losses->frames;
	worker->counters.events[datagram_event] += losses->datagrams;
}

/* Count a translated fragment in its flow's backend or its service. */
static inline void
count_translated_fragment(struct rplb_lb_worker *lb_worker, uint32_t count, uint32_t bytes)
{
	if (count == RPLB_FRAGMENT_COUNT_NONE)
		return;
	if (count & RPLB_FRAGMENT_COUNT_SERVICE) {
		struct rplb_service_counters *service =
			&lb_worker->service_counters[count & ~RPLB_FRAGMENT_COUNT_SERVICE];

		service->packets++;
		service->bytes += bytes;
	} else {
		lb_worker->backend_counters[count].packets++;
		lb_worker->backend_counters[count].bytes += bytes;
	}
}

/* A fragment after its datagram's first (held, or arriving later), given
 * the datagram's verdict.  IPv6 has no header checksum, and no L4 header
 * here: an address replaced is all a translation changes. */
static void
apply_fragment_verdict(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		       const struct rplb_fragment_datagram *datagram, struct rte_mbuf *m)
{
	void *l3 = rte_pktmbuf_mtod_offset(m, void *, sizeof(struct rte_ether_hdr));
	struct rte_ipv4_hdr *ip = l3;
	struct rte_ipv6_hdr *ip6 = l3;
	const int from_client = datagram->key.side == RPLB_FRONTEND;
	unsigned int out_side = from_client ? RPLB_BACKEND : RPLB_FRONTEND;

	switch (datagram->verdict) {
	case RPLB_FRAGMENT_TRANSLATE:
		if (datagram->key.family == RPLB_FRAGMENT_IPV6)
			memcpy(from_client ? ip6->dst_addr : ip6->src_addr, datagram->new_addr6, 16);
		else
			rplb_rewrite_ip_addr(ip, from_client ? (void *)&ip->dst_addr :
							       (void *)&ip->src_addr,
					     datagram->new_addr, datagram->ip_delta);
		count_translated_fragment(lb_worker, datagram->count, m->pkt_len);
		worker->counters.events[datagram->reason]++;
		rplb_worker_send(worker, out_side, m);
		return;
	case RPLB_FRAGMENT_PASS:
		worker->counters.events[datagram->reason]++;
		rplb_worker_send(worker, out_side, m);
		return;
	case RPLB_FRAGMENT_ECHO:
		if (datagram->key.family == RPLB_FRAGMENT_IPV6)
			rplb_reflect_ipv6(m, ip6);
		else
			rplb_reflect_ipv4(m, ip);
		worker->counters.events[datagram->reason]++;
		rplb_worker_send(worker, datagram->key.side, m);
		return;
	default:
		rplb_worker_drop(worker, (enum rplb_drop_reason)datagram->reason, m);
		return;
	}
}

/* The datagram is dropped from now on (reason): m (unless NULL: dropped
 * and counted already), its held fragments, and every fragment of it that
 * comes until it times out. */
static void
drop_datagram(struct rplb_worker *worker, struct rplb_fragment_table *fragments,
	      uint32_t index, enum rplb_drop_reason reason, struct rte_mbuf *m)
{
	struct rplb_fragment_datagram *datagram = &fragments->datagrams[index];
	struct rte_mbuf *held;

	datagram->verdict = RPLB_FRAGMENT_DROP;
	datagram->reason = (uint8_t)reason;
	while ((held = rplb_fragment_next_held(fragments, index)) != NULL)
		rplb_worker_drop(worker, reason, held);
	if (m != NULL)
		rplb_worker_drop(worker, reason, m);
}

/* The same as set_verdict, for a datagram whose fragments get an address
 * rewritten: old_addr becomes new_addr. */
static inline void
set_translation(struct rplb_fragment_datagram *datagram, enum rplb_event event,
		uint32_t old_addr, uint32_t new_addr, uint32_t count)
{
	rplb_fragment_set_verdict(datagram, RPLB_FRAGMENT_TRANSLATE, (uint8_t)event);
	datagram->new_addr = new_addr;
	datagram->ip_delta = rplb_cksum_fold(rplb_cksum_delta32(old_addr, new_addr));
	datagram->count = count;
}

/* A lookup record for a first fragment, as classify would write it for a
 * whole packet: the resolve code works on one. */
static void
fragment_lookup_record(struct lookup_record *lookup, struct rte_mbuf *m,
		       const struct rplb_parsed *parsed, uint8_t direction)
{
	const struct rplb_l4_ports *ports = parsed->l4;

	memset(lookup, 0, sizeof(*lookup));
	lookup->m = m;
	lookup->parsed = *parsed;
	lookup->key = (struct rplb_flow_key){
		.src_ip = parsed->ip->src_addr, .dst_ip = parsed->ip->dst_addr,
		.src_port = ports->src_port, .dst_port = ports->dst_port,
		.proto = parsed->proto, .direction = direction,
	};
	lookup->hash = rplb_flow_key_hash(&lookup->key);
}

/* A resolve context for one packet, rewriting in software (a NIC's
 * checksum offload would sum the first fragment alone, not its
 * datagram). */
static void
fragment_resolve_context(struct resolve_context *context, struct rplb_lb_worker *lb_worker,
			 const struct rplb_lb_tables *tables, struct rte_mbuf **out)
{
	*context = (struct resolve_context){
		.tx_offload = 0, .rx_checked = 0,
		.now = lb_worker->clock_now,
		.backends = tables->backends, .backend_counters = lb_worker->backend_counters,
		.next_out = out, .bytes = 0,
	};
}

/* The first fragment of a datagram from the clients to a VIP. */
static void
first_fragment_from_client(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
			   const struct rplb_lb_tables *tables, uint32_t index,
			   struct rte_mbuf *m, const struct rplb_fragment *fragment)
{
	struct rplb_fragment_table *fragments = lb_worker->fragments;
	struct rplb_fragment_datagram *datagram = &fragments->datagrams[index];
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *,
							  sizeof(struct rte_ether_hdr));
	struct rplb_flow_table *flow_table = lb_worker->flows;
	const struct rplb_lb_service *service;
	const struct rplb_lb_backend *backend;
	struct changed_filter ignored_changes;
	struct resolve_context context;
	struct lookup_record lookup;
	struct rplb_parsed parsed;
	struct rte_mbuf *out[1];
	const struct rplb_flow *flow;
	uint32_t vip = ip->dst_addr, flow_index;

	switch (rplb_parse_first_fragment(m, ip, fragment, &parsed)) {
	case RPLB_PARSE_TCP_UDP:
		break;
	case RPLB_PARSE_ICMP: {
		struct rte_icmp_hdr *icmp = parsed.l4;

		if (icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0) {
			/* As such a message whole: not for the load balancer.  (An
			 * error is at most 576 bytes, RFC 1812: one in fragments is
			 * not translated.) */
			rplb_fragment_set_verdict(datagram, RPLB_FRAGMENT_PASS, RPLB_EV_PASSED_THROUGH);
			pass_through(worker, m, RPLB_BACKEND);
			return;
		}
		if (rplb_rx_cksum_bad(m)) {
			drop_datagram(worker, fragments, index, RPLB_DROP_BAD_CHECKSUM, m);
			return;
		}
		/* A ping of a VIP too large for one frame: answered fragment by
		 * fragment (the reply's checksum changes by its type alone). */
		rplb_icmp_echo_to_reply(m, &parsed);
		rplb_fragment_set_verdict(datagram, RPLB_FRAGMENT_ECHO, RPLB_EV_ICMP_ECHO_REPLIED);
		worker->counters.events[RPLB_EV_ICMP_ECHO_REPLIED]++;
		rplb_worker_send(worker, RPLB_FRONTEND, m);
		return;
	}
	default:
		drop_datagram(worker, fragments, index, RPLB_DROP_MALFORMED, m);
		return;
	}
	service = rplb_find_service(tables, ip->dst_addr,
				    ((struct rplb_l4_ports *)parsed.l4)->dst_port, parsed.proto);
	if (service == NULL) {
		/* Another port of the VIP: not for the load balancer. */
		rplb_fragment_set_verdict(datagram, RPLB_FRAGMENT_PASS, RPLB_EV_PASSED_THROUGH);
		pass_through(worker, m, RPLB_BACKEND);
		return;
	}
	if (rplb_rx_cksum_bad(m)) {
		drop_datagram(worker, fragments, index, RPLB_DROP_BAD_CHECKSUM, m);
		return;
	}
	fragment_lookup_record(&lookup, m, &parsed, RPLB_DIR_CLIENT);
	fragment_resolve_context(&context, lb_worker, tables, out);
	memset(&ignored_changes, 0, sizeof(ignored_changes));
	/* Not a prepared miss (first_flow is not the sentinel): it finds its
	 * service and backend itself.  The flow table's bulk lookup of this
	 * burst runs after the classify pass, so a flow created, moved or
	 * superseded here is seen by every packet of the burst. */
	new_or_changed_flow(worker, lb_worker, &context, flow_table, tables, &lookup,
			    &ignored_changes,
			    rplb_flow_lookup(flow_table, &lookup.key, lookup.hash));
	if (context.next_out == out) {
		/* Dropped: the service has no backend left. */
		drop_datagram(worker, fragments, index, RPLB_DROP_NO_BACKEND, NULL);
		return;
	}
	/* To its backend, rewritten: the fragments after it follow.  Counted
	 * where the first was (none when the flow table was full). */
	flow_index = rplb_flow_lookup(flow_table, &lookup.key, lookup.hash);
	flow = flow_index != RPLB_NO_FLOW ? &flow_table->flows[flow_index] : NULL;
	backend = flow != NULL ? configured_backend(tables->backends, flow) : NULL;
	set_translation(datagram, RPLB_EV_TO_BACKEND, vip, ip->dst_addr,
			backend != NULL ? rplb_backend_slot(backend->backend_id) :
					  RPLB_FRAGMENT_COUNT_NONE);
	worker->counters.events[RPLB_EV_TO_BACKEND]++;
	rplb_worker_send(worker, RPLB_BACKEND, m);
}

/* The first fragment of a datagram from a backend address. */
static void
first_fragment_from_backend(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
			    const struct rplb_lb_tables *tables, uint32_t index,
			    struct rte_mbuf *m, const struct rplb_fragment *fragment)
{
	struct rplb_fragment_table *fragments = lb_worker->fragments;
	struct rplb_fragment_datagram *datagram = &fragments->datagrams[index];
	struct rte_ipv4_hdr *ip = rte_pktmbuf_mtod_offset(m, struct rte_ipv4_hdr *,
							  sizeof(struct rte_ether_hdr));
	struct rplb_flow_table *flow_table = lb_worker->flows;
	struct resolve_context context;
	struct lookup_record lookup;
	struct rplb_parsed parsed;
	struct rte_mbuf *out[1];
	uint32_t backend_ip = ip->src_addr, flow_index, count;

	if (rplb_parse_first_fragment(m, ip, fragment, &parsed) != RPLB_PARSE_TCP_UDP) {
		/* As from the backend side whole: passed through. */
		rplb_fragment_set_verdict(datagram, RPLB_FRAGMENT_PASS, RPLB_EV_PASSED_THROUGH);
		pass_through(worker, m, RPLB_FRONTEND);
		return;
	}
	if (rplb_rx_cksum_bad(m)) {
		drop_datagram(worker, fragments, index, RPLB_DROP_BAD_CHECKSUM, m);
		return;
	}
	fragment_lookup_record(&lookup, m, &parsed, RPLB_DIR_BACKEND);
	fragment_resolve_context(&context, lb_worker, tables, out);
	flow_index = rplb_flow_lookup(flow_table, &lookup.key, lookup.hash);
	resolve_from_backend(worker, lb_worker, &context, tables, &lookup, flow_index);
	if (context.next_out == out) {
		/* From no backend of a service: passed through already. */
		rplb_fragment_set_verdict(datagram, RPLB_FRAGMENT_PASS, RPLB_EV_PASSED_THROUGH);
		return;
	}
	if (ip->src_addr == backend_ip) {
		/* A backend shared by services, without a flow: unchanged. */
		rplb_fragment_set_verdict(datagram, RPLB_FRAGMENT_PASS, RPLB_EV_REPLY_UNMATCHED);
	} else if (flow_index != RPLB_NO_FLOW) {
		count = rplb_backend_slot(flow_table->flows[flow_index].backend_id);
		set_translation(datagram, RPLB_EV_TO_CLIENT_FLOW, backend_ip, ip->src_addr, count);
	} else {
		const struct rplb_owner_slot *owner = rplb_find_owner(
			tables, lookup.key.src_ip, lookup.key.src_port, lookup.key.proto);

		count = owner != NULL && owner->service_index != RPLB_SERVICE_SHARED ?
			RPLB_FRAGMENT_COUNT_SERVICE |
			tables->services[owner->service_index].service_id :
			RPLB_FRAGMENT_COUNT_NONE;
		set_translation(datagram, RPLB_EV_TO_CLIENT_STATELESS, backend_ip, ip->src_addr,
				count);
	}
	rplb_worker_send(worker, RPLB_FRONTEND, m);
}

/* The datagram of a fragment that arrives, found or created (key), with
 * the fragment's bytes added: its index, or RPLB_NO_DATAGRAM when the
 * fragment was dropped (its datagram's verdict, a duplicate, an overlap,
 * no room). */
static uint32_t
fragment_arrives(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker,
		 const struct rplb_fragment_key *key, const struct rplb_fragment *fragment,
		 struct rte_mbuf *m)
{
	struct rplb_fragment_table *fragments = lb_worker->fragments;
	struct rplb_fragment_losses losses = {0, 0};
	struct rplb_fragment_datagram *datagram;
	uint32_t index;

	index = rplb_fragment_find(fragments, key);
	if (index == RPLB_NO_DATAGRAM) {
		index = rplb_fragment_create(fragments, key, lb_worker->clock_now, &losses);
		count_fragment_losses(worker, &losses, RPLB_DROP_FRAGMENT_NO_ROOM,
				      RPLB_EV_FRAGMENT_DATAGRAMS_EVICTED);
	}
	datagram = &fragments->datagrams[index];
	if (datagram->verdict == RPLB_FRAGMENT_DROP) {
		rplb_worker_drop(worker, (enum rplb_drop_reason)datagram->reason, m);
		return RPLB_NO_DATAGRAM;
	}
	switch (rplb_fragment_add(datagram, fragment->offset, fragment->end, fragment->more)) {
	case RPLB_FRAGMENT_DUPLICATE:
		rplb_worker_drop(worker, RPLB_DROP_FRAGMENT_DUPLICATE, m);
		return RPLB_NO_DATAGRAM;
	case RPLB_FRAGMENT_OVERLAP:
		drop_datagram(worker, fragments, index, RPLB_DROP_FRAGMENT_OVERLAP, m);
		return RPLB_NO_DATAGRAM;
	case RPLB_FRAGMENT_SCATTERED:
		drop_datagram(worker, fragments, index, RPLB_DROP_FRAGMENT_NO_ROOM, m);
		return RPLB_NO_DATAGRAM;
	default:
		return index;
	}
}

/* After a fragment's bytes were added to its datagram: the first fragment
 * (later NULL, sent already) releases those held, with the verdict it
 * gave; a later one gets the verdict, or waits for it.  A datagram whole
 * is forgotten: nothing more of it can come but duplicates. */
static void
fragment_settles(struct rplb_worker *worker, struct rplb_lb_worker *lb_worker, uint32_t index,
		 struct rte_mbuf *later)
{
	struct rplb_fragment_table *fragments = lb_worker->fragments;
	struct rplb_fragment_datagram *datagram = &fragments->datagrams[index];
	struct rplb_fragment_losses losses = {0, 0};
	struct rte_mbuf *held;

	if (later == NULL) {
		/* Those that came before the first, in the order they came. */
		while ((held = rplb_fragment_next_held(fragments, index)) != NULL)
			apply_fragment_verdict(worker, lb_worker, datagram, held);
	} else if (datagram->verdict == RPLB_FRAGMENT_PENDING) {
		if (rplb_fragment_hold(fragments, index, later) < 0) {
			/* At the bound: it cannot wait, and its datagram cannot
			 * complete without it. */
			drop_datagram(worker, fragments, index, RPLB_DROP_FRAGMENT_NO_ROOM, later);
			return;
		}
		worker->counters.events[RPLB_EV_FRAGMENTS_HELD]++;
		return;
	} else {
		apply_fragment_verdict(worker, lb_worker, datagram, later);
	}
	if (datagram->verdict != RPLB_FRAGMENT_DROP && rplb_fragment_complete(datagram))
		rplb_fragment_remove(fragments, index, &losses);
}

void
rplb_lb_fragment(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		 struct rte_mbuf *m, struct rte_ipv4_hdr *ip, unsigned int in_side)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rplb_fragment_key key;
	struct rplb_fragment fragment;
	uint32_t index;

	if (rplb_parse_fragment(ip, &fragment) < 0) {
		/* No datagram can hold it. */
		if (in_side == RPLB_FRONTEND)
			rplb_worker_drop(worker, RPLB_DROP_MALFORMED, m);
		else
			pass_through(worker, m, RPLB_FRONTEND);
		return;
	}
	rplb_fragment_key4(&key, ip->src_addr, ip->dst_addr, ip->packet_id, ip->next_proto_id,
			   (uint8_t)in_side);
	index = fragment_arrives(worker, lb_worker, &key, &fragment, m);
	if (index == RPLB_NO_DATAGRAM)
		return;
	if (fragment.offset != 0) {
		fragment_settles(worker, lb_worker, index, m);
		return;
	}
	if (in_side == RPLB_FRONTEND)
		first_fragment_from_client(worker, lb_worker, tables, index, m, &fragment);
	else
		first_fragment_from_backend(worker, lb_worker, tables, index, m, &fragment);
	fragment_settles(worker, lb_worker, index, NULL);
}

void
rplb_lb_fragment6(struct rplb_worker *worker, const struct rplb_lb_tables *tables,
		  struct rte_mbuf *m, const struct rplb_parsed6 *parsed, unsigned int in_side)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rplb_fragment_key key;
	struct rplb_fragment fragment;
	uint32_t index;

	if (rplb_parse_fragment6(parsed, &fragment) < 0) {
		/* No datagram can hold it. */
		if (in_side == RPLB_FRONTEND)
			rplb_worker_drop(worker, RPLB_DROP_IPV6_FRAGMENT, m);
		else
			pass_through(worker, m, RPLB_FRONTEND);
		return;
	}
	rplb_fragment_key6(&key, parsed->ip->src_addr, parsed->ip->dst_addr, parsed->fragment->id,
			   parsed->fragment->next_header, (uint8_t)in_side);
	index = fragment_arrives(worker, lb_worker, &key, &fragment, m);
	if (index == RPLB_NO_DATAGRAM)
		return;
	if (fragment.offset != 0) {
		fragment_settles(worker, lb_worker, index, m);
		return;
	}
	/* Through the path of a whole packet, which gives the datagram its
	 * verdict as it sends, passes or drops this fragment. */
	rplb_lb_first_fragment6(worker, tables, m, parsed, in_side,
				&lb_worker->fragments->datagrams[index]);
	fragment_settles(worker, lb_worker, index, NULL);
}

/* Timed-out datagrams forgotten per call, busy and idle: each may free
 * held mbufs. */
#define EXPIRY_BUDGET_BUSY 16
#define EXPIRY_BUDGET_IDLE 1024

void
rplb_lb_expire_fragments(struct rplb_worker *worker, uint32_t now, int idle)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rplb_fragment_losses losses = {0, 0};

	rplb_fragment_expire(lb_worker->fragments, now,
			     idle ? EXPIRY_BUDGET_IDLE : EXPIRY_BUDGET_BUSY, &losses);
	count_fragment_losses(worker, &losses, RPLB_DROP_FRAGMENT_TIMEOUT,
			      RPLB_EV_FRAGMENT_DATAGRAMS_TIMED_OUT);
}

void
rplb_lb_flush_fragments(struct rplb_worker *worker)
{
	struct rplb_lb_worker *lb_worker = worker->engine_local;
	struct rplb_fragment_losses losses = {0, 0};

	rplb_fragment_flush(lb_worker->fragments, &losses);
	count_fragment_losses(worker, &losses, RPLB_DROP_FRAGMENT_TIMEOUT,
			      RPLB_EV_FRAGMENT_DATAGRAMS_TIMED_OUT);
}
