/* SPDX-License-Identifier: MIT */
/* Bookings (vm_id -> who holds it until when), their indexes by expiry time
 * (booking_expiry: big-endian expires_at followed by the vm_id) and by user
 * (user_bookings), and the booking history (keyed by the feed position of
 * the event that made each entry, indexed by user and by VM).
 *
 * The two history indexes are plain tables whose keys are the name, a NUL
 * and the big-endian feed position, with empty values (schema 3). A name's
 * entries sit side by side in feed order, so a new one lands on the leaf
 * page its previous one is on, and every name shares the same branch pages.
 * (Schema 2 kept them as DUPSORT tables, one sub-database per name: each
 * entry then rewrote that name's own root and leaf as well as the main
 * tree's leaf, about three pages per index per booking; the sync of those
 * pages made bookings a third as fast as vm.update.) */

#include <assert.h>
#include <errno.h>
#include <string.h>

#include "record.h"
#include "store-internal.h"

int store_booking_get(StoreTxn *t, const char *vm_id, StoreBooking *ret) {
        MDB_val k, v;
        int r;

        assert(t && ret);
        if (!key_ok(vm_id, VMM_VM_ID_MAX))
                return -ENOENT;
        k = val_str(vm_id);
        r = store_errno(mdb_get(t->txn, t->store->dbi.bookings, &k, &v));
        if (r < 0)
                return r;
        r = record_booking_decode(v.mv_data, v.mv_size, ret);
        return r >= 0 && strcmp(ret->vm_id, vm_id) != 0 ? -EBADMSG : r;
}

static size_t expiry_key(const StoreBooking *b, uint8_t ret[8 + VMM_VM_ID_MAX]) {
        size_t n = strlen(b->vm_id);

        put_be64(ret, (uint64_t) MAX(b->expires_at, (int64_t) 0));
        memcpy(ret + 8, b->vm_id, n);
        return 8 + n;
}

static int booking_index(StoreTxn *t, const StoreBooking *b, bool add) {
        uint8_t ek[8 + VMM_VM_ID_MAX];
        MDB_val e = val_of(ek, expiry_key(b, ek)), empty = val_of("", 0);
        MDB_val uk = val_str(b->user), uv = val_str(b->vm_id);
        int rc;

        if (add) {
                rc = mdb_put(t->txn, t->store->dbi.user_bookings, &uk, &uv, MDB_NODUPDATA);
                if (rc != 0 && rc != MDB_KEYEXIST)
                        return store_errno(rc);
                return store_errno(mdb_put(t->txn, t->store->dbi.booking_expiry, &e, &empty, 0));
        }
        rc = mdb_del(t->txn, t->store->dbi.user_bookings, &uk, &uv);
        if (rc != 0 && rc != MDB_NOTFOUND)
                return store_errno(rc);
        rc = mdb_del(t->txn, t->store->dbi.booking_expiry, &e, NULL);
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_booking_put(StoreTxn *t, const StoreBooking *b) {
        _cleanup_free_ uint8_t *rec = NULL;
        StoreBooking old;
        size_t len;
        MDB_val k, v;
        int r;

        assert(b);
        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(b->vm_id, VMM_VM_ID_MAX) || !key_ok(b->user, STORE_NAME_MAX))
                return -EINVAL;
        r = record_booking_encode(b, &rec, &len);
        if (r < 0)
                return r;
        r = store_booking_get(t, b->vm_id, &old);
        if (r >= 0)
                r = booking_index(t, &old, false);
        if (r < 0 && r != -ENOENT)
                return r;
        k = val_str(b->vm_id);
        v = val_of(rec, len);
        r = store_errno(mdb_put(t->txn, t->store->dbi.bookings, &k, &v, 0));
        return r < 0 ? r : booking_index(t, b, true);
}

int store_booking_delete(StoreTxn *t, const char *vm_id) {
        StoreBooking old;
        MDB_val k;
        int r;

        r = txn_writable(t);
        if (r < 0)
                return r;
        r = store_booking_get(t, vm_id, &old);
        if (r < 0)
                return r;
        k = val_str(vm_id);
        r = store_errno(mdb_del(t->txn, t->store->dbi.bookings, &k, NULL));
        return r < 0 ? r : booking_index(t, &old, false);
}

typedef struct BookingWalk {
        StoreTxn *t;
        StoreBookingFunc f;
        void *userdata;
        int64_t until;
        bool past;
        size_t count;
} BookingWalk;

static int booking_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        BookingWalk *w = userdata;
        StoreBooking b;
        int r = record_booking_decode(v->mv_data, v->mv_size, &b);

        if (r >= 0 && !val_eq(k, b.vm_id, strlen(b.vm_id)))
                r = -EBADMSG;
        return r < 0 ? r : w->f(w->userdata, &b);
}

/* An index entry holding a vm_id (user_bookings) or ending in one
 * (booking_expiry, after 8 bytes of time). */
static int booking_by_id(BookingWalk *w, const void *id, size_t len) {
        char vm_id[VMM_VM_ID_MAX + 1];
        MDB_val iv = val_of(id, len);
        StoreBooking b;
        int r;

        r = key_to_str(&iv, vm_id, VMM_VM_ID_MAX);
        if (r >= 0)
                r = store_booking_get(w->t, vm_id, &b);
        if (r < 0)
                return r == -ENOENT ? -EBADMSG : r;     /* an index without its record */
        return w->f(w->userdata, &b);
}

static int user_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        return booking_by_id(userdata, v->mv_data, v->mv_size);
}

static int expiry_walk_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        BookingWalk *w = userdata;

        if (k->mv_size <= 8)
                return -EBADMSG;
        if ((int64_t) get_be64(k->mv_data) > w->until) {
                w->past = true;
                return 1;
        }
        return booking_by_id(w, (const uint8_t *) k->mv_data + 8, k->mv_size - 8);
}

int store_booking_foreach(StoreTxn *t, const char *after, StoreBookingFunc f, void *userdata) {
        BookingWalk w = { .t = t, .f = f, .userdata = userdata };
        MDB_val a = val_of(after, after ? strlen(after) : 0);

        assert(t && f);
        return store_walk(t, t->store->dbi.bookings, WALK_ALL, NULL, after ? &a : NULL,
                          booking_walk_one, &w);
}

int store_user_booking_foreach(StoreTxn *t, const char *user, const char *after,
                               StoreBookingFunc f, void *userdata) {
        BookingWalk w = { .t = t, .f = f, .userdata = userdata };
        MDB_val k = val_str(user), a = val_of(after, after ? strlen(after) : 0);

        assert(t && f);
        if (!key_ok(user, STORE_NAME_MAX))
                return 0;
        return store_walk(t, t->store->dbi.user_bookings, WALK_DUPS, &k, after ? &a : NULL,
                          user_walk_one, &w);
}

static int count_one(void *userdata, const MDB_val *k, const MDB_val *v) {
        (*(size_t *) userdata)++;
        return 0;
}

size_t store_user_booking_count(StoreTxn *t, const char *user) {
        MDB_val k = val_str(user);
        size_t n = 0;

        if (!key_ok(user, STORE_NAME_MAX))
                return 0;
        (void) store_walk(t, t->store->dbi.user_bookings, WALK_DUPS, &k, NULL, count_one, &n);
        return n;
}

int store_booking_expiry_foreach(StoreTxn *t, int64_t until, StoreBookingFunc f,
                                 void *userdata) {
        BookingWalk w = { .t = t, .f = f, .userdata = userdata, .until = until };
        int r;

        assert(t && f);
        r = store_walk(t, t->store->dbi.booking_expiry, WALK_ALL, NULL, NULL, expiry_walk_one, &w);
        return w.past ? 0 : r;
}

int store_booking_next_expiry(StoreTxn *t, int64_t *ret) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, v;
        int r;

        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi.booking_expiry, &c));
        if (r >= 0)
                r = store_errno(mdb_cursor_get(c, &k, &v, MDB_FIRST));
        if (r < 0)
                return r;
        if (k.mv_size <= 8)
                return -EBADMSG;
        *ret = (int64_t) get_be64(k.mv_data);
        return 0;
}

/* ---- history ---- */

size_t store_history_key(const void *name, size_t name_len, uint64_t feed,
                         uint8_t ret[STORE_HISTORY_KEY_MAX]) {
        if (name_len + 9 > STORE_HISTORY_KEY_MAX)
                return 0;
        memcpy(ret, name, name_len);
        ret[name_len] = 0;
        put_be64(ret + name_len + 1, feed);
        return name_len + 9;
}

static size_t history_key(const char *name, uint64_t feed, uint8_t ret[STORE_HISTORY_KEY_MAX]) {
        size_t n = store_history_key(name, strlen(name), feed, ret);

        assert(n > 0);
        return n;
}

int store_history_add(StoreTxn *t, const StoreHistory *h) {
        _cleanup_free_ uint8_t *rec = NULL;
        uint8_t kb[8], ik[STORE_HISTORY_KEY_MAX];
        size_t len;
        MDB_val k, v, iv, empty = val_of("", 0);
        int r;

        assert(h);
        r = txn_writable(t);
        if (r < 0)
                return r;
        if (!key_ok(h->vm_id, VMM_VM_ID_MAX) || !key_ok(h->user, STORE_NAME_MAX) || h->feed == 0)
                return -EINVAL;
        r = record_history_encode(h, &rec, &len);
        if (r < 0)
                return r;
        put_be64(kb, h->feed);
        k = val_of(kb, 8);
        v = val_of(rec, len);
        r = store_errno(mdb_put(t->txn, t->store->dbi.history, &k, &v, MDB_NOOVERWRITE));
        if (r < 0)
                return r;
        iv = val_of(ik, history_key(h->user, h->feed, ik));
        r = store_errno(mdb_put(t->txn, t->store->dbi.history_user, &iv, &empty, 0));
        if (r < 0)
                return r;
        iv = val_of(ik, history_key(h->vm_id, h->feed, ik));
        return store_errno(mdb_put(t->txn, t->store->dbi.history_vm, &iv, &empty, 0));
}

int store_history_index_parse(const void *key, size_t len, const char **ret_name,
                              size_t *ret_name_len, uint64_t *ret_feed) {
        const uint8_t *p = key;

        if (len < 10 || len > STORE_HISTORY_KEY_MAX || p[len - 9] != 0 ||
            memchr(p, 0, len - 9) != NULL)
                return -EBADMSG;
        *ret_name = key;
        *ret_name_len = len - 9;
        *ret_feed = get_be64(p + len - 8);
        return 0;
}

typedef struct HistoryWalk {
        StoreTxn *t;
        const char *user, *vm_id;
        StoreHistoryFunc f;
        void *userdata;
} HistoryWalk;

/* The history record at feed position hk (8 bytes) to w->f, when it is of
 * w's user and VM. */
static int history_one(HistoryWalk *w, const MDB_val *hk) {
        MDB_val hv, k = *hk;
        StoreHistory h;
        int r;

        r = store_errno(mdb_get(w->t->txn, w->t->store->dbi.history, &k, &hv));
        if (r < 0)
                return r == -ENOENT ? -EBADMSG : r;
        r = record_history_decode(hv.mv_data, hv.mv_size, &h);
        if (r < 0)
                return r;
        if (h.feed != get_be64(hk->mv_data))
                return -EBADMSG;
        if ((w->user && strcmp(h.user, w->user) != 0) ||
            (w->vm_id && strcmp(h.vm_id, w->vm_id) != 0))
                return 0;
        return w->f(w->userdata, &h);
}

/* One name's entries of a history index, newest first, feed < before (0:
 * all). */
static int history_index_walk(HistoryWalk *w, MDB_dbi dbi, const char *name, uint64_t before) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        uint8_t sk[STORE_HISTORY_KEY_MAX];
        size_t n = strlen(name);
        MDB_val k, v;
        int rc, r;

        r = store_errno(mdb_cursor_open(w->t->txn, dbi, &c));
        if (r < 0)
                return r;
        /* the first key at or after (name, before): the one before it is the
         * newest entry to show */
        k = val_of(sk, history_key(name, before ? before : UINT64_MAX, sk));
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        rc = rc == 0 ? mdb_cursor_get(c, &k, &v, MDB_PREV)
                     : rc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, MDB_LAST) : rc;
        for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_PREV)) {
                const uint8_t *p = k.mv_data;

                if (k.mv_size != n + 9 || memcmp(p, name, n) != 0 || p[n] != 0)
                        return 0;       /* past the name's first entry */
                /* the key's last 8 bytes: the feed position, big-endian */
                r = history_one(w, &(MDB_val) { .mv_data = (void *) (p + n + 1), .mv_size = 8 });
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

int store_history_foreach(StoreTxn *t, const char *user, const char *vm_id, uint64_t before,
                          StoreHistoryFunc f, void *userdata) {
        HistoryWalk w = { t, user, vm_id, f, userdata };
        uint8_t bb[8];
        MDB_val b = val_of(bb, 8);

        assert(t && f);
        put_be64(bb, before);
        /* a file of schema 2 read as it is (vmmd-check) has the old indexes:
         * the walk of every entry below picks out the user's or VM's */
        if (t->store->dbi.schema < 3)
                goto every;
        if (user)
                return key_ok(user, STORE_NAME_MAX)
                               ? history_index_walk(&w, t->store->dbi.history_user, user, before)
                               : 0;
        if (vm_id)
                return key_ok(vm_id, VMM_VM_ID_MAX)
                               ? history_index_walk(&w, t->store->dbi.history_vm, vm_id, before)
                               : 0;
every:;
        /* every entry, newest first */
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val hk, hv;
        int rc, r;

        r = store_errno(mdb_cursor_open(t->txn, t->store->dbi.history, &c));
        if (r < 0)
                return r;
        if (before) {
                hk = b;
                rc = mdb_cursor_get(c, &hk, &hv, MDB_SET_RANGE);
                rc = rc == 0 ? mdb_cursor_get(c, &hk, &hv, MDB_PREV)
                             : mdb_cursor_get(c, &hk, &hv, MDB_LAST);
        } else
                rc = mdb_cursor_get(c, &hk, &hv, MDB_LAST);
        for (; rc == 0; rc = mdb_cursor_get(c, &hk, &hv, MDB_PREV)) {
                if (hk.mv_size != 8)
                        return -EBADMSG;
                r = history_one(&w, &hk);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}
