/* SPDX-License-Identifier: BSD-3-Clause
 *
 * telemetry.h: rplb's commands for DPDK telemetry (dpdk-telemetry.py).
 *
 * The handlers run on DPDK's telemetry thread and never call Python: the
 * control plane publishes, now and then, a flat list of entries per
 * command; the handler answers from the last list published.  The lock
 * guarding the lists is taken only by the telemetry thread and the
 * control plane, never by the fast path.
 */
#ifndef RPLB_TELEMETRY_H
#define RPLB_TELEMETRY_H

#include <stdint.h>

#define RPLB_TEL_NAME_LEN 64    /* < RTE_TEL_MAX_STRING_LEN */
/* Entries of one dict of a reply, at most (rte_telemetry.h's limit): so
 * /rplb/services names at most this many services. */
#define RPLB_TEL_MAX_ENTRIES 256

enum rplb_tel_command {
	RPLB_TEL_STATS,         /* /rplb/stats */
	RPLB_TEL_SERVICES,      /* /rplb/services */
	RPLB_TEL_COMMANDS
};

/* One value of a reply.  group "" puts it in the top-level dict; entries
 * with the same non-empty group, published consecutively, form one nested
 * dict named group (telemetry allows one level of nesting and at most
 * RTE_TEL_MAX_DICT_ENTRIES entries per dict: the rest are left out). */
struct rplb_tel_entry {
	char group[RPLB_TEL_NAME_LEN];
	char name[RPLB_TEL_NAME_LEN];
	char str[RPLB_TEL_NAME_LEN];    /* the value when is_str */
	uint64_t value;
	uint8_t is_str;
};

/* Register /rplb/stats and /rplb/services (after rte_eal_init; once per
 * process, later calls return 0).  0 or a negative errno. */
int rplb_telemetry_register(void);

/* Replace the entries of command cmd (copied).  0 or a negative errno. */
int rplb_telemetry_publish(unsigned int cmd, const struct rplb_tel_entry *entries,
			   unsigned int n);

#endif /* RPLB_TELEMETRY_H */
