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
#include <rte_lcore.h>
#include <rte_log.h>
#include <rte_malloc.h>

#include "lb.h"
#include "packet6.h"

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
	/* IPv6 */
	size_t service6_slots;
	size_t vip6_slots;
	size_t backend_ip6_slots;
	size_t owner6_slots;
	size_t service_vip6;
	size_t backend_ip6;
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
	size->service6_slots = service_slots * sizeof(struct rplb_service6_slot);
	size->vip6_slots = service_slots * sizeof(struct rplb_addr6_slot);
	size->backend_ip6_slots = backend_slots * sizeof(struct rplb_addr6_slot);
	size->owner6_slots = backend_slots * sizeof(struct rplb_owner6_slot);
	size->service_vip6 = RTE_MAX(n_services, 1u) * sizeof(struct rplb_addr6_slot);
	size->backend_ip6 = RPLB_MAX_BACKENDS * sizeof(struct rplb_addr6_slot);
}

static void
add_address6(struct rplb_addr6_slot *slots, uint32_t mask, const uint8_t addr[16])
{
	uint32_t i;

	for (i = rplb_lookup6_hash(addr, 0, 0) & mask;
	     !rplb_addr6_zero(slots[i].addr) && !rplb_addr6_equal(slots[i].addr, addr);
	     i = (i + 1) & mask)
		;
	memcpy(slots[i].addr, addr, 16);
}

/* An IPv6 address a VIP or a backend may have: not unspecified (::, the
 * empty slot), not loopback (::1), not multicast (ff00::/8). */
static int
usable_address6(const uint8_t addr[16])
{
	static const uint8_t loopback[16] = { [15] = 1 };

	return !rplb_addr6_zero(addr) && !rplb_addr6_equal(addr, loopback) && addr[0] != 0xff;
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
	struct rplb_maglev *maglev;
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
	maglev = rte_malloc_socket("rplb_maglev", rplb_lb_maglev_memory(size, n_backends),
			      RTE_CACHE_LINE_SIZE, socket_id);
	if (maglev == NULL) {
		rte_errno = ENOMEM;
		return NULL;
	}
	maglev->refcount = 1;
	maglev->size = size;
	maglev->n_backends = n_backends;
	maglev->backend_ids = &maglev->slots[size];
	memcpy(maglev->backend_ids, backend_ids, (size_t)n_backends * sizeof(*backend_ids));
	for (i = 0; i < size; i++)
		maglev->slots[i] = owners[i] < 0 ? RPLB_NO_BACKEND :
			      rplb_backend_slot(backend_ids[owners[i]]);
	return maglev;
}

static void
maglev_take(struct rplb_maglev *maglev)
{
	__atomic_fetch_add(&maglev->refcount, 1, __ATOMIC_RELAXED);
}

void
rplb_maglev_release(struct rplb_maglev *maglev)
{
	if (maglev != NULL && __atomic_sub_fetch(&maglev->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		rte_free(maglev);
}

uint32_t
rplb_maglev_size(const struct rplb_maglev *maglev)
{
	return maglev->size;
}

/* ---- table generations ------------------------------------------------- */

size_t
rplb_lb_tables_memory(uint32_t n_services, uint32_t n_backends)
{
	struct tables_sizes size;

	tables_sizes(n_services, n_backends, &size);
	return sizeof(struct rplb_lb_tables) + size.service_slots + size.vip_slots +
	       size.backend_ip_slots + size.owner_slots + size.services + size.maglevs +
	       size.backends + size.slot_taken_in + size.reused_slots + size.service6_slots +
	       size.vip6_slots + size.backend_ip6_slots + size.owner6_slots + size.service_vip6 +
	       size.backend_ip6;
}

static void
tables_free(struct rplb_lb_tables *tables)
{
	uint32_t s;

	if (tables == NULL)
		return;
	for (s = 0; tables->maglevs != NULL && s < tables->n_services; s++)
		rplb_maglev_release(tables->maglevs[s]);
	rte_free(tables->service_slots);
	rte_free(tables->vip_slots);
	rte_free(tables->backend_ip_slots);
	rte_free(tables->owner_slots);
	rte_free(tables->services);
	rte_free(tables->backends);
	rte_free(tables->reused_slots);
	rte_free(tables->slot_taken_in);
	rte_free(tables->maglevs);
	rte_free(tables->service6_slots);
	rte_free(tables->vip6_slots);
	rte_free(tables->backend_ip6_slots);
	rte_free(tables->owner6_slots);
	rte_free(tables->service_vip6);
	rte_free(tables->backend_ip6);
	rte_free(tables);
}

#define SPEC_ERROR(fmt, ...) \
	do { LOG(ERR, "tables: " fmt, ##__VA_ARGS__); return -EINVAL; } while (0)

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
		const struct rplb_service_spec *spec = &specs->services[s];

		if ((spec->proto != IPPROTO_TCP && spec->proto != IPPROTO_UDP) ||
		    spec->service_id >= RPLB_MAX_SERVICES)
			SPEC_ERROR("service spec %u is invalid (proto %u, service id %u)",
				   s, spec->proto, spec->service_id);
		if (spec->family == 4 && (spec->vip == 0 || !rplb_addr6_zero(spec->vip6)))
			SPEC_ERROR("service spec %u (IPv4) has vip %08x and a non-zero vip6: an IPv4 "
				   "service needs vip, and vip6 all zero", s, spec->vip);
		if (spec->family == 6 && (spec->vip != 0 || !usable_address6(spec->vip6)))
			SPEC_ERROR("service spec %u (IPv6): vip6 must be a unicast address (not ::, "
				   "::1 or multicast) and vip 0 (vip is %08x)", s, spec->vip);
		if (spec->family != 4 && spec->family != 6)
			SPEC_ERROR("service spec %u has family %u, not 4 or 6", s, spec->family);
		if (service_index[spec->service_id] != UINT32_MAX)
			SPEC_ERROR("service specs %u and %u share service id %u",
				   service_index[spec->service_id], s, spec->service_id);
		service_index[spec->service_id] = s;
	}
	for (b = 0; b < specs->n_backends; b++) {
		const struct rplb_backend_spec *spec = &specs->backends[b];

		if (spec->service_id >= RPLB_MAX_SERVICES || service_index[spec->service_id] == UINT32_MAX)
			SPEC_ERROR("backend spec %u names service id %u, which no service spec has",
				   b, spec->service_id);
		if (specs->services[service_index[spec->service_id]].family == 6 ?
		    (spec->ip != 0 || !usable_address6(spec->ip6)) : !rplb_addr6_zero(spec->ip6))
			SPEC_ERROR("backend spec %u is not in its service's address family (IPv%u): "
				   "an IPv6 backend needs ip6 (unicast) and ip 0, an IPv4 one ip6 all zero",
				   b, specs->services[service_index[spec->service_id]].family);
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
	struct rplb_lb_tables *tables;
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
	tables = rte_zmalloc_socket("rplb_tables", sizeof(*tables), RTE_CACHE_LINE_SIZE, socket_id);
	if (tables == NULL)
		goto nomem;
	tables->generation = prev == NULL ? 1 : prev->generation + 1;
	tables->strict = !!specs->strict;
	for (i = 0; i < RPLB_FLOW_STATES; i++) {
		uint64_t ticks = ((uint64_t)specs->timeout_s[i] * rte_get_tsc_hz()) >> clock_shift;

		tables->timeout_ticks[i] = (uint32_t)RTE_MAX(ticks, 1ull);
	}

	tables_sizes(n_services, n_backends, &size);
#define ALLOCATE(field, zeroed) \
	(tables->field = (zeroed ? rte_zmalloc_socket : rte_malloc_socket)( \
		"rplb_" #field, size.field, RTE_CACHE_LINE_SIZE, socket_id))
	tables->service_mask = tables->vip_mask = slots_for(n_services) - 1;
	tables->backend_ip_mask = tables->owner_mask = slots_for(n_backends) - 1;
	tables->service6_mask = tables->vip6_mask = tables->service_mask;
	tables->backend_ip6_mask = tables->owner6_mask = tables->owner_mask;
	/* The hash slots and the services are zeroed (0: an empty slot). */
	if (ALLOCATE(service_slots, 1) == NULL || ALLOCATE(vip_slots, 1) == NULL ||
	    ALLOCATE(backend_ip_slots, 1) == NULL || ALLOCATE(owner_slots, 1) == NULL ||
	    ALLOCATE(services, 1) == NULL || ALLOCATE(maglevs, 1) == NULL ||
	    ALLOCATE(backends, 0) == NULL || ALLOCATE(slot_taken_in, 0) == NULL ||
	    ALLOCATE(reused_slots, 0) == NULL || ALLOCATE(service6_slots, 1) == NULL ||
	    ALLOCATE(vip6_slots, 1) == NULL || ALLOCATE(backend_ip6_slots, 1) == NULL ||
	    ALLOCATE(owner6_slots, 1) == NULL || ALLOCATE(service_vip6, 1) == NULL ||
	    ALLOCATE(backend_ip6, 0) == NULL)
		goto nomem;
#undef ALLOCATE

	/* Every slot unused, keeping the id of its last backend. */
	for (i = 0; i < RPLB_MAX_BACKENDS; i++) {
		tables->backends[i] = (struct rplb_lb_backend){
			.service_id = RPLB_NO_SERVICE,
			.backend_id = prev == NULL ? 0 : prev->backends[i].backend_id,
		};
		tables->slot_taken_in[i] = prev == NULL ? 0 : prev->slot_taken_in[i];
	}
	for (b = 0; b < n_backends; b++) {
		const struct rplb_backend_spec *spec = &specs->backends[b];
		const struct rplb_service_spec *service =
			&specs->services[service_index[spec->service_id]];
		uint32_t slot = rplb_backend_slot(spec->backend_id);

		if (tables->backends[slot].service_id != RPLB_NO_SERVICE) {
			for (i = 0; rplb_backend_slot(specs->backends[i].backend_id) != slot; i++)
				;
			LOG(ERR, "tables: backend specs %u and %u share slot %u (backend ids %u, %u)",
			    i, b, slot, specs->backends[i].backend_id, spec->backend_id);
			goto invalid;
		}
		if (tables->backends[slot].backend_id != spec->backend_id || prev == NULL) {
			/* The slot changes hands (or is taken for the first time). */
			tables->slot_taken_in[slot] = (uint32_t)tables->generation;
			tables->reused_slots[tables->n_reused++] = slot;
		}
		tables->backends[slot] = (struct rplb_lb_backend){
			.ip = spec->ip,
			.port = spec->port,
			.service_id = (uint16_t)service->service_id,
			.backend_id = spec->backend_id,
			.to_backend = service->family == 6 ?
				rplb_cksum_deltas6(service->vip6, service->port, spec->ip6, spec->port) :
				rplb_cksum_deltas(service->vip, service->port, spec->ip, spec->port),
		};
		if (service->family == 6)
			memcpy(tables->backend_ip6[slot].addr, spec->ip6, 16);
	}

	for (s = 0; s < n_services; s++) {
		const struct rplb_service_spec *spec = &specs->services[s];
		const struct rplb_maglev *maglev = specs->maglevs[s];
		struct rplb_lb_service *service = &tables->services[s];
		struct rplb_service_slot *slot;

		/* A Maglev table may only name backends of its own service. */
		for (i = 0; maglev != NULL && i < maglev->n_backends; i++) {
			const struct rplb_lb_backend *owner =
				&tables->backends[rplb_backend_slot(maglev->backend_ids[i])];

			if (owner->backend_id != maglev->backend_ids[i] ||
			    owner->service_id != spec->service_id) {
				LOG(ERR, "tables: the Maglev table of service spec %u names backend id "
				    "%u, which is not one of the service's", s, maglev->backend_ids[i]);
				goto invalid;
			}
		}
		*service = (struct rplb_lb_service){
			.vip = spec->vip, .port = spec->port, .proto = spec->proto,
			.service_id = (uint16_t)spec->service_id,
			.maglev_size = maglev != NULL ? maglev->size : RTE_DIM(no_backend_table),
			.maglev = maglev != NULL ? maglev->slots : no_backend_table,
		};
		if (spec->family == 6) {
			struct rplb_service6_slot *slot6;

			memcpy(tables->service_vip6[s].addr, spec->vip6, 16);
			for (i = rplb_lookup6_hash(spec->vip6, spec->port, spec->proto) &
				 tables->service6_mask;
			     tables->service6_slots[i].used; i = (i + 1) & tables->service6_mask) {
				slot6 = &tables->service6_slots[i];
				if (rplb_addr6_equal(slot6->vip6, spec->vip6) &&
				    slot6->port == spec->port && slot6->proto == spec->proto) {
					LOG(ERR, "tables: service spec %u duplicates service spec %u", s,
					    slot6->service_index);
					goto invalid;
				}
			}
			slot6 = &tables->service6_slots[i];
			*slot6 = (struct rplb_service6_slot){
				.port = spec->port, .proto = spec->proto, .used = 1,
				.service_index = (uint16_t)s, .service = service,
			};
			memcpy(slot6->vip6, spec->vip6, 16);
			add_address6(tables->vip6_slots, tables->vip6_mask, spec->vip6);
			tables->n_services6++;
			continue;
		}

		for (i = rplb_lookup_hash(spec->vip, spec->port, spec->proto) & tables->service_mask;
		     tables->service_slots[i].used; i = (i + 1) & tables->service_mask) {
			slot = &tables->service_slots[i];
			if (slot->vip == spec->vip && slot->port == spec->port &&
			    slot->proto == spec->proto) {
				LOG(ERR, "tables: service spec %u duplicates service spec %u", s,
				    slot->service_index);
				goto invalid;
			}
		}
		tables->service_slots[i] = (struct rplb_service_slot){
			.vip = spec->vip, .port = spec->port, .proto = spec->proto, .used = 1,
			.service_index = (uint16_t)s, .service = service,
		};

		add_address(tables->vip_slots, tables->vip_mask, spec->vip);
	}

	for (b = 0; b < n_backends; b++) {
		const struct rplb_backend_spec *spec = &specs->backends[b];
		const uint32_t index = service_index[spec->service_id];
		uint8_t proto = specs->services[index].proto;
		struct rplb_owner_slot *owner;

		if (specs->services[index].family == 6) {
			struct rplb_owner6_slot *owner6;

			add_address6(tables->backend_ip6_slots, tables->backend_ip6_mask, spec->ip6);
			for (i = rplb_lookup6_hash(spec->ip6, spec->port, proto) & tables->owner6_mask;
			     tables->owner6_slots[i].used; i = (i + 1) & tables->owner6_mask) {
				owner6 = &tables->owner6_slots[i];
				if (rplb_addr6_equal(owner6->ip6, spec->ip6) && owner6->port == spec->port &&
				    owner6->proto == proto)
					break;
			}
			owner6 = &tables->owner6_slots[i];
			if (owner6->used) {
				if (owner6->service_index != index)
					owner6->service_index = RPLB_SERVICE_SHARED;
				continue;
			}
			*owner6 = (struct rplb_owner6_slot){
				.port = spec->port, .proto = proto, .used = 1,
				.service_index = (uint16_t)index,
			};
			memcpy(owner6->ip6, spec->ip6, 16);
			continue;
		}

		if (spec->ip != 0)
			add_address(tables->backend_ip_slots, tables->backend_ip_mask, spec->ip);

		for (i = rplb_lookup_hash(spec->ip, spec->port, proto) & tables->owner_mask;
		     tables->owner_slots[i].used; i = (i + 1) & tables->owner_mask) {
			owner = &tables->owner_slots[i];
			if (owner->ip == spec->ip && owner->port == spec->port && owner->proto == proto)
				break;
		}
		owner = &tables->owner_slots[i];
		if (owner->used) {
			if (owner->service_index != index)
				owner->service_index = RPLB_SERVICE_SHARED;
			continue;
		}
		*owner = (struct rplb_owner_slot){
			.ip = spec->ip, .port = spec->port, .proto = proto, .used = 1,
			.service_index = (uint16_t)index,
		};
	}

	/* Valid: the generation holds its services' Maglev tables. */
	tables->n_services = n_services;
	tables->n_backends = n_backends;
	for (s = 0; s < n_services; s++) {
		tables->maglevs[s] = specs->maglevs[s];
		if (tables->maglevs[s] != NULL)
			maglev_take(tables->maglevs[s]);
	}
	free(service_index);
	return tables;

invalid:
	tables_free(tables);
	free(service_index);
	rte_errno = EINVAL;
	return NULL;
nomem:
	tables_free(tables);
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
		rplb_flow6_table_free(lb->workers[i].flows6);
		rplb_fragment_table_free(lb->workers[i].fragments);
		rte_free(lb->workers[i].service_counters);
		rte_free(lb->workers[i].backend_counters);
		rplb_flow_sample_slot_free(lb->workers[i].sample);
	}
	tables_free(lb->tables);
	rte_free(lb->qsbr);
	pthread_mutex_destroy(&lb->publish_lock);
	rte_free(lb);
}

/* Free what rplb_lb_add_worker allocated for a worker (NULLs skipped). */
static void
worker_state_free(struct rplb_lb_worker *lb_worker)
{
	rplb_flow_table_free(lb_worker->flows);
	rplb_flow6_table_free(lb_worker->flows6);
	rplb_fragment_table_free(lb_worker->fragments);
	rte_free(lb_worker->service_counters);
	rte_free(lb_worker->backend_counters);
	rplb_flow_sample_slot_free(lb_worker->sample);
	memset(lb_worker, 0, sizeof(*lb_worker));
}

int
rplb_lb_add_worker(struct rplb_lb *lb, unsigned int lcore_id)
{
	struct rplb_lb_worker *lb_worker;
	unsigned int index = lb->n_workers, i;
	uint64_t fragment_ticks;
	int socket_id, rc;

	if (index >= lb->max_workers || lcore_id >= RTE_MAX_LCORE)
		return -EINVAL;
	for (i = 0; i < lb->n_workers; i++)
		if (lb->workers[i].lcore_id == lcore_id)
			return -EEXIST;
	/* The worker's own state on its own socket's memory: only it reads
	 * and writes its flow table and its fragments. */
	socket_id = (int)rte_lcore_to_socket_id(lcore_id);
	if (socket_id < 0 || rte_lcore_is_enabled(lcore_id) == 0)
		socket_id = lb->socket_id;
	lb_worker = &lb->workers[index];
	memset(lb_worker, 0, sizeof(*lb_worker));
	lb_worker->lcore_id = lcore_id;
	lb_worker->flows = rplb_flow_table_create(lb->flow_table_size, socket_id);
	if (lb_worker->flows == NULL) {
		rc = -rte_errno;
		worker_state_free(lb_worker);
		return rc;
	}
	/* In the flow clock's ticks: the worker ages fragments with it. */
	fragment_ticks = ((uint64_t)lb->fragment_timeout_s * rte_get_tsc_hz()) >>
			 lb_worker->flows->clock_shift;
	lb_worker->fragments = rplb_fragment_table_create(lb->fragment_datagrams,
							  lb->fragment_held,
							  (uint32_t)RTE_MAX(fragment_ticks, 1ull),
							  socket_id);
	lb_worker->service_counters = rte_zmalloc_socket("rplb_service_counters",
		RPLB_MAX_SERVICES * sizeof(*lb_worker->service_counters), RTE_CACHE_LINE_SIZE,
		socket_id);
	lb_worker->backend_counters = rte_zmalloc_socket("rplb_backend_counters",
		RPLB_MAX_BACKENDS * sizeof(*lb_worker->backend_counters), RTE_CACHE_LINE_SIZE,
		socket_id);
	lb_worker->sample = rplb_flow_sample_slot_create(socket_id);
	lb_worker->flows6 = rplb_flow6_table_create(rplb_flow6_capacity(lb->flow_table_size),
						    socket_id);
	if (lb_worker->flows6 == NULL || lb_worker->fragments == NULL || lb_worker->service_counters == NULL ||
	    lb_worker->backend_counters == NULL || lb_worker->sample == NULL) {
		worker_state_free(lb_worker);
		return -ENOMEM;
	}
	/* Every worker reports to the one RCU of the tables: a publish waits
	 * for all of them (rplb_lb_publish). */
	rc = rte_rcu_qsbr_thread_register(lb->qsbr, lcore_id);
	if (rc != 0) {
		worker_state_free(lb_worker);
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

uint32_t
rplb_lb_worker_flows(const struct rplb_lb *lb, unsigned int worker)
{
	const struct rplb_flow_table *flows;

	if (worker >= lb->n_workers)
		return 0;
	flows = lb->workers[worker].flows;
	/* Written by the worker only; an aligned 32-bit load sees the old or
	 * the new count. */
	return flows->capacity - __atomic_load_n(&flows->free_count, __ATOMIC_RELAXED);
}

size_t
rplb_lb_worker_memory(uint32_t flow_table_size, uint32_t fragment_datagrams,
		      uint32_t fragment_held)
{
	if (fragment_datagrams == 0)
		fragment_datagrams = RPLB_FRAGMENT_DEFAULT_DATAGRAMS;
	return rplb_flow_table_memory(flow_table_size) +
	       rplb_flow6_table_memory(rplb_flow6_capacity(flow_table_size)) +
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
