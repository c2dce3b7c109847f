/* SPDX-License-Identifier: MIT */
/* VMs, their disks (one global namespace of disk ids) and the indexes
 * vm_disks (vm_id -> disk ids) and group_vms (group id -> vm_ids). */

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "record.h"
#include "store-internal.h"

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
        r = store_errno(mdb_get(t->txn, t->store->dbi.vms, &k, &v));
        if (r < 0)
                return r;
        *ret = v.mv_data;
        *ret_len = v.mv_size;
        return 0;
}

int store_vm_get(StoreTxn *t, const char *vm_id, StoreVm *ret) {
        const void *data;
        MDB_val k, v;
        int r;

        assert(t && ret);
        r = store_vm_get_raw(t, vm_id, &data, &v.mv_size);
        if (r < 0)
                return r;
        v.mv_data = (void *) data;
        k = val_str(vm_id);
        return vm_decode_checked(&k, &v, ret);
}

int store_disk_get(StoreTxn *t, const char *disk_id, char ret_vm_id[VMM_VM_ID_MAX + 1],
                   uint64_t *ret_size) {
        MDB_val k, v;
        int r;

        assert(t && ret_vm_id && ret_size);
        if (!key_ok(disk_id, VMM_DISK_ID_MAX))
                return -ENOENT;
        k = val_str(disk_id);
        r = store_errno(mdb_get(t->txn, t->store->dbi.disks, &k, &v));
        if (r < 0)
                return r;
        return record_disk_decode(v.mv_data, v.mv_size, ret_vm_id, ret_size);
}

/* 1: disk_id is free for vm_id (absent, or already vm_id's), 0: held by
 * another VM (its id in owner), < 0 error. */
static int disk_free_for(StoreTxn *t, const char *disk_id, const char *vm_id,
                         char owner[VMM_VM_ID_MAX + 1]) {
        uint64_t size;
        int r;

        r = store_disk_get(t, disk_id, owner, &size);
        if (r == -ENOENT)
                return 1;
        if (r < 0)
                return r;
        return strcmp(owner, vm_id) == 0;
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
                        char cand[VMM_DISK_ID_MAX + 1], owner[VMM_VM_ID_MAX + 1];
                        int len, r;

                        len = snprintf(cand, sizeof(cand), "%s-disk%u", vm_id, next);
                        if (len < 0 || (size_t) len >= sizeof(cand))
                                return -ERANGE;
                        if (disk_in(disks, n, cand, (size_t) len))
                                continue;
                        r = disk_free_for(t, cand, vm_id, owner);
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

typedef struct Unlink {
        StoreTxn *t;
        const char *vm_id;
        const StoreDisk *keep;
        uint32_t n_keep;
} Unlink;

static int unlink_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        Unlink *u = userdata;
        char id[VMM_DISK_ID_MAX + 1], owner[VMM_VM_ID_MAX + 1];
        int r;

        r = key_to_str(v, id, VMM_DISK_ID_MAX);
        if (r < 0)
                return r;
        if (disk_in(u->keep, u->n_keep, id, strlen(id)))
                return 0;
        r = disk_free_for(u->t, id, u->vm_id, owner);
        if (r <= 0)     /* a disk of another VM would be a broken index: leave it */
                return MIN(r, 0);
        MDB_val dk = val_str(id);
        int rc = mdb_del(u->t->txn, u->t->store->dbi.disks, &dk, NULL);
        return rc == 0 || rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

/* Removes vm_id's entries from the vm_disks index, and from the disks table
 * those disks not in keep[0..n_keep). */
static int disks_unlink(StoreTxn *t, const char *vm_id, const StoreDisk *keep, uint32_t n_keep) {
        Unlink u = { t, vm_id, keep, n_keep };
        MDB_val k = val_str(vm_id);
        int r, rc;

        r = store_walk(t, t->store->dbi.vm_disks, WALK_DUPS, &k, NULL, unlink_one, &u);
        if (r < 0)
                return r;
        k = val_str(vm_id);
        rc = mdb_del(t->txn, t->store->dbi.vm_disks, &k, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

static int group_index(StoreTxn *t, uint64_t group, const char *vm_id, bool add) {
        uint8_t key[8];
        MDB_val k, v = val_str(vm_id);
        int rc;

        if (group == 0)
                return 0;
        put_be64(key, group);
        k = val_of(key, sizeof key);
        if (add) {
                rc = mdb_put(t->txn, t->store->dbi.group_vms, &k, &v, MDB_NODUPDATA);
                return rc == MDB_KEYEXIST ? 0 : store_errno(rc);
        }
        rc = mdb_del(t->txn, t->store->dbi.group_vms, &k, &v);
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

/* The group index follows vm->group (old: the group it was in, 0: none). */
static int group_move(StoreTxn *t, uint64_t old, const StoreVm *vm) {
        int r = 0;

        if (old == vm->group)
                return 0;
        r = group_index(t, old, vm->vm_id, false);
        return r < 0 ? r : group_index(t, vm->group, vm->vm_id, true);
}

int store_vm_put_same_disks(StoreTxn *t, const StoreVm *vm) {
        _cleanup_free_ uint8_t *rec = NULL;
        size_t rec_len;
        MDB_val k, v;
        int r;

        assert(vm);
        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(vm->vm_id, VMM_VM_ID_MAX) || vm->n_disks > VMM_MAX_DISKS)
                return -EINVAL;
        r = record_vm_encode(vm, &rec, &rec_len);
        if (r < 0)
                return r;
        k = val_str(vm->vm_id);
        v = val_of(rec, rec_len);
        return store_errno(mdb_put(t->txn, t->store->dbi.vms, &k, &v, 0));
}

/* 1 if vm's disks (all with ids) are exactly those of old, in the same
 * order with the same sizes. */
static bool disks_same(const StoreVm *old, const StoreVm *vm) {
        if (old->n_disks != vm->n_disks)
                return false;
        for (uint32_t i = 0; i < vm->n_disks; i++)
                if (vm->disks[i].id[0] == '\0' || old->disks[i].size != vm->disks[i].size ||
                    strncmp(old->disks[i].id, vm->disks[i].id, sizeof old->disks[i].id) != 0)
                        return false;
        return true;
}

int store_vm_put(StoreTxn *t, StoreVm *vm, StoreConflict *ret_conflict) {
        _cleanup_free_ StoreVm *old = NULL, *tmp = NULL;
        _cleanup_free_ uint8_t *rec = NULL;
        Store *s;
        size_t rec_len;
        bool existed;
        MDB_val k, v;
        int r;

        assert(vm);
        r = txn_writable(t);
        if (r < 0)
                return r;
        s = t->store;
        if (!key_ok(vm->vm_id, VMM_VM_ID_MAX) || vm->n_disks > VMM_MAX_DISKS)
                return -EINVAL;
        old = malloc(sizeof *old);
        tmp = malloc(sizeof *tmp);
        if (!old || !tmp)
                return -ENOMEM;
        r = store_vm_get(t, vm->vm_id, old);
        if (r < 0 && r != -ENOENT)
                return r;
        existed = r >= 0;

        /* Most writes (a login's last_seen_at, ram or cpu, a password)
         * leave the disks as they are: then only the VM record changes. */
        if (existed && disks_same(old, vm)) {
                r = group_move(t, old->group, vm);
                return r < 0 ? r : store_vm_put_same_disks(t, vm);
        }

        /* Check everything before writing anything. */
        store_vm_copy(tmp, vm);
        for (uint32_t i = 0; i < vm->n_disks; i++) {
                char owner[VMM_VM_ID_MAX + 1];
                size_t len = strnlen(tmp->disks[i].id, sizeof(tmp->disks[i].id));

                if (len == 0)
                        continue;
                if (len > VMM_DISK_ID_MAX || disk_in(tmp->disks, i, tmp->disks[i].id, len))
                        return -EINVAL;
                r = disk_free_for(t, tmp->disks[i].id, vm->vm_id, owner);
                if (r < 0)
                        return r;
                if (r == 0) {
                        if (ret_conflict) {
                                snprintf(ret_conflict->disk_id, sizeof ret_conflict->disk_id,
                                         "%s", tmp->disks[i].id);
                                snprintf(ret_conflict->vm_id, sizeof ret_conflict->vm_id, "%s",
                                         owner);
                        }
                        return -EBUSY;
                }
        }
        r = disks_assign(t, vm->vm_id, tmp->disks, vm->n_disks);
        if (r < 0)
                return r;
        r = record_vm_encode(tmp, &rec, &rec_len);
        if (r < 0)
                return r;

        r = group_move(t, existed ? old->group : 0, vm);
        if (r < 0)
                return r;
        r = disks_unlink(t, vm->vm_id, tmp->disks, vm->n_disks);
        if (r < 0)
                return r;
        for (uint32_t i = 0; i < vm->n_disks; i++) {
                _cleanup_free_ uint8_t *drec = NULL;
                size_t drec_len;
                MDB_val dk = val_str(tmp->disks[i].id), dv;
                int rc;

                r = record_disk_encode(vm->vm_id, tmp->disks[i].size, &drec, &drec_len);
                if (r < 0)
                        return r;
                dv = val_of(drec, drec_len);
                r = store_errno(mdb_put(t->txn, s->dbi.disks, &dk, &dv, 0));
                if (r < 0)
                        return r;
                k = val_str(vm->vm_id);
                dv = val_str(tmp->disks[i].id);
                rc = mdb_put(t->txn, s->dbi.vm_disks, &k, &dv, MDB_NODUPDATA);
                if (rc != 0 && rc != MDB_KEYEXIST)
                        return store_errno(rc);
        }

        k = val_str(vm->vm_id);
        v = val_of(rec, rec_len);
        r = store_errno(mdb_put(t->txn, s->dbi.vms, &k, &v, 0));
        if (r < 0)
                return r;
        memcpy(vm->disks, tmp->disks, sizeof(StoreDisk) * vm->n_disks);
        return 0;
}

typedef struct HashList {
        uint8_t (*hashes)[STORE_HASH_BYTES];
        size_t n, cap;
} HashList;

static int hash_collect(void *userdata, const StoreSession *s) {
        HashList *l = userdata;

        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 16;
                void *p = realloc(l->hashes, cap * STORE_HASH_BYTES);
                if (!p)
                        return -ENOMEM;
                l->hashes = p;
                l->cap = cap;
        }
        memcpy(l->hashes[l->n++], s->hash, STORE_HASH_BYTES);
        return 0;
}

int store_owner_sessions_delete(StoreTxn *t, const char *vm_id, const char *user) {
        HashList l = { 0 };
        int r;

        r = store_owner_session_foreach(t, vm_id, user, hash_collect, &l);
        for (size_t i = 0; r >= 0 && i < l.n; i++) {
                r = store_session_delete(t, l.hashes[i]);
                if (r == -ENOENT)
                        r = 0;
        }
        free(l.hashes);
        return r;
}

int store_vm_delete(StoreTxn *t, const char *vm_id) {
        StoreVm *vm;
        MDB_val k;
        int r;

        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(vm_id, VMM_VM_ID_MAX))
                return -ENOENT;
        vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        r = store_vm_get(t, vm_id, vm);
        if (r >= 0)
                r = group_index(t, vm->group, vm_id, false);
        free(vm);
        if (r < 0)
                return r;
        k = val_str(vm_id);
        r = store_errno(mdb_del(t->txn, t->store->dbi.vms, &k, NULL));
        if (r < 0)
                return r;
        r = disks_unlink(t, vm_id, NULL, 0);
        if (r < 0)
                return r;
        return store_owner_sessions_delete(t, vm_id, NULL);
}

typedef struct VmWalk {
        StoreVmFunc f;
        void *userdata;
        StoreVm vm;
} VmWalk;

static int vm_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        VmWalk *w = userdata;
        int r = vm_decode_checked(k, v, &w->vm);

        return r < 0 ? r : w->f(w->userdata, &w->vm);
}

int store_vm_foreach(StoreTxn *t, const char *after, StoreVmFunc f, void *userdata) {
        _cleanup_free_ VmWalk *w = malloc(sizeof *w);
        MDB_val a = val_of(after, after ? strlen(after) : 0);

        assert(t && f);
        if (!w)
                return -ENOMEM;
        w->f = f;
        w->userdata = userdata;
        return store_walk(t, t->store->dbi.vms, WALK_ALL, NULL, after ? &a : NULL, vm_walk_one, w);
}

typedef struct DiskWalk {
        StoreDiskFunc f;
        void *userdata;
} DiskWalk;

static int disk_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        DiskWalk *w = userdata;
        char id[VMM_DISK_ID_MAX + 1], vm_id[VMM_VM_ID_MAX + 1];
        uint64_t size;
        int r;

        r = key_to_str(k, id, VMM_DISK_ID_MAX);
        if (r >= 0)
                r = record_disk_decode(v->mv_data, v->mv_size, vm_id, &size);
        return r < 0 ? r : w->f(w->userdata, id, vm_id, size);
}

int store_disk_foreach(StoreTxn *t, const char *after, StoreDiskFunc f, void *userdata) {
        DiskWalk w = { f, userdata };
        MDB_val a = val_of(after, after ? strlen(after) : 0);

        assert(t && f);
        return store_walk(t, t->store->dbi.disks, WALK_ALL, NULL, after ? &a : NULL,
                          disk_walk_one, &w);
}
