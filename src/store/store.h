/* SPDX-License-Identifier: MIT */
/* Layer L0 (src/store): the inventory on disk, behind an interface that
 * names no LMDB type and no LMDB-only behaviour (a second backend can sit
 * behind it). Callers see negative errno values:
 *   -ENOENT  no such record            -EEXIST  record exists
 *   -EBUSY   a disk id belongs to another VM (conflict; see StoreConflict)
 *   -ENOSPC  storage full (the map at its maximum, or the disk) (unavailable)
 *   -EPROTO  database written by a newer schema version, or a file of an
 *            incompatible storage library version
 *   -EBADMSG a stored record does not decode, or the file is not a database
 *            of ours, or is damaged
 *   -EAGAIN  storage busy (too many readers; retry)
 *   -EINVAL  a bad argument to a write (an id out of range, more than
 *            VMM_MAX_DISKS disks, the same explicit disk id twice in one
 *            record, a write on a read txn, an `after` no key can exceed)
 *   -ENOMEM  allocation
 *   -EIO     anything else
 * Lookups with an id that cannot exist (empty, too long) are -ENOENT.
 * Nothing here logs: the daemon logs once, where it decides.
 *
 * Threads: read transactions on any thread, many at once, each short (one
 * request); writes on one thread at a time, through store_write_batch (one
 * durable commit for many requests) or store_write_begin. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vmm/protocol.h"

#define STORE_SCHEMA_VERSION 4
#define STORE_PWHASH_MAX 128       /* = SECRET_PWHASH_MAX */
#define STORE_HASH_BYTES 32        /* = SECRET_HASH_BYTES */
#define STORE_DB_FILE "vmmd.mdb"   /* inside the state directory */
#define STORE_NAME_MAX VMM_USER_NAME_MAX
#define STORE_IP_LEN 46            /* INET6_ADDRSTRLEN */
#define STORE_TEXT_MAX 1024        /* OS iso/qcow2 paths, rejection reasons */

typedef enum StoreRole {
        STORE_ROLE_NONE = 0,
        STORE_ROLE_VIEWER,
        STORE_ROLE_USER,
        STORE_ROLE_ADMIN,
        _STORE_ROLE_MAX,
        _STORE_ROLE_INVALID = -1,
} StoreRole;

typedef enum StoreAccess {
        STORE_ACCESS_ACTIVE = 0,
        STORE_ACCESS_PENDING,
        STORE_ACCESS_SUSPENDED,
        _STORE_ACCESS_MAX,
        _STORE_ACCESS_INVALID = -1,
} StoreAccess;

typedef struct StoreDisk {
        char id[VMM_DISK_ID_MAX + 1];   /* "" on input to store_vm_put: assign one */
        uint64_t size;
} StoreDisk;

typedef struct StoreVm {
        char vm_id[VMM_VM_ID_MAX + 1];
        char pwhash[STORE_PWHASH_MAX];  /* argon2id string, NUL-terminated */
        bool described;                 /* ram/cpu/disks given (register, vm.add) */
        uint32_t ram;                   /* 0 when not described */
        uint32_t cpu;
        int64_t registered_at;          /* ms */
        int64_t updated_at;             /* ms */
        int64_t last_seen_at;           /* ms; -1 = never */
        /* part 2 (record version 2; a version 1 record reads as the defaults) */
        char hostname[VMM_HOSTNAME_MAX + 1];    /* "" = nil */
        uint32_t n_ip;
        char ip[VMM_IP_MAX][STORE_IP_LEN];
        bool has_os;
        char os_name[VMM_OS_NAME_MAX + 1];
        char os_version[VMM_OS_NAME_MAX + 1];
        char owner[STORE_NAME_MAX + 1];         /* "" = nil */
        uint64_t group;                         /* 0 = in no group */
        uint8_t access;                         /* StoreAccess */
        bool requested;                 /* created from a request, never logged in */
        int64_t free_since;             /* its creation (the end of its last booking
                                         * is its newest history entry) */
        uint32_t n_disks;
        StoreDisk disks[VMM_MAX_DISKS]; /* in the order given; last member */
} StoreVm;

/* Copies the header and the disks in use (a StoreVm is mostly unused disk
 * slots); the slots past n_disks in dst are left as they were. */
static inline void store_vm_copy(StoreVm *dst, const StoreVm *src) {
        memcpy(dst, src, offsetof(StoreVm, disks) + src->n_disks * sizeof(StoreDisk));
}

/* A session belongs to a VM (vm_id set) or to a user (user set). */
typedef struct StoreSession {
        uint8_t hash[STORE_HASH_BYTES]; /* keyed hash of the token: the key */
        char vm_id[VMM_VM_ID_MAX + 1];
        char user[STORE_NAME_MAX + 1];
        int64_t created_at;             /* ms */
        int64_t expires_at;             /* ms */
} StoreSession;

typedef struct StoreUser {
        char name[STORE_NAME_MAX + 1];
        uint8_t role;                   /* StoreRole */
        char pwhash[STORE_PWHASH_MAX];
        int64_t created_at;
        int64_t last_login_at;          /* -1 = never */
} StoreUser;

typedef struct StoreGroup {
        uint64_t id;
        char name[VMM_GROUP_NAME_MAX + 1];
        int64_t created_at;
} StoreGroup;

typedef struct StoreBooking {
        char vm_id[VMM_VM_ID_MAX + 1];
        char user[STORE_NAME_MAX + 1];
        int64_t started_at;
        int64_t expires_at;
        bool warned;                    /* booking.expiring sent for this expires_at */
} StoreBooking;

typedef enum StoreHistoryAction {
        STORE_HISTORY_BOOK = 0,
        STORE_HISTORY_RENEW,
        STORE_HISTORY_CANCEL,
        STORE_HISTORY_EXPIRE,
        STORE_HISTORY_END,
        _STORE_HISTORY_MAX,
        _STORE_HISTORY_INVALID = -1,
} StoreHistoryAction;

typedef struct StoreHistory {
        uint64_t feed;                  /* the feed position of its event: the key */
        int64_t time;
        char vm_id[VMM_VM_ID_MAX + 1];
        char user[STORE_NAME_MAX + 1];
        uint8_t action;                 /* StoreHistoryAction */
        int64_t expires_at;             /* -1 = nil */
        char by[STORE_NAME_MAX + 1];    /* who did it; "" = the holder or the timer */
} StoreHistory;

typedef struct StoreOs {
        uint64_t id;
        char name[VMM_OS_NAME_MAX + 1];
        char version[VMM_OS_NAME_MAX + 1];
        char iso[STORE_TEXT_MAX + 1];           /* "" = nil */
        char qcow2[STORE_TEXT_MAX + 1];         /* "" = nil */
        char description[VMM_DESCRIPTION_MAX + 1];
} StoreOs;

typedef enum StoreRequestState {
        STORE_REQUEST_PENDING = 0,
        STORE_REQUEST_APPROVED,
        STORE_REQUEST_REJECTED,
        STORE_REQUEST_CANCELLED,
        _STORE_REQUEST_STATE_MAX,
        _STORE_REQUEST_STATE_INVALID = -1,
} StoreRequestState;

typedef struct StoreRequest {
        uint64_t id;
        char requester[STORE_NAME_MAX + 1];
        char description[VMM_DESCRIPTION_MAX + 1];
        uint32_t ram, cpu;
        uint32_t n_disks;
        uint64_t disks[VMM_MAX_DISKS];          /* sizes, GiB */
        uint64_t os_id;                         /* 0 = nil */
        uint32_t count;
        uint8_t state;                          /* StoreRequestState */
        int64_t created_at;
        int64_t decided_at;                     /* -1 = nil */
        char decided_by[STORE_NAME_MAX + 1];
        char reason[STORE_TEXT_MAX + 1];
        uint32_t n_vm_ids;
        char vm_ids[VMM_REQUEST_COUNT_MAX][VMM_VM_ID_MAX + 1];
} StoreRequest;

typedef struct StoreStats {
        uint64_t vms, disks, sessions, users, groups, bookings, os, requests;
        uint64_t feed_last, feed_oldest;        /* positions; 0 = the feed is empty */
        uint64_t size_bytes;                    /* bytes in use */
        uint64_t map_size_bytes;                /* bytes it may use before growing */
} StoreStats;

typedef struct StoreOptions {
        const char *dir;                /* state directory; created 0700 if missing */
        uint64_t map_size_initial;      /* 0: 16 MiB */
        uint64_t map_size_max;          /* 0: 16 GiB */
        unsigned max_readers;           /* 0: 126 */
        uint64_t event_history;         /* feed events kept; 0: VMM_EVENT_HISTORY */
        bool no_sync;                   /* commits are not durable (fuzzing only) */
        bool read_only;                 /* look, never write (no creation, no upgrade) */
} StoreOptions;

/* What a -EBUSY from store_vm_put was about. */
typedef struct StoreConflict {
        char disk_id[VMM_DISK_ID_MAX + 1];
        char vm_id[VMM_VM_ID_MAX + 1];          /* the VM that holds it */
} StoreConflict;

typedef struct Store Store;
typedef struct StoreTxn StoreTxn;

/* ---- environment and transactions (env.c) ---- */

/* Opens (creating on first start) the database in opts->dir; records the
 * schema version and creation time, and creates the token hash key on first
 * start. A database of schema version 1 is upgraded in one transaction. On
 * failure fills errbuf with a sentence for the operator (e.g. "database
 * schema version 7 is newer than this vmmd supports (2)"). ret_upgraded (may
 * be NULL): the schema version it was upgraded from, 0 if none. */
int store_open(const StoreOptions *opts, Store **ret, unsigned *ret_upgraded, char *errbuf,
               size_t errlen);
Store *store_close(Store *s);   /* accepts NULL, returns NULL */

const char *store_path(Store *s);                 /* path of the database file */
void store_hash_key(Store *s, uint8_t ret[32]);   /* the token hash key */
int64_t store_created_at(Store *s);               /* ms */

/* Read transactions: any thread, many at once; each is short (one request).
 * They never wait for a writer. */
int store_read_begin(Store *s, StoreTxn **ret);
void store_read_end(StoreTxn *t);                 /* accepts NULL */

/* A write transaction (one writer thread at a time). store_commit is durable
 * for a top-level txn: on stable storage before it returns. */
int store_write_begin(Store *s, StoreTxn **ret);
/* A savepoint inside a write transaction: one request of a group commit. */
int store_child_begin(StoreTxn *parent, StoreTxn **ret);
/* t is freed whatever the result; on failure nothing of it is applied. On a
 * read txn: the same as store_read_end. */
int store_commit(StoreTxn *t);
void store_abort(StoreTxn *t);                    /* accepts NULL; frees t; read txn too */

/* Group commit: runs f(items[i], txn) for each item in a savepoint of one
 * transaction and commits once, durably. results[i] gets each item's return
 * (an item that fails changes nothing; the others still commit). When
 * storage fills up, the store makes room (grows) and runs the batch again
 * (so f must start from what the transaction shows); an item that cannot fit
 * even then gets -ENOSPC. When one transaction cannot hold the whole batch,
 * it is committed in parts. Returns the number of commits, or a negative
 * errno when nothing could be committed (results[] then all < 0). */
typedef int (*StoreBatchFunc)(void *item, StoreTxn *t);
int store_write_batch(Store *s, void *const *items, size_t n, StoreBatchFunc f, int *results);

int store_stats(StoreTxn *t, StoreStats *ret);

/* Durability and what readers see. Every commit has a sequence number, and
 * numbers only grow. A commit is visible to new read transactions as soon as
 * it returns; it is durable (survives a power cut) once store_durable_seq()
 * has reached it: at the latest when the next commit or store_sync()
 * returns. (One sync per commit: each commit's sync also makes the one
 * before it durable.) */
uint64_t store_committed_seq(Store *s);
uint64_t store_durable_seq(Store *s);
/* Makes everything committed durable. */
int store_sync(Store *s);
/* Data syncs made so far (0 with no_sync). */
uint64_t store_sync_count(Store *s);
/* The commit a read transaction sees. */
uint64_t store_txn_seq(StoreTxn *t);
/* The newest commit seen by read transactions begun since the last call
 * (0: none), and forget it: for the one thread that serves replies, to hold
 * a reply until what it showed is durable. */
uint64_t store_read_seq_take(Store *s);

/* ---- VMs and disks (vms.c) ---- */

int store_vm_get(StoreTxn *t, const char *vm_id, StoreVm *ret);
/* The stored bytes of a VM record, valid until t ends (for a cache that
 * compares them with bytes it decoded before). -ENOENT if absent. */
int store_vm_get_raw(StoreTxn *t, const char *vm_id, const void **ret, size_t *ret_len);
/* Inserts or replaces vm (keyed by vm_id), its disks and their index. Disks
 * whose id is "" get "<vm_id>-disk<N>", the lowest N >= 1 not used by
 * another VM's disk nor by another disk of this record (the VM's own previous
 * disks are free); the ids chosen are written into vm->disks (only on
 * success). A disk id held by another VM: -EBUSY, nothing written, and
 * *ret_conflict (may be NULL) names the disk and its VM. Disks of the
 * previous record that are not in the new one are removed. The group index
 * follows vm->group. The record is stored as given otherwise (timestamps are
 * the caller's). */
int store_vm_put(StoreTxn *t, StoreVm *vm, StoreConflict *ret_conflict);
/* Rewrites only the VM record: for a caller that read vm with store_vm_get
 * in this same transaction and changed neither disks nor group. */
int store_vm_put_same_disks(StoreTxn *t, const StoreVm *vm);
/* Removes the VM, its disks, its sessions and its group membership (not its
 * booking: the caller ends that first). -ENOENT if absent. */
int store_vm_delete(StoreTxn *t, const char *vm_id);

/* Callbacks return 0 to go on, > 0 to stop (returned by foreach), < 0 error
 * (returned by foreach). after == NULL starts at the beginning; otherwise
 * iteration starts at the first key strictly greater than after (which need
 * not exist). Keys are in byte order. */
typedef int (*StoreVmFunc)(void *userdata, const StoreVm *vm);
int store_vm_foreach(StoreTxn *t, const char *after, StoreVmFunc f, void *userdata);

typedef int (*StoreDiskFunc)(void *userdata, const char *disk_id, const char *vm_id,
                             uint64_t size);
int store_disk_foreach(StoreTxn *t, const char *after, StoreDiskFunc f, void *userdata);
/* -ENOENT when no such disk */
int store_disk_get(StoreTxn *t, const char *disk_id, char ret_vm_id[VMM_VM_ID_MAX + 1],
                   uint64_t *ret_size);

/* ---- sessions (sessions.c) ---- */

/* Insert or replace (a replaced session moves between owners' indexes and
 * its expiry index entry follows expires_at). The owner need not exist (the
 * caller checks). */
int store_session_put(StoreTxn *t, const StoreSession *s);
int store_session_get(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES], StoreSession *ret);
int store_session_delete(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES]); /* -ENOENT */
typedef int (*StoreSessionFunc)(void *userdata, const StoreSession *s);
/* Every session, by hash; after: a hash, or NULL. */
int store_session_foreach(StoreTxn *t, const uint8_t *after, StoreSessionFunc f, void *userdata);
/* The sessions of one VM (vm_id) or one user (user; vm_id NULL), by hash. */
int store_owner_session_foreach(StoreTxn *t, const char *vm_id, const char *user,
                                StoreSessionFunc f, void *userdata);
/* Sessions by expiry time, soonest first, while expires_at <= until. */
int store_session_expiry_foreach(StoreTxn *t, int64_t until, StoreSessionFunc f,
                                 void *userdata);
/* Distinct vm_ids that hold at least one stored session (expired or not),
 * in byte order: the "authorized" listing walks this instead of every VM. */
typedef int (*StoreIdFunc)(void *userdata, const char *id);
int store_session_vm_foreach(StoreTxn *t, const char *after, StoreIdFunc f, void *userdata);

/* ---- users (users.c) ---- */

int store_user_get(StoreTxn *t, const char *name, StoreUser *ret);
int store_user_put(StoreTxn *t, const StoreUser *u);
/* Removes the user and its sessions (not its bookings: the caller ends
 * them first). -ENOENT if absent. */
int store_user_delete(StoreTxn *t, const char *name);
typedef int (*StoreUserFunc)(void *userdata, const StoreUser *u);
int store_user_foreach(StoreTxn *t, const char *after, StoreUserFunc f, void *userdata);

/* ---- groups (groups.c) ---- */

int store_group_get(StoreTxn *t, uint64_t id, StoreGroup *ret);
/* -EEXIST when another group has that name. */
int store_group_find(StoreTxn *t, const char *name, uint64_t *ret_id);
/* A new group (its id the next never used); fills g->id. -EEXIST for a
 * taken name. */
int store_group_create(StoreTxn *t, StoreGroup *g);
/* Rename; -EEXIST for a name another group holds. */
int store_group_put(StoreTxn *t, const StoreGroup *g);
/* Removes the group; its VMs stay, without a group. */
int store_group_delete(StoreTxn *t, uint64_t id);
typedef int (*StoreGroupFunc)(void *userdata, const StoreGroup *g);
int store_group_foreach(StoreTxn *t, uint64_t after, StoreGroupFunc f, void *userdata);
/* The VMs of a group, by vm_id. */
int store_group_vm_foreach(StoreTxn *t, uint64_t id, StoreIdFunc f, void *userdata);

/* ---- bookings and their history (bookings.c) ---- */

int store_booking_get(StoreTxn *t, const char *vm_id, StoreBooking *ret);
/* Insert or replace; the expiry and user indexes follow. */
int store_booking_put(StoreTxn *t, const StoreBooking *b);
int store_booking_delete(StoreTxn *t, const char *vm_id);   /* -ENOENT */
typedef int (*StoreBookingFunc)(void *userdata, const StoreBooking *b);
int store_booking_foreach(StoreTxn *t, const char *after, StoreBookingFunc f, void *userdata);
int store_user_booking_foreach(StoreTxn *t, const char *user, const char *after,
                               StoreBookingFunc f, void *userdata);
size_t store_user_booking_count(StoreTxn *t, const char *user);
/* Bookings by expires_at, soonest first, while expires_at <= until. */
int store_booking_expiry_foreach(StoreTxn *t, int64_t until, StoreBookingFunc f,
                                 void *userdata);
/* The soonest expires_at of any booking; -ENOENT when there is none. */
int store_booking_next_expiry(StoreTxn *t, int64_t *ret);

int store_history_add(StoreTxn *t, const StoreHistory *h);
typedef int (*StoreHistoryFunc)(void *userdata, const StoreHistory *h);
/* Newest first, entries with feed < before (0: from the newest); of one user
 * and/or one VM (NULL: any). */
int store_history_foreach(StoreTxn *t, const char *user, const char *vm_id, uint64_t before,
                          StoreHistoryFunc f, void *userdata);
/* The newest history entry of a VM: -ENOENT when it has none. */
int store_history_newest(StoreTxn *t, const char *vm_id, StoreHistory *ret);

/* ---- the durable event feed (feed.c) ---- */

/* Appends an event (MessagePack bytes, opaque here) at the next position,
 * without gaps for the life of the database; drops the oldest beyond the
 * configured history. *ret_pos: its position. */
int store_feed_append(StoreTxn *t, const void *data, size_t len, uint64_t *ret_pos);
/* Last and oldest kept positions (0, 0 when empty). */
int store_feed_bounds(StoreTxn *t, uint64_t *ret_last, uint64_t *ret_oldest);
typedef int (*StoreFeedFunc)(void *userdata, uint64_t pos, const void *data, size_t len);
/* Events with position > after, in order. */
int store_feed_foreach(StoreTxn *t, uint64_t after, StoreFeedFunc f, void *userdata);

/* ---- OS catalog and VM requests (catalog.c) ---- */

int store_os_create(StoreTxn *t, StoreOs *os);          /* fills os->id */
int store_os_get(StoreTxn *t, uint64_t id, StoreOs *ret);
int store_os_delete(StoreTxn *t, uint64_t id);
typedef int (*StoreOsFunc)(void *userdata, const StoreOs *os);
int store_os_foreach(StoreTxn *t, StoreOsFunc f, void *userdata);

int store_request_create(StoreTxn *t, StoreRequest *rq);    /* fills rq->id */
int store_request_get(StoreTxn *t, uint64_t id, StoreRequest *ret);
int store_request_put(StoreTxn *t, const StoreRequest *rq);
typedef int (*StoreRequestFunc)(void *userdata, const StoreRequest *rq);
int store_request_foreach(StoreTxn *t, uint64_t after, StoreRequestFunc f, void *userdata);

/* ---- backup (backup.c) ---- */

/* Writes a consistent, compacted copy of the database to fd: a file, a pipe
 * or a socket (any thread). The copy is made to a temporary file in the
 * state directory first, so storage is held only while that local copy is
 * taken, never while a slow reader drains fd. A regular file is fsynced
 * before this returns. *ret_bytes: bytes written. Returns -ECANCELED soon
 * after *cancel (may be NULL) becomes true, even when nobody reads fd. */
int store_backup(Store *s, int fd, uint64_t *ret_bytes, const atomic_bool *cancel);

/* ---- consistency check (verify.c) ---- */

/* In one read transaction: every record decodes and matches its key, every
 * table and its indexes agree both ways, and meta holds a supported schema
 * version. 0: consistent; -EBADMSG: problems found, the first ones in errbuf
 * (one per line, as many as fit); other negative errno: the walk itself
 * failed (errbuf says why). ret (may be NULL) gets the counts seen so far
 * either way. */
typedef struct StoreVerifyStats {
        uint32_t schema_version;
        uint64_t vms, disks, vm_disks, sessions, vm_sessions;   /* entries walked */
        uint64_t user_sessions, session_expiry;
        uint64_t users, groups, group_vms, bookings, booking_expiry, user_bookings;
        uint64_t history, feed, os, requests;
        uint64_t problems;
} StoreVerifyStats;

int store_verify(Store *s, char *errbuf, size_t errlen, StoreVerifyStats *ret);
