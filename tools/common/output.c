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
#include "tools/common/edit.h"
#include "tools/common/escape.h"
#include "tools/common/output.h"
#include "vmm/client.h"

#define ANSI_BOLD  "\033[1m"
#define ANSI_RESET "\033[0m"
#define FIELD_WIDTH 16
#define CELL_MAX    512   /* one formatted cell (a DISKS cell is allocated) */

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

/* Columns on the screen of a UTF-8 string (one per character: the cells
 * hold escaped text, so no control characters; wide characters are rare
 * enough in ids to be left alone). */
static size_t text_width(const char *s) {
        size_t w = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if ((*p & 0xc0) != 0x80)
                        w++;
        return w;
}

int table_print(const Table *t, FILE *f, bool bold) {
        _cleanup_free_ size_t *width = calloc(MAX(t->n_cols, (size_t) 1), sizeof(size_t));

        if (!width)
                return -ENOMEM;
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t i = 0; i < t->n_cols; i++)
                        width[i] = MAX(width[i], text_width(t->cells[r * t->n_cols + i]));
        for (size_t r = 0; r < t->n_rows; r++) {
                bool b = bold && r == 0;
                if (b)
                        fputs(ANSI_BOLD, f);
                for (size_t i = 0; i < t->n_cols; i++) {
                        const char *s = t->cells[r * t->n_cols + i];
                        fputs(s, f);
                        if (i + 1 < t->n_cols)
                                fprintf(f, "%*s", (int) MIN(width[i] - text_width(s) + 2,
                                                            (size_t) INT32_MAX), "");
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
        if (!gmtime_r(&s, &tm) || strftime(buf, n, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
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

void fmt_left(int64_t expires_ms, int64_t now_ms, char *buf, size_t n) {
        /* whole seconds, rounded up: a booking of 2 hours shows 2h 0m at once */
        uint64_t s = expires_ms > now_ms ? ((uint64_t) (expires_ms - now_ms) + 999) / 1000 : 0;
        uint64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;

        if (d > 0)
                (void) snprintf(buf, n, "%" PRIu64 "d %" PRIu64 "h left", d, h);
        else if (h > 0)
                (void) snprintf(buf, n, "%" PRIu64 "h %" PRIu64 "m left", h, m);
        else if (m > 0)
                (void) snprintf(buf, n, "%" PRIu64 "m %" PRIu64 "s left", m, s % 60);
        else
                (void) snprintf(buf, n, "%" PRIu64 "s left", s);
}

void fmt_left_obj(const msgpack_object *expires, int64_t now_ms, char *buf, size_t n) {
        int64_t t;

        if (!vmm_object_int(expires, &t))
                (void) snprintf(buf, n, "-");
        else
                fmt_left(t, now_ms, buf, n);
}

int64_t output_now_ms(void) {
        struct timespec ts;

        (void) clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fmt_scalar(const msgpack_object *o, char *buf, size_t n) {
        if (!o || o->type == MSGPACK_OBJECT_NIL)
                (void) snprintf(buf, n, "-");
        else if (o->type == MSGPACK_OBJECT_STR)
                (void) text_escape_buf(o->via.str.ptr, o->via.str.size, 0, buf, n);
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                (void) snprintf(buf, n, "%" PRIu64, o->via.u64);
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                (void) snprintf(buf, n, "%" PRId64, o->via.i64);
        else if (o->type == MSGPACK_OBJECT_BOOLEAN)
                (void) snprintf(buf, n, "%s", o->via.boolean ? "yes" : "no");
        else if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
                (void) snprintf(buf, n, "%.2f", o->via.f64);
        else
                (void) snprintf(buf, n, "?");
}

void fmt_size(const msgpack_object *o, const char *unit, char *buf, size_t n) {
        uint64_t v;

        if (vmm_object_uint(o, &v))
                (void) snprintf(buf, n, "%" PRIu64 " %s", v, unit);
        else
                fmt_scalar(o, buf, n);
}

char *fmt_disks(const msgpack_object *disks) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        uint32_t n = disks && disks->type == MSGPACK_OBJECT_ARRAY ? disks->via.array.size : 0;

        if (!f)
                return NULL;
        for (uint32_t i = 0; i < n; i++) {
                char id[256], size[48];
                fmt_scalar(vmm_object_get(&disks->via.array.ptr[i], "id"), id, sizeof(id));
                fmt_size(vmm_object_get(&disks->via.array.ptr[i], "size"), "GiB", size,
                         sizeof(size));
                fprintf(f, "%s%s %s", i > 0 ? ", " : "", id, size);
        }
        if (n == 0)
                fputs("-", f);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}

char *fmt_list(const msgpack_object *list, const char *unit) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        uint32_t n = list && list->type == MSGPACK_OBJECT_ARRAY ? list->via.array.size : 0;

        if (!f)
                return NULL;
        for (uint32_t i = 0; i < n; i++) {
                char item[512];
                if (unit)
                        fmt_size(&list->via.array.ptr[i], unit, item, sizeof(item));
                else
                        fmt_scalar(&list->via.array.ptr[i], item, sizeof(item));
                fprintf(f, "%s%s", i > 0 ? ", " : "", item);
        }
        if (n == 0)
                fputs("-", f);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}

void fmt_booking(const msgpack_object *booking, int64_t now_ms, char *buf, size_t n) {
        char user[256], until[64], left[64];

        if (!booking || booking->type != MSGPACK_OBJECT_MAP) {
                (void) snprintf(buf, n, "-");
                return;
        }
        fmt_scalar(vmm_object_get(booking, "user"), user, sizeof(user));
        fmt_time(vmm_object_get(booking, "expires_at"), until, sizeof(until));
        fmt_left_obj(vmm_object_get(booking, "expires_at"), now_ms, left, sizeof(left));
        (void) snprintf(buf, n, "%s until %s (%s)", user, until, left);
}

void fmt_os(const msgpack_object *os, char *buf, size_t n) {
        char name[256], version[256];

        if (!os || os->type != MSGPACK_OBJECT_MAP) {
                (void) snprintf(buf, n, "-");
                return;
        }
        fmt_scalar(vmm_object_get(os, "name"), name, sizeof(name));
        fmt_scalar(vmm_object_get(os, "version"), version, sizeof(version));
        if (vmm_object_streq(vmm_object_get(os, "version"), ""))
                (void) snprintf(buf, n, "%s", name);
        else
                (void) snprintf(buf, n, "%s %s", name, version);
}

int strv_push_keys(char ***v, size_t *n, const msgpack_object *list, const char *key) {
        for (uint32_t i = 0; list && list->type == MSGPACK_OBJECT_ARRAY && i < list->via.array.size;
             i++) {
                _cleanup_free_ char *s = vmm_object_strdup(
                        vmm_object_get(&list->via.array.ptr[i], key));
                if (s && strv_push(v, n, s) < 0)
                        return -ENOMEM;
        }
        return 0;
}

bool output_color_enabled(FILE *f, bool disabled) {
        return !disabled && !getenv("NO_COLOR") && isatty(fileno(f));
}

void print_field(FILE *f, int indent, const char *label, const char *value) {
        int pad = FIELD_WIDTH - indent - (int) MIN(text_width(label), (size_t) 64);

        fprintf(f, "%*s%s:%*s %s\n", indent, "", label, MAX(pad, 0), "", value);
}

void print_vm(FILE *f, const msgpack_object *vm) {
        static const char *const fields[] = {
                "vm_id", "ram", "cpu", "disks", "registered_at", "updated_at",
                "last_seen_at", "connected", "authorized",
        };
        /* part 2: printed when the record has them */
        static const char *const more[] = {
                "hostname", "ip", "os", "owner", "group", "access", "status", "booking",
        };
        int64_t now = output_now_ms();

        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                const msgpack_object *v = vmm_object_get(vm, fields[i]);
                _cleanup_free_ char *disks = NULL;
                char buf[512];
                const char *text = buf;

                if (strcmp(fields[i], "disks") == 0)
                        text = disks = fmt_disks(v);
                else if (strstr(fields[i], "_at"))
                        fmt_time(v, buf, sizeof(buf));
                else if (strcmp(fields[i], "ram") == 0)
                        fmt_size(v, "MiB", buf, sizeof(buf));
                else
                        fmt_scalar(v, buf, sizeof(buf));
                print_field(f, 0, fields[i], text ? text : "?");
        }
        for (size_t i = 0; i < ELEMENTSOF(more); i++) {
                const msgpack_object *v = vmm_object_get(vm, more[i]);
                _cleanup_free_ char *list = NULL;
                char buf[1024];
                const char *text = buf;

                if (!v)
                        continue;
                if (strcmp(more[i], "ip") == 0)
                        text = list = fmt_list(v, NULL);
                else if (strcmp(more[i], "os") == 0)
                        fmt_os(v, buf, sizeof(buf));
                else if (strcmp(more[i], "booking") == 0)
                        fmt_booking(v, now, buf, sizeof(buf));
                else
                        fmt_scalar(v, buf, sizeof(buf));
                print_field(f, 0, more[i], text ? text : "?");
        }
}

/* The value under key, where "a.b" is key b of the map under key a. */
static const msgpack_object *lookup_path(const msgpack_object *o, const char *key) {
        const char *dot = strchr(key, '.');
        char head[64];

        if (!dot)
                return vmm_object_get(o, key);
        if ((size_t) (dot - key) >= sizeof(head))
                return NULL;
        memcpy(head, key, (size_t) (dot - key));
        head[dot - key] = '\0';
        return lookup_path(vmm_object_get(o, head), dot + 1);
}

int print_items(FILE *f, const Column *cols, size_t n_cols, const msgpack_object *const *items,
                size_t n, bool bold, const char *empty_note) {
        _cleanup_free_ const char **row = calloc(MAX(n_cols, (size_t) 1), sizeof(char *));
        _cleanup_free_ char *cells = calloc(MAX(n_cols, (size_t) 1), CELL_MAX);
        _cleanup_free_ char **lists = calloc(MAX(n_cols, (size_t) 1), sizeof(char *));
        Table t = { .n_cols = n_cols };
        int64_t now = output_now_ms();
        int r;

        if (!row || !cells || !lists)
                return -ENOMEM;
        for (size_t c = 0; c < n_cols; c++)
                row[c] = cols[c].header;
        r = table_add_row(&t, row);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                _cleanup_free_ char *disks = NULL;
                memset(lists, 0, MAX(n_cols, (size_t) 1) * sizeof(char *));
                for (size_t c = 0; c < n_cols; c++) {
                        const msgpack_object *v = lookup_path(items[i], cols[c].key);
                        char *cell = cells + c * CELL_MAX;
                        row[c] = cell;
                        switch (cols[c].kind) {
                        case COLUMN_TIME:
                                fmt_time(v, cell, CELL_MAX);
                                break;
                        case COLUMN_MIB:
                                fmt_size(v, "MiB", cell, CELL_MAX);
                                break;
                        case COLUMN_GIB:
                                fmt_size(v, "GiB", cell, CELL_MAX);
                                break;
                        case COLUMN_DISKS:
                                free(disks);
                                disks = fmt_disks(v);
                                row[c] = disks ? disks : "?";
                                break;
                        case COLUMN_LIST:
                        case COLUMN_GIB_LIST:
                                lists[c] = fmt_list(v, cols[c].kind == COLUMN_GIB_LIST ? "GiB"
                                                                                       : NULL);
                                row[c] = lists[c] ? lists[c] : "?";
                                break;
                        case COLUMN_LEFT:
                                fmt_left_obj(v, now, cell, CELL_MAX);
                                break;
                        default:
                                fmt_scalar(v, cell, CELL_MAX);
                                break;
                        }
                }
                r = table_add_row(&t, row);
                for (size_t c = 0; c < n_cols; c++)
                        free(lists[c]);
        }
        if (r >= 0) {
                if (n == 0 && empty_note)
                        fprintf(f, "%s\n", empty_note);
                else
                        r = table_print(&t, f, bold);
        }
        table_done(&t);
        return r;
}

int print_vm_table(FILE *f, const msgpack_object *const *vms, size_t n, bool bold,
                   const char *empty_note) {
        static const Column cols[] = {
                { "VM_ID", "vm_id", COLUMN_TEXT },
                { "RAM", "ram", COLUMN_MIB },
                { "CPU", "cpu", COLUMN_TEXT },
                { "DISKS", "disks", COLUMN_DISKS },
                { "CONNECTED", "connected", COLUMN_TEXT },
                { "AUTHORIZED", "authorized", COLUMN_TEXT },
                { "LAST_SEEN", "last_seen_at", COLUMN_TIME },
        };
        return print_items(f, cols, ELEMENTSOF(cols), vms, n, bold, empty_note);
}

int print_disk_table(FILE *f, const msgpack_object *const *disks, size_t n, bool bold,
                     const char *empty_note) {
        static const Column cols[] = {
                { "DISK", "id", COLUMN_TEXT },
                { "SIZE", "size", COLUMN_GIB },
                { "VM", "vm_id", COLUMN_TEXT },
        };
        return print_items(f, cols, ELEMENTSOF(cols), disks, n, bold, empty_note);
}
