/* SPDX-License-Identifier: BSD-3-Clause
 *
 * table_memory.h: where the flow tables' arrays live (the IPv4 and IPv6
 * flow tables share it).
 *
 * The arrays are touched by the CPU only (never by a NIC), so they need not
 * come from DPDK's heap.  With hugepages they do.  Without (--no-huge: VMs,
 * containers, CI) that heap is 4 KB pages of a shared memfd, which
 * transparent huge pages do not cover, and a table of a million flows then
 * costs a TLB miss on nearly every lookup; anonymous memory marked
 * MADV_HUGEPAGE gets 2 MB pages wherever THP is "always" or "madvise" (and
 * stays off a --no-huge heap of a few hundred MB).
 */
#ifndef RPLB_TABLE_MEMORY_H
#define RPLB_TABLE_MEMORY_H

#include <stdbool.h>
#include <stddef.h>

/* Whether a table created now takes anonymous memory (no hugepages). */
bool rplb_table_memory_from_mmap(void);
/* size bytes, cache-line aligned, from DPDK's heap of socket_id (name:
 * its label there) or, from_mmap, anonymous memory; NULL when none. */
void *rplb_table_memory_alloc(const char *name, size_t size, int socket_id, bool from_mmap);
/* Frees what rplb_table_memory_alloc gave (NULL: nothing). */
void rplb_table_memory_free(void *memory, size_t size, bool from_mmap);

#endif /* RPLB_TABLE_MEMORY_H */
