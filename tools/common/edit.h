/* SPDX-License-Identifier: MIT */
/* Reading commands for vmclient's shell and vmadm's console.
 *
 * On a terminal: libedit's line editing (emacs keys, ~/.editrc), a history
 * kept in $XDG_STATE_HOME/vmmd/NAME (~/.local/state/vmmd/NAME; mode 0600)
 * and completion with TAB from a callback of the tool (command words, VM
 * ids). Otherwise (a pipe, a script): plain lines from stdin, no prompt, no
 * history, exactly as before. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

typedef struct LineEditor LineEditor;

/* Completion: before is the line up to the word being completed; the
 * callback returns every candidate for that position (a NULL-terminated
 * array of strings, all malloc'd; NULL for none). *ret_fold_case: match the
 * typed prefix ignoring case (command words). The editor keeps those that
 * start with the typed word. */
typedef char **(*LineCompleteFn)(void *userdata, const char *before, bool *ret_fold_case);

/* prog names the editrc section ("vmclient"); history_name is the file in
 * the state directory ("vmclient_history"). Interactive when stdin is a
 * terminal. */
int line_editor_new(const char *prog, const char *prompt, const char *history_name,
                    LineEditor **ret);
LineEditor *line_editor_free(LineEditor *le);
bool line_editor_interactive(const LineEditor *le);
void line_editor_set_completion(LineEditor *le, LineCompleteFn fn, void *userdata);

/* The next line, without its line end, in a buffer the caller may change
 * until the next call; NULL at the end of input. */
char *line_editor_read(LineEditor *le);
/* Adds line to the history (interactive only) and saves the history file.
 * The caller leaves out lines that hold secrets. */
void line_editor_remember(LineEditor *le, const char *line);

/* For completion callbacks: how many words before holds; the first is
 * copied into first (cut to fit). */
size_t line_words(const char *before, char *first, size_t first_size);
/* Appends a copy of s to *v, a NULL-terminated array of *n strings. */
int strv_push(char ***v, size_t *n, const char *s);

/* The history file's path for name (a new string), or NULL when neither
 * XDG_STATE_HOME nor HOME is usable. */
char *line_editor_history_path(const char *name);
