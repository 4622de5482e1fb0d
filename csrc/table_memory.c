/* SPDX-License-Identifier: BSD-3-Clause
 *
 * table_memory.c: see table_memory.h.
 */
#include <sys/mman.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_malloc.h>

#include "table_memory.h"

bool
rplb_table_memory_from_mmap(void)
{
	return !rte_eal_has_hugepages();
}

void *
rplb_table_memory_alloc(const char *name, size_t size, int socket_id, bool from_mmap)
{
	void *memory;

	if (!from_mmap)
		return rte_malloc_socket(name, size, RTE_CACHE_LINE_SIZE, socket_id);
	memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (memory == MAP_FAILED)
		return NULL;
	/* Advice only: without THP the table still works, on 4 KB pages. */
	(void)madvise(memory, size, MADV_HUGEPAGE);
	return memory;
}

void
rplb_table_memory_free(void *memory, size_t size, bool from_mmap)
{
	if (memory == NULL)
		return;
	if (from_mmap)
		munmap(memory, size);
	else
		rte_free(memory);
}
