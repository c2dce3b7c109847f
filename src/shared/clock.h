/* SPDX-License-Identifier: MIT */
/* Layer L0 (src/shared): the clock. Wall time for what the contract shows
 * (Unix milliseconds), monotonic time for timeouts. */
#pragma once

#include <stdint.h>

/* Realtime, in ms since the epoch. */
int64_t now_ms(void);
/* Monotonic, in ms; never goes back. */
uint64_t mono_ms(void);
/* Monotonic, in µs (request timings). */
uint64_t mono_us(void);
