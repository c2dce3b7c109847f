/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/common/errors.h"
#include "tools/common/escape.h"
#include "tools/common/json.h"

/* What the daemon's parameter checks say, in words for people. */
static const ErrorText common_texts[] = {
        { "bad_request", "^vm_id: ",
          "a VM id is 1 to 48 letters, digits, '.', '_' or '-', starting with a letter or "
          "digit" },
        { "bad_request", ".id: ",
          "a disk id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or "
          "digit" },
        { "bad_request", "duplicate disk id",
          "the same disk id is given twice" },
        { "bad_request", "^new_password: ",
          "the new password must be 6 to 1024 bytes" },
        { "bad_request", "^password: ",
          "a password is 6 to 1024 bytes" },
        { "bad_request", "^ram: ",
          "RAM is given in MiB, from 1 to 4294967295" },
        { "bad_request", "^cpu: ",
          "the CPU count is from 1 to 1024" },
        { "bad_request", ".size: ",
          "a disk size is given in GiB, from 1 to 1099511627776" },
        { "too_large", "disks: at most",
          "a VM has at most 64 disks" },
        { "shutting_down", NULL,
          "vmmd is stopping; try again once it is back" },
        { "rate_limited", NULL,
          "vmmd holds this address back for now (too many logins, registrations or "
          "connections from it, at once or in the last minute); wait a little and try "
          "again" },
        { "internal", NULL,
          "vmmd hit an internal error (its log says more)" },
        { NULL, NULL, NULL },
};

static const char *lookup(const ErrorText *t, const char *code, const char *message) {
        for (; t && t->code; t++) {
                if (strcmp(t->code, code) != 0)
                        continue;
                if (!t->match ||
                    (t->match[0] == '^' ? strncmp(message, t->match + 1,
                                                  strlen(t->match + 1)) == 0
                                        : strstr(message, t->match) != NULL))
                        return t->text;
        }
        return NULL;
}

const char *error_text(const ErrorText *table, const char *code, const char *message) {
        const char *s;

        if (!code || !message)
                return NULL;
        s = lookup(table, code, message);
        return s ? s : lookup(common_texts, code, message);
}

void report_error(const Reporter *r, const char *code, bool show_code, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        report_errorv(r, code, show_code, fmt, ap);
        va_end(ap);
}

void report_errorv(const Reporter *r, const char *code, bool show_code, const char *fmt,
                   va_list ap) {
        _cleanup_free_ char *msg = NULL;

        if (vasprintf(&msg, fmt, ap) < 0)
                msg = NULL;
        const char *m = msg ? msg : "out of memory";

        fflush(stdout);
        fputs(r->prefix, r->text);
        if (show_code) {
                fputs_escaped(r->text, code, strlen(code), 0);
                fputs(": ", r->text);
        }
        fputs_escaped(r->text, m, strlen(m), ESCAPE_KEEP_TAB);
        fputc('\n', r->text);
        fflush(r->text);
        if (r->json) {
                json_print_error(stdout, code, m);
                fflush(stdout);
        }
}

void report_daemon_error(const Reporter *r, const ErrorText *table, const char *code,
                         const char *message) {
        const char *c = code && *code ? code : "unknown";
        const char *m = message ? message : "";
        const char *text = error_text(table, c, m);

        report_error(r, c, true, "%s", text ? text : m);
}

const char *connect_error_hint(int r) {
        switch (-r) {
        case ECONNREFUSED:
                return "connection refused: is vmmd running there?";
        case ENXIO:
                return "the host name does not resolve";
        case EHOSTUNREACH:
        case ENETUNREACH:
                return "no route to that host";
        case ETIMEDOUT:
                return "no answer in time (see --timeout)";
        case ENOENT:
                return "no such socket: is vmmd running?";
        case EACCES:
        case EPERM:
                return "permission denied";
        default:
                return NULL;
        }
}
