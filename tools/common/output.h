/* SPDX-License-Identifier: MIT */
/* Text output shared by the command-line tools: aligned tables and the
 * formatting of protocol values (times, scalars, disk lists) for people. */
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
/* bold: print the header in bold (only when writing to a terminal). */
int table_print(const Table *t, FILE *f, bool bold);
void table_done(Table *t);

/* Unix time in milliseconds as local "YYYY-MM-DD HH:MM:SS" (TZ honoured);
 * "-" for nil or anything that is not a non-negative integer. */
void fmt_time(const msgpack_object *o, char *buf, size_t n);
/* A duration in milliseconds as "3d 4h 5m 6s" (leading zero units left out). */
void fmt_duration(uint64_t ms, char *buf, size_t n);
/* Strings as they are, integers in decimal, booleans as yes/no, "-" for nil
 * or missing, "?" for anything else. */
void fmt_scalar(const msgpack_object *o, char *buf, size_t n);
/* A disk list as "ID:SIZE" joined by sep; "-" when empty. A new string, or
 * NULL without memory. */
char *fmt_disks(const msgpack_object *disks, const char *sep);

/* Colour for f: f is a terminal, NO_COLOR is not set and not disabled. */
bool output_color_enabled(FILE *f, bool disabled);
