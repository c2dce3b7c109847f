/* SPDX-License-Identifier: MIT */
/* The consistency walk over the tables of part 2: users and their sessions,
 * the session expiry index, groups and their names and members, bookings and
 * their indexes, the history, the feed, the OS catalog and requests. Every
 * index is checked both ways against the records it points at. */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

typedef int (*EntryFunc)(Verify *v, const MDB_val *k, const MDB_val *d);

/* Every entry of dbi; f returns < 0 only for a failure of the walk. */
static int walk(Verify *v, MDB_dbi dbi, uint64_t *count, EntryFunc f) {
        _cleanup_(cursor_closep) MDB_cursor *c = NULL;
        MDB_val k, d;
        int rc, r;

        rc = mdb_cursor_open(v->txn, dbi, &c);
        if (rc != 0)
                return store_errno(rc);
        for (rc = mdb_cursor_get(c, &k, &d, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &d, MDB_NEXT)) {
                if (count)
                        (*count)++;
                r = f(v, &k, &d);
                if (r < 0)
                        return r;
        }
        return rc == MDB_NOTFOUND ? 0 : store_errno(rc);
}

/* 1 when key is in dbi (value to *ret), 0 when not, < 0 error. */
static int lookup(Verify *v, MDB_dbi dbi, const void *key, size_t len, MDB_val *ret) {
        MDB_val k = val_of(key, len), d;
        int rc = mdb_get(v->txn, dbi, &k, ret ? ret : &d);

        if (rc == MDB_NOTFOUND)
                return 0;
        return rc == 0 ? 1 : store_errno(rc);
}

static int session_of(Verify *v, const void *hash, StoreSession *ret) {
        MDB_val d;
        int r = lookup(v, v->dbi.sessions, hash, STORE_HASH_BYTES, &d);

        if (r <= 0)
                return r;
        return record_session_decode(d.mv_data, d.mv_size, hash, ret) < 0 ? -EBADMSG : 1;
}

static uint64_t be64_key(const MDB_val *k) {
        return k->mv_size == 8 ? get_be64(k->mv_data) : 0;
}

/* ---- sessions ---- */

int verify_session_owner(Verify *v, const StoreSession *s) {
        if (v->dbi.schema < 2) {
                /* schema 1: VM sessions and their one index */
                int r = lookup(v, v->dbi.vms, s->vm_id, strlen(s->vm_id), NULL);
                char b[VERIFY_SHOW_MAX];
                if (r == 0)
                        verify_problem(v, "session %s: vm %s does not exist",
                                       show_hash(s->hash, STORE_HASH_BYTES, b), s->vm_id);
                if (r < 0)
                        return r;
                r = dup_exists(v, v->dbi.vm_sessions, s->vm_id, strlen(s->vm_id), s->hash,
                               STORE_HASH_BYTES);
                if (r == 0)
                        verify_problem(v, "session %s: not in the vm_sessions index of vm %s",
                                       show_hash(s->hash, STORE_HASH_BYTES, b), s->vm_id);
                return MIN(r, 0);
        }
        char b[VERIFY_SHOW_MAX];
        uint8_t ek[8 + STORE_HASH_BYTES];
        const char *owner = s->user[0] ? s->user : s->vm_id;
        int r;

        r = lookup(v, s->user[0] ? v->dbi.users : v->dbi.vms, owner, strlen(owner), NULL);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "session %s: %s %s does not exist",
                               show_hash(s->hash, STORE_HASH_BYTES, b),
                               s->user[0] ? "user" : "vm", owner);
        r = dup_exists(v, s->user[0] ? v->dbi.user_sessions : v->dbi.vm_sessions, owner,
                       strlen(owner), s->hash, STORE_HASH_BYTES);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "session %s: not in the %s index of %s %s",
                               show_hash(s->hash, STORE_HASH_BYTES, b),
                               s->user[0] ? "user_sessions" : "vm_sessions",
                               s->user[0] ? "user" : "vm", owner);
        put_be64(ek, (uint64_t) MAX(s->expires_at, (int64_t) 0));
        memcpy(ek + 8, s->hash, STORE_HASH_BYTES);
        r = lookup(v, v->dbi.session_expiry, ek, sizeof ek, NULL);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "session %s: not in the expiry index",
                               show_hash(s->hash, STORE_HASH_BYTES, b));
        return 0;
}

static int user_session_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char name[STORE_NAME_MAX + 1], b[VERIFY_SHOW_MAX];
        StoreSession s;
        int r;

        if (!key_str(k, name, STORE_NAME_MAX) || d->mv_size != STORE_HASH_BYTES) {
                verify_problem(v, "user_sessions: entry %s is malformed",
                               show(k->mv_data, k->mv_size, b));
                return 0;
        }
        r = session_of(v, d->mv_data, &s);
        if (r == -EBADMSG || (r >= 0 && r == 1 && strcmp(s.user, name) == 0))
                return 0;
        if (r < 0)
                return r;
        verify_problem(v, "user_sessions: user %s: session %s %s", name,
                       show_hash(d->mv_data, d->mv_size, b),
                       r == 0 ? "does not exist" : "belongs to someone else");
        return 0;
}

int verify_user_sessions(Verify *v) {
        return walk(v, v->dbi.user_sessions, &v->stats.user_sessions, user_session_entry);
}

static int expiry_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char b[VERIFY_SHOW_MAX];
        StoreSession s;
        int r;

        if (k->mv_size != 8 + STORE_HASH_BYTES) {
                verify_problem(v, "session_expiry: key of %zu bytes", k->mv_size);
                return 0;
        }
        r = session_of(v, (const uint8_t *) k->mv_data + 8, &s);
        if (r == -EBADMSG)
                return 0;
        if (r < 0)
                return r;
        if (r == 0 || (uint64_t) MAX(s.expires_at, (int64_t) 0) != get_be64(k->mv_data))
                verify_problem(v, "session_expiry: session %s %s",
                               show_hash((const uint8_t *) k->mv_data + 8, STORE_HASH_BYTES, b),
                               r == 0 ? "does not exist" : "expires at another time");
        return 0;
}

int verify_session_expiry(Verify *v) {
        return walk(v, v->dbi.session_expiry, &v->stats.session_expiry, expiry_entry);
}

/* ---- users ---- */

static int user_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char b[VERIFY_SHOW_MAX];
        StoreUser u;

        if (record_user_decode(d->mv_data, d->mv_size, &u) < 0)
                verify_problem(v, "user %s: record does not decode",
                               show(k->mv_data, k->mv_size, b));
        else if (!val_eq(k, u.name, strlen(u.name)))
                verify_problem(v, "user %s: record names user %s",
                               show(k->mv_data, k->mv_size, b), u.name);
        else if (u.role == STORE_ROLE_NONE)
                verify_problem(v, "user %s: no role", u.name);
        return 0;
}

int verify_users(Verify *v) {
        return walk(v, v->dbi.users, &v->stats.users, user_entry);
}

/* ---- groups ---- */

int verify_vm_group(Verify *v, const StoreVm *vm) {
        uint8_t gk[8];
        int r;

        if (vm->group == 0 || v->dbi.schema < 2)
                return 0;
        put_be64(gk, vm->group);
        r = lookup(v, v->dbi.groups, gk, 8, NULL);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "vm %s: group %" PRIu64 " does not exist", vm->vm_id,
                               vm->group);
        r = dup_exists(v, v->dbi.group_vms, gk, 8, vm->vm_id, strlen(vm->vm_id));
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "vm %s: not in the group_vms index of group %" PRIu64,
                               vm->vm_id, vm->group);
        return 0;
}

static int group_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        StoreGroup g;
        MDB_val nd;
        int r;

        if (record_group_decode(d->mv_data, d->mv_size, &g) < 0 || g.id != be64_key(k)) {
                verify_problem(v, "group %" PRIu64 ": record does not decode or names another",
                               be64_key(k));
                return 0;
        }
        r = lookup(v, v->dbi.group_names, g.name, strlen(g.name), &nd);
        if (r < 0)
                return r;
        if (r == 0 || nd.mv_size != 8 || get_be64(nd.mv_data) != g.id)
                verify_problem(v, "group %" PRIu64 ": its name is not in group_names", g.id);
        return 0;
}

static int group_name_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char b[VERIFY_SHOW_MAX];
        MDB_val gd;
        StoreGroup g;
        int r;

        r = d->mv_size == 8 ? lookup(v, v->dbi.groups, d->mv_data, 8, &gd) : 0;
        if (r < 0)
                return r;
        if (r == 0 || record_group_decode(gd.mv_data, gd.mv_size, &g) < 0 ||
            !val_eq(k, g.name, strlen(g.name)))
                verify_problem(v, "group_names: %s does not name its group",
                               show(k->mv_data, k->mv_size, b));
        return 0;
}

int verify_groups(Verify *v) {
        int r = walk(v, v->dbi.groups, &v->stats.groups, group_entry);
        return r < 0 ? r : walk(v, v->dbi.group_names, NULL, group_name_entry);
}

static int group_vm_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char id[VMM_VM_ID_MAX + 1], b[VERIFY_SHOW_MAX];
        MDB_val vd;
        StoreVm vm;
        int r;

        if (!key_str(d, id, VMM_VM_ID_MAX)) {
                verify_problem(v, "group_vms: entry %s is not a vm id",
                               show(d->mv_data, d->mv_size, b));
                return 0;
        }
        r = lookup(v, v->dbi.vms, id, strlen(id), &vd);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "group_vms: vm %s does not exist", id);
        else if (record_vm_decode(vd.mv_data, vd.mv_size, &vm) >= 0 && vm.group != be64_key(k))
                verify_problem(v, "group_vms: vm %s is in group %" PRIu64 ", not %" PRIu64, id,
                               vm.group, be64_key(k));
        return 0;
}

int verify_group_vms(Verify *v) {
        return walk(v, v->dbi.group_vms, &v->stats.group_vms, group_vm_entry);
}

/* ---- bookings ---- */

static int booking_of(Verify *v, const void *vm_id, size_t len, StoreBooking *ret) {
        MDB_val d;
        int r = lookup(v, v->dbi.bookings, vm_id, len, &d);

        if (r <= 0)
                return r;
        return record_booking_decode(d.mv_data, d.mv_size, ret) < 0 ? -EBADMSG : 1;
}

static int booking_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char b[VERIFY_SHOW_MAX];
        uint8_t ek[8 + VMM_VM_ID_MAX];
        StoreBooking bk;
        int r;

        if (record_booking_decode(d->mv_data, d->mv_size, &bk) < 0 ||
            !val_eq(k, bk.vm_id, strlen(bk.vm_id))) {
                verify_problem(v, "booking %s: record does not decode or names another VM",
                               show(k->mv_data, k->mv_size, b));
                return 0;
        }
        r = lookup(v, v->dbi.vms, bk.vm_id, strlen(bk.vm_id), NULL);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "booking %s: the VM does not exist", bk.vm_id);
        r = dup_exists(v, v->dbi.user_bookings, bk.user, strlen(bk.user), bk.vm_id,
                       strlen(bk.vm_id));
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "booking %s: not in user_bookings of %s", bk.vm_id, bk.user);
        put_be64(ek, (uint64_t) MAX(bk.expires_at, (int64_t) 0));
        memcpy(ek + 8, bk.vm_id, strlen(bk.vm_id));
        r = lookup(v, v->dbi.booking_expiry, ek, 8 + strlen(bk.vm_id), NULL);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "booking %s: not in the expiry index", bk.vm_id);
        return 0;
}

int verify_bookings(Verify *v) {
        return walk(v, v->dbi.bookings, &v->stats.bookings, booking_entry);
}

static int booking_expiry_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char b[VERIFY_SHOW_MAX];
        StoreBooking bk;
        int r;

        if (k->mv_size <= 8) {
                verify_problem(v, "booking_expiry: key of %zu bytes", k->mv_size);
                return 0;
        }
        r = booking_of(v, (const uint8_t *) k->mv_data + 8, k->mv_size - 8, &bk);
        if (r == -EBADMSG)
                return 0;
        if (r < 0)
                return r;
        if (r == 0 || (uint64_t) MAX(bk.expires_at, (int64_t) 0) != get_be64(k->mv_data))
                verify_problem(v, "booking_expiry: %s %s",
                               show((const uint8_t *) k->mv_data + 8, k->mv_size - 8, b),
                               r == 0 ? "is not booked" : "expires at another time");
        return 0;
}

static int user_booking_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char b[VERIFY_SHOW_MAX];
        StoreBooking bk;
        int r = booking_of(v, d->mv_data, d->mv_size, &bk);

        if (r == -EBADMSG)
                return 0;
        if (r < 0)
                return r;
        if (r == 0 || !val_eq(k, bk.user, strlen(bk.user)))
                verify_problem(v, "user_bookings: %s: %s is not booked by that user",
                               show(k->mv_data, k->mv_size, b), show(d->mv_data, d->mv_size, b));
        return 0;
}

int verify_booking_indexes(Verify *v) {
        int r = walk(v, v->dbi.booking_expiry, &v->stats.booking_expiry, booking_expiry_entry);
        return r < 0 ? r : walk(v, v->dbi.user_bookings, &v->stats.user_bookings,
                                user_booking_entry);
}

/* ---- history ---- */

/* A history table value's record (after the links, on a file of schema 4). */
static int history_decode(Verify *v, const MDB_val *d, StoreHistory *ret) {
        const uint8_t *rec;
        size_t len;
        int r = store_history_record(&v->dbi, d, &rec, &len);

        return r < 0 ? r : record_history_decode(rec, len, ret);
}

/* Is feed position key (8 bytes) under name in a history index? 1 yes, 0
 * no, < 0 error. Schema 3 keys name NUL feed; schema 2 kept name -> feed in
 * a DUPSORT table. */
static int history_indexed(Verify *v, bool by_user, const char *name, const void *key) {
        uint8_t ik[STORE_HISTORY_KEY_MAX];
        size_t n = strlen(name);

        if (v->dbi.schema < 3)
                return dup_exists(v, by_user ? v->dbi.history_user2 : v->dbi.history_vm2, name, n,
                                  key, 8);
        size_t len = store_history_key(name, n, get_be64(key), ik);
        return len == 0 ? 0 : lookup(v, by_user ? v->dbi.history_user : v->dbi.history_vm, ik,
                                     len, NULL);
}

static const char *chain_name(int chain) {
        return chain == STORE_CHAIN_USER ? "user" : "VM";
}

/* The history record at feed, of name in chain, at position pos of it: 1
 * yes, 0 a problem (said), < 0 error. */
static int chain_entry_check(Verify *v, uint64_t from, int chain, const char *name,
                             uint64_t feed, uint64_t pos) {
        StoreHistoryLink l[_STORE_CHAIN_MAX];
        uint8_t kb[8];
        StoreHistory h;
        MDB_val d;
        char at[64];
        int r;

        /* who leads there: an entry (from), or the name's head (0) */
        if (from)
                snprintf(at, sizeof(at), "history %" PRIu64 ": its %s chain", from,
                         chain_name(chain));
        else
                snprintf(at, sizeof(at), "history: the %s head", chain_name(chain));
        put_be64(kb, feed);
        r = lookup(v, v->dbi.history, kb, 8, &d);
        if (r < 0)
                return r;
        if (r == 0) {
                verify_problem(v, "%s of %s leads to %" PRIu64 ", which is not in the history",
                               at, name, feed);
                return 0;
        }
        if (history_decode(v, &d, &h) < 0)
                return 0;       /* the walk of the history says it */
        const char *of = chain == STORE_CHAIN_USER ? h.user : h.vm_id;
        if (strcmp(of, name) != 0) {
                verify_problem(v, "%s of %s leads to %" PRIu64 ", an entry of %s", at, name,
                               feed, of);
                return 0;
        }
        if (store_history_links_parse(&d, feed, l) < 0)
                return 0;       /* said at that entry */
        if (l[chain].n != pos) {
                verify_problem(v, "%s of %s expects %" PRIu64 " at position %" PRIu64
                               ", which is at %" PRIu64, at, name, feed, pos, l[chain].n);
                return 0;
        }
        return 1;
}

/* Schema 4: the links in front of the entry's value d, in each chain, lead
 * to entries of its name at the positions they must have. */
static int history_links_check(Verify *v, const StoreHistory *h, const MDB_val *d) {
        StoreHistoryLink l[_STORE_CHAIN_MAX];
        int r = 0;

        if (store_history_links_parse(d, h->feed, l) < 0) {
                verify_problem(v, "history %" PRIu64 ": links missing or malformed", h->feed);
                return 0;
        }
        for (int c = 0; r >= 0 && c < _STORE_CHAIN_MAX; c++) {
                const char *name = c == STORE_CHAIN_USER ? h->user : h->vm_id;

                if (l[c].prev)
                        r = chain_entry_check(v, h->feed, c, name, l[c].prev, l[c].n - 1);
                if (r >= 0 && l[c].skip)
                        r = chain_entry_check(v, h->feed, c, name, l[c].skip,
                                              store_history_skip_pos(l[c].n));
        }
        return MIN(r, 0);
}

static int history_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        StoreHistory h;
        int r;

        if (history_decode(v, d, &h) < 0 || h.feed != be64_key(k)) {
                verify_problem(v, "history %" PRIu64 ": record does not decode or names another",
                               be64_key(k));
                return 0;
        }
        if (v->dbi.schema >= 4)
                return history_links_check(v, &h, d);
        r = history_indexed(v, true, h.user, k->mv_data);
        if (r == 1)
                r = history_indexed(v, false, h.vm_id, k->mv_data);
        if (r < 0)
                return r;
        if (r == 0)
                verify_problem(v, "history %" PRIu64 ": not in its user or VM index", h.feed);
        return 0;
}

/* A head: the name's newest entry, at the position it says. */
static int history_head_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        char name[STORE_HISTORY_HEAD_KEY_MAX];
        MDB_val nk = { k->mv_size - 1, (uint8_t *) k->mv_data + 1 };
        const uint8_t *p = k->mv_data;
        uint64_t feed, n;
        int chain, r;

        chain = k->mv_size < 2 ? -1 : p[0] == 'u' ? STORE_CHAIN_USER
                                    : p[0] == 'v' ? STORE_CHAIN_VM : -1;
        if (chain < 0 || !key_str(&nk, name, sizeof(name) - 1)) {
                verify_problem(v, "history heads: a malformed key (%zu bytes)", k->mv_size);
                return 0;
        }
        r = store_history_head_get(v->txn, &v->dbi, chain, name, &feed, &n);
        if (r == -EBADMSG) {
                verify_problem(v, "history heads: %s %s: a malformed entry", chain_name(chain),
                               name);
                return 0;
        }
        if (r < 0)
                return r;
        v->chain_sum[chain] += n;
        r = chain_entry_check(v, 0, chain, name, feed, n);
        return MIN(r, 0);
}

/* Schema 4: with every entry's links right, the chains hold every entry
 * once when each kind's heads add up to the count of entries (two entries
 * at one position of a chain, or an entry of a name without a head, make
 * the sum short). */
static int verify_history_chains(Verify *v) {
        int r = walk(v, v->dbi.history_heads, NULL, history_head_entry);

        for (int c = 0; r >= 0 && c < _STORE_CHAIN_MAX; c++)
                if (v->chain_sum[c] != v->stats.history)
                        verify_problem(v, "history: the %s chains hold %" PRIu64 " of %" PRIu64
                                       " entries", chain_name(c), v->chain_sum[c],
                                       v->stats.history);
        return MIN(r, 0);
}

/* An index entry names a history record of that user (or VM). */
static int history_index_check(Verify *v, bool by_user, const char *name, size_t name_len,
                               const void *feed_key) {
        StoreHistory h;
        MDB_val d;
        int r = lookup(v, v->dbi.history, feed_key, 8, &d);

        if (r < 0)
                return r;
        if (r == 0) {
                verify_problem(v, "history index: entry %" PRIu64 " has no history record",
                               get_be64(feed_key));
                return 0;
        }
        if (history_decode(v, &d, &h) < 0)
                return 0;       /* the walk of the history reports it */
        const char *of = by_user ? h.user : h.vm_id;
        if (strlen(of) != name_len || memcmp(of, name, name_len) != 0)
                verify_problem(v, "history index: entry %" PRIu64 " is under %.*s, its record "
                               "names %s", get_be64(feed_key), (int) name_len, name, of);
        return 0;
}

static int history_index_entry(Verify *v, const MDB_val *k, const MDB_val *d, bool by_user) {
        const char *name;
        size_t n;
        uint64_t feed;
        uint8_t fb[8];

        if (v->dbi.schema < 3) {
                if (d->mv_size != 8) {
                        verify_problem(v, "history index: an entry of %zu bytes", d->mv_size);
                        return 0;
                }
                return history_index_check(v, by_user, k->mv_data, k->mv_size, d->mv_data);
        }
        if (store_history_index_parse(k->mv_data, k->mv_size, &name, &n, &feed) < 0 ||
            d->mv_size != 0) {
                verify_problem(v, "history index: a malformed entry (%zu-byte key)", k->mv_size);
                return 0;
        }
        put_be64(fb, feed);
        return history_index_check(v, by_user, name, n, fb);
}

static int history_user_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        return history_index_entry(v, k, d, true);
}

static int history_vm_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        return history_index_entry(v, k, d, false);
}

int verify_history(Verify *v) {
        bool old = v->dbi.schema < 3;
        int r = walk(v, v->dbi.history, &v->stats.history, history_entry);

        if (r >= 0 && v->dbi.schema >= 4)
                return verify_history_chains(v);
        if (r >= 0)
                r = walk(v, old ? v->dbi.history_user2 : v->dbi.history_user, NULL,
                         history_user_entry);
        return r < 0 ? r : walk(v, old ? v->dbi.history_vm2 : v->dbi.history_vm, NULL,
                                history_vm_entry);
}

/* ---- feed ---- */

static int feed_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        uint64_t pos = be64_key(k);

        if (k->mv_size != 8 || pos == 0)
                verify_problem(v, "feed: a key that is not a position");
        else if (v->feed_prev && pos != v->feed_prev + 1)
                verify_problem(v, "feed: a gap between %" PRIu64 " and %" PRIu64, v->feed_prev, pos);
        v->feed_prev = pos;
        if (d->mv_size == 0)
                verify_problem(v, "feed %" PRIu64 ": empty event", pos);
        return 0;
}

int verify_feed(Verify *v) {
        MDB_val d;
        uint64_t last = 0;
        int r;

        v->feed_prev = 0;
        r = walk(v, v->dbi.feed, &v->stats.feed, feed_entry);
        if (r < 0)
                return r;
        r = lookup(v, v->dbi.meta, "feed_last", 9, &d);
        if (r < 0)
                return r;
        if (r == 1 && d.mv_size == 8)
                last = get_be64(d.mv_data);
        if (v->feed_prev != last)
                verify_problem(v, "feed: the newest event is %" PRIu64 ", meta says %" PRIu64,
                               v->feed_prev, last);
        return 0;
}

/* ---- OS catalog and requests ---- */

static int os_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        StoreOs *os = malloc(sizeof *os);

        if (!os)
                return -ENOMEM;
        if (record_os_decode(d->mv_data, d->mv_size, os) < 0 || os->id != be64_key(k))
                verify_problem(v, "os %" PRIu64 ": record does not decode or names another",
                               be64_key(k));
        free(os);
        return 0;
}

int verify_os(Verify *v) {
        return walk(v, v->dbi.os, &v->stats.os, os_entry);
}

static int request_entry(Verify *v, const MDB_val *k, const MDB_val *d) {
        StoreRequest *rq = malloc(sizeof *rq);

        if (!rq)
                return -ENOMEM;
        if (record_request_decode(d->mv_data, d->mv_size, rq) < 0 || rq->id != be64_key(k))
                verify_problem(v, "request %" PRIu64 ": record does not decode or names another",
                               be64_key(k));
        free(rq);
        return 0;
}

int verify_requests(Verify *v) {
        return walk(v, v->dbi.requests, &v->stats.requests, request_entry);
}
