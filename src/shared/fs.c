/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "shared/fs.h"
#include "shared/macro.h"

int mkdir_p(const char *path, mode_t mode, mode_t parents_mode) {
        _cleanup_free_ char *p = NULL;
        struct stat st;

        if (!path || !*path)
                return -EINVAL;
        p = strdup(path);
        if (!p)
                return -ENOMEM;
        for (char *c = p + 1; *c; c++) {
                if (*c != '/' || c[-1] == '/')
                        continue;
                *c = '\0';
                if (mkdir(p, parents_mode) < 0 && errno != EEXIST)
                        return -errno;
                *c = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        if (stat(p, &st) < 0)
                return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}
