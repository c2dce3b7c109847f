/* SPDX-License-Identifier: MIT */
/* vmm-load: fill a vmmd state directory with N described VMs for benchmarks,
 * directly through the store API (registering them over the wire would cost
 * one argon2id hash each). VM k is "vm%06u" with ram, cpu and two disks
 * "<vm_id>-disk1" and "<vm_id>-disk2"; every VM gets the same password hash,
 * computed once, so any of them can log in with the same password.
 *
 *     vmm-load [--password PW] [--batch N] STATE_DIR COUNT
 *
 * Run it while no vmmd uses STATE_DIR. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "shared/macro.h"
#include "shared/secret.h"
#include "store/store.h"

#define DEFAULT_PASSWORD "bench-password"
#define DEFAULT_BATCH 10000u
#define COUNT_MAX 100000000u

static const char *arg_password = DEFAULT_PASSWORD;
static unsigned arg_batch = DEFAULT_BATCH;

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void vm_fill(StoreVm *vm, unsigned k, const char *pwhash, int64_t now) {
        memset(vm, 0, sizeof *vm);
        snprintf(vm->vm_id, sizeof vm->vm_id, "vm%06u", k);
        snprintf(vm->pwhash, sizeof vm->pwhash, "%s", pwhash);
        vm->described = true;
        vm->ram = 1024u * (1u + k % 16u);
        vm->cpu = 1u + k % 8u;
        vm->registered_at = vm->free_since = now;
        vm->updated_at = now;
        vm->last_seen_at = -1;
        vm->n_disks = 2;
        for (unsigned d = 0; d < 2; d++) {
                snprintf(vm->disks[d].id, sizeof vm->disks[d].id, "%s-disk%u", vm->vm_id, d + 1);
                vm->disks[d].size = 10u * (d + 1u) + k % 100u;
        }
}

typedef struct Batch {
        unsigned first, last;
        const char *pwhash;
        int64_t now;
} Batch;

/* Writes VMs [first, last] (one item of a group commit). */
static int load_batch(void *item, StoreTxn *t) {
        Batch *b = item;
        StoreVm vm;
        int r;

        for (unsigned k = b->first; k <= b->last; k++) {
                vm_fill(&vm, k, b->pwhash, b->now);
                r = store_vm_put(t, &vm, NULL);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void help(void) {
        printf("Usage: vmm-load [OPTIONS] STATE_DIR COUNT\n\n"
               "Writes COUNT described VMs vm000001.. (two disks each, all with the same\n"
               "password) into the vmmd database in STATE_DIR, for benchmarks. Run it while\n"
               "no vmmd uses STATE_DIR.\n\n"
               "Options:\n"
               "  --password PW   the password of every VM (default %s)\n"
               "  --batch N       VMs per transaction (default %u)\n"
               "  -h, --help      show this help\n",
               DEFAULT_PASSWORD, DEFAULT_BATCH);
}

static int parse_uint(const char *s, unsigned max, unsigned *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || *s == '-' || v == 0 || v > max)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "password", required_argument, NULL, 'p' },
                { "batch",    required_argument, NULL, 'b' },
                { "help",     no_argument,       NULL, 'h' },
                { NULL, 0, NULL, 0 }
        };
        char pwhash[SECRET_PWHASH_MAX];
        char err[512] = "";
        Store *s = NULL;
        unsigned count;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'p':
                        arg_password = optarg;
                        break;
                case 'b':
                        if (parse_uint(optarg, 1000000, &arg_batch) < 0) {
                                fprintf(stderr, "vmm-load: bad --batch '%s'\n", optarg);
                                return EXIT_FAILURE;
                        }
                        break;
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                default:
                        return EXIT_FAILURE;
                }
        }
        if (argc - optind != 2) {
                fprintf(stderr, "vmm-load: need STATE_DIR and COUNT (see --help)\n");
                return EXIT_FAILURE;
        }
        if (parse_uint(argv[optind + 1], COUNT_MAX, &count) < 0) {
                fprintf(stderr, "vmm-load: bad COUNT '%s'\n", argv[optind + 1]);
                return EXIT_FAILURE;
        }
        size_t pwlen = strlen(arg_password);
        if (pwlen < VMM_PASSWORD_MIN || pwlen > VMM_PASSWORD_MAX) {
                fprintf(stderr, "vmm-load: the password must be %d-%d bytes\n",
                        VMM_PASSWORD_MIN, VMM_PASSWORD_MAX);
                return EXIT_FAILURE;
        }
        if (secret_init() < 0) {
                fprintf(stderr, "vmm-load: cannot initialise libsodium\n");
                return EXIT_FAILURE;
        }

        double t0 = mono_s();
        r = secret_password_hash(arg_password, pwlen, pwhash);
        if (r < 0) {
                fprintf(stderr, "vmm-load: cannot hash the password: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        double hash_s = mono_s() - t0;

        StoreOptions so = { .dir = argv[optind] };
        r = store_open(&so, &s, NULL, err, sizeof err);
        if (r < 0) {
                fprintf(stderr, "vmm-load: cannot open the database in %s: %s\n", argv[optind],
                        err[0] ? err : strerror(-r));
                return EXIT_FAILURE;
        }

        int64_t now = now_ms();
        t0 = mono_s();
        for (unsigned first = 1; first <= count; ) {
                unsigned last = count - first + 1 > arg_batch ? first + arg_batch - 1 : count;
                Batch b = { first, last, pwhash, now };
                void *items[1] = { &b };
                int result = 0;
                /* one durable commit per batch; the store grows the map itself */
                r = store_write_batch(s, items, 1, load_batch, &result);
                if (r >= 0)
                        r = result;
                if (r < 0) {
                        fprintf(stderr, "vmm-load: writing vm%06u..vm%06u failed: %s\n", first,
                                last, strerror(-r));
                        store_close(s);
                        return EXIT_FAILURE;
                }
                first = last + 1;
        }
        double load_s = mono_s() - t0;

        StoreTxn *t = NULL;
        StoreStats st = { 0 };
        r = store_read_begin(s, &t);
        if (r >= 0) {
                r = store_stats(t, &st);
                store_read_end(t);
        }
        store_close(s);
        if (r < 0) {
                fprintf(stderr, "vmm-load: reading the statistics failed: %s\n", strerror(-r));
                return EXIT_FAILURE;
        }
        printf("loaded %u VMs in %.2f s (%.0f VMs/s); database: %" PRIu64 " VMs, %" PRIu64
               " disks, %.1f MiB; argon2id hash %.1f ms\n",
               count, load_s, count / (load_s > 0 ? load_s : 1e-9), st.vms, st.disks,
               (double) st.size_bytes / 1048576.0, hash_s * 1000.0);
        return EXIT_SUCCESS;
}
