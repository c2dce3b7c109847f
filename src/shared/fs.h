/* SPDX-License-Identifier: MIT */
/* Layer L0 (src/shared): small file-system helpers shared by every program. */
#pragma once

#include <sys/types.h>

/* Creates path and its missing parents: the last one with mode, the parents
 * with parents_mode (both before the umask), durably (the parent of each
 * directory it creates is synced, so the new entry survives a power cut).
 * Succeeds when path already is a directory; -ENOTDIR when it is something
 * else. */
int mkdir_p(const char *path, mode_t mode, mode_t parents_mode);
/* fsync() a directory by its path. */
int fsync_dir(const char *dir);
/* fsync() the directory holding path (after creating or renaming an entry). */
int fsync_parent(const char *path);
