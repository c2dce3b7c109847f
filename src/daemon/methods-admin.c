/* SPDX-License-Identifier: MIT */
/* The daemon's own methods: status, session.revoke, conn.list, conn.kill,
 * events.watch, backup, reload and shutdown. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "log.h"
#include "methods.h"
#include "methods-monitor.h"
#include "shared/clock.h"
#include "shared/mpout.h"

typedef struct AdminParams {
        ParamStr vm_id, user, id_str;
        ParamUint id, limit, after, since;
        ParamList types;
} AdminParams;

/* ---- status ---- */

static int status_start(Request *r) {
        Manager *m = r->manager;
        StoreStats st = { 0 };
        StoreTxn *t = NULL;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        uint64_t mon_bytes = 0, mon_vms = 0;
        uint32_t n_methods = 0;
        JobsStats js;
        int q;

        q = store_read_begin(m->store, &t);
        if (q >= 0) {
                q = store_stats(t, &st);
                store_read_end(t);
        }
        if (q < 0)
                return q;
        jobs_stats(m->jobs, &js);
        monitor_usage(m->monitor, &mon_bytes, &mon_vms);
        for (size_t i = 0; i < m->methods.n; i++)
                n_methods += m->methods.entries[i].stats.calls > 0;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 19) || mp_kv_str(&pk, "version", VMMD_VERSION) ||
                    mp_kv_u64(&pk, "protocol", VMM_PROTOCOL_VERSION) ||
                    mp_kv_u64(&pk, "uptime_ms", mono_ms() - m->started_mono_ms) ||
                    mp_kv_u64(&pk, "vms", st.vms) || mp_kv_u64(&pk, "disks", st.disks) ||
                    mp_kv_u64(&pk, "sessions", st.sessions) ||
                    mp_kv_u64(&pk, "connections", m->n_tcp_clients) ||
                    mp_kv_u64(&pk, "connected_vms", sessions_connected_count(m->sessions)) ||
                    mp_kv_u64(&pk, "requests", m->requests) ||
                    mp_kv_u64(&pk, "users", st.users) || mp_kv_u64(&pk, "groups", st.groups) ||
                    mp_kv_u64(&pk, "bookings", st.bookings) ||
                    mp_kv_u64(&pk, "feed", st.feed_last) ||
                    mp_kv_u64(&pk, "unsent_bytes", conn_hub_unsent_total(m->hub)) ||
                    mp_kv_u64(&pk, "monitor_bytes", mon_bytes) ||
                    mp_kv_u64(&pk, "monitored_vms", mon_vms) || mp_str(&pk, "jobs") ||
                    msgpack_pack_map(&pk, 6) || mp_kv_u64(&pk, "commits", js.commits) ||
                    mp_kv_u64(&pk, "syncs", store_sync_count(m->store)) ||
                    mp_kv_u64(&pk, "writes", js.writes) || mp_kv_u64(&pk, "hashes", js.hashes) ||
                    mp_kv_u64(&pk, "hashes_refused", js.hashes_refused) ||
                    mp_kv_u64(&pk, "hashes_dropped", js.hashes_dropped) || mp_str(&pk, "db") ||
                    msgpack_pack_map(&pk, 3) || mp_kv_str(&pk, "path", store_path(m->store)) ||
                    mp_kv_u64(&pk, "size_bytes", st.size_bytes) ||
                    mp_kv_u64(&pk, "map_size_bytes", st.map_size_bytes) ||
                    mp_str(&pk, "methods") || msgpack_pack_map(&pk, n_methods);
        for (size_t i = 0; !fail && i < m->methods.n; i++) {
                const MethodEntry *e = &m->methods.entries[i];
                uint64_t p50, p99;
                if (e->stats.calls == 0)
                        continue;
                method_stats_percentiles(&e->stats, &p50, &p99);
                fail = mp_str(&pk, e->name) || msgpack_pack_map(&pk, 4) ||
                       mp_kv_u64(&pk, "calls", e->stats.calls) ||
                       mp_kv_u64(&pk, "errors", e->stats.errors) ||
                       mp_kv_u64(&pk, "p50_us", p50) || mp_kv_u64(&pk, "p99_us", p99);
        }
        return reply_packed(r, &sb, fail);
}

/* ---- session.revoke ---- */

typedef struct RevokeState {
        char owner[STORE_NAME_MAX + 1];
        bool user;
        char id[SECRET_SESSION_ID_LEN + 1];
        Ended ended;
} RevokeState;

static void revoke_state_done(void *p) {
        ended_free(&((RevokeState *) p)->ended);
}

static bool revoke_check(const void *params, char *msg, size_t len) {
        const AdminParams *p = params;
        if (p->vm_id.set + p->user.set + p->id_str.set == 1)
                return true;
        snprintf(msg, len, "give exactly one of vm_id, user and id");
        return false;
}

static int revoke_start(Request *r) {
        AdminParams *p = PARAMS(r, AdminParams);
        RevokeState *st = STATE(r, RevokeState);

        if (p->id_str.set)
                pstr_copy(st->id, sizeof st->id, &p->id_str);
        else {
                st->user = p->user.set;
                pstr_copy(st->owner, sizeof st->owner, st->user ? &p->user : &p->vm_id);
        }
        return RPC_NEXT;
}

typedef struct PrefixScan {
        uint8_t prefix[SECRET_SESSION_ID_LEN / 2];
        StoreSession found[8];
        size_t n;
} PrefixScan;

static int prefix_collect(void *userdata, const StoreSession *s) {
        PrefixScan *ps = userdata;
        if (memcmp(s->hash, ps->prefix, sizeof ps->prefix) != 0 || ps->n == ELEMENTSOF(ps->found))
                return 1;
        ps->found[ps->n++] = *s;
        return 0;
}

static int revoke_write(Request *r, StoreTxn *t) {
        RevokeState *st = STATE(r, RevokeState);
        int q;

        if (st->owner[0]) {
                if (st->user) {
                        StoreUser u;
                        q = store_user_get(t, st->owner, &u);
                } else {
                        StoreVm *vm = malloc(sizeof *vm);
                        q = vm ? store_vm_get(t, st->owner, vm) : -ENOMEM;
                        free(vm);
                }
                if (q == -ENOENT)
                        return rpc_fail(r, VMM_E_NOT_FOUND, "%s '%s' does not exist",
                                        st->user ? "user" : "VM", st->owner);
                if (q < 0)
                        return q;
                return end_sessions(r, t, st->user ? NULL : st->owner,
                                    st->user ? st->owner : NULL, 0, NULL, "revoked", &st->ended);
        }
        PrefixScan ps = { .n = 0 };
        uint8_t from[SECRET_HASH_BYTES];
        session_id_prefix(st->id, from);
        memcpy(ps.prefix, from, sizeof ps.prefix);
        /* strictly after prefix+00..00: a hash equal to it is as likely as guessing a token */
        q = store_session_foreach(t, from, prefix_collect, &ps);
        if (q < 0)
                return q;
        if (ps.n == 0)
                return rpc_fail(r, VMM_E_NOT_FOUND, "no session '%s'", st->id);
        st->ended.n = 0;
        for (size_t i = 0; q >= 0 && i < ps.n; i++)
                q = end_session(r, t, &ps.found[i], "revoked", &st->ended);
        return q;
}

static int revoke_done(Request *r) {
        RevokeState *st = STATE(r, RevokeState);
        msgpack_sbuffer sb;
        msgpack_packer pk;

        ended_detach(r->manager, &st->ended);
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "revoked %zu sessions (%s %s)", st->ended.n,
                   st->id[0] ? "session" : st->user ? "user" : "VM",
                   st->id[0] ? st->id : st->owner);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        return reply_packed(r, &sb, msgpack_pack_map(&pk, 1) ||
                                    mp_kv_u64(&pk, "revoked", st->ended.n));
}

/* ---- conn.list, conn.kill ---- */

static int client_id_cmp(const void *a, const void *b) {
        const Client *x = *(Client *const *) a, *y = *(Client *const *) b;
        return x->id < y->id ? -1 : x->id > y->id;
}

static int conn_list_start(Request *r) {
        Manager *m = r->manager;
        AdminParams *p = PARAMS(r, AdminParams);
        uint64_t after = p->after.set ? p->after.v : 0;
        size_t n = 0;
        Page pg;
        int q;

        Client **all = malloc(MAX(m->n_tcp_clients, (uint64_t) 1) * sizeof(Client *));
        if (!all)
                return -ENOMEM;
        for (Client *c = m->clients; c; c = c->next)
                if (c->socket == SOCKET_TCP && c->conn && c->id > after && n < m->n_tcp_clients)
                        all[n++] = c;
        qsort(all, n, sizeof *all, client_id_cmp);
        page_init(&pg, &p->limit);
        q = 0;
        for (size_t i = 0; i < n && q >= 0; i++) {
                Client *c = all[i];
                char key[32];
                if (!page_room(&pg))
                        break;
                size_t before = pg.items.size;
                if (msgpack_pack_map(&pg.pk, 6) || mp_kv_u64(&pg.pk, "id", c->id) ||
                    mp_kv_str(&pg.pk, "peer", c->peer_str) ||
                    (c->link.attached && c->link.kind == PRINCIPAL_VM
                             ? mp_kv_str(&pg.pk, "vm_id", c->link.name)
                             : mp_kv_nil(&pg.pk, "vm_id")) ||
                    (c->link.attached && c->link.kind == PRINCIPAL_USER
                             ? mp_kv_str(&pg.pk, "user", c->link.name)
                             : mp_kv_nil(&pg.pk, "user")) ||
                    mp_kv_i64(&pg.pk, "since", c->since_ms) ||
                    mp_kv_u64(&pg.pk, "requests", c->requests))
                        q = -ENOMEM;
                snprintf(key, sizeof key, "%" PRIu64, c->id);
                if (q >= 0 && !page_added(&pg, before, key))
                        break;
        }
        free(all);
        if (q >= 0)
                q = page_reply_uint(r, &pg, "connections");
        page_done(&pg);
        return q;
}

static int conn_kill_start(Request *r) {
        AdminParams *p = PARAMS(r, AdminParams);

        for (Client *c = r->manager->clients; c; c = c->next)
                if (c->socket == SOCKET_TCP && c->id == p->id.v && c->conn &&
                    conn_is_open(c->conn)) {
                        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "closed connection %" PRIu64
                                   " from %s", c->id, c->peer_str);
                        conn_close_later(c->conn, "killed");
                        rpc_reply(r, NULL, 0);
                        return RPC_REPLIED;
                }
        return rpc_fail(r, VMM_E_NOT_FOUND, "no connection %" PRIu64, p->id.v);
}

/* ---- events.watch ---- */

static void watch_go(Request *r) {
        events_watch_go(r->manager->events, r->client);
}

static int watch_start(Request *r) {
        AdminParams *p = PARAMS(r, AdminParams);
        Manager *m = r->manager;
        uint64_t last = 0, oldest = 0;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int q;

        q = events_watch(m->events, r->client, &r->caller, p->since.set, p->since.v,
                         p->types.items, p->types.set ? p->types.n : 0, &last, &oldest);
        if (q == -E2BIG)
                return rpc_fail(r, VMM_E_TOO_LARGE, "types: at most %d prefixes",
                                EVENTS_TYPES_MAX);
        if (q < 0)
                return q;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (!r->has_params)
                /* part 1's call (params []): its result is {} as it always was */
                q = reply_packed(r, &sb, msgpack_pack_map(&pk, 0));
        else
                q = reply_packed(r, &sb,
                                 msgpack_pack_map(&pk, 2) || mp_kv_u64(&pk, "feed", last) ||
                                         (oldest ? mp_kv_u64(&pk, "oldest", oldest)
                                                 : mp_kv_nil(&pk, "oldest")));
        /* the reply first, then the events */
        r->delivered = watch_go;
        return q;
}

/* ---- backup ---- */

typedef struct BackupState {
        bool has_fd;
        int fd;
        uint64_t bytes;
} BackupState;

static void backup_state_done(void *p) {
        BackupState *st = p;
        if (st->has_fd)
                (void) close(st->fd);
}

static int backup_start(Request *r) {
        BackupState *st = STATE(r, BackupState);

        st->fd = r->client->conn ? conn_take_fd(r->client->conn) : -1;
        if (st->fd < 0)
                return rpc_fail(r, VMM_E_BAD_REQUEST,
                                "backup needs a writable file descriptor sent with the request "
                                "(SCM_RIGHTS)");
        st->has_fd = true;
        return RPC_NEXT;
}

/* on a thread of its own (long_hash): a slow reader must not hold up logins */
static int backup_run(Request *r) {
        BackupState *st = STATE(r, BackupState);
        return store_backup(r->manager->store, st->fd, &st->bytes,
                            jobs_cancel_flag(r->manager->jobs));
}

static int backup_done(Request *r, int q) {
        BackupState *st = STATE(r, BackupState);
        msgpack_sbuffer sb;
        msgpack_packer pk;

        if (q == -EBUSY)
                return rpc_fail(r, VMM_E_CONFLICT, "a backup is running already; try again "
                                "when it is done");
        if (q == -ECANCELED)
                return rpc_fail(r, VMM_E_SHUTTING_DOWN, "backup abandoned: the daemon is stopping");
        if (q == -EBADF || q == -EINVAL || q == -ESPIPE || q == -EPIPE || q == -EISDIR ||
            q == -ECONNRESET)
                return rpc_fail(r, VMM_E_BAD_REQUEST,
                                "cannot write the backup to that descriptor: %s", strerror(-q));
        if (q == -ENOSPC || q == -EIO || q == -EFBIG || q == -EDQUOT)
                return rpc_fail(r, VMM_E_UNAVAILABLE, "backup failed: %s", strerror(-q));
        if (q < 0)
                return q;
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "backup of %" PRIu64 " bytes written",
                   st->bytes);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        return reply_packed(r, &sb, msgpack_pack_map(&pk, 1) || mp_kv_u64(&pk, "bytes", st->bytes));
}

/* ---- reload, shutdown ---- */

static int reload_start(Request *r) {
        Manager *m = r->manager;
        char err[600] = "";
        int q;

        q = m->hooks.reload ? m->hooks.reload(m, err, sizeof err) : -EOPNOTSUPP;
        if (q < 0)
                return rpc_fail(r, VMM_E_BAD_REQUEST, "%s; the old settings stay",
                                err[0] ? err : strerror(-q));
        LOG_CHANGE(r, LOG_MID_RELOADED, NULL, "%s", "reloaded the configuration");
        rpc_reply(r, NULL, 0);
        return RPC_REPLIED;
}

static int shutdown_start(Request *r) {
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "%s", "asked the daemon to stop");
        rpc_reply(r, NULL, 0);
        if (r->manager->hooks.shutdown)
                r->manager->hooks.shutdown(r->manager, "admin request");
        return RPC_REPLIED;
}

/* ---- the rows ---- */

static const ParamField revoke_fields[] = {
        { "vm_id", PARAM_STR, offsetof(AdminParams, vm_id), false, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "user", PARAM_STR, offsetof(AdminParams, user), false, 1, VMM_USER_NAME_MAX,
          valid_user_name, NULL },
        { "id", PARAM_STR, offsetof(AdminParams, id_str), false, SECRET_SESSION_ID_LEN,
          SECRET_SESSION_ID_LEN, valid_session_id, NULL },
};
static const ParamField conn_list_fields[] = {
        { "limit", PARAM_UINT, offsetof(AdminParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL },
        { "after", PARAM_UINT, offsetof(AdminParams, after), false, 0, UINT64_MAX, NULL, NULL },
};
static const ParamField conn_kill_fields[] = {
        { "id", PARAM_UINT, offsetof(AdminParams, id), true, 0, UINT64_MAX, NULL, NULL },
};
static const ParamField watch_fields[] = {
        { "since", PARAM_UINT, offsetof(AdminParams, since), false, 0, UINT64_MAX, NULL, NULL },
        { "types", PARAM_STRS, offsetof(AdminParams, types), false, 1, 63, valid_text_line, NULL,
          EVENTS_TYPES_MAX, false, NULL },
};

#define ADMIN_PEER .flags = ON_ADMIN, .callers = CALLER_PEER, .min_role = STORE_ROLE_ADMIN, \
        .params_size = sizeof(AdminParams)

static const Method m_status = { .name = VMM_M_STATUS, ADMIN_PEER, .start = status_start };
static const Method m_revoke = {
        .name = VMM_M_SESSION_REVOKE, .flags = ON_ADMIN | METHOD_TCP_ADMIN,
        .callers = CALLER_USER | CALLER_PEER, .min_role = STORE_ROLE_ADMIN,
        .params_size = sizeof(AdminParams), .fields = FIELDS(revoke_fields),
        .check = revoke_check, .state_size = sizeof(RevokeState),
        .state_done = revoke_state_done, .start = revoke_start, .write = revoke_write,
        .done = revoke_done,
};
static const Method m_conn_list = {
        .name = VMM_M_CONN_LIST, ADMIN_PEER, .fields = FIELDS(conn_list_fields),
        .start = conn_list_start,
};
static const Method m_conn_kill = {
        .name = VMM_M_CONN_KILL, ADMIN_PEER, .fields = FIELDS(conn_kill_fields),
        .start = conn_kill_start,
};
static const Method m_watch = {
        .name = VMM_M_EVENTS_WATCH, .flags = ON_BOTH, .callers = CALLER_SESSION,
        .min_role = STORE_ROLE_VIEWER, .params_size = sizeof(AdminParams),
        .fields = FIELDS(watch_fields), .start = watch_start,
};
static const Method m_backup = {
        .name = VMM_M_BACKUP, ADMIN_PEER, .state_size = sizeof(BackupState),
        .state_done = backup_state_done, .start = backup_start, .hash = backup_run,
        .hashed = backup_done, .long_hash = true,
};
static const Method m_reload = { .name = VMM_M_RELOAD, ADMIN_PEER, .start = reload_start };
static const Method m_shutdown = { .name = VMM_M_SHUTDOWN, ADMIN_PEER, .start = shutdown_start };

METHOD_ROWS(admin, &m_status, &m_revoke, &m_conn_list, &m_conn_kill, &m_watch, &m_backup,
            &m_reload, &m_shutdown);
