/* SPDX-License-Identifier: MIT */
/* Groups, keyed by a big-endian id that is never reused; their names are
 * unique (group_names: name -> id). The VMs of a group are the group_vms
 * index, which store_vm_put keeps in step with each VM's group. */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "record.h"
#include "store-internal.h"

static MDB_val id_key(uint64_t id, uint8_t buf[8]) {
        put_be64(buf, id);
        return val_of(buf, 8);
}

int store_group_get(StoreTxn *t, uint64_t id, StoreGroup *ret) {
        uint8_t kb[8];
        MDB_val k = id_key(id, kb), v;
        int r;

        assert(t && ret);
        r = store_errno(mdb_get(t->txn, t->store->dbi.groups, &k, &v));
        if (r < 0)
                return r;
        r = record_group_decode(v.mv_data, v.mv_size, ret);
        return r >= 0 && ret->id != id ? -EBADMSG : r;
}

int store_group_find(StoreTxn *t, const char *name, uint64_t *ret_id) {
        MDB_val k, v;
        int r;

        if (!key_ok(name, VMM_GROUP_NAME_MAX))
                return -ENOENT;
        k = val_str(name);
        r = store_errno(mdb_get(t->txn, t->store->dbi.group_names, &k, &v));
        if (r < 0)
                return r;
        if (v.mv_size != 8)
                return -EBADMSG;
        *ret_id = get_be64(v.mv_data);
        return 0;
}

static int group_write(StoreTxn *t, const StoreGroup *g) {
        _cleanup_free_ uint8_t *rec = NULL;
        uint8_t kb[8];
        size_t len;
        MDB_val k = id_key(g->id, kb), v, nk = val_str(g->name), nv = val_of(kb, 8);
        int r;

        r = record_group_encode(g, &rec, &len);
        if (r < 0)
                return r;
        v = val_of(rec, len);
        r = store_errno(mdb_put(t->txn, t->store->dbi.groups, &k, &v, 0));
        if (r < 0)
                return r;
        return store_errno(mdb_put(t->txn, t->store->dbi.group_names, &nk, &nv, 0));
}

int store_group_create(StoreTxn *t, StoreGroup *g) {
        uint64_t id;
        int r;

        assert(g);
        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(g->name, VMM_GROUP_NAME_MAX))
                return -EINVAL;
        r = store_group_find(t, g->name, &id);
        if (r >= 0)
                return -EEXIST;
        if (r != -ENOENT)
                return r;
        r = store_next_id(t, "next_group_id", &id);
        if (r < 0)
                return r;
        g->id = id;
        return group_write(t, g);
}

int store_group_put(StoreTxn *t, const StoreGroup *g) {
        StoreGroup old;
        uint64_t other;
        int r;

        assert(g);
        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(g->name, VMM_GROUP_NAME_MAX))
                return -EINVAL;
        r = store_group_get(t, g->id, &old);
        if (r < 0)
                return r;
        r = store_group_find(t, g->name, &other);
        if (r >= 0 && other != g->id)
                return -EEXIST;
        if (r < 0 && r != -ENOENT)
                return r;
        if (strcmp(old.name, g->name) != 0) {
                MDB_val nk = val_str(old.name);
                r = store_errno(mdb_del(t->txn, t->store->dbi.group_names, &nk, NULL));
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        return group_write(t, g);
}

typedef struct Members {
        char (*ids)[VMM_VM_ID_MAX + 1];
        size_t n, cap;
} Members;

static int member_collect(void *userdata, const char *id) {
        Members *m = userdata;

        if (m->n == m->cap) {
                size_t cap = m->cap ? m->cap * 2 : 16;
                void *p = realloc(m->ids, cap * sizeof m->ids[0]);
                if (!p)
                        return -ENOMEM;
                m->ids = p;
                m->cap = cap;
        }
        memcpy(m->ids[m->n++], id, VMM_VM_ID_MAX + 1);
        return 0;
}

int store_group_delete(StoreTxn *t, uint64_t id) {
        StoreGroup g;
        Members m = { 0 };
        uint8_t kb[8];
        MDB_val k = id_key(id, kb), nk;
        int r;

        r = txn_writable(t);
        if (r < 0)
                return r;
        r = store_group_get(t, id, &g);
        if (r < 0)
                return r;
        /* its VMs stay, without a group */
        r = store_group_vm_foreach(t, id, member_collect, &m);
        StoreVm *vm = malloc(sizeof *vm);
        if (!vm)
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < m.n; i++) {
                r = store_vm_get(t, m.ids[i], vm);
                if (r == -ENOENT) {
                        r = 0;
                        continue;
                }
                if (r >= 0) {
                        vm->group = 0;
                        r = store_vm_put(t, vm, NULL);
                }
        }
        free(vm);
        free(m.ids);
        if (r < 0)
                return r;
        k = id_key(id, kb);
        r = store_errno(mdb_del(t->txn, t->store->dbi.groups, &k, NULL));
        if (r < 0)
                return r;
        k = id_key(id, kb);
        r = store_errno(mdb_del(t->txn, t->store->dbi.group_vms, &k, NULL));
        if (r < 0 && r != -ENOENT)
                return r;
        nk = val_str(g.name);
        r = store_errno(mdb_del(t->txn, t->store->dbi.group_names, &nk, NULL));
        return r == -ENOENT ? 0 : r;
}

typedef struct GroupWalk {
        StoreGroupFunc f;
        StoreIdFunc idf;
        void *userdata;
} GroupWalk;

static int group_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        GroupWalk *w = userdata;
        StoreGroup g;
        int r;

        if (k->mv_size != 8)
                return -EBADMSG;
        r = record_group_decode(v->mv_data, v->mv_size, &g);
        if (r >= 0 && g.id != get_be64(k->mv_data))
                r = -EBADMSG;
        return r < 0 ? r : w->f(w->userdata, &g);
}

int store_group_foreach(StoreTxn *t, uint64_t after, StoreGroupFunc f, void *userdata) {
        GroupWalk w = { .f = f, .userdata = userdata };
        uint8_t kb[8];
        MDB_val a = id_key(after, kb);

        assert(t && f);
        return store_walk(t, t->store->dbi.groups, WALK_ALL, NULL, after ? &a : NULL,
                          group_walk_one, &w);
}

static int member_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        GroupWalk *w = userdata;
        char id[VMM_VM_ID_MAX + 1];
        int r = key_to_str(v, id, VMM_VM_ID_MAX);

        return r < 0 ? r : w->idf(w->userdata, id);
}

int store_group_vm_foreach(StoreTxn *t, uint64_t id, StoreIdFunc f, void *userdata) {
        GroupWalk w = { .idf = f, .userdata = userdata };
        uint8_t kb[8];
        MDB_val k = id_key(id, kb);

        assert(t && f);
        return store_walk(t, t->store->dbi.group_vms, WALK_DUPS, &k, NULL, member_walk_one, &w);
}
