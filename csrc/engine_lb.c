/* SPDX-License-Identifier: BSD-3-Clause
 *
 * engine_lb.c: the reverse-proxy load-balancing engine.
 *
 * Per burst, in passes (so the flow-table lookup is one bulk call):
 *   1. classify every packet: pass through, drop, answer (ICMP echo to a
 *      VIP), or look up (every well-formed TCP/UDP frame);
 *   2. the first pass of a bulk lookup of all flow keys of the burst (one
 *      bucket each); keys with no match there are looked up in full, and
 *      the misses, only they, look up their service (client side) and
 *      pick a backend;
 *   3. resolve each looked-up packet (confirming its match against the
 *      record): known flow, new flow (Maglev), stateless reply, or not for
 *      a service after all (pass through); rewrite and send.
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
#include "packet.h"
#include "worker.h"

#define PREFETCH_AHEAD 4
/* Records aged per loop iteration under load: at 300k iterations/s (10
 * Mpps in full bursts) a million-flow table is swept every 0.4 s, far
 * finer than any timeout. */
#define AGING_BUDGET_BUSY 8
#define AGING_BUDGET_IDLE 512
#define SAMPLE_SCAN_LIMIT 65536u    /* records looked at per flow-sample request */

struct lookup {
	struct rte_mbuf *m;
	struct rplb_parsed parsed;
	struct rplb_flow_key key __rte_aligned(16);
	uint32_t hash;              /* of key */
	const struct rplb_flow_bucket *bucket;  /* the key's primary bucket */
	uint32_t first_ref;         /* rplb_flow_match_first's answer */
	/* Its record (see rplb_ft_record); rplb_ft_no_match() where no
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
 * slots), not behind the pointers it was reached through: every store the
 * loop makes to a packet or a counter might alias those, and the compiler
 * would reload them per packet.  Its fields must stay scalars (the array
 * lives outside), and the functions given it inlined, or it would live in
 * memory.
 *   - the arrays it indexes: the tables' backends, this lcore's backend
 *     counters;
 *   - what it sends out the other side: collected in an array, handed to
 *     the worker's tx buffer once a burst (rplb_worker_send_bulk). */
struct resolve_ctx {
	/* Constants in each copy of the loop (resolve_burst): no per-packet
	 * test of the ports' checksum offloads.  tx_offload: the out port
	 * computes checksums; rx_checked: the in port flags bad ones. */
	int tx_offload;
	int rx_checked;
	uint32_t now;               /* rplb_flow_clock() */
	const struct rplb_lb_backend *backends;
	struct rplb_backend_counters *backend_counters;
	struct rte_mbuf **next_out; /* the next free entry of an array of RPLB_BURST */
	uint64_t bytes;
};

static __rte_always_inline void
send_after_burst(struct resolve_ctx *rc, struct rte_mbuf *m, uint32_t bytes)
{
	*rc->next_out++ = m;
	rc->bytes += bytes;
}

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
 * without ACK). */
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

/* A packet whose flags may change its flow's state (state_may_change). */
static void
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
static inline int
reopens_tuple(const struct rplb_flow *flow, uint8_t tcp_flags)
{
	return flow->state == RPLB_FLOW_TCP_CLOSING &&
	       (tcp_flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) == RTE_TCP_SYN_FLAG;
}

/* Add to a counter only this lcore writes (the control plane reads it).
 * On x86 one read-modify-write add: left to itself the compiler pairs
 * adjacent counters into vector loads and stores, five instructions for
 * what two adds do. */
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
static inline void
count_packet(struct resolve_ctx *rc, uint32_t slot, uint32_t bytes)
{
	struct rplb_backend_counters *bc = &rc->backend_counters[slot];

	counter_add(&bc->packets, 1);
	counter_add(&bc->bytes, bytes);
}

/* A flow moved or replaced by the resolve loop ends (a rare path): out of
 * line, so its test does not take a register of the loop. */
static __rte_noinline void
count_flow_end(struct rplb_lb_worker *lw, const struct rplb_lb_backend *backends,
	       uint32_t backend_id)
{
	rplb_lb_count_flow_end(lw, backends, backend_id);
}

/* A new flow, counted under its backend only (struct
 * rplb_service_counters); its end: count_flow_end. */
static inline void
count_flow_start(struct resolve_ctx *rc, uint32_t backend_id)
{
	struct rplb_backend_counters *bc =
		&rc->backend_counters[rplb_backend_slot(backend_id)];

	bc->new_flows++;
	bc->active_flows++;
}

/* Store 8 bytes as one plain store.  GCC's SLP vectorizer pairs two
 * adjacent 8-byte stores of register values into one 16-byte store built
 * with movq and pinsrq: three instructions for two. */
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

/* A TCP/UDP frame (either direction) goes on to the flow lookup.  Returns
 * 1, with *lk (its key's hash included) filled in.  The classify functions work
 * on locals and write the lookup record only here, once: stores through
 * the record (and the packet's byte fields) would otherwise make the
 * compiler reload everything after each one. */
static __rte_always_inline int
admit_for_lookup(struct rte_mbuf *m, struct lookup *lk, const struct rplb_parsed *parsed,
		 uint8_t direction)
{
	const struct rte_ipv4_hdr *ip = parsed->ip;

	store_word(&lk->m, (uintptr_t)m);
	store_word(&lk->parsed.ip, (uintptr_t)parsed->ip);
	lk->parsed.l4 = parsed->l4;
	lk->parsed.tcp_flags = parsed->tcp_flags;
#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
	{
		/* The key in two registers, hashed from them: addresses and ports
		 * are adjacent on the wire in the key's order, and proto,
		 * direction, zero fill its last 4 bytes. */
		uint64_t words[2];
		uint32_t ports;

		memcpy(&words[0], &ip->src_addr, sizeof(words[0]));
		memcpy(&ports, parsed->l4, sizeof(ports));
		words[1] = rplb_flow_key_word1(ports, parsed->proto, direction);
		store_word(&lk->key, words[0]);
		store_word((uint8_t *)&lk->key + sizeof(words[0]), words[1]);
		lk->hash = rplb_flow_words_hash(words[0], words[1]);
	}
#else
	memcpy(&lk->key.src_ip, &ip->src_addr, 2 * sizeof(uint32_t));
	memcpy(&lk->key.src_port, parsed->l4, 2 * sizeof(uint16_t));
	lk->key.proto = parsed->proto;
	lk->key.direction = direction;
	lk->key.zero = 0;
	lk->hash = rplb_flow_key_hash(&lk->key);
#endif
	return 1;
}

/* Not for the load balancer: out the other side unchanged.  Returns 0
 * (no lookup), for the classify functions. */
static inline int
pass_through(struct rplb_worker *w, struct rte_mbuf *m, unsigned int out_side)
{
	w->counters.events[RPLB_EV_PASSED_THROUGH]++;
	rplb_worker_send(w, out_side, m);
	return 0;
}

/* Drops (and counts) a frame whose checksum the NIC found bad; 1 if so.
 * Only frames that rplb would rewrite or answer are checked. */
static inline int
dropped_bad_checksum(struct rplb_worker *w, struct rte_mbuf *m)
{
	if (likely(!rplb_rx_cksum_bad(m)))
		return 0;
	rplb_worker_drop(w, RPLB_DROP_BAD_CHECKSUM, m);
	return 1;
}

/* dropped_bad_checksum in a resolve loop: only where the in port checks
 * checksums (without RX offload the flags are never set). */
static __rte_always_inline int
dropped_bad_checksum_in(struct rplb_worker *w, const struct resolve_ctx *rc, struct rte_mbuf *m)
{
	return rc->rx_checked && dropped_bad_checksum(w, m);
}

/* A frame from the clients for no service (TCP/UDP to no vip:proto:port
 * of one, or not TCP/UDP): another port of a VIP passes; so does anything
 * else, unless strict keeps clients from reaching the backends directly. */
static inline void
pass_not_for_service(struct rplb_worker *w, const struct rplb_lb_tables *t,
		     struct rte_mbuf *m, uint32_t dst_addr)
{
	if (unlikely(t->strict) && !rplb_is_vip(t, dst_addr) &&
	    rplb_is_backend_ip(t, dst_addr)) {
		rplb_worker_drop(w, RPLB_DROP_STRICT, m);
		return;
	}
	pass_through(w, m, RPLB_BACKEND);
}

/* A frame from the clients to a VIP that is not TCP/UDP. */
static __rte_noinline int
classify_vip_other(struct rplb_worker *w, struct rte_mbuf *m, const struct rte_ipv4_hdr *ip,
		   struct rplb_parsed parsed, enum rplb_parse verdict)
{
	switch (verdict) {
	case RPLB_PARSE_IPV4_BAD:
	case RPLB_PARSE_L4_BAD:
		rplb_worker_drop(w, RPLB_DROP_MALFORMED, m);
		return 0;
	case RPLB_PARSE_FRAGMENT:
		if (ip->next_proto_id == IPPROTO_TCP || ip->next_proto_id == IPPROTO_UDP ||
		    ip->next_proto_id == IPPROTO_ICMP) {
			rplb_worker_drop(w, RPLB_DROP_FRAGMENT, m);
			return 0;
		}
		break;
	case RPLB_PARSE_ICMP: {
		struct rte_icmp_hdr *icmp = parsed.l4;

		if (icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST || icmp->icmp_code != 0)
			break;
		if (dropped_bad_checksum(w, m))
			return 0;
		rplb_icmp_echo_to_reply(m, &parsed);
		w->counters.events[RPLB_EV_ICMP_ECHO_REPLIED]++;
		rplb_worker_send(w, RPLB_FRONTEND, m);
		return 0;
	}
	default:
		break;
	}
	return pass_through(w, m, RPLB_BACKEND);
}

/* Pass 1 for a frame from the clients.  Returns 1 when it needs a lookup
 * (TCP/UDP); only other frames ask whether they are for a VIP. */
static __rte_always_inline int
classify_from_client(struct rplb_worker *w, const struct rplb_lb_tables *t,
		     struct rte_mbuf *m, struct lookup *lk)
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
		return admit_for_lookup(m, lk, &parsed, RPLB_DIR_CLIENT);
	if (rplb_is_vip(t, ip->dst_addr))
		return classify_vip_other(w, m, ip, parsed, verdict);
	pass_not_for_service(w, t, m, ip->dst_addr);
	return 0;

pass:
	return pass_through(w, m, RPLB_BACKEND);
}

/* Pass 1 for a frame from the backends. */
static __rte_always_inline int
classify_from_backend(struct rplb_worker *w, struct rte_mbuf *m, struct lookup *lk)
{
	struct rplb_parsed parsed;
	struct rte_ipv4_hdr *ip;

	if (likely(rplb_parse_common(m, &parsed)))
		return admit_for_lookup(m, lk, &parsed, RPLB_DIR_BACKEND);
	ip = rplb_ipv4_header(m);
	if (ip != NULL && rplb_parse_ipv4(m, ip, &parsed) == RPLB_PARSE_TCP_UDP)
		return admit_for_lookup(m, lk, &parsed, RPLB_DIR_BACKEND);
	return pass_through(w, m, RPLB_FRONTEND);
}

/* Pass 1 for one packet from in_side; returns where the next lookup
 * record goes (past lk when this packet needs a lookup, with its bucket
 * prefetched). */
static __rte_always_inline struct lookup *
classify(struct rplb_worker *w, const struct rplb_lb_tables *t, const struct rplb_flow_table *ft,
	 const unsigned int in_side, struct rte_mbuf *m, struct lookup *lk)
{
	int needs_lookup;

	if (in_side == RPLB_FRONTEND)
		needs_lookup = classify_from_client(w, t, m, lk);
	else
		needs_lookup = classify_from_backend(w, m, lk);
	if (!needs_lookup)
		return lk;
	lk->bucket = rplb_flow_prefetch(ft, lk->hash);
	return lk + 1;
}

/* The backend's service is the packet's: a flow's backend is configured
 * under the flow's service (configured_backend), and a new flow's backend
 * comes from its service's Maglev table. */
static __rte_always_inline void
send_to_backend(struct resolve_ctx *rc, struct lookup *lk,
		const struct rplb_lb_backend *backend, uint32_t slot)
{
	struct rte_mbuf *m = lk->m;
	struct rplb_parsed parsed = lk->parsed;
	struct rplb_l4_ports *ports = parsed.l4;
	uint32_t bytes = m->pkt_len;

	rplb_rewrite_addr_port(m, &parsed, &parsed.ip->dst_addr, &ports->dst_port,
			       backend->ip, backend->port, backend->to_backend, rc->tx_offload);
	count_packet(rc, slot, bytes);
	send_after_burst(rc, m, bytes);
}

/* A packet of a known flow, to the flow's configured backend, unless the
 * NIC found its checksum bad; state_changes: its flags may change the
 * flow's state (state_may_change), a constant at each call. */
static __rte_always_inline void
to_known_backend(struct rplb_worker *w, struct resolve_ctx *rc, struct lookup *lk,
		 struct rplb_flow *flow, const struct rplb_lb_backend *backend, uint32_t slot,
		 const int state_changes)
{
	if (dropped_bad_checksum_in(w, rc, lk->m))
		return;
	flow->last_seen = rc->now;
	if (state_changes)
		change_state(flow, lk->parsed.tcp_flags, 1);
	send_to_backend(rc, lk, backend, slot);
}

/* The packet's source is (old_ip, old_port), a backend's: it leaves as
 * (vip, port). */
static __rte_always_inline void
send_to_client(struct resolve_ctx *rc, struct lookup *lk, uint32_t old_ip, uint16_t old_port,
	       uint32_t vip, uint16_t port)
{
	struct rplb_l4_ports *ports = lk->parsed.l4;

	rplb_rewrite_addr_port(lk->m, &lk->parsed, &lk->parsed.ip->src_addr, &ports->src_port,
			       vip, port, rplb_cksum_deltas(old_ip, old_port, vip, port),
			       rc->tx_offload);
	send_after_burst(rc, lk->m, lk->m->pkt_len);
}

/* The client-key hashes of the flows this burst created, moved or removed,
 * as a 256-bit filter of their top bits: a packet whose bit is clear has
 * an up-to-date bulk lookup answer. */
struct changed {
	uint64_t any;
	uint64_t bits[4];
};

static inline int
maybe_changed(const struct changed *c, uint32_t hash)
{
	return c->any && ((c->bits[hash >> 30] >> ((hash >> 24) & 63)) & 1);
}

static inline void
mark_changed(struct changed *c, uint32_t hash)
{
	c->any = 1;
	c->bits[hash >> 30] |= 1ull << ((hash >> 24) & 63);
}

/* The flow's backend if it is still configured under the flow's service
 * (weight 0 included), else NULL.  Backend ids carry a generation, so a
 * stale id never names the backend that took over its slot; and a backend
 * id is never reused for another service's backend (rplb.h), so a backend
 * configured under the flow's service makes that service the one at the
 * flow's vip:proto:port.  Port, service id and backend id lie in the same
 * order in both records: one 8-byte compare. */
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

/* The flow's backend, if it is still configured; otherwise the flow moves
 * to the current Maglev choice.  NULL when the packet must be dropped
 * because the service has no backend left.  The flow may have been
 * removed (no room for its new key): state FREE. */
static inline const struct rplb_lb_backend *
ensure_backend(struct rplb_worker *w, struct rplb_lb_worker *lw,
	       const struct rplb_lb_tables *t, const struct rplb_lb_service *svc,
	       uint32_t flow_index, uint32_t flow_hash, struct changed *flows_changed)
{
	struct rplb_flow *flow = &lw->flows->flows[flow_index];
	const struct rplb_lb_backend *backend = configured_backend(t->backends, flow);
	uint32_t b;

	if (likely(backend != NULL))
		return backend;

	b = rplb_maglev_pick(svc, flow_hash);
	if (b == RPLB_NO_BACKEND)
		return NULL;
	backend = &t->backends[b];
	count_flow_end(lw, t->backends, flow->backend_id);
	mark_changed(flows_changed, flow_hash);
	if (rplb_flow_move(lw->flows, flow_index, backend->ip, backend->port) < 0) {
		/* No room for its new backend key: forget the flow; the stateless
		 * path still rewrites replies of a backend owned by one service. */
		rplb_flow_remove(lw->flows, flow_index);
		w->counters.events[RPLB_EV_FLOW_TABLE_FULL]++;
		return backend;
	}
	flow->backend_id = backend->backend_id;
	lw->backend_counters[rplb_backend_slot(backend->backend_id)].active_flows++;
	w->counters.events[RPLB_EV_FLOWS_MOVED]++;
	return backend;
}

/* A packet of a known flow whose backend is still configured under its
 * service (so no service lookup is needed): sent, and 1; else 0. */
static __rte_always_inline int
to_known_flow(struct rplb_worker *w, struct resolve_ctx *rc, struct lookup *lk,
	      struct rplb_flow *flow)
{
	const struct rplb_lb_backend *backend = configured_backend(rc->backends, flow);
	const uint32_t slot = rplb_backend_slot(flow->backend_id);   /* backend's, when not NULL */
	const uint8_t tcp_flags = lk->parsed.tcp_flags;

	if (unlikely(backend == NULL))
		return 0;
	/* Nearly every packet: its flags leave the state as it is (a copy of
	 * the path of its own, so nothing is kept for the state change). */
	if (likely(!state_may_change(flow, tcp_flags))) {
		to_known_backend(w, rc, lk, flow, backend, slot, 0);
		return 1;
	}
	if (!reopens_tuple(flow, tcp_flags)) {
		to_known_backend(w, rc, lk, flow, backend, slot, 1);
		return 1;
	}
	return 0;
}

/* A client-side packet of a new flow, of a flow whose backend is gone, of
 * a reopened tuple, or of no service at all; index: its flow, or
 * RPLB_NO_FLOW.  Inlined: out of line, its call and spills cost new flows
 * about 45 instructions each (callgrind, --mode new). */
static __rte_always_inline void
new_or_changed_flow(struct rplb_worker *w, struct rplb_lb_worker *lw, struct resolve_ctx *rc,
		    struct rplb_flow_table *ft, const struct rplb_lb_tables *t, struct lookup *lk,
		    struct changed *flows_changed, uint32_t index)
{
	const uint32_t flow_hash = lk->hash;
	/* No signature matched, and prepare_new_flows found no flow: it found
	 * the service and chose the backend already. */
	const int prepared = lk->first_flow == rplb_ft_no_match(ft);
	const struct rplb_lb_service *svc;
	const struct rplb_lb_backend *backend;
	struct rplb_flow *flow;
	uint32_t b, backend_hash;

	svc = prepared ? lk->service :
		rplb_find_service(t, lk->key.dst_ip, lk->key.dst_port, lk->key.proto);
	if (svc == NULL) {
		pass_not_for_service(w, t, lk->m, lk->key.dst_ip);
		return;
	}
	if (dropped_bad_checksum_in(w, rc, lk->m))
		return;
	if (index != RPLB_NO_FLOW) {
		flow = &ft->flows[index];
		if (likely(flow->service_id == svc->service_id &&
			   !reopens_tuple(flow, lk->parsed.tcp_flags))) {
			backend = ensure_backend(w, lw, t, svc, index, flow_hash, flows_changed);
			if (unlikely(backend == NULL)) {
				rplb_worker_drop(w, RPLB_DROP_NO_BACKEND, lk->m);
				return;
			}
			if (likely(flow->state != RPLB_FLOW_FREE)) {
				flow->last_seen = rc->now;
				track_state(flow, lk->parsed.tcp_flags, 1);
				send_to_backend(rc, lk, backend, rplb_backend_slot(backend->backend_id));
				return;
			}
		} else {
			/* The service was replaced under the same vip:proto:port, or
			 * the client reopens the tuple: start over. */
			count_flow_end(lw, t->backends, flow->backend_id);
			rplb_flow_remove(ft, index);
			mark_changed(flows_changed, flow_hash);
		}
	}

	/* A prepared miss has its backend chosen already. */
	b = prepared ? lk->new_backend : rplb_maglev_pick(svc, flow_hash);
	if (unlikely(b == RPLB_NO_BACKEND)) {
		rplb_worker_drop(w, RPLB_DROP_NO_BACKEND, lk->m);
		return;
	}
	backend = &t->backends[b];
	backend_hash = prepared ? lk->new_backend_hash :
		rplb_flow_backend_key_hash(&lk->key, backend->ip, backend->port);
	index = rplb_flow_insert(ft, &lk->key, flow_hash, backend->ip, backend->port,
				 backend_hash);
	if (unlikely(index == RPLB_NO_FLOW)) {
		w->counters.events[RPLB_EV_FLOW_TABLE_FULL]++;
	} else {
		flow = &ft->flows[index];
		flow->service_id = svc->service_id;
		flow->backend_id = backend->backend_id;
		set_state(flow, initial_state(&lk->key, lk->parsed.tcp_flags));
		flow->last_seen = rc->now;
		count_flow_start(rc, backend->backend_id);
		w->counters.events[RPLB_EV_FLOWS_CREATED]++;
		mark_changed(flows_changed, flow_hash);
	}
	RTE_ASSERT(backend->service_id == svc->service_id);
	send_to_backend(rc, lk, backend, rplb_backend_slot(backend->backend_id));
}

/* A client-side packet: lk->first_ref is its first signature match
 * (rplb_flow_match_first), with its record in lk->first_flow; or, where no
 * signature matched (first_flow the sentinel), prepare_new_flows found no
 * flow and prepared a new one.  may_be_stale: some flow of this burst was created,
 * moved or removed before this packet (flows_changed says which), a
 * constant at each call.  Returns 0 when the packet changed no flow. */
static __rte_always_inline int
resolve_from_client(struct rplb_worker *w, struct rplb_lb_worker *lw, struct resolve_ctx *rc,
		    struct rplb_flow_table *ft, const struct rplb_lb_tables *t, struct lookup *lk,
		    struct changed *flows_changed, const int may_be_stale)
{
	uint32_t index;

	/* The hash and the first match's reference are read where they are
	 * needed: loaded up front, they would take registers on the path of
	 * nearly every packet, which needs neither. */
	if ((!may_be_stale || likely(!maybe_changed(flows_changed, lk->hash))) &&
	    likely(rplb_flow_is_first_match(&lk->key, lk->first_ref, lk->first_flow,
					    RPLB_DIR_CLIENT))) {
		/* Nearly every packet: its flow is the first match, whose record
		 * is at hand. */
		if (likely(to_known_flow(w, rc, lk, lk->first_flow)))
			return 0;
		index = rplb_ft_index(lk->first_ref);
	} else {
		/* An earlier packet of this burst with this key's hash created,
		 * moved or removed its flow, and the bulk lookup's answer for this
		 * one may be stale (a removed record must never be removed twice;
		 * only a packet with the same client key can see a changed
		 * record, and it has the same hash); or the flow is not the first
		 * match.  Look again, unless a prepared miss of an unchanged key. */
		const int prepared = lk->first_flow == rplb_ft_no_match(ft);

		index = prepared && (!may_be_stale || !maybe_changed(flows_changed, lk->hash)) ?
			RPLB_NO_FLOW : rplb_flow_lookup(ft, &lk->key, lk->hash);
		if (index != RPLB_NO_FLOW &&
		    to_known_flow(w, rc, lk, &ft->flows[index]))
			return 0;
	}

	new_or_changed_flow(w, lw, rc, ft, t, lk, flows_changed, index);
	return 1;
}

static __rte_always_inline void
resolve_from_backend(struct rplb_worker *w, struct rplb_lb_worker *lw, struct resolve_ctx *rc,
		     const struct rplb_lb_tables *t, struct lookup *lk, uint32_t index)
{
	const struct rplb_owner_slot *owner;
	const struct rplb_lb_service *svc;

	if (likely(index != RPLB_NO_FLOW)) {
		struct rplb_flow *flow = &lw->flows->flows[index];

		if (dropped_bad_checksum_in(w, rc, lk->m))
			return;
		flow->last_seen = rc->now;
		track_state(flow, lk->parsed.tcp_flags, 0);
		count_packet(rc, rplb_backend_slot(flow->backend_id), lk->m->pkt_len);
		w->counters.events[RPLB_EV_TO_CLIENT_FLOW]++;
		send_to_client(rc, lk, flow->backend_ip, flow->backend_port, flow->vip,
			       flow->vport);
		return;
	}
	/* No flow: a reply from a backend is rewritten statelessly when the
	 * backend serves one service; anything else passes. */
	owner = rplb_find_owner(t, lk->key.src_ip, lk->key.src_port, lk->key.proto);
	if (owner == NULL) {
		pass_through(w, lk->m, RPLB_FRONTEND);
		return;
	}
	if (dropped_bad_checksum_in(w, rc, lk->m))
		return;
	if (owner->service_index == RPLB_SERVICE_SHARED) {
		w->counters.events[RPLB_EV_REPLY_UNMATCHED]++;
		send_after_burst(rc, lk->m, lk->m->pkt_len);
		return;
	}
	svc = &t->services[owner->service_index];
	lw->service_counters[svc->service_id].packets++;
	lw->service_counters[svc->service_id].bytes += lk->m->pkt_len;
	w->counters.events[RPLB_EV_TO_CLIENT_STATELESS]++;
	send_to_client(rc, lk, lk->key.src_ip, lk->key.src_port, svc->vip, svc->port);
}

/* The client-side packets without a signature match in their primary
 * bucket (first_flow the sentinel): look each one up in full (its
 * secondary bucket was prefetched).  Found: its reference and record go in first_ref and
 * first_flow.  Not found (first_flow stays the sentinel): find its service
 * and pick its backend.  A new flow writes a free record and the bucket of
 * its backend-side key, both cold in a large table: start loading them for
 * every miss of the burst before the first insert. */
static inline void
prepare_new_flows(const struct rplb_flow_table *ft, const struct rplb_lb_tables *t,
		  struct lookup *lookups, const struct lookup *end)
{
	uint32_t free_top = ft->free_count;
	struct lookup *lk;

	for (lk = lookups; lk < end; lk++) {
		uint32_t index, b;

		if (likely(lk->first_flow != rplb_ft_no_match(ft)))
			continue;
		index = rplb_flow_lookup_unmatched(ft, &lk->key, lk->hash);
		if (index != RPLB_NO_FLOW) {
			lk->first_ref = rplb_ft_ref(index, RPLB_DIR_CLIENT);
			lk->first_flow = &ft->flows[index];
			continue;
		}
		lk->service = rplb_find_service(t, lk->key.dst_ip, lk->key.dst_port, lk->key.proto);
		if (lk->service == NULL)
			continue;
		b = rplb_maglev_pick(lk->service, lk->hash);
		lk->new_backend = b;
		if (b == RPLB_NO_BACKEND)
			continue;
		lk->new_backend_hash = rplb_flow_backend_key_hash(&lk->key, t->backends[b].ip,
								  t->backends[b].port);
		rplb_flow_prefetch(ft, lk->new_backend_hash);
		if (free_top > 0)
			rte_prefetch0(&ft->flows[ft->free_stack[--free_top]]);
	}
}

/* Pass 3: resolve, rewrite and send each looked-up packet of a burst
 * from in_side.  tx_offload and rx_checked (struct resolve_ctx) are
 * constants at the calls that matter (see process_burst_from). */
static __rte_always_inline void
resolve_burst(struct rplb_worker *w, struct rplb_lb_worker *lw, const struct rplb_lb_tables *t,
	      const unsigned int in_side, struct lookup *lookups, const struct lookup *end,
	      const int tx_offload, const int rx_checked)
{
	struct rplb_flow_table *ft = lw->flows;
	struct changed flows_changed;
	struct rte_mbuf *out_pkts[RPLB_BURST];
	struct resolve_ctx rc = {
		.tx_offload = tx_offload, .rx_checked = rx_checked,
		.now = rplb_flow_clock(ft, rte_rdtsc()),
		.backends = t->backends, .backend_counters = lw->backend_counters,
		.next_out = out_pkts, .bytes = 0,
	};
	struct lookup *lk = lookups;

	if (in_side == RPLB_FRONTEND) {
		/* Until a packet changes a flow, every bulk lookup answer is
		 * current: a loop without the flows_changed test, then one with. */
		memset(&flows_changed, 0, sizeof(flows_changed));
		for (; lk < end; lk++) {
			if (resolve_from_client(w, lw, &rc, ft, t, lk, &flows_changed, 0)) {
				lk++;
				break;
			}
		}
		for (; lk < end; lk++)
			resolve_from_client(w, lw, &rc, ft, t, lk, &flows_changed, 1);
		w->counters.events[RPLB_EV_TO_BACKEND] += rc.next_out - out_pkts;
	} else {
		for (; lk < end; lk++)
			resolve_from_backend(w, lw, &rc, t, lk,
					     rplb_flow_confirm(ft, &lk->key, lk->hash, lk->first_ref,
							       RPLB_DIR_BACKEND));
	}
	rplb_worker_send_bulk(w, in_side == RPLB_FRONTEND ? RPLB_BACKEND : RPLB_FRONTEND,
			      out_pkts, rc.next_out - out_pkts, rc.bytes);
}

/* The copies of the resolve loop, each a function of its own: the
 * compiler allocates its registers apart from the classify loop's (inlined
 * into one function, a change in either moved spills into the other). */
#define RESOLVE_COPY(name, side, tx_offload, rx_checked)				\
	static __rte_noinline void							\
	name(struct rplb_worker *w, struct rplb_lb_worker *lw,				\
	     const struct rplb_lb_tables *t, struct lookup *lookups, const struct lookup *end) \
	{										\
		resolve_burst(w, lw, t, side, lookups, end, tx_offload, rx_checked);	\
	}
RESOLVE_COPY(resolve_from_clients_in_software, RPLB_FRONTEND, 0, 0)
RESOLVE_COPY(resolve_from_clients_offloaded, RPLB_FRONTEND, 1, 1)
RESOLVE_COPY(resolve_from_backends_in_software, RPLB_BACKEND, 0, 0)
RESOLVE_COPY(resolve_from_backends_offloaded, RPLB_BACKEND, 1, 1)

/* A worker meets a table generation for the first time (between bursts
 * or at the start of one, before any packet uses it): the slots it hands
 * to new backends start counting their active flows from zero.  Every
 * running worker adopts every generation (rplb_lb_publish waits for it
 * before the next one can be published); a worker that was stopped
 * meanwhile looks at every slot instead. */
static __rte_noinline void
adopt_tables(struct rplb_worker *w, struct rplb_lb_worker *lw, const struct rplb_lb_tables *t)
{
	uint32_t i;

	if (t->generation == lw->generation_seen + 1) {
		for (i = 0; i < t->n_reused; i++)
			lw->backend_counters[t->reused_slots[i]].active_flows = 0;
	} else if (lw->generation_seen != 0) {
		for (i = 0; i < RPLB_MAX_BACKENDS; i++)
			if (t->slot_taken_in[i] > (uint32_t)lw->generation_seen)
				lw->backend_counters[i].active_flows = 0;
	}
	lw->generation_seen = t->generation;
	w->counters.events[RPLB_EV_TABLES_SEEN]++;
}

/* One burst from one side; inlined into lb_process_burst once per side,
 * so neither copy tests the side per packet. */
static __rte_always_inline void
process_burst_from(struct rplb_worker *w, const unsigned int in_side, struct rte_mbuf **pkts,
		   uint16_t n)
{
	struct rplb_lb *lb = w->engine_state;
	struct rplb_lb_worker *lw = w->engine_local;
	const struct rplb_lb_tables *t = __atomic_load_n(&lb->tables, __ATOMIC_ACQUIRE);
	struct rplb_flow_table *ft = lw->flows;
	struct lookup lookups[RPLB_BURST];
	struct lookup *lk = lookups, *end;
	struct rplb_flow_table ft_header;
	int unmatched = 0;
	unsigned int i;
	/* Read once a burst: the ports' offloads do not change under it. */
	const int tx_offload = w->tx_cksum_offload[in_side == RPLB_FRONTEND ? RPLB_BACKEND :
									   RPLB_FRONTEND];
	const int rx_checked = w->rx_cksum_offload[in_side];

	if (unlikely(t->generation != lw->generation_seen))
		adopt_tables(w, lw, t);
	for (i = 0; i < n && i < PREFETCH_AHEAD; i++)
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
	/* A pointer, not an index, into the lookups: the loop keeps its few
	 * registers for the packet.  The last PREFETCH_AHEAD packets have
	 * nothing left to prefetch: a loop of their own, so neither tests it
	 * per packet. */
	for (i = 0; i + PREFETCH_AHEAD < n; i++) {
		rte_prefetch0(rte_pktmbuf_mtod(pkts[i + PREFETCH_AHEAD], void *));
		lk = classify(w, t, ft, in_side, pkts[i], lk);
	}
	for (; i < n; i++)
		lk = classify(w, t, ft, in_side, pkts[i], lk);
	end = lk;
	if (end == lookups)
		return;

	/* The bulk lookup's first pass; its second is in the resolve loop,
	 * which reads each record anyway.  It reads the table through a copy
	 * of its header, which the pointers it stores cannot alias: the
	 * compiler keeps the record array's address in a register. */
	ft_header = *ft;
	for (lk = lookups; lk < end; lk++)
		lk->first_ref = rplb_flow_match_first(&ft_header, lk->bucket, lk->hash,
						      in_side == RPLB_FRONTEND ? RPLB_DIR_CLIENT :
										 RPLB_DIR_BACKEND,
						      &lk->first_flow, &unmatched);
	if (unmatched && in_side == RPLB_FRONTEND)
		prepare_new_flows(ft, t, lookups, end);
	/* One copy of the resolve loop for ports without checksum offloads,
	 * one for ports with both, one for the rest: the offloads are
	 * constants in the first two, not tests per packet. */
	if (!tx_offload && !rx_checked)
		(in_side == RPLB_FRONTEND ? resolve_from_clients_in_software :
					    resolve_from_backends_in_software)(w, lw, t, lookups, end);
	else if (tx_offload && rx_checked)
		(in_side == RPLB_FRONTEND ? resolve_from_clients_offloaded :
					    resolve_from_backends_offloaded)(w, lw, t, lookups, end);
	else
		resolve_burst(w, lw, t, in_side, lookups, end, tx_offload, rx_checked);
}

static void
lb_process_burst(struct rplb_worker *w, unsigned int in_side, struct rte_mbuf **pkts,
		 uint16_t n)
{
	if (in_side == RPLB_FRONTEND)
		process_burst_from(w, RPLB_FRONTEND, pkts, n);
	else
		process_burst_from(w, RPLB_BACKEND, pkts, n);
}

/* Answer the control plane's request for a sample of flows (between
 * bursts: only this lcore reads its flow table). */
static void
copy_flow_sample(struct rplb_lb_worker *lw, uint64_t now_tsc)
{
	struct rplb_flow_sample_slot *slot = lw->sample;
	struct rplb_flow_table *ft = lw->flows;
	uint32_t now = rplb_flow_clock(ft, now_tsc);
	double ms_per_tick = 1e3 * (double)(1ull << ft->clock_shift) / (double)rte_get_tsc_hz();
	uint32_t i, count = 0, scan = RPLB_FT_FIRST_FLOW + RTE_MIN(ft->capacity, SAMPLE_SCAN_LIMIT);

	for (i = RPLB_FT_FIRST_FLOW; i < scan && count < slot->max; i++) {
		const struct rplb_flow *flow = &ft->flows[i];
		struct rplb_flow_sample *s = &slot->buffer[count];

		if (flow->state == RPLB_FLOW_FREE)
			continue;
		*s = (struct rplb_flow_sample){
			.client_ip = flow->client_ip, .vip = flow->vip,
			.backend_ip = flow->backend_ip, .client_port = flow->client_port,
			.vport = flow->vport, .backend_port = flow->backend_port,
			.service_id = flow->service_id, .backend_id = flow->backend_id,
			.proto = flow->proto, .state = flow->state,
			.idle_ms = (uint32_t)((uint32_t)(now - flow->last_seen) * ms_per_tick),
		};
		count++;
	}
	slot->count = count;
	__atomic_store_n(&slot->state, RPLB_SAMPLE_DONE, __ATOMIC_RELEASE);
}

static __rte_noinline void
expire_flow(struct rplb_worker *w, struct rplb_lb_worker *lw, const struct rplb_lb_tables *t,
	    uint32_t index)
{
	rplb_lb_count_flow_end(lw, t->backends, lw->flows->flows[index].backend_id);
	rplb_flow_remove(lw->flows, index);
	w->counters.events[RPLB_EV_FLOWS_EXPIRED]++;
}

/* Incremental aging: a few records per loop iteration, many when idle, so
 * there is never a stop-the-world sweep. */
static void
lb_housekeeping(struct rplb_worker *w, uint64_t now_tsc, int idle)
{
	struct rplb_lb *lb = w->engine_state;
	struct rplb_lb_worker *lw = w->engine_local;
	struct rplb_flow_table *ft = lw->flows;
	unsigned int budget = idle ? AGING_BUDGET_IDLE : AGING_BUDGET_BUSY;
	uint32_t cursor = ft->aging_cursor, end;
	const struct rplb_flow *flow, *last;
	uint32_t now = rplb_flow_clock(ft, now_tsc);
	const struct rplb_lb_tables *t;

	/* Between bursts this worker holds no table reference: tell the RCU. */
	rte_rcu_qsbr_quiescent(lb->qsbr, lw->lcore_id);
	t = __atomic_load_n(&lb->tables, __ATOMIC_ACQUIRE);
	if (unlikely(t->generation != lw->generation_seen))
		adopt_tables(w, lw, t);
	if (unlikely(__atomic_load_n(&lw->sample->state, __ATOMIC_ACQUIRE) == RPLB_SAMPLE_WANTED))
		copy_flow_sample(lw, now_tsc);

	/* The records from the cursor on, up to the budget or the table's end
	 * (the next call starts over at the first flow, past the sentinel): nearly
	 * always free or fresh. */
	end = RTE_MIN(cursor + budget, RPLB_FT_FIRST_FLOW + ft->capacity);
	/* A pointer walks the records (the index is needed only to expire). */
	for (flow = &ft->flows[cursor], last = &ft->flows[end]; flow < last; flow++) {
		/* The flow clock wraps: idle time is a difference modulo 2^32. */
		if (flow->state != RPLB_FLOW_FREE &&
		    unlikely((uint32_t)(now - flow->last_seen) > t->timeout_ticks[flow->state]))
			expire_flow(w, lw, t, (uint32_t)(flow - ft->flows));
	}
	cursor = end;
	if (cursor == RPLB_FT_FIRST_FLOW + ft->capacity)
		cursor = RPLB_FT_FIRST_FLOW;
	ft->aging_cursor = cursor;
	/* The records the next call ages are cold in a large table (the
	 * loads above stalled on them): start loading them now, a burst
	 * ahead.  A prefetch never faults, so none is range-checked; the
	 * addresses are integers, not pointers past the array. */
	for (budget = 0; budget < AGING_BUDGET_BUSY * sizeof(struct rplb_flow);
	     budget += RTE_CACHE_LINE_SIZE)
		rte_prefetch0((const void *)((uintptr_t)&ft->flows[cursor] + budget));
}

static int
lb_start(struct rplb_worker *w)
{
	struct rplb_lb *lb = w->engine_state;
	unsigned int i;

	for (i = 0; i < lb->n_workers; i++) {
		if (lb->workers[i].lcore_id == w->lcore_id) {
			w->engine_local = &lb->workers[i];
			rte_rcu_qsbr_thread_online(lb->qsbr, w->lcore_id);
			return 0;
		}
	}
	/* rplb_lb_add_worker() was not called for this lcore. */
	return -ENOENT;
}

static void
lb_stop(struct rplb_worker *w)
{
	struct rplb_lb *lb = w->engine_state;

	rte_rcu_qsbr_thread_offline(lb->qsbr, w->lcore_id);
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
