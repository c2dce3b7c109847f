/* SPDX-License-Identifier: MIT */
/* Sessions (keyed by the keyed hash of their token) and their indexes: by
 * owner (vm_sessions, user_sessions) and by expiry time (session_expiry:
 * big-endian expires_at followed by the hash), so that expired sessions are
 * found without a scan of all of them. */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "record.h"
#include "store-internal.h"

int store_session_get(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES], StoreSession *ret) {
        MDB_val k, v;
        int r;

        assert(t && hash && ret);
        k = val_of(hash, STORE_HASH_BYTES);
        r = store_errno(mdb_get(t->txn, t->store->dbi.sessions, &k, &v));
        if (r < 0)
                return r;
        return record_session_decode(v.mv_data, v.mv_size, hash, ret);
}

static MDB_dbi owner_index(StoreTxn *t, const StoreSession *s, MDB_val *ret_key) {
        if (s->user[0]) {
                *ret_key = val_str(s->user);
                return t->store->dbi.user_sessions;
        }
        *ret_key = val_str(s->vm_id);
        return t->store->dbi.vm_sessions;
}

static void expiry_key(const StoreSession *s, uint8_t ret[8 + STORE_HASH_BYTES]) {
        put_be64(ret, (uint64_t) MAX(s->expires_at, (int64_t) 0));
        memcpy(ret + 8, s->hash, STORE_HASH_BYTES);
}

/* Adds (add) or drops the index entries of s. */
static int session_index(StoreTxn *t, const StoreSession *s, bool add) {
        uint8_t ek[8 + STORE_HASH_BYTES];
        MDB_val k, v = val_of(s->hash, STORE_HASH_BYTES), e, empty = val_of("", 0);
        MDB_dbi dbi = owner_index(t, s, &k);
        int rc;

        expiry_key(s, ek);
        e = val_of(ek, sizeof ek);
        if (add) {
                rc = mdb_put(t->txn, dbi, &k, &v, MDB_NODUPDATA);
                if (rc != 0 && rc != MDB_KEYEXIST)
                        return store_errno(rc);
                return store_errno(mdb_put(t->txn, t->store->dbi.session_expiry, &e, &empty, 0));
        }
        rc = mdb_del(t->txn, dbi, &k, &v);
        if (rc != 0 && rc != MDB_NOTFOUND)
                return store_errno(rc);
        rc = mdb_del(t->txn, t->store->dbi.session_expiry, &e, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_session_put(StoreTxn *t, const StoreSession *session) {
        _cleanup_free_ uint8_t *rec = NULL;
        StoreSession old;
        size_t rec_len;
        MDB_val k, v;
        int r;

        assert(session);
        r = txn_writable(t);
        if (r < 0)
                return r;
        if (session->user[0] ? !key_ok(session->user, STORE_NAME_MAX) || session->vm_id[0]
                             : !key_ok(session->vm_id, VMM_VM_ID_MAX))
                return -EINVAL;
        r = record_session_encode(session, &rec, &rec_len);
        if (r < 0)
                return r;

        r = store_session_get(t, session->hash, &old);
        if (r >= 0)
                r = session_index(t, &old, false);
        if (r < 0 && r != -ENOENT)
                return r;

        k = val_of(session->hash, STORE_HASH_BYTES);
        v = val_of(rec, rec_len);
        r = store_errno(mdb_put(t->txn, t->store->dbi.sessions, &k, &v, 0));
        if (r < 0)
                return r;
        return session_index(t, session, true);
}

int store_session_delete(StoreTxn *t, const uint8_t hash[STORE_HASH_BYTES]) {
        StoreSession old;
        MDB_val k;
        int r;

        assert(hash);
        r = txn_writable(t);
        if (r < 0)
                return r;
        r = store_session_get(t, hash, &old);
        if (r < 0)
                return r;
        k = val_of(hash, STORE_HASH_BYTES);
        r = store_errno(mdb_del(t->txn, t->store->dbi.sessions, &k, NULL));
        if (r < 0)
                return r;
        return session_index(t, &old, false);
}

typedef struct SessionWalk {
        StoreTxn *t;
        StoreSessionFunc f;
        void *userdata;
        int64_t until;
        bool past;              /* the walk reached entries after until */
} SessionWalk;

static int by_record(void *userdata, const MDB_val *k, const MDB_val *v) {
        SessionWalk *w = userdata;
        StoreSession s;
        int r;

        if (k->mv_size != STORE_HASH_BYTES)
                return -EBADMSG;
        r = record_session_decode(v->mv_data, v->mv_size, k->mv_data, &s);
        return r < 0 ? r : w->f(w->userdata, &s);
}

/* An index entry: look its session up. */
static int by_hash(void *userdata, const MDB_val *k, const MDB_val *v) {
        SessionWalk *w = userdata;
        StoreSession s;
        int r;

        if (v->mv_size != STORE_HASH_BYTES)
                return -EBADMSG;
        r = store_session_get(w->t, v->mv_data, &s);
        if (r < 0)
                return r == -ENOENT ? -EBADMSG : r;   /* an index without its record */
        return w->f(w->userdata, &s);
}

static int by_expiry(void *userdata, const MDB_val *k, const MDB_val *v) {
        SessionWalk *w = userdata;
        StoreSession s;
        int r;

        if (k->mv_size != 8 + STORE_HASH_BYTES)
                return -EBADMSG;
        if ((int64_t) get_be64(k->mv_data) > w->until) {
                w->past = true;
                return 1;
        }
        r = store_session_get(w->t, (const uint8_t *) k->mv_data + 8, &s);
        if (r < 0)
                return r == -ENOENT ? -EBADMSG : r;
        r = w->f(w->userdata, &s);
        return r;
}

int store_session_foreach(StoreTxn *t, const uint8_t *after, StoreSessionFunc f, void *userdata) {
        SessionWalk w = { t, f, userdata, 0, false };
        MDB_val a = val_of(after, STORE_HASH_BYTES);

        assert(t && f);
        return store_walk(t, t->store->dbi.sessions, WALK_ALL, NULL, after ? &a : NULL, by_record,
                          &w);
}

int store_owner_session_foreach(StoreTxn *t, const char *vm_id, const char *user,
                                StoreSessionFunc f, void *userdata) {
        SessionWalk w = { t, f, userdata, 0, false };
        MDB_val k;
        MDB_dbi dbi;

        assert(t && f);
        if (vm_id) {
                if (!key_ok(vm_id, VMM_VM_ID_MAX))
                        return 0;
                k = val_str(vm_id);
                dbi = t->store->dbi.vm_sessions;
        } else {
                if (!key_ok(user, STORE_NAME_MAX))
                        return 0;
                k = val_str(user);
                dbi = t->store->dbi.user_sessions;
        }
        return store_walk(t, dbi, WALK_DUPS, &k, NULL, by_hash, &w);
}

int store_session_expiry_foreach(StoreTxn *t, int64_t until, StoreSessionFunc f,
                                 void *userdata) {
        SessionWalk w = { t, f, userdata, until, false };
        int r;

        assert(t && f);
        r = store_walk(t, t->store->dbi.session_expiry, WALK_ALL, NULL, NULL, by_expiry, &w);
        return w.past ? 0 : r;
}

typedef struct IdWalk {
        StoreIdFunc f;
        void *userdata;
        size_t max;
} IdWalk;

static int id_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        IdWalk *w = userdata;
        char id[VMM_VM_ID_MAX + 1];
        int r = key_to_str(k, id, VMM_VM_ID_MAX);

        return r < 0 ? r : w->f(w->userdata, id);
}

int store_session_vm_foreach(StoreTxn *t, const char *after, StoreIdFunc f, void *userdata) {
        IdWalk w = { f, userdata, VMM_VM_ID_MAX };
        MDB_val a = val_of(after, after ? strlen(after) : 0);

        assert(t && f);
        return store_walk(t, t->store->dbi.vm_sessions, WALK_KEYS, NULL, after ? &a : NULL,
                          id_walk_one, &w);
}
