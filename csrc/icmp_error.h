/* SPDX-License-Identifier: BSD-3-Clause
 *
 * icmp_error.h: ICMPv4 errors (destination unreachable, all codes; time
 * exceeded; parameter problem) and the packet each one quotes: parse the
 * quote, rewrite one of its endpoints, keep every checksum right.
 *
 * An error quotes the packet it reports on (RFC 792: its IPv4 header and
 * at least its first 8 bytes, so the TCP/UDP ports; RFC 1812 routers
 * quote as much as fits in 576 bytes).  When rplb rewrote that packet on
 * its way out, the error names the rewritten packet: the engine rewrites
 * the quote back to what the other side sent (and the error's outer
 * address), so the host that sent the packet recognises its own.
 *
 *   +------------+------------------------+-------------------------------+
 *   | IPv4 (out) | ICMP type code cksum   | quoted IPv4 header | quoted   |
 *   | header     | + 4 bytes (MTU, ptr)   | (its checksum)     | L4 ...   |
 *   +------------+------------------------+-------------------------------+
 *                 \____________ the ICMP checksum covers all of this _____/
 *
 * Checksums after a rewrite of a quoted address and port:
 *   - the quoted IPv4 header checksum (always quoted: the header is);
 *   - the quoted L4 checksum, when the quote holds its two bytes: UDP's
 *     lie at bytes 6-7, inside the 8 bytes every quote has; TCP's at
 *     bytes 16-17, so a quote of at least 18 bytes of the TCP header
 *     holds it (RFC 792's 8 bytes do not, and then it is left alone: not
 *     there, nothing to keep right).  It is the checksum of the whole
 *     original segment, so the incremental update (RFC 1624) is exact
 *     however little of the segment is quoted; a UDP checksum of 0 (none)
 *     stays 0;
 *   - the ICMP checksum, by the sum of every 16-bit word changed in the
 *     message (the quote starts 8 bytes into it, and every field changed
 *     lies at an even offset of the quote, so each is a word of the ICMP
 *     checksum).
 * All three are incremental: a checksum that was wrong stays wrong by the
 * same amount, as everywhere in rplb.
 */
#ifndef RPLB_ICMP_ERROR_H
#define RPLB_ICMP_ERROR_H

#include <stdint.h>
#include <string.h>

#include "packet.h"

#define RPLB_ICMP_DEST_UNREACHABLE 3
#define RPLB_ICMP_TIME_EXCEEDED 11
#define RPLB_ICMP_PARAMETER_PROBLEM 12
/* Bytes of the ICMP header before the quote. */
#define RPLB_ICMP_ERROR_HEADER 8
/* The TCP checksum's end in its header: a quote of this many bytes of the
 * TCP header holds it. */
#define RPLB_QUOTED_TCP_CKSUM_END (offsetof(struct rte_tcp_hdr, cksum) + sizeof(uint16_t))

/* The ICMP types that quote a packet and are translated (both ways). */
static inline int
rplb_is_icmp_error(uint8_t type)
{
	return type == RPLB_ICMP_DEST_UNREACHABLE || type == RPLB_ICMP_TIME_EXCEEDED ||
	       type == RPLB_ICMP_PARAMETER_PROBLEM;
}

/* What an error quotes. */
struct rplb_icmp_quote {
	struct rte_icmp_hdr *icmp;      /* the error's ICMP header */
	struct rte_ipv4_hdr *ip;        /* the quoted IPv4 header */
	struct rplb_l4_ports *ports;    /* the quoted TCP/UDP ports */
	uint32_t l4_bytes;              /* bytes of the quoted L4 header and payload */
	uint8_t proto;
};

enum rplb_quote {
	RPLB_QUOTE_TCP_UDP,     /* a TCP/UDP packet, ports quoted: quote filled in */
	RPLB_QUOTE_OTHER,       /* a whole quote of another protocol: nothing to translate */
	RPLB_QUOTE_BAD,         /* too short or broken: no packet to name */
};

/* The quote of an ICMP error whose outer headers rplb_parse_ipv4 accepted
 * (parsed: ip, and l4 the ICMP header).  The whole ICMP message must lie
 * in the first segment (an error is at most 576 bytes, RFC 1812; a jumbo
 * one is refused as BAD rather than half rewritten).  BAD: less than an
 * IPv4 header and 8 bytes quoted, a quoted header that is not IPv4 or
 * longer than the quote, or a quoted fragment after the first (it has no
 * ports). */
static inline enum rplb_quote
rplb_parse_icmp_quote(const struct rte_mbuf *m, const struct rplb_parsed *parsed,
		      struct rplb_icmp_quote *quote)
{
	const struct rte_ipv4_hdr *ip = parsed->ip;
	uint32_t outer_ihl = (uint32_t)((uint8_t *)parsed->l4 - (uint8_t *)ip);
	uint32_t message = rte_be_to_cpu_16(ip->total_length) - outer_ihl;
	uint32_t inner_ihl;
	struct rte_ipv4_hdr *inner;

	if (message > m->data_len - sizeof(struct rte_ether_hdr) - outer_ihl ||
	    message < RPLB_ICMP_ERROR_HEADER + sizeof(struct rte_ipv4_hdr) + 8)
		return RPLB_QUOTE_BAD;
	inner = (struct rte_ipv4_hdr *)((uint8_t *)parsed->l4 + RPLB_ICMP_ERROR_HEADER);
	inner_ihl = (inner->version_ihl & RTE_IPV4_HDR_IHL_MASK) * 4;
	if ((inner->version_ihl >> 4) != 4 || inner_ihl < sizeof(*inner) ||
	    RPLB_ICMP_ERROR_HEADER + inner_ihl + 8 > message)
		return RPLB_QUOTE_BAD;
	if (inner->fragment_offset & RTE_BE16(RTE_IPV4_HDR_OFFSET_MASK))
		return RPLB_QUOTE_BAD;
	if (inner->next_proto_id != IPPROTO_TCP && inner->next_proto_id != IPPROTO_UDP)
		return RPLB_QUOTE_OTHER;
	quote->icmp = parsed->l4;
	quote->ip = inner;
	quote->ports = (struct rplb_l4_ports *)((uint8_t *)inner + inner_ihl);
	quote->l4_bytes = message - RPLB_ICMP_ERROR_HEADER - inner_ihl;
	quote->proto = inner->next_proto_id;
	return RPLB_QUOTE_TCP_UDP;
}

/* Replace a 16-bit field of the ICMP message; returns the change to add
 * to the ICMP checksum's sum. */
static inline uint32_t
rplb_quote_store16(uint16_t *field, uint16_t value)
{
	uint16_t old_value = *field;

	*field = value;
	return rplb_cksum_delta16(old_value, value);
}

/* Rewrite one endpoint of the quoted packet, (addr_field, port_field)
 * (the quote's source or destination), to (new_addr, new_port), with its
 * IPv4 and L4 checksums and the ICMP checksum (see the top of this
 * file). */
static inline void
rplb_rewrite_quote(struct rplb_icmp_quote *quote, void *addr_field, uint16_t *port_field,
		   uint32_t new_addr, uint16_t new_port)
{
	struct rte_ipv4_hdr *ip = quote->ip;
	uint32_t old_addr;
	uint16_t old_port = *port_field, *l4_cksum = NULL;
	struct rplb_cksum_deltas deltas;
	uint32_t icmp_sum;

	memcpy(&old_addr, addr_field, sizeof(old_addr));
	deltas = rplb_cksum_deltas(old_addr, old_port, new_addr, new_port);
	memcpy(addr_field, &new_addr, sizeof(new_addr));
	icmp_sum = rplb_cksum_delta32(old_addr, new_addr);
	icmp_sum += rplb_quote_store16(port_field, new_port);
	icmp_sum += rplb_quote_store16(&ip->hdr_checksum,
				       rplb_cksum_update(ip->hdr_checksum, deltas.ip));
	if (quote->proto == IPPROTO_UDP) {
		/* Every quote holds it (the caller's 8 bytes). */
		l4_cksum = &((struct rte_udp_hdr *)quote->ports)->dgram_cksum;
		if (*l4_cksum != 0) {
			uint16_t updated = rplb_cksum_update(*l4_cksum, deltas.l4);

			icmp_sum += rplb_quote_store16(l4_cksum, updated == 0 ? 0xffff : updated);
		}
	} else if (quote->l4_bytes >= RPLB_QUOTED_TCP_CKSUM_END) {
		l4_cksum = &((struct rte_tcp_hdr *)quote->ports)->cksum;
		icmp_sum += rplb_quote_store16(l4_cksum, rplb_cksum_update(*l4_cksum, deltas.l4));
	}
	quote->icmp->icmp_cksum = rplb_cksum_apply(quote->icmp->icmp_cksum, icmp_sum);
}

#endif /* RPLB_ICMP_ERROR_H */
