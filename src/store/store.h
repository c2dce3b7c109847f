/* SPDX-License-Identifier: MIT */
/* The inventory on disk. This module is the only code that includes
 * <lmdb.h> (record.c is pure codec); callers see negative errno values:
 *   -ENOENT  no such record            -EEXIST  record exists
 *   -EBUSY   a disk id belongs to another VM (conflict)
 *   -ENOSPC  map full (MDB_MAP_FULL; grow, or at its maximum), or disk full
 *            (unavailable)
 *   -EPROTO  database written by a newer schema version; also
 *            MDB_VERSION_MISMATCH (file of an incompatible LMDB)
 *   -EBADMSG a stored record does not decode; also MDB_INVALID (not an LMDB
 *            file), MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INCOMPATIBLE
 *   -EAGAIN  MDB_READERS_FULL; or the map was grown by another process and a
 *            read txn could not adopt the new size without waiting (retry)
 *   -EINVAL  a bad argument to a write: vm_id not 1..VMM_VM_ID_MAX bytes, more
 *            than VMM_MAX_DISKS disks, a disk id over VMM_DISK_ID_MAX, the same
 *            explicit disk id twice in one record, a write on a read txn, an
 *            `after` longer than LMDB's key limit (511)
 *   -ENOMEM  allocation
 *   -EIO     anything else from LMDB (positive errno values from LMDB are
 *            passed on negated)
 * Lookups with an id that cannot exist (empty, too long) are -ENOENT.
 * Nothing here logs above debug.
 *
 * Locking: every transaction holds the read side of a rwlock in Store, from
 * begin to its end (a top-level write txn until its commit/abort); store_grow
 * takes the write side, so it waits for every open txn of every thread, and
 * must not be called by a thread that holds a txn. The rwlock prefers readers
 * (a thread may hold several read txns). Read txn handles are reset and
 * reused (up to 8 kept). */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vmm/protocol.h"

#define STORE_SCHEMA_VERSION 1
#define STORE_PWHASH_MAX 128       /* = SECRET_PWHASH_MAX */
#define STORE_HASH_BYTES 32        /* = SECRET_HASH_BYTES */
#define STORE_DB_FILE "vmmd.mdb"   /* inside the state directory (MDB_NOSUBDIR) */

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
        uint32_t n_disks;
        StoreDisk disks[VMM_MAX_DISKS]; /* in the order given */
} StoreVm;

/* Copies the header and the disks in use (a StoreVm is mostly unused disk
 * slots); the slots past n_disks in dst are left as they were. */
static inline void store_vm_copy(StoreVm *dst, const StoreVm *src) {
        memcpy(dst, src, offsetof(StoreVm, disks) + src->n_disks * sizeof(StoreDisk));
}

typedef struct StoreSession {
        uint8_t hash[STORE_HASH_BYTES]; /* keyed hash of the token: the key */
        char vm_id[VMM_VM_ID_MAX + 1];
        int64_t created_at;             /* ms */
        int64_t expires_at;             /* ms */
} StoreSession;

typedef struct StoreStats {
        uint64_t vms, disks, sessions;
        uint64_t size_bytes;            /* bytes in use (last page * page size) */
        uint64_t map_size_bytes;
} StoreStats;

typedef struct StoreOptions {
        const char *dir;                /* state directory; created 0700 if missing */
        uint64_t map_size_initial;      /* 0: 16 MiB */
        uint64_t map_size_max;          /* 0: 16 GiB */
        unsigned max_readers;           /* 0: 126 */
} StoreOptions;

typedef struct Store Store;
typedef struct StoreTxn StoreTxn;

/* Opens (creating on first start) the environment and the named databases
 * meta, vms, disks, vm_disks (DUPSORT), sessions, vm_sessions (DUPSORT);
 * records the schema version and creation time, and creates the token hash
 * key on first start. Runs mdb_reader_check(). On failure fills errbuf with a
 * sentence for the operator (e.g. "database schema version 7 is newer than
 * this vmmd supports (1)"). */
int store_open(const StoreOptions *opts, Store **ret, char *errbuf, size_t errlen);
Store *store_close(Store *s);   /* accepts NULL, returns NULL */

const char *store_path(Store *s);                 /* path of the database file */
void store_hash_key(Store *s, uint8_t ret[32]);   /* the token hash key */
int64_t store_created_at(Store *s);               /* ms */

/* Read transactions: any thread, many at once; each is short (one request).
 * They never wait for a writer. */
int store_read_begin(Store *s, StoreTxn **ret);
void store_read_end(StoreTxn *t);                 /* accepts NULL */

/* Write transactions: only one thread (the writer) uses these. */
int store_write_begin(Store *s, StoreTxn **ret);
/* A nested transaction: one request inside a group commit. */
int store_child_begin(StoreTxn *parent, StoreTxn **ret);
/* Commit (durable for a top-level txn: fsynced before return; a child txn
 * commits into its parent). t is freed whatever the result; on failure
 * nothing of it is applied. On a read txn: the same as store_read_end. */
int store_commit(StoreTxn *t);
void store_abort(StoreTxn *t);                    /* accepts NULL; frees t; read txn too */
/* Grow the map (doubling, capped at map_size_max). Call only from the writer
 * thread with no write txn open; waits for open read transactions to end.
 * -ENOSPC when already at the maximum. */
int store_grow(Store *s);

/* VMs */
int store_vm_get(StoreTxn *t, const char *vm_id, StoreVm *ret);
/* Inserts or replaces vm (keyed by vm_id), its disks table entries and the
 * vm_disks index. Disks whose id is "" get "<vm_id>-disk<N>", the lowest
 * N >= 1 not used by another VM's disk nor by another disk of this record
 * (the VM's own previous disks are free); the ids chosen are written into
 * vm->disks (only on success; on failure vm is untouched). A disk id held by
 * another VM: -EBUSY, nothing written (all checks precede the first write).
 * Disks of the previous record that are not in the new one are removed.
 * The record is stored as given otherwise (timestamps are the caller's). */
/* The stored bytes of a VM record, valid until t ends (for a cache that
 * compares them with bytes it decoded before). -ENOENT if absent. */
int store_vm_get_raw(StoreTxn *t, const char *vm_id, const void **ret, size_t *ret_len);
int store_vm_put(StoreTxn *t, StoreVm *vm);
/* Rewrites only the VM record: for a caller that read vm with store_vm_get
 * in this same transaction and changed no disk (last_seen_at, ram, cpu, the
 * password). store_vm_put finds the same by itself, at the cost of reading
 * the record again. */
int store_vm_put_same_disks(StoreTxn *t, const StoreVm *vm);
/* Removes the VM, its disks and all its sessions. -ENOENT if absent. */
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

/* Sessions */
/* Insert or replace; a replaced session of another VM moves to this VM's
 * index. The VM need not exist (the caller checks). */
int store_session_put(StoreTxn *t, const StoreSession *s);
int store_session_get(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES], StoreSession *ret);
int store_session_delete(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES]); /* -ENOENT */
/* All sessions of a VM (by hash order); at most max, *ret_n set to the
 * number stored (and -E2BIG if there were more than max, ret[0..max) filled).
 * An index entry without its session record: -EBADMSG. */
int store_vm_sessions(StoreTxn *t, const char *vm_id, StoreSession *ret, size_t max,
                      size_t *ret_n);
typedef int (*StoreSessionFunc)(void *userdata, const StoreSession *s);
/* after: a hash, or NULL */
int store_session_foreach(StoreTxn *t, const uint8_t *after, StoreSessionFunc f, void *userdata);
/* The sessions of one VM, until f returns non-zero (which is returned). */
int store_vm_session_foreach(StoreTxn *t, const char *vm_id, StoreSessionFunc f,
                             void *userdata);

/* Distinct vm_ids that hold at least one stored session (expired or not),
 * in byte order, from the vm_sessions index: the "authorized" listing walks
 * this instead of every VM. */
typedef int (*StoreVmIdFunc)(void *userdata, const char *vm_id);
int store_session_vm_foreach(StoreTxn *t, const char *after, StoreVmIdFunc f, void *userdata);

int store_stats(StoreTxn *t, StoreStats *ret);

/* Writes a consistent, compacted copy of the database to fd: a file, a pipe
 * or a socket (any thread; takes a read transaction, so writers go on).
 * *ret_bytes: bytes written. Returns -ECANCELED soon after *cancel (may be
 * NULL) becomes true, even when nobody reads the other end of fd. */
int store_backup(Store *s, int fd, uint64_t *ret_bytes, const atomic_bool *cancel);

/* Consistency check (verify.c), in one read transaction: every record decodes
 * and matches its key, the disks table and the vm_disks and vm_sessions
 * indexes agree with the VM and session records both ways, and meta holds a
 * supported schema version. 0: consistent; -EBADMSG: problems found, the
 * first ones in errbuf (one per line, as many as fit); other negative errno:
 * the walk itself failed (errbuf says why). ret (may be NULL) gets the counts
 * seen so far either way. */
typedef struct StoreVerifyStats {
        uint32_t schema_version;
        uint64_t vms, disks, vm_disks, sessions, vm_sessions;   /* entries walked */
        uint64_t problems;
} StoreVerifyStats;

int store_verify(Store *s, char *errbuf, size_t errlen, StoreVerifyStats *ret);
