/* SPDX-License-Identifier: BSD-3-Clause
 *
 * packet.h: parsing and rewriting of IPv4 TCP/UDP/ICMP headers, with
 * incremental checksum updates (RFC 1624) or TX checksum offload.
 */
#ifndef RPLB_PACKET_H
#define RPLB_PACKET_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

/* The client-side (direction 0) or backend-side (direction 1) 5-tuple of a
 * packet, as it appears on the wire; 16 bytes so CRC32 hashes it in two
 * instructions. */
struct rplb_flow_key {
	uint32_t src_ip;
	uint32_t dst_ip;
	uint16_t src_port;
	uint16_t dst_port;
	uint8_t proto;
	uint8_t direction;
	uint16_t zero;
};

#define RPLB_DIR_CLIENT 0
#define RPLB_DIR_BACKEND 1

/* Result of parsing one frame. */
enum rplb_parse {
	RPLB_PARSE_OTHER,       /* not IPv4, or no room for an IPv4 header */
	RPLB_PARSE_IPV4_BAD,    /* IPv4 whose header is broken (dst readable) */
	RPLB_PARSE_FRAGMENT,    /* a valid IPv4 fragment */
	RPLB_PARSE_L4_BAD,      /* TCP/UDP/ICMP header truncated */
	RPLB_PARSE_TCP_UDP,
	RPLB_PARSE_ICMP,
	RPLB_PARSE_IPV4_OTHER,  /* another IP protocol */
};

struct rplb_parsed {
	struct rte_ipv4_hdr *ip;
	void *l4;               /* its length is ip's IHL, so l4 - ip */
	uint8_t tcp_flags;
	/* ip's protocol, when TCP or UDP: a constant on the fast parse's
	 * paths, where the compiler need not load it again. */
	uint8_t proto;
};

static inline struct rte_ipv4_hdr *
rplb_ipv4_header(struct rte_mbuf *m)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);

	if (unlikely(m->data_len < sizeof(*eth) + sizeof(struct rte_ipv4_hdr)))
		return NULL;
	if (eth->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV4))
		return NULL;
	return (struct rte_ipv4_hdr *)(eth + 1);
}

/* rplb_parse_ipv4 for a header length known here (ihl bytes); always
 * inlined, so the common 20-byte header gets its checks constant-folded. */
static __rte_always_inline enum rplb_parse
rplb_parse_ipv4_ihl(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct rplb_parsed *out,
		    uint32_t ihl)
{
	uint32_t l3_room = m->data_len - sizeof(struct rte_ether_hdr);
	uint32_t total = rte_be_to_cpu_16(ip->total_length);
	uint32_t l4_need;

	if (unlikely(ihl > l3_room || total < ihl ||
		     total > m->pkt_len - sizeof(struct rte_ether_hdr)))
		return RPLB_PARSE_IPV4_BAD;
	if (unlikely(ip->fragment_offset &
		     RTE_BE16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)))
		return RPLB_PARSE_FRAGMENT;

	out->ip = ip;
	out->l4 = (uint8_t *)ip + ihl;
	out->proto = ip->next_proto_id;
	if (likely(ip->next_proto_id == IPPROTO_TCP)) {
		struct rte_tcp_hdr *tcp = out->l4;
		uint32_t doff;

		if (unlikely(ihl + sizeof(*tcp) > RTE_MIN(total, l3_room)))
			return RPLB_PARSE_L4_BAD;
		doff = (tcp->data_off >> 4) * 4;
		if (unlikely(doff < sizeof(*tcp) || ihl + doff > total))
			return RPLB_PARSE_L4_BAD;
		out->tcp_flags = tcp->tcp_flags;
		return RPLB_PARSE_TCP_UDP;
	}
	switch (ip->next_proto_id) {
	case IPPROTO_UDP:
		l4_need = sizeof(struct rte_udp_hdr);
		break;
	case IPPROTO_ICMP:
		l4_need = sizeof(struct rte_icmp_hdr);
		break;
	default:
		return RPLB_PARSE_IPV4_OTHER;
	}
	if (unlikely(ihl + l4_need > RTE_MIN(total, l3_room)))
		return RPLB_PARSE_L4_BAD;
	out->tcp_flags = 0;
	return ip->next_proto_id == IPPROTO_UDP ? RPLB_PARSE_TCP_UDP : RPLB_PARSE_ICMP;
}

/* The frame nearly every packet is, in one straight run of tests: Ethernet,
 * a 20-byte IPv4 header, not a fragment, TCP or UDP whose header lies in
 * the first segment and inside the IPv4 total length.  Returns 1 with out
 * filled in; 0 for anything else, which rplb_ipv4_header and
 * rplb_parse_ipv4 then sort out (they accept these frames too, with the
 * same result). */
static __rte_always_inline int
rplb_parse_common(struct rte_mbuf *m, struct rplb_parsed *out)
{
	const uint32_t need = sizeof(struct rte_ether_hdr) + sizeof(struct rte_ipv4_hdr) +
			      sizeof(struct rte_tcp_hdr);
	uint8_t *frame = rte_pktmbuf_mtod(m, uint8_t *);
	struct rte_ipv4_hdr *ip = (struct rte_ipv4_hdr *)(frame + sizeof(struct rte_ether_hdr));
	uint8_t *l4 = (uint8_t *)(ip + 1);
	uint32_t data_len = m->data_len;
	uint32_t head, frag_proto, total_over;
	uint16_t total_be;

	if (unlikely(data_len < need))
		return 0;
	/* EtherType and version/IHL are adjacent: one load, one compare (the
	 * bytes in wire order, as a little-endian word: 08 00 45). */
	memcpy(&head, frame + offsetof(struct rte_ether_hdr, ether_type), sizeof(head));
	if (unlikely(rte_le_to_cpu_32(head) << 8 !=
		     (uint32_t)(RTE_ETHER_TYPE_IPV4 >> 8 | RTE_IPV4_VHL_DEF << 16) << 8))
		return 0;
	/* 40 <= total length <= the first segment's IPv4 room, in one
	 * unsigned compare (data_len >= need): room for the IPv4 and TCP
	 * headers (UDP needs less, and datagrams this short take the full
	 * parser, as do datagrams that go on in a second segment). */
	memcpy(&total_be, &ip->total_length, sizeof(total_be));
	total_over = (uint32_t)__builtin_bswap16(total_be) - need + sizeof(struct rte_ether_hdr);
	if (unlikely(total_over > data_len - need))
		return 0;
	/* Fragment bits, TTL and protocol are adjacent: no fragment bit, and
	 * the protocol, in one masked compare each way. */
	memcpy(&frag_proto, &ip->fragment_offset, sizeof(frag_proto));
	frag_proto = rte_le_to_cpu_32(frag_proto) & 0xff00ff3fu;
	if (likely(frag_proto == (uint32_t)IPPROTO_TCP << 24)) {
		/* Data offset in the high nibble, in 32-bit words: >> 2 gives
		 * bytes.  20 <= header length <= total - 20, in one unsigned
		 * compare (a length under 20 wraps). */
		uint32_t data_off = ((struct rte_tcp_hdr *)l4)->data_off;

		if (unlikely(((data_off >> 2) & 0x3c) - sizeof(struct rte_tcp_hdr) > total_over))
			return 0;
		out->tcp_flags = ((struct rte_tcp_hdr *)l4)->tcp_flags;
		out->proto = IPPROTO_TCP;
	} else if (frag_proto == (uint32_t)IPPROTO_UDP << 24) {
		out->tcp_flags = 0;
		out->proto = IPPROTO_UDP;
	} else {
		return 0;
	}
	out->ip = ip;
	out->l4 = l4;
	return 1;
}

/* Validates everything a rewrite depends on: version, IHL, total length
 * against the frame, fragment bits, and that the L4 header lies within the
 * first segment and within the IPv4 total length. */
static inline enum rplb_parse
rplb_parse_ipv4(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct rplb_parsed *out)
{
	uint32_t ihl = (ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4;

	if (likely(ip->version_ihl == RTE_IPV4_VHL_DEF))
		return rplb_parse_ipv4_ihl(m, ip, out, sizeof(*ip));
	if (unlikely((ip->version_ihl >> 4) != 4 || ihl < sizeof(*ip)))
		return RPLB_PARSE_IPV4_BAD;
	return rplb_parse_ipv4_ihl(m, ip, out, ihl);
}

/* The NIC verified a checksum and found it wrong.  Without RX checksum
 * offload the flags say "unknown" and software rewrites keep a bad checksum
 * bad (RFC 1624 updates are incremental); with TX offload the NIC would
 * recompute it, so such frames must be caught here. */
static inline int
rplb_rx_cksum_bad(const struct rte_mbuf *m)
{
	/* BAD and NONE both have the BAD bit; neither set is the common case
	 * (GOOD, or UNKNOWN without RX offload). */
	if (likely(!(m->ol_flags & (RTE_MBUF_F_RX_IP_CKSUM_BAD | RTE_MBUF_F_RX_L4_CKSUM_BAD))))
		return 0;
	return (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
	       (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD;
}

/* The address an Ethernet ARP request or reply for IPv4 is about (its
 * target protocol address, network byte order): a request asks who has
 * it, a reply answers whoever has it; *sender: its sender's address.  0
 * for any other frame, and for an ARP frame too short or not for IPv4
 * over Ethernet (*sender untouched). */
static inline uint32_t
rplb_arp_target(const struct rte_mbuf *m, uint32_t *sender)
{
	const struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, const struct rte_ether_hdr *);
	const struct rte_arp_hdr *arp = (const struct rte_arp_hdr *)(eth + 1);
	uint32_t target;

	if (m->data_len < sizeof(*eth) + sizeof(*arp) ||
	    eth->ether_type != RTE_BE16(RTE_ETHER_TYPE_ARP) ||
	    arp->arp_hardware != RTE_BE16(RTE_ARP_HRD_ETHER) ||
	    arp->arp_protocol != RTE_BE16(RTE_ETHER_TYPE_IPV4) ||
	    arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != sizeof(uint32_t) ||
	    (arp->arp_opcode != RTE_BE16(RTE_ARP_OP_REQUEST) &&
	     arp->arp_opcode != RTE_BE16(RTE_ARP_OP_REPLY)))
		return 0;
	/* The ARP body is packed: the addresses are not aligned. */
	memcpy(&target, &arp->arp_data.arp_tip, sizeof(target));
	memcpy(sender, &arp->arp_data.arp_sip, sizeof(*sender));
	return target;
}

/* Both TCP and UDP start with the source and destination ports. */
struct rplb_l4_ports {
	uint16_t src_port;
	uint16_t dst_port;
};

/* ---- RFC 1624 incremental checksum update: HC' = ~(~HC + ~m + m') ------- */

static inline uint16_t
rplb_cksum_fold(uint32_t sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)sum;
}

/* old_value/new_value are the 32-bit fields as stored (network order);
 * one's-complement sums do not depend on byte order. */
static inline uint32_t
rplb_cksum_delta32(uint32_t old_value, uint32_t new_value)
{
	return (uint32_t)(uint16_t)~(old_value >> 16) + (uint16_t)~(old_value & 0xffff) +
	       (new_value >> 16) + (new_value & 0xffff);
}

static inline uint32_t
rplb_cksum_delta16(uint16_t old_value, uint16_t new_value)
{
	return (uint32_t)(uint16_t)~old_value + new_value;
}

static inline uint16_t
rplb_cksum_apply(uint16_t cksum, uint32_t delta)
{
	return (uint16_t)~rplb_cksum_fold((uint32_t)(uint16_t)~cksum + delta);
}

/* RFC 1624 eqn. 3, HC' = ~(~HC + delta).  On x86 the one's-complement add
 * is a 16-bit add and an add of its carry (the sum of two 16-bit words
 * carries at most once, and the carry cannot carry again); elsewhere ~HC
 * is written 0xffff - HC and the 17-bit sum folded once. */
static inline uint16_t
rplb_cksum_update(uint16_t cksum, uint16_t delta)
{
#if defined(RTE_ARCH_X86)
	uint16_t sum = (uint16_t)~cksum;

	asm("addw %1, %0\n\tadcw $0, %0" : "+r" (sum) : "rm" (delta) : "cc");
	return (uint16_t)~sum;
#else
	uint32_t sum = (uint32_t)delta + 0xffff - cksum;

	return (uint16_t)~(sum + (sum >> 16));
#endif
}

/* The checksum changes of a rewrite from (old_addr, old_port) to
 * (new_addr, new_port), folded to 16 bits: ip_delta for the IPv4 header,
 * l4_delta for the TCP/UDP checksum (pseudo-header address plus port).
 * Constant per (service, backend): the tables precompute them. */
struct rplb_cksum_deltas {
	uint16_t ip;
	uint16_t l4;
};

static inline struct rplb_cksum_deltas
rplb_cksum_deltas(uint32_t old_addr, uint16_t old_port, uint32_t new_addr, uint16_t new_port)
{
	uint32_t addr_delta = rplb_cksum_delta32(old_addr, new_addr);

	return (struct rplb_cksum_deltas){
		.ip = rplb_cksum_fold(addr_delta),
		.l4 = rplb_cksum_fold(addr_delta + rplb_cksum_delta16(old_port, new_port)),
	};
}

/* Replace one address and one port of a TCP/UDP packet.  Software path:
 * incremental update of both checksums with the precomputed deltas, keeping
 * a UDP checksum of 0 (none) at 0 and never producing 0 for UDP.  Offload
 * path: the NIC computes them from the pseudo-header checksum we leave in
 * the L4 field. */
static __rte_always_inline void
rplb_rewrite_addr_port(struct rte_mbuf *m, struct rplb_parsed *parsed, void *addr_field,
		       uint16_t *port_field, uint32_t new_addr, uint16_t new_port,
		       struct rplb_cksum_deltas deltas, int tx_offload)
{
	struct rte_ipv4_hdr *ip = parsed->ip;
	int is_udp = ip->next_proto_id == IPPROTO_UDP;
	uint16_t *l4_cksum = is_udp ? &((struct rte_udp_hdr *)parsed->l4)->dgram_cksum
				    : &((struct rte_tcp_hdr *)parsed->l4)->cksum;

	/* IPv4 addresses sit 2 bytes off a 4-byte boundary behind Ethernet:
	 * memcpy is the defined way to store them (one mov on x86). */
	memcpy(addr_field, &new_addr, sizeof(new_addr));
	*port_field = new_port;

	if (unlikely(tx_offload)) {
		m->l2_len = sizeof(struct rte_ether_hdr);
		m->l3_len = (uint8_t *)parsed->l4 - (uint8_t *)ip;
		m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
		ip->hdr_checksum = 0;
		if (is_udp && *l4_cksum == 0)
			return;
		m->ol_flags |= is_udp ? RTE_MBUF_F_TX_UDP_CKSUM : RTE_MBUF_F_TX_TCP_CKSUM;
		*l4_cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
		return;
	}

	/* RFC 1624 eqn. 3: HC' = ~(~HC + delta). */
	ip->hdr_checksum = rplb_cksum_update(ip->hdr_checksum, deltas.ip);
	if (is_udp && *l4_cksum == 0)
		return;
	*l4_cksum = rplb_cksum_update(*l4_cksum, deltas.l4);
	if (is_udp && *l4_cksum == 0)
		*l4_cksum = 0xffff;
}

/* ---- IPv4 fragments ----------------------------------------------------- */

/* The largest end of a fragment's payload in its datagram: an IPv4
 * datagram holds at most 65,535 bytes, its header at least 20. */
#define RPLB_FRAGMENT_MAX_END (UINT16_MAX - sizeof(struct rte_ipv4_hdr))

/* Where a fragment's payload lies in its datagram (bytes). */
struct rplb_fragment {
	uint32_t offset;
	uint32_t end;           /* offset + payload length */
	int more;               /* MF: more fragments follow */
	uint32_t ihl;           /* its IPv4 header's length */
};

/* The place of a fragment (a frame rplb_parse_ipv4 found a fragment, so
 * its IHL and total length are sound) in its datagram.  0, or -1 when no
 * datagram can hold it: an empty payload, a payload beyond the largest
 * datagram, or a fragment followed by others whose length is not a
 * multiple of 8 (the next one's offset could not follow it). */
static inline int
rplb_parse_fragment(const struct rte_ipv4_hdr *ip, struct rplb_fragment *out)
{
	uint16_t field = rte_be_to_cpu_16(ip->fragment_offset);
	uint32_t ihl = (ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4;
	uint32_t length = rte_be_to_cpu_16(ip->total_length) - ihl;

	out->offset = (uint32_t)(field & RTE_IPV4_HDR_OFFSET_MASK) * RTE_IPV4_HDR_OFFSET_UNITS;
	out->end = out->offset + length;
	out->more = (field & RTE_IPV4_HDR_MF_FLAG) != 0;
	out->ihl = ihl;
	if (length == 0 || out->end > RPLB_FRAGMENT_MAX_END ||
	    (out->more && length % RTE_IPV4_HDR_OFFSET_UNITS != 0))
		return -1;
	return 0;
}

/* The L4 header of a datagram's first fragment (offset 0, MF set), whose
 * fragment the caller parsed (rplb_parse_fragment): like rplb_parse_ipv4
 * for a whole datagram, but the header must lie within this fragment (and
 * its first segment), TCP's options included.  RPLB_PARSE_TCP_UDP or
 * RPLB_PARSE_ICMP with out filled in, RPLB_PARSE_L4_BAD, or
 * RPLB_PARSE_IPV4_OTHER for another protocol. */
static inline enum rplb_parse
rplb_parse_first_fragment(const struct rte_mbuf *m, struct rte_ipv4_hdr *ip,
			  const struct rplb_fragment *fragment, struct rplb_parsed *out)
{
	uint32_t room = RTE_MIN(fragment->end,
				m->data_len - (uint32_t)sizeof(struct rte_ether_hdr) - fragment->ihl);
	uint32_t need;

	out->ip = ip;
	out->l4 = (uint8_t *)ip + fragment->ihl;
	out->proto = ip->next_proto_id;
	out->tcp_flags = 0;
	switch (ip->next_proto_id) {
	case IPPROTO_TCP:
		need = sizeof(struct rte_tcp_hdr);
		if (room >= need)
			need = (((struct rte_tcp_hdr *)out->l4)->data_off >> 4) * 4u;
		if (need < sizeof(struct rte_tcp_hdr) || room < need)
			return RPLB_PARSE_L4_BAD;
		out->tcp_flags = ((struct rte_tcp_hdr *)out->l4)->tcp_flags;
		return RPLB_PARSE_TCP_UDP;
	case IPPROTO_UDP:
		return room >= sizeof(struct rte_udp_hdr) ? RPLB_PARSE_TCP_UDP : RPLB_PARSE_L4_BAD;
	case IPPROTO_ICMP:
		return room >= sizeof(struct rte_icmp_hdr) ? RPLB_PARSE_ICMP : RPLB_PARSE_L4_BAD;
	default:
		return RPLB_PARSE_IPV4_OTHER;
	}
}

/* Replace one IPv4 address of a packet (or fragment) whose checksum
 * change ip_delta the caller knows (rplb_cksum_deltas' ip): nothing else,
 * no L4 checksum (a fragment after the first has no L4 header; an ICMP
 * error's has no pseudo-header).  In software whatever the port offers:
 * these are the rare paths. */
static inline void
rplb_rewrite_ip_addr(struct rte_ipv4_hdr *ip, void *addr_field, uint32_t new_addr,
		     uint16_t ip_delta)
{
	memcpy(addr_field, &new_addr, sizeof(new_addr));
	ip->hdr_checksum = rplb_cksum_update(ip->hdr_checksum, ip_delta);
}

/* Send an IPv4 packet (or fragment) back where it came from, in place:
 * MACs and addresses swapped, a fresh TTL, the IPv4 checksum updated
 * (swapping the addresses leaves their sum as it was). */
static inline void
rplb_reflect_ipv4(struct rte_mbuf *m, struct rte_ipv4_hdr *ip)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ether_addr mac = eth->src_addr;
	uint32_t addr = ip->src_addr;
	uint16_t old_word, new_word;

	eth->src_addr = eth->dst_addr;
	eth->dst_addr = mac;
	ip->src_addr = ip->dst_addr;
	ip->dst_addr = addr;

	/* TTL shares a 16-bit word with the protocol. */
	memcpy(&old_word, &ip->time_to_live, sizeof(old_word));
	ip->time_to_live = 64;
	memcpy(&new_word, &ip->time_to_live, sizeof(new_word));
	ip->hdr_checksum = rplb_cksum_apply(ip->hdr_checksum,
					    rplb_cksum_delta16(old_word, new_word));
}

/* Turn an ICMP echo request to a VIP (or its first fragment) into the
 * reply, in place: reflected (rplb_reflect_ipv4), type 0, its checksum
 * updated (it covers the whole message: the type's word is the only
 * change, wherever the message's fragments lie). */
static inline void
rplb_icmp_echo_to_reply(struct rte_mbuf *m, struct rplb_parsed *parsed)
{
	struct rte_icmp_hdr *icmp = parsed->l4;
	uint16_t old_word, new_word;

	rplb_reflect_ipv4(m, parsed->ip);
	memcpy(&old_word, &icmp->icmp_type, sizeof(old_word));
	icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	memcpy(&new_word, &icmp->icmp_type, sizeof(new_word));
	icmp->icmp_cksum = rplb_cksum_apply(icmp->icmp_cksum,
					    rplb_cksum_delta16(old_word, new_word));
}

#endif /* RPLB_PACKET_H */
