/* SPDX-License-Identifier: BSD-3-Clause
 *
 * lb_tables.c: control-plane side of the load-balancing engine.  Builds the
 * immutable lookup tables from the specs Python hands over, and publishes
 * them to running workers through RCU (after GLB director's reload: build
 * new, swap a pointer, free the old after every worker moved on).  The
 * services' Maglev tables, by far the largest part, are built once per
 * change of the service and shared by the generations that keep it.
 */
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_log.h>
#include <rte_malloc.h>

#include "lb.h"

#define LOG(level, fmt, ...) \
	rte_log(RTE_LOG_ ## level, RTE_LOGTYPE_USER1, "rplb: " fmt "\n", ##__VA_ARGS__)

/* A power of two at least twice n: open addressing stays short. */
static uint32_t
slots_for(uint32_t n)
{
	uint32_t slots = 8;

	while (slots < 2 * n)
		slots <<= 1;
	return slots;
}

/* The arrays of one generation of tables, in bytes: what tables_create
 * allocates, and what rplb_lb_tables_memory adds up for operators
 * (rplb-dpdk --check-config) without creating anything.  The services'
 * Maglev tables are apart (rplb_lb_maglev_memory): generations share them. */
struct tables_sizes {
	size_t service_slots;
	size_t vip_slots;
	size_t backend_ip_slots;
	size_t owner_slots;
	size_t services;
	size_t maglevs;             /* the references, one per service */
	size_t backends;
	size_t slot_taken_in;
	size_t reused_slots;
};

static void
tables_sizes(uint32_t n_services, uint32_t n_backends, struct tables_sizes *size)
{
	size_t service_slots = slots_for(n_services), backend_slots = slots_for(n_backends);

	size->service_slots = service_slots * sizeof(struct rplb_service_slot);
	size->vip_slots = service_slots * sizeof(uint32_t);
	size->backend_ip_slots = backend_slots * sizeof(uint32_t);
	size->owner_slots = backend_slots * sizeof(struct rplb_owner_slot);
	size->services = RTE_MAX(n_services, 1u) * sizeof(struct rplb_lb_service);
	size->maglevs = RTE_MAX(n_services, 1u) * sizeof(struct rplb_maglev *);
	size->backends = RPLB_MAX_BACKENDS * sizeof(struct rplb_lb_backend);
	size->slot_taken_in = RPLB_MAX_BACKENDS * sizeof(uint32_t);
	size->reused_slots = RTE_MAX(n_backends, 1u) * sizeof(uint32_t);
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

/* ---- Maglev tables, shared between generations -------------------------- */

/* The table of a service without a backend of weight > 0. */
static const uint32_t no_backend_table[1] = { RPLB_NO_BACKEND };

size_t
rplb_lb_maglev_memory(uint32_t size, uint32_t n_backends)
{
	return sizeof(struct rplb_maglev) + ((size_t)size + n_backends) * sizeof(uint32_t);
}

struct rplb_maglev *
rplb_maglev_create(const int32_t *owners, uint32_t size, const uint32_t *backend_ids,
		   uint32_t n_backends, int socket_id)
{
	struct rplb_maglev *m;
	uint32_t i;

	if (size < RPLB_MAGLEV_MIN_SIZE || size > RPLB_MAGLEV_MAX_SIZE ||
	    n_backends > RPLB_MAX_BACKENDS) {
		LOG(ERR, "maglev: size %u or %u backends out of range", size, n_backends);
		rte_errno = EINVAL;
		return NULL;
	}
	for (i = 0; i < size; i++) {
		if (owners[i] < -1 || owners[i] >= (int64_t)n_backends) {
			LOG(ERR, "maglev: entry %u names backend %d of %u", i, owners[i], n_backends);
			rte_errno = EINVAL;
			return NULL;
		}
	}
	m = rte_malloc_socket("rplb_maglev", rplb_lb_maglev_memory(size, n_backends),
			      RTE_CACHE_LINE_SIZE, socket_id);
	if (m == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	m->refcount = 1;
	m->size = size;
	m->n_backends = n_backends;
	m->backend_ids = &m->slots[size];
	memcpy(m->backend_ids, backend_ids, (size_t)n_backends * sizeof(*backend_ids));
	for (i = 0; i < size; i++)
		m->slots[i] = owners[i] < 0 ? RPLB_NO_BACKEND :
			      rplb_backend_slot(backend_ids[owners[i]]);
	return m;
}

static void
maglev_take(struct rplb_maglev *m)
{
	__atomic_fetch_add(&m->refcount, 1, __ATOMIC_RELAXED);
}

void
rplb_maglev_release(struct rplb_maglev *m)
{
	if (m != NULL && __atomic_sub_fetch(&m->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		rte_free(m);
}

uint32_t
rplb_maglev_size(const struct rplb_maglev *m)
{
	return m->size;
}

/* ---- table generations ------------------------------------------------- */

size_t
rplb_lb_tables_memory(uint32_t n_services, uint32_t n_backends)
{
	struct tables_sizes size;

	tables_sizes(n_services, n_backends, &size);
	return sizeof(struct rplb_lb_tables) + size.service_slots + size.vip_slots +
	       size.backend_ip_slots + size.owner_slots + size.services + size.maglevs +
	       size.backends + size.slot_taken_in + size.reused_slots;
}

static void
tables_free(struct rplb_lb_tables *t)
{
	uint32_t s;

	if (t == NULL)
		return;
	for (s = 0; t->maglevs != NULL && s < t->n_services; s++)
		rplb_maglev_release(t->maglevs[s]);
	rte_free(t->service_slots);
	rte_free(t->vip_slots);
	rte_free(t->backend_ip_slots);
	rte_free(t->owner_slots);
	rte_free(t->services);
	rte_free(t->backends);
	rte_free(t->reused_slots);
	rte_free(t->slot_taken_in);
	rte_free(t->maglevs);
	rte_free(t);
}

#define SPEC_ERROR(fmt, ...) do { LOG(ERR, "tables: " fmt, ##__VA_ARGS__); return -EINVAL; } while (0)

/* What one generation's specs must satisfy on their own; service_index:
 * RPLB_MAX_SERVICES entries, filled with each service id's spec index. */
static int
validate_specs(const struct rplb_table_specs *specs, uint32_t *service_index)
{
	uint32_t s, b, i;

	if (specs->n_services > RPLB_MAX_SERVICES || specs->n_backends > RPLB_MAX_BACKENDS)
		SPEC_ERROR("%u services / %u backends: at most %u / %u", specs->n_services,
			   specs->n_backends, RPLB_MAX_SERVICES, RPLB_MAX_BACKENDS);
	if ((specs->n_services > 0 && (specs->services == NULL || specs->maglevs == NULL)) ||
	    (specs->n_backends > 0 && specs->backends == NULL))
		SPEC_ERROR("spec arrays missing");
	for (i = 0; i < RPLB_FLOW_STATES; i++)
		/* The flow clock wraps after 4 days: longer timeouts are refused. */
		if (specs->timeout_s[i] == 0 || specs->timeout_s[i] > RPLB_MAX_TIMEOUT_S)
			SPEC_ERROR("timeout of flow state %s is %u s, not 1-%u",
				   rplb_flow_state_names[i], specs->timeout_s[i], RPLB_MAX_TIMEOUT_S);
	for (i = 0; i < RPLB_MAX_SERVICES; i++)
		service_index[i] = UINT32_MAX;
	for (s = 0; s < specs->n_services; s++) {
		const struct rplb_service_spec *sp = &specs->services[s];

		if (sp->vip == 0 || (sp->proto != IPPROTO_TCP && sp->proto != IPPROTO_UDP) ||
		    sp->service_id >= RPLB_MAX_SERVICES)
			SPEC_ERROR("service spec %u is invalid (vip %08x, proto %u, service id %u)",
				   s, sp->vip, sp->proto, sp->service_id);
		if (service_index[sp->service_id] != UINT32_MAX)
			SPEC_ERROR("service specs %u and %u share service id %u",
				   service_index[sp->service_id], s, sp->service_id);
		service_index[sp->service_id] = s;
	}
	for (b = 0; b < specs->n_backends; b++) {
		const struct rplb_backend_spec *bp = &specs->backends[b];

		if (bp->service_id >= RPLB_MAX_SERVICES ||
		    service_index[bp->service_id] == UINT32_MAX)
			SPEC_ERROR("backend spec %u names service id %u, which no service spec has",
				   b, bp->service_id);
	}
	return 0;
}

/* The next generation after prev (NULL: the first), built from specs;
 * NULL + rte_errno.  Called by the one publisher (publish_lock). */
static struct rplb_lb_tables *
tables_create(const struct rplb_lb *lb, const struct rplb_lb_tables *prev,
	      const struct rplb_table_specs *specs)
{
	const uint32_t n_services = specs->n_services, n_backends = specs->n_backends;
	uint32_t clock_shift = rplb_flow_clock_shift(rte_get_tsc_hz());
	uint32_t *service_index;
	struct rplb_lb_tables *t;
	struct tables_sizes size;
	uint32_t s, b, i;
	int socket_id = lb->socket_id;
	int rc;

	service_index = malloc(RPLB_MAX_SERVICES * sizeof(*service_index));
	if (service_index == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	rc = validate_specs(specs, service_index);
	if (rc < 0) {
		free(service_index);
		rte_errno = -rc;
		return NULL;
	}
	t = rte_zmalloc_socket("rplb_tables", sizeof(*t), RTE_CACHE_LINE_SIZE, socket_id);
	if (t == NULL)
		goto nomem;
	t->generation = prev == NULL ? 1 : prev->generation + 1;
	t->strict = !!specs->strict;
	for (i = 0; i < RPLB_FLOW_STATES; i++) {
		uint64_t ticks = ((uint64_t)specs->timeout_s[i] * rte_get_tsc_hz()) >> clock_shift;

		t->timeout_ticks[i] = (uint32_t)RTE_MAX(ticks, 1ull);
	}

	tables_sizes(n_services, n_backends, &size);
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
	t->maglevs = rte_zmalloc_socket("rplb_maglevs", size.maglevs, RTE_CACHE_LINE_SIZE,
					socket_id);
	t->backends = rte_malloc_socket("rplb_backends", size.backends, RTE_CACHE_LINE_SIZE,
					socket_id);
	t->slot_taken_in = rte_malloc_socket("rplb_slot_taken_in", size.slot_taken_in,
					     RTE_CACHE_LINE_SIZE, socket_id);
	t->reused_slots = rte_malloc_socket("rplb_reused_slots", size.reused_slots,
					    RTE_CACHE_LINE_SIZE, socket_id);
	if (t->service_slots == NULL || t->vip_slots == NULL || t->owner_slots == NULL ||
	    t->backend_ip_slots == NULL || t->services == NULL || t->maglevs == NULL ||
	    t->backends == NULL || t->slot_taken_in == NULL || t->reused_slots == NULL)
		goto nomem;

	/* Every slot unused, keeping the id of its last backend. */
	for (i = 0; i < RPLB_MAX_BACKENDS; i++) {
		t->backends[i] = (struct rplb_lb_backend){
			.service_id = RPLB_NO_SERVICE,
			.backend_id = prev == NULL ? 0 : prev->backends[i].backend_id,
		};
		t->slot_taken_in[i] = prev == NULL ? 0 : prev->slot_taken_in[i];
	}
	for (b = 0; b < n_backends; b++) {
		const struct rplb_backend_spec *bp = &specs->backends[b];
		const struct rplb_service_spec *sp = &specs->services[service_index[bp->service_id]];
		uint32_t slot = rplb_backend_slot(bp->backend_id);

		if (t->backends[slot].service_id != RPLB_NO_SERVICE) {
			for (i = 0; rplb_backend_slot(specs->backends[i].backend_id) != slot; i++)
				;
			LOG(ERR, "tables: backend specs %u and %u share slot %u (backend ids %u, %u)",
			    i, b, slot, specs->backends[i].backend_id, bp->backend_id);
			goto invalid;
		}
		if (t->backends[slot].backend_id != bp->backend_id || prev == NULL) {
			/* The slot changes hands (or is taken for the first time). */
			t->slot_taken_in[slot] = (uint32_t)t->generation;
			t->reused_slots[t->n_reused++] = slot;
		}
		t->backends[slot] = (struct rplb_lb_backend){
			.ip = bp->ip,
			.port = bp->port,
			.service_id = (uint16_t)sp->service_id,
			.backend_id = bp->backend_id,
			.to_backend = rplb_cksum_deltas(sp->vip, sp->port, bp->ip, bp->port),
		};
	}

	for (s = 0; s < n_services; s++) {
		const struct rplb_service_spec *sp = &specs->services[s];
		const struct rplb_maglev *m = specs->maglevs[s];
		struct rplb_lb_service *svc = &t->services[s];

		/* A Maglev table may only name backends of its own service. */
		for (i = 0; m != NULL && i < m->n_backends; i++) {
			const struct rplb_lb_backend *owner =
				&t->backends[rplb_backend_slot(m->backend_ids[i])];

			if (owner->backend_id != m->backend_ids[i] ||
			    owner->service_id != sp->service_id) {
				LOG(ERR, "tables: the Maglev table of service spec %u names backend id %u, "
				    "which is not one of the service's", s, m->backend_ids[i]);
				goto invalid;
			}
		}
		*svc = (struct rplb_lb_service){
			.vip = sp->vip, .port = sp->port, .proto = sp->proto,
			.service_id = (uint16_t)sp->service_id,
			.maglev_size = m != NULL ? m->size : RTE_DIM(no_backend_table),
			.maglev = m != NULL ? m->slots : no_backend_table,
		};

		for (i = rplb_lookup_hash(sp->vip, sp->port, sp->proto) & t->service_mask;
		     t->service_slots[i].used; i = (i + 1) & t->service_mask) {
			if (t->service_slots[i].vip == sp->vip && t->service_slots[i].port == sp->port &&
			    t->service_slots[i].proto == sp->proto) {
				LOG(ERR, "tables: service spec %u duplicates service spec %u", s,
				    t->service_slots[i].service_index);
				goto invalid;
			}
		}
		t->service_slots[i] = (struct rplb_service_slot){
			.vip = sp->vip, .port = sp->port, .proto = sp->proto, .used = 1,
			.service_index = (uint16_t)s, .service = svc,
		};

		add_address(t->vip_slots, t->vip_mask, sp->vip);
	}

	for (b = 0; b < n_backends; b++) {
		const struct rplb_backend_spec *bp = &specs->backends[b];
		const uint32_t index = service_index[bp->service_id];
		uint8_t proto = specs->services[index].proto;

		if (bp->ip != 0)
			add_address(t->backend_ip_slots, t->backend_ip_mask, bp->ip);

		for (i = rplb_lookup_hash(bp->ip, bp->port, proto) & t->owner_mask;
		     t->owner_slots[i].used; i = (i + 1) & t->owner_mask) {
			struct rplb_owner_slot *o = &t->owner_slots[i];

			if (o->ip == bp->ip && o->port == bp->port && o->proto == proto)
				break;
		}
		if (t->owner_slots[i].used) {
			if (t->owner_slots[i].service_index != index)
				t->owner_slots[i].service_index = RPLB_SERVICE_SHARED;
			continue;
		}
		t->owner_slots[i] = (struct rplb_owner_slot){
			.ip = bp->ip, .port = bp->port, .proto = proto, .used = 1,
			.service_index = (uint16_t)index,
		};
	}

	/* Valid: the generation holds its services' Maglev tables. */
	t->n_services = n_services;
	t->n_backends = n_backends;
	for (s = 0; s < n_services; s++) {
		t->maglevs[s] = specs->maglevs[s];
		if (t->maglevs[s] != NULL)
			maglev_take(t->maglevs[s]);
	}
	free(service_index);
	return t;

invalid:
	tables_free(t);
	free(service_index);
	rte_errno = EINVAL;
	return NULL;
nomem:
	tables_free(t);
	free(service_index);
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

	if (params == NULL || params->flow_table_size == 0 ||
	    params->flow_table_size > RPLB_MAX_FLOW_TABLE_SIZE || params->max_workers == 0 ||
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
	pthread_mutex_init(&lb->publish_lock, NULL);

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
	if (rc == 0) {
		/* Start with empty tables: everything passes through. */
		struct rplb_table_specs empty = {0};

		memcpy(empty.timeout_s, params->timeout_s, sizeof(empty.timeout_s));
		lb->tables = tables_create(lb, NULL, &empty);
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
		rte_free(lb->workers[i].service_counters);
		rte_free(lb->workers[i].backend_counters);
		rplb_flow_sample_slot_free(lb->workers[i].sample);
	}
	tables_free(lb->tables);
	rte_free(lb->qsbr);
	pthread_mutex_destroy(&lb->publish_lock);
	rte_free(lb);
}

int
rplb_lb_add_worker(struct rplb_lb *lb, unsigned int lcore_id)
{
	struct rplb_lb_worker *lw;
	unsigned int index = lb->n_workers;
	int rc;

	if (index >= lb->max_workers || lcore_id >= RTE_MAX_LCORE)
		return -EINVAL;
	lw = &lb->workers[index];
	memset(lw, 0, sizeof(*lw));
	lw->lcore_id = lcore_id;
	lw->flows = rplb_flow_table_create(lb->flow_table_size, lb->socket_id);
	lw->service_counters = rte_zmalloc_socket("rplb_service_counters",
		RPLB_MAX_SERVICES * sizeof(*lw->service_counters), RTE_CACHE_LINE_SIZE,
		lb->socket_id);
	lw->backend_counters = rte_zmalloc_socket("rplb_backend_counters",
		RPLB_MAX_BACKENDS * sizeof(*lw->backend_counters), RTE_CACHE_LINE_SIZE,
		lb->socket_id);
	lw->sample = rplb_flow_sample_slot_create(lb->socket_id);
	if (lw->flows == NULL || lw->service_counters == NULL || lw->backend_counters == NULL ||
	    lw->sample == NULL) {
		rc = lw->flows == NULL ? -rte_errno : -ENOMEM;
		rplb_flow_table_free(lw->flows);
		rte_free(lw->service_counters);
		rte_free(lw->backend_counters);
		rplb_flow_sample_slot_free(lw->sample);
		memset(lw, 0, sizeof(*lw));
		return rc != 0 ? rc : -ENOMEM;
	}
	rc = rte_rcu_qsbr_thread_register(lb->qsbr, lcore_id);
	if (rc != 0) {
		rplb_flow_table_free(lw->flows);
		rte_free(lw->service_counters);
		rte_free(lw->backend_counters);
		rplb_flow_sample_slot_free(lw->sample);
		memset(lw, 0, sizeof(*lw));
		return -rte_errno;
	}
	lb->n_workers++;
	return (int)index;
}

int
rplb_lb_publish(struct rplb_lb *lb, const struct rplb_table_specs *specs)
{
	struct rplb_lb_tables *tables, *old;

	if (lb == NULL || specs == NULL)
		return -EINVAL;
	pthread_mutex_lock(&lb->publish_lock);
	/* Built against the published generation: unused slots keep their
	 * last backend's id, and the slots that change hands are listed. */
	tables = tables_create(lb, lb->tables, specs);
	if (tables == NULL) {
		pthread_mutex_unlock(&lb->publish_lock);
		return -rte_errno;
	}
	old = __atomic_exchange_n(&lb->tables, tables, __ATOMIC_ACQ_REL);
	/* Workers that are offline (not started, or stopped) do not hold old
	 * tables; online ones report a quiescent state every loop iteration.
	 * After the first grace period no worker uses the old generation;
	 * after the second every running worker has adopted the new one (a
	 * worker loads the tables after each quiescent state and adopts what
	 * it loads before the next), so it never meets a generation without
	 * having met its predecessor (the list of slots changing hands is
	 * relative to that). */
	rte_rcu_qsbr_synchronize(lb->qsbr, RTE_QSBR_THRID_INVALID);
	rte_rcu_qsbr_synchronize(lb->qsbr, RTE_QSBR_THRID_INVALID);
	pthread_mutex_unlock(&lb->publish_lock);
	tables_free(old);
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
rplb_lb_worker_memory(uint32_t flow_table_size)
{
	return rplb_flow_table_memory(flow_table_size) +
	       RPLB_MAX_SERVICES * sizeof(struct rplb_service_counters) +
	       RPLB_MAX_BACKENDS * sizeof(struct rplb_backend_counters) +
	       sizeof(struct rplb_flow_sample_slot);
}

size_t
rplb_lb_flow_memory(const struct rplb_lb *lb)
{
	return rplb_flow_table_bytes_per_flow(lb->flow_table_size);
}
