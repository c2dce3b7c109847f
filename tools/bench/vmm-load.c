/* SPDX-License-Identifier: MIT */
/* vmm-load: fill a vmmd state directory with N described VMs for benchmarks,
 * directly through the store API (registering them over the wire would cost
 * one argon2id hash each). VM k is "vm%06u" with ram, cpu and two disks
 * "<vm_id>-disk1" and "<vm_id>-disk2"; every VM gets the same password hash,
 * computed once, so any of them can log in with the same password.
 *
 * For part 2's benchmarks it also writes users u000001.. (role user, the same
 * password), bookings of vm000001.. held by those users in turn (the first
 * --expired of them already past their end, spread over the last hour; the
 * others ending 1 to 100 hours from now), and feed events: first the
 * booking.created event of each booking, with its history entry, as vmmd
 * writes them, then vm.updated events of the VMs in turn. The events have
 * the bytes vmmd's events.c gives them (a map of type, time, vm_id, user,
 * expires_at); positions are the store's own.
 *
 *     vmm-load [--password PW] [--batch N] [--users N] [--bookings N]
 *              [--expired N] [--feed N] [--event-history N] STATE_DIR COUNT
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
#include "shared/mpout.h"
#include "shared/secret.h"
#include "store/store.h"

#define DEFAULT_PASSWORD "bench-password"
#define DEFAULT_BATCH 10000u
#define COUNT_MAX 100000000u

static const char *arg_password = DEFAULT_PASSWORD;
static unsigned arg_batch = DEFAULT_BATCH;
static unsigned arg_users;
static unsigned arg_bookings;
static unsigned arg_expired;
static unsigned arg_feed;
static unsigned arg_event_history;      /* 0: the store's default, as vmmd's */

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
        unsigned vms;                   /* VMs loaded (for the feed's vm.updated) */
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

/* Users [first, last]: role user, the VMs' password hash. */
static int users_batch(void *item, StoreTxn *t) {
        Batch *b = item;
        StoreUser u;
        int r;

        for (unsigned k = b->first; k <= b->last; k++) {
                u = (StoreUser) { .role = STORE_ROLE_USER, .created_at = b->now,
                                  .last_login_at = -1 };
                snprintf(u.name, sizeof u.name, "u%06u", k);
                snprintf(u.pwhash, sizeof u.pwhash, "%s", b->pwhash);
                r = store_user_put(t, &u);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Booking k: vm k, held by user ((k - 1) mod users) + 1; the first
 * arg_expired ended in the last hour, the others end 1 to 100 hours ahead. */
static void booking_fill(StoreBooking *bk, unsigned k, int64_t now) {
        *bk = (StoreBooking) { 0 };
        snprintf(bk->vm_id, sizeof bk->vm_id, "vm%06u", k);
        snprintf(bk->user, sizeof bk->user, "u%06u", (k - 1) % arg_users + 1);
        if (k <= arg_expired) {
                bk->expires_at = now - 3600000 + (int64_t) k * 3600000 / (arg_expired + 1);
                bk->started_at = bk->expires_at - 3600000;
        } else {
                bk->started_at = now - 60000;
                bk->expires_at = now + 3600000 +
                                 (int64_t) (k - arg_expired) * 99 * 3600000 /
                                 (arg_bookings - arg_expired + 1);
        }
}

static int bookings_batch(void *item, StoreTxn *t) {
        Batch *b = item;
        StoreBooking bk;
        int r;

        for (unsigned k = b->first; k <= b->last; k++) {
                booking_fill(&bk, k, b->now);
                r = store_booking_put(t, &bk);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Event k of the feed, packed as vmmd's events.c packs it: booking.created
 * of booking k while there are bookings, then vm.updated of the VMs in turn. */
static int event_pack(msgpack_sbuffer *sb, unsigned k, unsigned vms, int64_t now,
                      StoreBooking *ret_booking) {
        msgpack_packer pk;
        char vm_id[VMM_VM_ID_MAX + 1];

        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        if (k <= arg_bookings) {
                booking_fill(ret_booking, k, now);
                return msgpack_pack_map(&pk, 5) || mp_kv_str(&pk, "type", "booking.created") ||
                       mp_kv_i64(&pk, "time", ret_booking->started_at) ||
                       mp_kv_str(&pk, "vm_id", ret_booking->vm_id) ||
                       mp_kv_str(&pk, "user", ret_booking->user) ||
                       mp_kv_i64(&pk, "expires_at", ret_booking->expires_at) ? -ENOMEM : 1;
        }
        snprintf(vm_id, sizeof vm_id, "vm%06u", (k - arg_bookings - 1) % vms + 1);
        return msgpack_pack_map(&pk, 3) || mp_kv_str(&pk, "type", "vm.updated") ||
               mp_kv_i64(&pk, "time", now) || mp_kv_str(&pk, "vm_id", vm_id) ? -ENOMEM : 0;
}

static int feed_batch(void *item, StoreTxn *t) {
        Batch *b = item;
        msgpack_sbuffer sb;
        StoreBooking bk;
        uint64_t pos;
        int r = 0;

        msgpack_sbuffer_init(&sb);
        for (unsigned k = b->first; r >= 0 && k <= b->last; k++) {
                msgpack_sbuffer_clear(&sb);
                int booking = event_pack(&sb, k, b->vms, b->now, &bk);
                r = booking;
                if (r >= 0)
                        r = store_feed_append(t, sb.data, sb.size, &pos);
                if (r >= 0 && booking) {
                        StoreHistory h = { .feed = pos, .time = bk.started_at,
                                           .action = STORE_HISTORY_BOOK,
                                           .expires_at = bk.expires_at };
                        snprintf(h.vm_id, sizeof h.vm_id, "%s", bk.vm_id);
                        snprintf(h.user, sizeof h.user, "%s", bk.user);
                        r = store_history_add(t, &h);
                }
        }
        msgpack_sbuffer_destroy(&sb);
        return r;
}

/* Runs f over [1, count] in transactions of arg_batch, one durable commit
 * each; what: for the error message. */
static int write_all(Store *s, unsigned count, StoreBatchFunc f, const Batch *proto,
                     const char *what) {
        for (unsigned first = 1; first <= count; ) {
                unsigned last = count - first + 1 > arg_batch ? first + arg_batch - 1 : count;
                Batch item = *proto;
                item.first = first;
                item.last = last;
                void *items[1] = { &item };
                int result = 0;
                /* one durable commit per batch; the store grows the map itself */
                int r = store_write_batch(s, items, 1, f, &result);
                if (r >= 0)
                        r = result;
                if (r < 0) {
                        fprintf(stderr, "vmm-load: writing %s %u..%u failed: %s\n", what, first,
                                last, strerror(-r));
                        return r;
                }
                first = last + 1;
        }
        return 0;
}

static void help(void) {
        printf("Usage: vmm-load [OPTIONS] STATE_DIR COUNT\n\n"
               "Writes COUNT described VMs vm000001.. (two disks each, all with the same\n"
               "password) into the vmmd database in STATE_DIR, for benchmarks. Run it while\n"
               "no vmmd uses STATE_DIR.\n\n"
               "Options:\n"
               "  --password PW        the password of every VM and user (default %s)\n"
               "  --batch N            records per transaction (default %u)\n"
               "  --users N            users u000001..uN, role user\n"
               "  --bookings N         bookings of vm000001..vmN, held by the users in turn\n"
               "                       (needs --users; at most COUNT)\n"
               "  --expired N          the first N bookings ended during the last hour (vmmd\n"
               "                       ends them at start); the others end 1-100 hours ahead\n"
               "  --feed N             N feed events: booking.created of each booking (with\n"
               "                       its history entry), then vm.updated of the VMs in turn\n"
               "  --event-history N    feed events the store keeps (default %d, as vmmd's)\n"
               "  -h, --help           show this help\n",
               DEFAULT_PASSWORD, DEFAULT_BATCH, VMM_EVENT_HISTORY);
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || *s == '-' || v < min || v > max)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

int main(int argc, char *argv[]) {
        static const struct option options[] = {
                { "password",      required_argument, NULL, 'p' },
                { "batch",         required_argument, NULL, 'b' },
                { "users",         required_argument, NULL, 'u' },
                { "bookings",      required_argument, NULL, 'k' },
                { "expired",       required_argument, NULL, 'x' },
                { "feed",          required_argument, NULL, 'f' },
                { "event-history", required_argument, NULL, 'e' },
                { "help",          no_argument,       NULL, 'h' },
                { NULL, 0, NULL, 0 }
        };
        static const struct { int opt; const char *name; unsigned min, max; unsigned *v; }
        numbers[] = {
                { 'b', "--batch",         1, 1000000,   &arg_batch },
                { 'u', "--users",         0, COUNT_MAX, &arg_users },
                { 'k', "--bookings",      0, COUNT_MAX, &arg_bookings },
                { 'x', "--expired",       0, COUNT_MAX, &arg_expired },
                { 'f', "--feed",          0, COUNT_MAX, &arg_feed },
                { 'e', "--event-history", 1, 100000000, &arg_event_history },
        };
        char pwhash[SECRET_PWHASH_MAX];
        char err[512] = "";
        Store *s = NULL;
        unsigned count;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                bool number = false;
                for (size_t i = 0; i < ELEMENTSOF(numbers); i++)
                        if (c == numbers[i].opt) {
                                number = true;
                                if (parse_uint(optarg, numbers[i].min, numbers[i].max,
                                               numbers[i].v) < 0) {
                                        fprintf(stderr, "vmm-load: bad %s '%s'\n",
                                                numbers[i].name, optarg);
                                        return EXIT_FAILURE;
                                }
                        }
                if (number)
                        continue;
                switch (c) {
                case 'p':
                        arg_password = optarg;
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
        if (parse_uint(argv[optind + 1], 1, COUNT_MAX, &count) < 0) {
                fprintf(stderr, "vmm-load: bad COUNT '%s'\n", argv[optind + 1]);
                return EXIT_FAILURE;
        }
        if (arg_bookings > count || (arg_bookings > 0 && arg_users == 0) ||
            arg_expired > arg_bookings) {
                fprintf(stderr, "vmm-load: --bookings needs --users and at most COUNT VMs; "
                        "--expired at most --bookings\n");
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

        StoreOptions so = { .dir = argv[optind], .event_history = arg_event_history };
        r = store_open(&so, &s, NULL, err, sizeof err);
        if (r < 0) {
                fprintf(stderr, "vmm-load: cannot open the database in %s: %s\n", argv[optind],
                        err[0] ? err : strerror(-r));
                return EXIT_FAILURE;
        }

        Batch proto = { .pwhash = pwhash, .now = now_ms(), .vms = count };
        t0 = mono_s();
        r = write_all(s, count, load_batch, &proto, "VMs");
        double load_s = mono_s() - t0;
        if (r >= 0)
                r = write_all(s, arg_users, users_batch, &proto, "users");
        if (r >= 0)
                r = write_all(s, arg_bookings, bookings_batch, &proto, "bookings");
        if (r >= 0)
                r = write_all(s, arg_feed, feed_batch, &proto, "feed events");
        double all_s = mono_s() - t0;

        StoreTxn *t = NULL;
        StoreStats st = { 0 };
        if (r >= 0)
                r = store_read_begin(s, &t);
        if (r >= 0) {
                r = store_stats(t, &st);
                store_read_end(t);
                if (r < 0)
                        fprintf(stderr, "vmm-load: reading the statistics failed: %s\n",
                                strerror(-r));
        }
        store_close(s);
        if (r < 0)
                return EXIT_FAILURE;
        printf("loaded %u VMs in %.2f s (%.0f VMs/s); database: %" PRIu64 " VMs, %" PRIu64
               " disks, %.1f MiB; argon2id hash %.1f ms\n",
               count, load_s, count / (load_s > 0 ? load_s : 1e-9), st.vms, st.disks,
               (double) st.size_bytes / 1048576.0, hash_s * 1000.0);
        if (arg_users || arg_bookings || arg_feed)
                printf("and %" PRIu64 " users, %" PRIu64 " bookings (%u ended), feed %" PRIu64
                       "..%" PRIu64 ", in %.2f s in all\n", st.users, st.bookings, arg_expired,
                       st.feed_oldest, st.feed_last, all_s);
        return EXIT_SUCCESS;
}
