/* SPDX-License-Identifier: MIT */
/* Logging of `vmclient agent`: native journal records with VMCLIENT_* fields
 * when stderr is the journal (JOURNAL_STREAM matches, as vmmd decides), else
 * lines with a <N> syslog priority prefix on stderr. Strings that come from
 * the server or from hooks are quoted by the caller (alog_quote). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

#include "shared/macro.h"

/* Stable MESSAGE_IDs of the agent's notable records. */
#define ALOG_MID_CONNECTED  "bf88d6a3f6ea4837a43e7a67bffc2719"
#define ALOG_MID_LOGIN      "d1ae6be09a4f457b9cce16d4208d9ea3"
#define ALOG_MID_LOGIN_FAIL "63fabfb25af4486f83af4c6e6abfb94c"
#define ALOG_MID_DESCRIBED  "dc1c0ca9eee044cc85a71cbb8db8f33b"
#define ALOG_MID_HOOK       "9f86d03ab28b43ab9ae36c2b5a99d881"
#define ALOG_MID_HOOK_FAIL  "488782b57af146f3bd484b160fa4d8a2"

/* Structured fields of one record; unset ones are left out. */
typedef struct AlogFields {
        const char *message_id;
        const char *server;      /* VMCLIENT_SERVER */
        const char *vm_id;       /* VMCLIENT_VM_ID */
        const char *event;       /* VMCLIENT_EVENT (a booking event type) */
        const char *hook;        /* VMCLIENT_HOOK (file name) */
        const char *stream;      /* VMCLIENT_HOOK_STREAM: stdout or stderr */
        const char *user;        /* VMCLIENT_USER (the booking's holder) */
        int64_t feed;            /* VMCLIENT_FEED, when has_feed */
        bool has_feed;
        int error;               /* VMCLIENT_ERROR (errno text), when != 0 */
        const char *code;        /* VMCLIENT_CODE: the daemon's error code */
} AlogFields;

void alog_open(void);
bool alog_to_journal(void);
void alog_set_level(int level);
/* "err", "warning", "notice", "info", "debug" (or 0..7); -EINVAL if unknown */
int alog_level_from_string(const char *s);

/* Returns -abs(f->error), or 0, for "return alog(...)". */
int alog_internal(int prio, const char *file, int line, const char *func, const AlogFields *f,
                  const char *fmt, ...) _printf_(6, 7);
#define alog(prio, fields, ...) \
        alog_internal((prio), __FILE__, __LINE__, __func__, (fields), __VA_ARGS__)
#define alog_info(...)    alog(LOG_INFO, NULL, __VA_ARGS__)
#define alog_notice(...)  alog(LOG_NOTICE, NULL, __VA_ARGS__)
#define alog_warning(...) alog(LOG_WARNING, NULL, __VA_ARGS__)
#define alog_error(...)   alog(LOG_ERR, NULL, __VA_ARGS__)
#define alog_debug(...)   alog(LOG_DEBUG, NULL, __VA_ARGS__)

/* Copy s (len bytes, untrusted) into buf as a quoted, escaped string;
 * truncated with ... when too long. Returns buf. */
char *alog_quote(char *buf, size_t bufsize, const char *s, size_t len);
