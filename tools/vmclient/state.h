/* SPDX-License-Identifier: MIT */
/* The agent's small state files (the session token, the last feed position
 * handled): mode 0600 in a 0700 directory, each replaced atomically (a new
 * file written, synced and renamed over the old one). */
#pragma once

#include <stddef.h>

/* Creates dir (and its parents) with mode 0700 when missing. */
int state_dir_ensure(const char *dir);
/* The file's first line, without the newline; -ENOENT when there is none. */
int state_read(const char *dir, const char *name, char *buf, size_t size);
int state_write(const char *dir, const char *name, const char *text);
int state_remove(const char *dir, const char *name);
