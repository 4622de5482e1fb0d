/* SPDX-License-Identifier: BSD-3-Clause
 *
 * contract.c: what the control plane reads of the C side, by name: the
 * limits and encoding constants, and the layout of every struct Python
 * reads or writes as a numpy array (specs, counters, flow samples).
 * rplb/contract.py builds its constants and numpy dtypes from these
 * tables only, so a field or limit changed here reaches Python with the
 * next build; tests/test_contract.py checks the two sides agree.
 */
#include <stddef.h>

#include <rte_telemetry.h>

#include "lb.h"
#include "rplb.h"
#include "telemetry.h"

_Static_assert(RPLB_TEL_MAX_ENTRIES == RTE_TEL_MAX_DICT_ENTRIES,
	       "telemetry.h: RPLB_TEL_MAX_ENTRIES is rte_telemetry.h's dict limit");

#define CONSTANT(name) { #name, (int64_t)(name) }

const struct rplb_constant rplb_constants[] = {
	CONSTANT(RPLB_SIDES),
	CONSTANT(RPLB_FRONTEND),
	CONSTANT(RPLB_BACKEND),
	CONSTANT(RPLB_BURST),
	CONSTANT(RPLB_HANDOFF_FRAMES_PER_WORKER),
	CONSTANT(RPLB_MAX_WORKERS),
	CONSTANT(RPLB_MAX_SERVICES),
	CONSTANT(RPLB_MAX_BACKENDS),
	CONSTANT(RPLB_BACKEND_SLOT_BITS),
	CONSTANT(RPLB_BACKEND_GENERATIONS),
	CONSTANT(RPLB_MAX_TIMEOUT_S),
	CONSTANT(RPLB_MAX_WEIGHT),
	CONSTANT(RPLB_MAGLEV_MIN_SIZE),
	CONSTANT(RPLB_MAGLEV_MAX_SIZE),
	CONSTANT(RPLB_MAX_FLOW_TABLE_SIZE),
	CONSTANT(RPLB_FLOW_SAMPLE_MAX),
	CONSTANT(RPLB_DROP_REASONS),
	CONSTANT(RPLB_EVENTS),
	CONSTANT(RPLB_FLOW_STATES),
	CONSTANT(RPLB_TEL_MAX_ENTRIES),
	CONSTANT(RPLB_FRAGMENT_MAX_DATAGRAMS),
	CONSTANT(RPLB_FRAGMENT_MAX_HELD),
	CONSTANT(RPLB_FRAGMENT_MAX_TIMEOUT_S),
	CONSTANT(RPLB_FRAGMENT_DEFAULT_DATAGRAMS),
	CONSTANT(RPLB_FRAGMENT_DEFAULT_HELD),
	CONSTANT(RPLB_FRAGMENT_DEFAULT_TIMEOUT_S),
	{ NULL, 0 },
};

/* 'i' for the signed integer types, 'u' for the others. */
#define KIND(s, f) _Generic(((struct s *)0)->f, \
	int8_t: 'i', int16_t: 'i', int32_t: 'i', int64_t: 'i', default: 'u')
#define FIELD(s, f) \
	{ #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f), 1, KIND(s, f), NULL }
#define ARRAY(s, f) \
	{ #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f[0]), \
	  RTE_DIM(((struct s *)0)->f), KIND(s, f[0]), NULL }
#define STRUCT_ARRAY(s, f, type) \
	{ #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f[0]), \
	  RTE_DIM(((struct s *)0)->f), 's', #type }

const struct rplb_field_layout rplb_layout[] = {
	FIELD(rplb_service_spec, vip),
	FIELD(rplb_service_spec, port),
	FIELD(rplb_service_spec, proto),
	FIELD(rplb_service_spec, family),
	FIELD(rplb_service_spec, service_id),
	ARRAY(rplb_service_spec, vip6),
	FIELD(rplb_backend_spec, ip),
	FIELD(rplb_backend_spec, port),
	FIELD(rplb_backend_spec, weight),
	FIELD(rplb_backend_spec, backend_id),
	FIELD(rplb_backend_spec, service_id),
	ARRAY(rplb_backend_spec, ip6),
	FIELD(rplb_port_counters, rx_packets),
	FIELD(rplb_port_counters, rx_bytes),
	FIELD(rplb_port_counters, tx_packets),
	FIELD(rplb_port_counters, tx_bytes),
	FIELD(rplb_port_counters, tx_dropped),
	STRUCT_ARRAY(rplb_lcore_counters, port, rplb_port_counters),
	ARRAY(rplb_lcore_counters, drops),
	ARRAY(rplb_lcore_counters, events),
	FIELD(rplb_service_counters, packets),
	FIELD(rplb_service_counters, bytes),
	FIELD(rplb_backend_counters, packets),
	FIELD(rplb_backend_counters, bytes),
	FIELD(rplb_backend_counters, new_flows),
	FIELD(rplb_backend_counters, active_flows),
	FIELD(rplb_flow_sample, client_ip),
	FIELD(rplb_flow_sample, vip),
	FIELD(rplb_flow_sample, backend_ip),
	FIELD(rplb_flow_sample, client_port),
	FIELD(rplb_flow_sample, vport),
	FIELD(rplb_flow_sample, backend_port),
	FIELD(rplb_flow_sample, service_id),
	FIELD(rplb_flow_sample, backend_id),
	FIELD(rplb_flow_sample, proto),
	FIELD(rplb_flow_sample, state),
	FIELD(rplb_flow_sample, family),
	FIELD(rplb_flow_sample, reserved),
	FIELD(rplb_flow_sample, idle_ms),
	ARRAY(rplb_flow_sample, client_ip6),
	ARRAY(rplb_flow_sample, vip6),
	ARRAY(rplb_flow_sample, backend_ip6),
	{ NULL, NULL, 0, 0, 0, 0, NULL },
};

#define SIZE(s) { #s, sizeof(struct s) }

const struct rplb_struct_size rplb_struct_sizes[] = {
	SIZE(rplb_service_spec),
	SIZE(rplb_backend_spec),
	SIZE(rplb_port_counters),
	SIZE(rplb_lcore_counters),
	SIZE(rplb_service_counters),
	SIZE(rplb_backend_counters),
	SIZE(rplb_flow_sample),
	{ NULL, 0 },
};
