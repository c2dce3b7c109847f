/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* the location fields are the caller's, not this file's */
#define SD_JOURNAL_SUPPRESS_LOCATION 1
#include <systemd/sd-journal.h>

#include "agent-log.h"

static int max_level = LOG_INFO;
static bool use_journal;

void alog_open(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        /* sd_journal_send() silently drops records when journald is not
         * there, so go native only when stderr really is the journal. */
        use_journal = false;
        if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
                return;
        if (fstat(STDERR_FILENO, &st) < 0)
                return;
        use_journal = (unsigned long long) st.st_dev == dev &&
                      (unsigned long long) st.st_ino == ino;
}

bool alog_to_journal(void) {
        return use_journal;
}

void alog_set_level(int level) {
        max_level = level;
}

int alog_level_from_string(const char *s) {
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

typedef struct Iov {
        struct iovec v[16];
        char *owned[16];
        int n;
} Iov;

_printf_(2, 3)
static void iov_add(Iov *iov, const char *fmt, ...) {
        va_list ap;
        char *s = NULL;
        if (iov->n >= (int) ELEMENTSOF(iov->v))
                return;
        va_start(ap, fmt);
        int k = vasprintf(&s, fmt, ap);
        va_end(ap);
        if (k < 0)
                return;
        iov->owned[iov->n] = s;
        iov->v[iov->n++] = (struct iovec) { .iov_base = s, .iov_len = (size_t) k };
}

static void journal_write(int prio, const AlogFields *f, const char *file, int line,
                          const char *func, const char *msg) {
        Iov iov = { .n = 0 };

        iov_add(&iov, "SYSLOG_IDENTIFIER=vmclient");
        iov_add(&iov, "MESSAGE=%s", msg);
        iov_add(&iov, "PRIORITY=%d", prio);
        iov_add(&iov, "CODE_FILE=%s", file);
        iov_add(&iov, "CODE_LINE=%d", line);
        iov_add(&iov, "CODE_FUNC=%s", func);
        if (f) {
                if (f->message_id)
                        iov_add(&iov, "MESSAGE_ID=%s", f->message_id);
                if (f->server)
                        iov_add(&iov, "VMCLIENT_SERVER=%s", f->server);
                if (f->vm_id)
                        iov_add(&iov, "VMCLIENT_VM_ID=%s", f->vm_id);
                if (f->event)
                        iov_add(&iov, "VMCLIENT_EVENT=%s", f->event);
                if (f->hook)
                        iov_add(&iov, "VMCLIENT_HOOK=%s", f->hook);
                if (f->stream)
                        iov_add(&iov, "VMCLIENT_HOOK_STREAM=%s", f->stream);
                if (f->user)
                        iov_add(&iov, "VMCLIENT_USER=%s", f->user);
                if (f->has_feed)
                        iov_add(&iov, "VMCLIENT_FEED=%" PRId64, f->feed);
                if (f->error != 0)
                        iov_add(&iov, "VMCLIENT_ERROR=%s", strerror(abs(f->error)));
                if (f->code)
                        iov_add(&iov, "VMCLIENT_CODE=%s", f->code);
        }
        (void) sd_journal_sendv(iov.v, iov.n);
        for (int i = 0; i < iov.n; i++)
                free(iov.owned[i]);
}

int alog_internal(int prio, const char *file, int line, const char *func, const AlogFields *f,
                  const char *fmt, ...) {
        int saved = errno;
        int r = f && f->error != 0 ? -abs(f->error) : 0;
        char msg[2048];
        va_list ap;

        if (prio > max_level) {
                errno = saved;
                return r;
        }
        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (use_journal)
                journal_write(prio, f, file, line, func, msg);
        else if (max_level >= LOG_DEBUG)
                fprintf(stderr, "<%d>%s (%s:%d)\n", prio, msg, file, line);
        else
                fprintf(stderr, "<%d>%s\n", prio, msg);
        errno = saved;
        return r;
}

char *alog_quote(char *buf, size_t bufsize, const char *s, size_t len) {
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
                } else if (ch < 0x20 || ch == 0x7f) {
                        o += (size_t) snprintf(buf + o, bufsize - o, "\\x%02x", ch);
                } else
                        buf[o++] = (char) ch;
        }
        buf[o++] = '"';
        buf[o] = '\0';
        return buf;
}
