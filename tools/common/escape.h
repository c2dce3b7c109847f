/* SPDX-License-Identifier: MIT */
/* Text from the wire, made safe to print on a terminal.
 *
 * A string that vmmd sends (an error message, a peer address, a name) could
 * carry terminal control sequences: ESC [ ... (CSI), ESC ] ... (OSC, e.g. a
 * window title or a hyperlink), C1 controls, or bytes that are not UTF-8.
 * Before any of it reaches a terminal it goes through these functions, which
 * show every control character as a visible escape (\x1b, \u009b) and leave
 * everything else, including any other UTF-8, as it is. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define ESCAPE_KEEP_TAB (1u << 0)   /* a tab stays a tab (free text, not table cells) */

/* s[0..n) as text: C0 controls, DEL, C1 controls (U+0080..U+009F) and bytes
 * that are not valid UTF-8 become \xNN (C1: \u00NN); a backslash becomes
 * \\. Returns a new string, or NULL without memory. */
char *text_escape(const char *s, size_t n, unsigned flags);
/* The same, written to f. */
void fputs_escaped(FILE *f, const char *s, size_t n, unsigned flags);
/* Escapes into buf (always NUL-terminated; cut short, at a whole escape,
 * when buf is too small). Returns the length written. */
size_t text_escape_buf(const char *s, size_t n, unsigned flags, char *buf, size_t size);
/* True when s[0..n) would print differently escaped. */
bool text_needs_escape(const char *s, size_t n, unsigned flags);

/* Length of the valid UTF-8 sequence at p (1..4; n >= 1 bytes there), or 0
 * when it is not one (overlong forms, surrogates and values past U+10FFFF
 * are not). */
size_t utf8_sequence_len(const unsigned char *p, size_t n);
