/* SPDX-License-Identifier: BSD-3-Clause */
#include "stats.h"

const char *const rplb_drop_names[RPLB_DROP_REASONS] = {
	[RPLB_DROP_TX_FULL] = "tx_full",
	[RPLB_DROP_MALFORMED] = "malformed",
	[RPLB_DROP_FRAGMENT] = "fragment",
	[RPLB_DROP_NO_BACKEND] = "no_backend",
	[RPLB_DROP_STRICT] = "strict",
	[RPLB_DROP_BAD_CHECKSUM] = "bad_checksum",
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
};

const char *const rplb_flow_state_names[RPLB_FLOW_STATES] = {
	[RPLB_FLOW_UDP] = "udp",
	[RPLB_FLOW_TCP_SYN] = "tcp_syn",
	[RPLB_FLOW_TCP_ESTABLISHED] = "tcp",
	[RPLB_FLOW_TCP_CLOSING] = "tcp_fin",
};
