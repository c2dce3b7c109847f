/* SPDX-License-Identifier: MIT */
/* Backups: a consistent, compacted copy of the environment, written first to
 * an unnamed temporary file in the state directory (the only time the map is
 * held), then streamed to the caller's descriptor, which may be a slow pipe
 * or socket: a reader that never drains it holds nothing of the store. */

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store-internal.h"

#define BACKUP_CHUNK (64u * 1024u)

static bool backup_cancelled(const atomic_bool *cancel) {
        return cancel && atomic_load(cancel);
}

/* Wait until fd is ready for events, checking cancel ten times a second. */
static int backup_wait(int fd, short events, const atomic_bool *cancel) {
        struct pollfd p = { .fd = fd, .events = events };

        for (;;) {
                if (backup_cancelled(cancel))
                        return -ECANCELED;
                int n = poll(&p, 1, 100);
                if (n < 0 && errno != EINTR)
                        return -errno;
                if (n > 0)
                        return 0;
        }
}

/* Writes all of buf to fd. A file takes it at once; anything else (a pipe, a
 * socket, maybe never drained) gets pieces no larger than a pipe buffer
 * once poll says there is room, so that a stuck reader cannot block the
 * thread past a cancel. */
static int backup_write(int fd, bool regular, const uint8_t *buf, size_t len,
                        const atomic_bool *cancel) {
        while (len > 0) {
                size_t piece = len;
                if (!regular) {
                        int r = backup_wait(fd, POLLOUT, cancel);
                        if (r < 0)
                                return r;
                        piece = MIN(len, (size_t) PIPE_BUF);
                }
                ssize_t n = write(fd, buf, piece);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return -errno;
                }
                buf += n;
                len -= (size_t) n;
        }
        return 0;
}

/* A file in dir for the copy: unnamed (O_TMPFILE) where the file system
 * can, else named BACKUP_TEMP_PREFIX... and removed when the backup ends
 * (not at once: on FUSE or NFS an open file whose name is gone may no longer
 * be written), *ret_path then saying which. */
static int temp_file(const char *dir, char **ret_path) {
        _cleanup_free_ char *path = NULL;
        int fd;

        *ret_path = NULL;
        fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0)
                return fd;
        if (asprintf(&path, "%s/" BACKUP_TEMP_PREFIX "XXXXXX", dir) < 0)
                return -ENOMEM;
        fd = mkostemp(path, O_CLOEXEC);
        if (fd < 0)
                return -errno;
        *ret_path = TAKE_PTR(path);
        return fd;
}

void store_backup_remove_leftovers(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d)))
                if (strncmp(de->d_name, BACKUP_TEMP_PREFIX, strlen(BACKUP_TEMP_PREFIX)) == 0)
                        (void) unlinkat(dirfd(d), de->d_name, 0);
        closedir(d);
}

static int backup_local_copy(Store *s, int tmp) {
        int r;

        r = -pthread_rwlock_rdlock(&s->resize_lock);
        if (r < 0)
                return r;
        r = store_errno(mdb_env_copyfd2(s->env, tmp, MDB_CP_COMPACT));
        (void) pthread_rwlock_unlock(&s->resize_lock);
        return r;
}

int store_backup(Store *s, int fd, uint64_t *ret_bytes, const atomic_bool *cancel) {
        _cleanup_free_ uint8_t *buf = NULL;
        _cleanup_close_ int tmp = -1;
        _cleanup_free_ char *tmp_path = NULL;
        struct stat st;
        uint64_t total = 0;
        bool expected = false;
        int r;

        assert(s && fd >= 0);
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        bool regular = S_ISREG(st.st_mode);
        if (!atomic_compare_exchange_strong(&s->backup_running, &expected, true))
                return -EBUSY;
        buf = malloc(BACKUP_CHUNK);
        if (!buf) {
                r = -ENOMEM;
                goto out;
        }
        tmp = temp_file(s->dir, &tmp_path);
        if (tmp < 0) {
                r = tmp;
                goto out;
        }
        r = backup_local_copy(s, tmp);
        if (r < 0)
                goto out;
        if (lseek(tmp, 0, SEEK_SET) < 0) {
                r = -errno;
                goto out;
        }
        for (;;) {
                if (backup_cancelled(cancel)) {
                        r = -ECANCELED;
                        break;
                }
                ssize_t n = read(tmp, buf, BACKUP_CHUNK);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        r = -errno;
                        break;
                }
                if (n == 0)
                        break;
                r = backup_write(fd, regular, buf, (size_t) n, cancel);
                if (r < 0)
                        break;
                total += (uint64_t) n;
        }
        /* a backup into a file is on stable storage before it is answered */
        if (r == 0 && regular && fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
                r = -errno;
        if (r == 0 && ret_bytes)
                *ret_bytes = total;
out:
        if (tmp_path)
                (void) unlink(tmp_path);
        atomic_store(&s->backup_running, false);
        return r;
}
