/* SPDX-License-Identifier: BSD-3-Clause
 *
 * fragment_table.h: the datagrams in fragments (IPv4 and IPv6) one worker
 * is translating, and the fragments it holds until their datagram's first
 * fragment comes.  docs/fastpath.md (3.1) tells why rplb
 * translates fragment by fragment instead of reassembling.
 *
 * A datagram is known by (source, destination, protocol, identification)
 * and the side its fragments arrive on: for IPv4 the header's protocol and
 * 16-bit IP ID, for IPv6 the fragment header's next header and 32-bit
 * identification (RFC 8200, 4.5), the family in the key too.  Both
 * families share one table per worker, and its bounds.  Its first fragment (offset 0) carries the
 * ports, so it alone can be looked up in the flow table; the engine
 * decides there what every fragment of the datagram gets (its verdict:
 * an address rewritten, passed unchanged, answered, dropped) and writes it
 * here, where the fragments after it find it.  Fragments that come before
 * the first are held, in arrival order, and get the verdict when it is
 * known.
 *
 * Each datagram keeps the byte ranges of its payload seen so far, merged
 * into runs, so that:
 *   - a fragment wholly inside a run is a duplicate: dropped alone;
 *   - a fragment that overlaps a run in part, or disagrees with the
 *     datagram's end as its last fragment gave it, drops the datagram
 *     (after Linux's rule since the FragmentSmack fixes);
 *   - when one run covers the whole datagram, the datagram is complete and
 *     forgotten at once: nothing lingers for the timeout on the common
 *     path.
 *
 * Bounds, all set at creation (the services file's `fragments`):
 *   - datagrams at once: a new one takes the slot of the oldest when the
 *     table is full (its held fragments are freed and counted), so a flood
 *     of first fragments never completed cannot stop new datagrams;
 *   - fragments held (mbufs out of the pool): at most `held`; one more is
 *     refused and its datagram dropped, so a flood of fragments whose
 *     first never comes holds at most that many mbufs;
 *   - a datagram older than the timeout is forgotten (housekeeping), its
 *     held fragments freed and counted;
 *   - RPLB_FRAGMENT_RUNS separate runs per datagram (fragments arriving
 *     out of order leave holes between runs; in order or in reverse order
 *     a datagram is one run).
 * Nothing is allocated after creation.
 *
 * Only the owning worker touches it: no locks.
 */
#ifndef RPLB_FRAGMENT_TABLE_H
#define RPLB_FRAGMENT_TABLE_H

#include <stdint.h>
#include <string.h>

#include <rte_mbuf.h>

#define RPLB_FRAGMENT_RUNS 4
#define RPLB_NO_DATAGRAM UINT32_MAX
#define RPLB_NO_HELD UINT16_MAX
/* Limits of the bounds (config.py checks the services file against the
 * same): held fragments are numbered in 16 bits. */
#define RPLB_FRAGMENT_MAX_DATAGRAMS (1u << 20)
#define RPLB_FRAGMENT_MAX_HELD 32768u
#define RPLB_FRAGMENT_MAX_TIMEOUT_S 60
#define RPLB_FRAGMENT_DEFAULT_DATAGRAMS 4096u
#define RPLB_FRAGMENT_DEFAULT_HELD 1024u
#define RPLB_FRAGMENT_DEFAULT_TIMEOUT_S 5

/* What the fragments of a datagram get. */
enum rplb_fragment_verdict {
	RPLB_FRAGMENT_PENDING,      /* its first fragment has not come: later ones wait */
	RPLB_FRAGMENT_TRANSLATE,    /* one address rewritten (new_addr), out the other side */
	RPLB_FRAGMENT_PASS,         /* out the other side unchanged */
	RPLB_FRAGMENT_ECHO,         /* answered: reflected, out the side it came from */
	RPLB_FRAGMENT_DROP,         /* dropped (reason) */
};

/* count: where a translated fragment's packets and bytes are counted. */
#define RPLB_FRAGMENT_COUNT_NONE UINT32_MAX
#define RPLB_FRAGMENT_COUNT_SERVICE 0x80000000u   /* | service id; else a backend slot */

#define RPLB_FRAGMENT_IPV4 4
#define RPLB_FRAGMENT_IPV6 6

/* A datagram's key: 40 bytes, hashed and compared whole. */
struct rplb_fragment_key {
	uint8_t src[16];            /* IPv4: the address in the first 4 bytes, then zeros */
	uint8_t dst[16];
	uint32_t id;                /* IPv4's IP ID (16 bits) or IPv6's identification */
	uint8_t proto;              /* IPv4's protocol, or the fragment header's next header */
	uint8_t side;               /* RPLB_FRONTEND or RPLB_BACKEND: where it arrives */
	uint8_t family;             /* RPLB_FRAGMENT_IPV4 or RPLB_FRAGMENT_IPV6 */
	uint8_t zero;
};

struct rplb_fragment_datagram {
	struct rplb_fragment_key key;
	/* The verdict, once its first fragment came. */
	uint8_t verdict;            /* enum rplb_fragment_verdict */
	/* TRANSLATE, PASS, ECHO: the enum rplb_event its packets count as;
	 * DROP: the enum rplb_drop_reason. */
	uint8_t reason;
	uint8_t n_runs;
	uint8_t last_seen;          /* its last fragment (MF clear) came: end is known */
	uint16_t end;               /* its payload's length, once last_seen */
	uint16_t held;              /* fragments held */
	/* TRANSLATE: replaces the destination (frontend) or source. */
	union {
		uint32_t new_addr;  /* IPv4 */
		uint8_t new_addr6[16];
	};
	uint16_t ip_delta;          /* TRANSLATE, IPv4: the header checksum's change */
	uint16_t first_held;        /* held fragments, in arrival order (RPLB_NO_HELD: none) */
	uint16_t last_held;
	uint16_t reserved;
	uint32_t count;             /* TRANSLATE: RPLB_FRAGMENT_COUNT_* */
	uint32_t created;           /* flow clock */
	/* Age order, oldest first: the timeout and the eviction take the
	 * oldest. */
	uint32_t older;
	uint32_t newer;
	uint16_t runs[RPLB_FRAGMENT_RUNS][2];   /* [start, end) of payload seen, sorted */
};

/* What a fragment adds to its datagram. */
enum rplb_fragment_news {
	RPLB_FRAGMENT_NEW,          /* bytes not seen before */
	RPLB_FRAGMENT_DUPLICATE,    /* wholly inside what came before */
	RPLB_FRAGMENT_OVERLAP,      /* overlaps part of it, or disagrees on the end */
	RPLB_FRAGMENT_SCATTERED,    /* a run more than RPLB_FRAGMENT_RUNS */
};

/* Frames the table freed and datagrams it forgot incomplete, for the
 * engine's counters. */
struct rplb_fragment_losses {
	uint64_t frames;
	uint64_t datagrams;
};

struct rplb_fragment_table {
	struct rplb_fragment_datagram *datagrams;   /* max_datagrams */
	uint32_t *slots;            /* open addressing: datagram index or RPLB_NO_DATAGRAM */
	uint32_t *free_datagrams;   /* a stack */
	struct rte_mbuf **held_frames;              /* max_held */
	uint16_t *held_next;        /* the next held fragment of its datagram, or the free list */
	uint32_t slot_mask;
	uint32_t max_datagrams;
	uint32_t n_free_datagrams;
	uint32_t max_held;
	uint32_t n_held;
	uint16_t free_held;         /* head of the free list of held_frames */
	uint32_t oldest;            /* RPLB_NO_DATAGRAM when empty */
	uint32_t newest;
	uint32_t timeout_ticks;     /* in flow clock ticks */
};

struct rplb_fragment_table *rplb_fragment_table_create(uint32_t max_datagrams,
						       uint32_t max_held, uint32_t timeout_ticks,
						       int socket_id);
/* Frees the held fragments too. */
void rplb_fragment_table_free(struct rplb_fragment_table *table);
/* Bytes a table with these bounds takes (no EAL needed). */
size_t rplb_fragment_table_memory(uint32_t max_datagrams, uint32_t max_held);

/* The key of an IPv4 datagram (addresses in network order). */
static inline void
rplb_fragment_key4(struct rplb_fragment_key *key, uint32_t src_ip, uint32_t dst_ip,
		   uint16_t ip_id, uint8_t proto, uint8_t side)
{
	memset(key, 0, sizeof(*key));
	memcpy(key->src, &src_ip, sizeof(src_ip));
	memcpy(key->dst, &dst_ip, sizeof(dst_ip));
	key->id = ip_id;
	key->proto = proto;
	key->side = side;
	key->family = RPLB_FRAGMENT_IPV4;
}

/* The key of an IPv6 datagram (id as on the wire). */
static inline void
rplb_fragment_key6(struct rplb_fragment_key *key, const uint8_t src[16], const uint8_t dst[16],
		   uint32_t id, uint8_t next_header, uint8_t side)
{
	memcpy(key->src, src, 16);
	memcpy(key->dst, dst, 16);
	key->id = id;
	key->proto = next_header;
	key->side = side;
	key->family = RPLB_FRAGMENT_IPV6;
	key->zero = 0;
}

/* The datagram with this key, or RPLB_NO_DATAGRAM. */
uint32_t rplb_fragment_find(const struct rplb_fragment_table *table,
			    const struct rplb_fragment_key *key);
/* A new datagram with this key (PENDING, no runs), created now; when the
 * table is full, the oldest datagram is forgotten first (its held frames
 * freed, counted in losses).  Never fails while max_datagrams > 0. */
uint32_t rplb_fragment_create(struct rplb_fragment_table *table,
			      const struct rplb_fragment_key *key, uint32_t now,
			      struct rplb_fragment_losses *losses);
/* Record the payload [offset, end) of one fragment (more: MF set). */
enum rplb_fragment_news rplb_fragment_add(struct rplb_fragment_datagram *datagram,
					  uint32_t offset, uint32_t end, int more);
/* The datagram's verdict, for its later fragments (reason: as
 * struct rplb_fragment_datagram's). */
static inline void
rplb_fragment_set_verdict(struct rplb_fragment_datagram *datagram,
			  enum rplb_fragment_verdict verdict, uint8_t reason)
{
	datagram->verdict = (uint8_t)verdict;
	datagram->reason = reason;
}

/* Has one run covered the whole datagram? */
int rplb_fragment_complete(const struct rplb_fragment_datagram *datagram);
/* Hold m until the datagram's verdict; 0, or -1 when max_held are held. */
int rplb_fragment_hold(struct rplb_fragment_table *table, uint32_t index, struct rte_mbuf *m);
/* The datagram's oldest held fragment, no longer held; NULL when none. */
struct rte_mbuf *rplb_fragment_next_held(struct rplb_fragment_table *table, uint32_t index);
/* Forget a datagram; its held fragments are freed and counted (frames). */
void rplb_fragment_remove(struct rplb_fragment_table *table, uint32_t index,
			  struct rplb_fragment_losses *losses);
/* Forget up to budget datagrams older than the timeout (losses: their
 * held frames, and the datagrams).  Returns how many. */
unsigned int rplb_fragment_expire(struct rplb_fragment_table *table, uint32_t now,
				  unsigned int budget, struct rplb_fragment_losses *losses);
/* Forget every datagram (a worker stops): losses as for the timeout. */
void rplb_fragment_flush(struct rplb_fragment_table *table, struct rplb_fragment_losses *losses);

#endif /* RPLB_FRAGMENT_TABLE_H */
