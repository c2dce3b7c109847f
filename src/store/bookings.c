/* SPDX-License-Identifier: MIT */
/* Bookings (vm_id -> who holds it until when), their indexes by expiry time
 * (booking_expiry: big-endian expires_at followed by the vm_id) and by user
 * (user_bookings), and the booking history (keyed by the feed position of
 * the event that made each entry).
 *
 * The history is walked by user and by VM along chains (schema 4): each
 * entry links to the previous entry of its user and of its VM, and to one
 * further back (a skip list with fixed heights: the entry at position n of
 * a chain skips to position n with its lowest set bit cleared). The links
 * sit in front of the entry's record, and a small table holds each name's
 * newest entry. A booking then appends its entry to the history and
 * rewrites two small head records on one page. (Schema 3 kept the indexes
 * as tables keyed by name and feed: every name had its own newest leaf
 * page, so a commit of n bookings rewrote about 2n index pages, 13 KB per
 * booking against 2.6 KB per vm.update; schema 2 kept them as DUPSORT
 * tables, one sub-database per name, three pages per entry.) A name's
 * entries older than a feed position are found in O(log^2 n) reads. */

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

int store_history_record(const StoreDbis *dbi, const MDB_val *v, const uint8_t **ret,
                         size_t *ret_len) {
        size_t skip = dbi->schema >= 4 ? STORE_HISTORY_LINKS_BYTES : 0;

        if (v->mv_size <= skip)
                return -EBADMSG;
        *ret = (const uint8_t *) v->mv_data + skip;
        *ret_len = v->mv_size - skip;
        return 0;
}

int store_history_links_parse(const MDB_val *v, uint64_t feed,
                              StoreHistoryLink ret[_STORE_CHAIN_MAX]) {
        if (v->mv_size <= STORE_HISTORY_LINKS_BYTES)
                return -EBADMSG;
        for (int c = 0; c < _STORE_CHAIN_MAX; c++) {
                const uint8_t *p = (const uint8_t *) v->mv_data + 24 * c;

                ret[c] = (StoreHistoryLink) { get_be64(p), get_be64(p + 8), get_be64(p + 16) };
                /* positions from 1, links to older entries at the positions
                 * they must have: anything else is damage */
                if (ret[c].n == 0 || ret[c].prev >= feed || ret[c].skip >= feed ||
                    (ret[c].prev == 0) != (ret[c].n == 1) ||
                    (ret[c].skip == 0) != (store_history_skip_pos(ret[c].n) == 0))
                        return -EBADMSG;
        }
        return 0;
}

int store_history_links_get(MDB_txn *txn, const StoreDbis *dbi, uint64_t feed,
                            StoreHistoryLink ret[_STORE_CHAIN_MAX]) {
        uint8_t kb[8];
        MDB_val k = val_of(kb, 8), v;
        int r;

        put_be64(kb, feed);
        r = store_errno(mdb_get(txn, dbi->history, &k, &v));
        if (r < 0)
                return r == -ENOENT ? -EBADMSG : r;
        return store_history_links_parse(&v, feed, ret);
}

size_t store_history_head_key(int chain, const char *name, uint8_t ret[STORE_HISTORY_HEAD_KEY_MAX]) {
        size_t n = strlen(name);

        assert(n + 1 <= STORE_HISTORY_HEAD_KEY_MAX);
        ret[0] = chain == STORE_CHAIN_USER ? 'u' : 'v';
        memcpy(ret + 1, name, n);
        return n + 1;
}

int store_history_head_get(MDB_txn *txn, const StoreDbis *dbi, int chain, const char *name,
                           uint64_t *ret_feed, uint64_t *ret_n) {
        uint8_t kb[STORE_HISTORY_HEAD_KEY_MAX];
        MDB_val k = val_of(kb, store_history_head_key(chain, name, kb)), v;
        int r;

        r = store_errno(mdb_get(txn, dbi->history_heads, &k, &v));
        if (r < 0)
                return r;
        if (v.mv_size != STORE_HISTORY_HEAD_BYTES)
                return -EBADMSG;
        *ret_feed = get_be64(v.mv_data);
        *ret_n = get_be64((const uint8_t *) v.mv_data + 8);
        return *ret_feed > 0 && *ret_n > 0 ? 0 : -EBADMSG;
}

/* From the entry at feed (position n of a chain) down to the one at
 * position pos <= n: skips while they do not pass pos, else steps back one.
 * O(log^2 n) reads; *ret_feed is that entry's feed. */
static int chain_seek_pos(MDB_txn *txn, const StoreDbis *dbi, int chain, uint64_t feed,
                          uint64_t n, uint64_t pos, uint64_t *ret_feed) {
        StoreHistoryLink l[_STORE_CHAIN_MAX];
        int r;

        while (n > pos) {
                r = store_history_links_get(txn, dbi, feed, l);
                if (r < 0)
                        return r;
                if (l[chain].n != n)
                        return -EBADMSG;
                if (store_history_skip_pos(n) >= pos && l[chain].skip) {
                        feed = l[chain].skip;
                        n = store_history_skip_pos(n);
                } else {
                        feed = l[chain].prev;
                        n--;
                }
        }
        *ret_feed = feed;
        return 0;
}

int store_history_link(MDB_txn *txn, const StoreDbis *dbi, const char *user, const char *vm_id,
                       uint64_t feed, uint8_t ret[STORE_HISTORY_LINKS_BYTES]) {
        const char *names[_STORE_CHAIN_MAX] = { user, vm_id };
        int r;

        for (int c = 0; c < _STORE_CHAIN_MAX; c++) {
                uint64_t top = 0, n = 0, skip = 0, pos;
                uint8_t hb[STORE_HISTORY_HEAD_BYTES], kb[STORE_HISTORY_HEAD_KEY_MAX];
                MDB_val hk = val_of(kb, store_history_head_key(c, names[c], kb));
                MDB_val hv = val_of(hb, sizeof(hb));

                r = store_history_head_get(txn, dbi, c, names[c], &top, &n);
                if (r < 0 && r != -ENOENT)
                        return r;
                if (r >= 0 && top >= feed)
                        return -EBADMSG;        /* entries go on top, in feed order */
                pos = store_history_skip_pos(n + 1);
                if (pos > 0) {
                        r = chain_seek_pos(txn, dbi, c, top, n, pos, &skip);
                        if (r < 0)
                                return r;
                }
                put_be64(ret + 24 * c, n + 1);
                put_be64(ret + 24 * c + 8, top);
                put_be64(ret + 24 * c + 16, skip);
                put_be64(hb, feed);
                put_be64(hb + 8, n + 1);
                r = store_errno(mdb_put(txn, dbi->history_heads, &hk, &hv, 0));
                if (r < 0)
                        return r;
        }
        return 0;
}

int store_history_add(StoreTxn *t, const StoreHistory *h) {
        _cleanup_free_ uint8_t *rec = NULL, *val = NULL;
        uint8_t kb[8];
        size_t len;
        MDB_val k, v;
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
        val = malloc(STORE_HISTORY_LINKS_BYTES + len);
        if (!val)
                return -ENOMEM;
        put_be64(kb, h->feed);
        k = val_of(kb, 8);
        /* the value: the links, then the record */
        r = mdb_get(t->txn, t->store->dbi.history, &k, &v);
        if (r != MDB_NOTFOUND)
                return r == 0 ? -EEXIST : store_errno(r);
        r = store_history_link(t->txn, &t->store->dbi, h->user, h->vm_id, h->feed, val);
        if (r < 0)
                return r;
        memcpy(val + STORE_HISTORY_LINKS_BYTES, rec, len);
        v = val_of(val, STORE_HISTORY_LINKS_BYTES + len);
        return store_errno(mdb_put(t->txn, t->store->dbi.history, &k, &v, MDB_NOOVERWRITE));
}

typedef struct HistoryWalk {
        StoreTxn *t;
        const char *user, *vm_id;
        StoreHistoryFunc f;
        void *userdata;
} HistoryWalk;

/* The history record at feed to w->f, when it is of w's user and VM. A
 * record of another name than its chain's (chain_name) is damage. With
 * chain_name, its links to *ret_links first (read with the record). */
static int history_one(HistoryWalk *w, uint64_t feed, const char *chain_name, int chain,
                       StoreHistoryLink ret_links[_STORE_CHAIN_MAX]) {
        uint8_t kb[8];
        MDB_val hv, k = val_of(kb, 8);
        const uint8_t *rec;
        size_t len;
        StoreHistory h;
        int r;

        put_be64(kb, feed);
        r = store_errno(mdb_get(w->t->txn, w->t->store->dbi.history, &k, &hv));
        if (r < 0)
                return r == -ENOENT ? -EBADMSG : r;
        r = chain_name ? store_history_links_parse(&hv, feed, ret_links) : 0;
        if (r >= 0)
                r = store_history_record(&w->t->store->dbi, &hv, &rec, &len);
        if (r >= 0)
                r = record_history_decode(rec, len, &h);
        if (r < 0)
                return r;
        if (h.feed != feed ||
            (chain_name && strcmp(chain == STORE_CHAIN_USER ? h.user : h.vm_id, chain_name) != 0))
                return -EBADMSG;
        if ((w->user && strcmp(h.user, w->user) != 0) ||
            (w->vm_id && strcmp(h.vm_id, w->vm_id) != 0))
                return 0;
        return w->f(w->userdata, &h);
}

/* One name's chain, newest first, feed < before (0: all). */
static int history_chain_walk(HistoryWalk *w, int chain, const char *name, uint64_t top,
                              uint64_t n, uint64_t before) {
        const StoreDbis *dbi = &w->t->store->dbi;
        MDB_txn *txn = w->t->txn;
        StoreHistoryLink l[_STORE_CHAIN_MAX];
        uint64_t feed = top;
        int r;

        /* to the newest entry under before: skips over entries all at or
         * after it, else one step back */
        while (before && feed >= before) {
                r = store_history_links_get(txn, dbi, feed, l);
                if (r < 0)
                        return r;
                if (l[chain].n != n)
                        return -EBADMSG;
                if (l[chain].skip >= before) {
                        feed = l[chain].skip;
                        n = store_history_skip_pos(n);
                } else if (l[chain].prev) {
                        feed = l[chain].prev;
                        n--;
                } else
                        return 0;       /* none older */
        }
        for (;;) {
                r = history_one(w, feed, name, chain, l);
                if (r != 0)
                        return r;
                if (l[chain].n != n)
                        return -EBADMSG;
                if (!l[chain].prev)
                        return 0;
                feed = l[chain].prev;
                n--;
        }
}

int store_history_foreach(StoreTxn *t, const char *user, const char *vm_id, uint64_t before,
                          StoreHistoryFunc f, void *userdata) {
        HistoryWalk w = { t, user, vm_id, f, userdata };
        uint64_t top[_STORE_CHAIN_MAX] = { 0 }, n[_STORE_CHAIN_MAX] = { 0 };
        const char *names[_STORE_CHAIN_MAX] = { user, vm_id };
        uint8_t bb[8];
        MDB_val b = val_of(bb, 8);
        int chain = -1;

        assert(t && f);
        put_be64(bb, before);
        /* a file of schema 2 or 3 read as it is (vmmd-check) has other
         * indexes: the walk of every entry below picks out the user's or VM's */
        if (t->store->dbi.schema < 4 || (!user && !vm_id))
                goto every;
        /* by user or by VM: that chain; by both: the shorter one */
        for (int c = 0; c < _STORE_CHAIN_MAX; c++) {
                int r;

                if (!names[c])
                        continue;
                if (!key_ok(names[c], c == STORE_CHAIN_USER ? STORE_NAME_MAX : VMM_VM_ID_MAX))
                        return 0;
                r = store_history_head_get(t->txn, &t->store->dbi, c, names[c], &top[c], &n[c]);
                if (r == -ENOENT)
                        return 0;       /* no entry of this name */
                if (r < 0)
                        return r;
                if (chain < 0 || n[c] < n[chain])
                        chain = c;
        }
        return history_chain_walk(&w, chain, names[chain], top[chain], n[chain], before);
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
                r = history_one(&w, get_be64(hk.mv_data), NULL, 0, NULL);
                if (r != 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

static int newest_one(void *userdata, const StoreHistory *h) {
        *(StoreHistory *) userdata = *h;
        return 1;       /* the first is the newest: stop */
}

int store_history_newest(StoreTxn *t, const char *vm_id, StoreHistory *ret) {
        int r;

        assert(ret);
        ret->feed = 0;
        r = store_history_foreach(t, NULL, vm_id, 0, newest_one, ret);
        if (r < 0)
                return r;
        return ret->feed ? 0 : -ENOENT;
}
