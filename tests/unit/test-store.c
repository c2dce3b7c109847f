/* SPDX-License-Identifier: MIT */
/* The store against a real LMDB environment in a temporary directory. The
 * test alone may include <lmdb.h>, to damage or grow the file from outside. */
#include <errno.h>
#include <ftw.h>
#include <lmdb.h>
#include <pthread.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "shared/macro.h"
#include "store/store.h"
#include "store/store-internal.h"


/* The sessions of one VM, at most max (then -E2BIG), by hash order. */
typedef struct SessionArray {
        StoreSession *s;
        size_t n, max;
} SessionArray;

static int session_array_add(void *userdata, const StoreSession *s) {
        SessionArray *a = userdata;
        if (a->n == a->max)
                return -E2BIG;
        a->s[a->n++] = *s;
        return 0;
}

static int vm_sessions(StoreTxn *t, const char *vm_id, StoreSession *ret, size_t max,
                       size_t *ret_n) {
        SessionArray a = { ret, 0, max };
        int r = store_owner_session_foreach(t, vm_id, NULL, session_array_add, &a);
        *ret_n = a.n;
        return r;
}

static char *arg_self;   /* this program, for test_map_resized_elsewhere */

typedef struct Fixture {
        char dir[64];        /* the temporary directory */
        char state[128];     /* the state directory inside it */
        Store *store;
} Fixture;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        return remove(path);
}

static int fixture_setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));

        assert_non_null(f);
        strcpy(f->dir, "/tmp/test-store-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        snprintf(f->state, sizeof(f->state), "%s/a/b/state", f->dir);
        *state = f;
        return 0;
}

static int fixture_teardown(void **state) {
        Fixture *f = *state;

        f->store = store_close(f->store);
        assert_int_equal(nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
        free(f);
        return 0;
}

static int open_with(Fixture *f, uint64_t initial, uint64_t max, char *errbuf, size_t errlen) {
        StoreOptions o = {
                .dir = f->state,
                .map_size_initial = initial,
                .map_size_max = max,
        };

        return store_open(&o, &f->store, NULL, errbuf, errlen);
}

static Store *open_default(Fixture *f) {
        char err[256] = "";
        int r = open_with(f, 0, 0, err, sizeof(err));

        if (r < 0)
                fail_msg("store_open: %d %s", r, err);
        return f->store;
}

static void reopen(Fixture *f) {
        f->store = store_close(f->store);
        open_default(f);
}

static void vm_make(StoreVm *vm, const char *vm_id, unsigned n, const char *const *ids) {
        memset(vm, 0, sizeof(*vm));
        strcpy(vm->vm_id, vm_id);
        strcpy(vm->pwhash, "$argon2id$test");
        vm->described = true;
        vm->ram = 1024;
        vm->cpu = 2;
        vm->registered_at = 1000;
        vm->updated_at = 2000;
        vm->last_seen_at = -1;
        vm->n_disks = n;
        for (unsigned i = 0; i < n; i++) {
                strcpy(vm->disks[i].id, ids && ids[i] ? ids[i] : "");
                vm->disks[i].size = 10 + i;
        }
}

/* One VM in its own durable transaction. */
static int put_vm(Store *s, StoreVm *vm) {
        StoreTxn *t;
        int r;

        r = store_write_begin(s, &t);
        if (r < 0)
                return r;
        r = store_vm_put(t, vm, NULL);
        if (r < 0) {
                store_abort(t);
                return r;
        }
        return store_commit(t);
}

/* The same as the writer thread does it: a child txn inside a top-level one;
 * on any failure both are aborted. */
static int put_vm_nested(Store *s, StoreVm *vm) {
        StoreTxn *top, *child;
        int r;

        r = store_write_begin(s, &top);
        if (r < 0)
                return r;
        r = store_child_begin(top, &child);
        if (r < 0) {
                store_abort(top);
                return r;
        }
        r = store_vm_put(child, vm, NULL);
        if (r < 0) {
                store_abort(child);
                store_abort(top);
                return r;
        }
        r = store_commit(child);
        if (r < 0) {
                store_abort(top);
                return r;
        }
        return store_commit(top);
}

static int get_vm(Store *s, const char *vm_id, StoreVm *ret) {
        StoreTxn *t;
        int r;

        assert_int_equal(store_read_begin(s, &t), 0);
        r = store_vm_get(t, vm_id, ret);
        store_read_end(t);
        return r;
}

/* Owner of a disk, "" when absent. */
static const char *disk_owner(Store *s, const char *disk_id, char buf[VMM_VM_ID_MAX + 1],
                              uint64_t *ret_size) {
        StoreTxn *t;
        uint64_t size = 0;
        int r;

        assert_int_equal(store_read_begin(s, &t), 0);
        r = store_disk_get(t, disk_id, buf, &size);
        store_read_end(t);
        if (r == -ENOENT)
                buf[0] = 0;
        else
                assert_int_equal(r, 0);
        if (ret_size)
                *ret_size = size;
        return buf;
}

static void assert_disk_owner(Store *s, const char *disk_id, const char *owner) {
        char buf[VMM_VM_ID_MAX + 1];

        assert_string_equal(disk_owner(s, disk_id, buf, NULL), owner);
}

static void assert_disk_ids(const StoreVm *vm, unsigned n, const char *const *ids) {
        assert_int_equal(vm->n_disks, n);
        for (unsigned i = 0; i < n; i++)
                assert_string_equal(vm->disks[i].id, ids[i]);
}

static StoreStats stats(Store *s) {
        StoreTxn *t;
        StoreStats st;

        assert_int_equal(store_read_begin(s, &t), 0);
        assert_int_equal(store_stats(t, &st), 0);
        store_read_end(t);
        return st;
}

/* ---- collectors for the foreach functions ---- */

typedef struct Collect {
        char items[64][VMM_DISK_ID_MAX + 1];
        char owners[64][VMM_VM_ID_MAX + 1];
        uint8_t hashes[64][STORE_HASH_BYTES];
        size_t n;
        size_t stop_after;   /* return 1 after this many; 0: never */
        int fail_with;       /* return this (< 0) on the first item; 0: never */
} Collect;

static int collect_ret(Collect *c) {
        if (c->fail_with)
                return c->fail_with;
        return c->stop_after && c->n == c->stop_after ? 1 : 0;
}

static int collect_vm(void *userdata, const StoreVm *vm) {
        Collect *c = userdata;

        assert_true(c->n < 64);
        strcpy(c->items[c->n++], vm->vm_id);
        return collect_ret(c);
}

static int collect_disk(void *userdata, const char *disk_id, const char *vm_id, uint64_t size) {
        Collect *c = userdata;

        assert_true(c->n < 64);
        strcpy(c->owners[c->n], vm_id);
        strcpy(c->items[c->n++], disk_id);
        return collect_ret(c);
}

static int collect_session(void *userdata, const StoreSession *s) {
        Collect *c = userdata;

        assert_true(c->n < 64);
        strcpy(c->owners[c->n], s->vm_id);
        memcpy(c->hashes[c->n++], s->hash, STORE_HASH_BYTES);
        return collect_ret(c);
}

static int collect_vm_id(void *userdata, const char *vm_id) {
        Collect *c = userdata;

        assert_true(c->n < 64);
        strcpy(c->items[c->n++], vm_id);
        return collect_ret(c);
}

static void assert_items(const Collect *c, size_t n, const char *const *items) {
        if (c->n != n)
                fail_msg("got %zu items, expected %zu", c->n, n);
        for (size_t i = 0; i < n; i++)
                assert_string_equal(c->items[i], items[i]);
}

static void hash_of(uint8_t ret[STORE_HASH_BYTES], uint8_t b) {
        memset(ret, b, STORE_HASH_BYTES);
}

static StoreSession session_make(uint8_t b, const char *vm_id) {
        StoreSession s = { 0 };

        hash_of(s.hash, b);
        strcpy(s.vm_id, vm_id);
        s.created_at = 100 + b;
        s.expires_at = 1000 + b;
        return s;
}

static void put_sessions(Store *s, const StoreSession *list, size_t n) {
        StoreTxn *t;

        assert_int_equal(store_write_begin(s, &t), 0);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(store_session_put(t, &list[i]), 0);
        assert_int_equal(store_commit(t), 0);
}

/* ---- tests ---- */

static void test_open_create(void **state) {
        Fixture *f = *state;
        struct stat st;
        char path[256];
        uint8_t key[32], zero[32] = { 0 };
        int64_t before = (int64_t) time(NULL) * 1000;
        StoreStats ss;
        Store *s = open_default(f);

        assert_int_equal(stat(f->state, &st), 0);
        assert_true(S_ISDIR(st.st_mode));
        assert_int_equal(st.st_mode & 0777, 0700);
        snprintf(path, sizeof(path), "%s/%s", f->state, STORE_DB_FILE);
        assert_string_equal(store_path(s), path);
        assert_int_equal(stat(path, &st), 0);
        assert_true(S_ISREG(st.st_mode));
        store_hash_key(s, key);
        assert_memory_not_equal(key, zero, sizeof(key));
        assert_true(store_created_at(s) >= before - 1000);
        assert_true(store_created_at(s) <= (int64_t) time(NULL) * 1000 + 1000);

        ss = stats(s);
        assert_int_equal(ss.vms, 0);
        assert_int_equal(ss.disks, 0);
        assert_int_equal(ss.sessions, 0);
        assert_int_equal(ss.map_size_bytes, 16u << 20);
        assert_true(ss.size_bytes > 0 && ss.size_bytes <= ss.map_size_bytes);
}

static void test_reopen_keeps_data(void **state) {
        Fixture *f = *state;
        uint8_t key1[32], key2[32];
        const char *ids[] = { "d1" };
        StoreSession sess = session_make(7, "vm1"), got;
        StoreVm vm, out;
        StoreTxn *t;
        int64_t created;
        Store *s = open_default(f);

        store_hash_key(s, key1);
        created = store_created_at(s);
        vm_make(&vm, "vm1", 1, ids);
        assert_int_equal(put_vm(s, &vm), 0);
        put_sessions(s, &sess, 1);

        reopen(f);
        s = f->store;
        store_hash_key(s, key2);
        assert_memory_equal(key1, key2, sizeof(key1));
        assert_true(store_created_at(s) == created);
        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_string_equal(out.disks[0].id, "d1");
        assert_disk_owner(s, "d1", "vm1");
        assert_int_equal(store_read_begin(s, &t), 0);
        assert_int_equal(store_session_get(t, sess.hash, &got), 0);
        assert_string_equal(got.vm_id, "vm1");
        assert_true(got.expires_at == sess.expires_at);
        store_read_end(t);
}

static void test_newer_schema_refused(void **state) {
        Fixture *f = *state;
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        MDB_val k = { strlen("schema_version"), (void *) "schema_version" };
        uint8_t seven[4] = { 0, 0, 0, 7 };
        MDB_val v = { sizeof(seven), seven };
        char path[256], err[256] = "";
        Store *s = open_default(f);

        snprintf(path, sizeof(path), "%s", store_path(s));
        f->store = store_close(f->store);

        assert_int_equal(mdb_env_create(&env), 0);
        assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
        assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR, 0600), 0);
        assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
        assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
        assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
        assert_int_equal(mdb_txn_commit(txn), 0);
        mdb_env_close(env);

        assert_int_equal(open_with(f, 0, 0, err, sizeof(err)), -EPROTO);
        assert_null(f->store);
        char want[128];
        snprintf(want, sizeof(want), "database schema version 7 is newer than this vmmd supports (%d)",
                 STORE_SCHEMA_VERSION);
        assert_string_equal(err, want);
}

static void test_vm_put_get(void **state) {
        Fixture *f = *state;
        const char *ids[] = { "zz", "aa", "mm" };
        char owner[VMM_VM_ID_MAX + 1];
        uint64_t size;
        StoreVm vm, out;
        Store *s = open_default(f);

        assert_int_equal(get_vm(s, "vm1", &out), -ENOENT);
        assert_int_equal(get_vm(s, "", &out), -ENOENT);
        vm_make(&vm, "vm1", 3, ids);
        vm.ram = 4096;
        assert_int_equal(put_vm(s, &vm), 0);
        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_string_equal(out.vm_id, "vm1");
        assert_string_equal(out.pwhash, "$argon2id$test");
        assert_int_equal(out.ram, 4096);
        assert_true(out.last_seen_at == -1);
        assert_disk_ids(&out, 3, ids);   /* the order given */
        assert_string_equal(disk_owner(s, "mm", owner, &size), "vm1");
        assert_int_equal(size, 12);
        assert_int_equal(stats(s).vms, 1);
        assert_int_equal(stats(s).disks, 3);
}

static void test_vm_replace_disks(void **state) {
        Fixture *f = *state;
        const char *ids1[] = { "d1", "d2" };
        const char *ids2[] = { "d3", "d2" };
        const char *all[] = { "d2", "d3" };
        Collect c = { 0 };
        StoreVm vm, out;
        StoreTxn *t;
        Store *s = open_default(f);

        vm_make(&vm, "vm1", 2, ids1);
        assert_int_equal(put_vm(s, &vm), 0);
        vm_make(&vm, "vm1", 2, ids2);
        vm.disks[1].size = 99;
        assert_int_equal(put_vm(s, &vm), 0);

        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_disk_ids(&out, 2, ids2);
        assert_int_equal(out.disks[1].size, 99);
        assert_disk_owner(s, "d1", "");
        assert_disk_owner(s, "d3", "vm1");
        assert_int_equal(store_read_begin(s, &t), 0);
        assert_int_equal(store_disk_foreach(t, NULL, collect_disk, &c), 0);
        store_read_end(t);
        assert_items(&c, 2, all);
        assert_int_equal(stats(s).disks, 2);

        /* all disks dropped */
        vm_make(&vm, "vm1", 0, NULL);
        assert_int_equal(put_vm(s, &vm), 0);
        assert_int_equal(stats(s).disks, 0);
        assert_disk_owner(s, "d2", "");
}

/* Same disks again (a login, ram or cpu): only the VM record is rewritten,
 * and the result is the same as a full rewrite; a size or order change
 * still goes the full way. */
static void test_vm_put_same_disks(void **state) {
        Fixture *f = *state;
        const char *ids[] = { "d1", "d2" };
        const char *swapped[] = { "d2", "d1" };
        char err[512];
        StoreVm vm, out;
        Store *s = open_default(f);

        vm_make(&vm, "vm1", 2, ids);
        assert_int_equal(put_vm(s, &vm), 0);
        vm.ram = 4096;
        assert_int_equal(put_vm(s, &vm), 0);
        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_int_equal(out.ram, 4096);
        assert_disk_ids(&out, 2, ids);
        assert_disk_owner(s, "d1", "vm1");
        assert_disk_owner(s, "d2", "vm1");
        assert_int_equal(stats(s).disks, 2);

        vm.disks[0].size = 777;         /* a size: the disks table follows */
        assert_int_equal(put_vm(s, &vm), 0);
        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_int_equal(out.disks[0].size, 777);

        vm_make(&vm, "vm1", 2, swapped); /* the order is part of the record */
        assert_int_equal(put_vm(s, &vm), 0);
        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_disk_ids(&out, 2, swapped);
        assert_int_equal(store_verify(s, err, sizeof(err), NULL), 0);
}

static void test_auto_ids(void **state) {
        Fixture *f = *state;
        const char *held[] = { "vm1-disk1" };
        const char *req[] = { NULL, "vm1-disk2", NULL };
        const char *want[] = { "vm1-disk3", "vm1-disk2", "vm1-disk4" };
        const char *want3a[] = { "vm3-disk1", "vm3-disk2" };
        const char *want3b[] = { "vm3-disk1" };
        const char *req3c[] = { NULL, "vm3-disk1" };
        const char *want3c[] = { "vm3-disk2", "vm3-disk1" };
        StoreVm vm, out;
        Store *s = open_default(f);

        /* another VM holds vm1-disk1; vm1-disk2 is given explicitly */
        vm_make(&vm, "vm2", 1, held);
        assert_int_equal(put_vm(s, &vm), 0);
        vm_make(&vm, "vm1", 3, req);
        assert_int_equal(put_vm(s, &vm), 0);
        assert_disk_ids(&vm, 3, want);   /* written back into the argument */
        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_disk_ids(&out, 3, want);
        assert_disk_owner(s, "vm1-disk1", "vm2");
        assert_disk_owner(s, "vm1-disk4", "vm1");

        /* the VM's own previous disks are free */
        vm_make(&vm, "vm3", 2, NULL);
        assert_int_equal(put_vm(s, &vm), 0);
        assert_disk_ids(&vm, 2, want3a);
        vm_make(&vm, "vm3", 1, NULL);
        assert_int_equal(put_vm(s, &vm), 0);
        assert_disk_ids(&vm, 1, want3b);
        assert_disk_owner(s, "vm3-disk2", "");
        /* an explicit id of the request is not free for an automatic one */
        vm_make(&vm, "vm3", 2, req3c);
        assert_int_equal(put_vm(s, &vm), 0);
        assert_disk_ids(&vm, 2, want3c);
        assert_int_equal(get_vm(s, "vm3", &out), 0);
        assert_disk_ids(&out, 2, want3c);
}

static void test_conflict_changes_nothing(void **state) {
        Fixture *f = *state;
        const char *ids1[] = { "shared", "one" };
        const char *ids2[] = { "mine", "shared" };
        const char *other[] = { "shared" };
        const char *dup[] = { "x", "x" };
        StoreVm vm, vm2, out;
        StoreTxn *top, *child;
        Store *s = open_default(f);

        vm_make(&vm, "vm1", 2, ids1);
        assert_int_equal(put_vm(s, &vm), 0);
        vm_make(&vm2, "vm0", 0, NULL);
        assert_int_equal(put_vm(s, &vm2), 0);

        assert_int_equal(store_write_begin(s, &top), 0);
        /* a successful request before the failing one, in the same batch */
        assert_int_equal(store_child_begin(top, &child), 0);
        vm_make(&vm2, "vm0", 1, NULL);
        assert_int_equal(store_vm_put(child, &vm2, NULL), 0);
        assert_int_equal(store_commit(child), 0);

        assert_int_equal(store_child_begin(top, &child), 0);
        vm_make(&vm, "vm2", 2, ids2);
        assert_int_equal(store_vm_put(child, &vm, NULL), -EBUSY);
        assert_string_equal(vm.disks[0].id, "mine");
        store_abort(child);
        /* a replace of vm0 that takes vm1's disk: refused, vm0 unchanged */
        assert_int_equal(store_child_begin(top, &child), 0);
        vm_make(&vm, "vm0", 1, other);
        assert_int_equal(store_vm_put(child, &vm, NULL), -EBUSY);
        store_abort(child);
        assert_int_equal(store_child_begin(top, &child), 0);
        vm_make(&vm, "vm1", 2, dup);
        assert_int_equal(store_vm_put(child, &vm, NULL), -EINVAL);
        store_abort(child);
        assert_int_equal(store_commit(top), 0);

        assert_int_equal(get_vm(s, "vm2", &out), -ENOENT);
        assert_disk_owner(s, "mine", "");
        assert_disk_owner(s, "shared", "vm1");
        assert_disk_owner(s, "one", "vm1");
        assert_disk_owner(s, "vm0-disk1", "vm0");
        assert_int_equal(get_vm(s, "vm1", &out), 0);
        assert_disk_ids(&out, 2, ids1);
        assert_int_equal(stats(s).vms, 2);
        assert_int_equal(stats(s).disks, 3);
}

static void test_delete_cascades(void **state) {
        Fixture *f = *state;
        const char *ids1[] = { "a1", "a2" };
        const char *ids2[] = { "b1" };
        const char *only_vm2[] = { "vm2" };
        StoreSession sess[] = {
                session_make(1, "vm1"), session_make(2, "vm2"), session_make(3, "vm1"),
        };
        StoreSession got[4];
        Collect c = { 0 };
        size_t n = 99;
        StoreVm vm, out;
        StoreTxn *t;
        StoreStats st;
        Store *s = open_default(f);

        vm_make(&vm, "vm1", 2, ids1);
        assert_int_equal(put_vm(s, &vm), 0);
        vm_make(&vm, "vm2", 1, ids2);
        assert_int_equal(put_vm(s, &vm), 0);
        put_sessions(s, sess, ELEMENTSOF(sess));

        assert_int_equal(store_write_begin(s, &t), 0);
        assert_int_equal(store_vm_delete(t, "vm1"), 0);
        assert_int_equal(store_vm_delete(t, "vm1"), -ENOENT);
        assert_int_equal(store_vm_delete(t, "nope"), -ENOENT);
        assert_int_equal(store_commit(t), 0);

        assert_int_equal(get_vm(s, "vm1", &out), -ENOENT);
        assert_int_equal(get_vm(s, "vm2", &out), 0);
        assert_disk_owner(s, "a1", "");
        assert_disk_owner(s, "a2", "");
        assert_disk_owner(s, "b1", "vm2");
        assert_int_equal(store_read_begin(s, &t), 0);
        assert_int_equal(store_session_get(t, sess[0].hash, &got[0]), -ENOENT);
        assert_int_equal(store_session_get(t, sess[2].hash, &got[0]), -ENOENT);
        assert_int_equal(store_session_get(t, sess[1].hash, &got[0]), 0);
        assert_int_equal(vm_sessions(t, "vm1", got, 4, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(store_session_vm_foreach(t, NULL, collect_vm_id, &c), 0);
        store_read_end(t);
        assert_items(&c, 1, only_vm2);
        st = stats(s);
        assert_int_equal(st.vms, 1);
        assert_int_equal(st.disks, 1);
        assert_int_equal(st.sessions, 1);
}

static void test_paging(void **state) {
        Fixture *f = *state;
        const char *names[] = { "d", "b", "a", "c" };
        const char *all[] = { "a", "b", "c", "d" };
        const char *ids[] = { "x1" };
        const char *disks_all[] = { "x1", "x2", "x3", "x4" };
        StoreVm vm;
        StoreTxn *t;
        Collect c;
        Store *s = open_default(f);

        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char id[8];

                snprintf(id, sizeof(id), "x%c", disks_all[i][1]);
                ids[0] = id;
                vm_make(&vm, names[i], 1, ids);
                assert_int_equal(put_vm(s, &vm), 0);
        }

        assert_int_equal(store_read_begin(s, &t), 0);
        c = (Collect) { 0 };
        assert_int_equal(store_vm_foreach(t, NULL, collect_vm, &c), 0);
        assert_items(&c, 4, all);
        c = (Collect) { 0 };
        assert_int_equal(store_vm_foreach(t, "", collect_vm, &c), 0);
        assert_items(&c, 4, all);
        c = (Collect) { 0 };
        assert_int_equal(store_vm_foreach(t, "b", collect_vm, &c), 0);
        assert_items(&c, 2, all + 2);
        c = (Collect) { 0 };
        assert_int_equal(store_vm_foreach(t, "bb", collect_vm, &c), 0);   /* need not exist */
        assert_items(&c, 2, all + 2);
        c = (Collect) { 0 };
        assert_int_equal(store_vm_foreach(t, "0", collect_vm, &c), 0);
        assert_items(&c, 4, all);
        c = (Collect) { 0 };
        assert_int_equal(store_vm_foreach(t, "d", collect_vm, &c), 0);
        assert_items(&c, 0, all);
        c = (Collect) { 0 };
        assert_int_equal(store_vm_foreach(t, "zzz", collect_vm, &c), 0);
        assert_items(&c, 0, all);
        /* stop and error from the callback */
        c = (Collect) { .stop_after = 2 };
        assert_int_equal(store_vm_foreach(t, "a", collect_vm, &c), 1);
        assert_items(&c, 2, all + 1);
        c = (Collect) { .fail_with = -ENOTCONN };
        assert_int_equal(store_vm_foreach(t, NULL, collect_vm, &c), -ENOTCONN);
        assert_int_equal(c.n, 1);

        c = (Collect) { 0 };
        assert_int_equal(store_disk_foreach(t, NULL, collect_disk, &c), 0);
        assert_items(&c, 4, disks_all);
        assert_string_equal(c.owners[0], "d");   /* x1 went to the first VM put, "d" */
        c = (Collect) { 0 };
        assert_int_equal(store_disk_foreach(t, "x2", collect_disk, &c), 0);
        assert_items(&c, 2, disks_all + 2);
        c = (Collect) { 0 };
        assert_int_equal(store_disk_foreach(t, "x", collect_disk, &c), 0);
        assert_items(&c, 4, disks_all);
        store_read_end(t);
}

static void test_sessions(void **state) {
        Fixture *f = *state;
        StoreSession sess[] = {
                session_make(3, "vm1"), session_make(1, "vm1"), session_make(9, "vm2"),
                session_make(2, "vm1"), session_make(5, "vm0"),
        };
        const char *vm_ids[] = { "vm0", "vm1", "vm2" };
        StoreSession got[4], one;
        uint8_t h[STORE_HASH_BYTES];
        Collect c;
        size_t n = 0;
        StoreTxn *t;
        Store *s = open_default(f);

        put_sessions(s, sess, ELEMENTSOF(sess));
        assert_int_equal(stats(s).sessions, 5);

        assert_int_equal(store_read_begin(s, &t), 0);
        assert_int_equal(store_session_get(t, sess[2].hash, &one), 0);
        assert_string_equal(one.vm_id, "vm2");
        assert_true(one.created_at == 109 && one.expires_at == 1009);
        assert_memory_equal(one.hash, sess[2].hash, STORE_HASH_BYTES);
        hash_of(h, 4);
        assert_int_equal(store_session_get(t, h, &one), -ENOENT);

        /* per VM, by hash order */
        assert_int_equal(vm_sessions(t, "vm1", got, 4, &n), 0);
        assert_int_equal(n, 3);
        for (unsigned i = 0; i < 3; i++) {
                hash_of(h, (uint8_t) (i + 1));
                assert_memory_equal(got[i].hash, h, STORE_HASH_BYTES);
                assert_string_equal(got[i].vm_id, "vm1");
                assert_true(got[i].expires_at == 1000 + i + 1);
        }
        n = 0;
        assert_int_equal(vm_sessions(t, "vm1", got, 2, &n), -E2BIG);
        assert_int_equal(n, 2);
        assert_int_equal(vm_sessions(t, "nobody", got, 4, &n), 0);
        assert_int_equal(n, 0);

        /* all, with after */
        c = (Collect) { 0 };
        assert_int_equal(store_session_foreach(t, NULL, collect_session, &c), 0);
        assert_int_equal(c.n, 5);
        assert_int_equal(c.hashes[0][0], 1);
        assert_int_equal(c.hashes[4][0], 9);
        c = (Collect) { 0 };
        hash_of(h, 2);
        assert_int_equal(store_session_foreach(t, h, collect_session, &c), 0);
        assert_int_equal(c.n, 3);
        assert_int_equal(c.hashes[0][0], 3);
        c = (Collect) { 0 };
        hash_of(h, 4);   /* need not exist */
        assert_int_equal(store_session_foreach(t, h, collect_session, &c), 0);
        assert_int_equal(c.n, 2);
        assert_int_equal(c.hashes[0][0], 5);
        assert_string_equal(c.owners[0], "vm0");

        /* distinct VMs holding sessions */
        c = (Collect) { 0 };
        assert_int_equal(store_session_vm_foreach(t, NULL, collect_vm_id, &c), 0);
        assert_items(&c, 3, vm_ids);
        c = (Collect) { 0 };
        assert_int_equal(store_session_vm_foreach(t, "vm0", collect_vm_id, &c), 0);
        assert_items(&c, 2, vm_ids + 1);
        c = (Collect) { 0 };
        assert_int_equal(store_session_vm_foreach(t, "vm1a", collect_vm_id, &c), 0);
        assert_items(&c, 1, vm_ids + 2);
        c = (Collect) { .stop_after = 1 };
        assert_int_equal(store_session_vm_foreach(t, NULL, collect_vm_id, &c), 1);
        assert_items(&c, 1, vm_ids);
        store_read_end(t);

        /* delete one, move one to another VM */
        assert_int_equal(store_write_begin(s, &t), 0);
        assert_int_equal(store_session_delete(t, sess[1].hash), 0);
        assert_int_equal(store_session_delete(t, sess[1].hash), -ENOENT);
        one = sess[2];
        strcpy(one.vm_id, "vm1");
        one.expires_at = 5;
        assert_int_equal(store_session_put(t, &one), 0);
        assert_int_equal(store_commit(t), 0);

        assert_int_equal(store_read_begin(s, &t), 0);
        assert_int_equal(vm_sessions(t, "vm1", got, 4, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(got[0].hash[0], 2);
        assert_int_equal(got[1].hash[0], 3);
        assert_int_equal(got[2].hash[0], 9);
        assert_true(got[2].expires_at == 5);
        assert_int_equal(vm_sessions(t, "vm2", got, 4, &n), 0);
        assert_int_equal(n, 0);
        c = (Collect) { 0 };
        assert_int_equal(store_session_vm_foreach(t, NULL, collect_vm_id, &c), 0);
        assert_items(&c, 2, vm_ids);
        store_read_end(t);
        assert_int_equal(stats(s).sessions, 4);
}

static void test_child_abort(void **state) {
        Fixture *f = *state;
        StoreVm vm, out;
        StoreTxn *top, *child;
        Store *s = open_default(f);

        assert_int_equal(store_write_begin(s, &top), 0);
        assert_int_equal(store_child_begin(top, &child), 0);
        vm_make(&vm, "gone", 1, NULL);
        assert_int_equal(store_vm_put(child, &vm, NULL), 0);
        assert_int_equal(store_vm_get(child, "gone", &out), 0);
        store_abort(child);
        assert_int_equal(store_vm_get(top, "gone", &out), -ENOENT);

        assert_int_equal(store_child_begin(top, &child), 0);
        vm_make(&vm, "kept", 0, NULL);
        assert_int_equal(store_vm_put(child, &vm, NULL), 0);
        assert_int_equal(store_commit(child), 0);
        assert_int_equal(store_vm_get(top, "kept", &out), 0);
        /* not visible to readers before the top-level commit */
        assert_int_equal(get_vm(s, "kept", &out), -ENOENT);
        assert_int_equal(store_commit(top), 0);

        assert_int_equal(get_vm(s, "kept", &out), 0);
        assert_int_equal(get_vm(s, "gone", &out), -ENOENT);
        assert_disk_owner(s, "gone-disk1", "");

        /* an aborted top-level txn changes nothing */
        assert_int_equal(store_write_begin(s, &top), 0);
        assert_int_equal(store_vm_delete(top, "kept"), 0);
        store_abort(top);
        assert_int_equal(get_vm(s, "kept", &out), 0);
        store_abort(NULL);
        store_read_end(NULL);
}

static void test_read_reuse_sees_new_data(void **state) {
        Fixture *f = *state;
        StoreTxn *r1, *r2;
        StoreVm vm, out;
        Store *s = open_default(f);

        for (int i = 0; i < 50; i++) {
                assert_int_equal(store_read_begin(s, &r1), 0);
                store_read_end(r1);
        }
        /* a txn open before a commit keeps its snapshot; one begun after sees it */
        assert_int_equal(store_read_begin(s, &r1), 0);
        vm_make(&vm, "new", 0, NULL);
        assert_int_equal(put_vm(s, &vm), 0);
        assert_int_equal(store_vm_get(r1, "new", &out), -ENOENT);
        assert_int_equal(store_read_begin(s, &r2), 0);
        assert_int_equal(store_vm_get(r2, "new", &out), 0);
        store_read_end(r1);
        store_read_end(r2);
        assert_int_equal(get_vm(s, "new", &out), 0);
}

/* Writes VMs (one per durable txn, as the writer would) until the map is
 * full at its maximum; grows on every -ENOSPC. */
static void test_map_full(void **state) {
        Fixture *f = *state;
        char err[256] = "";
        unsigned committed = 0, grown = 0;
        uint64_t max = 256 * 1024, initial = 64 * 1024;
        StoreStats st;
        StoreVm vm, out;
        StoreTxn *t;
        Collect c = { 0 };
        Store *s;
        int r;

        r = open_with(f, initial, max, err, sizeof(err));
        if (r < 0)
                fail_msg("store_open: %d %s", r, err);
        s = f->store;
        assert_int_equal(stats(s).map_size_bytes, initial);

        for (unsigned i = 0; i < 100000; i++) {
                char name[32];

                snprintf(name, sizeof(name), "vm%06u", committed);
                vm_make(&vm, name, 8, NULL);
                r = i % 2 ? put_vm_nested(s, &vm) : put_vm(s, &vm);
                if (r == 0) {
                        committed++;
                        continue;
                }
                assert_int_equal(r, -ENOSPC);
                r = store_grow(s);
                if (r == -ENOSPC)
                        break;
                assert_int_equal(r, 0);
                grown++;
                assert_int_equal(stats(s).map_size_bytes, MIN(initial << grown, max));
        }
        assert_int_equal(grown, 2);   /* 64 KiB -> 128 KiB -> 256 KiB */
        assert_true(committed > 10);
        st = stats(s);
        assert_int_equal(st.map_size_bytes, max);
        assert_int_equal(st.vms, committed);
        assert_int_equal(st.disks, committed * 8);
        assert_true(st.size_bytes <= max);
        assert_int_equal(store_grow(s), -ENOSPC);

        /* still full; reads go on */
        vm_make(&vm, "zzz-late", 8, NULL);
        assert_int_equal(put_vm(s, &vm), -ENOSPC);
        assert_int_equal(put_vm_nested(s, &vm), -ENOSPC);
        assert_int_equal(get_vm(s, "vm000000", &out), 0);
        assert_int_equal(store_read_begin(s, &t), 0);
        c.stop_after = 3;
        assert_int_equal(store_vm_foreach(t, NULL, collect_vm, &c), 1);
        store_read_end(t);
        assert_string_equal(c.items[2], "vm000002");
        /* deleting still works (LMDB reuses freed pages) */
        assert_int_equal(store_write_begin(s, &t), 0);
        r = store_vm_delete(t, "vm000001");
        if (r == 0)
                r = store_commit(t);
        else
                store_abort(t);
        assert_true(r == 0 || r == -ENOSPC);

        /* the grown size survives a restart with a larger maximum */
        f->store = store_close(f->store);
        assert_int_equal(open_with(f, initial, 1024 * 1024, err, sizeof(err)), 0);
        assert_int_equal(stats(f->store).map_size_bytes, max);
        assert_int_equal(get_vm(f->store, "vm000002", &out), 0);
        vm_make(&vm, "zzz-late", 8, NULL);
        r = put_vm(f->store, &vm);
        if (r == -ENOSPC) {
                assert_int_equal(store_grow(f->store), 0);
                r = put_vm(f->store, &vm);
        }
        assert_int_equal(r, 0);
}

typedef struct GrowArg {
        Store *s;
        atomic_bool done;
        int r;
} GrowArg;

static void *grow_thread(void *userdata) {
        GrowArg *a = userdata;

        a->r = store_grow(a->s);
        atomic_store(&a->done, true);
        return NULL;
}

static void test_grow_waits_for_readers(void **state) {
        Fixture *f = *state;
        char err[256];
        pthread_t th;
        GrowArg a = { 0 };
        StoreTxn *t;
        StoreVm out;
        struct timespec ts = { 0, 100 * 1000 * 1000 };

        assert_int_equal(open_with(f, 1 << 20, 8 << 20, err, sizeof(err)), 0);
        a.s = f->store;
        assert_int_equal(store_read_begin(f->store, &t), 0);
        assert_int_equal(pthread_create(&th, NULL, grow_thread, &a), 0);
        nanosleep(&ts, NULL);
        assert_false(atomic_load(&a.done));
        assert_int_equal(store_vm_get(t, "x", &out), -ENOENT);
        store_read_end(t);
        assert_int_equal(pthread_join(th, NULL), 0);
        assert_true(atomic_load(&a.done));
        assert_int_equal(a.r, 0);
        assert_int_equal(stats(f->store).map_size_bytes, 2 << 20);
}

/* The other process of test_map_resized_elsewhere: writes 512 KiB into the
 * database with a 4 MiB map. Runs by exec, so that nothing of the parent's
 * environment is shared. */
static int grow_map_main(const char *path) {
        static uint8_t big[512 * 1024];
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        MDB_val k = { 4, (void *) "junk" }, v = { sizeof(big), big };
        int ok;

        if (mdb_env_create(&env) != 0)
                return 1;
        ok = mdb_env_set_maxdbs(env, 16) == 0 &&
                mdb_env_set_mapsize(env, 4 << 20) == 0 &&
                mdb_env_open(env, path, MDB_NOSUBDIR, 0600) == 0 &&
                mdb_txn_begin(env, NULL, 0, &txn) == 0 &&
                mdb_dbi_open(txn, "junk", MDB_CREATE, &dbi) == 0 &&
                mdb_put(txn, dbi, &k, &v, 0) == 0 &&
                mdb_txn_commit(txn) == 0;
        mdb_env_close(env);
        return ok ? 0 : 1;
}

/* Another process grows the map: the next txn of ours sees MDB_MAP_RESIZED
 * and adopts the new size. */
static void test_map_resized_elsewhere(void **state) {
        Fixture *f = *state;
        char err[256], path[256];
        StoreTxn *t;
        StoreVm vm, out;
        pid_t pid;
        int status;

        assert_int_equal(open_with(f, 64 * 1024, 64 << 20, err, sizeof(err)), 0);
        snprintf(path, sizeof(path), "%s", store_path(f->store));
        /* a cached read handle, to exercise renew as well */
        assert_int_equal(store_read_begin(f->store, &t), 0);
        store_read_end(t);

        {
                char *argv[] = { arg_self, (char *) "--grow-map", path, NULL };
                assert_int_equal(posix_spawn(&pid, arg_self, NULL, NULL, argv, environ), 0);
        }
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

        assert_int_equal(store_read_begin(f->store, &t), 0);
        assert_int_equal(store_vm_get(t, "x", &out), -ENOENT);
        store_read_end(t);
        assert_int_equal(stats(f->store).map_size_bytes, 4 << 20);
        vm_make(&vm, "after", 1, NULL);
        assert_int_equal(put_vm(f->store, &vm), 0);
        assert_int_equal(get_vm(f->store, "after", &out), 0);
}

static void test_bad_options(void **state) {
        Fixture *f = *state;
        StoreOptions o = { .dir = "" };
        Store *s = NULL;
        char err[256] = "";
        FILE *fp;
        char path[256];

        assert_int_equal(store_open(&o, &s, NULL, err, sizeof(err)), -EINVAL);
        assert_null(s);
        assert_true(strlen(err) > 0);

        /* a state "directory" that is a file */
        snprintf(path, sizeof(path), "%s/file", f->dir);
        fp = fopen(path, "we");
        assert_non_null(fp);
        fclose(fp);
        o.dir = path;
        err[0] = 0;
        assert_int_equal(store_open(&o, &s, NULL, err, sizeof(err)), -ENOTDIR);
        assert_null(s);
        assert_non_null(strstr(err, "state directory"));

        /* not an LMDB file */
        snprintf(path, sizeof(path), "%s/junk", f->dir);
        assert_int_equal(mkdir(path, 0700), 0);
        snprintf(path, sizeof(path), "%s/junk/%s", f->dir, STORE_DB_FILE);
        fp = fopen(path, "we");
        assert_non_null(fp);
        for (int i = 0; i < 8192; i++)
                fputc('j', fp);
        fclose(fp);
        snprintf(path, sizeof(path), "%s/junk", f->dir);
        o.dir = path;
        assert_int_equal(store_open(&o, &s, NULL, err, sizeof(err)), -EBADMSG);
        assert_null(s);
}

/* ---- store_verify (verify.c) ---- */

/* vm1 {a1, a2} with sessions 1 and 3, vm2 {b1} with session 2. */
static void verify_populate(Store *s) {
        const char *ids1[] = { "a1", "a2" };
        const char *ids2[] = { "b1" };
        StoreSession sess[] = {
                session_make(1, "vm1"), session_make(2, "vm2"), session_make(3, "vm1"),
        };
        StoreVm vm;

        vm_make(&vm, "vm1", 2, ids1);
        assert_int_equal(put_vm(s, &vm), 0);
        vm_make(&vm, "vm2", 1, ids2);
        assert_int_equal(put_vm(s, &vm), 0);
        put_sessions(s, sess, ELEMENTSOF(sess));
}

typedef enum Corruption {
        CORRUPT_DROP_VM_DISK,        /* vm_disks loses vm1 -> a2 */
        CORRUPT_STALE_VM_SESSION,    /* vm_sessions gains vm2 -> an absent session */
        CORRUPT_DISK_OWNER,          /* disks: b1 claims vm1 (copy of a1's record) */
        CORRUPT_VM_RECORD,           /* vms: vm2's record is junk */
        CORRUPT_DROP_SESSION_INDEX,  /* vm_sessions loses vm1 -> session 3 */
        CORRUPT_SCHEMA,              /* meta: schema_version 0 */
} Corruption;

/* Edits the closed database file behind LMDB's back (no store code). */
static void corrupt_raw(const char *path, Corruption what) {
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        MDB_val k, v;
        uint8_t hash[STORE_HASH_BYTES];

        assert_int_equal(mdb_env_create(&env), 0);
        assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
        assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR, 0600), 0);
        assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
        switch (what) {
        case CORRUPT_DROP_VM_DISK:
                assert_int_equal(mdb_dbi_open(txn, "vm_disks", MDB_DUPSORT, &dbi), 0);
                k = (MDB_val) { 3, (void *) "vm1" };
                v = (MDB_val) { 2, (void *) "a2" };
                assert_int_equal(mdb_del(txn, dbi, &k, &v), 0);
                break;
        case CORRUPT_STALE_VM_SESSION:
                assert_int_equal(mdb_dbi_open(txn, "vm_sessions", MDB_DUPSORT, &dbi), 0);
                hash_of(hash, 9);
                k = (MDB_val) { 3, (void *) "vm2" };
                v = (MDB_val) { sizeof(hash), hash };
                assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
                break;
        case CORRUPT_DISK_OWNER: {
                MDB_val a1 = { 2, (void *) "a1" }, rec;
                uint8_t copy[256];

                assert_int_equal(mdb_dbi_open(txn, "disks", 0, &dbi), 0);
                assert_int_equal(mdb_get(txn, dbi, &a1, &rec), 0);
                assert_true(rec.mv_size <= sizeof(copy));
                memcpy(copy, rec.mv_data, rec.mv_size);
                k = (MDB_val) { 2, (void *) "b1" };
                v = (MDB_val) { rec.mv_size, copy };
                assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
                break;
        }
        case CORRUPT_VM_RECORD:
                assert_int_equal(mdb_dbi_open(txn, "vms", 0, &dbi), 0);
                k = (MDB_val) { 3, (void *) "vm2" };
                v = (MDB_val) { 3, (void *) "\x81\xa1v" };
                assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
                break;
        case CORRUPT_DROP_SESSION_INDEX:
                assert_int_equal(mdb_dbi_open(txn, "vm_sessions", MDB_DUPSORT, &dbi), 0);
                hash_of(hash, 3);
                k = (MDB_val) { 3, (void *) "vm1" };
                v = (MDB_val) { sizeof(hash), hash };
                assert_int_equal(mdb_del(txn, dbi, &k, &v), 0);
                break;
        case CORRUPT_SCHEMA: {
                uint8_t zero[4] = { 0, 0, 0, 0 };

                assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
                k = (MDB_val) { strlen("schema_version"), (void *) "schema_version" };
                v = (MDB_val) { sizeof(zero), zero };
                assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
                break;
        }
        }
        assert_int_equal(mdb_txn_commit(txn), 0);
        mdb_env_close(env);
}

static void test_verify_ok(void **state) {
        Fixture *f = *state;
        StoreVerifyStats st;
        char err[1024] = "x";
        StoreTxn *t;
        Store *s = open_default(f);

        assert_int_equal(store_verify(s, err, sizeof(err), &st), 0);
        assert_string_equal(err, "");
        assert_int_equal(st.vms, 0);
        assert_int_equal(st.schema_version, STORE_SCHEMA_VERSION);

        verify_populate(s);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), 0);
        assert_string_equal(err, "");
        assert_int_equal(st.schema_version, STORE_SCHEMA_VERSION);
        assert_int_equal(st.vms, 2);
        assert_int_equal(st.disks, 3);
        assert_int_equal(st.vm_disks, 3);
        assert_int_equal(st.sessions, 3);
        assert_int_equal(st.vm_sessions, 3);
        assert_int_equal(st.problems, 0);

        /* what the store itself does keeps it consistent: delete, replace */
        assert_int_equal(store_write_begin(s, &t), 0);
        assert_int_equal(store_vm_delete(t, "vm1"), 0);
        assert_int_equal(store_commit(t), 0);
        assert_int_equal(store_verify(s, NULL, 0, &st), 0);
        assert_int_equal(st.vms, 1);
        assert_int_equal(st.disks, 1);
        assert_int_equal(st.sessions, 1);
}

static void verify_corrupted(Fixture *f, Corruption what, const char *expect) {
        StoreVerifyStats st;
        char err[1024] = "", path[256];
        Store *s = open_default(f);

        verify_populate(s);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), 0);
        snprintf(path, sizeof(path), "%s", store_path(s));
        f->store = store_close(f->store);
        corrupt_raw(path, what);
        if (what == CORRUPT_SCHEMA) {
                /* store_open refuses it already; verify is not reached */
                assert_int_equal(open_with(f, 0, 0, err, sizeof(err)), -EBADMSG);
                return;
        }
        s = open_default(f);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), -EBADMSG);
        assert_true(st.problems >= 1);
        if (!strstr(err, expect))
                fail_msg("expected \"%s\" in:\n%s", expect, err);
        /* every problem line ends with a newline */
        assert_int_equal(err[strlen(err) - 1], '\n');
}

static void test_verify_vm_disks_index(void **state) {
        verify_corrupted(*state, CORRUPT_DROP_VM_DISK,
                         "vm vm1: disk a2 is not in the vm_disks index");
}

static void test_verify_stale_session_index(void **state) {
        verify_corrupted(*state, CORRUPT_STALE_VM_SESSION,
                         "vm_sessions: vm vm2: session 0909090909090909... does not exist");
}

static void test_verify_disk_owner(void **state) {
        verify_corrupted(*state, CORRUPT_DISK_OWNER, "vm vm2: disk b1 belongs to vm vm1");
}

static void test_verify_vm_record(void **state) {
        verify_corrupted(*state, CORRUPT_VM_RECORD, "vm vm2: record does not decode");
}

static void test_verify_session_not_indexed(void **state) {
        verify_corrupted(*state, CORRUPT_DROP_SESSION_INDEX,
                         "session 0303030303030303...: not in the vm_sessions index of vm vm1");
}

static void test_verify_schema(void **state) {
        verify_corrupted(*state, CORRUPT_SCHEMA, "");
}

/* Many problems: the buffer keeps whole lines only, the count is exact. */
static void test_verify_many_problems(void **state) {
        Fixture *f = *state;
        StoreVerifyStats st;
        MDB_env *env;
        MDB_txn *txn;
        MDB_dbi dbi;
        char err[200], path[256];
        Store *s = open_default(f);

        verify_populate(s);
        snprintf(path, sizeof(path), "%s", store_path(s));
        f->store = store_close(f->store);
        assert_int_equal(mdb_env_create(&env), 0);
        assert_int_equal(mdb_env_set_maxdbs(env, 16), 0);
        assert_int_equal(mdb_env_open(env, path, MDB_NOSUBDIR, 0600), 0);
        assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
        assert_int_equal(mdb_dbi_open(txn, "vm_disks", MDB_DUPSORT, &dbi), 0);
        for (int i = 0; i < 40; i++) {
                char id[16];
                MDB_val k = { 3, (void *) "vm9" }, v;

                snprintf(id, sizeof(id), "ghost%02d", i);
                v = (MDB_val) { strlen(id), id };
                assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
        }
        assert_int_equal(mdb_txn_commit(txn), 0);
        mdb_env_close(env);

        s = open_default(f);
        assert_int_equal(store_verify(s, err, sizeof(err), &st), -EBADMSG);
        assert_int_equal(st.problems, 40);
        assert_int_equal(st.vm_disks, 43);
        assert_true(strlen(err) < sizeof(err));
        assert_int_equal(err[strlen(err) - 1], '\n');
        assert_non_null(strstr(err, "vm_disks: vm vm9: disk ghost00 is not in the disks table\n"));
}

int main(int argc, char **argv) {
        if (argc == 3 && strcmp(argv[1], "--grow-map") == 0)
                return grow_map_main(argv[2]);
        arg_self = argv[0];
#define T(name) cmocka_unit_test_setup_teardown(name, fixture_setup, fixture_teardown)
        const struct CMUnitTest tests[] = {
                T(test_open_create),
                T(test_reopen_keeps_data),
                T(test_newer_schema_refused),
                T(test_vm_put_get),
                T(test_vm_replace_disks),
                T(test_vm_put_same_disks),
                T(test_auto_ids),
                T(test_conflict_changes_nothing),
                T(test_delete_cascades),
                T(test_paging),
                T(test_sessions),
                T(test_child_abort),
                T(test_read_reuse_sees_new_data),
                T(test_map_full),
                T(test_grow_waits_for_readers),
                T(test_map_resized_elsewhere),
                T(test_bad_options),
                T(test_verify_ok),
                T(test_verify_vm_disks_index),
                T(test_verify_stale_session_index),
                T(test_verify_disk_owner),
                T(test_verify_vm_record),
                T(test_verify_session_not_indexed),
                T(test_verify_schema),
                T(test_verify_many_problems),
        };
#undef T

        return cmocka_run_group_tests(tests, NULL, NULL);
}
