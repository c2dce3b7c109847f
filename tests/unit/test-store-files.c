/* SPDX-License-Identifier: MIT */
/* The store's files: a backup's temporary copy that a crash left in the
 * state directory is removed at the next open (and nothing else is); a
 * backup leaves no file behind. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/store.h"

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w) {
        return remove(p);
}

static void touch(const char *dir, const char *name) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, "copy", 4), 4);
        close(fd);
}

static bool exists(const char *dir, const char *name) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        return access(path, F_OK) == 0;
}

static unsigned entries(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;
        unsigned n = 0;

        assert_non_null(d);
        while ((de = readdir(d)))
                n += de->d_name[0] != '.' || strncmp(de->d_name, ".backup-", 8) == 0;
        closedir(d);
        return n;
}

static void test_backup_leftovers_removed_at_open(void **state) {
        char dir[] = "/tmp/test-store-files-XXXXXX", err[256];
        StoreOptions o = { .no_sync = true };
        Store *s = NULL;

        assert_non_null(mkdtemp(dir));
        o.dir = dir;
        assert_int_equal(store_open(&o, &s, NULL, err, sizeof err), 0);
        store_close(s);
        touch(dir, ".backup-a1B2c3");
        touch(dir, ".backup-zzzzzz");
        touch(dir, "notes.txt");                /* not ours: kept */
        touch(dir, ".backup");                  /* not the prefix: kept */
        assert_int_equal(store_open(&o, &s, NULL, err, sizeof err), 0);
        assert_false(exists(dir, ".backup-a1B2c3"));
        assert_false(exists(dir, ".backup-zzzzzz"));
        assert_true(exists(dir, "notes.txt"));
        assert_true(exists(dir, ".backup"));
        /* a backup into a file leaves nothing in the state directory */
        unsigned before = entries(dir);
        char out[300];
        snprintf(out, sizeof out, "%s/out.mdb", dir);
        int fd = open(out, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        assert_true(fd >= 0);
        uint64_t bytes = 0;
        assert_int_equal(store_backup(s, fd, &bytes, NULL), 0);
        assert_true(bytes > 0);
        close(fd);
        assert_int_equal(entries(dir), before + 1);     /* out.mdb only */
        store_close(s);
        /* read-only opens (vmmd-check) change nothing */
        touch(dir, ".backup-keep01");
        o.read_only = true;
        assert_int_equal(store_open(&o, &s, NULL, err, sizeof err), 0);
        assert_true(exists(dir, ".backup-keep01"));
        store_close(s);
        nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_backup_leftovers_removed_at_open),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
