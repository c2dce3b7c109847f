/* SPDX-License-Identifier: MIT */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

/* MIN and MAX evaluate an argument twice: give them no call or side effect
 * (they stay plain so that they remain constant expressions) */
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void freep(void *p) {
        free(*(void **) p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                (void) close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(closep)

/* Move ownership out of a cleanup variable. */
#define TAKE_PTR(p) __extension__ ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define TAKE_FD(fd) __extension__ ({ int _t = (fd); (fd) = -1; _t; })

static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

static inline bool streq_n(const char *a, size_t alen, const char *b) {
        size_t blen = strlen(b);
        return alen == blen && memcmp(a, b, blen) == 0;
}

/* Copy a string into a fixed array, cut to fit (never unterminated). */
static inline void str_copy(char *dst, size_t size, const char *src) {
        size_t n = strnlen(src, size - 1);
        memcpy(dst, src, n);
        dst[n] = '\0';
}
