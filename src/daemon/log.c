/* SPDX-License-Identifier: MIT */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"

static int log_max_level = LOG_INFO;

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

int log_internal(int prio, int error, const char *file, int line, const char *fmt, ...) {
        int saved = errno;
        int r = error > 0 ? -error : error;

        if (prio > log_max_level) {
                errno = saved;
                return r;
        }

        char msg[2048];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);

        if (log_max_level >= LOG_DEBUG)
                fprintf(stderr, "<%d>%s (%s:%d)\n", prio, msg, file, line);
        else
                fprintf(stderr, "<%d>%s\n", prio, msg);
        errno = saved;
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
