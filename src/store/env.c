/* SPDX-License-Identifier: MIT */
/* The LMDB environment: opening, the schema and its upgrade, transactions,
 * growth, statistics, and the cursor walk every table uses (the group
 * commit is in batch.c). */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <lmdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"
#include "record.h"
#include "shared/clock.h"
#include "shared/fs.h"
#include "store-internal.h"

#define STORE_MAP_INITIAL_DEFAULT (16ull << 20)
#define STORE_MAP_MAX_DEFAULT (16ull << 30)
#define STORE_READERS_DEFAULT 126u
#define STORE_MAXDBS 32u
#define STORE_READ_CACHE 8u          /* reset read txns kept for reuse */
#define STORE_MIN_PAGES 16u          /* smallest map we configure, in OS pages */

int store_errno(int rc) {
        switch (rc) {
        case MDB_SUCCESS:
                return 0;
        case MDB_NOTFOUND:
                return -ENOENT;
        case MDB_KEYEXIST:
                return -EEXIST;
        case MDB_MAP_FULL:
                return -ENOSPC;
        case MDB_TXN_FULL:
                return -E2BIG;
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

void store_set_error(char *errbuf, size_t errlen, const char *fmt, ...) {
        va_list ap;

        if (!errbuf || errlen == 0)
                return;
        va_start(ap, fmt);
        (void) vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
}

int key_to_str(const MDB_val *k, char *ret, size_t max) {
        if (k->mv_size == 0 || k->mv_size > max || memchr(k->mv_data, 0, k->mv_size))
                return -EBADMSG;
        memcpy(ret, k->mv_data, k->mv_size);
        ret[k->mv_size] = 0;
        return 0;
}

static void txn_abortp(MDB_txn **t) {
        if (*t)
                mdb_txn_abort(*t);
}

/* ---- open, schema, upgrade ---- */

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

static const struct {
        const char *name;
        unsigned flags;
        size_t offset;
        unsigned since;         /* schema version that added it */
        unsigned until;         /* schema version that replaced it (0: none) */
} tables[] = {
        { "vms", 0, offsetof(StoreDbis, vms), 1 },
        { "disks", 0, offsetof(StoreDbis, disks), 1 },
        { "vm_disks", MDB_DUPSORT, offsetof(StoreDbis, vm_disks), 1 },
        { "sessions", 0, offsetof(StoreDbis, sessions), 1 },
        { "vm_sessions", MDB_DUPSORT, offsetof(StoreDbis, vm_sessions), 1 },
        { "user_sessions", MDB_DUPSORT, offsetof(StoreDbis, user_sessions), 2 },
        { "session_expiry", 0, offsetof(StoreDbis, session_expiry), 2 },
        { "users", 0, offsetof(StoreDbis, users), 2 },
        { "groups", 0, offsetof(StoreDbis, groups), 2 },
        { "group_names", 0, offsetof(StoreDbis, group_names), 2 },
        { "group_vms", MDB_DUPSORT, offsetof(StoreDbis, group_vms), 2 },
        { "bookings", 0, offsetof(StoreDbis, bookings), 2 },
        { "booking_expiry", 0, offsetof(StoreDbis, booking_expiry), 2 },
        { "user_bookings", MDB_DUPSORT, offsetof(StoreDbis, user_bookings), 2 },
        { "history", 0, offsetof(StoreDbis, history), 2 },
        { "history_user", MDB_DUPSORT, offsetof(StoreDbis, history_user2), 2, 3 },
        { "history_vm", MDB_DUPSORT, offsetof(StoreDbis, history_vm2), 2, 3 },
        { "history_by_user", 0, offsetof(StoreDbis, history_user), 3, 4 },
        { "history_by_vm", 0, offsetof(StoreDbis, history_vm), 3, 4 },
        { "history_heads", 0, offsetof(StoreDbis, history_heads), 4 },
        { "feed", 0, offsetof(StoreDbis, feed), 2 },
        { "os", 0, offsetof(StoreDbis, os), 2 },
        { "requests", 0, offsetof(StoreDbis, requests), 2 },
};

/* Schema 1 -> 2: the new tables exist (opened by the caller); sessions get
 * their expiry index. Records of version 1 stay as they are: they read as
 * version 2 records with the new fields at their defaults, and are written
 * as version 2 the next time they change. */
static int upgrade_from_1(Store *s, MDB_txn *txn) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, v;
        int rc, r;

        r = store_errno(mdb_cursor_open(txn, s->dbi.sessions, &c));
        if (r < 0)
                return r;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
                StoreSession session;
                uint8_t ek[8 + STORE_HASH_BYTES];

                if (k.mv_size != STORE_HASH_BYTES)
                        return -EBADMSG;
                r = record_session_decode(v.mv_data, v.mv_size, k.mv_data, &session);
                if (r < 0)
                        return r;
                put_be64(ek, (uint64_t) MAX(session.expires_at, (int64_t) 0));
                memcpy(ek + 8, k.mv_data, STORE_HASH_BYTES);
                MDB_val ekv = val_of(ek, sizeof ek), empty = val_of("", 0);
                r = store_errno(mdb_put(txn, s->dbi.session_expiry, &ekv, &empty, 0));
                if (r < 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

static int drop_table(MDB_txn *txn, MDB_dbi *dbi) {
        int r = *dbi ? store_errno(mdb_drop(txn, *dbi, 1)) : 0;   /* also closes the handle */

        *dbi = 0;
        return r;
}

/* Schema 2 or 3 -> 4: the history's chains are built from the history, in
 * feed order (each record gets its links in front), and the old indexes
 * dropped (bookings.c says why). A file of schema 1 has no history: nothing
 * to build. */
static int upgrade_history(Store *s, MDB_txn *txn) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, v;
        int rc, r;

        r = store_errno(mdb_cursor_open(txn, s->dbi.history, &c));
        if (r < 0)
                return r;
        /* each entry found again from the next feed position: its rewrite
         * (longer) may split the page under the cursor */
        for (uint64_t next = 0;; next++) {
                _cleanup_free_ uint8_t *val = NULL;
                uint8_t kb[8];
                StoreHistory h;

                put_be64(kb, next);
                k = val_of(kb, 8);
                rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
                if (rc != 0)
                        break;
                if (k.mv_size != 8)
                        return -EBADMSG;
                r = record_history_decode(v.mv_data, v.mv_size, &h);
                if (r >= 0 && h.feed != get_be64(k.mv_data))
                        r = -EBADMSG;
                if (r < 0)
                        return r;
                val = malloc(STORE_HISTORY_LINKS_BYTES + v.mv_size);
                if (!val)
                        return -ENOMEM;
                memcpy(val + STORE_HISTORY_LINKS_BYTES, v.mv_data, v.mv_size);
                r = store_history_link(txn, &s->dbi, h.user, h.vm_id, h.feed, val);
                if (r < 0)
                        return r;
                next = h.feed;
                put_be64(kb, next);
                k = val_of(kb, 8);
                MDB_val nv = val_of(val, STORE_HISTORY_LINKS_BYTES + v.mv_size);
                r = store_errno(mdb_put(txn, s->dbi.history, &k, &nv, 0));
                if (r < 0)
                        return r;
        }
        if (rc != MDB_NOTFOUND)
                return store_errno(rc);
        r = drop_table(txn, &s->dbi.history_user2);
        if (r >= 0)
                r = drop_table(txn, &s->dbi.history_vm2);
        if (r >= 0)
                r = drop_table(txn, &s->dbi.history_user);
        return r < 0 ? r : drop_table(txn, &s->dbi.history_vm);
}

/* In one txn: checks or creates the meta records, opens every table, and
 * upgrades an older schema. */
static int store_setup(Store *s, bool read_only, unsigned *ret_upgraded, char *errbuf,
                       size_t errlen) {
        _cleanup_(txn_abortp) MDB_txn *txn = NULL;
        uint32_t version = STORE_SCHEMA_VERSION;
        bool first = false;
        uint8_t vbuf[4];
        MDB_val v;
        int r;

        memset(&s->dbi, 0, sizeof(s->dbi));     /* a retry opens them again */
        r = store_errno(mdb_txn_begin(s->env, NULL, read_only ? MDB_RDONLY : 0, &txn));
        if (r >= 0)
                r = store_errno(mdb_dbi_open(txn, "meta", read_only ? 0 : MDB_CREATE,
                                             &s->dbi.meta));
        if (r < 0) {
                store_set_error(errbuf, errlen, "cannot open database %s: %s", s->path,
                                strerror(-r));
                return r;
        }

        r = meta_get(txn, s->dbi.meta, "schema_version", 4, &v);
        if (r == -ENOENT && read_only) {
                store_set_error(errbuf, errlen, "database %s has no schema version", s->path);
                return -EBADMSG;
        }
        if (r == -ENOENT) {
                uint8_t created[8];

                /* First start. */
                first = true;
                if (sodium_init() < 0) {
                        store_set_error(errbuf, errlen, "cannot initialize libsodium");
                        return -EIO;
                }
                s->created_at = now_ms();
                randombytes_buf(s->hash_key, sizeof(s->hash_key));
                put_be64(created, (uint64_t) s->created_at);
                r = meta_put(txn, s->dbi.meta, "created_at", created, sizeof(created));
                if (r >= 0)
                        r = meta_put(txn, s->dbi.meta, "token_key", s->hash_key,
                                     sizeof(s->hash_key));
                if (r < 0) {
                        store_set_error(errbuf, errlen, "cannot initialize database %s: %s",
                                        s->path, strerror(-r));
                        return r;
                }
        } else if (r < 0) {
                store_set_error(errbuf, errlen, "database %s: cannot read schema_version: %s",
                                s->path, strerror(-r));
                return r;
        } else {
                version = get_be32(v.mv_data);
                if (version > STORE_SCHEMA_VERSION) {
                        store_set_error(errbuf, errlen,
                                        "database schema version %" PRIu32
                                        " is newer than this vmmd supports (%d)",
                                        version, STORE_SCHEMA_VERSION);
                        return -EPROTO;
                }
                if (version == 0) {
                        store_set_error(errbuf, errlen,
                                        "database %s: schema version 0 is invalid", s->path);
                        return -EBADMSG;
                }
                r = meta_get(txn, s->dbi.meta, "created_at", 8, &v);
                if (r >= 0) {
                        s->created_at = (int64_t) get_be64(v.mv_data);
                        r = meta_get(txn, s->dbi.meta, "token_key", sizeof(s->hash_key), &v);
                }
                if (r < 0) {
                        store_set_error(errbuf, errlen, "database %s: meta records damaged: %s",
                                        s->path, strerror(-r));
                        return r == -ENOENT ? -EBADMSG : r;
                }
                memcpy(s->hash_key, v.mv_data, sizeof(s->hash_key));
        }

        s->dbi.schema = version;
        for (size_t i = 0; i < ELEMENTSOF(tables); i++) {
                MDB_dbi *dbi = (MDB_dbi *) ((uint8_t *) &s->dbi + tables[i].offset);

                unsigned create = read_only ? 0 : MDB_CREATE;

                if (read_only && tables[i].since > version)
                        continue;       /* an older file: not there, and not created */
                if (tables[i].until) {
                        /* a replaced table: opened only on a file that has it */
                        if (version < tables[i].since || version >= tables[i].until)
                                continue;
                        create = 0;
                }
                r = store_errno(mdb_dbi_open(txn, tables[i].name, create | tables[i].flags, dbi));
                if (r < 0) {
                        store_set_error(errbuf, errlen, "database %s: cannot open table %s: %s",
                                        s->path, tables[i].name, strerror(-r));
                        return r;
                }
        }
        if (read_only) {
                if (ret_upgraded)
                        *ret_upgraded = 0;
                /* a commit (not an abort) keeps the tables' handles open */
                r = store_errno(mdb_txn_commit(txn));
                txn = NULL;
                return r;
        }
        /* each step in turn, in this one transaction */
        r = version < 2 ? upgrade_from_1(s, txn) : 0;
        if (r >= 0 && version < 4)
                r = upgrade_history(s, txn);
        if (r < 0) {
                store_set_error(errbuf, errlen,
                                "database %s: cannot upgrade from schema version %" PRIu32 ": %s",
                                s->path, version, strerror(-r));
                return r;
        }
        if (ret_upgraded)
                *ret_upgraded = version < STORE_SCHEMA_VERSION ? version : 0;
        put_be32(vbuf, STORE_SCHEMA_VERSION);
        if (first || version != STORE_SCHEMA_VERSION) {
                r = meta_put(txn, s->dbi.meta, "schema_version", vbuf, sizeof(vbuf));
                if (r < 0) {
                        store_set_error(errbuf, errlen, "cannot write database %s: %s", s->path,
                                        strerror(-r));
                        return r;
                }
        }

        r = store_errno(mdb_txn_commit(txn));
        txn = NULL;   /* freed by the commit, whatever its result */
        if (r < 0)
                store_set_error(errbuf, errlen, "cannot write database %s: %s", s->path,
                                strerror(-r));
        else
                s->dbi.schema = STORE_SCHEMA_VERSION;   /* upgraded, if it was older */
        return r;
}

static void store_closep(Store **s) {
        store_close(*s);
}

int store_open(const StoreOptions *opts, Store **ret, unsigned *ret_upgraded, char *errbuf,
               size_t errlen) {
        _cleanup_(store_closep) Store *s = NULL;
        uint64_t page, initial, target;
        MDB_envinfo info;
        struct stat st;
        bool existed;
        unsigned flags = MDB_NOSUBDIR | MDB_NOTLS;
        int dead, r;

        if (!opts || !opts->dir || !opts->dir[0] || !ret) {
                store_set_error(errbuf, errlen, "no state directory given");
                return -EINVAL;
        }

        s = calloc(1, sizeof(*s));
        if (!s) {
                store_set_error(errbuf, errlen, "out of memory");
                return -ENOMEM;
        }
        s->dir = strdup(opts->dir);
        if (!s->dir || asprintf(&s->path, "%s/%s", opts->dir, STORE_DB_FILE) < 0) {
                s->path = NULL;
                store_set_error(errbuf, errlen, "out of memory");
                return -ENOMEM;
        }
        s->event_history = opts->event_history ? opts->event_history : VMM_EVENT_HISTORY;
        r = -pthread_rwlock_init(&s->resize_lock, NULL);
        if (r < 0) {
                store_set_error(errbuf, errlen, "cannot create a lock: %s", strerror(-r));
                return r;
        }
        s->resize_lock_init = true;
        r = -pthread_mutex_init(&s->cache_lock, NULL);
        if (r < 0) {
                store_set_error(errbuf, errlen, "cannot create a lock: %s", strerror(-r));
                return r;
        }
        s->cache_lock_init = true;

        r = opts->read_only ? 0 : mkdir_p(opts->dir, 0700, 0755);
        if (r < 0) {
                store_set_error(errbuf, errlen, "cannot create state directory %s: %s",
                                opts->dir, strerror(-r));
                return r;
        }

        page = (uint64_t) sysconf(_SC_PAGESIZE);
        s->map_size_max = round_pages(opts->map_size_max ? opts->map_size_max :
                                      STORE_MAP_MAX_DEFAULT, page);
        initial = round_pages(opts->map_size_initial ? opts->map_size_initial :
                              STORE_MAP_INITIAL_DEFAULT, page);
        initial = MIN(initial, s->map_size_max);

        existed = stat(s->path, &st) >= 0 && st.st_size > 0;
#if VMMD_TEST_NOSYNC
        flags |= MDB_NOSYNC;    /* a test-only build: see meson_options.txt */
#endif
        if (opts->no_sync)
                flags |= MDB_NOSYNC;
        /* one sync per commit: the meta page of a commit is written but not
         * synced; the next commit's sync (or store_sync) makes it durable,
         * and durable_seq says what is */
        if (!(flags & MDB_NOSYNC) && !opts->read_only) {
                flags |= MDB_NOMETASYNC;
                s->meta_deferred = true;
        }
        if (opts->read_only)
                flags |= MDB_RDONLY;
        r = store_errno(mdb_env_create(&s->env));
        if (r >= 0)
                r = store_errno(mdb_env_set_maxdbs(s->env, STORE_MAXDBS));
        if (r >= 0)
                r = store_errno(mdb_env_set_maxreaders(s->env, opts->max_readers ?
                                                       opts->max_readers : STORE_READERS_DEFAULT));
        if (r >= 0 && !existed)   /* else LMDB's 1 MiB default is recorded as the size */
                r = store_errno(mdb_env_set_mapsize(s->env, initial));
        if (r >= 0)
                r = store_errno(mdb_env_open(s->env, s->path, flags, 0600));
        if (r < 0) {
                store_set_error(errbuf, errlen, "cannot open database %s: %s", s->path,
                                strerror(-r));
                return r;
        }
        /* LMDB 0.9 opens its data file without O_CLOEXEC: a program this
         * process starts (vmmd's hash helpers) must not hold it open */
        mdb_filehandle_t dfd;
        if (mdb_env_get_fd(s->env, &dfd) == 0 && dfd >= 0)
                (void) fcntl(dfd, F_SETFD, fcntl(dfd, F_GETFD) | FD_CLOEXEC);
        r = store_errno(mdb_reader_check(s->env, &dead));
        if (r < 0) {
                store_set_error(errbuf, errlen, "database %s: reader check failed: %s", s->path,
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
                store_set_error(errbuf, errlen, "database %s: cannot set the map size: %s",
                                s->path, strerror(-r));
                return r;
        }

        /* An upgrade may need more room than the map has (schema 4 rewrites
         * every history record, in one transaction with the old pages still
         * held): the setup is all or nothing, so it is tried again in a map
         * twice as large, up to the maximum. */
        while ((r = store_setup(s, opts->read_only, ret_upgraded, errbuf, errlen)) == -ENOSPC &&
               !opts->read_only && store_grow(s) >= 0)
                if (errbuf && errlen)
                        errbuf[0] = 0;
        if (r < 0)
                return r;
        /* what a crash left in the page cache is made durable before anyone
         * is shown it */
        if (!opts->read_only && !opts->no_sync) {
                r = store_errno(mdb_env_sync(s->env, 1));
                if (r < 0) {
                        store_set_error(errbuf, errlen, "cannot sync database %s: %s", s->path,
                                        strerror(-r));
                        return r;
                }
        }
        if (store_errno(mdb_env_info(s->env, &info)) >= 0) {
                atomic_store(&s->committed_seq, (uint64_t) info.me_last_txnid);
                atomic_store(&s->durable_seq, (uint64_t) info.me_last_txnid);
        }
        if (!opts->read_only)
                store_backup_remove_leftovers(opts->dir);
        /* the database file must survive a power loss as a directory entry
         * too, not only as data (every start: a first start may have been
         * cut short before; cheap) */
        if (!opts->no_sync && !opts->read_only) {
                r = fsync_dir(opts->dir);
                if (r < 0 && r != -EINVAL && r != -EROFS) {
                        store_set_error(errbuf, errlen, "cannot sync directory %s: %s",
                                        opts->dir, strerror(-r));
                        return r;
                }
        }

        *ret = TAKE_PTR(s);
        return 0;
}

Store *store_close(Store *s) {
        if (!s)
                return NULL;
        /* the last commit's meta page, when it was deferred */
        if (s->env && s->meta_deferred)
                (void) mdb_env_sync(s->env, 1);
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
        free(s->dir);
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
                        uint64_t seq = (uint64_t) mdb_txn_id(t->txn);
                        if (seq > atomic_load(&s->read_seq_seen))
                                atomic_store(&s->read_seq_seen, seq);
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
                        *ret = TAKE_PTR(t);
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
        *ret = TAKE_PTR(t);
        return 0;
}

/* After a top-level commit: what is committed, and what is durable now. */
static void commit_seq_update(Store *s) {
        MDB_envinfo info;

        if (mdb_env_info(s->env, &info) != 0)
                return;
        uint64_t seq = (uint64_t) info.me_last_txnid;
        if (seq == atomic_load(&s->committed_seq))
                return;         /* nothing was written */
        atomic_store(&s->committed_seq, seq);
        if (s->meta_deferred)
                atomic_fetch_add(&s->syncs, 1);
        /* this commit's sync made the one before it durable; without a
         * deferred meta page it is durable itself */
        uint64_t durable = s->meta_deferred ? seq - 1 : seq;
        if (durable > atomic_load(&s->durable_seq))
                atomic_store(&s->durable_seq, durable);
}

int store_commit(StoreTxn *t) {
        Store *s;
        int r;

        assert(t);
        if (t->read_only) {
                store_read_end(t);
                return 0;
        }
        s = t->store;
        r = store_errno(mdb_txn_commit(t->txn));
        if (!t->parent) {
                if (r >= 0)
                        commit_seq_update(s);
                (void) pthread_rwlock_unlock(&s->resize_lock);
        }
        free(t);
        return r;
}

uint64_t store_committed_seq(Store *s) {
        return atomic_load(&s->committed_seq);
}

uint64_t store_durable_seq(Store *s) {
        return atomic_load(&s->durable_seq);
}

int store_sync(Store *s) {
        uint64_t seq = atomic_load(&s->committed_seq);
        int r;

        if (!s->meta_deferred)
                return 0;
        r = store_errno(mdb_env_sync(s->env, 1));
        atomic_fetch_add(&s->syncs, 1);
        if (r >= 0 && seq > atomic_load(&s->durable_seq))
                atomic_store(&s->durable_seq, seq);
        return r;
}

uint64_t store_sync_count(Store *s) {
        return atomic_load(&s->syncs);
}

uint64_t store_txn_seq(StoreTxn *t) {
        return (uint64_t) mdb_txn_id(t->txn);
}

uint64_t store_read_seq_take(Store *s) {
        return atomic_exchange(&s->read_seq_seen, 0);
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

/* ---- statistics ---- */

static uint64_t entries(MDB_txn *txn, MDB_dbi dbi, int *r) {
        MDB_stat st;

        if (*r < 0)
                return 0;
        *r = store_errno(mdb_stat(txn, dbi, &st));
        return *r < 0 ? 0 : st.ms_entries;
}

int store_stats(StoreTxn *t, StoreStats *ret) {
        Store *s;
        MDB_stat st_env;
        MDB_envinfo info;
        StoreStats st = { 0 };
        int r = 0;

        assert(t && ret);
        s = t->store;
        st.vms = entries(t->txn, s->dbi.vms, &r);
        st.disks = entries(t->txn, s->dbi.disks, &r);
        st.sessions = entries(t->txn, s->dbi.sessions, &r);
        st.users = entries(t->txn, s->dbi.users, &r);
        st.groups = entries(t->txn, s->dbi.groups, &r);
        st.bookings = entries(t->txn, s->dbi.bookings, &r);
        st.os = entries(t->txn, s->dbi.os, &r);
        st.requests = entries(t->txn, s->dbi.requests, &r);
        if (r >= 0)
                r = store_feed_bounds(t, &st.feed_last, &st.feed_oldest);
        if (r >= 0)
                r = store_errno(mdb_env_stat(s->env, &st_env));
        if (r >= 0)
                r = store_errno(mdb_env_info(s->env, &info));
        if (r < 0)
                return r;
        st.size_bytes = ((uint64_t) info.me_last_pgno + 1) * st_env.ms_psize;
        st.map_size_bytes = info.me_mapsize;
        *ret = st;
        return 0;
}

/* ---- the cursor walk ---- */

int store_walk(StoreTxn *t, MDB_dbi dbi, WalkMode mode, const MDB_val *key, const MDB_val *after,
               WalkFunc f, void *userdata) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_cursor_op next;
        MDB_val k, v;
        int rc, r;

        assert(t && f);
        r = store_errno(mdb_cursor_open(t->txn, dbi, &c));
        if (r < 0)
                return r;
        switch (mode) {
        case WALK_ALL:
        case WALK_KEYS:
                next = mode == WALK_ALL ? MDB_NEXT : MDB_NEXT_NODUP;
                if (!after || after->mv_size == 0)
                        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
                else {
                        if (after->mv_size > 511)       /* no key can be longer */
                                return -EINVAL;
                        k = *after;
                        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
                        if (rc == 0 && val_eq(&k, after->mv_data, after->mv_size))
                                rc = mdb_cursor_get(c, &k, &v, next);
                }
                break;
        case WALK_DUPS:
                next = MDB_NEXT_DUP;
                k = *key;
                if (!after)
                        rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
                else {
                        v = *after;
                        rc = mdb_cursor_get(c, &k, &v, MDB_GET_BOTH_RANGE);
                        if (rc == 0 && val_eq(&v, after->mv_data, after->mv_size))
                                rc = mdb_cursor_get(c, &k, &v, next);
                }
                break;
        default:
                return -EINVAL;
        }
        for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, next)) {
                r = f(userdata, &k, &v);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_next_id(StoreTxn *t, const char *counter, uint64_t *ret) {
        uint8_t buf[8];
        uint64_t next = 1;
        MDB_val v;
        int r;

        r = txn_writable(t);
        if (r < 0)
                return r;
        r = meta_get(t->txn, t->store->dbi.meta, counter, 8, &v);
        if (r >= 0)
                next = get_be64(v.mv_data);
        else if (r != -ENOENT)
                return r;
        put_be64(buf, next + 1);
        r = meta_put(t->txn, t->store->dbi.meta, counter, buf, sizeof buf);
        if (r < 0)
                return r;
        *ret = next;
        return 0;
}

/* ---- for verify.c and tests (store-internal.h) ---- */

MDB_txn *store_txn_mdb(StoreTxn *t) {
        return t->txn;
}

void store_txn_dbis(StoreTxn *t, StoreDbis *ret) {
        *ret = t->store->dbi;
}
