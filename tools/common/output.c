/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/macro.h"
#include "tools/common/output.h"
#include "vmm/client.h"

#define ANSI_BOLD  "\033[1m"
#define ANSI_RESET "\033[0m"

int table_add_row(Table *t, const char *const *row) {
        size_t base = t->n_rows * t->n_cols;
        char **cells = realloc(t->cells, (t->n_rows + 1) * t->n_cols * sizeof(char *));

        if (!cells)
                return -ENOMEM;
        t->cells = cells;
        for (size_t i = 0; i < t->n_cols; i++) {
                cells[base + i] = strdup(row[i] ? row[i] : "-");
                if (!cells[base + i]) {
                        for (size_t j = 0; j < i; j++)
                                free(cells[base + j]);
                        return -ENOMEM;
                }
        }
        t->n_rows++;
        return 0;
}

int table_print(const Table *t, FILE *f, bool bold) {
        _cleanup_free_ size_t *width = calloc(MAX(t->n_cols, (size_t) 1), sizeof(size_t));

        if (!width)
                return -ENOMEM;
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t i = 0; i < t->n_cols; i++)
                        width[i] = MAX(width[i], strlen(t->cells[r * t->n_cols + i]));
        for (size_t r = 0; r < t->n_rows; r++) {
                bool b = bold && r == 0;
                if (b)
                        fputs(ANSI_BOLD, f);
                for (size_t i = 0; i < t->n_cols; i++) {
                        const char *s = t->cells[r * t->n_cols + i];
                        if (i + 1 < t->n_cols)
                                fprintf(f, "%-*s  ", (int) MIN(width[i], (size_t) INT32_MAX), s);
                        else
                                fputs(s, f);
                }
                fputs(b ? ANSI_RESET "\n" : "\n", f);
        }
        return 0;
}

void table_done(Table *t) {
        for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
                free(t->cells[i]);
        free(t->cells);
        *t = (Table) { .n_cols = t->n_cols };
}

void fmt_time(const msgpack_object *o, char *buf, size_t n) {
        uint64_t ms;
        struct tm tm;
        time_t s;

        if (!vmm_object_uint(o, &ms)) {
                (void) snprintf(buf, n, "-");
                return;
        }
        s = (time_t) (ms / 1000);
        if (!localtime_r(&s, &tm) || strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm) == 0)
                (void) snprintf(buf, n, "%" PRIu64, ms);
}

void fmt_duration(uint64_t ms, char *buf, size_t n) {
        uint64_t s = ms / 1000;
        uint64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;

        if (d > 0)
                (void) snprintf(buf, n, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m %" PRIu64 "s",
                                d, h, m, s % 60);
        else if (h > 0)
                (void) snprintf(buf, n, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", h, m, s % 60);
        else if (m > 0)
                (void) snprintf(buf, n, "%" PRIu64 "m %" PRIu64 "s", m, s % 60);
        else
                (void) snprintf(buf, n, "%" PRIu64 "s", s);
}

void fmt_scalar(const msgpack_object *o, char *buf, size_t n) {
        if (!o || o->type == MSGPACK_OBJECT_NIL)
                (void) snprintf(buf, n, "-");
        else if (o->type == MSGPACK_OBJECT_STR)
                (void) snprintf(buf, n, "%.*s", (int) MIN(o->via.str.size, (uint32_t) INT32_MAX),
                                o->via.str.ptr);
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                (void) snprintf(buf, n, "%" PRIu64, o->via.u64);
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                (void) snprintf(buf, n, "%" PRId64, o->via.i64);
        else if (o->type == MSGPACK_OBJECT_BOOLEAN)
                (void) snprintf(buf, n, "%s", o->via.boolean ? "yes" : "no");
        else
                (void) snprintf(buf, n, "?");
}

char *fmt_disks(const msgpack_object *disks, const char *sep) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        uint32_t n = disks && disks->type == MSGPACK_OBJECT_ARRAY ? disks->via.array.size : 0;

        if (!f)
                return NULL;
        for (uint32_t i = 0; i < n; i++) {
                char id[256], size[32];
                fmt_scalar(vmm_object_get(&disks->via.array.ptr[i], "id"), id, sizeof(id));
                fmt_scalar(vmm_object_get(&disks->via.array.ptr[i], "size"), size, sizeof(size));
                fprintf(f, "%s%s:%s", i > 0 ? sep : "", id, size);
        }
        if (n == 0)
                fputs("-", f);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}

bool output_color_enabled(FILE *f, bool disabled) {
        return !disabled && !getenv("NO_COLOR") && isatty(fileno(f));
}
