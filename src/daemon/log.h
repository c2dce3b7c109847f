/* SPDX-License-Identifier: MIT */
/* Layer L0 (daemon): logging, natively to the journal or as plain lines with
 * a <N> syslog priority prefix on stderr. User-supplied strings are quoted by the caller with log_quote(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

#include "shared/macro.h"

/* Stable MESSAGE_IDs (see systemd/vmmd.catalog) */
#define LOG_MID_STARTED       "ab64bb3c803b429faa0f3116d00c6b54"
#define LOG_MID_STOPPED       "003f980f619e4adb8b97e1dc21a53dc8"
#define LOG_MID_VM_REGISTERED "f6e80e8d6b874ecda1fe19fd1936dbfb"
#define LOG_MID_VM_CREATED    "673d7db239734a818454fb73b1b9c385"
#define LOG_MID_VM_DELETED    "4acdf1e1f5574556941e1a63d8e58bdb"
#define LOG_MID_LOGIN_FAILED  "f4669fda9c4543f48f7c47d97e6dba0f"
#define LOG_MID_ADMIN_CHANGE  "36f69eb635004265b996f2534663f93b"
#define LOG_MID_CONN_LIMIT    "e3346840b1004f078973a62bb2577502"
#define LOG_MID_RELOADED      "0b58005a6a9545d386436880c834ad0e"
#define LOG_MID_BOOKING       "5d1f0c8e2b7a4c6f9e3d8a1b4c7e2f90"

/* Structured fields of one log record (journal); unset ones are left out. */
typedef struct LogFields {
        const char *message_id;
        const char *vm_id;       /* VMMD_VM_ID */
        const char *user;        /* VMMD_USER */
        const char *peer;        /* VMMD_PEER */
        uint64_t conn;           /* VMMD_CONN, when has_conn */
        bool has_conn;
        long admin_uid;          /* VMMD_ADMIN_UID, when >= 0 */
        int error;               /* VMMD_ERROR (errno name text), when != 0 */
} LogFields;

/* Log natively to the journal when stderr is connected to it
 * (JOURNAL_STREAM matches), else plain lines on stderr. */
void log_open(void);
bool log_to_journal(void);

int log_fields_internal(int prio, const char *file, int line, const char *func,
                        const LogFields *f, const char *fmt, ...) _printf_(6, 7);
/* log_struct(prio, &(LogFields) { ... }, fmt, ...) */
#define log_struct(prio, ...) \
        log_fields_internal((prio), __FILE__, __LINE__, __func__, __VA_ARGS__)

void log_set_level(int level);
int log_get_level(void);
/* "err", "warning", "notice", "info", "debug" (or 0..7); -EINVAL if unknown */
int log_level_from_string(const char *s);

int log_internal(int prio, int error, const char *file, int line, const char *func,
                 const char *fmt, ...) _printf_(6, 7);

/* Each returns -abs(error) (or 0 when error is 0) so that callers can
 * "return log_error_errno(r, ...)". */
#define log_full_errno(prio, error, ...) \
        log_internal((prio), (error), __FILE__, __LINE__, __func__, __VA_ARGS__)
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
