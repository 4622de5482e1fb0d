/* SPDX-License-Identifier: BSD-3-Clause
 *
 * flow_table.h: the flows of one worker lcore.  docs/fastpath.md draws
 * every structure here.
 *
 * One 32-byte record per flow, reachable through two keys: the client-side
 * 5-tuple (client -> vip:port) and the backend-side one (backend -> client),
 * so both directions find it with one bulk lookup.
 *
 * The index is a bucketised cuckoo hash built for this one job (after
 * Katran's and GLB's "flow table is the fast path" lesson): a bucket is one
 * cache line of 8 (32-bit signature, 32-bit reference) pairs, a reference
 * is the record's byte offset | direction, and keys are not stored at all: a
 * signature match is confirmed against the record, which the packet needs
 * next anyway.  A lookup therefore touches one bucket line and one record,
 * both prefetched a burst ahead.  Each key may live in one of two buckets
 * (primary, secondary); a bit per bucket says whether any key of that
 * primary bucket lives in its secondary one, so a miss usually reads one
 * bucket only.
 *
 * Invariants (the fast path's compares rely on them):
 *   - record 0 is the sentinel: never a flow, all zero but its state
 *     (FREE).  An empty slot's reference (RPLB_EMPTY_REF) names it, so
 *     every reference names readable memory.
 *   - records are 32 bytes and a reference is index << 5 | direction: a
 *     record is one add from its reference (rplb_ref_record), and a
 *     reference of the other direction is one byte off its record, still
 *     inside the array (the client-key compare reads there on purpose:
 *     rplb_flow_is_first_match).
 *   - a record's state byte is never IPPROTO_TCP or IPPROTO_UDP, so the
 *     one-byte-off read can never equal a client key.
 *   - overflow bit b is set exactly while some key whose primary bucket is
 *     b lives in its secondary bucket (spilled[b] of them).
 *
 * Only the owning worker touches it: no locks, no RCU, no atomics.  Records
 * come from a preallocated stack and the buckets are sized for the record
 * count at most 85% full: nothing is allocated per packet.
 */
#ifndef RPLB_FLOW_TABLE_H
#define RPLB_FLOW_TABLE_H

#include <stdint.h>
#include <string.h>

#include <rte_byteorder.h>
#include <rte_common.h>
#include <rte_debug.h>
#include <rte_hash_crc.h>
#include <rte_prefetch.h>
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
#include <nmmintrin.h>
#endif
#include <stddef.h>

#include "packet.h"

#define RPLB_NO_FLOW UINT32_MAX
#define RPLB_FLOW_FREE 0xff             /* rplb_flow.state of an unused record */
#define RPLB_BUCKET_SLOTS 8             /* per bucket: 8 x (4 + 4) bytes, one cache line */
/* A reference is a record's byte offset in the array, the key's direction
 * in its bit 0 (records are 32 bytes: the low bits are free), so a record
 * is one add from its reference (rplb_ref_record), not a shift and a
 * multiply. */
#define RPLB_REF_SHIFT 5
/* Record 0 is never a flow: a sentinel that holds no key (all zero, state
 * FREE), so every reference, EMPTY included, and every first match, no
 * match included, names readable memory that a compare may read
 * (rplb_flow_is_first_match): the resolve loop compares without first
 * testing whether there was a match at all. */
#define RPLB_SENTINEL_RECORD 0
#define RPLB_FIRST_FLOW_RECORD (RPLB_SENTINEL_RECORD + 1)   /* the first record a flow may take */
/* The reference of an empty slot: the sentinel's, backend-side (bit 0
 * set), so no client-side reference equals it. */
#define RPLB_EMPTY_REF 1
#define RPLB_EMPTY_SIG 0                /* signature of an empty slot */
/* Flows in a table at most (records 1..capacity): references fit 32 bits. */
#define RPLB_FLOW_TABLE_MAX_CAPACITY ((UINT32_MAX >> RPLB_REF_SHIFT) - 1)

struct rplb_flow {
	/* The client-side 5-tuple: client_ip..proto in the order of struct
	 * rplb_flow_key's first 13 bytes, so a client key compares in one
	 * 16-byte load (rplb_flow_has_key_in). */
	uint32_t client_ip;
	uint32_t vip;
	uint16_t client_port;
	uint16_t vport;
	uint8_t proto;
	uint8_t state;              /* enum rplb_flow_state, or RPLB_FLOW_FREE */
	/* The TCP flags that may move the flow out of its state (the engine
	 * keeps it with the state): one test settles nearly every packet. */
	uint8_t state_change_flags;
	uint8_t reserved;
	uint32_t backend_ip;
	uint16_t backend_port;
	uint16_t service_id;
	uint32_t backend_id;
	uint32_t last_seen;         /* rplb_flow_clock() ticks */
} __rte_aligned(32);

struct rplb_flow_bucket {
	uint32_t sig[RPLB_BUCKET_SLOTS];  /* the key's full 32-bit hash */
	uint32_t ref[RPLB_BUCKET_SLOTS];  /* rplb_flow_ref(), or EMPTY */
} __rte_cache_aligned;

struct rplb_flow_table {
	struct rplb_flow_bucket *buckets;
	struct rplb_flow *flows;         /* capacity + 1: the sentinel, then the flows */
	uint32_t *free_stack;
	/* Bit b: some key whose primary bucket is b lives in its secondary
	 * bucket now.  Where it is clear, a key missing from its primary
	 * bucket is missing: a new flow's lookup never reads its secondary
	 * bucket, a cold line in a large table.  One bit per bucket stays in
	 * cache. */
	uint64_t *overflowed;
	/* spilled[b]: how many keys whose primary bucket is b live in their
	 * secondary bucket; bit b is cleared when it falls to 0, so under
	 * churn the bits follow the keys instead of piling up.  Saturates at
	 * UINT8_MAX, and then stays (the bit stays set: a slower miss, never
	 * a lost key).  Touched only where a key moves into or out of its
	 * secondary bucket, never by a lookup. */
	uint8_t *spilled;
	uint32_t bucket_mask;
	uint32_t secondary_shift;        /* 32 - log2(bucket count) */
	uint32_t free_count;
	uint32_t capacity;
	uint32_t aging_cursor;
	uint32_t clock_shift;            /* tsc >> clock_shift = flow clock tick */
	int from_mmap;                   /* arrays from mmap, not the DPDK heap */
};

static inline uint32_t
rplb_flow_ref(uint32_t index, uint8_t direction)
{
	RTE_BUILD_BUG_ON(sizeof(struct rplb_flow) != 1u << RPLB_REF_SHIFT);
	return index << RPLB_REF_SHIFT | direction;
}

static inline uint32_t
rplb_ref_index(uint32_t ref)
{
	return ref >> RPLB_REF_SHIFT;
}

/* The record of a reference of this direction: the reference's byte
 * offset minus the direction bit, one add.  For a reference of the other
 * direction the result is one byte off a record: client-side (direction
 * 0) it is one byte into the record (or, for EMPTY, into the sentinel),
 * where a 16-byte read stays inside that record and the client-key
 * compare may read; backend-side (direction 1) it is one byte before the
 * record, good only for a prefetch, which never faults.  It is computed
 * as an integer, not as pointer arithmetic past the array. */
static __rte_always_inline struct rplb_flow *
rplb_ref_record(const struct rplb_flow_table *table, uint32_t ref, const uint8_t direction)
{
	return (struct rplb_flow *)((uintptr_t)table->flows + ref - direction);
}

struct rplb_flow_table *rplb_flow_table_create(uint32_t capacity, int socket_id);
void rplb_flow_table_free(struct rplb_flow_table *table);
/* Bytes the table's arrays take (DPDK heap or anonymous memory). */
size_t rplb_flow_table_bytes(const struct rplb_flow_table *table);
/* Bytes a table of this capacity takes, its header included, computed
 * without creating it (no EAL needed): what rplb_flow_table_create
 * allocates, the allocator's own overhead aside. */
size_t rplb_flow_table_memory(uint32_t capacity);
/* Forget every flow (the benchmark's "new flows" case refills it). */
void rplb_flow_table_reset(struct rplb_flow_table *table);
/* Bytes one stored flow costs in a table of this capacity: its record, its
 * free-stack entry and its share of the buckets. */
size_t rplb_flow_table_bytes_per_flow(uint32_t capacity);
/* The flow clock: tsc >> shift, with a 32-bit tick that wraps after no less
 * than four days (twice the longest timeout), so idle times compare
 * modulo 2^32 and a record stays 32 bytes. */
uint32_t rplb_flow_clock_shift(uint64_t tsc_hz);

/* Free a slot in one of the two buckets of hash (cuckoo moves); returns
 * the bucket index, or -1 when no path of moves was found. */
int64_t rplb_flow_make_room(struct rplb_flow_table *table, uint32_t hash);

static inline uint32_t
rplb_flow_clock(const struct rplb_flow_table *table, uint64_t tsc)
{
	return (uint32_t)(tsc >> table->clock_shift);
}

/* rte_hash_crc(key, 16, 0) of a key given as its two 64-bit words,
 * without the loop and the run-time check of the CRC32 instruction (the
 * build's -march has SSE4.2). */
static inline uint32_t
rplb_flow_words_hash(uint64_t w0, uint64_t w1)
{
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_2__)
	return (uint32_t)_mm_crc32_u64(_mm_crc32_u64(0, w0), w1);
#else
	return rte_hash_crc_8byte(w1, rte_hash_crc_8byte(w0, 0));
#endif
}

#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
/* A key's second 64-bit word, built in a register: its ports (the two as
 * they lie in memory, source first), protocol and direction, zero fill.
 * Built in memory, a key's narrow stores and wide loads miss store
 * forwarding.  (Its first word is its two addresses, source first.) */
static __rte_always_inline uint64_t
rplb_flow_key_word1(uint64_t ports, uint8_t proto, uint8_t direction)
{
	RTE_BUILD_BUG_ON(offsetof(struct rplb_flow_key, dst_ip) != 4 ||
			 offsetof(struct rplb_flow_key, src_port) != 8 ||
			 offsetof(struct rplb_flow_key, dst_port) != 10 ||
			 offsetof(struct rplb_flow_key, proto) != 12 ||
			 offsetof(struct rplb_flow_key, direction) != 13 ||
			 sizeof(struct rplb_flow_key) != 16);
	return ports | (uint64_t)proto << 32 | (uint64_t)direction << 40;
}
#endif

static inline uint32_t
rplb_flow_key_hash(const struct rplb_flow_key *key)
{
	uint64_t words[2];

	memcpy(words, key, sizeof(words));
	return rplb_flow_words_hash(words[0], words[1]);
}

/* A key's two buckets: the low bits of its hash, and the high bits of the
 * hash times the golden ratio (independent enough of the low bits). */
static inline uint32_t
rplb_primary_bucket(const struct rplb_flow_table *table, uint32_t hash)
{
	return hash & table->bucket_mask;
}

static inline uint32_t
rplb_secondary_bucket(const struct rplb_flow_table *table, uint32_t hash)
{
	return (uint32_t)((hash * 0x9e3779b1u) >> table->secondary_shift) & table->bucket_mask;
}

static inline int
rplb_bucket_overflowed(const struct rplb_flow_table *table, uint32_t bucket)
{
	return (table->overflowed[bucket / 64] >> (bucket % 64)) & 1;
}

/* One more key of primary bucket `primary` lives in its secondary bucket:
 * lookups that miss in `primary` must read the secondary bucket too. */
static inline void
rplb_note_spilled(struct rplb_flow_table *table, uint32_t primary)
{
	if (table->spilled[primary] != UINT8_MAX)
		table->spilled[primary]++;
	table->overflowed[primary / 64] |= 1ull << (primary % 64);
}

/* One key of primary bucket `primary` left its secondary bucket; when it
 * was the last, misses in `primary` read one bucket again.  A saturated
 * count is no longer known, so it stays (and the bit with it). */
static inline void
rplb_note_unspilled(struct rplb_flow_table *table, uint32_t primary)
{
	RTE_ASSERT(table->spilled[primary] > 0);
	if (table->spilled[primary] == UINT8_MAX)
		return;
	if (--table->spilled[primary] == 0)
		table->overflowed[primary / 64] &= ~(1ull << (primary % 64));
}

/* A key of primary bucket `primary` now lies in bucket `bucket`. */
static inline void
rplb_note_placement(struct rplb_flow_table *table, uint32_t primary, uint32_t bucket)
{
	if (bucket != primary)
		rplb_note_spilled(table, primary);
}

/* Bit i set where word i of the bucket's 8 equals value. */
static __rte_always_inline uint32_t
rplb_bucket_match(const uint32_t words[RPLB_BUCKET_SLOTS], uint32_t value)
{
#if defined(RTE_ARCH_X86_64)
	__m128i v = _mm_set1_epi32((int)value);
	__m128i lo = _mm_cmpeq_epi32(_mm_load_si128((const __m128i *)words), v);
	__m128i hi = _mm_cmpeq_epi32(_mm_load_si128((const __m128i *)words + 1), v);

	return (uint32_t)_mm_movemask_ps(_mm_castsi128_ps(lo)) |
	       (uint32_t)_mm_movemask_ps(_mm_castsi128_ps(hi)) << 4;
#else
	uint32_t mask = 0, i;

	for (i = 0; i < RPLB_BUCKET_SLOTS; i++)
		mask |= (uint32_t)(words[i] == value) << i;
	return mask;
#endif
}

/* The lowest set bit of a non-zero mask of matches, as an index.  On
 * x86-64 a 32-bit bsf, whose write zero-extends: the compiler's ctz
 * returns an int, which costs a zero-extension before it can index. */
static __rte_always_inline uint64_t
rplb_first_slot(uint32_t matches)
{
#if defined(RTE_ARCH_X86_64)
	uint64_t slot;

	asm("bsf %k1, %k0" : "=r" (slot) : "rm" (matches) : "cc");
	return slot;
#else
	return (uint32_t)__builtin_ctz(matches);
#endif
}

/* Start loading the bucket a lookup of hash reads first; returns it, for
 * rplb_flow_match_first. */
static inline const struct rplb_flow_bucket *
rplb_flow_prefetch(const struct rplb_flow_table *table, uint32_t hash)
{
	const struct rplb_flow_bucket *bucket = &table->buckets[rplb_primary_bucket(table, hash)];

	rte_prefetch0(bucket);
	return bucket;
}

static inline void
rplb_client_key(const struct rplb_flow *flow, struct rplb_flow_key *key)
{
	*key = (struct rplb_flow_key){
		.src_ip = flow->client_ip, .dst_ip = flow->vip,
		.src_port = flow->client_port, .dst_port = flow->vport,
		.proto = flow->proto, .direction = RPLB_DIR_CLIENT,
	};
}

/* Does the record hold this key, a key of that direction? */
static __rte_always_inline int
rplb_flow_has_key_in(const struct rplb_flow *flow, const struct rplb_flow_key *key,
		     const uint8_t direction)
{
	RTE_BUILD_BUG_ON(offsetof(struct rplb_flow, proto) != offsetof(struct rplb_flow_key, proto) ||
			 offsetof(struct rplb_flow, vport) != offsetof(struct rplb_flow_key, dst_port));
	if (direction == RPLB_DIR_CLIENT) {
		/* client_ip..proto line up with the key's first 13 bytes.  An
		 * unaligned load: rplb_flow_is_first_match reads through
		 * references of the other direction, one byte off a record. */
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_1__)
		const __m128i first13 = _mm_set_epi32(0x000000ff, -1, -1, -1);
		__m128i diff = _mm_xor_si128(_mm_loadu_si128((const __m128i *)key),
					     _mm_loadu_si128((const __m128i *)(const void *)flow));

		return _mm_testz_si128(diff, first13);
#else
		uint64_t key_addrs, flow_addrs;
		uint32_t key_ports, flow_ports;

		memcpy(&key_addrs, key, sizeof(key_addrs));
		memcpy(&flow_addrs, &flow->client_ip, sizeof(flow_addrs));
		memcpy(&key_ports, &key->src_port, sizeof(key_ports));
		memcpy(&flow_ports, &flow->client_port, sizeof(flow_ports));
		return key_addrs == flow_addrs && key_ports == flow_ports &&
		       key->proto == flow->proto;
#endif
	}
	return key->src_ip == flow->backend_ip && key->dst_ip == flow->client_ip &&
	       key->src_port == flow->backend_port && key->dst_port == flow->client_port &&
	       key->proto == flow->proto;
}

static inline int
rplb_flow_has_key(const struct rplb_flow *flow, const struct rplb_flow_key *key)
{
	return rplb_flow_has_key_in(flow, key, key->direction);
}

/* The record of key among the signature matches of one bucket. */
static inline uint32_t
rplb_bucket_find(const struct rplb_flow_table *table, const struct rplb_flow_bucket *bucket,
		 uint32_t matches, const struct rplb_flow_key *key)
{
	while (matches != 0) {
		uint32_t ref = bucket->ref[__builtin_ctz(matches)];

		if (ref != RPLB_EMPTY_REF && (ref & 1) == key->direction &&
		    rplb_flow_has_key(&table->flows[rplb_ref_index(ref)], key))
			return rplb_ref_index(ref);
		matches &= matches - 1;
	}
	return RPLB_NO_FLOW;
}

/* The record index of key, or RPLB_NO_FLOW. */
static inline uint32_t
rplb_flow_lookup(const struct rplb_flow_table *table, const struct rplb_flow_key *key,
		 uint32_t hash)
{
	const struct rplb_flow_bucket *bucket = &table->buckets[rplb_primary_bucket(table, hash)];
	uint32_t index = rplb_bucket_find(table, bucket, rplb_bucket_match(bucket->sig, hash), key);

	if (index != RPLB_NO_FLOW || !rplb_bucket_overflowed(table, rplb_primary_bucket(table, hash)))
		return index;
	bucket = &table->buckets[rplb_secondary_bucket(table, hash)];
	return rplb_bucket_find(table, bucket, rplb_bucket_match(bucket->sig, hash), key);
}

/* The first match of a key whose primary bucket had no signature match:
 * the sentinel record, aligned (a reference of a client key never names
 * it; EMPTY names it one byte off). */
static __rte_always_inline struct rplb_flow *
rplb_sentinel(const struct rplb_flow_table *table)
{
	return &table->flows[RPLB_SENTINEL_RECORD];
}

/* First pass of a bulk lookup (the loads of a burst overlap), one key of
 * direction: the reference in the first slot of its primary bucket
 * (bucket, loaded by rplb_flow_prefetch while the burst was classified)
 * whose signature matches, with that record (*first, see rplb_ref_record)
 * prefetched; or RPLB_EMPTY_REF where nothing matched (a likely miss), with
 * *first the sentinel itself (rplb_sentinel), *unmatched set and the
 * secondary bucket prefetched.  The first match is nearly always the flow
 * (a false match needs two equal 32-bit hashes in one bucket);
 * rplb_flow_is_first_match settles it. */
static __rte_always_inline uint32_t
rplb_flow_match_first(const struct rplb_flow_table *table, const struct rplb_flow_bucket *bucket,
		      uint32_t hash, const uint8_t direction, struct rplb_flow **first,
		      int *unmatched)
{
	uint32_t matches = rplb_bucket_match(bucket->sig, hash);
	uint32_t ref;

	if (likely(matches != 0)) {
		/* An EMPTY reference (a hash equal to an empty slot's signature)
		 * gives the sentinel too: client-side, one byte into it, which
		 * rplb_sentinel does not equal. */
		ref = bucket->ref[rplb_first_slot(matches)];
		*first = rplb_ref_record(table, ref, direction);
		rte_prefetch0(*first);
		return ref;
	}
	if (rplb_bucket_overflowed(table, rplb_primary_bucket(table, hash)))
		rte_prefetch0(&table->buckets[rplb_secondary_bucket(table, hash)]);
	*first = rplb_sentinel(table);
	*unmatched = 1;
	return RPLB_EMPTY_REF;
}

/* The record index of a key whose primary bucket had no signature match
 * (rplb_flow_match_first gave EMPTY): only its secondary bucket can hold
 * it, and only if its primary bucket ever overflowed; unless its hash
 * equals an empty slot's signature, when EMPTY may have come from such a
 * slot. */
static __rte_always_inline uint32_t
rplb_flow_lookup_unmatched(const struct rplb_flow_table *table, const struct rplb_flow_key *key,
			   uint32_t hash)
{
	const struct rplb_flow_bucket *bucket;

	if (unlikely(hash == RPLB_EMPTY_SIG))
		return rplb_flow_lookup(table, key, hash);
	if (!rplb_bucket_overflowed(table, rplb_primary_bucket(table, hash)))
		return RPLB_NO_FLOW;
	bucket = &table->buckets[rplb_secondary_bucket(table, hash)];
	return rplb_bucket_find(table, bucket, rplb_bucket_match(bucket->sig, hash), key);
}

/* Second pass, one key (of a direction known here): does the first match
 * (first_ref, whose record is first: rplb_flow_match_first) hold it?
 * Nearly always.  first is readable whatever matched: no match and EMPTY
 * give the sentinel, which holds no key. */
static __rte_always_inline int
rplb_flow_is_first_match(const struct rplb_flow_key *key, uint32_t first_ref,
			 const struct rplb_flow *first, const uint8_t direction)
{
	RTE_ASSERT(key->direction == direction);
#if defined(RTE_ARCH_X86_64) && defined(__SSE4_1__)
	/* A client key needs no direction test: through a backend-side
	 * reference, first is one byte into a record (or the sentinel), whose
	 * bytes 1..13 hold no client key, since the key's 13th byte, its
	 * protocol (TCP or UDP), would have to equal the record's state byte
	 * (the engine keeps states below 6, and FREE is 0xff). */
	RTE_BUILD_BUG_ON(offsetof(struct rplb_flow, state) != offsetof(struct rplb_flow, proto) + 1 ||
			 RPLB_FLOW_FREE == IPPROTO_TCP || RPLB_FLOW_FREE == IPPROTO_UDP);
	if (direction == RPLB_DIR_CLIENT)
		return rplb_flow_has_key_in(first, key, RPLB_DIR_CLIENT);
#endif
	return (first_ref & 1) == direction && rplb_flow_has_key_in(first, key, direction);
}

/* Second pass, one key: its record index from the first match, or by a
 * fuller lookup where that was not it. */
static __rte_always_inline uint32_t
rplb_flow_confirm(const struct rplb_flow_table *table, const struct rplb_flow_key *key,
		  uint32_t hash, uint32_t first_ref, const uint8_t direction)
{
	if (likely(rplb_flow_is_first_match(key, first_ref,
					    rplb_ref_record(table, first_ref, direction),
					    direction)))
		return rplb_ref_index(first_ref);
	if (first_ref == RPLB_EMPTY_REF)
		return rplb_flow_lookup_unmatched(table, key, hash);
	return rplb_flow_lookup(table, key, hash);
}

/* Look up n keys (n <= 64) of one direction: the buckets prefetched, then
 * the two passes above (the engine does the same across its passes).
 * Returns how many keys were not found. */
static __rte_always_inline unsigned int
rplb_flow_lookup_bulk(const struct rplb_flow_table *table, const struct rplb_flow_key *keys,
		      size_t key_stride, const uint32_t *hashes, unsigned int n,
		      const uint8_t direction, uint32_t *index_out)
{
	const struct rplb_flow_bucket *buckets[64];
	uint32_t first_ref[64];
	unsigned int i, missing = 0;

	for (i = 0; i < n; i++)
		buckets[i] = rplb_flow_prefetch(table, hashes[i]);
	for (i = 0; i < n; i++) {
		struct rplb_flow *first;
		int unmatched;

		first_ref[i] = rplb_flow_match_first(table, buckets[i], hashes[i], direction, &first,
						     &unmatched);
	}
	for (i = 0; i < n; i++) {
		const struct rplb_flow_key *key =
			(const struct rplb_flow_key *)((const char *)keys + i * key_stride);

		index_out[i] = rplb_flow_confirm(table, key, hashes[i], first_ref[i], direction);
		missing += index_out[i] == RPLB_NO_FLOW;
	}
	return missing;
}

/* The first of hash's two buckets with slots whose reference is ref
 * (EMPTY: free slots), and those slots as a bit mask; NULL when neither
 * bucket has one. */
static inline struct rplb_flow_bucket *
rplb_slots_holding(struct rplb_flow_table *table, uint32_t hash, uint32_t ref,
		   uint32_t *slots)
{
	struct rplb_flow_bucket *bucket = &table->buckets[rplb_primary_bucket(table, hash)];

	*slots = rplb_bucket_match(bucket->ref, ref);
	if (*slots != 0)
		return bucket;
	bucket = &table->buckets[rplb_secondary_bucket(table, hash)];
	*slots = rplb_bucket_match(bucket->ref, ref);
	return *slots != 0 ? bucket : NULL;
}

/* Put ref under hash; 0, or -1 when both buckets are full and no cuckoo
 * path frees one.  A free slot in the primary bucket, nearly always, takes
 * it without a word about spills. */
static __rte_always_inline int
rplb_link_key(struct rplb_flow_table *table, uint32_t hash, uint32_t ref)
{
	struct rplb_flow_bucket *bucket = &table->buckets[rplb_primary_bucket(table, hash)];
	uint32_t free_slots = rplb_bucket_match(bucket->ref, RPLB_EMPTY_REF);

	if (likely(free_slots != 0)) {
		bucket->sig[__builtin_ctz(free_slots)] = hash;
		bucket->ref[__builtin_ctz(free_slots)] = ref;
		return 0;
	}
	bucket = &table->buckets[rplb_secondary_bucket(table, hash)];
	free_slots = rplb_bucket_match(bucket->ref, RPLB_EMPTY_REF);
	if (free_slots == 0) {
		int64_t room = rplb_flow_make_room(table, hash);

		if (room < 0)
			return -1;
		bucket = &table->buckets[room];
		free_slots = rplb_bucket_match(bucket->ref, RPLB_EMPTY_REF);
		RTE_ASSERT(free_slots != 0);
	}
	rplb_note_placement(table, rplb_primary_bucket(table, hash),
			    (uint32_t)(bucket - table->buckets));
	bucket->sig[__builtin_ctz(free_slots)] = hash;
	bucket->ref[__builtin_ctz(free_slots)] = ref;
	return 0;
}

/* Remove ref from hash's buckets (no-op when it is not there). */
static inline void
rplb_unlink_key(struct rplb_flow_table *table, uint32_t hash, uint32_t ref)
{
	uint32_t slots, primary = rplb_primary_bucket(table, hash);
	struct rplb_flow_bucket *bucket = rplb_slots_holding(table, hash, ref, &slots);

	if (bucket == NULL)
		return;
	bucket->sig[__builtin_ctz(slots)] = RPLB_EMPTY_SIG;
	bucket->ref[__builtin_ctz(slots)] = RPLB_EMPTY_REF;
	if (unlikely(bucket != &table->buckets[primary]))
		rplb_note_unspilled(table, primary);
}

/* The hash of a backend-side key: the backend's reply to the client (its
 * words in registers where the byte order allows, rplb_flow_key_word1: on
 * the path of every new flow). */
static inline uint32_t
rplb_backend_side_hash(uint32_t backend_ip, uint16_t backend_port, uint32_t client_ip,
		       uint16_t client_port, uint8_t proto)
{
#if RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN
	return rplb_flow_words_hash(backend_ip | (uint64_t)client_ip << 32,
				    rplb_flow_key_word1(backend_port | (uint64_t)client_port << 16,
							proto, RPLB_DIR_BACKEND));
#else
	struct rplb_flow_key key = {
		.src_ip = backend_ip, .dst_ip = client_ip,
		.src_port = backend_port, .dst_port = client_port,
		.proto = proto, .direction = RPLB_DIR_BACKEND,
	};

	return rplb_flow_key_hash(&key);
#endif
}

/* The backend-side hash of a stored flow. */
static inline uint32_t
rplb_flow_backend_hash(const struct rplb_flow *flow)
{
	return rplb_backend_side_hash(flow->backend_ip, flow->backend_port, flow->client_ip,
				      flow->client_port, flow->proto);
}

/* The backend-side hash a new flow of client_key will have. */
static inline uint32_t
rplb_flow_backend_key_hash(const struct rplb_flow_key *client_key, uint32_t backend_ip,
			   uint16_t backend_port)
{
	return rplb_backend_side_hash(backend_ip, backend_port, client_key->src_ip,
				      client_key->src_port, client_key->proto);
}

/* Could a key with this hash be stored already?  For nearly every new
 * key, no: no signature of its primary bucket equals its hash, and no key
 * of that bucket lives in its secondary bucket.  Yes only means: look it
 * up. */
static __rte_always_inline int
rplb_flow_hash_may_be_stored(const struct rplb_flow_table *table, uint32_t hash)
{
	const uint32_t primary = rplb_primary_bucket(table, hash);

	return rplb_bucket_match(table->buckets[primary].sig, hash) != 0 ||
	       rplb_bucket_overflowed(table, primary);
}

/* The record holding the backend-side key (backend ip:port -> client
 * ip:port, proto) whose hash is backend_hash, or RPLB_NO_FLOW. */
static inline uint32_t
rplb_flow_lookup_backend_side(const struct rplb_flow_table *table, uint32_t backend_ip,
			      uint16_t backend_port, uint32_t client_ip, uint16_t client_port,
			      uint8_t proto, uint32_t backend_hash)
{
	const struct rplb_flow_key key = {
		.src_ip = backend_ip, .dst_ip = client_ip,
		.src_port = backend_port, .dst_port = client_port,
		.proto = proto, .direction = RPLB_DIR_BACKEND,
	};

	return rplb_flow_lookup(table, &key, backend_hash);
}

/* Store a new flow under both keys (backend_hash: of its backend-side
 * key).  Returns its record index (the caller fills service_id,
 * backend_id, state and last_seen), or RPLB_NO_FLOW when the table is full
 * (nothing is left half-inserted).  Two flows must never share a
 * backend-side key: the caller makes sure no flow holds it (the engine
 * asks rplb_flow_hash_may_be_stored first, and ends the flow that does:
 * supersede_backend_key).  The backend-side key is linked first: that
 * question just read its primary bucket. */
static __rte_always_inline uint32_t
rplb_flow_insert(struct rplb_flow_table *table, const struct rplb_flow_key *client_key,
		 uint32_t client_hash, uint32_t backend_ip, uint16_t backend_port,
		 uint32_t backend_hash)
{
	struct rplb_flow *flow;
	uint32_t index, backend_ref;

	if (unlikely(table->free_count == 0))
		return RPLB_NO_FLOW;
	index = table->free_stack[table->free_count - 1];
	backend_ref = rplb_flow_ref(index, RPLB_DIR_BACKEND);
	if (unlikely(rplb_link_key(table, backend_hash, backend_ref) < 0))
		return RPLB_NO_FLOW;
	flow = &table->flows[index];
	flow->client_ip = client_key->src_ip;
	flow->vip = client_key->dst_ip;
	flow->client_port = client_key->src_port;
	flow->vport = client_key->dst_port;
	flow->proto = client_key->proto;
	flow->backend_ip = backend_ip;
	flow->backend_port = backend_port;
	RTE_ASSERT(backend_hash == rplb_flow_backend_hash(flow));
	if (unlikely(rplb_link_key(table, client_hash, rplb_flow_ref(index, RPLB_DIR_CLIENT)) < 0)) {
		rplb_unlink_key(table, backend_hash, backend_ref);
		return RPLB_NO_FLOW;
	}
	table->free_count--;
	return index;
}

/* Point an existing flow at another backend (its old one was removed).
 * On failure (-1: no room for the new backend key) the flow has no backend
 * key and must be removed. */
static inline int
rplb_flow_move(struct rplb_flow_table *table, uint32_t index, uint32_t backend_ip,
	       uint16_t backend_port)
{
	struct rplb_flow *flow = &table->flows[index];

	rplb_unlink_key(table, rplb_flow_backend_hash(flow), rplb_flow_ref(index, RPLB_DIR_BACKEND));
	flow->backend_ip = backend_ip;
	flow->backend_port = backend_port;
	return rplb_link_key(table, rplb_flow_backend_hash(flow),
			     rplb_flow_ref(index, RPLB_DIR_BACKEND));
}

static inline void
rplb_flow_remove(struct rplb_flow_table *table, uint32_t index)
{
	struct rplb_flow *flow = &table->flows[index];
	struct rplb_flow_key client_key;

	RTE_ASSERT(flow->state != RPLB_FLOW_FREE && table->free_count < table->capacity);
	rplb_client_key(flow, &client_key);
	rplb_unlink_key(table, rplb_flow_key_hash(&client_key), rplb_flow_ref(index, RPLB_DIR_CLIENT));
	rplb_unlink_key(table, rplb_flow_backend_hash(flow), rplb_flow_ref(index, RPLB_DIR_BACKEND));
	flow->state = RPLB_FLOW_FREE;
	table->free_stack[table->free_count++] = index;
}

#endif /* RPLB_FLOW_TABLE_H */
