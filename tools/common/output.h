/* SPDX-License-Identifier: MIT */
/* Text output shared by the command-line tools (vmadm, vmclient): aligned
 * tables and protocol values written for people, one convention for both:
 *
 *   times   YYYY-MM-DD HH:MM:SS UTC (the wire's Unix milliseconds, in UTC)
 *   sizes   with their unit: RAM "4096 MiB", disks "100 GiB" (--json keeps
 *           the bare numbers of the wire)
 *   text    every string from the wire goes through text_escape() (escape.h)
 *   missing "-"
 *
 * and the tables both tools print: VMs (VM_ID RAM CPU DISKS CONNECTED
 * AUTHORIZED LAST_SEEN), disks (DISK SIZE VM), a VM as "key: value" lines. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <msgpack.h>

/* A table of text cells; row 0 is the header. Columns are aligned with two
 * spaces between them; the last column is not padded. */
typedef struct Table {
        size_t n_cols, n_rows;
        char **cells;           /* n_rows * n_cols */
} Table;

/* Copies the n_cols strings of row (NULL cells print as "-"). */
int table_add_row(Table *t, const char *const *row);
/* bold: print the header in bold (the caller decides: output_color_enabled()). */
int table_print(const Table *t, FILE *f, bool bold);
void table_done(Table *t);

/* Unix time in milliseconds as "YYYY-MM-DD HH:MM:SS UTC"; "-" for nil or
 * anything that is not a non-negative integer. */
void fmt_time(const msgpack_object *o, char *buf, size_t n);
/* A duration in milliseconds as "3d 4h 5m 6s" (leading zero units left out). */
void fmt_duration(uint64_t ms, char *buf, size_t n);
/* The time left until expires_ms, seen at now_ms, in whole seconds rounded
 * up, to the two largest units:
 * "2d 3h left", "2h 14m left", "14m 5s left", "42s left"; "0s left" once
 * past (a booking ends within a second of its time). */
void fmt_left(int64_t expires_ms, int64_t now_ms, char *buf, size_t n);
/* The same for a time on the wire; "-" for nil or anything else. */
void fmt_left_obj(const msgpack_object *expires, int64_t now_ms, char *buf, size_t n);
/* Unix time now, in milliseconds (the tools' clock for "left"). */
int64_t output_now_ms(void);
/* Strings escaped (escape.h), integers in decimal, floats with two
 * decimals (load averages), booleans as yes/no, "-" for nil or missing, "?"
 * for anything else. */
void fmt_scalar(const msgpack_object *o, char *buf, size_t n);
/* An integer with its unit ("4096 MiB"); "-" for nil or missing. */
void fmt_size(const msgpack_object *o, const char *unit, char *buf, size_t n);
/* A disk list as "ID SIZE GiB" joined by ", "; "-" when empty. A new
 * string, or NULL without memory. */
char *fmt_disks(const msgpack_object *disks);
/* An array of scalars (ids, addresses) joined by ", ", each as fmt_scalar()
 * prints it, or with unit after each ("10 GiB, 20 GiB"; unit may be NULL);
 * "-" when empty or not an array. A new string, or NULL without memory. */
char *fmt_list(const msgpack_object *list, const char *unit);
/* A VM's booking ({"user", "expires_at", ...}) as "USER until TIME (LEFT)";
 * "-" for nil. */
void fmt_booking(const msgpack_object *booking, int64_t now_ms, char *buf, size_t n);
/* An OS ({"name", "version"}) as "NAME VERSION"; "-" for nil. */
void fmt_os(const msgpack_object *os, char *buf, size_t n);

/* Appends to *v (a NULL-terminated array of *n strings, as edit.h's
 * strv_push) the string under key of each map in the array list: the VM ids
 * of a vm.list page, for completion. */
int strv_push_keys(char ***v, size_t *n, const msgpack_object *list, const char *key);

/* Colour for f: f is a terminal, NO_COLOR is not set and not disabled. */
bool output_color_enabled(FILE *f, bool disabled);

/* "label:" padded to a column, then the value (already printable). */
void print_field(FILE *f, int indent, const char *label, const char *value);
/* One VM record as "key: value" lines; part 2's keys (hostname, ip, os,
 * owner, group, access, status, booking) after part 1's, when the record
 * has them. */
void print_vm(FILE *f, const msgpack_object *vm);
/* A table of n items (maps), one column per key, formatted by kind. */
typedef enum ColumnKind {
        COLUMN_TEXT,            /* fmt_scalar() */
        COLUMN_TIME,            /* fmt_time() */
        COLUMN_MIB,             /* fmt_size(, "MiB") */
        COLUMN_GIB,             /* fmt_size(, "GiB") */
        COLUMN_DISKS,           /* fmt_disks() */
        COLUMN_LIST,            /* fmt_list(, NULL) */
        COLUMN_GIB_LIST,        /* fmt_list(, "GiB") */
        COLUMN_LEFT,            /* fmt_left_obj() of a time, from now */
        _COLUMN_KIND_MAX,
        _COLUMN_KIND_INVALID = -1,
} ColumnKind;

typedef struct Column {
        const char *header;
        const char *key;        /* "a.b": key b of the map under key a */
        ColumnKind kind;
} Column;

/* With no items, empty_note (e.g. "(no VMs)") is printed instead, when not
 * NULL. */
int print_items(FILE *f, const Column *cols, size_t n_cols, const msgpack_object *const *items,
                size_t n, bool bold, const char *empty_note);

/* The VM and disk tables of n items (maps from vm.list / disk.list). With no
 * items, empty_note (e.g. "(no VMs)") is printed instead, when not NULL. */
int print_vm_table(FILE *f, const msgpack_object *const *vms, size_t n, bool bold,
                   const char *empty_note);
int print_disk_table(FILE *f, const msgpack_object *const *disks, size_t n, bool bold,
                     const char *empty_note);
