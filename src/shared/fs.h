/* SPDX-License-Identifier: MIT */
/* Small file-system helpers shared by every program. */
#pragma once

#include <sys/types.h>

/* Creates path and its missing parents: the last one with mode, the parents
 * with parents_mode (both before the umask). Succeeds when path already is a
 * directory; -ENOTDIR when it is something else. */
int mkdir_p(const char *path, mode_t mode, mode_t parents_mode);
