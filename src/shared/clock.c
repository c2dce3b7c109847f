/* SPDX-License-Identifier: MIT */
#include <time.h>

#include "shared/clock.h"

int64_t now_ms(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t mono_ms(void) {
        return mono_us() / 1000;
}

uint64_t mono_us(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}
