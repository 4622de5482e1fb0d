/* SPDX-License-Identifier: BSD-3-Clause
 *
 * handoff.c: the rings between several workers and the steering table
 * (control plane: created before the workers launch, freed after they
 * stopped).  The fast path's side is in worker.c (the steering pass, the
 * taking of handed-over frames) and steer.h (the owner of a frame).
 */
#include <errno.h>
#include <string.h>

#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_ring.h>

#include "worker.h"

static void
fill_reta(struct rplb_steering *steering, unsigned int entries)
{
	unsigned int i;

	steering->reta_mask = entries - 1;
	for (i = 0; i < RPLB_STEER_RETA_SIZE; i++)
		steering->reta[i] = (uint16_t)(i % steering->n_workers);
}

unsigned int
rplb_handoff_ring_size(unsigned int n_workers)
{
	unsigned int size = RPLB_HANDOFF_MIN_RING;

	if (n_workers < 2)
		return 0;
	while (2 * size * (n_workers - 1) <= RPLB_HANDOFF_FRAMES_PER_WORKER)
		size *= 2;
	return size;
}

struct rplb_handoff *
rplb_handoff_create(unsigned int n_workers, int socket_id)
{
	return rplb_handoff_create_with_rings(n_workers, rplb_handoff_ring_size(n_workers),
					      socket_id);
}

struct rplb_handoff *
rplb_handoff_create_with_rings(unsigned int n_workers, unsigned int ring_size, int socket_id)
{
	struct rplb_handoff *handoff;
	size_t ring_bytes;
	unsigned int from, to;

	if (n_workers < 2 || n_workers > RPLB_MAX_WORKERS || ring_size < 2 ||
	    (ring_size & (ring_size - 1))) {
		rte_errno = EINVAL;
		return NULL;
	}
	handoff = rte_zmalloc_socket("rplb_handoff", sizeof(*handoff) +
				     (size_t)n_workers * n_workers * sizeof(handoff->rings[0]),
				     RTE_CACHE_LINE_SIZE, socket_id);
	if (handoff == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	handoff->n_workers = n_workers;
	handoff->socket_id = socket_id;
	handoff->steering.mode = RPLB_STEER_SOFTWARE;
	handoff->steering.n_workers = n_workers;
	fill_reta(&handoff->steering, RPLB_STEER_RETA_SIZE);
	/* Rings in plain heap memory (rte_ring_init), not memzones
	 * (rte_ring_create): n^2 rings would soon exhaust DPDK's memzones,
	 * and nobody looks them up by name. */
	ring_bytes = (size_t)rte_ring_get_memsize(ring_size);
	for (from = 0; from < n_workers; from++) {
		for (to = 0; to < n_workers; to++) {
			struct rte_ring *ring;

			if (from == to)
				continue;
			ring = rte_zmalloc_socket("rplb_handoff_ring", ring_bytes, RTE_CACHE_LINE_SIZE,
						  socket_id);
			if (ring == NULL ||
			    rte_ring_init(ring, "rplb_handoff", ring_size,
					  RING_F_SP_ENQ | RING_F_SC_DEQ) != 0) {
				rte_free(ring);
				rplb_handoff_free(handoff);
				rte_errno = ENOMEM;
				return NULL;
			}
			handoff->rings[from * n_workers + to] = ring;
		}
	}
	return handoff;
}

void
rplb_handoff_free(struct rplb_handoff *handoff)
{
	unsigned int i;

	if (handoff == NULL)
		return;
	for (i = 0; i < handoff->n_workers * handoff->n_workers; i++)
		rte_free(handoff->rings[i]);
	rte_free(handoff);
}

size_t
rplb_handoff_memory(unsigned int n_workers)
{
	if (n_workers < 2)
		return 0;
	return sizeof(struct rplb_handoff) +
	       (size_t)n_workers * n_workers * sizeof(struct rte_ring *) +
	       (size_t)n_workers * (n_workers - 1) *
	       RTE_ALIGN_CEIL((size_t)rte_ring_get_memsize(rplb_handoff_ring_size(n_workers)),
			      RTE_CACHE_LINE_SIZE) +
	       /* each worker's rings, list and stages (rplb_worker_create) */
	       (size_t)n_workers * (2 * n_workers * sizeof(struct rte_ring *) +
				    n_workers * sizeof(uint16_t) + RTE_CACHE_LINE_SIZE +
				    n_workers * sizeof(struct rplb_handoff_stage));
}

int
rplb_handoff_steer_in_hardware(struct rplb_handoff *handoff, const uint8_t *rss_key,
			       unsigned int key_len, unsigned int reta_size)
{
	if (handoff == NULL || rss_key == NULL || key_len != RPLB_RSS_KEY_LEN ||
	    reta_size == 0 || reta_size > RPLB_STEER_RETA_SIZE || (reta_size & (reta_size - 1)))
		return -EINVAL;
	memcpy(handoff->steering.rss_key, rss_key, key_len);
	fill_reta(&handoff->steering, reta_size);
	handoff->steering.mode = RPLB_STEER_HARDWARE;
	return 0;
}

unsigned int
rplb_handoff_owner(const struct rplb_handoff *handoff, uint32_t client_addr)
{
	return rplb_steer_owner_of(&handoff->steering, client_addr);
}

unsigned int
rplb_steer_software_owner(uint32_t client_addr, unsigned int n_workers)
{
	struct rplb_steering steering = { .mode = RPLB_STEER_SOFTWARE, .n_workers = n_workers };

	if (n_workers < 2)
		return 0;
	fill_reta(&steering, RPLB_STEER_RETA_SIZE);
	return rplb_steer_owner_of(&steering, client_addr);
}
