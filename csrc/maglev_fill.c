/* SPDX-License-Identifier: BSD-3-Clause
 *
 * maglev_fill.c: the sequential fill of a weighted Maglev table, for the
 * control plane (rplb/maglev.py calls it through rplb.dataplane; no DPDK).
 * Semantics are those of rplb/maglev.py and tests/maglev_reference.py:
 * backends in (ip, port) order, all with weight > 0; each round every
 * backend adds its weight to its credit and, when the credit reaches the
 * maximum weight, takes one turn: the first free entry of its permutation
 * (offset, offset + skip, ... mod size).  Stops when the table is full.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "maglev_fill.h"

int
rplb_maglev_fill(const uint32_t *offset, const uint32_t *skip, const uint32_t *weight,
		 uint32_t n, uint32_t size, int32_t *table)
{
	uint32_t *position, *credit, max_weight = 0, filled = 0, i;

	if (n == 0 || size == 0)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (weight[i] == 0 || offset[i] >= size || skip[i] == 0 || skip[i] >= size)
			return -EINVAL;
		if (weight[i] > max_weight)
			max_weight = weight[i];
	}
	position = malloc(2 * (size_t)n * sizeof(*position));
	if (position == NULL)
		return -ENOMEM;
	credit = position + n;
	memcpy(position, offset, n * sizeof(*position));
	memset(credit, 0, n * sizeof(*credit));
	for (i = 0; i < size; i++)
		table[i] = -1;

	for (;;) {
		for (i = 0; i < n; i++) {
			uint32_t c;

			credit[i] += weight[i];
			if (credit[i] < max_weight)
				continue;
			credit[i] -= max_weight;
			/* Walk the permutation to the first free entry. */
			for (c = position[i]; table[c] >= 0; c = c + skip[i] >= size ?
							      c + skip[i] - size : c + skip[i])
				;
			table[c] = (int32_t)i;
			position[i] = c + skip[i] >= size ? c + skip[i] - size : c + skip[i];
			if (++filled == size) {
				free(position);
				return 0;
			}
		}
	}
}
