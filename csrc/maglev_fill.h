/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef RPLB_MAGLEV_FILL_H
#define RPLB_MAGLEV_FILL_H

#include <stdint.h>

/* Fill table[size] with indices 0..n-1 (see maglev_fill.c).  0 or -errno. */
int rplb_maglev_fill(const uint32_t *offset, const uint32_t *skip, const uint32_t *weight,
		     uint32_t n, uint32_t size, int32_t *table);

#endif
