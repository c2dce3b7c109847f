/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/fs.h"
#include "shared/macro.h"

int fsync_dir(const char *dir) {
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (fd < 0)
                return -errno;
        return fsync(fd) < 0 ? -errno : 0;
}

int fsync_parent(const char *path) {
        _cleanup_free_ char *p = strdup(path);
        char *slash;

        if (!p)
                return -ENOMEM;
        slash = strrchr(p, '/');
        if (!slash)
                return fsync_dir(".");
        if (slash == p)
                slash[1] = '\0';
        else
                *slash = '\0';
        return fsync_dir(p);
}

/* A new directory is durable once its parent is synced; a file system that
 * cannot sync directories is taken as it is. */
static int mkdir_durable(const char *path, mode_t mode) {
        if (mkdir(path, mode) < 0)
                return errno == EEXIST ? 0 : -errno;
        int r = fsync_parent(path);
        return r == -EINVAL || r == -EROFS ? 0 : r;
}

int mkdir_p(const char *path, mode_t mode, mode_t parents_mode) {
        _cleanup_free_ char *p = NULL;
        struct stat st;
        int r;

        if (!path || !*path)
                return -EINVAL;
        p = strdup(path);
        if (!p)
                return -ENOMEM;
        for (char *c = p + 1; *c; c++) {
                if (*c != '/' || c[-1] == '/')
                        continue;
                *c = '\0';
                r = mkdir_durable(p, parents_mode);
                if (r < 0)
                        return r;
                *c = '/';
        }
        r = mkdir_durable(p, mode);
        if (r < 0)
                return r;
        if (stat(p, &st) < 0)
                return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}
