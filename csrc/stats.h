/* SPDX-License-Identifier: BSD-3-Clause
 *
 * stats.h: counters of the fast path and the limits that size them.
 *
 * Every counter has exactly one writer (the worker lcore that owns it), so
 * they are plain uint64_t in per-lcore, cache-aligned structs.  The control
 * plane reads them (64-bit aligned loads are atomic on the CPUs DPDK runs
 * on) and sums them over lcores.  Python reads every counter struct
 * through its layout and its names from the tables in stats.c
 * (contract.c exports both), so adding a counter here is the only edit
 * needed.
 */
#ifndef RPLB_STATS_H
#define RPLB_STATS_H

#include <stdint.h>

#include <rte_common.h>

#define RPLB_SIDES 2            /* index 0: frontend port, 1: backend port */
#define RPLB_FRONTEND 0
#define RPLB_BACKEND 1

/* Services and backends: a service id indexes the service counters and is
 * a uint16 in every flow record (UINT16_MAX means none); a backend slot
 * (the low bits of a backend id, rplb.h) indexes the backend counters and
 * the tables' backends. */
#define RPLB_MAX_SERVICES (1u << 15)
#define RPLB_BACKEND_SLOT_BITS 17
#define RPLB_MAX_BACKENDS (1u << RPLB_BACKEND_SLOT_BITS)
#define RPLB_MAX_TIMEOUT_S 86400 /* one day: the flow clock wraps after four */

/* Why a packet was dropped.  Keep in step with rplb_drop_names (stats.c). */
enum rplb_drop_reason {
	RPLB_DROP_TX_FULL,      /* the port did not accept it */
	RPLB_DROP_MALFORMED,    /* to a VIP, but its IPv4/IPv6/L4 headers are broken */
	RPLB_DROP_NO_BACKEND,   /* new flow to a service with no backend of weight > 0 */
	RPLB_DROP_STRICT,       /* strict mode: from the clients to a backend address */
	RPLB_DROP_BAD_CHECKSUM, /* the NIC's RX offload found the IPv4 or L4 checksum bad */
	/* IPv4 and IPv6 fragments (fragment_table.h): */
	RPLB_DROP_FRAGMENT_OVERLAP,   /* overlaps part of an earlier one, or disagrees on the
				       * datagram's end: it and the rest of its datagram */
	RPLB_DROP_FRAGMENT_DUPLICATE, /* all its bytes came before */
	RPLB_DROP_FRAGMENT_TIMEOUT,   /* held for its datagram's first fragment, which did not
				       * come in time (or the worker stopped) */
	RPLB_DROP_FRAGMENT_NO_ROOM,   /* the fragment state was full (held fragments at their
				       * bound, too many holes, or its datagram evicted) */
	/* ICMP errors addressed to a VIP: */
	RPLB_DROP_ICMP_ERROR_MALFORMED,  /* quote too short or broken, or not from that VIP */
	RPLB_DROP_ICMP_ERROR_NO_BACKEND, /* about a service with no flow and no backend */
	/* The appliance's own kernel interface (worker.h): */
	RPLB_DROP_KERNEL_RATE,  /* for the appliance's own address, over its rate to the kernel */
	RPLB_DROP_KERNEL_FULL,  /* for the appliance's own address, the kernel interface refused it */
	RPLB_DROP_HANDOFF_FULL, /* its owner worker's handoff ring was full */
	RPLB_DROP_HANDOFF_AT_STOP, /* still in a handoff ring when the workers stopped */
	/* IPv6 (lb_ipv6.c): */
	RPLB_DROP_IPV6_EXTENSION_CHAIN, /* to a VIP: extension headers too many (> 8), too long
					 * (L4 beyond 256 bytes), truncated, out of order, or a
					 * routing header with segments left */
	RPLB_DROP_IPV6_FRAGMENT,        /* to a VIP, a fragment no datagram can hold: empty,
					 * beyond 64 KiB, or not the last and not a multiple
					 * of 8 bytes long (the others are translated) */
	RPLB_DROP_IPV6_UDP_ZERO_CHECKSUM, /* UDP over IPv6 for a service with checksum 0 (invalid) */
	RPLB_DROP_REASONS
};

/* What happened to packets and flows.  Keep in step with rplb_event_names. */
enum rplb_event {
	RPLB_EV_PASSED_THROUGH,     /* forwarded unchanged to the other port */
	RPLB_EV_TO_BACKEND,         /* client -> service, rewritten to a backend */
	RPLB_EV_TO_CLIENT_FLOW,     /* backend reply rewritten by its flow */
	RPLB_EV_TO_CLIENT_STATELESS,/* backend reply without flow, one owning service */
	RPLB_EV_REPLY_UNMATCHED,    /* from a backend ip:port shared by services, no flow: unchanged */
	RPLB_EV_ICMP_ECHO_REPLIED,
	RPLB_EV_FLOWS_CREATED,
	RPLB_EV_FLOWS_EXPIRED,
	RPLB_EV_FLOWS_MOVED,        /* their backend was removed */
	RPLB_EV_FLOWS_SUPERSEDED,   /* ended: a newer flow took their backend-side tuple */
	RPLB_EV_FLOW_TABLE_FULL,    /* new flow served by Maglev without being stored */
	RPLB_EV_TABLES_SEEN,        /* table generations this worker switched to */
	/* IPv4 and IPv6 fragments (a fragment also counts as its datagram's packets do:
	 * to_backend, to_client_by_flow, passed_through, ...): */
	RPLB_EV_FRAGMENTS_HELD,     /* came before their datagram's first fragment, waited */
	RPLB_EV_FRAGMENT_DATAGRAMS_TIMED_OUT,   /* forgotten incomplete after the timeout */
	RPLB_EV_FRAGMENT_DATAGRAMS_EVICTED,     /* forgotten incomplete for a newer one */
	/* ICMP errors (destination unreachable, time exceeded, parameter problem): */
	RPLB_EV_ICMP_ERRORS_TO_BACKEND,         /* from the clients, by the quoted flow */
	RPLB_EV_ICMP_ERRORS_TO_BACKEND_STATELESS, /* no flow: the service's Maglev choice */
	RPLB_EV_ICMP_ERRORS_TO_CLIENT,          /* from the backend side, by the quoted flow */
	RPLB_EV_ICMP_ERRORS_TO_CLIENT_STATELESS,  /* no flow: the backend's one service */
	RPLB_EV_ICMP_ERRORS_UNMATCHED,          /* quote for no service or flow: unchanged */
	/* The appliance's own kernel interface (worker.h): */
	RPLB_EV_TO_KERNEL,          /* from the backends to the appliance's own address: to its kernel interface */
	RPLB_EV_FROM_KERNEL,        /* sent by the kernel interface, out of the backend port */
	RPLB_EV_HANDOFF_SENT,       /* received here, handed to the worker that owns its client */
	RPLB_EV_HANDOFF_RECEIVED,   /* handed here by the worker that received it */
	/* IPv6 (lb_ipv6.c; its other packets and flows count as IPv4's do): */
	RPLB_EV_IPV6_FLOW_TABLE_FULL, /* new IPv6 flow served by Maglev without being stored */
	RPLB_EVENTS
};

/* Flow states: each has its own idle timeout. */
enum rplb_flow_state {
	RPLB_FLOW_UDP,
	RPLB_FLOW_TCP_SYN,          /* only the opening handshake seen */
	RPLB_FLOW_TCP_ESTABLISHED,
	RPLB_FLOW_TCP_CLOSING,      /* FIN or RST seen */
	RPLB_FLOW_STATES
};

struct rplb_port_counters {
	uint64_t rx_packets;
	uint64_t rx_bytes;
	uint64_t tx_packets;
	uint64_t tx_bytes;
	uint64_t tx_dropped;
};

struct rplb_lcore_counters {
	struct rplb_port_counters port[RPLB_SIDES];
	uint64_t drops[RPLB_DROP_REASONS];
	uint64_t events[RPLB_EVENTS];
} __rte_cache_aligned;

/* Indexed by service_id / backend slot; one array per worker.  Whatever
 * belongs to a flow is counted once, under its backend: a service's
 * packets, bytes, new and active flows are its own counters (the replies
 * rewritten without a flow, which have no backend) plus its backends'
 * (the control plane adds them up, rplb/balancer.py), fewer counter
 * updates per packet and per new flow on the fast path. */
struct rplb_service_counters {
	uint64_t packets;          /* replies rewritten without a flow */
	uint64_t bytes;
};

struct rplb_backend_counters {
	uint64_t packets;          /* both directions */
	uint64_t bytes;
	uint64_t new_flows;
	/* A gauge: flows of this slot's backend stored on this worker.  When
	 * the slot changes hands, the worker zeroes it as it adopts the
	 * tables that hand it over (lb_tables.c), and flows of the slot's
	 * earlier backends no longer count down here. */
	int64_t active_flows;
};

extern const char *const rplb_drop_names[RPLB_DROP_REASONS];
extern const char *const rplb_event_names[RPLB_EVENTS];
extern const char *const rplb_flow_state_names[RPLB_FLOW_STATES];
extern const char *const rplb_side_names[RPLB_SIDES];

#endif /* RPLB_STATS_H */
