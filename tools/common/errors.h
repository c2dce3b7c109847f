/* SPDX-License-Identifier: MIT */
/* How the tools say that something failed: one sentence for a person (on
 * stderr, or on stdout in vmclient's shell), and with --json also one
 * {"error": {"code", "message"}} document on stdout, so that every command
 * prints exactly one JSON document.
 *
 * The daemon's messages name protocol fields and methods ("token: expected
 * a string of 43..43 bytes", "use vm.update"); the tools know what the user
 * typed, so they say what to type instead: each tool has a table of the
 * error codes and message pieces it knows, and falls back to the daemon's
 * own message for the rest. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "shared/macro.h"

/* Codes of errors that are the tool's own, not the daemon's (--json). */
#define ERROR_USAGE       "usage"        /* exit 2 */
#define ERROR_UNREACHABLE "unreachable"  /* exit 3: cannot connect, or the connection broke */
#define ERROR_LOCAL       "local"        /* exit 4 (vmadm), or out of memory */

typedef struct ErrorText {
        const char *code;       /* the daemon's error code; NULL ends a table */
        const char *match;      /* a piece of the daemon's message ("^..." : how it
                                 * starts); NULL: any message */
        const char *text;       /* what to say instead */
} ErrorText;

/* The sentence for a daemon error: the first matching row of table, then of
 * the rows every tool shares (ids, passwords, sizes); NULL when none matches
 * (then the daemon's message is the best there is). table may be NULL. */
const char *error_text(const ErrorText *table, const char *code, const char *message);

typedef struct Reporter {
        const char *prefix;     /* "vmadm: ", or "error: " in vmclient's shell */
        FILE *text;             /* stderr, or stdout in vmclient's shell */
        bool json;              /* --json: also the JSON document on stdout */
} Reporter;

/* Prints PREFIX[CODE: ]MESSAGE (escaped: it may hold wire text) and, with
 * json, the JSON document with code and message. show_code: put the code in
 * the text too (daemon errors; scripts match on it). */
_printf_(4, 5)
void report_error(const Reporter *r, const char *code, bool show_code, const char *fmt, ...);
void report_errorv(const Reporter *r, const char *code, bool show_code, const char *fmt,
                   va_list ap) _printf_(4, 0);
/* A daemon error: its code, and error_text() or else the daemon's message. */
void report_daemon_error(const Reporter *r, const ErrorText *table, const char *code,
                         const char *message);

/* What to say about a failed connect() or resolve (negative errno from
 * libvmm): "connection refused: is vmmd running?", ... NULL for others. */
const char *connect_error_hint(int r);
