/* SPDX-License-Identifier: MIT */
/* msgpack objects as JSON, for the tools' --json output (it used to be
 * vmm_json_print() in libvmm; a printer is the tools' business). */
#pragma once

#include <stdio.h>

#include <msgpack.h>

#define JSON_PRETTY (1u << 0)   /* indent with two spaces */

/* Prints o as JSON: strings escaped (control characters, DEL and C1 controls
 * as \u00XX, invalid UTF-8 as U+FFFD), binary data as a string of hex digits,
 * non-string map keys as strings, extension types and non-finite floats as
 * null. Returns 0 or -EIO when f failed. */
int json_print(FILE *f, const msgpack_object *o, unsigned flags);
/* A JSON string of s[0..n), quotes included. */
void json_print_string(FILE *f, const char *s, size_t n);
/* {"error":{"code":CODE,"message":MESSAGE}} and a newline. */
void json_print_error(FILE *f, const char *code, const char *message);
