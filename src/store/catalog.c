/* SPDX-License-Identifier: MIT */
/* The OS catalog and VM requests, keyed by big-endian ids that are never
 * reused (meta "next_os_id", "next_request_id"). */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "record.h"
#include "store-internal.h"

static MDB_val id_key(uint64_t id, uint8_t buf[8]) {
        put_be64(buf, id);
        return val_of(buf, 8);
}

static int put_record(StoreTxn *t, MDB_dbi dbi, uint64_t id, const uint8_t *rec, size_t len) {
        uint8_t kb[8];
        MDB_val k = id_key(id, kb), v = val_of(rec, len);

        return store_errno(mdb_put(t->txn, dbi, &k, &v, 0));
}

static int get_record(StoreTxn *t, MDB_dbi dbi, uint64_t id, MDB_val *ret) {
        uint8_t kb[8];
        MDB_val k = id_key(id, kb);

        return store_errno(mdb_get(t->txn, dbi, &k, ret));
}

int store_os_create(StoreTxn *t, StoreOs *os) {
        _cleanup_free_ uint8_t *rec = NULL;
        size_t len;
        int r;

        assert(os);
        r = txn_writable(t);
        if (r >= 0)
                r = store_next_id(t, "next_os_id", &os->id);
        if (r >= 0)
                r = record_os_encode(os, &rec, &len);
        return r < 0 ? r : put_record(t, t->store->dbi.os, os->id, rec, len);
}

int store_os_get(StoreTxn *t, uint64_t id, StoreOs *ret) {
        MDB_val v;
        int r = get_record(t, t->store->dbi.os, id, &v);

        if (r >= 0)
                r = record_os_decode(v.mv_data, v.mv_size, ret);
        return r >= 0 && ret->id != id ? -EBADMSG : r;
}

int store_os_delete(StoreTxn *t, uint64_t id) {
        uint8_t kb[8];
        MDB_val k = id_key(id, kb);
        int r = txn_writable(t);

        return r < 0 ? r : store_errno(mdb_del(t->txn, t->store->dbi.os, &k, NULL));
}

typedef struct Walk {
        StoreOsFunc osf;
        StoreRequestFunc rqf;
        void *userdata;
} Walk;

static int os_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        Walk *w = userdata;
        _cleanup_free_ StoreOs *os = malloc(sizeof *os);
        int r;

        if (!os)
                return -ENOMEM;
        if (k->mv_size != 8)
                return -EBADMSG;
        r = record_os_decode(v->mv_data, v->mv_size, os);
        if (r >= 0 && os->id != get_be64(k->mv_data))
                r = -EBADMSG;
        return r < 0 ? r : w->osf(w->userdata, os);
}

int store_os_foreach(StoreTxn *t, StoreOsFunc f, void *userdata) {
        Walk w = { .osf = f, .userdata = userdata };

        assert(t && f);
        return store_walk(t, t->store->dbi.os, WALK_ALL, NULL, NULL, os_one, &w);
}

int store_request_create(StoreTxn *t, StoreRequest *rq) {
        int r;

        assert(rq);
        r = txn_writable(t);
        if (r >= 0)
                r = store_next_id(t, "next_request_id", &rq->id);
        return r < 0 ? r : store_request_put(t, rq);
}

int store_request_get(StoreTxn *t, uint64_t id, StoreRequest *ret) {
        MDB_val v;
        int r = get_record(t, t->store->dbi.requests, id, &v);

        if (r >= 0)
                r = record_request_decode(v.mv_data, v.mv_size, ret);
        return r >= 0 && ret->id != id ? -EBADMSG : r;
}

int store_request_put(StoreTxn *t, const StoreRequest *rq) {
        _cleanup_free_ uint8_t *rec = NULL;
        size_t len;
        int r;

        assert(rq);
        r = txn_writable(t);
        if (r >= 0 && rq->id == 0)
                r = -EINVAL;
        if (r >= 0)
                r = record_request_encode(rq, &rec, &len);
        return r < 0 ? r : put_record(t, t->store->dbi.requests, rq->id, rec, len);
}

static int request_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        Walk *w = userdata;
        _cleanup_free_ StoreRequest *rq = malloc(sizeof *rq);
        int r;

        if (!rq)
                return -ENOMEM;
        if (k->mv_size != 8)
                return -EBADMSG;
        r = record_request_decode(v->mv_data, v->mv_size, rq);
        if (r >= 0 && rq->id != get_be64(k->mv_data))
                r = -EBADMSG;
        return r < 0 ? r : w->rqf(w->userdata, rq);
}

int store_request_foreach(StoreTxn *t, uint64_t after, StoreRequestFunc f, void *userdata) {
        Walk w = { .rqf = f, .userdata = userdata };
        uint8_t ab[8];
        MDB_val a = id_key(after, ab);

        assert(t && f);
        return store_walk(t, t->store->dbi.requests, WALK_ALL, NULL, after ? &a : NULL,
                          request_one, &w);
}
