/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef RPLB_METRICS_TEXT_H
#define RPLB_METRICS_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* The most bytes rplb_metrics_write_family writes for these rows (each
 * value at its longest, 20 characters). */
size_t rplb_metrics_family_bound(size_t name_length, const uint64_t *label_offsets,
				 size_t rows);

/* The sample lines of one metric family: for each row i,
 *   name labels[label_offsets[i] .. label_offsets[i + 1]] ' ' values[i] '\n'
 * into out.  label_offsets has rows + 1 entries, non-decreasing, the last
 * at most labels_length.  Returns the bytes written, -EINVAL for offsets
 * out of order or out of range, -ENOSPC if out is too small (nothing is
 * written then). */
int64_t rplb_metrics_write_family(char *out, size_t capacity, const char *name,
				  size_t name_length, const char *labels, size_t labels_length,
				  const uint64_t *label_offsets, const int64_t *values,
				  size_t rows);

#endif
