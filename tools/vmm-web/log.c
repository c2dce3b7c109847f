/* SPDX-License-Identifier: MIT */
/* Log lines on stderr with a <N> priority prefix, which the journal reads
 * as the record's priority under systemd (SyslogLevelPrefix=). Callers quote
 * what a client sent; nothing secret is ever logged. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "web.h"

static int log_max = LOG_INFO;

void log_set_max(int level) {
        log_max = level;
}

int log_level_parse(const char *s) {
        static const char *const names[] = {
                "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcasecmp(s, names[i]) == 0)
                        return (int) i;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == '\0')
                return s[0] - '0';
        return -EINVAL;
}

int log_at(int prio, int error, const char *fmt, ...) {
        int e = error < 0 ? -error : error;
        if (prio > log_max)
                return -e;
        char line[2048];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(line, sizeof line, fmt, ap);
        va_end(ap);
        (void) fprintf(stderr, "<%d>%s\n", prio, line);
        return -e;
}
