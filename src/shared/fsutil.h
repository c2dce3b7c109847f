/* SPDX-License-Identifier: MIT */
/* Layer L0 (src/shared): small file-system helpers. */
#pragma once

#include <sys/types.h>

/* Creates dir and its missing parents (parents 0755, dir itself mode),
 * durably (each new directory's parent is synced); an existing directory is
 * fine, anything else in the way is -ENOTDIR. */
int mkdir_p(const char *dir, mode_t mode);
/* fsync() the directory holding path (after creating or renaming an entry). */
int fsync_parent(const char *path);
/* fsync() a directory by its path. */
int fsync_dir(const char *dir);
