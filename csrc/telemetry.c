/* SPDX-License-Identifier: BSD-3-Clause
 *
 * telemetry.c: /rplb/stats and /rplb/services for DPDK telemetry (see
 * telemetry.h).  Never touched by the fast path.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <rte_telemetry.h>

#include "telemetry.h"

struct published {
	unsigned int n;
	struct rplb_tel_entry entries[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct published *current[RPLB_TEL_COMMANDS];
static int registered;

static void
add_entry(struct rte_tel_data *reply, const struct rplb_tel_entry *entry)
{
	/* -ENOSPC past RTE_TEL_MAX_DICT_ENTRIES: the entry is left out. */
	if (entry->is_str)
		rte_tel_data_add_dict_string(reply, entry->name, entry->str);
	else
		rte_tel_data_add_dict_u64(reply, entry->name, entry->value);
}

static int
answer(unsigned int cmd, struct rte_tel_data *reply)
{
	struct published *list;
	struct rte_tel_data *group = NULL;
	const char *group_name = NULL;
	unsigned int i;

	rte_tel_data_start_dict(reply);
	pthread_mutex_lock(&lock);
	list = current[cmd];
	for (i = 0; list != NULL && i < list->n; i++) {
		const struct rplb_tel_entry *entry = &list->entries[i];

		if (group != NULL && strcmp(group_name, entry->group) != 0) {
			if (rte_tel_data_add_dict_container(reply, group_name, group, 0) != 0)
				rte_tel_data_free(group);
			group = NULL;
		}
		if (entry->group[0] == '\0') {
			add_entry(reply, entry);
			continue;
		}
		if (group == NULL) {
			group = rte_tel_data_alloc();
			if (group == NULL)
				break;
			rte_tel_data_start_dict(group);
			group_name = entry->group;
		}
		add_entry(group, entry);
	}
	if (group != NULL && rte_tel_data_add_dict_container(reply, group_name, group, 0) != 0)
		rte_tel_data_free(group);
	pthread_mutex_unlock(&lock);
	return 0;
}

static int
handle_stats(const char *cmd, const char *params, struct rte_tel_data *reply)
{
	return answer(RPLB_TEL_STATS, reply);
}

static int
handle_services(const char *cmd, const char *params, struct rte_tel_data *reply)
{
	return answer(RPLB_TEL_SERVICES, reply);
}

int
rplb_telemetry_register(void)
{
	int err;

	pthread_mutex_lock(&lock);
	if (registered) {
		pthread_mutex_unlock(&lock);
		return 0;
	}
	err = rte_telemetry_register_cmd("/rplb/stats", handle_stats,
		"rplb fast-path counters: per side rx/tx/tx_dropped, drops by reason, "
		"events. No parameters");
	if (err == 0)
		err = rte_telemetry_register_cmd("/rplb/services", handle_services,
			"rplb per-service counters (and per backend). No parameters");
	if (err == 0)
		registered = 1;
	pthread_mutex_unlock(&lock);
	return err;
}

int
rplb_telemetry_publish(unsigned int cmd, const struct rplb_tel_entry *entries, unsigned int n)
{
	struct published *list, *old;
	unsigned int i;

	if (cmd >= RPLB_TEL_COMMANDS)
		return -EINVAL;
	list = malloc(sizeof(*list) + (size_t)n * sizeof(list->entries[0]));
	if (list == NULL)
		return -ENOMEM;
	list->n = n;
	for (i = 0; i < n; i++) {
		list->entries[i] = entries[i];
		/* Terminate whatever the caller gave. */
		list->entries[i].group[RPLB_TEL_NAME_LEN - 1] = '\0';
		list->entries[i].name[RPLB_TEL_NAME_LEN - 1] = '\0';
		list->entries[i].str[RPLB_TEL_NAME_LEN - 1] = '\0';
	}
	pthread_mutex_lock(&lock);
	old = current[cmd];
	current[cmd] = list;
	pthread_mutex_unlock(&lock);
	free(old);
	return 0;
}
