/* SPDX-License-Identifier: MIT */
/* The booking history's indexes (by user, by VM) against a real LMDB file:
 * walks newest first with a `before` bound, names that are prefixes of
 * others, vmmd-check's view of a damaged index, and the upgrade of a schema-2
 * file, whose indexes were DUPSORT tables, written here behind the store's
 * back (the test alone includes <lmdb.h>). */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/macro.h"
#include "store/store.h"
#include "store/store-internal.h"

typedef struct Fixture {
        char dir[64];
        char state[128];
        char path[192];
        Store *store;
} Fixture;

/* entries: feed i + 1 is entries[i]; "al" and "vm-a" are prefixes of others */
static const struct {
        const char *user, *vm_id;
} entries[] = {
        { "alice", "vm-a" }, { "al", "vm-ab" }, { "alice", "vm-ab" }, { "bob", "vm-a" },
        { "al", "vm-a" },    { "alice", "vm-a" }, { "al", "vm-ab" },  { "alx", "vm-b" },
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path);
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-history-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->state, sizeof(f->state), "%s/state", f->dir);
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;

        f->store = store_close(f->store);
        assert_int_equal(nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
        free(f);
        return 0;
}

static Store *open_store(Fixture *f, bool read_only, unsigned *ret_upgraded) {
        StoreOptions o = { .dir = f->state, .read_only = read_only };
        char err[256] = "";
        int r;

        f->store = store_close(f->store);
        r = store_open(&o, &f->store, ret_upgraded, err, sizeof(err));
        if (r < 0)
                fail_msg("store_open: %d %s", r, err);
        snprintf(f->path, sizeof(f->path), "%s", store_path(f->store));
        return f->store;
}

static void populate(Store *s) {
        StoreTxn *t;

        assert_int_equal(store_write_begin(s, &t), 0);
        for (size_t i = 0; i < ELEMENTSOF(entries); i++) {
                StoreHistory h = { .feed = i + 1, .time = 1000 + (int64_t) i,
                                   .action = STORE_HISTORY_BOOK, .expires_at = -1 };
                strcpy(h.user, entries[i].user);
                strcpy(h.vm_id, entries[i].vm_id);
                assert_int_equal(store_history_add(t, &h), 0);
        }
        assert_int_equal(store_commit(t), 0);
}

typedef struct Seen {
        uint64_t feed[16];
        size_t n;
} Seen;

static int seen_add(void *userdata, const StoreHistory *h) {
        Seen *s = userdata;

        assert_true(s->n < ELEMENTSOF(s->feed));
        assert_int_equal(h->time, 1000 + (int64_t) h->feed - 1);
        s->feed[s->n++] = h->feed;
        return 0;
}

/* The feed positions, newest first, store_history_foreach gives. */
static void walk(Store *s, const char *user, const char *vm_id, uint64_t before, Seen *ret) {
        StoreTxn *t;

        memset(ret, 0, sizeof(*ret));
        assert_int_equal(store_read_begin(s, &t), 0);
        assert_int_equal(store_history_foreach(t, user, vm_id, before, seen_add, ret), 0);
        store_read_end(t);
}

/* The same, worked out from entries[]. */
static void expect(const char *user, const char *vm_id, uint64_t before, Seen *ret) {
        memset(ret, 0, sizeof(*ret));
        for (size_t i = ELEMENTSOF(entries); i-- > 0;) {
                if (before && i + 1 >= before)
                        continue;
                if ((user && strcmp(user, entries[i].user) != 0) ||
                    (vm_id && strcmp(vm_id, entries[i].vm_id) != 0))
                        continue;
                ret->feed[ret->n++] = i + 1;
        }
}

static void check_every_walk(Store *s) {
        static const char *const users[] = { NULL, "al", "alice", "alx", "bob", "nobody", "a" };
        static const char *const vms[] = { NULL, "vm-a", "vm-ab", "vm-b", "vm-" };

        for (size_t u = 0; u < ELEMENTSOF(users); u++)
                for (size_t v = 0; v < ELEMENTSOF(vms); v++)
                        for (uint64_t before = 0; before <= ELEMENTSOF(entries) + 2; before++) {
                                Seen got, want;

                                walk(s, users[u], vms[v], before, &got);
                                expect(users[u], vms[v], before, &want);
                                if (got.n != want.n ||
                                    memcmp(got.feed, want.feed, got.n * sizeof(uint64_t)) != 0)
                                        fail_msg("user %s vm %s before %" PRIu64 ": %zu entries, "
                                                 "want %zu", users[u] ? users[u] : "-",
                                                 vms[v] ? vms[v] : "-", before, got.n, want.n);
                        }
}

static void test_walks(void **state) {
        Fixture *f = *state;
        Store *s = open_store(f, false, NULL);
        StoreVerifyStats st;
        char err[1024] = "";

        populate(s);
        check_every_walk(s);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), 0);
        assert_int_equal(st.history, ELEMENTSOF(entries));
}

/* Raw access to the closed file. */
static void raw_begin(Fixture *f, MDB_env **env, MDB_txn **txn) {
        f->store = store_close(f->store);
        assert_int_equal(mdb_env_create(env), 0);
        assert_int_equal(mdb_env_set_maxdbs(*env, 64), 0);
        assert_int_equal(mdb_env_open(*env, f->path, MDB_NOSUBDIR, 0600), 0);
        assert_int_equal(mdb_txn_begin(*env, NULL, 0, txn), 0);
}

static void raw_end(MDB_env *env, MDB_txn *txn) {
        assert_int_equal(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
}

static MDB_val index_key(uint8_t buf[STORE_HISTORY_KEY_MAX], const char *name, uint64_t feed) {
        size_t n = strlen(name);

        memcpy(buf, name, n);
        buf[n] = 0;
        put_be64(buf + n + 1, feed);
        return (MDB_val) { .mv_size = n + 9, .mv_data = buf };
}

static void verify_finds(Fixture *f, const char *what) {
        StoreVerifyStats st;
        char err[2048] = "";
        Store *s = open_store(f, true, NULL);

        assert_int_equal(store_verify(s, err, sizeof(err), &st), -EBADMSG);
        if (!strstr(err, what))
                fail_msg("expected \"%s\" in:\n%s", what, err);
}

static void test_verify_missing_entry(void **state) {
        Fixture *f = *state;
        uint8_t kb[STORE_HISTORY_KEY_MAX];
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        MDB_val k;

        populate(open_store(f, false, NULL));
        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "history_by_vm", 0, &dbi), 0);
        k = index_key(kb, "vm-ab", 3);
        assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
        raw_end(env, txn);
        verify_finds(f, "history 3: not in its user or VM index");
}

static void test_verify_misfiled_entry(void **state) {
        Fixture *f = *state;
        uint8_t kb[STORE_HISTORY_KEY_MAX];
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        MDB_val k, empty = { 0, (void *) "" };

        populate(open_store(f, false, NULL));
        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "history_by_user", 0, &dbi), 0);
        k = index_key(kb, "al", 1);     /* entry 1 is alice's */
        assert_int_equal(mdb_put(txn, dbi, &k, &empty, 0), 0);
        raw_end(env, txn);
        verify_finds(f, "history index: entry 1 is under al, its record names alice");
}

/* Rewrites the file as schema 2 wrote it: DUPSORT indexes name -> feed. */
static void make_schema_2(Fixture *f) {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi meta, byu, byv, oldu, oldv;
        MDB_val k = { strlen("schema_version"), (void *) "schema_version" };
        uint8_t two[4] = { 0, 0, 0, 2 };
        MDB_val v = { sizeof(two), two };

        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
        assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
        assert_int_equal(mdb_dbi_open(txn, "history_by_user", 0, &byu), 0);
        assert_int_equal(mdb_dbi_open(txn, "history_by_vm", 0, &byv), 0);
        assert_int_equal(mdb_drop(txn, byu, 1), 0);
        assert_int_equal(mdb_drop(txn, byv, 1), 0);
        assert_int_equal(mdb_dbi_open(txn, "history_user", MDB_CREATE | MDB_DUPSORT, &oldu), 0);
        assert_int_equal(mdb_dbi_open(txn, "history_vm", MDB_CREATE | MDB_DUPSORT, &oldv), 0);
        for (size_t i = 0; i < ELEMENTSOF(entries); i++) {
                uint8_t fb[8];
                MDB_val fv = { 8, fb }, uk = { strlen(entries[i].user), (void *) entries[i].user };
                MDB_val vk = { strlen(entries[i].vm_id), (void *) entries[i].vm_id };

                put_be64(fb, i + 1);
                assert_int_equal(mdb_put(txn, oldu, &uk, &fv, 0), 0);
                assert_int_equal(mdb_put(txn, oldv, &vk, &fv, 0), 0);
        }
        raw_end(env, txn);
}

static void test_upgrade_from_2(void **state) {
        Fixture *f = *state;
        StoreVerifyStats st;
        char err[1024] = "";
        unsigned upgraded = 0;
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        Store *s;

        populate(open_store(f, false, NULL));
        make_schema_2(f);

        /* read as it is (vmmd-check): schema 2, consistent, nothing written */
        s = open_store(f, true, &upgraded);
        assert_int_equal(upgraded, 0);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), 0);
        assert_int_equal(st.schema_version, 2);
        assert_int_equal(st.history, ELEMENTSOF(entries));
        check_every_walk(s);

        s = open_store(f, false, &upgraded);
        assert_int_equal(upgraded, 2);
        check_every_walk(s);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), 0);
        assert_int_equal(st.schema_version, STORE_SCHEMA_VERSION);

        /* the old tables are gone */
        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "history_user", 0, &dbi), MDB_NOTFOUND);
        assert_int_equal(mdb_dbi_open(txn, "history_vm", 0, &dbi), MDB_NOTFOUND);
        raw_end(env, txn);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_walks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_verify_missing_entry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_verify_misfiled_entry, setup, teardown),
                cmocka_unit_test_setup_teardown(test_upgrade_from_2, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
