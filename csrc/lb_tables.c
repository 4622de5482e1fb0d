/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_tables.c: control-plane side of the load-balancing engine.  Builds the
 * immutable lookup tables from the specs Python hands over, and publishes
 * them to running workers through RCU (after GLB director's reload: build
 * new, swap a pointer, free the old after every worker moved on).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_malloc.h>

#include "lb.h"

#define LOG(level, fmt, ...) \
	rte_log(RTE_LOG_ ## level, RTE_LOGTYPE_USER1, "rplb: " fmt "\n", ##__VA_ARGS__)

#define FIELD(s, f) { #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f) }

const struct rplb_field_layout rplb_spec_layout[] = {
	FIELD(rplb_service_spec, vip),
	FIELD(rplb_service_spec, port),
	FIELD(rplb_service_spec, proto),
	FIELD(rplb_service_spec, reserved),
	FIELD(rplb_service_spec, service_id),
	FIELD(rplb_service_spec, first_backend),
	FIELD(rplb_service_spec, n_backends),
	FIELD(rplb_backend_spec, ip),
	FIELD(rplb_backend_spec, port),
	FIELD(rplb_backend_spec, weight),
	FIELD(rplb_backend_spec, backend_id),
	FIELD(rplb_backend_spec, service_index),
	{ NULL, NULL, 0, 0 },
};

size_t
rplb_spec_size(const char *struct_name)
{
	if (strcmp(struct_name, "rplb_service_spec") == 0)
		return sizeof(struct rplb_service_spec);
	if (strcmp(struct_name, "rplb_backend_spec") == 0)
		return sizeof(struct rplb_backend_spec);
	return 0;
}

/* A power of two at least twice n: open addressing stays short. */
static uint32_t
slots_for(uint32_t n)
{
	uint32_t slots = 8;

	while (slots < 2 * n)
		slots <<= 1;
	return slots;
}

/* The arrays of one generation of tables, in bytes: what
 * rplb_lb_tables_create allocates, and what rplb_lb_tables_memory adds up
 * for operators (rplb-dpdk --check-config) without creating anything. */
struct tables_sizes {
	size_t service_slots;
	size_t vip_slots;
	size_t backend_ip_slots;
	size_t owner_slots;
	size_t services;
	size_t backends;
	size_t maglev;
};

static void
tables_sizes(uint32_t n_services, uint32_t n_backends, uint32_t maglev_size,
	     struct tables_sizes *size)
{
	size_t service_slots = slots_for(n_services), backend_slots = slots_for(n_backends);

	size->service_slots = service_slots * sizeof(struct rplb_service_slot);
	size->vip_slots = service_slots * sizeof(uint32_t);
	size->backend_ip_slots = backend_slots * sizeof(uint32_t);
	size->owner_slots = backend_slots * sizeof(struct rplb_owner_slot);
	size->services = RTE_MAX(n_services, 1u) * sizeof(struct rplb_lb_service);
	size->backends = RPLB_MAX_BACKENDS * sizeof(struct rplb_lb_backend);
	size->maglev = RTE_MAX((size_t)n_services * maglev_size, (size_t)1) * sizeof(uint32_t);
}

size_t
rplb_lb_tables_memory(uint32_t n_services, uint32_t n_backends, uint32_t maglev_size)
{
	struct tables_sizes size;

	tables_sizes(n_services, n_backends, maglev_size, &size);
	return sizeof(struct rplb_lb_tables) + size.service_slots + size.vip_slots +
	       size.backend_ip_slots + size.owner_slots + size.services + size.backends +
	       size.maglev;
}

static inline uint32_t
backend_slot(const struct rplb_backend_spec *bp)
{
	return bp->backend_id & (RPLB_MAX_BACKENDS - 1);
}

static void
add_address(uint32_t *slots, uint32_t mask, uint32_t addr)
{
	uint32_t i;

	for (i = rplb_crc32_4byte(addr, 0) & mask; slots[i] != 0 && slots[i] != addr;
	     i = (i + 1) & mask)
		;
	slots[i] = addr;
}

void
rplb_lb_tables_free(struct rplb_lb_tables *t)
{
	if (t == NULL)
		return;
	rte_free(t->service_slots);
	rte_free(t->vip_slots);
	rte_free(t->backend_ip_slots);
	rte_free(t->owner_slots);
	rte_free(t->services);
	rte_free(t->backends);
	rte_free(t->maglev);
	rte_free(t);
}

static int
validate_specs(const struct rplb_service_spec *services, uint32_t n_services,
	       const struct rplb_backend_spec *backends, uint32_t n_backends,
	       const int32_t *maglev, uint32_t maglev_size)
{
	uint64_t slot_used[RPLB_MAX_BACKENDS / 64] = {0};
	uint32_t s, b, i;

	if (n_services > RPLB_MAX_SERVICES || n_backends > RPLB_MAX_BACKENDS ||
	    (n_services > 0 && maglev_size == 0)) {
		LOG(ERR, "tables: %u services / %u backends / maglev size %u out of range",
		    n_services, n_backends, maglev_size);
		return -EINVAL;
	}
	for (s = 0; s < n_services; s++) {
		const struct rplb_service_spec *sp = &services[s];

		if (sp->vip == 0 || (sp->proto != IPPROTO_TCP && sp->proto != IPPROTO_UDP) ||
		    sp->service_id >= RPLB_MAX_SERVICES ||
		    sp->first_backend > n_backends ||
		    sp->n_backends > n_backends - sp->first_backend) {
			LOG(ERR, "tables: service spec %u is invalid", s);
			return -EINVAL;
		}
		/* A backend belongs to the one service whose range holds it (its
		 * checksum deltas and its owner slot depend on that service). */
		for (b = sp->first_backend; b < sp->first_backend + sp->n_backends; b++) {
			if (backends[b].service_index != s) {
				LOG(ERR, "tables: backend spec %u is in the range of service %u "
				    "but names service %u", b, s, backends[b].service_index);
				return -EINVAL;
			}
		}
		for (i = 0; i < maglev_size; i++) {
			int32_t owner = maglev[(size_t)s * maglev_size + i];

			if (owner != -1 && ((uint32_t)owner < sp->first_backend ||
					    (uint32_t)owner >= sp->first_backend + sp->n_backends)) {
				LOG(ERR, "tables: maglev slot %u of service %u names backend %d "
				    "outside the service", i, s, owner);
				return -EINVAL;
			}
		}
	}
	for (b = 0; b < n_backends; b++) {
		if (backends[b].service_index >= n_services) {
			LOG(ERR, "tables: backend spec %u names service %u", b,
			    backends[b].service_index);
			return -EINVAL;
		}
	}
	/* Each backend has a slot of its own (the low bits of its id). */
	for (b = 0; b < n_backends; b++) {
		uint32_t slot = backend_slot(&backends[b]);

		if (slot_used[slot / 64] & (1ull << (slot % 64))) {
			for (i = 0; backend_slot(&backends[i]) != slot; i++)
				;
			LOG(ERR, "tables: backend specs %u and %u share slot %u (backend ids %u, %u)",
			    i, b, slot, backends[i].backend_id, backends[b].backend_id);
			return -EINVAL;
		}
		slot_used[slot / 64] |= 1ull << (slot % 64);
	}
	return 0;
}

struct rplb_lb_tables *
rplb_lb_tables_create(const struct rplb_service_spec *services, uint32_t n_services,
		      const struct rplb_backend_spec *backends, uint32_t n_backends,
		      const int32_t *maglev, uint32_t maglev_size, uint32_t flags,
		      int socket_id)
{
	struct rplb_lb_tables *t;
	struct tables_sizes size;
	uint32_t s, b, i;
	int rc;

	rc = validate_specs(services, n_services, backends, n_backends, maglev, maglev_size);
	if (rc < 0) {
		rte_errno = -rc;
		return NULL;
	}
	t = rte_zmalloc_socket("rplb_tables", sizeof(*t), RTE_CACHE_LINE_SIZE, socket_id);
	if (t == NULL)
		goto nomem;
	t->n_services = n_services;
	t->n_backends = n_backends;
	t->maglev_size = maglev_size;
	t->strict = !!(flags & RPLB_TABLES_STRICT);

	tables_sizes(n_services, n_backends, maglev_size, &size);
	t->service_mask = slots_for(n_services) - 1;
	t->service_slots = rte_zmalloc_socket("rplb_service_slots", size.service_slots,
					      RTE_CACHE_LINE_SIZE, socket_id);
	t->vip_mask = t->service_mask;
	t->vip_slots = rte_zmalloc_socket("rplb_vip_slots", size.vip_slots,
					  RTE_CACHE_LINE_SIZE, socket_id);
	t->backend_ip_mask = slots_for(n_backends) - 1;
	t->backend_ip_slots = rte_zmalloc_socket("rplb_backend_ip_slots", size.backend_ip_slots,
						 RTE_CACHE_LINE_SIZE, socket_id);
	t->owner_mask = t->backend_ip_mask;
	t->owner_slots = rte_zmalloc_socket("rplb_owner_slots", size.owner_slots,
					    RTE_CACHE_LINE_SIZE, socket_id);
	t->services = rte_zmalloc_socket("rplb_services", size.services,
					 RTE_CACHE_LINE_SIZE, socket_id);
	t->backends = rte_malloc_socket("rplb_backends", size.backends,
					RTE_CACHE_LINE_SIZE, socket_id);
	t->maglev = rte_malloc_socket("rplb_maglev", size.maglev, RTE_CACHE_LINE_SIZE, socket_id);
	if (t->service_slots == NULL || t->vip_slots == NULL || t->owner_slots == NULL ||
	    t->backend_ip_slots == NULL ||
	    t->services == NULL || t->backends == NULL || t->maglev == NULL)
		goto nomem;

	for (i = 0; i < RPLB_MAX_BACKENDS; i++)
		t->backends[i] = (struct rplb_lb_backend){.service_id = RPLB_NO_SERVICE};
	for (b = 0; b < n_backends; b++) {
		const struct rplb_backend_spec *bp = &backends[b];
		const struct rplb_service_spec *sp = &services[bp->service_index];

		t->backends[backend_slot(bp)] = (struct rplb_lb_backend){
			.ip = bp->ip,
			.port = bp->port,
			.service_id = (uint16_t)sp->service_id,
			.backend_id = bp->backend_id,
			.to_backend = rplb_cksum_deltas(sp->vip, sp->port, bp->ip, bp->port),
		};
	}

	for (s = 0; s < n_services; s++) {
		const struct rplb_service_spec *sp = &services[s];
		struct rplb_lb_service *svc = &t->services[s];
		uint32_t *table = &t->maglev[(size_t)s * maglev_size];

		*svc = (struct rplb_lb_service){
			.vip = sp->vip, .port = sp->port, .proto = sp->proto,
			.service_id = (uint16_t)sp->service_id, .maglev = table,
		};
		for (i = 0; i < maglev_size; i++) {
			int32_t owner = maglev[(size_t)s * maglev_size + i];

			table[i] = owner < 0 ? RPLB_NO_BACKEND : backend_slot(&backends[owner]);
		}

		for (i = rplb_lookup_hash(sp->vip, sp->port, sp->proto) & t->service_mask;
		     t->service_slots[i].used; i = (i + 1) & t->service_mask) {
			if (t->service_slots[i].vip == sp->vip && t->service_slots[i].port == sp->port &&
			    t->service_slots[i].proto == sp->proto) {
				LOG(ERR, "tables: service spec %u duplicates service %u", s,
				    t->service_slots[i].service_index);
				rplb_lb_tables_free(t);
				rte_errno = EINVAL;
				return NULL;
			}
		}
		t->service_slots[i] = (struct rplb_service_slot){
			.vip = sp->vip, .port = sp->port, .proto = sp->proto, .used = 1,
			.service_index = (uint16_t)s, .service = svc,
		};

		add_address(t->vip_slots, t->vip_mask, sp->vip);
	}

	for (b = 0; b < n_backends; b++) {
		const struct rplb_backend_spec *bp = &backends[b];
		const struct rplb_service_spec *sp = &services[bp->service_index];
		uint8_t proto = sp->proto;

		if (bp->ip != 0)
			add_address(t->backend_ip_slots, t->backend_ip_mask, bp->ip);

		for (i = rplb_lookup_hash(bp->ip, bp->port, proto) & t->owner_mask;
		     t->owner_slots[i].used; i = (i + 1) & t->owner_mask) {
			struct rplb_owner_slot *o = &t->owner_slots[i];

			if (o->ip == bp->ip && o->port == bp->port && o->proto == proto)
				break;
		}
		if (t->owner_slots[i].used) {
			if (t->owner_slots[i].service_index != bp->service_index)
				t->owner_slots[i].service_index = RPLB_SERVICE_SHARED;
			continue;
		}
		t->owner_slots[i] = (struct rplb_owner_slot){
			.ip = bp->ip, .port = bp->port, .proto = proto, .used = 1,
			.service_index = (uint16_t)bp->service_index,
		};
	}
	return t;

nomem:
	rplb_lb_tables_free(t);
	rte_errno = ENOMEM;
	return NULL;
}

/* ---- shared engine state ------------------------------------------------ */

struct rplb_lb *
rplb_lb_create(const struct rplb_lb_params *params)
{
	struct rplb_lb *lb;
	size_t qsbr_size;
	int rc;

	if (params == NULL || params->flow_table_size == 0 || params->max_workers == 0 ||
	    params->max_workers > RTE_MAX_LCORE) {
		rte_errno = EINVAL;
		return NULL;
	}
	lb = rte_zmalloc_socket("rplb_lb", sizeof(*lb) +
				params->max_workers * sizeof(struct rplb_lb_worker),
				RTE_CACHE_LINE_SIZE, params->socket_id);
	if (lb == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	lb->flow_table_size = params->flow_table_size;
	lb->max_workers = params->max_workers;
	lb->socket_id = params->socket_id;
	lb->fragment_datagrams = params->fragment_datagrams != 0 ?
		params->fragment_datagrams : RPLB_FRAGMENT_DEFAULT_DATAGRAMS;
	lb->fragment_held = params->fragment_held;
	lb->fragment_timeout_s = params->fragment_timeout_s != 0 ?
		params->fragment_timeout_s : RPLB_FRAGMENT_DEFAULT_TIMEOUT_S;
	if (lb->fragment_datagrams > RPLB_FRAGMENT_MAX_DATAGRAMS ||
	    lb->fragment_held > RPLB_FRAGMENT_MAX_HELD ||
	    lb->fragment_timeout_s > RPLB_FRAGMENT_MAX_TIMEOUT_S) {
		rte_free(lb);
		rte_errno = EINVAL;
		return NULL;
	}

	/* Thread ids of the RCU are lcore ids: any lcore may host a worker. */
	qsbr_size = rte_rcu_qsbr_get_memsize(RTE_MAX_LCORE);
	lb->qsbr = rte_zmalloc_socket("rplb_qsbr", qsbr_size, RTE_CACHE_LINE_SIZE,
				      params->socket_id);
	if (lb->qsbr == NULL) {
		rplb_lb_free(lb);
		rte_errno = ENOMEM;
		return NULL;
	}
	rc = rte_rcu_qsbr_init(lb->qsbr, RTE_MAX_LCORE);
	if (rc == 0)
		rc = rplb_lb_set_timeouts(lb, params->timeout_s);
	if (rc == 0) {
		/* Start with empty tables: everything passes through. */
		lb->tables = rplb_lb_tables_create(NULL, 0, NULL, 0, NULL, 0, 0,
						   params->socket_id);
		if (lb->tables == NULL)
			rc = -rte_errno;
	}
	if (rc != 0) {
		rplb_lb_free(lb);
		rte_errno = -rc;
		return NULL;
	}
	return lb;
}

void
rplb_lb_free(struct rplb_lb *lb)
{
	unsigned int i;

	if (lb == NULL)
		return;
	for (i = 0; i < lb->n_workers; i++) {
		rplb_flow_table_free(lb->workers[i].flows);
		rplb_fragment_table_free(lb->workers[i].fragments);
		rte_free(lb->workers[i].service_counters);
		rte_free(lb->workers[i].backend_counters);
		rplb_flow_sample_slot_free(lb->workers[i].sample);
	}
	rplb_lb_tables_free(lb->tables);
	rte_free(lb->qsbr);
	rte_free(lb);
}

int
rplb_lb_set_timeouts(struct rplb_lb *lb, const uint32_t timeout_s[RPLB_FLOW_STATES])
{
	uint32_t clock_shift = rplb_flow_clock_shift(rte_get_tsc_hz());
	unsigned int i;

	for (i = 0; i < RPLB_FLOW_STATES; i++)
		/* The flow clock wraps after 4 days: longer timeouts are refused. */
		if (timeout_s[i] == 0 || timeout_s[i] > RPLB_MAX_TIMEOUT_S)
			return -EINVAL;
	/* Each value is one aligned 32-bit store: a worker reads old or new. */
	for (i = 0; i < RPLB_FLOW_STATES; i++) {
		uint64_t ticks = ((uint64_t)timeout_s[i] * rte_get_tsc_hz()) >> clock_shift;

		__atomic_store_n(&lb->timeout_ticks[i], (uint32_t)RTE_MAX(ticks, 1ull),
				 __ATOMIC_RELAXED);
	}
	return 0;
}

/* Free what rplb_lb_add_worker allocated for a worker (NULLs skipped). */
static void
worker_state_free(struct rplb_lb_worker *lw)
{
	rplb_flow_table_free(lw->flows);
	rplb_fragment_table_free(lw->fragments);
	rte_free(lw->service_counters);
	rte_free(lw->backend_counters);
	rplb_flow_sample_slot_free(lw->sample);
	memset(lw, 0, sizeof(*lw));
}

int
rplb_lb_add_worker(struct rplb_lb *lb, unsigned int lcore_id)
{
	struct rplb_lb_worker *lw;
	unsigned int index = lb->n_workers;
	uint64_t fragment_ticks;
	int rc;

	if (index >= lb->max_workers || lcore_id >= RTE_MAX_LCORE)
		return -EINVAL;
	lw = &lb->workers[index];
	memset(lw, 0, sizeof(*lw));
	lw->lcore_id = lcore_id;
	lw->flows = rplb_flow_table_create(lb->flow_table_size, lb->socket_id);
	if (lw->flows == NULL) {
		rc = -rte_errno;
		worker_state_free(lw);
		return rc;
	}
	/* In the flow clock's ticks: the worker ages fragments with it. */
	fragment_ticks = ((uint64_t)lb->fragment_timeout_s * rte_get_tsc_hz()) >>
			 lw->flows->clock_shift;
	lw->fragments = rplb_fragment_table_create(lb->fragment_datagrams, lb->fragment_held,
						   (uint32_t)RTE_MAX(fragment_ticks, 1ull),
						   lb->socket_id);
	lw->service_counters = rte_zmalloc_socket("rplb_service_counters",
		RPLB_MAX_SERVICES * sizeof(*lw->service_counters), RTE_CACHE_LINE_SIZE,
		lb->socket_id);
	lw->backend_counters = rte_zmalloc_socket("rplb_backend_counters",
		RPLB_MAX_BACKENDS * sizeof(*lw->backend_counters), RTE_CACHE_LINE_SIZE,
		lb->socket_id);
	lw->sample = rplb_flow_sample_slot_create(lb->socket_id);
	if (lw->fragments == NULL || lw->service_counters == NULL ||
	    lw->backend_counters == NULL || lw->sample == NULL) {
		worker_state_free(lw);
		return -ENOMEM;
	}
	rc = rte_rcu_qsbr_thread_register(lb->qsbr, lcore_id);
	if (rc != 0) {
		worker_state_free(lw);
		return -rte_errno;
	}
	lb->n_workers++;
	return (int)index;
}

int
rplb_lb_publish(struct rplb_lb *lb, struct rplb_lb_tables *tables)
{
	struct rplb_lb_tables *old;

	if (lb == NULL || tables == NULL)
		return -EINVAL;
	old = __atomic_exchange_n(&lb->tables, tables, __ATOMIC_ACQ_REL);
	/* Workers that are offline (not started, or stopped) do not hold old
	 * tables; online ones report a quiescent state every loop iteration. */
	rte_rcu_qsbr_synchronize(lb->qsbr, RTE_QSBR_THRID_INVALID);
	rplb_lb_tables_free(old);
	return 0;
}

const struct rplb_service_counters *
rplb_lb_service_counters(const struct rplb_lb *lb, unsigned int worker)
{
	return worker < lb->n_workers ? lb->workers[worker].service_counters : NULL;
}

const struct rplb_backend_counters *
rplb_lb_backend_counters(const struct rplb_lb *lb, unsigned int worker)
{
	return worker < lb->n_workers ? lb->workers[worker].backend_counters : NULL;
}

unsigned int
rplb_lb_worker_count(const struct rplb_lb *lb)
{
	return lb->n_workers;
}

size_t
rplb_lb_worker_memory(uint32_t flow_table_size, uint32_t fragment_datagrams,
		      uint32_t fragment_held)
{
	if (fragment_datagrams == 0)
		fragment_datagrams = RPLB_FRAGMENT_DEFAULT_DATAGRAMS;
	return rplb_flow_table_memory(flow_table_size) +
	       rplb_fragment_table_memory(fragment_datagrams, fragment_held) +
	       RPLB_MAX_SERVICES * sizeof(struct rplb_service_counters) +
	       RPLB_MAX_BACKENDS * sizeof(struct rplb_backend_counters) +
	       sizeof(struct rplb_flow_sample_slot);
}

size_t
rplb_lb_flow_memory(const struct rplb_lb *lb)
{
	return rplb_flow_table_bytes_per_flow(lb->flow_table_size);
}
