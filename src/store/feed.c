/* SPDX-License-Identifier: MIT */
/* The durable event feed: big-endian position -> event (MessagePack bytes,
 * opaque here). Positions count from 1 for the life of the database
 * (meta "feed_last"), without gaps: an event is appended in the transaction
 * of its change, so an aborted change takes its position back with it. The
 * oldest events beyond the configured history are dropped as new ones come. */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "store-internal.h"

static int feed_last(StoreTxn *t, uint64_t *ret) {
        MDB_val k = val_str("feed_last"), v;
        int rc = mdb_get(t->txn, t->store->dbi.meta, &k, &v);

        if (rc == MDB_NOTFOUND) {
                *ret = 0;
                return 0;
        }
        if (rc != 0)
                return store_errno(rc);
        if (v.mv_size != 8)
                return -EBADMSG;
        *ret = get_be64(v.mv_data);
        return 0;
}

int store_feed_bounds(StoreTxn *t, uint64_t *ret_last, uint64_t *ret_oldest) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, v;
        uint64_t last;
        int r;

        r = feed_last(t, &last);
        if (r < 0)
                return r;
        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi.feed, &c));
        if (r < 0)
                return r;
        r = store_errno(mdb_cursor_get(c, &k, &v, MDB_FIRST));
        if (r == -ENOENT) {
                *ret_last = last;
                *ret_oldest = 0;
                return 0;
        }
        if (r < 0)
                return r;
        if (k.mv_size != 8)
                return -EBADMSG;
        *ret_last = last;
        *ret_oldest = get_be64(k.mv_data);
        return 0;
}

int store_feed_append(StoreTxn *t, const void *data, size_t len, uint64_t *ret_pos) {
        uint8_t kb[8], lb[8];
        uint64_t last;
        MDB_val k, v, mk = val_str("feed_last"), mv;
        int r;

        assert(data && ret_pos);
        r = txn_writable(t);
        if (r < 0)
                return r;
        r = feed_last(t, &last);
        if (r < 0)
                return r;
        last++;
        put_be64(kb, last);
        k = val_of(kb, 8);
        v = val_of(data, len);
        r = store_errno(mdb_put(t->txn, t->store->dbi.feed, &k, &v, MDB_APPEND));
        if (r < 0)
                return r == -EEXIST ? -EBADMSG : r;     /* a key past feed_last: damaged */
        put_be64(lb, last);
        mv = val_of(lb, 8);
        r = store_errno(mdb_put(t->txn, t->store->dbi.meta, &mk, &mv, 0));
        if (r < 0)
                return r;
        if (last > t->store->event_history) {
                /* keep the newest event_history: drop the one that fell out
                 * (and any older ones a smaller history left behind) */
                _cleanup_(cursor_closep) MDB_cursor *c = NULL;
                uint64_t keep_from = last - t->store->event_history + 1;
                int rc;

                r = store_errno(mdb_cursor_open(t->txn, t->store->dbi.feed, &c));
                if (r < 0)
                        return r;
                for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
                     rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) {
                        if (k.mv_size != 8)
                                return -EBADMSG;
                        if (get_be64(k.mv_data) >= keep_from)
                                break;
                        rc = mdb_cursor_del(c, 0);
                        if (rc != 0)
                                return store_errno(rc);
                }
                if (rc != 0 && rc != MDB_NOTFOUND)
                        return store_errno(rc);
        }
        *ret_pos = last;
        return 0;
}

typedef struct FeedWalk {
        StoreFeedFunc f;
        void *userdata;
} FeedWalk;

static int feed_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        FeedWalk *w = userdata;

        if (k->mv_size != 8)
                return -EBADMSG;
        return w->f(w->userdata, get_be64(k->mv_data), v->mv_data, v->mv_size);
}

int store_feed_foreach(StoreTxn *t, uint64_t after, StoreFeedFunc f, void *userdata) {
        FeedWalk w = { f, userdata };
        uint8_t ab[8];
        MDB_val a = val_of(ab, 8);

        assert(t && f);
        put_be64(ab, after);
        return store_walk(t, t->store->dbi.feed, WALK_ALL, NULL, after ? &a : NULL, feed_one, &w);
}
