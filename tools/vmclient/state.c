/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/macro.h"
#include "state.h"

int state_dir_ensure(const char *dir) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s", dir) >= (int) sizeof path)
                return -ENAMETOOLONG;
        for (char *p = path + 1; ; p++) {
                bool end = *p == '\0';
                if (*p != '/' && !end)
                        continue;
                *p = '\0';
                if (mkdir(path, 0700) < 0 && errno != EEXIST)
                        return negative_errno();
                if (end)
                        break;
                *p = '/';
        }
        struct stat st;
        if (stat(dir, &st) < 0)
                return negative_errno();
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int state_read(const char *dir, const char *name, char *buf, size_t size) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int) sizeof path)
                return -ENAMETOOLONG;
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        ssize_t n = read(fd, buf, size - 1);
        if (n < 0)
                return negative_errno();
        buf[n] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        return buf[0] ? 0 : -ENOENT;
}

int state_write(const char *dir, const char *name, const char *text) {
        char path[PATH_MAX], tmp[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int) sizeof path ||
            snprintf(tmp, sizeof tmp, "%s/.%s.XXXXXX", dir, name) >= (int) sizeof tmp)
                return -ENAMETOOLONG;
        _cleanup_close_ int fd = mkostemp(tmp, O_CLOEXEC);    /* mode 0600 */
        if (fd < 0)
                return negative_errno();
        size_t len = strlen(text), off = 0;
        int r = 0;
        if (fchmod(fd, 0600) < 0)
                r = negative_errno();
        while (r == 0 && off < len) {
                ssize_t k = write(fd, text + off, len - off);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        r = negative_errno();
                else
                        off += (size_t) k;
        }
        if (r == 0 && write(fd, "\n", 1) != 1)
                r = -EIO;
        if (r == 0 && fsync(fd) < 0)
                r = negative_errno();
        if (r == 0 && rename(tmp, path) < 0)
                r = negative_errno();
        if (r < 0) {
                (void) unlink(tmp);
                return r;
        }
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0)
                (void) fsync(dfd);
        return 0;
}

int state_remove(const char *dir, const char *name) {
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int) sizeof path)
                return -ENAMETOOLONG;
        if (unlink(path) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}
