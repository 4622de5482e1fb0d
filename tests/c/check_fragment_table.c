/* SPDX-License-Identifier: BSD-3-Clause
 *
 * check_fragment_table.c: a model-based check of the fragment state
 * (csrc/fragment_table.[ch]).
 *
 *   rplb-check-fragment-table [--datagrams N] [--steps S] [--seed S]
 *
 * Part 1, what a fragment adds to its datagram: random datagrams cut in
 * random pieces, which arrive shuffled, repeated, with pieces inside what
 * came, pieces overlapping it and last pieces disagreeing on the end.  A
 * byte map per datagram is the model: a fragment whose bytes all came is a
 * duplicate; one with some of them, or one beyond (or a last one short of)
 * the end a last fragment gave, is an overlap; one that would make more
 * than RPLB_FRAGMENT_RUNS separate runs is scattered; the datagram is
 * complete when its map covers it to its end.  rplb_fragment_add and
 * rplb_fragment_complete must say the same, and the runs must be the
 * map's maximal runs.
 *
 * Part 2, the table: S random steps on a table of N datagrams, held
 * fragments (real mbufs) and a clock: datagrams created (the oldest
 * evicted when full), found, fragments held (refused at the bound) and
 * released in arrival order, datagrams removed and expired (oldest first,
 * by budget).  After every step the model's datagrams are exactly those
 * found, the held count is the model's and the pool's in-use count, and
 * the losses reported are the model's.  At the end a flush returns every
 * mbuf.
 *
 * Any difference aborts with a message; the end prints one JSON line.
 * Built with sanitizers and RTE_ASSERT by tests/test_fragments.py.
 */
#include "check_eal.h"   /* first: it sets _XOPEN_SOURCE */

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "fragment_table.h"

#define MAX_PAYLOAD 4096
#define PIECES_MAX 64
#define KEYS 64                 /* part 2's key space: finds hit often */
#define HELD_MAX_PER_KEY 64

static uint64_t rng_state;

static uint64_t
rng(void)
{
	/* splitmix64: reproducible from --seed on every platform. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t
below(uint32_t n)
{
	return (uint32_t)(rng() % n);
}

#define FAIL(...) do { fprintf(stderr, "check_fragment_table: " __VA_ARGS__); \
		       fputc('\n', stderr); abort(); } while (0)

/* ---- part 1: the runs of one datagram -------------------------------- */

struct piece {
	uint32_t offset, end;
	int more;
};

struct byte_model {
	uint8_t seen[MAX_PAYLOAD + 1024];      /* room for pieces beyond the end */
	int last_seen;
	uint32_t end;
};

/* Maximal runs of seen bytes, up to the map's size. */
static unsigned int
model_runs(const struct byte_model *model, uint32_t runs[][2], unsigned int max)
{
	unsigned int n = 0;
	uint32_t at = 0;

	while (at < sizeof(model->seen)) {
		uint32_t start;

		while (at < sizeof(model->seen) && !model->seen[at])
			at++;
		if (at == sizeof(model->seen))
			break;
		start = at;
		while (at < sizeof(model->seen) && model->seen[at])
			at++;
		if (n < max) {
			runs[n][0] = start;
			runs[n][1] = at;
		}
		n++;
	}
	return n;
}

static enum rplb_fragment_news
model_add(struct byte_model *model, const struct piece *piece)
{
	uint32_t i, covered = 0, beyond = 0, runs[RPLB_FRAGMENT_RUNS + 8][2];
	struct byte_model next;

	if (model->last_seen && (piece->end > model->end ||
				 (!piece->more && piece->end != model->end)))
		return RPLB_FRAGMENT_OVERLAP;
	for (i = piece->offset; i < piece->end; i++)
		covered += model->seen[i];
	if (covered == piece->end - piece->offset)
		return RPLB_FRAGMENT_DUPLICATE;
	if (covered > 0)
		return RPLB_FRAGMENT_OVERLAP;
	for (i = piece->end; i < sizeof(model->seen); i++)
		beyond += model->seen[i];
	if (!piece->more && beyond > 0)
		return RPLB_FRAGMENT_OVERLAP;
	next = *model;
	memset(&next.seen[piece->offset], 1, piece->end - piece->offset);
	if (model_runs(&next, runs, RTE_DIM(runs)) > RPLB_FRAGMENT_RUNS)
		return RPLB_FRAGMENT_SCATTERED;
	*model = next;
	if (!piece->more) {
		model->last_seen = 1;
		model->end = piece->end;
	}
	return RPLB_FRAGMENT_NEW;
}

static int
model_complete(const struct byte_model *model)
{
	uint32_t i;

	if (!model->last_seen)
		return 0;
	for (i = 0; i < model->end; i++)
		if (!model->seen[i])
			return 0;
	return 1;
}

/* A datagram of end bytes cut in pieces of multiples of 8 bytes, the last
 * shorter; then mixed: shuffled, some repeated, pieces inside others,
 * pieces across others, a last piece with another end.  Returns the count. */
static unsigned int
datagram_pieces(struct piece *pieces, uint32_t end)
{
	unsigned int n = 0, i, extra;
	uint32_t at = 0;

	while (at < end && n < PIECES_MAX / 2) {
		uint32_t length = (below(64) + 1) * 8;

		if (at + length >= end || n == PIECES_MAX / 2 - 1)
			length = end - at;
		pieces[n++] = (struct piece){at, at + length, at + length < end};
		at += length;
	}
	for (extra = below(6); extra > 0 && n < PIECES_MAX; extra--) {
		const struct piece *model = &pieces[below(n)];
		uint32_t offset, length;

		switch (below(4)) {
		case 0:             /* an exact copy */
			pieces[n++] = *model;
			break;
		case 1:             /* inside another (or across it) */
			offset = model->offset + below((model->end - model->offset) / 8 + 1) * 8;
			length = (below(16) + 1) * 8;
			if (offset >= end)
				break;
			pieces[n++] = (struct piece){offset, RTE_MIN(offset + length, end),
						     offset + length < end};
			break;
		case 2:             /* a last piece with another end */
			offset = model->offset;
			pieces[n++] = (struct piece){offset, offset + below(600) + 1, 0};
			break;
		default:            /* the bytes just beyond another */
			offset = model->end;
			if (offset < end)
				pieces[n++] = (struct piece){offset, RTE_MIN(offset + 8, end),
							     offset + 8 < end};
			break;
		}
	}
	for (i = n - 1; i > 0; i--) {
		unsigned int j = below(i + 1);
		struct piece swap = pieces[i];

		pieces[i] = pieces[j];
		pieces[j] = swap;
	}
	return n;
}

static void
check_runs(const struct rplb_fragment_datagram *datagram, const struct byte_model *model)
{
	uint32_t runs[RPLB_FRAGMENT_RUNS + 8][2];
	unsigned int n = model_runs(model, runs, RTE_DIM(runs)), i;

	if (n != datagram->n_runs)
		FAIL("%u runs, the model has %u", datagram->n_runs, n);
	for (i = 0; i < n; i++)
		if (datagram->runs[i][0] != runs[i][0] || datagram->runs[i][1] != runs[i][1])
			FAIL("run %u is [%u, %u), the model's [%u, %u)", i, datagram->runs[i][0],
			     datagram->runs[i][1], runs[i][0], runs[i][1]);
}

static void
check_runs_of_datagrams(unsigned int count, uint64_t *news)
{
	unsigned int d, i, n;

	for (d = 0; d < count; d++) {
		struct rplb_fragment_datagram datagram;
		struct byte_model model;
		struct piece pieces[PIECES_MAX];

		memset(&datagram, 0, sizeof(datagram));
		memset(&model, 0, sizeof(model));
		n = datagram_pieces(pieces, below(MAX_PAYLOAD) + 1);
		for (i = 0; i < n; i++) {
			enum rplb_fragment_news want = model_add(&model, &pieces[i]);
			enum rplb_fragment_news got = rplb_fragment_add(&datagram, pieces[i].offset,
									pieces[i].end,
									pieces[i].more);

			if (got != want)
				FAIL("datagram %u, piece [%u, %u) more %d: %d, the model says %d", d,
				     pieces[i].offset, pieces[i].end, pieces[i].more, got, want);
			news[got]++;
			/* The engine drops a datagram at an overlap or a scatter. */
			if (got == RPLB_FRAGMENT_OVERLAP || got == RPLB_FRAGMENT_SCATTERED)
				break;
			check_runs(&datagram, &model);
			if (rplb_fragment_complete(&datagram) != model_complete(&model))
				FAIL("datagram %u: complete %d, the model says %d", d,
				     rplb_fragment_complete(&datagram), model_complete(&model));
		}
	}
}

/* ---- part 2: the table ----------------------------------------------- */

struct key_model {
	int live;
	uint32_t created;
	unsigned int n_held;
	struct rte_mbuf *held[HELD_MAX_PER_KEY];
	uint64_t age;               /* creation order: the oldest has the lowest */
};

static struct key_model keys[KEYS];
static uint64_t next_age;

static uint32_t
key_src(unsigned int k)
{
	return 0x0a000000u | k;
}

static unsigned int
model_live(void)
{
	unsigned int k, n = 0;

	for (k = 0; k < KEYS; k++)
		n += keys[k].live;
	return n;
}

static unsigned int
model_held(void)
{
	unsigned int k, n = 0;

	for (k = 0; k < KEYS; k++)
		n += keys[k].live ? keys[k].n_held : 0;
	return n;
}

static int
model_oldest(void)
{
	int k, oldest = -1;

	for (k = 0; k < KEYS; k++)
		if (keys[k].live && (oldest < 0 || keys[k].age < keys[oldest].age))
			oldest = k;
	return oldest;
}

/* Key k: IPv4 for even k, IPv6 for odd ones (whose address shares its
 * first 4 bytes with an IPv4 key's: only the family and the rest tell
 * them apart). */
static void
make_key(struct rplb_fragment_key *key, unsigned int k)
{
	uint32_t src = key_src(k);

	if (k % 4 < 2) {
		rplb_fragment_key4(key, src, 0x0b000000u, (uint16_t)k, 17, (uint8_t)(k & 1));
	} else {
		uint8_t src6[16] = {0}, dst6[16] = {0x0b};

		memcpy(src6, &src, sizeof(src));
		rplb_fragment_key6(key, src6, dst6, (uint32_t)k << 16, 17, (uint8_t)(k & 1));
	}
}

static uint32_t
find(const struct rplb_fragment_table *table, unsigned int k)
{
	struct rplb_fragment_key key;

	make_key(&key, k);
	return rplb_fragment_find(table, &key);
}

static void
check_table(const struct rplb_fragment_table *table, struct rte_mempool *pool)
{
	unsigned int k;

	for (k = 0; k < KEYS; k++) {
		uint32_t index = find(table, k);

		if ((index != RPLB_NO_DATAGRAM) != keys[k].live)
			FAIL("key %u: found %d, the model says %d", k, index != RPLB_NO_DATAGRAM,
			     keys[k].live);
		if (index != RPLB_NO_DATAGRAM && table->datagrams[index].held != keys[k].n_held)
			FAIL("key %u: %u held, the model says %u", k, table->datagrams[index].held,
			     keys[k].n_held);
	}
	if (table->max_datagrams - table->n_free_datagrams != model_live())
		FAIL("%u datagrams, the model has %u", table->max_datagrams - table->n_free_datagrams,
		     model_live());
	if (table->n_held != model_held() || rte_mempool_in_use_count(pool) != model_held())
		FAIL("%u held, %u mbufs in use, the model holds %u", table->n_held,
		     rte_mempool_in_use_count(pool), model_held());
}

static void
forget(unsigned int k)
{
	keys[k].live = 0;
	keys[k].n_held = 0;
}

static void
check_table_steps(uint32_t max_datagrams, uint32_t max_held, uint32_t steps,
		  struct rte_mempool *pool, uint64_t *counts)
{
	const uint32_t timeout = 1000;
	struct rplb_fragment_table *table =
		rplb_fragment_table_create(max_datagrams, max_held, timeout, SOCKET_ID_ANY);
	struct rplb_fragment_losses losses;
	uint32_t now = UINT32_MAX - 5000;       /* the clock wraps on the way */
	uint32_t step;

	if (table == NULL)
		FAIL("cannot create a table of %u datagrams", max_datagrams);
	memset(keys, 0, sizeof(keys));
	for (step = 0; step < steps; step++) {
		unsigned int k = below(KEYS), choice = below(100), i;
		uint32_t index = find(table, k);

		memset(&losses, 0, sizeof(losses));
		if (choice < 45) {
			/* A fragment of datagram k arrives; held half the time. */
			if (index == RPLB_NO_DATAGRAM) {
				int evicted = -1;
				unsigned int freed = 0;

				if (model_live() == max_datagrams) {
					evicted = model_oldest();
					freed = keys[evicted].n_held;
					forget((unsigned int)evicted);
					counts[0]++;
				}
				struct rplb_fragment_key key;

				make_key(&key, k);
				index = rplb_fragment_create(table, &key, now, &losses);
				if (losses.datagrams != (evicted >= 0) || losses.frames != freed)
					FAIL("create: lost %" PRIu64 " datagrams, %" PRIu64 " frames; the "
					     "model %d, %u", losses.datagrams, losses.frames, evicted >= 0,
					     freed);
				keys[k] = (struct key_model){.live = 1, .created = now,
							     .age = next_age++};
			}
			if (below(2) && keys[k].n_held < HELD_MAX_PER_KEY) {
				struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
				int refused = model_held() == max_held;

				if (m == NULL)
					FAIL("the pool ran dry");
				if ((rplb_fragment_hold(table, index, m) < 0) != refused)
					FAIL("hold: refused %d, the model says %d", !refused, refused);
				if (refused) {
					rte_pktmbuf_free(m);
					counts[1]++;
				} else {
					keys[k].held[keys[k].n_held++] = m;
				}
			}
		} else if (choice < 60 && index != RPLB_NO_DATAGRAM) {
			/* Its first fragment came: the held ones, in arrival order. */
			for (i = 0; i < keys[k].n_held; i++) {
				struct rte_mbuf *m = rplb_fragment_next_held(table, index);

				if (m != keys[k].held[i])
					FAIL("key %u: held fragment %u out of order", k, i);
				rte_pktmbuf_free(m);
			}
			if (rplb_fragment_next_held(table, index) != NULL)
				FAIL("key %u: more held than the model", k);
			keys[k].n_held = 0;
		} else if (choice < 70 && index != RPLB_NO_DATAGRAM) {
			/* Complete, or dropped: forgotten. */
			unsigned int held = keys[k].n_held;

			rplb_fragment_remove(table, index, &losses);
			forget(k);
			if (losses.frames != held || losses.datagrams != 0)
				FAIL("remove: %" PRIu64 " frames freed, the model held %u",
				     losses.frames, held);
		} else if (choice < 85) {
			/* Time passes; housekeeping with a budget. */
			unsigned int budget = below(4), expired = 0, frames = 0, done;

			now += below(timeout / 4);
			for (;;) {
				int oldest = model_oldest();

				if (oldest < 0 || expired == budget ||
				    (uint32_t)(now - keys[oldest].created) <= timeout)
					break;
				frames += keys[oldest].n_held;
				forget((unsigned int)oldest);
				expired++;
			}
			done = rplb_fragment_expire(table, now, budget, &losses);
			if (done != expired || losses.datagrams != expired || losses.frames != frames)
				FAIL("expire: %u datagrams, %" PRIu64 " frames; the model %u, %u", done,
				     losses.frames, expired, frames);
			counts[2] += expired;
		}
		check_table(table, pool);
	}
	memset(&losses, 0, sizeof(losses));
	rplb_fragment_flush(table, &losses);
	if (losses.datagrams != model_live() || losses.frames != model_held())
		FAIL("flush: %" PRIu64 " datagrams, %" PRIu64 " frames; the model %u, %u",
		     losses.datagrams, losses.frames, model_live(), model_held());
	memset(keys, 0, sizeof(keys));
	if (rte_mempool_in_use_count(pool) != 0)
		FAIL("%u mbufs not returned after the flush", rte_mempool_in_use_count(pool));
	rplb_fragment_table_free(table);
}

int
main(int argc, char **argv)
{
	struct option longopts[] = {
		{"datagrams", required_argument, NULL, 'd'},
		{"steps", required_argument, NULL, 'n'},
		{"seed", required_argument, NULL, 's'},
		{NULL, 0, NULL, 0},
	};
	uint32_t max_datagrams = 16, steps = 200000;
	uint64_t news[4] = {0}, counts[3] = {0};
	struct rte_mempool *pool;
	int opt;

	rng_state = 1;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			max_datagrams = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 'n':
			steps = (uint32_t)strtoul(optarg, NULL, 0);
			break;
		case 's':
			rng_state = strtoull(optarg, NULL, 0);
			break;
		default:
			fprintf(stderr, "usage: %s [--datagrams N] [--steps S] [--seed S]\n", argv[0]);
			return 2;
		}
	}
	if (max_datagrams == 0 || max_datagrams > KEYS) {
		fprintf(stderr, "%s: --datagrams must be 1-%u\n", argv[0], KEYS);
		return 2;
	}
	if (check_eal_init("rplb-check-fragment-table", "0", NULL) < 0)
		return 1;
	pool = rte_pktmbuf_pool_create("check_fragments", 8191, 0, 0, 256, rte_socket_id());
	if (pool == NULL)
		FAIL("cannot create the pool");
	check_runs_of_datagrams(steps / 20, news);
	/* Held bound below, at and above the room the datagrams could use. */
	check_table_steps(max_datagrams, max_datagrams / 2, steps, pool, counts);
	check_table_steps(max_datagrams, 0, steps / 4, pool, counts);
	check_table_steps(max_datagrams, 32768, steps / 4, pool, counts);
	rte_mempool_free(pool);
	printf("{\"new\": %" PRIu64 ", \"duplicate\": %" PRIu64 ", \"overlap\": %" PRIu64
	       ", \"scattered\": %" PRIu64 ", \"evicted\": %" PRIu64 ", \"refused\": %" PRIu64
	       ", \"expired\": %" PRIu64 "}\n", news[RPLB_FRAGMENT_NEW],
	       news[RPLB_FRAGMENT_DUPLICATE], news[RPLB_FRAGMENT_OVERLAP],
	       news[RPLB_FRAGMENT_SCATTERED], counts[0], counts[1], counts[2]);
	check_eal_cleanup();
	return 0;
}
