/* SPDX-License-Identifier: MIT */
/* The booking history's chains (by user, by VM; schema 4) against a real
 * LMDB file: walks newest first from every `before` bound, chains long
 * enough for skips of 1 to 16 entries, names that are prefixes of others,
 * vmmd-check's view of damaged links and heads, and the upgrade of files of
 * schema 2 (DUPSORT indexes) and 3 (indexes keyed name NUL feed), written
 * here behind the store's back (the test alone includes <lmdb.h>). */
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

/* entries: feed i + 1 is entries[i]; "al" and "vm-a" are prefixes of
 * others; after the first 8, alice and vm-a get long chains (make_entries) */
#define N_ENTRIES 48            /* the usual count; n_entries is the current one */
#define MAX_ENTRIES 3000        /* test_upgrade_grows_the_map */
#define N_ENTRIES_S "48"
#define N_LESS_S "47"
static const struct {
        const char *user, *vm_id;
} first[] = {
        { "alice", "vm-a" }, { "al", "vm-ab" }, { "alice", "vm-ab" }, { "bob", "vm-a" },
        { "al", "vm-a" },    { "alice", "vm-a" }, { "al", "vm-ab" },  { "alx", "vm-b" },
};
static struct {
        const char *user, *vm_id;
} entries[MAX_ENTRIES];
static size_t n_entries = N_ENTRIES;

static void make_entries(size_t n) {
        n_entries = n;
        for (size_t i = 0; i < n; i++)
                if (i < ELEMENTSOF(first)) {
                        entries[i].user = first[i].user;
                        entries[i].vm_id = first[i].vm_id;
                } else {
                        entries[i].user = i % 4 == 0 ? "al" : "alice";
                        entries[i].vm_id = i % 3 == 0 ? "vm-ab" : "vm-a";
                }
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path);
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-history-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        make_entries(N_ENTRIES);
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

/* In batches; a batch that finds the map full is tried again in a larger
 * one (as vmmd's writer does). */
static void populate(Store *s) {
        for (size_t from = 0; from < n_entries;) {
                size_t to = MIN(from + 256, n_entries);
                StoreTxn *t;
                int r = 0;

                assert_int_equal(store_write_begin(s, &t), 0);
                for (size_t i = from; r == 0 && i < to; i++) {
                        StoreHistory h = { .feed = i + 1, .time = 1000 + (int64_t) i,
                                           .action = STORE_HISTORY_BOOK, .expires_at = -1 };
                        strcpy(h.user, entries[i].user);
                        strcpy(h.vm_id, entries[i].vm_id);
                        r = store_history_add(t, &h);
                }
                if (r == 0)
                        r = store_commit(t);
                else
                        store_abort(t);
                if (r == -ENOSPC) {
                        assert_int_equal(store_grow(s), 0);
                        continue;
                }
                assert_int_equal(r, 0);
                from = to;
        }
}

typedef struct Seen {
        uint64_t feed[MAX_ENTRIES];
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
        for (size_t i = n_entries; i-- > 0;) {
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
                        for (uint64_t before = 0; before <= n_entries + 2;
                             before += n_entries > 100 ? 97 : 1) {
                                static Seen got, want;

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
        assert_int_equal(st.history, N_ENTRIES);
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

/* Rewrites one big-endian word of the links of the entry at feed. */
static void poke_link(Fixture *f, uint64_t feed, size_t word, uint64_t value) {
        uint8_t kb[8], lb[STORE_HISTORY_LINKS_BYTES + 512];
        MDB_val k = { 8, kb }, v;
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;

        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "history", 0, &dbi), 0);
        put_be64(kb, feed);
        assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
        assert_true(v.mv_size > STORE_HISTORY_LINKS_BYTES && v.mv_size <= sizeof(lb));
        memcpy(lb, v.mv_data, v.mv_size);
        put_be64(lb + 8 * word, value);
        v.mv_data = lb;
        assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
        raw_end(env, txn);
}

static void test_verify_malformed_links(void **state) {
        Fixture *f = *state;

        populate(open_store(f, false, NULL));
        poke_link(f, 3, 0, 0);          /* the user chain's position 0 */
        verify_finds(f, "history 3: links missing or malformed");
}

static void test_verify_misfiled_link(void **state) {
        Fixture *f = *state;

        populate(open_store(f, false, NULL));
        /* entry 7 is al's, its user chain's previous entry is 5: make it 1,
         * which is alice's (word 1: the user chain's prev) */
        poke_link(f, 7, 1, 1);
        verify_finds(f, "history 7: its user chain of al leads to 1, an entry of alice");
}

static void test_verify_wrong_position(void **state) {
        Fixture *f = *state;

        populate(open_store(f, false, NULL));
        /* entry 6 is vm-a's fourth (after 1, 4, 5): its VM chain position
         * (word 3) made 7, which must have a skip link */
        poke_link(f, 6, 3, 7);
        verify_finds(f, "history 6: links missing or malformed");
        /* made 8, which has none: its previous entry is then out of place,
         * and so is the entry after it */
        poke_link(f, 6, 3, 8);
        verify_finds(f, "history 6: its VM chain of vm-a expects 5 at position 7, which is at 3");
        verify_finds(f, "history 9: its VM chain of vm-a expects 6 at position 4, which is at 8");
}

static void test_verify_heads(void **state) {
        Fixture *f = *state;
        uint8_t hb[STORE_HISTORY_HEAD_BYTES];
        MDB_val k = { 4, (void *) "ubob" }, v = { sizeof(hb), hb };
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;

        populate(open_store(f, false, NULL));
        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "history_heads", 0, &dbi), 0);
        assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);      /* bob: entry 4 */
        raw_end(env, txn);
        verify_finds(f, "the user chains hold " N_LESS_S " of " N_ENTRIES_S " entries");

        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "history_heads", 0, &dbi), 0);
        put_be64(hb, 8);        /* alx's entry */
        put_be64(hb + 8, 1);
        assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
        raw_end(env, txn);
        verify_finds(f, "the user head of bob leads to 8, an entry of alx");
}

/* Rewrites the file as an older schema wrote it: schema 2 (DUPSORT indexes
 * name -> feed) or 3 (plain tables keyed name NUL feed). */
static void make_schema(Fixture *f, uint8_t version) {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi meta, dbi, hist, oldu, oldv;
        MDB_val k = { strlen("schema_version"), (void *) "schema_version" };
        uint8_t vb[4] = { 0, 0, 0, version };
        MDB_val v = { sizeof(vb), vb }, empty = { 0, (void *) "" };

        raw_begin(f, &env, &txn);
        assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
        assert_int_equal(mdb_put(txn, meta, &k, &v, 0), 0);
        assert_int_equal(mdb_dbi_open(txn, "history_heads", 0, &dbi), 0);
        assert_int_equal(mdb_drop(txn, dbi, 1), 0);
        /* the records without their links in front */
        assert_int_equal(mdb_dbi_open(txn, "history", 0, &hist), 0);
        for (size_t i = 0; i < n_entries; i++) {
                uint8_t fb[8], rb[512];
                MDB_val fk = { 8, fb }, rv;

                put_be64(fb, i + 1);
                assert_int_equal(mdb_get(txn, hist, &fk, &rv), 0);
                assert_true(rv.mv_size > STORE_HISTORY_LINKS_BYTES &&
                            rv.mv_size - STORE_HISTORY_LINKS_BYTES <= sizeof(rb));
                memcpy(rb, (uint8_t *) rv.mv_data + STORE_HISTORY_LINKS_BYTES,
                       rv.mv_size - STORE_HISTORY_LINKS_BYTES);
                rv = (MDB_val) { rv.mv_size - STORE_HISTORY_LINKS_BYTES, rb };
                assert_int_equal(mdb_put(txn, hist, &fk, &rv, 0), 0);
        }
        if (version == 2) {
                assert_int_equal(mdb_dbi_open(txn, "history_user", MDB_CREATE | MDB_DUPSORT,
                                              &oldu), 0);
                assert_int_equal(mdb_dbi_open(txn, "history_vm", MDB_CREATE | MDB_DUPSORT, &oldv),
                                 0);
        } else {
                assert_int_equal(mdb_dbi_open(txn, "history_by_user", MDB_CREATE, &oldu), 0);
                assert_int_equal(mdb_dbi_open(txn, "history_by_vm", MDB_CREATE, &oldv), 0);
        }
        for (size_t i = 0; i < n_entries; i++) {
                uint8_t fb[8], ib[STORE_HISTORY_KEY_MAX];
                MDB_val fv = { 8, fb }, uk = { strlen(entries[i].user), (void *) entries[i].user };
                MDB_val vk = { strlen(entries[i].vm_id), (void *) entries[i].vm_id };

                put_be64(fb, i + 1);
                if (version == 2) {
                        assert_int_equal(mdb_put(txn, oldu, &uk, &fv, 0), 0);
                        assert_int_equal(mdb_put(txn, oldv, &vk, &fv, 0), 0);
                        continue;
                }
                k = index_key(ib, entries[i].user, i + 1);
                assert_int_equal(mdb_put(txn, oldu, &k, &empty, 0), 0);
                k = index_key(ib, entries[i].vm_id, i + 1);
                assert_int_equal(mdb_put(txn, oldv, &k, &empty, 0), 0);
        }
        raw_end(env, txn);
}

static void upgrade_from(Fixture *f, unsigned version) {
        static const char *const old[][2] = { { "history_user", "history_vm" },
                                              { "history_by_user", "history_by_vm" } };
        StoreVerifyStats st;
        char err[1024] = "";
        unsigned upgraded = 0;
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        Store *s;

        populate(open_store(f, false, NULL));
        make_schema(f, (uint8_t) version);

        /* read as it is (vmmd-check): consistent, nothing written */
        s = open_store(f, true, &upgraded);
        assert_int_equal(upgraded, 0);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), 0);
        assert_int_equal(st.schema_version, version);
        assert_int_equal(st.history, n_entries);
        check_every_walk(s);

        s = open_store(f, false, &upgraded);
        assert_int_equal(upgraded, version);
        check_every_walk(s);
        if (store_verify(s, err, sizeof(err), &st) != 0)
                fail_msg("after the upgrade: %s", err);
        assert_int_equal(st.schema_version, STORE_SCHEMA_VERSION);

        /* the old tables are gone */
        raw_begin(f, &env, &txn);
        for (size_t i = 0; i < 2; i++)
                assert_int_equal(mdb_dbi_open(txn, old[version - 2][i], 0, &dbi), MDB_NOTFOUND);
        raw_end(env, txn);
}

/* Copies the file compacted, in an environment whose map is just the
 * file's data: the copy records that map size. */
static void compact(Fixture *f) {
        char copy[256];
        MDB_env *env;

        snprintf(copy, sizeof(copy), "%s.compact", f->path);
        assert_int_equal(mdb_env_create(&env), 0);
        assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
        assert_int_equal(mdb_env_set_mapsize(env, 4096), 0);    /* raised to the data */
        assert_int_equal(mdb_env_open(env, f->path, MDB_NOSUBDIR | MDB_RDONLY, 0600), 0);
        assert_int_equal(mdb_env_copy2(env, copy, MDB_CP_COMPACT), 0);
        mdb_env_close(env);
        assert_int_equal(rename(copy, f->path), 0);
}

/* Leaves the file without free pages and with a map exactly its data,
 * recorded in the file (LMDB never records a smaller map than before, but
 * a compacted copy records its source's): any upgrade needs more. Its
 * size. */
static uint64_t make_map_tight(Fixture *f) {
        MDB_env *env;
        MDB_envinfo info;

        f->store = store_close(f->store);
        compact(f);     /* no free pages, the map of the data before */
        compact(f);     /* and the map of this data */
        assert_int_equal(mdb_env_create(&env), 0);
        assert_int_equal(mdb_env_set_maxdbs(env, 64), 0);
        assert_int_equal(mdb_env_open(env, f->path, MDB_NOSUBDIR | MDB_RDONLY, 0600), 0);
        assert_int_equal(mdb_env_info(env, &info), 0);
        mdb_env_close(env);
        assert_true(info.me_mapsize <= (info.me_last_pgno + 1) * 4096);
        return info.me_mapsize;
}

/* A history too large for the map the file records: the upgrade is tried
 * again in a larger map, and nothing is lost. */
static void test_upgrade_grows_the_map(void **state) {
        Fixture *f = *state;
        StoreOptions o = { .dir = f->state, .map_size_initial = 1 };   /* the smallest */
        StoreVerifyStats st;
        StoreStats stats;
        StoreTxn *t;
        char err[1024] = "";
        unsigned upgraded = 0;
        uint64_t tight;

        make_entries(MAX_ENTRIES);
        populate(open_store(f, false, NULL));
        check_every_walk(f->store);
        make_schema(f, 3);
        tight = make_map_tight(f);

        if (store_open(&o, &f->store, &upgraded, err, sizeof(err)) != 0)
                fail_msg("store_open: %s", err);
        assert_int_equal(upgraded, 3);
        assert_int_equal(store_read_begin(f->store, &t), 0);
        assert_int_equal(store_stats(t, &stats), 0);
        store_read_end(t);
        if (stats.map_size_bytes <= tight)
                fail_msg("the map stayed at %" PRIu64 " bytes", stats.map_size_bytes);
        check_every_walk(f->store);
        if (store_verify(f->store, err, sizeof(err), &st) != 0)
                fail_msg("after the upgrade: %s", err);
        assert_int_equal(st.history, MAX_ENTRIES);
}

static void test_upgrade_from_2(void **state) {
        upgrade_from(*state, 2);
}

static void test_upgrade_from_3(void **state) {
        upgrade_from(*state, 3);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_walks, setup, teardown),
                cmocka_unit_test_setup_teardown(test_verify_malformed_links, setup, teardown),
                cmocka_unit_test_setup_teardown(test_verify_misfiled_link, setup, teardown),
                cmocka_unit_test_setup_teardown(test_verify_wrong_position, setup, teardown),
                cmocka_unit_test_setup_teardown(test_verify_heads, setup, teardown),
                cmocka_unit_test_setup_teardown(test_upgrade_from_2, setup, teardown),
                cmocka_unit_test_setup_teardown(test_upgrade_from_3, setup, teardown),
                cmocka_unit_test_setup_teardown(test_upgrade_grows_the_map, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
