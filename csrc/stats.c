/* SPDX-License-Identifier: BSD-3-Clause */
#include "stats.h"

const char *const rplb_drop_names[RPLB_DROP_REASONS] = {
	[RPLB_DROP_TX_FULL] = "tx_full",
	[RPLB_DROP_MALFORMED] = "malformed",
	[RPLB_DROP_NO_BACKEND] = "no_backend",
	[RPLB_DROP_STRICT] = "strict",
	[RPLB_DROP_BAD_CHECKSUM] = "bad_checksum",
	[RPLB_DROP_FRAGMENT_OVERLAP] = "fragment_overlap",
	[RPLB_DROP_FRAGMENT_DUPLICATE] = "fragment_duplicate",
	[RPLB_DROP_FRAGMENT_TIMEOUT] = "fragment_timeout",
	[RPLB_DROP_FRAGMENT_NO_ROOM] = "fragment_no_room",
	[RPLB_DROP_ICMP_ERROR_MALFORMED] = "icmp_error_malformed",
	[RPLB_DROP_ICMP_ERROR_NO_BACKEND] = "icmp_error_no_backend",
	[RPLB_DROP_KERNEL_RATE] = "kernel_rate",
	[RPLB_DROP_KERNEL_FULL] = "kernel_full",
	[RPLB_DROP_HANDOFF_FULL] = "handoff_full",
	[RPLB_DROP_HANDOFF_AT_STOP] = "handoff_at_stop",
	[RPLB_DROP_IPV6_EXTENSION_CHAIN] = "ipv6_extension_chain",
	[RPLB_DROP_IPV6_FRAGMENT] = "ipv6_fragment",
	[RPLB_DROP_IPV6_UDP_ZERO_CHECKSUM] = "ipv6_udp_zero_checksum",
};

const char *const rplb_event_names[RPLB_EVENTS] = {
	[RPLB_EV_PASSED_THROUGH] = "passed_through",
	[RPLB_EV_TO_BACKEND] = "to_backend",
	[RPLB_EV_TO_CLIENT_FLOW] = "to_client_by_flow",
	[RPLB_EV_TO_CLIENT_STATELESS] = "to_client_stateless",
	[RPLB_EV_REPLY_UNMATCHED] = "reply_unmatched",
	[RPLB_EV_ICMP_ECHO_REPLIED] = "icmp_echo_replied",
	[RPLB_EV_FLOWS_CREATED] = "flows_created",
	[RPLB_EV_FLOWS_EXPIRED] = "flows_expired",
	[RPLB_EV_FLOWS_MOVED] = "flows_moved",
	[RPLB_EV_FLOWS_SUPERSEDED] = "flows_superseded",
	[RPLB_EV_FLOW_TABLE_FULL] = "flow_table_full",
	[RPLB_EV_TABLES_SEEN] = "tables_seen",
	[RPLB_EV_FRAGMENTS_HELD] = "fragments_held",
	[RPLB_EV_FRAGMENT_DATAGRAMS_TIMED_OUT] = "fragment_datagrams_timed_out",
	[RPLB_EV_FRAGMENT_DATAGRAMS_EVICTED] = "fragment_datagrams_evicted",
	[RPLB_EV_ICMP_ERRORS_TO_BACKEND] = "icmp_errors_to_backend",
	[RPLB_EV_ICMP_ERRORS_TO_BACKEND_STATELESS] = "icmp_errors_to_backend_stateless",
	[RPLB_EV_ICMP_ERRORS_TO_CLIENT] = "icmp_errors_to_client",
	[RPLB_EV_ICMP_ERRORS_TO_CLIENT_STATELESS] = "icmp_errors_to_client_stateless",
	[RPLB_EV_ICMP_ERRORS_UNMATCHED] = "icmp_errors_unmatched",
	[RPLB_EV_TO_KERNEL] = "to_kernel",
	[RPLB_EV_FROM_KERNEL] = "from_kernel",
	[RPLB_EV_HANDOFF_SENT] = "handoff_sent",
	[RPLB_EV_HANDOFF_RECEIVED] = "handoff_received",
	[RPLB_EV_IPV6_FLOW_TABLE_FULL] = "ipv6_flow_table_full",
};

const char *const rplb_flow_state_names[RPLB_FLOW_STATES] = {
	[RPLB_FLOW_UDP] = "udp",
	[RPLB_FLOW_TCP_SYN] = "tcp_syn",
	[RPLB_FLOW_TCP_ESTABLISHED] = "tcp",
	[RPLB_FLOW_TCP_CLOSING] = "tcp_fin",
};

const char *const rplb_side_names[RPLB_SIDES] = {
	[RPLB_FRONTEND] = "frontend",
	[RPLB_BACKEND] = "backend",
};
