/* SPDX-License-Identifier: MIT */
/* The admin methods (Unix socket) of vmmd-protocol(7). Callers were let in by
 * their peer credentials at accept; every change is logged with uid and pid. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "events.h"
#include "log.h"
#include "methods.h"
#include "rpc.h"
#include "shared/macro.h"
#include "shared/mpout.h"
#include "shared/secret.h"

static void reply_packed(Request *r, msgpack_sbuffer *sb, bool failed) {
        if (failed)
                rpc_reply_errno(r, -ENOMEM);
        else
                rpc_reply(r, sb->data, sb->size);
        msgpack_sbuffer_destroy(sb);
}

#define LOG_ADMIN_ID(r, mid, vm, fmt, ...) \
        log_struct(LOG_INFO, &(LogFields) { .message_id = (mid), .vm_id = (vm), \
                                           .admin_uid = (long) (r)->conn->uid, \
                                           .peer = (r)->conn->peer_str }, \
                   "Admin uid %u pid %d: " fmt, (unsigned) (r)->conn->uid, \
                   (int) (r)->conn->pid, __VA_ARGS__)
#define LOG_ADMIN(r, fmt, ...) LOG_ADMIN_ID(r, LOG_MID_ADMIN_CHANGE, NULL, fmt, __VA_ARGS__)

/* ---- status ---- */

static int method_status(Request *r) {
        Manager *m = r->manager;
        StoreStats st = { 0 };
        StoreTxn *t = NULL;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int q;

        q = store_read_begin(m->store, &t);
        if (q >= 0) {
                q = store_stats(t, &st);
                store_read_end(t);
        }
        if (q < 0)
                return q;
        uint64_t tcp = 0;
        for (Conn *c = m->conns; c; c = c->next)
                if (c->kind == CONN_TCP)
                        tcp++;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 10) || mp_kv_str(&pk, "version", VMMD_VERSION) ||
                    mp_kv_u64(&pk, "protocol", VMM_PROTOCOL_VERSION) ||
                    mp_kv_u64(&pk, "uptime_ms", mono_ms() - m->started_mono_ms) ||
                    mp_kv_u64(&pk, "vms", st.vms) || mp_kv_u64(&pk, "disks", st.disks) ||
                    mp_kv_u64(&pk, "sessions", st.sessions) ||
                    mp_kv_u64(&pk, "connections", tcp) ||
                    mp_kv_u64(&pk, "connected_vms", sessions_connected_count(m->sessions)) ||
                    mp_kv_u64(&pk, "requests", m->requests) || mp_str(&pk, "db") ||
                    msgpack_pack_map(&pk, 3) || mp_kv_str(&pk, "path", store_path(m->store)) ||
                    mp_kv_u64(&pk, "size_bytes", st.size_bytes) ||
                    mp_kv_u64(&pk, "map_size_bytes", st.map_size_bytes);
        reply_packed(r, &sb, fail);
        return 0;
}

/* ---- vm.get ---- */

typedef struct VmIdParams {
        ParamStr vm_id;
        ParamStr password;
} VmIdParams;

static const ParamField vm_id_fields[] = {
        { "vm_id", PARAM_STR, offsetof(VmIdParams, vm_id), true, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
};

static const ParamField vm_password_fields[] = {
        { "vm_id", PARAM_STR, offsetof(VmIdParams, vm_id), true, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "password", PARAM_STR, offsetof(VmIdParams, password), false, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
};

static int method_admin_vm_get(Request *r) {
        VmIdParams *p = r->params;
        char vm_id[VMM_VM_ID_MAX + 1];
        StoreTxn *t = NULL;
        int q;

        pstr_copy(vm_id, sizeof vm_id, &p->vm_id);
        StoreVm *vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = store_vm_get(t, vm_id, vm);
                store_read_end(t);
        }
        if (q == -ENOENT)
                rpc_reply_error(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", vm_id);
        else if (q >= 0)
                reply_vm(r, vm);
        free(vm);
        return q == -ENOENT ? 0 : MIN(q, 0);
}

/* ---- vm.create / vm.passwd ---- */

typedef struct CredState {
        StoreVm vm;
        char password[VMM_PASSWORD_MAX + 1];
        uint8_t (*ended)[SECRET_HASH_BYTES];
        size_t n_ended, cap_ended;
} CredState;

static void cred_state_free(void *p) {
        CredState *st = p;
        if (!st)
                return;
        secret_wipe(st->password, sizeof st->password);
        free(st->ended);
        free(st);
}

static int cred_hash(Job *j) {
        Request *r = REQUEST_OF(j);
        CredState *st = r->state;
        return secret_password_hash(st->password, strlen(st->password), st->vm.pwhash);
}

static void reply_credentials(Request *r, CredState *st) {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 2) || mp_kv_str(&pk, "vm_id", st->vm.vm_id) ||
                    mp_kv_str(&pk, "password", st->password);
        if (!fail)
                rpc_reply(r, sb.data, sb.size);
        else
                rpc_reply_errno(r, -ENOMEM);
        secret_wipe(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
}

static int create_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        CredState *st = r->state;
        StoreVm *old = malloc(sizeof *old);
        int q;

        if (!old)
                return -ENOMEM;
        q = store_vm_get(t, st->vm.vm_id, old);
        free(old);
        if (q >= 0)
                return -EEXIST;
        if (q != -ENOENT)
                return q;
        return store_vm_put(t, &st->vm);
}

static void create_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        CredState *st = r->state;

        if (q == -EEXIST)
                rpc_reply_error(r, VMM_E_EXISTS, "VM '%s' already exists", st->vm.vm_id);
        else if (q < 0)
                rpc_reply_errno(r, q);
        else {
                LOG_ADMIN_ID(r, LOG_MID_VM_CREATED, st->vm.vm_id, "created VM '%s'", st->vm.vm_id);
                events_emit(r->manager, &(Event) { .type = "vm.created", .vm_id = st->vm.vm_id });
                reply_credentials(r, st);
        }
        rpc_finish(r);
}

static void create_hashed(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        if (q < 0) {
                rpc_reply_errno(r, q);
                rpc_finish(r);
                return;
        }
        r->job.write = create_write;
        r->job.done = create_written;
        jobs_submit_write(r->manager->jobs, &r->job);
}

static int cred_prepare(Request *r, CredState **ret) {
        VmIdParams *p = r->params;
        CredState *st = calloc(1, sizeof *st);

        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = cred_state_free;
        pstr_copy(st->vm.vm_id, sizeof st->vm.vm_id, &p->vm_id);
        if (p->password.set) {
                if (memchr(p->password.ptr, '\0', p->password.len)) {
                        rpc_reply_error(r, VMM_E_BAD_REQUEST, "password: must not contain NUL");
                        return 0;
                }
                memcpy(st->password, p->password.ptr, p->password.len);
                st->password[p->password.len] = '\0';
        } else {
                char gen[SECRET_GEN_PASSWORD_LEN + 1];
                secret_password_generate(gen);
                memcpy(st->password, gen, sizeof gen);
                secret_wipe(gen, sizeof gen);
        }
        *ret = st;
        return 1;
}

static int method_vm_create(Request *r) {
        CredState *st = NULL;
        int q = cred_prepare(r, &st);

        if (q <= 0)
                return q;
        int64_t now = now_ms();
        st->vm.described = false;
        st->vm.registered_at = st->vm.updated_at = now;
        st->vm.last_seen_at = -1;
        r->job.hash = cred_hash;
        r->job.done = create_hashed;
        jobs_submit_hash(r->manager->jobs, &r->job);
        return 1;
}

static int passwd_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        CredState *st = r->state;
        StoreVm *vm = malloc(sizeof *vm);
        int q;

        if (!vm)
                return -ENOMEM;
        st->n_ended = 0;
        q = store_vm_get(t, st->vm.vm_id, vm);
        if (q >= 0) {
                memcpy(vm->pwhash, st->vm.pwhash, sizeof vm->pwhash);
                q = store_vm_put(t, vm);
        }
        free(vm);
        if (q < 0)
                return q;
        return end_sessions(t, st->vm.vm_id, 0, NULL, &st->ended, &st->n_ended, &st->cap_ended);
}

static void passwd_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        CredState *st = r->state;

        if (q == -ENOENT)
                rpc_reply_error(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", st->vm.vm_id);
        else if (q < 0)
                rpc_reply_errno(r, q);
        else {
                sessions_ended(r->manager, st->vm.vm_id, st->ended, st->n_ended, "password");
                LOG_ADMIN_ID(r, LOG_MID_ADMIN_CHANGE, st->vm.vm_id,
                             "set the password of VM '%s' (%zu sessions ended)", st->vm.vm_id,
                          st->n_ended);
                events_emit(r->manager, &(Event) { .type = "vm.password_changed",
                                                   .vm_id = st->vm.vm_id });
                reply_credentials(r, st);
        }
        rpc_finish(r);
}

static void passwd_hashed(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        if (q < 0) {
                rpc_reply_errno(r, q);
                rpc_finish(r);
                return;
        }
        r->job.write = passwd_write;
        r->job.done = passwd_written;
        jobs_submit_write(r->manager->jobs, &r->job);
}

static int method_vm_passwd(Request *r) {
        CredState *st = NULL;
        int q = cred_prepare(r, &st);

        if (q <= 0)
                return q;
        r->job.hash = cred_hash;
        r->job.done = passwd_hashed;
        jobs_submit_hash(r->manager->jobs, &r->job);
        return 1;
}

/* ---- vm.delete ---- */

typedef struct DeleteState {
        char vm_id[VMM_VM_ID_MAX + 1];
        uint8_t (*ended)[SECRET_HASH_BYTES];
        size_t n_ended, cap_ended;
} DeleteState;

static void delete_state_free(void *p) {
        DeleteState *st = p;
        if (!st)
                return;
        free(st->ended);
        free(st);
}

static int delete_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        DeleteState *st = r->state;
        int q;

        st->n_ended = 0;
        /* collect the sessions first: they go with the VM */
        q = end_sessions(t, st->vm_id, 0, NULL, &st->ended, &st->n_ended, &st->cap_ended);
        if (q < 0)
                return q;
        return store_vm_delete(t, st->vm_id);
}

static void delete_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        DeleteState *st = r->state;

        if (q == -ENOENT)
                rpc_reply_error(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", st->vm_id);
        else if (q < 0)
                rpc_reply_errno(r, q);
        else {
                sessions_ended(r->manager, st->vm_id, st->ended, st->n_ended, "deleted");
                (void) sessions_end_vm(r->manager->sessions, st->vm_id);
                LOG_ADMIN_ID(r, LOG_MID_VM_DELETED, st->vm_id, "deleted VM '%s'", st->vm_id);
                events_emit(r->manager, &(Event) { .type = "vm.deleted", .vm_id = st->vm_id });
                rpc_reply(r, NULL, 0);
        }
        rpc_finish(r);
}

static int method_vm_delete(Request *r) {
        VmIdParams *p = r->params;
        DeleteState *st = calloc(1, sizeof *st);

        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = delete_state_free;
        pstr_copy(st->vm_id, sizeof st->vm_id, &p->vm_id);
        r->job.write = delete_write;
        r->job.done = delete_written;
        jobs_submit_write(r->manager->jobs, &r->job);
        return 1;
}

/* ---- session.list / session.revoke ---- */

typedef struct SessionListParams {
        ParamStr vm_id;
        ParamUint limit;
        ParamStr after;
} SessionListParams;

static bool valid_session_id(const char *s, size_t len) {
        if (len != SECRET_SESSION_ID_LEN)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

static const ParamField session_list_fields[] = {
        { "vm_id", PARAM_STR, offsetof(SessionListParams, vm_id), false, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "limit", PARAM_UINT, offsetof(SessionListParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL },
        { "after", PARAM_STR, offsetof(SessionListParams, after), false, SECRET_SESSION_ID_LEN,
          SECRET_SESSION_ID_LEN, valid_session_id, NULL },
};

static void session_id_prefix(const char *id, uint8_t ret[SECRET_HASH_BYTES], uint8_t fill) {
        memset(ret, fill, SECRET_HASH_BYTES);
        for (size_t i = 0; i < SECRET_SESSION_ID_LEN / 2; i++) {
                unsigned v;
                char hex[3] = { id[2 * i], id[2 * i + 1], 0 };
                v = (unsigned) strtoul(hex, NULL, 16);
                ret[i] = (uint8_t) v;
        }
}

typedef struct SessionPage {
        Manager *manager;
        msgpack_sbuffer items;
        msgpack_packer pk;
        size_t count, limit;
        bool more;
        char last[SECRET_SESSION_ID_LEN + 1];
        int64_t now;
        int error;
} SessionPage;

static int session_page_add(void *userdata, const StoreSession *s) {
        SessionPage *pg = userdata;
        bool attached = sessions_is_attached(pg->manager->sessions, s->hash);
        char sid[SECRET_SESSION_ID_LEN + 1];

        if (s->expires_at <= pg->now && !attached)
                return 0;
        if (pg->count == pg->limit) {
                pg->more = true;
                return 1;
        }
        events_session_id(s->hash, sid);
        if (msgpack_pack_map(&pg->pk, 5) || mp_kv_str(&pg->pk, "id", sid) ||
            mp_kv_str(&pg->pk, "vm_id", s->vm_id) || mp_kv_i64(&pg->pk, "created_at", s->created_at) ||
            mp_kv_i64(&pg->pk, "expires_at", s->expires_at) ||
            mp_kv_bool(&pg->pk, "connected", attached)) {
                pg->error = -ENOMEM;
                return -ENOMEM;
        }
        pg->count++;
        memcpy(pg->last, sid, sizeof sid);
        return 0;
}

static int session_cmp(const void *a, const void *b) {
        return memcmp(((const StoreSession *) a)->hash, ((const StoreSession *) b)->hash,
                      SECRET_HASH_BYTES);
}

static int method_session_list(Request *r) {
        Manager *m = r->manager;
        SessionListParams *p = r->params;
        SessionPage pg = { .manager = m, .now = now_ms() };
        uint8_t after[SECRET_HASH_BYTES];
        StoreTxn *t = NULL;
        int q;

        pg.limit = p->limit.set ? p->limit.v : VMM_PAGE_DEFAULT;
        if (p->after.set)
                session_id_prefix(p->after.ptr, after, 0xff);
        msgpack_sbuffer_init(&pg.items);
        msgpack_packer_init(&pg.pk, &pg.items, msgpack_sbuffer_write);

        q = store_read_begin(m->store, &t);
        if (q < 0)
                goto out;
        if (p->vm_id.set) {
                char vm_id[VMM_VM_ID_MAX + 1];
                size_t n = 0, max = 1100;
                StoreSession *ss = malloc(max * sizeof *ss);
                pstr_copy(vm_id, sizeof vm_id, &p->vm_id);
                if (!ss)
                        q = -ENOMEM;
                else {
                        q = store_vm_sessions(t, vm_id, ss, max, &n);
                        if (q == -E2BIG)
                                q = 0;
                        qsort(ss, n, sizeof *ss, session_cmp);
                        for (size_t i = 0; q >= 0 && i < n; i++) {
                                if (p->after.set && memcmp(ss[i].hash, after, SECRET_HASH_BYTES) <= 0)
                                        continue;
                                int k = session_page_add(&pg, &ss[i]);
                                if (k != 0)
                                        break;
                        }
                        free(ss);
                }
        } else
                q = store_session_foreach(t, p->after.set ? after : NULL, session_page_add, &pg);
        store_read_end(t);
        if (pg.error < 0)
                q = pg.error;
        if (q < 0)
                goto out;

        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 2) || mp_str(&pk, "sessions") ||
                    msgpack_pack_array(&pk, pg.count) ||
                    (pg.items.size > 0 && msgpack_sbuffer_write(&sb, pg.items.data, pg.items.size)) ||
                    (pg.more ? mp_kv_str(&pk, "next", pg.last) : mp_kv_nil(&pk, "next"));
        reply_packed(r, &sb, fail);
        q = 0;
out:
        msgpack_sbuffer_destroy(&pg.items);
        return q;
}

typedef struct RevokeParams {
        ParamStr vm_id;
        ParamStr id;
} RevokeParams;

static const ParamField revoke_fields[] = {
        { "vm_id", PARAM_STR, offsetof(RevokeParams, vm_id), false, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "id", PARAM_STR, offsetof(RevokeParams, id), false, SECRET_SESSION_ID_LEN,
          SECRET_SESSION_ID_LEN, valid_session_id, NULL },
};

typedef struct RevokeState {
        char vm_id[VMM_VM_ID_MAX + 1];
        char id[SECRET_SESSION_ID_LEN + 1];
        uint8_t (*ended)[SECRET_HASH_BYTES];
        char (*ended_vm)[VMM_VM_ID_MAX + 1];
        size_t n_ended, cap_ended;
} RevokeState;

static void revoke_state_free(void *p) {
        RevokeState *st = p;
        if (!st)
                return;
        free(st->ended);
        free(st->ended_vm);
        free(st);
}

typedef struct PrefixScan {
        uint8_t prefix[SECRET_SESSION_ID_LEN / 2];
        StoreSession found[8];
        size_t n;
} PrefixScan;

static int prefix_collect(void *userdata, const StoreSession *s) {
        PrefixScan *ps = userdata;
        if (memcmp(s->hash, ps->prefix, sizeof ps->prefix) != 0)
                return 1;
        if (ps->n == ELEMENTSOF(ps->found))
                return 1;
        ps->found[ps->n++] = *s;
        return 0;
}

static int revoke_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        RevokeState *st = r->state;
        int q;

        st->n_ended = 0;
        if (st->vm_id[0]) {
                StoreVm *vm = malloc(sizeof *vm);
                if (!vm)
                        return -ENOMEM;
                q = store_vm_get(t, st->vm_id, vm);
                free(vm);
                if (q < 0)
                        return q;
                return end_sessions(t, st->vm_id, 0, NULL, &st->ended, &st->n_ended,
                                    &st->cap_ended);
        }
        PrefixScan ps = { .n = 0 };
        uint8_t from[SECRET_HASH_BYTES];
        session_id_prefix(st->id, from, 0);
        memcpy(ps.prefix, from, sizeof ps.prefix);
        /* strictly after prefix+00..00: a hash equal to it is as likely as guessing a token */
        q = store_session_foreach(t, from, prefix_collect, &ps);
        if (q < 0)
                return q;
        if (ps.n == 0)
                return -ENOENT;
        st->ended = malloc(ps.n * SECRET_HASH_BYTES);
        st->ended_vm = malloc(ps.n * (VMM_VM_ID_MAX + 1));
        if (!st->ended || !st->ended_vm)
                return -ENOMEM;
        for (size_t i = 0; i < ps.n; i++) {
                q = store_session_delete(t, ps.found[i].hash);
                if (q < 0)
                        return q;
                memcpy(st->ended[i], ps.found[i].hash, SECRET_HASH_BYTES);
                memcpy(st->ended_vm[i], ps.found[i].vm_id, VMM_VM_ID_MAX + 1);
        }
        st->n_ended = ps.n;
        return 0;
}

static void revoke_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        RevokeState *st = r->state;
        msgpack_sbuffer sb;
        msgpack_packer pk;

        if (q == -ENOENT) {
                if (st->vm_id[0])
                        rpc_reply_error(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", st->vm_id);
                else
                        rpc_reply_error(r, VMM_E_NOT_FOUND, "no session '%s'", st->id);
                rpc_finish(r);
                return;
        }
        if (q < 0) {
                rpc_reply_errno(r, q);
                rpc_finish(r);
                return;
        }
        for (size_t i = 0; i < st->n_ended; i++)
                sessions_ended(r->manager, st->vm_id[0] ? st->vm_id : st->ended_vm[i],
                               st->ended + i, 1, "revoked");
        LOG_ADMIN(r, "revoked %zu sessions (%s %s)", st->n_ended, st->vm_id[0] ? "VM" : "session",
                  st->vm_id[0] ? st->vm_id : st->id);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        reply_packed(r, &sb, msgpack_pack_map(&pk, 1) || mp_kv_u64(&pk, "revoked", st->n_ended));
        rpc_finish(r);
}

static bool revoke_check(const void *params, char *msg, size_t len) {
        const RevokeParams *p = params;
        if (p->vm_id.set != p->id.set)
                return true;
        snprintf(msg, len, "give exactly one of vm_id and id");
        return false;
}

static int method_session_revoke(Request *r) {
        RevokeParams *p = r->params;
        RevokeState *st;

        st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = revoke_state_free;
        if (p->vm_id.set)
                pstr_copy(st->vm_id, sizeof st->vm_id, &p->vm_id);
        else
                pstr_copy(st->id, sizeof st->id, &p->id);
        r->job.write = revoke_write;
        r->job.done = revoke_written;
        jobs_submit_write(r->manager->jobs, &r->job);
        return 1;
}

/* ---- conn.list / conn.kill ---- */

typedef struct ConnListParams {
        ParamUint limit;
        ParamUint after;
} ConnListParams;

static const ParamField conn_list_fields[] = {
        { "limit", PARAM_UINT, offsetof(ConnListParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL },
        { "after", PARAM_UINT, offsetof(ConnListParams, after), false, 0, UINT64_MAX, NULL, NULL },
};

static int conn_id_cmp(const void *a, const void *b) {
        const Conn *x = *(Conn *const *) a, *y = *(Conn *const *) b;
        return x->id < y->id ? -1 : x->id > y->id;
}

static int method_conn_list(Request *r) {
        Manager *m = r->manager;
        ConnListParams *p = r->params;
        size_t limit = p->limit.set ? p->limit.v : VMM_PAGE_DEFAULT, n = 0, count = 0;
        uint64_t after = p->after.set ? p->after.v : 0;
        msgpack_sbuffer items, sb;
        msgpack_packer pk, ipk;
        bool more = false, fail = false;
        uint64_t last = 0;

        Conn **all = malloc(MAX(m->n_conns, (uint64_t) 1) * sizeof(Conn *));
        if (!all)
                return -ENOMEM;
        for (Conn *c = m->conns; c; c = c->next)
                if (c->kind == CONN_TCP && c->id > after)
                        all[n++] = c;
        qsort(all, n, sizeof *all, conn_id_cmp);
        msgpack_sbuffer_init(&items);
        msgpack_packer_init(&ipk, &items, msgpack_sbuffer_write);
        for (size_t i = 0; i < n && !fail; i++) {
                Conn *c = all[i];
                if (count == limit || items.size + 256 > VMM_PAGE_BYTES_MAX) {
                        more = true;
                        break;
                }
                fail = msgpack_pack_map(&ipk, 5) || mp_kv_u64(&ipk, "id", c->id) ||
                       mp_kv_str(&ipk, "peer", c->peer_str) ||
                       (c->attached ? mp_kv_str(&ipk, "vm_id", c->vm_id) : mp_kv_nil(&ipk, "vm_id")) ||
                       mp_kv_i64(&ipk, "since", c->since_ms) ||
                       mp_kv_u64(&ipk, "requests", c->requests);
                count++;
                last = c->id;
        }
        free(all);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        fail = fail || msgpack_pack_map(&pk, 2) || mp_str(&pk, "connections") ||
               msgpack_pack_array(&pk, count) ||
               (items.size > 0 && msgpack_sbuffer_write(&sb, items.data, items.size)) ||
               (more ? mp_kv_u64(&pk, "next", last) : mp_kv_nil(&pk, "next"));
        msgpack_sbuffer_destroy(&items);
        reply_packed(r, &sb, fail);
        return 0;
}

typedef struct ConnKillParams {
        ParamUint id;
} ConnKillParams;

static const ParamField conn_kill_fields[] = {
        { "id", PARAM_UINT, offsetof(ConnKillParams, id), true, 0, UINT64_MAX, NULL, NULL },
};

static int method_conn_kill(Request *r) {
        ConnKillParams *p = r->params;

        for (Conn *c = r->manager->conns; c; c = c->next)
                if (c->kind == CONN_TCP && c->id == p->id.v && !c->close_pending) {
                        LOG_ADMIN(r, "closed connection %" PRIu64 " from %s", c->id, c->peer_str);
                        manager_close_later(r->manager, c, "killed");
                        rpc_reply(r, NULL, 0);
                        return 0;
                }
        rpc_reply_error(r, VMM_E_NOT_FOUND, "no connection %" PRIu64, p->id.v);
        return 0;
}

/* ---- events.watch ---- */

static int method_events_watch(Request *r) {
        rpc_reply(r, NULL, 0);
        events_watch(r->manager, r->conn);
        return 0;
}

/* ---- backup ---- */

typedef struct BackupState {
        int fd;
        uint64_t bytes;
} BackupState;

static void backup_state_free(void *p) {
        BackupState *st = p;
        if (!st)
                return;
        if (st->fd >= 0)
                (void) close(st->fd);
        free(st);
}

static int backup_run(Job *j) {
        Request *r = REQUEST_OF(j);
        BackupState *st = r->state;
        return store_backup(r->manager->store, st->fd, &st->bytes,
                            jobs_cancel_flag(r->manager->jobs));
}

static void backup_done(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        BackupState *st = r->state;
        msgpack_sbuffer sb;
        msgpack_packer pk;

        if (q < 0) {
                log_warning_errno(q, "Backup failed: %s", strerror(-q));
                if (q == -ECANCELED)
                        rpc_reply_error(r, VMM_E_SHUTTING_DOWN,
                                        "backup abandoned: the daemon is stopping");
                else if (q == -EBADF || q == -EINVAL || q == -ESPIPE || q == -EPIPE ||
                         q == -EISDIR || q == -ECONNRESET)
                        rpc_reply_error(r, VMM_E_BAD_REQUEST,
                                        "cannot write the backup to that descriptor: %s",
                                        strerror(-q));
                else if (q == -ENOSPC || q == -EIO || q == -EFBIG || q == -EDQUOT)
                        rpc_reply_error(r, VMM_E_UNAVAILABLE, "backup failed: %s", strerror(-q));
                else
                        rpc_reply_errno(r, q);
        } else {
                LOG_ADMIN(r, "backup of %" PRIu64 " bytes written", st->bytes);
                msgpack_sbuffer_init(&sb);
                msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
                reply_packed(r, &sb, msgpack_pack_map(&pk, 1) || mp_kv_u64(&pk, "bytes", st->bytes));
        }
        rpc_finish(r);
}

static int method_backup(Request *r) {
        BackupState *st;
        int fd = conn_take_fd(r->conn);

        if (fd < 0) {
                rpc_reply_error(r, VMM_E_BAD_REQUEST,
                                "backup needs a writable file descriptor sent with the request "
                                "(SCM_RIGHTS)");
                return 0;
        }
        st = calloc(1, sizeof *st);
        if (!st) {
                close(fd);
                return -ENOMEM;
        }
        st->fd = fd;
        r->state = st;
        r->state_free = backup_state_free;
        r->job.hash = backup_run;
        r->job.done = backup_done;
        int q = jobs_submit_thread(r->manager->jobs, &r->job);
        if (q < 0)
                return q;
        return 1;
}

/* ---- shutdown ---- */

static int method_shutdown(Request *r) {
        LOG_ADMIN(r, "%s", "asked the daemon to stop");
        rpc_reply(r, NULL, 0);
        manager_begin_shutdown(r->manager, "admin request");
        return 0;
}

#define FIELDS(f) f, ELEMENTSOF(f)

const Method admin_methods[] = {
        { VMM_M_STATUS, method_status, METHOD_NOAUTH, NULL, 0, 0, NULL },
        { VMM_M_VM_LIST, method_vm_list, METHOD_NOAUTH, vm_list_fields, 3, sizeof(ListParams), NULL },
        { VMM_M_VM_GET, method_admin_vm_get, METHOD_NOAUTH, FIELDS(vm_id_fields),
          sizeof(VmIdParams), NULL },
        { VMM_M_DISK_LIST, method_disk_list, METHOD_NOAUTH, disk_list_fields, 2,
          sizeof(ListParams), NULL },
        { VMM_M_VM_CREATE, method_vm_create, METHOD_NOAUTH | METHOD_WRITE,
          FIELDS(vm_password_fields), sizeof(VmIdParams), NULL },
        { VMM_M_VM_DELETE, method_vm_delete, METHOD_NOAUTH | METHOD_WRITE, FIELDS(vm_id_fields),
          sizeof(VmIdParams), NULL },
        { VMM_M_VM_PASSWD, method_vm_passwd, METHOD_NOAUTH | METHOD_WRITE,
          FIELDS(vm_password_fields), sizeof(VmIdParams), NULL },
        { VMM_M_SESSION_LIST, method_session_list, METHOD_NOAUTH, FIELDS(session_list_fields),
          sizeof(SessionListParams), NULL },
        { VMM_M_SESSION_REVOKE, method_session_revoke, METHOD_NOAUTH | METHOD_WRITE,
          FIELDS(revoke_fields), sizeof(RevokeParams), revoke_check },
        { VMM_M_CONN_LIST, method_conn_list, METHOD_NOAUTH, FIELDS(conn_list_fields),
          sizeof(ConnListParams), NULL },
        { VMM_M_CONN_KILL, method_conn_kill, METHOD_NOAUTH, FIELDS(conn_kill_fields),
          sizeof(ConnKillParams), NULL },
        { VMM_M_EVENTS_WATCH, method_events_watch, METHOD_NOAUTH, NULL, 0, 0, NULL },
        { VMM_M_BACKUP, method_backup, METHOD_NOAUTH, NULL, 0, 0, NULL },
        { VMM_M_SHUTDOWN, method_shutdown, METHOD_NOAUTH, NULL, 0, 0, NULL },
};

const size_t n_admin_methods = ELEMENTSOF(admin_methods);
