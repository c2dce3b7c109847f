/* SPDX-License-Identifier: MIT */
/* The LMDB environment: schema, transactions, the tables and their indexes.
 *
 * Locking: every transaction (read, or top-level write until it ends) holds
 * the read side of Store.resize_lock; resizing the map (store_grow, adopting a
 * size grown by another process) takes the write side, so LMDB's rule "no
 * transaction active in this process while resizing" holds. The lock prefers
 * readers (glibc default): a thread may hold several read transactions at
 * once without deadlocking against a waiting grow. */

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "record.h"
#include "shared/macro.h"
#include "store.h"
#include "store-internal.h"

#define STORE_MAP_INITIAL_DEFAULT (16ull << 20)
#define STORE_MAP_MAX_DEFAULT (16ull << 30)
#define BACKUP_CHUNK (64u * 1024u)
#define STORE_READERS_DEFAULT 126u
#define STORE_MAXDBS 16u             /* six today; room for groups, bookings, history */
#define STORE_READ_CACHE 8u          /* reset read txns kept for reuse */
#define STORE_MIN_PAGES 16u          /* smallest map we configure, in OS pages */

struct Store {
        MDB_env *env;
        MDB_dbi dbi_meta, dbi_vms, dbi_disks, dbi_vm_disks, dbi_sessions, dbi_vm_sessions;
        char *path;
        uint8_t hash_key[32];
        int64_t created_at;
        uint64_t map_size_max;

        pthread_rwlock_t resize_lock;
        bool resize_lock_init;
        pthread_mutex_t cache_lock;
        bool cache_lock_init;
        StoreTxn *read_cache;        /* reset read txns, linked by next */
        unsigned n_read_cache;
};

struct StoreTxn {
        Store *store;
        MDB_txn *txn;
        StoreTxn *parent;            /* NULL for a top-level txn */
        bool read_only;
        StoreTxn *next;              /* in Store.read_cache */
};

/* The one place where LMDB's codes become negative errno values. */
static int store_errno(int rc) {
        switch (rc) {
        case MDB_SUCCESS:
                return 0;
        case MDB_NOTFOUND:
                return -ENOENT;
        case MDB_KEYEXIST:
                return -EEXIST;
        case MDB_MAP_FULL:
                return -ENOSPC;
        case MDB_VERSION_MISMATCH:
                return -EPROTO;
        case MDB_INVALID:
        case MDB_CORRUPTED:
        case MDB_PAGE_NOTFOUND:
        case MDB_INCOMPATIBLE:
                return -EBADMSG;
        case MDB_READERS_FULL:
        case MDB_MAP_RESIZED:
                return -EAGAIN;
        default:
                if (rc > 0)
                        return -rc;
                return -EIO;
        }
}

_printf_(3, 4)
static void set_error(char *errbuf, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (!errbuf || errlen == 0)
                return;
        va_start(ap, fmt);
        (void) vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
}

static int64_t now_ms(void) {
        struct timespec ts;

        if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
                return 0;
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void put_be32(uint8_t *p, uint32_t v) {
        for (int i = 3; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static void put_be64(uint8_t *p, uint64_t v) {
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

static uint64_t get_be64(const uint8_t *p) {
        uint64_t v = 0;

        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

static int mkdir_p(const char *dir, mode_t mode) {
        _cleanup_free_ char *p = strdup(dir);
        struct stat st;

        if (!p)
                return -ENOMEM;
        for (char *c = p + 1; *c; c++) {
                if (*c != '/' || c[-1] == '/')
                        continue;
                *c = 0;
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *c = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        if (stat(p, &st) < 0)
                return -errno;
        return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

static MDB_val val_of(const void *p, size_t n) {
        return (MDB_val) { .mv_size = n, .mv_data = (void *) p };
}

static MDB_val val_str(const char *s) {
        return val_of(s, strlen(s));
}

static bool val_eq(const MDB_val *v, const void *p, size_t n) {
        return v->mv_size == n && (n == 0 || memcmp(v->mv_data, p, n) == 0);
}

/* A key string of length 1..max; longer or empty keys cannot exist. */
static bool key_ok(const char *s, size_t max) {
        size_t n;

        if (!s)
                return false;
        n = strnlen(s, max + 1);
        return n >= 1 && n <= max;
}

static void cursor_closep(MDB_cursor **c) {
        if (*c)
                mdb_cursor_close(*c);
}

static void txn_abortp(MDB_txn **t) {
        if (*t)
                mdb_txn_abort(*t);
}

/* ---- open and close ---- */

static uint64_t round_pages(uint64_t v, uint64_t page) {
        v -= v % page;
        return MAX(v, (uint64_t) STORE_MIN_PAGES * page);
}

static int meta_get(MDB_txn *txn, MDB_dbi dbi, const char *key, size_t size, MDB_val *ret) {
        MDB_val k = val_str(key);
        int rc = mdb_get(txn, dbi, &k, ret);

        if (rc != 0)
                return store_errno(rc);
        return ret->mv_size == size ? 0 : -EBADMSG;
}

static int meta_put(MDB_txn *txn, MDB_dbi dbi, const char *key, const void *data, size_t size) {
        MDB_val k = val_str(key), v = val_of(data, size);

        return store_errno(mdb_put(txn, dbi, &k, &v, 0));
}

/* In one txn: checks or creates the meta records and opens every table. */
static int store_setup(Store *s, char *errbuf, size_t errlen) {
        _cleanup_(txn_abortp) MDB_txn *txn = NULL;
        static const struct {
                const char *name;
                unsigned flags;
                size_t offset;
        } tables[] = {
                { "vms", 0, offsetof(Store, dbi_vms) },
                { "disks", 0, offsetof(Store, dbi_disks) },
                { "vm_disks", MDB_DUPSORT, offsetof(Store, dbi_vm_disks) },
                { "sessions", 0, offsetof(Store, dbi_sessions) },
                { "vm_sessions", MDB_DUPSORT, offsetof(Store, dbi_vm_sessions) },
        };
        MDB_val v;
        int r;

        r = store_errno(mdb_txn_begin(s->env, NULL, 0, &txn));
        if (r >= 0)
                r = store_errno(mdb_dbi_open(txn, "meta", MDB_CREATE, &s->dbi_meta));
        if (r < 0) {
                set_error(errbuf, errlen, "cannot open database %s: %s", s->path, strerror(-r));
                return r;
        }

        r = meta_get(txn, s->dbi_meta, "schema_version", 4, &v);
        if (r == -ENOENT) {
                uint8_t version[4], created[8];

                /* First start. */
                if (sodium_init() < 0) {
                        set_error(errbuf, errlen, "cannot initialize libsodium");
                        return -EIO;
                }
                s->created_at = now_ms();
                randombytes_buf(s->hash_key, sizeof(s->hash_key));
                put_be32(version, STORE_SCHEMA_VERSION);
                put_be64(created, (uint64_t) s->created_at);
                r = meta_put(txn, s->dbi_meta, "schema_version", version, sizeof(version));
                if (r >= 0)
                        r = meta_put(txn, s->dbi_meta, "created_at", created, sizeof(created));
                if (r >= 0)
                        r = meta_put(txn, s->dbi_meta, "token_key", s->hash_key,
                                     sizeof(s->hash_key));
                if (r < 0) {
                        set_error(errbuf, errlen, "cannot initialize database %s: %s", s->path,
                                  strerror(-r));
                        return r;
                }
        } else if (r < 0) {
                set_error(errbuf, errlen, "database %s: cannot read schema_version: %s", s->path,
                          strerror(-r));
                return r;
        } else {
                uint32_t version = get_be32(v.mv_data);

                if (version > STORE_SCHEMA_VERSION) {
                        set_error(errbuf, errlen,
                                  "database schema version %" PRIu32
                                  " is newer than this vmmd supports (%d)",
                                  version, STORE_SCHEMA_VERSION);
                        return -EPROTO;
                }
                if (version == 0) {
                        set_error(errbuf, errlen, "database %s: schema version 0 is invalid",
                                  s->path);
                        return -EBADMSG;
                }
                r = meta_get(txn, s->dbi_meta, "created_at", 8, &v);
                if (r >= 0) {
                        s->created_at = (int64_t) get_be64(v.mv_data);
                        r = meta_get(txn, s->dbi_meta, "token_key", sizeof(s->hash_key), &v);
                }
                if (r < 0) {
                        set_error(errbuf, errlen, "database %s: meta records damaged: %s",
                                  s->path, strerror(-r));
                        return r == -ENOENT ? -EBADMSG : r;
                }
                memcpy(s->hash_key, v.mv_data, sizeof(s->hash_key));
        }

        for (size_t i = 0; i < ELEMENTSOF(tables); i++) {
                MDB_dbi *dbi = (MDB_dbi *) ((uint8_t *) s + tables[i].offset);

                r = store_errno(mdb_dbi_open(txn, tables[i].name, MDB_CREATE | tables[i].flags,
                                             dbi));
                if (r < 0) {
                        set_error(errbuf, errlen, "database %s: cannot open table %s: %s",
                                  s->path, tables[i].name, strerror(-r));
                        return r;
                }
        }

        r = store_errno(mdb_txn_commit(txn));
        txn = NULL;   /* freed by the commit, whatever its result */
        if (r < 0)
                set_error(errbuf, errlen, "cannot write database %s: %s", s->path, strerror(-r));
        return r;
}

static void store_closep(Store **s) {
        store_close(*s);
}

int store_open(const StoreOptions *opts, Store **ret, char *errbuf, size_t errlen) {
        _cleanup_(store_closep) Store *s = NULL;
        uint64_t page, initial, target;
        MDB_envinfo info;
        struct stat st;
        bool existed;
        int dead, r;

        if (!opts || !opts->dir || !opts->dir[0] || !ret) {
                set_error(errbuf, errlen, "no state directory given");
                return -EINVAL;
        }

        s = calloc(1, sizeof(*s));
        if (!s) {
                set_error(errbuf, errlen, "out of memory");
                return -ENOMEM;
        }
        if (asprintf(&s->path, "%s/%s", opts->dir, STORE_DB_FILE) < 0) {
                s->path = NULL;
                set_error(errbuf, errlen, "out of memory");
                return -ENOMEM;
        }
        r = -pthread_rwlock_init(&s->resize_lock, NULL);
        if (r < 0) {
                set_error(errbuf, errlen, "cannot create a lock: %s", strerror(-r));
                return r;
        }
        s->resize_lock_init = true;
        r = -pthread_mutex_init(&s->cache_lock, NULL);
        if (r < 0) {
                set_error(errbuf, errlen, "cannot create a lock: %s", strerror(-r));
                return r;
        }
        s->cache_lock_init = true;

        r = mkdir_p(opts->dir, 0700);
        if (r < 0) {
                set_error(errbuf, errlen, "cannot create state directory %s: %s", opts->dir,
                          strerror(-r));
                return r;
        }

        page = (uint64_t) sysconf(_SC_PAGESIZE);
        s->map_size_max = round_pages(opts->map_size_max ? opts->map_size_max :
                                      STORE_MAP_MAX_DEFAULT, page);
        initial = round_pages(opts->map_size_initial ? opts->map_size_initial :
                              STORE_MAP_INITIAL_DEFAULT, page);
        initial = MIN(initial, s->map_size_max);

        existed = stat(s->path, &st) >= 0 && st.st_size > 0;
        r = store_errno(mdb_env_create(&s->env));
        if (r >= 0)
                r = store_errno(mdb_env_set_maxdbs(s->env, STORE_MAXDBS));
        if (r >= 0)
                r = store_errno(mdb_env_set_maxreaders(s->env, opts->max_readers ?
                                                       opts->max_readers : STORE_READERS_DEFAULT));
        if (r >= 0 && !existed)   /* else LMDB's 1 MiB default is recorded as the size */
                r = store_errno(mdb_env_set_mapsize(s->env, initial));
        if (r >= 0)
                r = store_errno(mdb_env_open(s->env, s->path, MDB_NOSUBDIR | MDB_NOTLS |
                                             (VMMD_TEST_NOSYNC ? MDB_NOSYNC : 0), 0600));
        if (r < 0) {
                set_error(errbuf, errlen, "cannot open database %s: %s", s->path, strerror(-r));
                return r;
        }
        r = store_errno(mdb_reader_check(s->env, &dead));
        if (r < 0) {
                set_error(errbuf, errlen, "database %s: reader check failed: %s", s->path,
                          strerror(-r));
                return r;
        }

        /* The map: the configured initial size, or for an existing file the
         * size an earlier run grew it to (LMDB records it in the file), within
         * the maximum; LMDB itself never goes below the data in the file. */
        r = store_errno(mdb_env_info(s->env, &info));
        if (r >= 0) {
                target = existed ? MAX((uint64_t) info.me_mapsize, initial) : initial;
                target = MIN(target, s->map_size_max);
                r = store_errno(mdb_env_set_mapsize(s->env, target));
        }
        if (r < 0) {
                set_error(errbuf, errlen, "database %s: cannot set the map size: %s", s->path,
                          strerror(-r));
                return r;
        }

        r = store_setup(s, errbuf, errlen);
        if (r < 0)
                return r;

        *ret = s;
        s = NULL;
        return 0;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        while (s->read_cache) {
                StoreTxn *t = s->read_cache;

                s->read_cache = t->next;
                mdb_txn_abort(t->txn);
                free(t);
        }
        if (s->env)
                mdb_env_close(s->env);
        if (s->cache_lock_init)
                (void) pthread_mutex_destroy(&s->cache_lock);
        if (s->resize_lock_init)
                (void) pthread_rwlock_destroy(&s->resize_lock);
        sodium_memzero(s->hash_key, sizeof(s->hash_key));
        free(s->path);
        free(s);
        return NULL;
}

const char *store_path(Store *s) {
        return s->path;
}

void store_hash_key(Store *s, uint8_t ret[32]) {
        memcpy(ret, s->hash_key, sizeof(s->hash_key));
}

int64_t store_created_at(Store *s) {
        return s->created_at;
}

/* ---- transactions ---- */

/* Adopts a map size grown by another process (MDB_MAP_RESIZED). wait: block
 * for the write side; otherwise give up with -EAGAIN if it is busy. */
static int store_adopt_map_size(Store *s, bool wait) {
        int r;

        r = wait ? pthread_rwlock_wrlock(&s->resize_lock) :
                   pthread_rwlock_trywrlock(&s->resize_lock);
        if (r != 0)
                return r == EBUSY || r == EDEADLK ? -EAGAIN : -r;
        r = store_errno(mdb_env_set_mapsize(s->env, 0));
        (void) pthread_rwlock_unlock(&s->resize_lock);
        return r;
}

static StoreTxn *read_cache_pop(Store *s) {
        StoreTxn *t;

        pthread_mutex_lock(&s->cache_lock);
        t = s->read_cache;
        if (t) {
                s->read_cache = t->next;
                s->n_read_cache--;
                t->next = NULL;
        }
        pthread_mutex_unlock(&s->cache_lock);
        return t;
}

/* Takes a reset read txn; false when the cache is full. */
static bool read_cache_push(Store *s, StoreTxn *t) {
        bool pushed = false;

        pthread_mutex_lock(&s->cache_lock);
        if (s->n_read_cache < STORE_READ_CACHE) {
                t->next = s->read_cache;
                s->read_cache = t;
                s->n_read_cache++;
                pushed = true;
        }
        pthread_mutex_unlock(&s->cache_lock);
        return pushed;
}

int store_read_begin(Store *s, StoreTxn **ret) {
        assert(s && ret);

        for (bool retried = false;; retried = true) {
                StoreTxn *t;
                int rc, r;

                r = -pthread_rwlock_rdlock(&s->resize_lock);
                if (r < 0)
                        return r;
                t = read_cache_pop(s);
                if (t && mdb_txn_renew(t->txn) != 0) {
                        /* a cached handle that cannot be renewed: take a new one */
                        mdb_txn_abort(t->txn);
                        free(t);
                        t = NULL;
                }
                if (t)
                        rc = 0;
                else {
                        t = calloc(1, sizeof(*t));
                        if (!t) {
                                (void) pthread_rwlock_unlock(&s->resize_lock);
                                return -ENOMEM;
                        }
                        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t->txn);
                        if (rc != 0)
                                free(t);
                }
                if (rc == 0) {
                        t->store = s;
                        t->read_only = true;
                        t->parent = NULL;
                        *ret = t;
                        return 0;
                }
                (void) pthread_rwlock_unlock(&s->resize_lock);
                if (rc != MDB_MAP_RESIZED || retried)
                        return store_errno(rc);
                /* Never block the calling thread (the event loop): if a write
                 * txn or a read txn of this thread is open, fail this read. */
                r = store_adopt_map_size(s, false);
                if (r < 0)
                        return r;
        }
}

void store_read_end(StoreTxn *t) {
        Store *s;

        if (!t)
                return;
        assert(t->read_only);
        s = t->store;
        mdb_txn_reset(t->txn);
        if (!read_cache_push(s, t)) {
                mdb_txn_abort(t->txn);
                free(t);
        }
        (void) pthread_rwlock_unlock(&s->resize_lock);
}

int store_write_begin(Store *s, StoreTxn **ret) {
        _cleanup_free_ StoreTxn *t = NULL;

        assert(s && ret);
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->store = s;

        for (bool retried = false;; retried = true) {
                int rc, r;

                r = -pthread_rwlock_rdlock(&s->resize_lock);
                if (r < 0)
                        return r;
                rc = mdb_txn_begin(s->env, NULL, 0, &t->txn);
                if (rc == 0) {
                        *ret = t;
                        t = NULL;
                        return 0;
                }
                (void) pthread_rwlock_unlock(&s->resize_lock);
                if (rc != MDB_MAP_RESIZED || retried)
                        return store_errno(rc);
                r = store_adopt_map_size(s, true);
                if (r < 0)
                        return r;
        }
}

int store_child_begin(StoreTxn *parent, StoreTxn **ret) {
        _cleanup_free_ StoreTxn *t = NULL;
        int r;

        assert(parent && ret);
        if (parent->read_only)
                return -EINVAL;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->store = parent->store;
        t->parent = parent;
        r = store_errno(mdb_txn_begin(parent->store->env, parent->txn, 0, &t->txn));
        if (r < 0)
                return r;
        *ret = t;
        t = NULL;
        return 0;
}

int store_commit(StoreTxn *t) {
        int r;

        assert(t);
        if (t->read_only) {
                store_read_end(t);
                return 0;
        }
        r = store_errno(mdb_txn_commit(t->txn));
        if (!t->parent)
                (void) pthread_rwlock_unlock(&t->store->resize_lock);
        free(t);
        return r;
}

void store_abort(StoreTxn *t) {
        if (!t)
                return;
        if (t->read_only) {
                store_read_end(t);
                return;
        }
        mdb_txn_abort(t->txn);
        if (!t->parent)
                (void) pthread_rwlock_unlock(&t->store->resize_lock);
        free(t);
}

int store_grow(Store *s) {
        MDB_envinfo info;
        uint64_t cur, next;
        int r;

        assert(s);
        r = -pthread_rwlock_wrlock(&s->resize_lock);
        if (r < 0)
                return r;
        r = store_errno(mdb_env_info(s->env, &info));
        if (r >= 0) {
                cur = info.me_mapsize;
                if (cur >= s->map_size_max)
                        r = -ENOSPC;
                else {
                        next = cur > s->map_size_max / 2 ? s->map_size_max : cur * 2;
                        r = store_errno(mdb_env_set_mapsize(s->env, next));
                }
        }
        (void) pthread_rwlock_unlock(&s->resize_lock);
        return r;
}

/* ---- iteration ---- */

/* Positions c at the first key strictly greater than after (or the first key
 * when after is NULL); next moves to the following key. */
static int cursor_first_after(MDB_cursor *c, const void *after, size_t after_len,
                              MDB_cursor_op next, MDB_val *k, MDB_val *v) {
        int rc;

        if (!after)
                return mdb_cursor_get(c, k, v, MDB_FIRST);
        *k = val_of(after, after_len);
        rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
        if (rc == 0 && val_eq(k, after, after_len))
                rc = mdb_cursor_get(c, k, v, next);
        return rc;
}

/* An optional string `after` as a cursor start: NULL and "" start at the
 * beginning. */
static int after_str(const char *after, const void **ret, size_t *ret_len) {
        size_t n;

        if (!after || !after[0]) {
                *ret = NULL;
                *ret_len = 0;
                return 0;
        }
        n = strlen(after);
        if (n > 511)   /* LMDB's key limit: no key can be longer */
                return -EINVAL;
        *ret = after;
        *ret_len = n;
        return 0;
}

/* Copies a key into a NUL-terminated string of at most max bytes. */
static int key_to_str(const MDB_val *k, char *ret, size_t max) {
        if (k->mv_size == 0 || k->mv_size > max || memchr(k->mv_data, 0, k->mv_size))
                return -EBADMSG;
        memcpy(ret, k->mv_data, k->mv_size);
        ret[k->mv_size] = 0;
        return 0;
}

/* ---- VMs and disks ---- */

static int vm_decode_checked(const MDB_val *k, const MDB_val *v, StoreVm *ret) {
        int r = record_vm_decode(v->mv_data, v->mv_size, ret);

        if (r < 0)
                return r;
        return val_eq(k, ret->vm_id, strlen(ret->vm_id)) ? 0 : -EBADMSG;
}

int store_vm_get_raw(StoreTxn *t, const char *vm_id, const void **ret, size_t *ret_len) {
        MDB_val k, v;
        int r;

        assert(t && ret && ret_len);
        if (!key_ok(vm_id, VMM_VM_ID_MAX))
                return -ENOENT;
        k = val_str(vm_id);
        r = store_errno(mdb_get(t->txn, t->store->dbi_vms, &k, &v));
        if (r < 0)
                return r;
        *ret = v.mv_data;
        *ret_len = v.mv_size;
        return 0;
}

int store_vm_get(StoreTxn *t, const char *vm_id, StoreVm *ret) {
        const void *data;
        MDB_val k, v;
        StoreVm vm;
        int r;

        assert(t && ret);
        r = store_vm_get_raw(t, vm_id, &data, &v.mv_size);
        if (r < 0)
                return r;
        v.mv_data = (void *) data;
        k = val_str(vm_id);
        r = vm_decode_checked(&k, &v, &vm);
        if (r < 0)
                return r;
        store_vm_copy(ret, &vm);
        return 0;
}

int store_disk_get(StoreTxn *t, const char *disk_id, char ret_vm_id[VMM_VM_ID_MAX + 1],
                   uint64_t *ret_size) {
        MDB_val k, v;
        int r;

        assert(t && ret_vm_id && ret_size);
        if (!key_ok(disk_id, VMM_DISK_ID_MAX))
                return -ENOENT;
        k = val_str(disk_id);
        r = store_errno(mdb_get(t->txn, t->store->dbi_disks, &k, &v));
        if (r < 0)
                return r;
        return record_disk_decode(v.mv_data, v.mv_size, ret_vm_id, ret_size);
}

/* 1: disk_id is free for vm_id (absent, or already vm_id's), 0: held by
 * another VM, < 0 error. */
static int disk_free_for(StoreTxn *t, const char *disk_id, const char *vm_id) {
        char owner[VMM_VM_ID_MAX + 1];
        uint64_t size;
        int r;

        r = store_disk_get(t, disk_id, owner, &size);
        if (r == -ENOENT)
                return 1;
        if (r < 0)
                return r;
        return streq(owner, vm_id);
}

static bool disk_in(const StoreDisk *disks, uint32_t n, const char *id, size_t len) {
        for (uint32_t i = 0; i < n; i++)
                if (streq_n(id, len, disks[i].id))
                        return true;
        return false;
}

/* Gives every disk with id "" the lowest free "<vm_id>-disk<N>". */
static int disks_assign(StoreTxn *t, const char *vm_id, StoreDisk *disks, uint32_t n) {
        unsigned next = 1;

        for (uint32_t i = 0; i < n; i++) {
                if (disks[i].id[0])
                        continue;
                for (;; next++) {
                        char cand[VMM_DISK_ID_MAX + 1];
                        int len, r;

                        len = snprintf(cand, sizeof(cand), "%s-disk%u", vm_id, next);
                        if (len < 0 || (size_t) len >= sizeof(cand))
                                return -ERANGE;
                        if (disk_in(disks, n, cand, (size_t) len))
                                continue;
                        r = disk_free_for(t, cand, vm_id);
                        if (r < 0)
                                return r;
                        if (r > 0) {
                                memcpy(disks[i].id, cand, (size_t) len + 1);
                                next++;
                                break;
                        }
                }
        }
        return 0;
}

/* Removes vm_id's entries from the vm_disks index, and from the disks table
 * those disks not in keep[0..n_keep). */
static int disks_unlink(StoreTxn *t, const char *vm_id, const StoreDisk *keep, uint32_t n_keep) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        Store *s = t->store;
        MDB_val k = val_str(vm_id), v;
        int rc, r;

        r = store_errno(mdb_cursor_open(t->txn, s->dbi_vm_disks, &c));
        if (r < 0)
                return r;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_DUP)) {
                char id[VMM_DISK_ID_MAX + 1];

                r = key_to_str(&v, id, VMM_DISK_ID_MAX);
                if (r < 0)
                        return r;
                if (disk_in(keep, n_keep, id, strlen(id)))
                        continue;
                r = disk_free_for(t, id, vm_id);
                if (r < 0)
                        return r;
                if (r > 0) {   /* ours (a disk of another VM would be a broken index) */
                        MDB_val dk = val_str(id);

                        rc = mdb_del(t->txn, s->dbi_disks, &dk, NULL);
                        if (rc != 0 && rc != MDB_NOTFOUND)
                                return store_errno(rc);
                }
        }
        if (rc != MDB_NOTFOUND)
                return store_errno(rc);
        mdb_cursor_close(c);
        c = NULL;

        k = val_str(vm_id);
        rc = mdb_del(t->txn, s->dbi_vm_disks, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

/* 1 if vm's disks (all with ids) are exactly those stored for it, in the
 * same order with the same sizes; 0 if not (or the VM is new). */
static int vm_disks_unchanged(StoreTxn *t, const StoreVm *vm) {
        StoreVm old;
        MDB_val k = val_str(vm->vm_id), v;
        int r;

        for (uint32_t i = 0; i < vm->n_disks; i++)
                if (vm->disks[i].id[0] == '\0')
                        return 0;       /* an id to assign */
        r = store_errno(mdb_get(t->txn, t->store->dbi_vms, &k, &v));
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return r;
        r = vm_decode_checked(&k, &v, &old);
        if (r < 0)
                return r;
        if (old.n_disks != vm->n_disks)
                return 0;
        for (uint32_t i = 0; i < vm->n_disks; i++)
                if (old.disks[i].size != vm->disks[i].size ||
                    strncmp(old.disks[i].id, vm->disks[i].id, sizeof old.disks[i].id) != 0)
                        return 0;
        return 1;
}

int store_vm_put_same_disks(StoreTxn *t, const StoreVm *vm) {
        _cleanup_free_ uint8_t *rec = NULL;
        size_t rec_len;
        MDB_val k, v;
        int r;

        assert(t && vm);
        if (t->read_only)
                return -EINVAL;
        if (!key_ok(vm->vm_id, VMM_VM_ID_MAX) || vm->n_disks > VMM_MAX_DISKS)
                return -EINVAL;
        r = record_vm_encode(vm, &rec, &rec_len);
        if (r < 0)
                return r;
        k = val_str(vm->vm_id);
        v = val_of(rec, rec_len);
        return store_errno(mdb_put(t->txn, t->store->dbi_vms, &k, &v, 0));
}

int store_vm_put(StoreTxn *t, StoreVm *vm) {
        _cleanup_free_ uint8_t *rec = NULL;
        StoreDisk disks[VMM_MAX_DISKS];
        Store *s;
        size_t rec_len;
        MDB_val k, v;
        int r;

        assert(t && vm);
        if (t->read_only)
                return -EINVAL;
        s = t->store;
        if (!key_ok(vm->vm_id, VMM_VM_ID_MAX) || vm->n_disks > VMM_MAX_DISKS)
                return -EINVAL;
        memcpy(disks, vm->disks, sizeof(StoreDisk) * vm->n_disks);

        /* Most writes (a login's last_seen_at, ram or cpu, a password)
         * leave the disks as they are: then only the VM record changes. */
        r = vm_disks_unchanged(t, vm);
        if (r < 0)
                return r;
        if (r > 0)
                return store_vm_put_same_disks(t, vm);

        /* Check everything before writing anything. */
        for (uint32_t i = 0; i < vm->n_disks; i++) {
                size_t len = strnlen(disks[i].id, sizeof(disks[i].id));

                if (len == 0)
                        continue;
                if (len > VMM_DISK_ID_MAX || disk_in(disks, i, disks[i].id, len))
                        return -EINVAL;
                r = disk_free_for(t, disks[i].id, vm->vm_id);
                if (r < 0)
                        return r;
                if (r == 0)
                        return -EBUSY;
        }
        r = disks_assign(t, vm->vm_id, disks, vm->n_disks);
        if (r < 0)
                return r;
        {
                StoreVm tmp = *vm;   /* the record as it will be stored */

                memcpy(tmp.disks, disks, sizeof(StoreDisk) * vm->n_disks);
                r = record_vm_encode(&tmp, &rec, &rec_len);
                if (r < 0)
                        return r;
        }

        r = disks_unlink(t, vm->vm_id, disks, vm->n_disks);
        if (r < 0)
                return r;
        for (uint32_t i = 0; i < vm->n_disks; i++) {
                _cleanup_free_ uint8_t *drec = NULL;
                size_t drec_len;
                MDB_val dk = val_str(disks[i].id), dv;
                int rc;

                r = record_disk_encode(vm->vm_id, disks[i].size, &drec, &drec_len);
                if (r < 0)
                        return r;
                dv = val_of(drec, drec_len);
                r = store_errno(mdb_put(t->txn, s->dbi_disks, &dk, &dv, 0));
                if (r < 0)
                        return r;
                k = val_str(vm->vm_id);
                dv = val_str(disks[i].id);
                rc = mdb_put(t->txn, s->dbi_vm_disks, &k, &dv, MDB_NODUPDATA);
                if (rc != 0 && rc != MDB_KEYEXIST)
                        return store_errno(rc);
        }

        k = val_str(vm->vm_id);
        v = val_of(rec, rec_len);
        r = store_errno(mdb_put(t->txn, s->dbi_vms, &k, &v, 0));
        if (r < 0)
                return r;
        memcpy(vm->disks, disks, sizeof(StoreDisk) * vm->n_disks);
        return 0;
}

/* Removes every session of vm_id and its vm_sessions entries. */
static int sessions_unlink_vm(StoreTxn *t, const char *vm_id) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        Store *s = t->store;
        MDB_val k = val_str(vm_id), v;
        int rc, r;

        r = store_errno(mdb_cursor_open(t->txn, s->dbi_vm_sessions, &c));
        if (r < 0)
                return r;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_DUP)) {
                MDB_val hk = v;

                if (hk.mv_size != STORE_HASH_BYTES)
                        return -EBADMSG;
                rc = mdb_del(t->txn, s->dbi_sessions, &hk, NULL);
                if (rc != 0 && rc != MDB_NOTFOUND)
                        return store_errno(rc);
        }
        if (rc != MDB_NOTFOUND)
                return store_errno(rc);
        mdb_cursor_close(c);
        c = NULL;

        k = val_str(vm_id);
        rc = mdb_del(t->txn, s->dbi_vm_sessions, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_vm_delete(StoreTxn *t, const char *vm_id) {
        MDB_val k;
        int r;

        assert(t);
        if (t->read_only)
                return -EINVAL;
        if (!key_ok(vm_id, VMM_VM_ID_MAX))
                return -ENOENT;
        k = val_str(vm_id);
        r = store_errno(mdb_del(t->txn, t->store->dbi_vms, &k, NULL));
        if (r < 0)
                return r;
        r = disks_unlink(t, vm_id, NULL, 0);
        if (r < 0)
                return r;
        return sessions_unlink_vm(t, vm_id);
}

int store_vm_foreach(StoreTxn *t, const char *after, StoreVmFunc f, void *userdata) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        const void *a;
        size_t a_len;
        MDB_val k, v;
        StoreVm vm;
        int rc, r;

        assert(t && f);
        r = after_str(after, &a, &a_len);
        if (r < 0)
                return r;
        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi_vms, &c));
        if (r < 0)
                return r;
        for (rc = cursor_first_after(c, a, a_len, MDB_NEXT, &k, &v); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                r = vm_decode_checked(&k, &v, &vm);
                if (r < 0)
                        return r;
                r = f(userdata, &vm);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_disk_foreach(StoreTxn *t, const char *after, StoreDiskFunc f, void *userdata) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        const void *a;
        size_t a_len;
        MDB_val k, v;
        int rc, r;

        assert(t && f);
        r = after_str(after, &a, &a_len);
        if (r < 0)
                return r;
        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi_disks, &c));
        if (r < 0)
                return r;
        for (rc = cursor_first_after(c, a, a_len, MDB_NEXT, &k, &v); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                char id[VMM_DISK_ID_MAX + 1], vm_id[VMM_VM_ID_MAX + 1];
                uint64_t size;

                r = key_to_str(&k, id, VMM_DISK_ID_MAX);
                if (r < 0)
                        return r;
                r = record_disk_decode(v.mv_data, v.mv_size, vm_id, &size);
                if (r < 0)
                        return r;
                r = f(userdata, id, vm_id, size);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

/* ---- sessions ---- */

int store_session_get(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES], StoreSession *ret) {
        MDB_val k, v;
        int r;

        assert(t && hash && ret);
        k = val_of(hash, STORE_HASH_BYTES);
        r = store_errno(mdb_get(t->txn, t->store->dbi_sessions, &k, &v));
        if (r < 0)
                return r;
        return record_session_decode(v.mv_data, v.mv_size, hash, ret);
}

/* Drops the vm_sessions entry vm_id → hash, if there is one. */
static int session_unindex(StoreTxn *t, const char *vm_id, const uint8_t *hash) {
        MDB_val k = val_str(vm_id), v = val_of(hash, STORE_HASH_BYTES);
        int rc = mdb_del(t->txn, t->store->dbi_vm_sessions, &k, &v);

        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_session_put(StoreTxn *t, const StoreSession *session) {
        _cleanup_free_ uint8_t *rec = NULL;
        StoreSession old;
        Store *s;
        size_t rec_len;
        MDB_val k, v;
        int rc, r;

        assert(t && session);
        if (t->read_only)
                return -EINVAL;
        s = t->store;
        if (!key_ok(session->vm_id, VMM_VM_ID_MAX))
                return -EINVAL;
        r = record_session_encode(session, &rec, &rec_len);
        if (r < 0)
                return r;

        r = store_session_get(t, session->hash, &old);
        if (r >= 0 && !streq(old.vm_id, session->vm_id))
                r = session_unindex(t, old.vm_id, session->hash);
        if (r < 0 && r != -ENOENT)
                return r;

        k = val_of(session->hash, STORE_HASH_BYTES);
        v = val_of(rec, rec_len);
        r = store_errno(mdb_put(t->txn, s->dbi_sessions, &k, &v, 0));
        if (r < 0)
                return r;
        k = val_str(session->vm_id);
        v = val_of(session->hash, STORE_HASH_BYTES);
        rc = mdb_put(t->txn, s->dbi_vm_sessions, &k, &v, MDB_NODUPDATA);
        return rc == MDB_KEYEXIST ? 0 : store_errno(rc);
}

int store_session_delete(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES]) {
        StoreSession old;
        MDB_val k;
        int r;

        assert(t && hash);
        if (t->read_only)
                return -EINVAL;
        r = store_session_get(t, hash, &old);
        if (r < 0)
                return r;
        k = val_of(hash, STORE_HASH_BYTES);
        r = store_errno(mdb_del(t->txn, t->store->dbi_sessions, &k, NULL));
        if (r < 0)
                return r;
        return session_unindex(t, old.vm_id, hash);
}

int store_vm_sessions(StoreTxn *t, const char *vm_id, StoreSession *ret, size_t max,
                      size_t *ret_n) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, v;
        size_t n = 0;
        int rc, r;

        assert(t && ret_n && (ret || max == 0));
        if (!key_ok(vm_id, VMM_VM_ID_MAX)) {
                *ret_n = 0;
                return 0;
        }
        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi_vm_sessions, &c));
        if (r < 0)
                return r;
        k = val_str(vm_id);
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_DUP)) {
                if (v.mv_size != STORE_HASH_BYTES)
                        return -EBADMSG;
                if (n == max) {
                        *ret_n = n;
                        return -E2BIG;
                }
                r = store_session_get(t, v.mv_data, &ret[n]);
                if (r < 0)
                        return r == -ENOENT ? -EBADMSG : r;   /* index without record */
                n++;
        }
        if (rc != MDB_NOTFOUND)
                return store_errno(rc);
        *ret_n = n;
        return 0;
}

int store_vm_session_foreach(StoreTxn *t, const char *vm_id, StoreSessionFunc f,
                             void *userdata) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        StoreSession session;
        MDB_val k, v;
        int rc, r;

        assert(t && f);
        if (!key_ok(vm_id, VMM_VM_ID_MAX))
                return 0;
        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi_vm_sessions, &c));
        if (r < 0)
                return r;
        k = val_str(vm_id);
        for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_DUP)) {
                if (v.mv_size != STORE_HASH_BYTES)
                        return -EBADMSG;
                r = store_session_get(t, v.mv_data, &session);
                if (r < 0)
                        return r == -ENOENT ? -EBADMSG : r;   /* index without record */
                r = f(userdata, &session);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_session_foreach(StoreTxn *t, const uint8_t *after, StoreSessionFunc f, void *userdata) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, v;
        StoreSession session;
        int rc, r;

        assert(t && f);
        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi_sessions, &c));
        if (r < 0)
                return r;
        for (rc = cursor_first_after(c, after, after ? STORE_HASH_BYTES : 0, MDB_NEXT, &k, &v);
             rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                if (k.mv_size != STORE_HASH_BYTES)
                        return -EBADMSG;
                r = record_session_decode(v.mv_data, v.mv_size, k.mv_data, &session);
                if (r < 0)
                        return r;
                r = f(userdata, &session);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_session_vm_foreach(StoreTxn *t, const char *after, StoreVmIdFunc f, void *userdata) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        const void *a;
        size_t a_len;
        MDB_val k, v;
        int rc, r;

        assert(t && f);
        r = after_str(after, &a, &a_len);
        if (r < 0)
                return r;
        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi_vm_sessions, &c));
        if (r < 0)
                return r;
        for (rc = cursor_first_after(c, a, a_len, MDB_NEXT_NODUP, &k, &v); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT_NODUP)) {
                char vm_id[VMM_VM_ID_MAX + 1];

                r = key_to_str(&k, vm_id, VMM_VM_ID_MAX);
                if (r < 0)
                        return r;
                r = f(userdata, vm_id);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_stats(StoreTxn *t, StoreStats *ret) {
        Store *s;
        MDB_stat st_vms, st_disks, st_sessions, st_env;
        MDB_envinfo info;
        int r;

        assert(t && ret);
        s = t->store;
        r = store_errno(mdb_stat(t->txn, s->dbi_vms, &st_vms));
        if (r >= 0)
                r = store_errno(mdb_stat(t->txn, s->dbi_disks, &st_disks));
        if (r >= 0)
                r = store_errno(mdb_stat(t->txn, s->dbi_sessions, &st_sessions));
        if (r >= 0)
                r = store_errno(mdb_env_stat(s->env, &st_env));
        if (r >= 0)
                r = store_errno(mdb_env_info(s->env, &info));
        if (r < 0)
                return r;
        *ret = (StoreStats) {
                .vms = st_vms.ms_entries,
                .disks = st_disks.ms_entries,
                .sessions = st_sessions.ms_entries,
                .size_bytes = ((uint64_t) info.me_last_pgno + 1) * st_env.ms_psize,
                .map_size_bytes = info.me_mapsize,
        };
        return 0;
}

typedef struct BackupCopy {
        MDB_env *env;
        int fd;                 /* the pipe's writing end */
        int rc;
} BackupCopy;

static void *backup_copy_thread(void *userdata) {
        BackupCopy *b = userdata;

        b->rc = mdb_env_copyfd2(b->env, b->fd, MDB_CP_COMPACT);
        (void) close(b->fd);    /* end of file for the pump */
        b->fd = -1;
        return NULL;
}

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

int store_backup(Store *s, int fd, uint64_t *ret_bytes, const atomic_bool *cancel) {
        BackupCopy b = { .env = s->env, .fd = -1 };
        struct stat st;
        pthread_t t;
        uint8_t *buf = NULL;
        uint64_t total = 0;
        int pfd[2], r;

        assert(s && fd >= 0);
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        bool regular = S_ISREG(st.st_mode);
        buf = malloc(BACKUP_CHUNK);
        if (!buf)
                return -ENOMEM;
        if (pipe2(pfd, O_CLOEXEC) < 0) {
                r = -errno;
                free(buf);
                return r;
        }
        /* LMDB writes the copy into a pipe on its own thread; this one
         * forwards it to fd, counting the bytes (a pipe or socket has no
         * offset to ask) and giving up when cancelled (shutdown). A map
         * resize must not run while the copy's read transaction is open. */
        r = -pthread_rwlock_rdlock(&s->resize_lock);
        if (r < 0)
                goto out_pipe;
        b.fd = pfd[1];
        r = -pthread_create(&t, NULL, backup_copy_thread, &b);
        if (r < 0) {
                (void) pthread_rwlock_unlock(&s->resize_lock);
                goto out_pipe;
        }
        pfd[1] = -1;            /* the copy thread's now */
        for (;;) {
                r = backup_wait(pfd[0], POLLIN, cancel);
                if (r < 0)
                        break;
                ssize_t n = read(pfd[0], buf, BACKUP_CHUNK);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
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
        /* on an early stop the copy thread's next write fails (EPIPE) */
        (void) close(pfd[0]);
        pfd[0] = -1;
        (void) pthread_join(t, NULL);
        (void) pthread_rwlock_unlock(&s->resize_lock);
        if (r == 0 && b.rc != 0)
                r = store_errno(b.rc);
        if (r == 0 && fsync(fd) < 0 && errno != EINVAL && errno != EROFS)
                r = -errno;
        if (r == 0 && ret_bytes)
                *ret_bytes = total;
out_pipe:
        if (pfd[0] >= 0)
                (void) close(pfd[0]);
        if (pfd[1] >= 0)
                (void) close(pfd[1]);
        free(buf);
        return r;
}

/* ---- for verify.c (store-internal.h) ---- */

MDB_txn *store_txn_mdb(StoreTxn *t) {
        return t->txn;
}

void store_txn_dbis(StoreTxn *t, StoreDbis *ret) {
        Store *s = t->store;

        *ret = (StoreDbis) {
                .meta = s->dbi_meta,
                .vms = s->dbi_vms,
                .disks = s->dbi_disks,
                .vm_disks = s->dbi_vm_disks,
                .sessions = s->dbi_sessions,
                .vm_sessions = s->dbi_vm_sessions,
        };
}
