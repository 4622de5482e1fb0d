/* SPDX-License-Identifier: BSD-3-Clause
 *
 * packet.h: parsing and rewriting of IPv4 TCP/UDP/ICMP headers, with
 * incremental checksum updates (RFC 1624) or TX checksum offload.
 */
#ifndef RPLB_PACKET_H
#define RPLB_PACKET_H

#include <stdint.h>
#include <string.h>

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
	void *l4;
	uint16_t l3_len;
	uint8_t tcp_flags;
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

/* Validates everything a rewrite depends on: version, IHL, total length
 * against the frame, fragment bits, and that the L4 header lies within the
 * first segment and within the IPv4 total length. */
static inline enum rplb_parse
rplb_parse_ipv4(struct rte_mbuf *m, struct rte_ipv4_hdr *ip, struct rplb_parsed *out)
{
	uint32_t l3_room = m->data_len - sizeof(struct rte_ether_hdr);
	uint32_t frame_l3 = m->pkt_len - sizeof(struct rte_ether_hdr);
	uint32_t ihl = (ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4;
	uint32_t total = rte_be_to_cpu_16(ip->total_length);
	uint32_t l4_need;

	if (unlikely((ip->version_ihl >> 4) != 4 || ihl < sizeof(*ip) || ihl > l3_room ||
		     total < ihl || total > frame_l3))
		return RPLB_PARSE_IPV4_BAD;
	if (unlikely(ip->fragment_offset &
		     RTE_BE16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)))
		return RPLB_PARSE_FRAGMENT;

	out->ip = ip;
	out->l3_len = ihl;
	out->l4 = (uint8_t *)ip + ihl;
	switch (ip->next_proto_id) {
	case IPPROTO_TCP:
		l4_need = sizeof(struct rte_tcp_hdr);
		break;
	case IPPROTO_UDP:
		l4_need = sizeof(struct rte_udp_hdr);
		break;
	case IPPROTO_ICMP:
		l4_need = sizeof(struct rte_icmp_hdr);
		break;
	default:
		return RPLB_PARSE_IPV4_OTHER;
	}
	if (unlikely(ihl + l4_need > total || ihl + l4_need > l3_room))
		return RPLB_PARSE_L4_BAD;
	if (ip->next_proto_id == IPPROTO_ICMP)
		return RPLB_PARSE_ICMP;
	if (ip->next_proto_id == IPPROTO_TCP) {
		struct rte_tcp_hdr *tcp = out->l4;
		uint32_t doff = (tcp->data_off >> 4) * 4;

		if (unlikely(doff < sizeof(*tcp) || ihl + doff > total))
			return RPLB_PARSE_L4_BAD;
		out->tcp_flags = tcp->tcp_flags;
	} else {
		out->tcp_flags = 0;
	}
	return RPLB_PARSE_TCP_UDP;
}

/* The NIC verified a checksum and found it wrong.  Without RX checksum
 * offload the flags say "unknown" and software rewrites keep a bad checksum
 * bad (RFC 1624 updates are incremental); with TX offload the NIC would
 * recompute it, so such frames must be caught here. */
static inline int
rplb_rx_cksum_bad(const struct rte_mbuf *m)
{
	return (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD ||
	       (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_MASK) == RTE_MBUF_F_RX_L4_CKSUM_BAD;
}

/* Both TCP and UDP start with the source and destination ports. */
struct rplb_l4_ports {
	uint16_t src_port;
	uint16_t dst_port;
};

static inline uint16_t *
rplb_l4_cksum_field(struct rte_ipv4_hdr *ip, void *l4)
{
	if (ip->next_proto_id == IPPROTO_TCP)
		return &((struct rte_tcp_hdr *)l4)->cksum;
	return &((struct rte_udp_hdr *)l4)->dgram_cksum;
}

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

/* Replace one address and one port of a TCP/UDP packet.  Software path:
 * incremental update of both checksums, keeping a UDP checksum of 0 (none)
 * at 0 and never producing 0 for UDP.  Offload path: the NIC computes them
 * from the pseudo-header checksum we leave in the L4 field. */
static inline void
rplb_rewrite_addr_port(struct rte_mbuf *m, struct rplb_parsed *p, void *addr_field,
		       uint16_t *port_field, uint32_t new_addr, uint16_t new_port,
		       int tx_offload)
{
	struct rte_ipv4_hdr *ip = p->ip;
	uint16_t *l4_cksum = rplb_l4_cksum_field(ip, p->l4);
	uint32_t old_addr;
	uint16_t old_port = *port_field;
	int is_udp = ip->next_proto_id == IPPROTO_UDP;

	/* IPv4 addresses sit 2 bytes off a 4-byte boundary behind Ethernet:
	 * memcpy is the defined way to load them (one mov on x86). */
	memcpy(&old_addr, addr_field, sizeof(old_addr));
	memcpy(addr_field, &new_addr, sizeof(new_addr));
	*port_field = new_port;

	if (tx_offload) {
		m->l2_len = sizeof(struct rte_ether_hdr);
		m->l3_len = p->l3_len;
		m->ol_flags |= RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IP_CKSUM;
		ip->hdr_checksum = 0;
		if (is_udp && *l4_cksum == 0)
			return;
		m->ol_flags |= is_udp ? RTE_MBUF_F_TX_UDP_CKSUM : RTE_MBUF_F_TX_TCP_CKSUM;
		*l4_cksum = rte_ipv4_phdr_cksum(ip, m->ol_flags);
		return;
	}

	uint32_t addr_delta = rplb_cksum_delta32(old_addr, new_addr);

	ip->hdr_checksum = rplb_cksum_apply(ip->hdr_checksum, addr_delta);
	if (is_udp && *l4_cksum == 0)
		return;
	*l4_cksum = rplb_cksum_apply(*l4_cksum,
				     addr_delta + rplb_cksum_delta16(old_port, new_port));
	if (is_udp && *l4_cksum == 0)
		*l4_cksum = 0xffff;
}

/* Turn an ICMP echo request to a VIP into the reply, in place: MACs and
 * addresses swapped, type 0, fresh TTL, both checksums updated. */
static inline void
rplb_icmp_echo_to_reply(struct rte_mbuf *m, struct rplb_parsed *p)
{
	struct rte_ether_hdr *eth = rte_pktmbuf_mtod(m, struct rte_ether_hdr *);
	struct rte_ipv4_hdr *ip = p->ip;
	struct rte_icmp_hdr *icmp = p->l4;
	struct rte_ether_addr mac = eth->src_addr;
	uint32_t addr = ip->src_addr;
	uint16_t old_word, new_word;

	eth->src_addr = eth->dst_addr;
	eth->dst_addr = mac;
	ip->src_addr = ip->dst_addr;
	ip->dst_addr = addr;

	/* TTL shares a 16-bit word with the protocol. */
	old_word = *(uint16_t *)&ip->time_to_live;
	ip->time_to_live = 64;
	new_word = *(uint16_t *)&ip->time_to_live;
	ip->hdr_checksum = rplb_cksum_apply(ip->hdr_checksum,
					    rplb_cksum_delta16(old_word, new_word));

	old_word = *(uint16_t *)&icmp->icmp_type;
	icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
	new_word = *(uint16_t *)&icmp->icmp_type;
	icmp->icmp_cksum = rplb_cksum_apply(icmp->icmp_cksum,
					    rplb_cksum_delta16(old_word, new_word));
}

#endif /* RPLB_PACKET_H */
