/* SPDX-License-Identifier: MIT */
/* vmmd-check: checks the consistency of a vmmd state directory (see
 * vmmd-check(8)). Opens the database beside a running vmmd or without one;
 * writes nothing (the open's schema transaction commits no change). */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "build-config.h"
#include "shared/macro.h"
#include "store/store.h"

#define CHECK_PROBLEMS_BYTES 8192   /* room for the first problems */

static bool arg_quiet;

static void store_closep(Store **s) {
        store_close(*s);
}

static void help(void) {
        printf("Usage: vmmd-check [OPTIONS] STATE_DIR\n\n"
               "Checks the vmmd database in STATE_DIR (the file %s): every record\n"
               "decodes and the tables and indexes agree. Prints the counts and \"ok\",\n"
               "or the first problems found. Exit status 0 when consistent, 1 when not\n"
               "(or when the database cannot be read), 2 on a usage error.\n\n"
               "  -q, --quiet     print only problems\n"
               "  -h, --help      show this help\n"
               "  -V, --version   show the version\n", STORE_DB_FILE);
}

static int parse_argv(int argc, char **argv, const char **ret_dir) {
        static const struct option options[] = {
                { "quiet", no_argument, NULL, 'q' },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, 'V' },
                { NULL, 0, NULL, 0 }
        };
        int c;

        while ((c = getopt_long(argc, argv, "qhV", options, NULL)) >= 0) {
                switch (c) {
                case 'q':
                        arg_quiet = true;
                        break;
                case 'h':
                        help();
                        return 0;
                case 'V':
                        printf("vmmd-check (vmmd) %s\n", VMMD_VERSION);
                        return 0;
                default:
                        return -EINVAL;
                }
        }
        if (optind != argc - 1) {
                fprintf(stderr, "vmmd-check: expected one STATE_DIR (see --help)\n");
                return -EINVAL;
        }
        *ret_dir = argv[optind];
        return 1;
}

int main(int argc, char **argv) {
        _cleanup_(store_closep) Store *s = NULL;
        _cleanup_free_ char *path = NULL, *problems = NULL;
        const char *dir = NULL;
        StoreVerifyStats st = { 0 };
        char err[512] = "";
        struct stat sb;
        StoreOptions opts = {
                .map_size_initial = 1,          /* the file's own size (raised to it) */
                .map_size_max = UINT64_C(1) << 46,
                .read_only = true,              /* a check never changes the database */
        };
        int r;

        r = parse_argv(argc, argv, &dir);
        if (r <= 0)
                return r < 0 ? 2 : 0;

        /* Never create a database: store_open would make an empty one. */
        if (asprintf(&path, "%s/%s", dir, STORE_DB_FILE) < 0) {
                path = NULL;
                fprintf(stderr, "vmmd-check: out of memory\n");
                return 1;
        }
        if (stat(path, &sb) < 0) {
                fprintf(stderr, "vmmd-check: %s: %s\n", path, strerror(errno));
                return 1;
        }
        if (!S_ISREG(sb.st_mode) || sb.st_size == 0) {
                fprintf(stderr, "vmmd-check: %s: not a database file\n", path);
                return 1;
        }

        opts.dir = dir;
        r = store_open(&opts, &s, NULL, err, sizeof(err));
        if (r < 0) {
                fprintf(stderr, "vmmd-check: %s\n", err[0] ? err : strerror(-r));
                return 1;
        }

        problems = calloc(1, CHECK_PROBLEMS_BYTES);
        if (!problems) {
                fprintf(stderr, "vmmd-check: out of memory\n");
                return 1;
        }
        r = store_verify(s, problems, CHECK_PROBLEMS_BYTES, &st);
        if (!arg_quiet) {
                printf("database: %s\n", store_path(s));
                printf("schema version: %" PRIu32 "\n", st.schema_version);
                printf("vms: %" PRIu64 "\n", st.vms);
                printf("disks: %" PRIu64 " (vm_disks index: %" PRIu64 ")\n", st.disks,
                       st.vm_disks);
                printf("sessions: %" PRIu64 " (vm_sessions index: %" PRIu64
                       ", user_sessions: %" PRIu64 ", by expiry: %" PRIu64 ")\n", st.sessions,
                       st.vm_sessions, st.user_sessions, st.session_expiry);
                printf("users: %" PRIu64 "\n", st.users);
                printf("groups: %" PRIu64 " (group_vms index: %" PRIu64 ")\n", st.groups,
                       st.group_vms);
                printf("bookings: %" PRIu64 " (by expiry: %" PRIu64 ", by user: %" PRIu64 ")\n",
                       st.bookings, st.booking_expiry, st.user_bookings);
                printf("history: %" PRIu64 "\n", st.history);
                printf("feed: %" PRIu64 "\n", st.feed);
                printf("os: %" PRIu64 "\n", st.os);
                printf("requests: %" PRIu64 "\n", st.requests);
        }
        if (r == -EBADMSG) {
                fputs(problems, stdout);
                printf("FAILED: %" PRIu64 " problem%s\n", st.problems,
                       st.problems == 1 ? "" : "s");
                return 1;
        }
        if (r < 0) {
                fprintf(stderr, "vmmd-check: %s\n", problems[0] ? problems : strerror(-r));
                return 1;
        }
        if (!arg_quiet)
                printf("ok\n");
        return 0;
}
