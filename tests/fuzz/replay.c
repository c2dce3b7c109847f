/* SPDX-License-Identifier: MIT */
/* Replays inputs through a fuzz target without libFuzzer (any compiler):
 * each argument is a file or a directory whose regular files are all run,
 * in name order. A crash or a failed invariant aborts, which fails the test.
 * A missing directory counts as empty. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Defined by the targets that need set-up (weak: the others have none). */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static size_t n_run;

static int run_file(const char *path) {
        FILE *f = fopen(path, "re");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0;

        if (!f) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        for (;;) {
                if (cap - len < 65536) {
                        cap = cap ? cap * 2 : 65536;
                        uint8_t *p = realloc(buf, cap);
                        if (!p) {
                                free(buf);
                                fclose(f);
                                return -ENOMEM;
                        }
                        buf = p;
                }
                size_t n = fread(buf + len, 1, cap - len, f);
                len += n;
                if (n == 0)
                        break;
        }
        fclose(f);
        /* an exact-size copy, so that ASan sees reads past the input */
        uint8_t *exact = malloc(len ? len : 1);
        if (!exact) {
                free(buf);
                return -ENOMEM;
        }
        memcpy(exact, buf, len);
        free(buf);
        printf("replay %s (%zu bytes)\n", path, len);
        fflush(stdout);
        (void) LLVMFuzzerTestOneInput(exact, len);
        free(exact);
        n_run++;
        return 0;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

static int run_dir(const char *dir) {
        struct dirent **list = NULL;
        int n = scandir(dir, &list, NULL, NULL);
        int r = 0;

        if (n < 0) {
                if (errno == ENOENT) {
                        printf("replay %s: no such directory, nothing to run\n", dir);
                        return 0;
                }
                fprintf(stderr, "%s: %s\n", dir, strerror(errno));
                return -errno;
        }
        char **names = calloc((size_t) n + 1, sizeof *names);
        size_t k = 0;
        for (int i = 0; i < n; i++) {
                if (names && list[i]->d_name[0] != '.')
                        names[k++] = strdup(list[i]->d_name);
                free(list[i]);
        }
        free(list);
        if (!names)
                return -ENOMEM;
        qsort(names, k, sizeof *names, cmp_str);
        for (size_t i = 0; i < k; i++) {
                char path[4096];
                struct stat st;
                if (!names[i]) {
                        r = -ENOMEM;
                        continue;
                }
                snprintf(path, sizeof path, "%s/%s", dir, names[i]);
                if (stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
                        int q = run_file(path);
                        if (q < 0)
                                r = q;
                }
                free(names[i]);
        }
        free(names);
        return r;
}

int main(int argc, char *argv[]) {
        int r = 0;

        if (argc < 2) {
                fprintf(stderr, "Usage: %s FILE|DIR...\n", argv[0]);
                return 2;
        }
        if (LLVMFuzzerInitialize)
                (void) LLVMFuzzerInitialize(&argc, &argv);
        for (int i = 1; i < argc; i++) {
                struct stat st;
                int q;
                if (stat(argv[i], &st) == 0 && S_ISREG(st.st_mode))
                        q = run_file(argv[i]);
                else
                        q = run_dir(argv[i]);
                if (q < 0)
                        r = q;
        }
        printf("replayed %zu inputs%s\n", n_run, r < 0 ? " (some could not be read)" : "");
        return r < 0 ? 1 : 0;
}
