/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* the location fields are ours (the caller's), not this file's */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "log.h"

/* read by every thread, set by the loop at a reload */
static atomic_int log_max_level = LOG_INFO;
static bool use_journal;

void log_open(void) {
        const char *e = getenv("JOURNAL_STREAM");
        struct stat st;
        unsigned long long dev, ino;

        use_journal = false;
        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return;
        if (fstat(STDERR_FILENO, &st) < 0)
                return;
        use_journal = (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

bool log_to_journal(void) {
        return use_journal;
}

static void journal_write(int prio, const LogFields *f, const char *file, int line,
                          const char *func, const char *msg) {
        char b_msg[2100], b_prio[32], b_file[300], b_line[32], b_func[128], b_mid[64],
                b_vm[96], b_user[96], b_peer[128], b_conn[48], b_uid[48], b_err[96];
        struct iovec iov[14];
        int n = 0;

#define ADD(buf, ...) do { \
                snprintf(buf, sizeof buf, __VA_ARGS__); \
                iov[n++] = (struct iovec) { .iov_base = buf, .iov_len = strlen(buf) }; \
        } while (0)
        iov[n++] = (struct iovec) { .iov_base = (char *) "SYSLOG_IDENTIFIER=vmmd",
                                    .iov_len = strlen("SYSLOG_IDENTIFIER=vmmd") };
        ADD(b_msg, "MESSAGE=%s", msg);
        ADD(b_prio, "PRIORITY=%d", prio);
        ADD(b_file, "CODE_FILE=%s", file);
        ADD(b_line, "CODE_LINE=%d", line);
        ADD(b_func, "CODE_FUNC=%s", func ? func : "");
        if (f && f->message_id)
                ADD(b_mid, "MESSAGE_ID=%s", f->message_id);
        if (f && f->vm_id)
                ADD(b_vm, "VMMD_VM_ID=%s", f->vm_id);
        if (f && f->user)
                ADD(b_user, "VMMD_USER=%s", f->user);
        if (f && f->peer)
                ADD(b_peer, "VMMD_PEER=%s", f->peer);
        if (f && f->has_conn)
                ADD(b_conn, "VMMD_CONN=%llu", (unsigned long long) f->conn);
        if (f && f->admin_uid >= 0)
                ADD(b_uid, "VMMD_ADMIN_UID=%ld", f->admin_uid);
        if (f && f->error != 0)
                ADD(b_err, "VMMD_ERROR=%s", strerror(f->error > 0 ? f->error : -f->error));
#undef ADD
        (void) sd_journal_sendv(iov, n);
}

static int log_emit(int prio, int error, const LogFields *f, const char *file, int line,
                    const char *func, const char *fmt, va_list ap) {
        int saved = errno;
        int r = error > 0 ? -error : error;
        char msg[2048];

        if (prio > log_max_level) {
                errno = saved;
                return r;
        }
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        if (use_journal) {
                LogFields tmp = f ? *f : (LogFields) { .admin_uid = -1 };
                if (tmp.error == 0)
                        tmp.error = error;
                journal_write(prio, &tmp, file, line, func, msg);
        } else if (log_max_level >= LOG_DEBUG)
                fprintf(stderr, "<%d>%s (%s:%d)\n", prio, msg, file, line);
        else
                fprintf(stderr, "<%d>%s\n", prio, msg);
        errno = saved;
        return r;
}

int log_fields_internal(int prio, const char *file, int line, const char *func,
                        const LogFields *f, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = log_emit(prio, f ? f->error : 0, f, file, line, func, fmt, ap);
        va_end(ap);
        return r;
}

void log_set_level(int level) {
        log_max_level = level;
}

int log_get_level(void) {
        return log_max_level;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = {
                "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcasecmp(s, names[i]) == 0)
                        return (int) i;
        if (strcasecmp(s, "error") == 0)
                return LOG_ERR;
        if (strcasecmp(s, "warn") == 0)
                return LOG_WARNING;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        return -EINVAL;
}

int log_internal(int prio, int error, const char *file, int line, const char *func,
                 const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = log_emit(prio, error, NULL, file, line, func, fmt, ap);
        va_end(ap);
        return r;
}

char *log_quote(char *buf, size_t bufsize, const char *s, size_t len) {
        size_t o = 0;

        if (bufsize < 8) {
                if (bufsize > 0)
                        buf[0] = '\0';
                return buf;
        }
        buf[o++] = '"';
        for (size_t i = 0; i < len; i++) {
                unsigned char ch = (unsigned char) s[i];
                if (o + 8 >= bufsize) {
                        memcpy(buf + o, "...", 3);
                        o += 3;
                        break;
                }
                if (ch == '"' || ch == '\\') {
                        buf[o++] = '\\';
                        buf[o++] = (char) ch;
                } else if (ch < 0x20 || ch >= 0x7f) {
                        o += (size_t) snprintf(buf + o, bufsize - o, "\\x%02x", ch);
                } else
                        buf[o++] = (char) ch;
        }
        buf[o++] = '"';
        buf[o] = '\0';
        return buf;
}
