/* SPDX-License-Identifier: MIT */
/* The consistency checker: walks meta, vms, disks, vm_disks, sessions and
 * vm_sessions in one read transaction and checks that every record decodes,
 * matches its key, and that the tables and indexes agree both ways. A problem
 * in the data is counted and described (the first ones, as they fit in the
 * caller's buffer) and the walk goes on; an LMDB failure ends the walk. */

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "record.h"
#include "shared/macro.h"
#include "verify.h"


void verify_problem(Verify *v, const char *fmt, ...) {
        va_list ap;
        size_t left;
        int n;

        v->stats.problems++;
        if (!v->errbuf || v->errlen == 0 || v->full)
                return;
        left = v->errlen - v->used;
        va_start(ap, fmt);
        n = vsnprintf(v->errbuf + v->used, left, fmt, ap);
        va_end(ap);
        /* a line that does not fit with its newline is dropped whole */
        if (n < 0 || (size_t) n + 2 > left) {
                v->errbuf[v->used] = 0;
                v->full = true;
                return;
        }
        v->used += (size_t) n;
        v->errbuf[v->used++] = '\n';
        v->errbuf[v->used] = 0;
}

_printf_(2, 3)
static void verify_fatal(Verify *v, const char *fmt, ...) {
        va_list ap;

        if (!v->errbuf || v->errlen == 0)
                return;
        va_start(ap, fmt);
        (void) vsnprintf(v->errbuf, v->errlen, fmt, ap);
        va_end(ap);
}

/* Bytes as printable text: ASCII graphic characters as they are, others as
 * \xNN; at most VERIFY_SHOW_BYTES bytes, then "...". */
const char *show(const void *p, size_t n, char buf[VERIFY_SHOW_MAX]) {
        const uint8_t *b = p;
        size_t o = 0;

        if (n == 0)
                return "(empty)";
        for (size_t i = 0; i < n && i < VERIFY_SHOW_BYTES; i++) {
                if (b[i] > 0x20 && b[i] < 0x7f && b[i] != '\\')
                        buf[o++] = (char) b[i];
                else
                        o += (size_t) snprintf(buf + o, 5, "\\x%02x", b[i]);
        }
        if (n > VERIFY_SHOW_BYTES) {
                memcpy(buf + o, "...", 3);
                o += 3;
        }
        buf[o] = 0;
        return buf;
}

/* A session hash, shortened to its first 8 bytes in hex. */
const char *show_hash(const void *p, size_t n, char buf[VERIFY_SHOW_MAX]) {
        const uint8_t *b = p;
        size_t o = 0;

        for (size_t i = 0; i < n && i < 8; i++)
                o += (size_t) snprintf(buf + o, 3, "%02x", b[i]);
        if (n > 8) {
                memcpy(buf + o, "...", 3);
                o += 3;
        }
        buf[o] = 0;
        return buf;
}

/* A key as a NUL-terminated string of 1..max bytes without NUL; false when
 * it cannot be one. */
bool key_str(const MDB_val *k, char *ret, size_t max) {
        if (k->mv_size == 0 || k->mv_size > max || memchr(k->mv_data, 0, k->mv_size))
                return false;
        memcpy(ret, k->mv_data, k->mv_size);
        ret[k->mv_size] = 0;
        return true;
}

/* The VM record of vm_id, decoded: 0, -ENOENT, -EBADMSG/-EPROTO when it
 * does not decode or names another VM, or an LMDB error. */
static int vm_lookup(Verify *v, const char *vm_id, StoreVm *ret) {
        MDB_val k = val_str(vm_id), d;
        int r;

        r = store_errno(mdb_get(v->txn, v->dbi.vms, &k, &d));
        if (r < 0)
                return r;
        r = record_vm_decode(d.mv_data, d.mv_size, ret);
        if (r < 0)
                return r;
        return strcmp(ret->vm_id, vm_id) == 0 ? 0 : -EBADMSG;
}

static bool vm_has_disk(const StoreVm *vm, const char *disk_id) {
        for (uint32_t i = 0; i < vm->n_disks; i++)
                if (strcmp(vm->disks[i].id, disk_id) == 0)
                        return true;
        return false;
}

/* Is (key, data) in the DUPSORT database dbi? 1 yes, 0 no, < 0 error. */
int dup_exists(Verify *v, MDB_dbi dbi, const void *key, size_t key_len, const void *data,
                      size_t data_len) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k = { .mv_size = key_len, .mv_data = (void *) key };
        MDB_val d = { .mv_size = data_len, .mv_data = (void *) data };
        int rc;

        rc = mdb_cursor_open(v->txn, dbi, &c);
        if (rc != 0)
                return store_errno(rc);
        rc = mdb_cursor_get(c, &k, &d, MDB_GET_BOTH);
        if (rc == MDB_NOTFOUND)
                return 0;
        return rc == 0 ? 1 : store_errno(rc);
}

static int verify_meta(Verify *v) {
        static const struct {
                const char *key;
                size_t size;
        } fixed[] = {
                { "created_at", 8 },
                { "token_key", STORE_HASH_BYTES },
        };
        MDB_val k = val_str("schema_version"), d;
        int rc;

        rc = mdb_get(v->txn, v->dbi.meta, &k, &d);
        if (rc == MDB_NOTFOUND)
                verify_problem(v, "meta: no schema_version");
        else if (rc != 0)
                return store_errno(rc);
        else if (d.mv_size != 4)
                verify_problem(v, "meta: schema_version has %zu bytes, not 4", d.mv_size);
        else {
                const uint8_t *p = d.mv_data;
                uint32_t version = (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 |
                                   (uint32_t) p[2] << 8 | p[3];

                v->stats.schema_version = version;
                if (version == 0 || version > STORE_SCHEMA_VERSION)
                        verify_problem(v, "meta: schema version %" PRIu32
                                       " is not supported (1..%d)", version,
                                       STORE_SCHEMA_VERSION);
        }

        for (size_t i = 0; i < ELEMENTSOF(fixed); i++) {
                k = val_str(fixed[i].key);
                rc = mdb_get(v->txn, v->dbi.meta, &k, &d);
                if (rc == MDB_NOTFOUND)
                        verify_problem(v, "meta: no %s", fixed[i].key);
                else if (rc != 0)
                        return store_errno(rc);
                else if (d.mv_size != fixed[i].size)
                        verify_problem(v, "meta: %s has %zu bytes, not %zu", fixed[i].key,
                                       d.mv_size, fixed[i].size);
        }
        return 0;
}

/* The disks of one VM record: each in `disks`, held by this VM with the same
 * size, and in `vm_disks` under this VM; no id twice. */
static int verify_vm_disks_of(Verify *v, const StoreVm *vm) {
        for (uint32_t i = 0; i < vm->n_disks; i++) {
                const StoreDisk *disk = &vm->disks[i];
                char owner[VMM_VM_ID_MAX + 1], b[VERIFY_SHOW_MAX];
                MDB_val k = val_str(disk->id), d;
                uint64_t size;
                int rc, r;

                if (!disk->id[0]) {
                        verify_problem(v, "vm %s: disk %" PRIu32 " has an empty id", vm->vm_id,
                                       i);
                        continue;
                }
                for (uint32_t j = 0; j < i; j++)
                        if (strcmp(vm->disks[j].id, disk->id) == 0)
                                verify_problem(v, "vm %s: disk %s listed twice", vm->vm_id,
                                               show(disk->id, strlen(disk->id), b));

                rc = mdb_get(v->txn, v->dbi.disks, &k, &d);
                if (rc == MDB_NOTFOUND)
                        verify_problem(v, "vm %s: disk %s is not in the disks table",
                                       vm->vm_id, show(disk->id, strlen(disk->id), b));
                else if (rc != 0)
                        return store_errno(rc);
                else if (record_disk_decode(d.mv_data, d.mv_size, owner, &size) < 0)
                        verify_problem(v, "vm %s: the disks record of %s does not decode",
                                       vm->vm_id, show(disk->id, strlen(disk->id), b));
                else if (strcmp(owner, vm->vm_id) != 0)
                        verify_problem(v, "vm %s: disk %s belongs to vm %s in the disks table",
                                       vm->vm_id, show(disk->id, strlen(disk->id), b), owner);
                else if (size != disk->size)
                        verify_problem(v, "vm %s: disk %s has size %" PRIu64
                                       " in the record, %" PRIu64 " in the disks table",
                                       vm->vm_id, show(disk->id, strlen(disk->id), b),
                                       disk->size, size);

                r = dup_exists(v, v->dbi.vm_disks, vm->vm_id, strlen(vm->vm_id), disk->id,
                               strlen(disk->id));
                if (r < 0)
                        return r;
                if (r == 0)
                        verify_problem(v, "vm %s: disk %s is not in the vm_disks index",
                                       vm->vm_id, show(disk->id, strlen(disk->id), b));
        }
        return 0;
}

static int verify_vms(Verify *v) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, d;
        int rc, r;

        rc = mdb_cursor_open(v->txn, v->dbi.vms, &c);
        if (rc != 0)
                return store_errno(rc);
        for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
                char id[VMM_VM_ID_MAX + 1], b[VERIFY_SHOW_MAX];
                StoreVm vm;

                v->stats.vms++;
                if (!key_str(&k, id, VMM_VM_ID_MAX)) {
                        verify_problem(v, "vms: key %s is not a vm id",
                                       show(k.mv_data, k.mv_size, b));
                        continue;
                }
                r = record_vm_decode(d.mv_data, d.mv_size, &vm);
                if (r < 0) {
                        verify_problem(v, "vm %s: record does not decode (%s)", id,
                                       strerror(-r));
                        continue;
                }
                if (strcmp(vm.vm_id, id) != 0) {
                        verify_problem(v, "vm %s: record names vm %s", id, vm.vm_id);
                        continue;
                }
                r = verify_vm_disks_of(v, &vm);
                if (r >= 0)
                        r = verify_vm_group(v, &vm);
                if (r < 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

/* Checks that disk_id is listed by the record of vm_id; what names the
 * entry in messages. */
static int verify_listed_by(Verify *v, const char *what, const char *disk_id,
                            const char *vm_id) {
        char b[VERIFY_SHOW_MAX];
        StoreVm vm;
        int r;

        r = vm_lookup(v, vm_id, &vm);
        if (r == -ENOENT)
                verify_problem(v, "%s: disk %s belongs to vm %s, which does not exist", what,
                               show(disk_id, strlen(disk_id), b), vm_id);
        else if (r == -EBADMSG || r == -EPROTO)
                return 0;   /* reported by the walk of vms */
        else if (r < 0)
                return r;
        else if (!vm_has_disk(&vm, disk_id))
                verify_problem(v, "%s: disk %s of vm %s is not in the vm's record", what,
                               show(disk_id, strlen(disk_id), b), vm_id);
        return 0;
}

static int verify_disks(Verify *v) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, d;
        int rc, r;

        rc = mdb_cursor_open(v->txn, v->dbi.disks, &c);
        if (rc != 0)
                return store_errno(rc);
        for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
                char id[VMM_DISK_ID_MAX + 1], owner[VMM_VM_ID_MAX + 1], b[VERIFY_SHOW_MAX];
                uint64_t size;

                v->stats.disks++;
                if (!key_str(&k, id, VMM_DISK_ID_MAX)) {
                        verify_problem(v, "disks: key %s is not a disk id",
                                       show(k.mv_data, k.mv_size, b));
                        continue;
                }
                r = record_disk_decode(d.mv_data, d.mv_size, owner, &size);
                if (r < 0) {
                        verify_problem(v, "disks: record of %s does not decode (%s)",
                                       show(id, strlen(id), b), strerror(-r));
                        continue;
                }
                r = verify_listed_by(v, "disks", id, owner);
                if (r < 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

static int verify_vm_disks(Verify *v) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, d;
        int rc, r;

        rc = mdb_cursor_open(v->txn, v->dbi.vm_disks, &c);
        if (rc != 0)
                return store_errno(rc);
        for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
                char vm_id[VMM_VM_ID_MAX + 1], id[VMM_DISK_ID_MAX + 1],
                     owner[VMM_VM_ID_MAX + 1], b[VERIFY_SHOW_MAX];
                MDB_val dk, dd;
                uint64_t size;

                v->stats.vm_disks++;
                if (!key_str(&k, vm_id, VMM_VM_ID_MAX)) {
                        verify_problem(v, "vm_disks: key %s is not a vm id",
                                       show(k.mv_data, k.mv_size, b));
                        continue;
                }
                if (!key_str(&d, id, VMM_DISK_ID_MAX)) {
                        verify_problem(v, "vm_disks: vm %s: entry %s is not a disk id", vm_id,
                                       show(d.mv_data, d.mv_size, b));
                        continue;
                }
                dk = val_str(id);
                rc = mdb_get(v->txn, v->dbi.disks, &dk, &dd);
                if (rc == MDB_NOTFOUND) {
                        verify_problem(v, "vm_disks: vm %s: disk %s is not in the disks table",
                                       vm_id, show(id, strlen(id), b));
                        continue;
                }
                if (rc != 0)
                        return store_errno(rc);
                if (record_disk_decode(dd.mv_data, dd.mv_size, owner, &size) < 0)
                        continue;   /* reported by the walk of disks */
                if (strcmp(owner, vm_id) != 0) {
                        verify_problem(v, "vm_disks: vm %s: disk %s belongs to vm %s", vm_id,
                                       show(id, strlen(id), b), owner);
                        continue;
                }
                r = verify_listed_by(v, "vm_disks", id, vm_id);
                if (r < 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

static int verify_sessions(Verify *v) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, d;
        int rc, r;

        rc = mdb_cursor_open(v->txn, v->dbi.sessions, &c);
        if (rc != 0)
                return store_errno(rc);
        for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
                char b[VERIFY_SHOW_MAX];
                StoreSession session;

                v->stats.sessions++;
                if (k.mv_size != STORE_HASH_BYTES) {
                        verify_problem(v, "sessions: key of %zu bytes (not %d)", k.mv_size,
                                       STORE_HASH_BYTES);
                        continue;
                }
                r = record_session_decode(d.mv_data, d.mv_size, k.mv_data, &session);
                if (r < 0) {
                        verify_problem(v, "session %s: record does not decode (%s)",
                                       show_hash(k.mv_data, k.mv_size, b), strerror(-r));
                        continue;
                }
                r = verify_session_owner(v, &session);
                if (r < 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

static int verify_vm_sessions(Verify *v) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, d;
        int rc, r;

        rc = mdb_cursor_open(v->txn, v->dbi.vm_sessions, &c);
        if (rc != 0)
                return store_errno(rc);
        for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
                char vm_id[VMM_VM_ID_MAX + 1], b[VERIFY_SHOW_MAX];
                StoreSession session;
                MDB_val sd;

                v->stats.vm_sessions++;
                if (!key_str(&k, vm_id, VMM_VM_ID_MAX)) {
                        verify_problem(v, "vm_sessions: key %s is not a vm id",
                                       show(k.mv_data, k.mv_size, b));
                        continue;
                }
                if (d.mv_size != STORE_HASH_BYTES) {
                        verify_problem(v, "vm_sessions: vm %s: entry of %zu bytes (not %d)",
                                       vm_id, d.mv_size, STORE_HASH_BYTES);
                        continue;
                }
                rc = mdb_get(v->txn, v->dbi.sessions, &d, &sd);
                if (rc == MDB_NOTFOUND) {
                        verify_problem(v, "vm_sessions: vm %s: session %s does not exist",
                                       vm_id, show_hash(d.mv_data, d.mv_size, b));
                        continue;
                }
                if (rc != 0)
                        return store_errno(rc);
                r = record_session_decode(sd.mv_data, sd.mv_size, d.mv_data, &session);
                if (r < 0)
                        continue;   /* reported by the walk of sessions */
                if (strcmp(session.vm_id, vm_id) != 0)
                        verify_problem(v, "vm_sessions: vm %s: session %s belongs to vm %s",
                                       vm_id, show_hash(d.mv_data, d.mv_size, b),
                                       session.vm_id);
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_verify(Store *s, char *errbuf, size_t errlen, StoreVerifyStats *ret) {
        static const struct {
                const char *table;
                int (*walk)(Verify *v);
        } walks[] = {
                { "meta", verify_meta },
                { "vms", verify_vms },
                { "disks", verify_disks },
                { "vm_disks", verify_vm_disks },
                { "sessions", verify_sessions },
                { "vm_sessions", verify_vm_sessions },
                { "user_sessions", verify_user_sessions },
                { "session_expiry", verify_session_expiry },
                { "users", verify_users },
                { "groups", verify_groups },
                { "group_vms", verify_group_vms },
                { "bookings", verify_bookings },
                { "booking indexes", verify_booking_indexes },
                { "history", verify_history },
                { "feed", verify_feed },
                { "os", verify_os },
                { "requests", verify_requests },
        };
        Verify v = {
                .errbuf = errbuf,
                .errlen = errlen,
        };
        StoreTxn *t;
        int r = 0;

        if (errbuf && errlen > 0)
                errbuf[0] = 0;
        if (!s) {
                verify_fatal(&v, "no store");
                return -EINVAL;
        }
        r = store_read_begin(s, &t);
        if (r < 0) {
                verify_fatal(&v, "cannot begin a read transaction: %s", strerror(-r));
                return r;
        }
        v.txn = store_txn_mdb(t);
        store_txn_dbis(t, &v.dbi);
        for (size_t i = 0; i < ELEMENTSOF(walks); i++) {
                /* a file of schema 1 (read as it is) has the first tables only */
                if (v.dbi.schema < 2 && i >= 6)
                        break;
                r = walks[i].walk(&v);
                if (r < 0) {
                        verify_fatal(&v, "cannot read table %s: %s", walks[i].table,
                                     strerror(-r));
                        break;
                }
        }
        store_read_end(t);
        if (ret)
                *ret = v.stats;
        if (r < 0)
                return r;
        return v.stats.problems > 0 ? -EBADMSG : 0;
}
