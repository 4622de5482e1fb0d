/* SPDX-License-Identifier: BSD-3-Clause
 *
 * flow_sample.c: both sides of the flow-sample protocol (flow_sample.h
 * draws it): the control plane's request and wait, and the worker's
 * budgeted scan.
 */
#include <errno.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_malloc.h>

#include "flow_sample.h"
#include "lb.h"

struct rplb_flow_sample_slot *
rplb_flow_sample_slot_create(int socket_id)
{
	struct rplb_flow_sample_slot *slot;

	slot = rte_zmalloc_socket("rplb_flow_sample", sizeof(*slot), RTE_CACHE_LINE_SIZE,
				  socket_id);
	if (slot == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	if (pthread_mutex_init(&slot->lock, NULL) != 0) {
		rte_free(slot);
		rte_errno = ENOMEM;
		return NULL;
	}
	return slot;
}

void
rplb_flow_sample_slot_free(struct rplb_flow_sample_slot *slot)
{
	if (slot == NULL)
		return;
	pthread_mutex_destroy(&slot->lock);
	rte_free(slot);
}

uint32_t
rplb_flow_sample_post(struct rplb_flow_sample_slot *slot, unsigned int max)
{
	uint32_t request = ++slot->last_request;

	/* The worker reads max after request (acquire): it sees this max, or
	 * a later request's, never an earlier one's. */
	__atomic_store_n(&slot->max, RTE_MIN(max, (unsigned int)RPLB_FLOW_SAMPLE_MAX),
			 __ATOMIC_RELAXED);
	__atomic_store_n(&slot->request, request, __ATOMIC_RELEASE);
	return request;
}

int
rplb_flow_sample_take(struct rplb_flow_sample_slot *slot, uint32_t request,
		      struct rplb_flow_sample *out, unsigned int max)
{
	uint32_t count;

	if (__atomic_load_n(&slot->answered, __ATOMIC_ACQUIRE) != request)
		return -EAGAIN;
	/* The worker wrote count and the entries before answered (release),
	 * and writes them again only for a newer request, which only the
	 * holder of the lock posts. */
	count = RTE_MIN(slot->count, RTE_MIN(max, (unsigned int)RPLB_FLOW_SAMPLE_MAX));
	memcpy(out, slot->buffer, count * sizeof(*out));
	return (int)count;
}

int
rplb_lb_flow_sample(struct rplb_lb *lb, unsigned int worker, struct rplb_flow_sample *out,
		    unsigned int max, unsigned int timeout_ms)
{
	struct rplb_flow_sample_slot *slot;
	uint64_t deadline;
	uint32_t request;
	int n;

	if (lb == NULL || worker >= lb->n_workers || max > RPLB_FLOW_SAMPLE_MAX ||
	    (out == NULL && max > 0))
		return -EINVAL;
	slot = lb->workers[worker].sample;
	pthread_mutex_lock(&slot->lock);
	request = rplb_flow_sample_post(slot, max);
	deadline = rte_get_timer_cycles() + rte_get_timer_hz() * timeout_ms / 1000;
	while ((n = rplb_flow_sample_take(slot, request, out, max)) == -EAGAIN) {
		if (rte_get_timer_cycles() > deadline) {
			/* The request stays posted: the worker may still answer it,
			 * but the next request supersedes it. */
			n = -ETIMEDOUT;
			break;
		}
		rte_delay_us_sleep(100);
	}
	pthread_mutex_unlock(&slot->lock);
	return n;
}

void
rplb_flow_sample_serve(struct rplb_flow_sample_slot *slot, const struct rplb_flow_table *table,
		       const struct rplb_flow6_table *table6, uint64_t now_tsc, unsigned int budget)
{
	uint32_t request = __atomic_load_n(&slot->request, __ATOMIC_ACQUIRE);
	/* The cursor runs over the IPv4 records, then over the IPv6 ones
	 * (record r of the IPv6 table at end_of_ipv4 + r - 1). */
	uint32_t end_of_ipv4 = RPLB_FIRST_FLOW_RECORD + table->capacity;
	uint32_t end_of_table = end_of_ipv4 + (table6 != NULL ? table6->capacity : 0);
	uint32_t now = rplb_flow_clock(table, now_tsc);
	double ms_per_tick = 1e3 * (double)(1ull << table->clock_shift) / (double)rte_get_tsc_hz();
	uint32_t end, count, i;

	if (request != slot->serving) {
		/* A new request (or one that superseded the scan under way):
		 * start over, with its max, read after its number. */
		slot->serving = request;
		slot->serving_max = RTE_MIN(__atomic_load_n(&slot->max, __ATOMIC_RELAXED),
					    (uint32_t)RPLB_FLOW_SAMPLE_MAX);
		slot->cursor = RPLB_FIRST_FLOW_RECORD;
		slot->filled = 0;
	}
	count = slot->filled;
	end = RTE_MIN(slot->cursor + budget, end_of_table);
	for (i = slot->cursor; i < end && count < slot->serving_max; i++) {
		const struct rplb_flow *flow = &table->flows[i];

		if (i >= end_of_ipv4) {
			const struct rplb_flow6 *flow6 = &table6->flows[i - end_of_ipv4 + 1];
			struct rplb_flow_sample *sample;

			if (flow6->state == RPLB_FLOW6_FREE)
				continue;
			sample = &slot->buffer[count++];
			*sample = (struct rplb_flow_sample){
				.client_port = flow6->client_port, .vport = flow6->vport,
				.backend_port = flow6->backend_port, .service_id = flow6->service_id,
				.backend_id = flow6->backend_id, .proto = flow6->proto,
				.state = flow6->state, .family = 6,
				.idle_ms = (uint32_t)((uint32_t)(now - flow6->last_seen) * ms_per_tick),
			};
			memcpy(sample->client_ip6, flow6->client_ip, 16);
			memcpy(sample->vip6, flow6->vip, 16);
			memcpy(sample->backend_ip6, flow6->backend_ip, 16);
			continue;
		}
		if (flow->state == RPLB_FLOW_FREE)
			continue;
		slot->buffer[count++] = (struct rplb_flow_sample){
			.client_ip = flow->client_ip, .vip = flow->vip,
			.backend_ip = flow->backend_ip, .client_port = flow->client_port,
			.vport = flow->vport, .backend_port = flow->backend_port,
			.service_id = flow->service_id, .backend_id = flow->backend_id,
			.proto = flow->proto, .state = flow->state, .family = 4,
			.idle_ms = (uint32_t)((uint32_t)(now - flow->last_seen) * ms_per_tick),
		};
	}
	slot->cursor = i;
	slot->filled = count;
	if (count == slot->serving_max || i == end_of_table) {
		slot->count = count;
		__atomic_store_n(&slot->answered, request, __ATOMIC_RELEASE);
	}
}
