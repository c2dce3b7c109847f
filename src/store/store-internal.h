/* SPDX-License-Identifier: MIT */
/* Layer L0 (src/store), private: what the files of src/store share (the LMDB
 * handles behind a Store and a StoreTxn, key helpers, one cursor walk).
 * Not for code outside src/store, but for the store's own unit tests.
 *
 * Locking: every transaction holds the read side of Store.resize_lock from
 * begin to its end (a top-level write txn until its commit/abort); growing
 * the map takes the write side, so LMDB's rule "no transaction active in
 * this process while resizing" holds. The lock prefers readers (glibc
 * default): a thread may hold several read transactions at once without
 * deadlocking against a waiting grow. */
#pragma once

#include <lmdb.h>
#include <pthread.h>
#include <stdarg.h>

#include "shared/macro.h"
#include "store.h"

typedef struct StoreDbis {
        MDB_dbi meta, vms, disks, vm_disks, sessions, vm_sessions;
        /* schema 2 */
        MDB_dbi user_sessions, session_expiry, users, groups, group_names, group_vms;
        MDB_dbi bookings, booking_expiry, user_bookings, history;
        MDB_dbi feed, os, requests;
        /* schema 4: each user's and VM's newest history entry (bookings.c) */
        MDB_dbi history_heads;
        /* schema 3 only: the history indexes, keys name NUL be64(feed);
         * opened on a file of schema 3 (read-only, or for its upgrade), else 0 */
        MDB_dbi history_user, history_vm;
        /* schema 2 only: the history indexes as DUPSORT tables (name -> feed);
         * opened on a file of schema 2 (read-only, or for its upgrade), else 0 */
        MDB_dbi history_user2, history_vm2;
        uint32_t schema;                /* the version of the file (read-only opens) */
} StoreDbis;

/* the longest key of a schema-3 history index: a name, NUL, 8 bytes of feed */
#define STORE_HISTORY_KEY_MAX (MAX(STORE_NAME_MAX, VMM_VM_ID_MAX) + 9)
/* name, NUL, big-endian feed: the key of a schema-3 history index entry, and
 * its length (0: the name is too long). */
size_t store_history_key(const void *name, size_t name_len, uint64_t feed,
                         uint8_t ret[STORE_HISTORY_KEY_MAX]);
/* Splits a schema-3 history index key; -EBADMSG when it is not one. */
int store_history_index_parse(const void *key, size_t len, const char **ret_name,
                              size_t *ret_name_len, uint64_t *ret_feed);

/* Schema 4: every history entry is on two chains, its user's and its VM's
 * (STORE_CHAIN_USER, STORE_CHAIN_VM). In each, the entry's position n (1:
 * the name's first entry), the feed of the entry at n - 1 (prev) and of the
 * one at store_history_skip_pos(n) (skip; 0: none). The history table's
 * value is the links of both chains, 48 bytes (n, prev, skip of the user's
 * chain, then of the VM's, big-endian), then the record; files of older
 * schemas hold the record alone. history_heads holds, under 'u' or 'v' and
 * the name, that name's newest entry's feed and position (16 bytes). */
enum { STORE_CHAIN_USER, STORE_CHAIN_VM, _STORE_CHAIN_MAX };
#define STORE_HISTORY_LINKS_BYTES 48
#define STORE_HISTORY_HEAD_BYTES 16
#define STORE_HISTORY_HEAD_KEY_MAX (MAX(STORE_NAME_MAX, VMM_VM_ID_MAX) + 1)
typedef struct StoreHistoryLink {
        uint64_t n, prev, skip;
} StoreHistoryLink;
/* n with its lowest set bit cleared: a skip from n passes lowbit(n) entries */
static inline uint64_t store_history_skip_pos(uint64_t n) {
        return n & (n - 1);
}
/* The record part of a history table value (the file's schema says whether
 * links come first); -EBADMSG when too short. */
int store_history_record(const StoreDbis *dbi, const MDB_val *v, const uint8_t **ret,
                         size_t *ret_len);
/* The links in front of v, the history table value of the entry at feed;
 * -EBADMSG when malformed. */
int store_history_links_parse(const MDB_val *v, uint64_t feed,
                              StoreHistoryLink ret[_STORE_CHAIN_MAX]);
/* The links of the entry at feed; -EBADMSG when missing or malformed. */
int store_history_links_get(MDB_txn *txn, const StoreDbis *dbi, uint64_t feed,
                            StoreHistoryLink ret[_STORE_CHAIN_MAX]);
/* The key of a name's head: 'u' or 'v', then the name; its length. */
size_t store_history_head_key(int chain, const char *name,
                              uint8_t ret[STORE_HISTORY_HEAD_KEY_MAX]);
/* A name's newest entry; -ENOENT when it has none, -EBADMSG malformed. */
int store_history_head_get(MDB_txn *txn, const StoreDbis *dbi, int chain, const char *name,
                           uint64_t *ret_feed, uint64_t *ret_n);
/* Makes the links of the entry at feed (newer than every entry of its user
 * and VM) into ret, and records it as both names' newest. The caller writes
 * the entry, ret first. */
int store_history_link(MDB_txn *txn, const StoreDbis *dbi, const char *user, const char *vm_id,
                       uint64_t feed, uint8_t ret[STORE_HISTORY_LINKS_BYTES]);

struct Store {
        MDB_env *env;
        StoreDbis dbi;
        char *path;
        char *dir;
        uint8_t hash_key[32];
        int64_t created_at;
        uint64_t map_size_max;
        uint64_t event_history;

        pthread_rwlock_t resize_lock;
        bool resize_lock_init;
        pthread_mutex_t cache_lock;
        bool cache_lock_init;
        StoreTxn *read_cache;        /* reset read txns, linked by next */
        unsigned n_read_cache;
        atomic_bool backup_running;
        bool meta_deferred;             /* MDB_NOMETASYNC: a commit's meta page is
                                         * made durable by the next sync */
        _Atomic uint64_t committed_seq, durable_seq;
        _Atomic uint64_t read_seq_seen;
        _Atomic uint64_t syncs;         /* data syncs made (commits and store_sync) */
};

struct StoreTxn {
        Store *store;
        MDB_txn *txn;
        StoreTxn *parent;            /* NULL for a top-level txn */
        bool read_only;
        StoreTxn *next;              /* in Store.read_cache */
};

/* The one place where LMDB's codes become negative errno values. */
int store_errno(int rc);

/* Grow the map (doubling, capped at map_size_max); waits for open
 * transactions of other threads to end, so the caller must hold none.
 * -ENOSPC when already at the maximum. */
int store_grow(Store *s);

/* The LMDB transaction of t, and the handles of the named databases. */
MDB_txn *store_txn_mdb(StoreTxn *t);
void store_txn_dbis(StoreTxn *t, StoreDbis *ret);

_printf_(3, 4)
void store_set_error(char *errbuf, size_t errlen, const char *fmt, ...);

/* ---- keys ---- */

static inline MDB_val val_of(const void *p, size_t n) {
        return (MDB_val) { .mv_size = n, .mv_data = (void *) p };
}

static inline MDB_val val_str(const char *s) {
        return val_of(s, strlen(s));
}

static inline bool val_eq(const MDB_val *v, const void *p, size_t n) {
        return v->mv_size == n && (n == 0 || memcmp(v->mv_data, p, n) == 0);
}

/* A key string of length 1..max; longer or empty keys cannot exist. */
static inline bool key_ok(const char *s, size_t max) {
        size_t n;

        if (!s)
                return false;
        n = strnlen(s, max + 1);
        return n >= 1 && n <= max;
}

static inline void put_be32(uint8_t *p, uint32_t v) {
        for (int i = 3; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

static inline uint32_t get_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}

static inline void put_be64(uint8_t *p, uint64_t v) {
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}

static inline uint64_t get_be64(const uint8_t *p) {
        uint64_t v = 0;

        for (int i = 0; i < 8; i++)
                v = v << 8 | p[i];
        return v;
}

static inline void cursor_closep(MDB_cursor **c) {
        if (*c)
                mdb_cursor_close(*c);
}

/* Copies a key into a NUL-terminated string of at most max bytes. */
int key_to_str(const MDB_val *k, char *ret, size_t max);

/* Writable-transaction check for the write functions. */
static inline int txn_writable(StoreTxn *t) {
        return t && !t->read_only ? 0 : -EINVAL;
}

/* ---- one cursor walk for every table ---- */

typedef enum WalkMode {
        WALK_ALL,       /* every entry from the start (or after `after`) */
        WALK_KEYS,      /* distinct keys only (DUPSORT tables) */
        WALK_DUPS,      /* the values of one key (DUPSORT), from the first */
} WalkMode;

/* f gets each key and value; returns 0 to go on, > 0 to stop (returned),
 * < 0 error (returned). ALL/KEYS: after (may be NULL) positions strictly
 * after that key. DUPS: key is the key; after (may be NULL) positions
 * strictly after that value. */
typedef int (*WalkFunc)(void *userdata, const MDB_val *k, const MDB_val *v);
int store_walk(StoreTxn *t, MDB_dbi dbi, WalkMode mode, const MDB_val *key, const MDB_val *after,
               WalkFunc f, void *userdata);

/* meta: next id of a counter ("next_group_id", ...), counting from 1. */
int store_next_id(StoreTxn *t, const char *counter, uint64_t *ret);

/* Removes every session of one owner, a VM (vm_id) or a user (user; vm_id
 * NULL), keeping every index in step (vms.c). */
int store_owner_sessions_delete(StoreTxn *t, const char *vm_id, const char *user);

/* backup.c: the copy's temporary file, when it needs a name */
#define BACKUP_TEMP_PREFIX ".backup-"
/* Removes copies a crash left behind (the state directory is locked). */
void store_backup_remove_leftovers(const char *dir);
