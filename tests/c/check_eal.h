/* SPDX-License-Identifier: BSD-3-Clause
 *
 * check_eal.h: EAL for the C checks of tests/c/, without hugepages and
 * under a file prefix of their own (other checks and tests may run at the
 * same time), whose runtime directory is removed at the end.
 */
#ifndef RPLB_CHECK_EAL_H
#define RPLB_CHECK_EAL_H

#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>

static char check_runtime_dir[PATH_MAX];

/* rte_eal_init with --no-huge, the given lcores and vdevs (NULL-terminated
 * extra arguments), and a file prefix named after the program and pid.
 * Returns 0, or -1 with a message. */
static int
check_eal_init(const char *program, const char *lcores, const char *const *extra)
{
	char prefix[64];
	char *argv[32];
	int argc = 0, i;

	snprintf(prefix, sizeof(prefix), "--file-prefix=%s-%d", program, (int)getpid());
	argv[argc++] = (char *)program;
	argv[argc++] = (char *)"--no-huge";
	argv[argc++] = (char *)"-m";
	argv[argc++] = (char *)"512";
	argv[argc++] = (char *)"--no-pci";
	argv[argc++] = (char *)"-l";
	argv[argc++] = (char *)lcores;
	argv[argc++] = (char *)"--log-level=lib.eal:error";
	argv[argc++] = prefix;
	for (i = 0; extra != NULL && extra[i] != NULL && argc < (int)RTE_DIM(argv) - 1; i++)
		argv[argc++] = (char *)extra[i];
	argv[argc] = NULL;
	if (rte_eal_init(argc, argv) < 0) {
		fprintf(stderr, "%s: EAL: %s\n", program, rte_strerror(rte_errno));
		return -1;
	}
	snprintf(check_runtime_dir, sizeof(check_runtime_dir), "%s", rte_eal_get_runtime_dir());
	return 0;
}

static int
check_remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	RTE_SET_USED(st);
	RTE_SET_USED(type);
	RTE_SET_USED(ftw);
	remove(path);
	return 0;
}

/* rte_eal_cleanup, then remove the runtime directory EAL leaves behind. */
static void
check_eal_cleanup(void)
{
	rte_eal_cleanup();
	if (check_runtime_dir[0] != '\0')
		nftw(check_runtime_dir, check_remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

#endif /* RPLB_CHECK_EAL_H */
