/* SPDX-License-Identifier: BSD-3-Clause
 *
 * steer.h: which worker owns a frame.  Both directions of a flow must
 * reach the one worker whose flow table holds it, so the owner is a fixed
 * function of the client's address alone:
 *
 *   from the clients (frontend)   the IPv4 source address
 *   from the backends (backend)   the IPv4 destination address
 *   an ICMP error (types 3, 11, 12) about a flow: the client address in
 *                                 the header it quotes (frontend: the quote
 *                                 is vip:port -> client, its destination;
 *                                 backend: client -> backend, its source);
 *                                 in fragments, as any other frame (its
 *                                 fragments must stay together)
 *   not IPv4                      no flow: whoever received it keeps it
 *
 * The address alone, not the ports, so that frames without ports reach
 * the owner too: an IPv4 fragment after the first, an ICMP error.  What it
 * costs: every flow of one client address lands on one worker, so many
 * clients behind one NAT address share a worker (docs/fastpath.md,
 * "Several workers").
 *
 * address -> worker: a hash of the address indexes an indirection table
 * of workers (like a NIC's RSS RETA), filled round robin.
 *   software steering  CRC32 of the address (one instruction);
 *   hardware steering  the NIC spreads by the address itself (rte_flow
 *                      RSS over the source address on the frontend, the
 *                      destination address on the backend, one key): only
 *                      what the NIC cannot hash by the client (ICMP
 *                      errors) is steered here, by a model of the NIC's
 *                      choice: Toeplitz with the same key, its RETA filled
 *                      round robin over the workers' queues.
 *
 * IPv6: the client address (frontend: source, backend: destination)
 * folded to 32 bits (the XOR of its four words) goes through the same
 * owner function; an ICMPv6 error (types 1-4, right after the fixed
 * header) by the client of its quote, as an ICMPv4 error; everything else
 * (extension headers included) by the outer address.  IPv6 frames are
 * always steered here, in software, with hardware steering too: the
 * rte_flow RSS rule covers IPv4 only (dataplane.pyx: steer_by_client), so
 * the port may spread IPv6 any way.
 */
#ifndef RPLB_STEER_H
#define RPLB_STEER_H

#include <stdint.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>

#include <rte_byteorder.h>
#include <rte_common.h>
#include <rte_ether.h>
#include <rte_hash_crc.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_thash.h>
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
#include <nmmintrin.h>
#endif

#include "stats.h"

/* Entries of the indirection table (a power of two): fine enough that
 * workers that do not divide it still get shares within 1/512 of each
 * other. */
#define RPLB_STEER_RETA_SIZE 512
#define RPLB_RSS_KEY_LEN 40

enum rplb_steer_mode {
	RPLB_STEER_SOFTWARE,
	RPLB_STEER_HARDWARE,
};

struct rplb_steering {
	uint32_t mode;              /* enum rplb_steer_mode */
	uint32_t n_workers;
	uint32_t reta_mask;         /* entries in use - 1 */
	uint16_t reta[RPLB_STEER_RETA_SIZE];    /* worker index by hash & reta_mask */
	uint8_t rss_key[RPLB_RSS_KEY_LEN];      /* hardware: the ports' Toeplitz key */
};

/* The seed of the software hash: any constant; not 0, so that the
 * address 0.0.0.0 does not hash to 0. */
#define RPLB_STEER_SEED 0x9e3779b9u

/* The worker that owns a client address (network byte order). */
static inline unsigned int
rplb_steer_owner_of(const struct rplb_steering *steering, uint32_t client)
{
	uint32_t hash;

	if (steering->mode == RPLB_STEER_HARDWARE) {
		uint32_t tuple = rte_be_to_cpu_32(client);

		hash = rte_softrss(&tuple, 1, steering->rss_key);
	} else {
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
		hash = _mm_crc32_u32(RPLB_STEER_SEED, client);
#else
		hash = rte_hash_crc_4byte(client, RPLB_STEER_SEED);
#endif
	}
	return steering->reta[hash & steering->reta_mask];
}

/* The client address of an IPv4 frame from in_side whose protocol is
 * ICMP: of the quoted header if it is an error about a flow, else of the
 * frame itself.  Off the fast path (no common frame is ICMP). */
static inline uint32_t
rplb_steer_icmp_client(const struct rte_mbuf *m, const struct rte_ipv4_hdr *ip,
		       unsigned int in_side)
{
	const uint32_t outer = in_side == RPLB_FRONTEND ? ip->src_addr : ip->dst_addr;
	const uint32_t ihl = (ip->version_ihl & RTE_IPV4_HDR_IHL_MASK) * RTE_IPV4_IHL_MULTIPLIER;
	const uint8_t *icmp = (const uint8_t *)ip + ihl;
	const struct rte_ipv4_hdr *quoted = (const void *)(icmp + sizeof(struct rte_icmp_hdr));
	uint8_t type;

	/* A message in fragments, by its outer address, the first fragment
	 * too: the fragments after it carry no quote, and all of them must
	 * meet on one worker, whose fragment state gives them the first's
	 * verdict (no error in fragments is translated, lb_fragments.c; an
	 * echo request's outer source is the client anyway).  A header that
	 * does not hold the quote: the engine drops or passes it anyway. */
	if (ihl < sizeof(struct rte_ipv4_hdr) ||
	    (ip->fragment_offset & RTE_BE16(RTE_IPV4_HDR_OFFSET_MASK | RTE_IPV4_HDR_MF_FLAG)) ||
	    m->data_len < sizeof(struct rte_ether_hdr) + ihl + sizeof(struct rte_icmp_hdr) +
			  sizeof(struct rte_ipv4_hdr))
		return outer;
	type = icmp[0];
	if (type != ICMP_DEST_UNREACH && type != ICMP_TIME_EXCEEDED && type != ICMP_PARAMETERPROB)
		return outer;
	return in_side == RPLB_FRONTEND ? quoted->dst_addr : quoted->src_addr;
}

/* The 128-bit address folded to the 32 bits the owner function takes. */
static inline uint32_t
rplb_steer_fold6(const uint8_t addr[16])
{
	uint32_t words[4];

	memcpy(words, addr, sizeof(words));
	return words[0] ^ words[1] ^ words[2] ^ words[3];
}

/* A frame that is not IPv4: 1 with *client set for IPv6 (hardware
 * steering too), else 0.  Out of the IPv4 path (its branch exists). */
static inline int
rplb_steer_ipv6_client(const struct rte_mbuf *m, const uint8_t *frame, uint16_t ether_type,
		       unsigned int in_side, uint32_t *client)
{
	const struct rte_ipv6_hdr *ip6 = (const void *)(frame + sizeof(struct rte_ether_hdr));

	const struct rte_ipv6_hdr *quoted = (const void *)((const uint8_t *)(ip6 + 1) + 8);
	const uint8_t *icmp6 = (const uint8_t *)(ip6 + 1);

	if (ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV6) ||
	    m->data_len < sizeof(struct rte_ether_hdr) + sizeof(*ip6))
		return 0;
	/* An ICMPv6 error (types 1-4) right after the fixed header, with the
	 * quoted header in the frame: the client of its quote (frontend: the
	 * quote is vip -> client, its destination; backend: client ->
	 * backend, its source), as for ICMPv4 errors. */
	if (unlikely(ip6->proto == 58) &&
	    m->data_len >= sizeof(struct rte_ether_hdr) + sizeof(*ip6) + 8 + sizeof(*quoted) &&
	    icmp6[0] >= 1 && icmp6[0] <= 4) {
		*client = rplb_steer_fold6(in_side == RPLB_FRONTEND ? quoted->dst_addr :
								      quoted->src_addr);
		return 1;
	}
	*client = rplb_steer_fold6(in_side == RPLB_FRONTEND ? ip6->src_addr : ip6->dst_addr);
	return 1;
}

/* The client address of a frame from in_side (a constant at each call):
 * 1 with *client set, or 0 for a frame that needs no flow (not IPv4).
 * software: every IPv4 frame; hardware: only those the NIC cannot have
 * spread by their client (ICMP), others answer 0 (keep: the NIC chose). */
static __rte_always_inline int
rplb_steer_client(const struct rte_mbuf *m, const unsigned int in_side, const int software,
		  uint32_t *client)
{
	const uint8_t *frame = rte_pktmbuf_mtod(m, const uint8_t *);
	const struct rte_ipv4_hdr *ip = (const void *)(frame + sizeof(struct rte_ether_hdr));
	uint16_t ether_type;

	if (unlikely(m->data_len < sizeof(struct rte_ether_hdr) + sizeof(*ip)))
		return 0;
	memcpy(&ether_type, frame + offsetof(struct rte_ether_hdr, ether_type),
	       sizeof(ether_type));
	if (unlikely(ether_type != RTE_BE16(RTE_ETHER_TYPE_IPV4)))
		return rplb_steer_ipv6_client(m, frame, ether_type, in_side, client);
	if (unlikely(ip->next_proto_id == IPPROTO_ICMP)) {
		*client = rplb_steer_icmp_client(m, ip, in_side);
		return 1;
	}
	if (!software)
		return 0;
	*client = in_side == RPLB_FRONTEND ? ip->src_addr : ip->dst_addr;
	return 1;
}

#endif /* RPLB_STEER_H */
