/* SPDX-License-Identifier: MIT */
/* What the method files share: a VM as every method answers it, pages of
 * lists, and ending sessions inside a write. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"
#include "methods-monitor.h"
#include "shared/clock.h"
#include "shared/macro.h"
#include "shared/mpout.h"

#define VM_KEYS_FIELDS 13       /* pack_vm_fields */
#define VM_KEYS_STATE 4         /* pack_vm_state */

void pstr_copy(char *dst, size_t cap, const ParamStr *s) {
        size_t n = MIN(s->len, cap - 1);
        memcpy(dst, s->ptr, n);
        dst[n] = '\0';
}

bool pstr_eq(const ParamStr *s, const char *str) {
        return s->set && !s->nil && streq_n(s->ptr, s->len, str);
}

void session_public_id(const uint8_t hash[SECRET_HASH_BYTES], char ret[SECRET_SESSION_ID_LEN + 1]) {
        secret_session_id(hash, ret);
}

int reply_packed(Request *r, msgpack_sbuffer *sb, bool failed) {
        if (!failed)
                rpc_reply(r, sb->data, sb->size);
        msgpack_sbuffer_destroy(sb);
        return failed ? -ENOMEM : RPC_REPLIED;
}

int read_vm(Request *r, const char *vm_id, StoreVm *ret) {
        StoreTxn *t = NULL;
        int q = store_read_begin(r->manager->store, &t);

        if (q < 0)
                return q;
        q = store_vm_get(t, vm_id, ret);
        store_read_end(t);
        return q;
}

/* ---- VMs ---- */

static const char *const access_names[] = { "active", "pending", "suspended" };

int pack_vm_fields(msgpack_packer *pk, const StoreVm *vm) {
        if (msgpack_pack_map(pk, VM_KEYS_FIELDS + VM_KEYS_STATE) ||
            mp_kv_str(pk, "vm_id", vm->vm_id))
                return -ENOMEM;
        if (vm->described) {
                if (mp_kv_u64(pk, "ram", vm->ram) || mp_kv_u64(pk, "cpu", vm->cpu))
                        return -ENOMEM;
        } else if (mp_kv_nil(pk, "ram") || mp_kv_nil(pk, "cpu"))
                return -ENOMEM;
        if (mp_str(pk, "disks") || msgpack_pack_array(pk, vm->n_disks))
                return -ENOMEM;
        for (uint32_t i = 0; i < vm->n_disks; i++)
                if (msgpack_pack_map(pk, 2) || mp_kv_str(pk, "id", vm->disks[i].id) ||
                    mp_kv_u64(pk, "size", vm->disks[i].size))
                        return -ENOMEM;
        if (mp_kv_i64(pk, "registered_at", vm->registered_at) ||
            mp_kv_i64(pk, "updated_at", vm->updated_at) ||
            (vm->last_seen_at < 0 ? mp_kv_nil(pk, "last_seen_at")
                                  : mp_kv_i64(pk, "last_seen_at", vm->last_seen_at)) ||
            mp_kv_str(pk, "hostname", vm->hostname[0] ? vm->hostname : NULL) ||
            mp_str(pk, "ip") || msgpack_pack_array(pk, vm->n_ip))
                return -ENOMEM;
        for (uint32_t i = 0; i < vm->n_ip; i++)
                if (mp_str(pk, vm->ip[i]))
                        return -ENOMEM;
        if (vm->has_os ? (mp_str(pk, "os") || msgpack_pack_map(pk, 2) ||
                          mp_kv_str(pk, "name", vm->os_name) ||
                          mp_kv_str(pk, "version", vm->os_version))
                       : mp_kv_nil(pk, "os"))
                return -ENOMEM;
        if (mp_kv_str(pk, "owner", vm->owner[0] ? vm->owner : NULL) ||
            (vm->group ? mp_kv_u64(pk, "group", vm->group) : mp_kv_nil(pk, "group")) ||
            mp_kv_str(pk, "access", access_names[vm->access < 3 ? vm->access : 0]))
                return -ENOMEM;
        return 0;
}

static const char *vm_status_of(Manager *m, const StoreVm *vm, bool connected) {
        if (connected)
                return "on";
        int64_t reported = monitor_last_report(m->monitor, vm->vm_id);
        if (reported > 0 && now_ms() - reported < (int64_t) m->config.heartbeat_timeout_s * 1000)
                return "on";
        return vm->requested ? "requested" : "off";
}

const char *vm_status(Manager *m, const StoreVm *vm) {
        return vm_status_of(m, vm, sessions_vm_connected(m->sessions, vm->vm_id));
}

typedef struct AuthorizedScan {
        Manager *manager;
        int64_t now;
} AuthorizedScan;

static int authorized_one(void *userdata, const StoreSession *s) {
        AuthorizedScan *a = userdata;
        return s->expires_at > a->now || sessions_is_attached(a->manager->sessions, s->hash);
}

bool vm_authorized(Manager *m, StoreTxn *t, const char *vm_id) {
        AuthorizedScan a = { .manager = m, .now = now_ms() };
        return store_owner_session_foreach(t, vm_id, NULL, authorized_one, &a) > 0;
}

int pack_vm_live(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm,
                 int authorized) {
        bool connected = sessions_vm_connected(m->sessions, vm->vm_id);
        if (mp_kv_bool(pk, "connected", connected) ||
            mp_kv_bool(pk, "authorized",
                       authorized >= 0 ? authorized > 0 : vm_authorized(m, t, vm->vm_id)) ||
            mp_kv_str(pk, "status", vm_status_of(m, vm, connected)))
                return -ENOMEM;
        return 0;
}

int pack_vm_booking(StoreTxn *t, msgpack_packer *pk, const char *vm_id) {
        StoreBooking b;
        int q;

        q = store_booking_get(t, vm_id, &b);
        if (q == -ENOENT)
                return mp_kv_nil(pk, "booking") ? -ENOMEM : 0;
        if (q < 0)
                return q;
        if (mp_str(pk, "booking") || msgpack_pack_map(pk, 3) || mp_kv_str(pk, "user", b.user) ||
            mp_kv_i64(pk, "started_at", b.started_at) || mp_kv_i64(pk, "expires_at", b.expires_at))
                return -ENOMEM;
        return 0;
}

int pack_vm_state(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm,
                  int authorized) {
        int q = pack_vm_live(m, t, pk, vm, authorized);
        return q < 0 ? q : pack_vm_booking(t, pk, vm->vm_id);
}

int pack_vm(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm) {
        int q = pack_vm_fields(pk, vm);
        return q < 0 ? q : pack_vm_state(m, t, pk, vm, -1);
}

int reply_vm(Request *r, const StoreVm *vm) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        StoreTxn *t = NULL;
        int q;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = pack_vm(r->manager, t, &pk, vm);
                store_read_end(t);
        }
        if (q >= 0)
                rpc_reply(r, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return q < 0 ? q : RPC_REPLIED;
}

/* ---- pages ---- */

void page_init(Page *pg, const ParamUint *limit) {
        *pg = (Page) { .limit = limit && limit->set ? limit->v : VMM_PAGE_DEFAULT };
        msgpack_sbuffer_init(&pg->items);
        msgpack_packer_init(&pg->pk, &pg->items, msgpack_sbuffer_write);
}

void page_done(Page *pg) {
        msgpack_sbuffer_destroy(&pg->items);
}

bool page_room(Page *pg) {
        if (pg->count < pg->limit)
                return true;
        pg->more = true;
        return false;
}

/* The response around the items: [1, msgid, nil, {"<list>": [...], "next": key}],
 * with room for a list name of 16 bytes. */
static size_t page_envelope(size_t key_len) {
        return 1 + 1 + 5 + 1 + 1 + 17 + 5 + 5 + 2 + key_len;
}

bool page_added(Page *pg, size_t before, const char *key) {
        if (pg->items.size + page_envelope(strlen(key)) > VMM_PAGE_BYTES_MAX) {
                pg->items.size = before;
                pg->more = true;
                return false;
        }
        pg->count++;
        snprintf(pg->last, sizeof pg->last, "%s", key);
        return true;
}

static int page_reply_next(Request *r, Page *pg, const char *key, bool uint_next) {
        msgpack_sbuffer out;
        msgpack_packer pk;
        bool fail;

        msgpack_sbuffer_init(&out);
        msgpack_packer_init(&pk, &out, msgpack_sbuffer_write);
        fail = msgpack_pack_map(&pk, 2) || mp_str(&pk, key) ||
               msgpack_pack_array(&pk, (uint32_t) pg->count) ||
               (pg->items.size > 0 && msgpack_sbuffer_write(&out, pg->items.data, pg->items.size));
        if (!fail) {
                if (!pg->more)
                        fail = mp_kv_nil(&pk, "next");
                else if (uint_next)
                        fail = mp_kv_u64(&pk, "next", strtoull(pg->last, NULL, 10));
                else
                        fail = mp_kv_str(&pk, "next", pg->last);
        }
        return reply_packed(r, &out, fail);
}

int page_reply(Request *r, Page *pg, const char *key) {
        return page_reply_next(r, pg, key, false);
}

int page_reply_uint(Request *r, Page *pg, const char *key) {
        return page_reply_next(r, pg, key, true);
}

/* ---- ending sessions ---- */

static int session_sort_created(const void *a, const void *b) {
        const StoreSession *x = a, *y = b;
        if (x->created_at != y->created_at)
                return x->created_at < y->created_at ? -1 : 1;
        return memcmp(x->hash, y->hash, SECRET_HASH_BYTES);
}

typedef struct SessionList {
        StoreSession *s;
        size_t n, cap;
} SessionList;

static int session_collect(void *userdata, const StoreSession *s) {
        SessionList *l = userdata;

        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 16;
                void *p = realloc(l->s, cap * sizeof *l->s);
                if (!p)
                        return -ENOMEM;
                l->s = p;
                l->cap = cap;
        }
        l->s[l->n++] = *s;
        return 0;
}

static int ended_add(Ended *e, const uint8_t hash[SECRET_HASH_BYTES]) {
        if (e->n == e->cap) {
                size_t cap = e->cap ? e->cap * 2 : 16;
                void *p = realloc(e->hashes, cap * SECRET_HASH_BYTES);
                if (!p)
                        return -ENOMEM;
                e->hashes = p;
                e->cap = cap;
        }
        memcpy(e->hashes[e->n++], hash, SECRET_HASH_BYTES);
        return 0;
}

int end_sessions_to(PendingEvent **events, StoreTxn *t, const char *vm_id, const char *user,
                    size_t keep, const uint8_t *except, const char *reason, Ended *ended) {
        SessionList l = { 0 };
        size_t n_end;
        int q;

        q = store_owner_session_foreach(t, vm_id, vm_id ? NULL : user, session_collect, &l);
        if (q < 0)
                goto out;
        if (l.n > 1)            /* qsort(NULL, 0, ...) is undefined */
                qsort(l.s, l.n, sizeof *l.s, session_sort_created);
        n_end = keep > 0 ? (l.n > keep ? l.n - keep : 0) : l.n;
        for (size_t i = 0; i < l.n && n_end > 0; i++) {
                if (except && memcmp(l.s[i].hash, except, SECRET_HASH_BYTES) == 0)
                        continue;
                q = end_session_to(events, t, &l.s[i], reason, ended);
                if (q < 0)
                        goto out;
                n_end--;
        }
        q = 0;
out:
        free(l.s);
        return q;
}

int end_session_to(PendingEvent **events, StoreTxn *t, const StoreSession *s, const char *reason,
                   Ended *ended) {
        char sid[SECRET_SESSION_ID_LEN + 1];
        int q;

        q = store_session_delete(t, s->hash);
        if (q == -ENOENT)
                return 0;
        if (q < 0)
                return q;
        session_public_id(s->hash, sid);
        q = events_append_to(events, t, &(Event) {
                        .type = "session.ended", .session = sid, .reason = reason,
                        .vm_id = s->vm_id[0] ? s->vm_id : NULL,
                        .user = s->user[0] ? s->user : NULL }, NULL);
        if (q >= 0 && ended)
                q = ended_add(ended, s->hash);
        return q;
}

int end_session(Request *r, StoreTxn *t, const StoreSession *s, const char *reason,
                Ended *ended) {
        return end_session_to(&r->events, t, s, reason, ended);
}

int end_sessions(Request *r, StoreTxn *t, const char *vm_id, const char *user, size_t keep,
                 const uint8_t *except, const char *reason, Ended *ended) {
        if (ended)
                ended->n = 0;   /* a batch that runs again starts over */
        return end_sessions_to(&r->events, t, vm_id, user, keep, except, reason, ended);
}

void ended_detach(Manager *m, Ended *ended) {
        for (size_t i = 0; i < ended->n; i++)
                (void) sessions_end(m->sessions, ended->hashes[i], rpc_detached, m);
}

void ended_free(Ended *ended) {
        free(ended->hashes);
        *ended = (Ended) { 0 };
}

void detach_owner(Manager *m, PrincipalKind kind, const char *name) {
        (void) sessions_end_owner(m->sessions, kind, name, rpc_detached, m);
}
