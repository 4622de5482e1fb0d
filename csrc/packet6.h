/* SPDX-License-Identifier: BSD-3-Clause
 *
 * packet6.h: parsing of IPv6 frames (the header chain walked to the L4
 * header) and the checksum arithmetic of IPv6 rewrites (lb_ipv6.c).
 */
#ifndef RPLB_PACKET6_H
#define RPLB_PACKET6_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <netinet/in.h>

#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "packet.h"

/* The extension headers rplb walks: at most this many, and the L4 header
 * must start within the first RPLB_IPV6_CHAIN_MAX_BYTES bytes of the IPv6
 * packet.  Longer chains addressed to a VIP are dropped (counted). */
#define RPLB_IPV6_MAX_EXTENSIONS 8
#define RPLB_IPV6_CHAIN_MAX_BYTES 256

#define RPLB_IPV6_NEXT_HOP_BY_HOP 0
#define RPLB_IPV6_NEXT_ROUTING 43
#define RPLB_IPV6_NEXT_FRAGMENT 44
#define RPLB_IPV6_NEXT_DEST_OPTS 60
#define RPLB_IPV6_NEXT_ICMPV6 58

/* The fragment header's offset field (bytes, 8-byte units) and M flag. */
#define RPLB_IPV6_FRAGMENT_OFFSET_MASK 0xfff8u
#define RPLB_IPV6_FRAGMENT_MORE 0x0001u

#define RPLB_ICMP6_ECHO_REQUEST 128
#define RPLB_ICMP6_ECHO_REPLY 129

enum rplb_parse6 {
	RPLB_PARSE6_OTHER,        /* not IPv6, or no room for its fixed header: pass */
	RPLB_PARSE6_BAD_LENGTH,   /* payload length beyond the frame */
	RPLB_PARSE6_BAD_CHAIN,    /* extension chain too long, truncated or malformed */
	RPLB_PARSE6_FRAGMENT,     /* a fragment (a fragment header, not an atomic one):
				   * fragment set; a first fragment's L4 in first_l4 */
	RPLB_PARSE6_L4_BAD,       /* TCP/UDP/ICMPv6 header truncated */
	RPLB_PARSE6_TCP_UDP,
	RPLB_PARSE6_ICMP,
	RPLB_PARSE6_IPV6_OTHER,   /* another upper-layer protocol */
};

struct rplb_parsed6 {
	struct rte_ipv6_hdr *ip;
	void *l4;
	uint32_t l4_length;       /* upper-layer length (payload minus extensions) */
	uint8_t proto;
	uint8_t tcp_flags;
	/* RPLB_PARSE6_FRAGMENT: its fragment header; for the first fragment
	 * (offset 0), the verdict of its upper-layer header (l4, l4_length,
	 * proto, tcp_flags as for a whole packet, within this fragment),
	 * else RPLB_PARSE6_OTHER. */
	struct rte_ipv6_fragment_ext *fragment;
	uint8_t first_l4;
};

/* The IPv6 header of an Ethernet frame, or NULL. */
static inline struct rte_ipv6_hdr *
rplb_ipv6_header(struct rte_mbuf *m)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv6_hdr *ip;

	if (m->data_len < sizeof(*eth) + sizeof(*ip) ||
	    eth->ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV6))
		return NULL;
	ip = (struct rte_ipv6_hdr *)(eth + 1);
	if ((ip->vtc_flow & RTE_BE32(0xf0000000)) != RTE_BE32(0x60000000))
		return NULL;
	return ip;
}

/* The upper-layer header at offset of an IPv6 packet of total bytes
 * (room of them in the first segment). */
static inline enum rplb_parse6
rplb_parse_ipv6_l4(struct rte_ipv6_hdr *ip, uint32_t offset, uint32_t total, uint32_t room,
		   uint8_t next, struct rplb_parsed6 *out)
{
	uint32_t need;

	out->l4 = (uint8_t *)ip + offset;
	out->l4_length = total - offset;
	out->proto = next;
	out->tcp_flags = 0;
	switch (next) {
	case IPPROTO_TCP:
		if (offset + sizeof(struct rte_tcp_hdr) > room)
			return RPLB_PARSE6_L4_BAD;
		need = (((const struct rte_tcp_hdr *)out->l4)->data_off >> 4) * 4u;
		if (need < sizeof(struct rte_tcp_hdr) || offset + need > total)
			return RPLB_PARSE6_L4_BAD;
		out->tcp_flags = ((const struct rte_tcp_hdr *)out->l4)->tcp_flags;
		return RPLB_PARSE6_TCP_UDP;
	case IPPROTO_UDP:
		return offset + sizeof(struct rte_udp_hdr) > room ? RPLB_PARSE6_L4_BAD :
								    RPLB_PARSE6_TCP_UDP;
	case RPLB_IPV6_NEXT_ICMPV6:
		return offset + 8 > room ? RPLB_PARSE6_L4_BAD : RPLB_PARSE6_ICMP;
	default:
		return RPLB_PARSE6_IPV6_OTHER;
	}
}

/* Walk the header chain of an IPv6 packet (hop-by-hop first only, routing
 * without segments left, destination options, one fragment header) to its
 * upper-layer header, which must lie in the first segment and within the
 * payload length.  An atomic fragment (offset 0, no more fragments: RFC
 * 6946) is a whole packet: its fragment header is walked past like the
 * others.  Any other fragment answers RPLB_PARSE6_FRAGMENT; the first one
 * (offset 0) is walked on to its upper-layer header (RFC 7112: the whole
 * chain lies in it), whose verdict goes to first_l4. */
static inline enum rplb_parse6
rplb_parse_ipv6(const struct rte_mbuf *m, struct rte_ipv6_hdr *ip, struct rplb_parsed6 *out)
{
	const uint32_t l3_room = m->data_len - sizeof(struct rte_ether_hdr);
	const uint32_t total = sizeof(*ip) + rte_be_to_cpu_16(ip->payload_len);
	const uint32_t room = RTE_MIN(l3_room, total);
	const uint8_t *base = (const uint8_t *)ip;
	uint32_t offset = sizeof(*ip), n = 0;
	enum rplb_parse6 verdict;
	uint8_t next = ip->proto;

	out->ip = ip;
	out->l4 = NULL;
	out->l4_length = 0;
	out->fragment = NULL;
	out->first_l4 = RPLB_PARSE6_OTHER;
	if (total > m->pkt_len - sizeof(struct rte_ether_hdr))
		return RPLB_PARSE6_BAD_LENGTH;
	for (;;) {
		const uint8_t *ext = base + offset;
		uint32_t length;

		if (next != RPLB_IPV6_NEXT_HOP_BY_HOP && next != RPLB_IPV6_NEXT_ROUTING &&
		    next != RPLB_IPV6_NEXT_DEST_OPTS && next != RPLB_IPV6_NEXT_FRAGMENT)
			break;
		/* Hop-by-hop options only directly after the fixed header. */
		if (next == RPLB_IPV6_NEXT_HOP_BY_HOP && n != 0)
			goto bad_chain;
		if (n == RPLB_IPV6_MAX_EXTENSIONS || offset + 8 > room)
			goto bad_chain;
		if (next == RPLB_IPV6_NEXT_FRAGMENT) {
			const struct rte_ipv6_fragment_ext *fragment = (const void *)ext;

			next = fragment->next_header;
			offset += sizeof(*fragment);
			n++;
			/* Offset 0 and no more fragments: atomic, a whole packet. */
			if ((fragment->frag_data & RTE_BE16(RPLB_IPV6_FRAGMENT_OFFSET_MASK |
							 RPLB_IPV6_FRAGMENT_MORE)) == 0)
				continue;
			/* A second fragment header: no sender makes one. */
			if (out->fragment != NULL)
				goto bad_chain;
			out->fragment = (struct rte_ipv6_fragment_ext *)(uintptr_t)fragment;
			if (fragment->frag_data & RTE_BE16(RPLB_IPV6_FRAGMENT_OFFSET_MASK))
				return RPLB_PARSE6_FRAGMENT;
			continue;
		}
		length = ((uint32_t)ext[1] + 1) * 8;
		if (offset + length > room || offset + length > RPLB_IPV6_CHAIN_MAX_BYTES)
			goto bad_chain;
		/* A routing header with segments left names a later
		 * destination: this address is a waypoint, not the VIP's
		 * service (rewriting it would break the route). */
		if (next == RPLB_IPV6_NEXT_ROUTING && ext[3] != 0)
			goto bad_chain;
		next = ext[0];
		offset += length;
		n++;
	}
	verdict = rplb_parse_ipv6_l4(ip, offset, total, room, next, out);
	if (out->fragment == NULL)
		return verdict;
	out->first_l4 = (uint8_t)verdict;
	return RPLB_PARSE6_FRAGMENT;

bad_chain:
	if (out->fragment == NULL)
		return RPLB_PARSE6_BAD_CHAIN;
	/* A first fragment whose chain is bad: its datagram is dropped. */
	out->first_l4 = RPLB_PARSE6_BAD_CHAIN;
	return RPLB_PARSE6_FRAGMENT;
}

/* The place of a fragment (rplb_parse_ipv6 answered RPLB_PARSE6_FRAGMENT)
 * in its datagram's fragmentable part: 0, or -1 when no datagram can hold
 * it (an empty payload, one beyond the largest datagram, or a fragment
 * followed by others whose length is not a multiple of 8). */
static inline int
rplb_parse_fragment6(const struct rplb_parsed6 *parsed, struct rplb_fragment *out)
{
	const uint8_t *after = (const uint8_t *)(parsed->fragment + 1);
	uint32_t total = sizeof(struct rte_ipv6_hdr) + rte_be_to_cpu_16(parsed->ip->payload_len);
	uint32_t field = rte_be_to_cpu_16(parsed->fragment->frag_data);
	uint32_t length = total - (uint32_t)(after - (const uint8_t *)parsed->ip);

	out->offset = field & RPLB_IPV6_FRAGMENT_OFFSET_MASK;   /* 8-byte units, 3 bits up */
	out->end = out->offset + length;
	out->more = (field & RPLB_IPV6_FRAGMENT_MORE) != 0;
	out->ihl = 0;
	if (length == 0 || out->end > UINT16_MAX - sizeof(struct rte_ipv6_fragment_ext) ||
	    (out->more && length % 8 != 0))
		return -1;
	return 0;
}

/* One's-complement change of replacing a 16-byte address, unfolded. */
static inline uint32_t
rplb_cksum_delta128(const uint8_t old_addr[16], const uint8_t new_addr[16])
{
	uint32_t old_words[4], new_words[4], sum = 0;
	unsigned int i;

	memcpy(old_words, old_addr, sizeof(old_words));
	memcpy(new_words, new_addr, sizeof(new_words));
	for (i = 0; i < 4; i++)
		sum += rplb_cksum_fold(rplb_cksum_delta32(old_words[i], new_words[i]));
	return sum;
}

/* The L4 checksum change of rewriting (old_addr, old_port) to (new_addr,
 * new_port) in an IPv6 TCP/UDP packet (pseudo-header address and port),
 * folded.  In struct rplb_cksum_deltas' l4 (no IP header checksum). */
static inline struct rplb_cksum_deltas
rplb_cksum_deltas6(const uint8_t old_addr[16], uint16_t old_port, const uint8_t new_addr[16],
		   uint16_t new_port)
{
	return (struct rplb_cksum_deltas){
		.ip = 0,
		.l4 = rplb_cksum_fold(rplb_cksum_delta128(old_addr, new_addr) +
				      rplb_cksum_delta16(old_port, new_port)),
	};
}

/* Send an IPv6 packet (or fragment) back where it came from, in place:
 * MACs and addresses swapped (their sum, in an L4 pseudo-header, is
 * unchanged), a fresh hop limit.  IPv6 has no header checksum. */
static inline void
rplb_reflect_ipv6(struct rte_mbuf *m, struct rte_ipv6_hdr *ip)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ether_addr mac = eth->src_addr;
	uint8_t addr[16];

	eth->src_addr = eth->dst_addr;
	eth->dst_addr = mac;
	memcpy(addr, ip->src_addr, 16);
	memcpy(ip->src_addr, ip->dst_addr, 16);
	memcpy(ip->dst_addr, addr, 16);
	ip->hop_limits = 64;
}

#endif /* RPLB_PACKET6_H */
