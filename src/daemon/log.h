/* SPDX-License-Identifier: MIT */
/* Daemon logging: plain lines with a <N> syslog priority prefix on stderr.
 * User-supplied strings are quoted by the caller with log_quote(). */
#pragma once

#include <stddef.h>
#include <syslog.h>

#include "shared/macro.h"

void log_set_level(int level);
int log_get_level(void);
/* "err", "warning", "notice", "info", "debug" (or 0..7); -EINVAL if unknown */
int log_level_from_string(const char *s);

int log_internal(int prio, int error, const char *file, int line, const char *fmt, ...)
        _printf_(5, 6);

/* Each returns -abs(error) (or 0 when error is 0) so that callers can
 * "return log_error_errno(r, ...)". */
#define log_full_errno(prio, error, ...) \
        log_internal((prio), (error), __FILE__, __LINE__, __VA_ARGS__)
#define log_error_errno(error, ...)   log_full_errno(LOG_ERR, (error), __VA_ARGS__)
#define log_warning_errno(error, ...) log_full_errno(LOG_WARNING, (error), __VA_ARGS__)
#define log_error(...)   log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_notice(...)  log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_info(...)    log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_debug(...)   log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)

/* Copy s (len bytes, untrusted) into buf as a quoted, escaped string:
 * "vm1", "a\x01b"; truncated with ... when too long. Returns buf. */
char *log_quote(char *buf, size_t bufsize, const char *s, size_t len);
