/* SPDX-License-Identifier: MIT */
/* Users (people), keyed by name. */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "record.h"
#include "store-internal.h"

int store_user_get(StoreTxn *t, const char *name, StoreUser *ret) {
        MDB_val k, v;
        int r;

        assert(t && ret);
        if (!key_ok(name, STORE_NAME_MAX))
                return -ENOENT;
        k = val_str(name);
        r = store_errno(mdb_get(t->txn, t->store->dbi.users, &k, &v));
        if (r < 0)
                return r;
        r = record_user_decode(v.mv_data, v.mv_size, ret);
        if (r >= 0 && strcmp(ret->name, name) != 0)
                r = -EBADMSG;
        return r;
}

int store_user_put(StoreTxn *t, const StoreUser *u) {
        _cleanup_free_ uint8_t *rec = NULL;
        size_t len;
        MDB_val k, v;
        int r;

        assert(u);
        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(u->name, STORE_NAME_MAX) || u->role == STORE_ROLE_NONE)
                return -EINVAL;
        r = record_user_encode(u, &rec, &len);
        if (r < 0)
                return r;
        k = val_str(u->name);
        v = val_of(rec, len);
        return store_errno(mdb_put(t->txn, t->store->dbi.users, &k, &v, 0));
}

int store_user_delete(StoreTxn *t, const char *name) {
        MDB_val k;
        int r;

        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(name, STORE_NAME_MAX))
                return -ENOENT;
        k = val_str(name);
        r = store_errno(mdb_del(t->txn, t->store->dbi.users, &k, NULL));
        if (r < 0)
                return r;
        return store_owner_sessions_delete(t, NULL, name);
}

typedef struct UserWalk {
        StoreUserFunc f;
        void *userdata;
} UserWalk;

static int user_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        UserWalk *w = userdata;
        StoreUser u;
        int r = record_user_decode(v->mv_data, v->mv_size, &u);

        if (r >= 0 && !val_eq(k, u.name, strlen(u.name)))
                r = -EBADMSG;
        return r < 0 ? r : w->f(w->userdata, &u);
}

int store_user_foreach(StoreTxn *t, const char *after, StoreUserFunc f, void *userdata) {
        UserWalk w = { f, userdata };
        MDB_val a = val_of(after, after ? strlen(after) : 0);

        assert(t && f);
        return store_walk(t, t->store->dbi.users, WALK_ALL, NULL, after ? &a : NULL,
                          user_walk_one, &w);
}
