/* SPDX-License-Identifier: BSD-3-Clause
 *
 * metrics_text.c: the sample lines of the large metric families of a
 * Prometheus scrape, those with one sample per service or per backend
 * (rplb/prometheus.py).  With 100,000 backends a scrape is half a million
 * such lines, which Python formats in about a third of a second holding
 * the GIL; here they are written without it.  The labels of every row are
 * rendered and escaped once in Python, when the configuration changes;
 * this only joins each row's labels with the family's name and the row's
 * value.  No DPDK, never called by the fast path.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "metrics_text.h"

/* "-9223372036854775808": the longest int64 in decimal. */
#define VALUE_MAX_LENGTH 20

size_t
rplb_metrics_family_bound(size_t name_length, const uint64_t *label_offsets, size_t rows)
{
	/* Per line: the name, one space, the value, the newline. */
	return rows * (name_length + 1 + VALUE_MAX_LENGTH + 1) +
	       (rows ? label_offsets[rows] - label_offsets[0] : 0);
}

/* value in decimal at out; returns its length. */
static size_t
write_value(char *out, int64_t value)
{
	char digits[VALUE_MAX_LENGTH];
	/* The magnitude as unsigned, so that INT64_MIN has one too. */
	uint64_t magnitude = value < 0 ? -(uint64_t)value : (uint64_t)value;
	size_t length = 0, at = sizeof(digits);

	do {
		digits[--at] = (char)('0' + magnitude % 10);
		magnitude /= 10;
	} while (magnitude);
	if (value < 0)
		out[length++] = '-';
	memcpy(out + length, digits + at, sizeof(digits) - at);
	return length + sizeof(digits) - at;
}

int64_t
rplb_metrics_write_family(char *out, size_t capacity, const char *name, size_t name_length,
			  const char *labels, size_t labels_length,
			  const uint64_t *label_offsets, const int64_t *values, size_t rows)
{
	size_t row, written = 0;

	/* Checked before a byte is written, so the bound below holds. */
	for (row = 0; row < rows; row++)
		if (label_offsets[row] > label_offsets[row + 1])
			return -EINVAL;
	if (rows && label_offsets[rows] > labels_length)
		return -EINVAL;
	if (rplb_metrics_family_bound(name_length, label_offsets, rows) > capacity)
		return -ENOSPC;
	for (row = 0; row < rows; row++) {
		size_t label_length = label_offsets[row + 1] - label_offsets[row];

		memcpy(out + written, name, name_length);
		written += name_length;
		memcpy(out + written, labels + label_offsets[row], label_length);
		written += label_length;
		out[written++] = ' ';
		written += write_value(out + written, values[row]);
		out[written++] = '\n';
	}
	return (int64_t)written;
}
