/* SPDX-License-Identifier: MIT */
/* Sessions: auth (VMs), user.auth (people), resume, logout, passwd, whoami,
 * and the purge of expired sessions. A login creates its session only if
 * the stored password hash is still the one the password was checked
 * against: a password change ends logins already in progress. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "log.h"
#include "methods.h"
#include "session-touch.h"
#include "shared/clock.h"
#include "shared/mpout.h"
#include "shared/secret.h"

static const char auth_failed_msg[] = "unknown name or wrong password";
static const char token_invalid_msg[] = "the token is not valid (expired or ended)";

/* ---- auth, user.auth ---- */

typedef struct AuthParams {
        ParamStr name;                  /* vm_id (auth) or name (user.auth) */
        ParamStr password;
} AuthParams;

static const ParamField auth_fields[] = {
        { "vm_id", PARAM_STR, offsetof(AuthParams, name), true, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "password", PARAM_STR, offsetof(AuthParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
};

static const ParamField user_auth_fields[] = {
        { "name", PARAM_STR, offsetof(AuthParams, name), true, 1, VMM_USER_NAME_MAX,
          valid_user_name, NULL },
        { "password", PARAM_STR, offsetof(AuthParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
};

typedef struct AuthState {
        bool user;                      /* user.auth */
        char name[STORE_NAME_MAX + 1];
        char pwhash[SECRET_PWHASH_MAX];
        bool known;
        int access;                     /* the VM's */
        int role;                       /* the user's */
        char token[VMM_TOKEN_LEN + 1];
        uint8_t hash[SECRET_HASH_BYTES];
        int64_t now, expires_at;
        uint64_t keep;                  /* sessions_per_vm, as configured at the start */
        Ended ended;
} AuthState;

static void auth_state_done(void *p) {
        AuthState *st = p;
        secret_wipe(st->token, sizeof st->token);
        secret_wipe(st->pwhash, sizeof st->pwhash);
        ended_free(&st->ended);
}

static int auth_start(Request *r) {
        AuthParams *p = PARAMS(r, AuthParams);
        AuthState *st = STATE(r, AuthState);
        StoreTxn *t = NULL;
        int q;

        st->user = strcmp(r->method->name, VMM_M_USER_AUTH) == 0;
        st->keep = r->manager->config.sessions_per_vm;
        pstr_copy(st->name, sizeof st->name, &p->name);
        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                return q;
        if (st->user) {
                StoreUser u;
                q = store_user_get(t, st->name, &u);
                if (q >= 0) {
                        memcpy(st->pwhash, u.pwhash, sizeof st->pwhash);
                        st->role = u.role;
                }
        } else {
                StoreVm *vm = malloc(sizeof *vm);
                q = vm ? store_vm_get(t, st->name, vm) : -ENOMEM;
                if (q >= 0) {
                        memcpy(st->pwhash, vm->pwhash, sizeof st->pwhash);
                        st->access = vm->access;
                }
                free(vm);
        }
        store_read_end(t);
        if (q < 0 && q != -ENOENT)
                return q;
        st->known = q >= 0;
        return RPC_NEXT;
}

/* The same work whether or not the name exists: an unknown one hashes the
 * password it was given (the cost of a check) and fails. */
static int auth_hash(Request *r) {
        AuthParams *p = PARAMS(r, AuthParams);
        AuthState *st = STATE(r, AuthState);

        if (!st->known) {
                char scratch[SECRET_PWHASH_MAX];
                (void) secret_password_hash(p->password.ptr, p->password.len, scratch);
                return 0;
        }
        return secret_password_verify(st->pwhash, p->password.ptr, p->password.len) ? 1 : 0;
}

static int auth_hashed(Request *r, int result) {
        AuthState *st = STATE(r, AuthState);
        uint8_t raw[VMM_TOKEN_BYTES];

        if (result < 0)
                return result;
        /* Attempts from one address run concurrently (one per connection):
         * the limit is checked again now that this one is decided, so no more
         * than the limit's worth of outcomes is revealed in a minute. */
        if (rpc_peer_limited(r))
                return rpc_fail(r, VMM_E_RATE_LIMITED,
                                "too many failed logins from this address; retry in a minute");
        if (result == 0) {
                rpc_login_failed(r, st->name, st->user);
                return rpc_fail(r, VMM_E_UNAUTHENTICATED, auth_failed_msg);
        }
        if (!st->user && st->access == STORE_ACCESS_PENDING)
                return rpc_fail(r, VMM_E_FORBIDDEN, "VM '%s' is awaiting approval by an admin",
                                st->name);
        if (!st->user && st->access == STORE_ACCESS_SUSPENDED)
                return rpc_fail(r, VMM_E_FORBIDDEN, "VM '%s' is suspended", st->name);
        secret_token_new(raw, st->token);
        secret_token_hash(r->manager->hash_key, raw, st->hash);
        secret_wipe(raw, sizeof raw);
        st->now = now_ms();
        st->expires_at = st->now + (int64_t) (r->manager->config.session_ttl_s * 1000);
        return RPC_NEXT;
}

static int auth_write(Request *r, StoreTxn *t) {
        AuthState *st = STATE(r, AuthState);
        StoreSession s = { .created_at = st->now, .expires_at = st->expires_at };
        char sid[SECRET_SESSION_ID_LEN + 1];
        int q;

        memcpy(s.hash, st->hash, sizeof s.hash);
        if (st->user) {
                StoreUser u;
                q = store_user_get(t, st->name, &u);
                if (q == -ENOENT || (q >= 0 && strcmp(u.pwhash, st->pwhash) != 0))
                        return rpc_fail(r, VMM_E_UNAUTHENTICATED, auth_failed_msg);
                if (q < 0)
                        return q;
                snprintf(s.user, sizeof s.user, "%s", st->name);
                u.last_login_at = st->now;
                q = store_user_put(t, &u);
        } else {
                StoreVm *vm = malloc(sizeof *vm);
                q = vm ? store_vm_get(t, st->name, vm) : -ENOMEM;
                /* the password was changed (or the VM deleted) meanwhile */
                if (q == -ENOENT || (q >= 0 && strcmp(vm->pwhash, st->pwhash) != 0))
                        q = rpc_fail(r, VMM_E_UNAUTHENTICATED, auth_failed_msg);
                else if (q >= 0 && vm->access != STORE_ACCESS_ACTIVE)
                        q = rpc_fail(r, VMM_E_FORBIDDEN, "VM '%s' is not active", st->name);
                else if (q >= 0) {
                        vm->last_seen_at = st->now;
                        vm->requested = false;
                        q = store_vm_put_same_disks(t, vm);
                }
                free(vm);
                str_copy(s.vm_id, sizeof s.vm_id, st->name);
        }
        if (q < 0)
                return q;
        q = store_session_put(t, &s);
        if (q < 0)
                return q;
        session_public_id(st->hash, sid);
        q = events_append(r, t, &(Event) { .type = "session.started", .session = sid,
                                           .vm_id = st->user ? NULL : st->name,
                                           .user = st->user ? st->name : NULL,
                                           .peer = rpc_peer_text(r) });
        if (q < 0)
                return q;
        return end_sessions(r, t, st->user ? NULL : st->name, st->user ? st->name : NULL,
                            st->keep, st->hash, "evicted", &st->ended);
}

static int auth_done(Request *r) {
        AuthState *st = STATE(r, AuthState);
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int q;

        ended_detach(r->manager, &st->ended);
        q = rpc_attach(r, st->hash, st->user ? PRINCIPAL_USER : PRINCIPAL_VM, st->name);
        if (q < 0)
                log_error("Out of memory attaching connection %" PRIu64, r->client->id);
        log_struct(LOG_INFO, &(LogFields) { .vm_id = st->user ? NULL : st->name,
                                            .user = st->user ? st->name : NULL,
                                            .peer = rpc_peer_text(r), .has_conn = true,
                                            .conn = r->client->id, .admin_uid = -1 },
                   "%s '%s' logged in from %s", st->user ? "User" : "VM", st->name,
                   rpc_peer_text(r));
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, st->user ? 4 : 3) ||
                    mp_kv_str(&pk, st->user ? "name" : "vm_id", st->name) ||
                    (st->user && mp_kv_str(&pk, "role", role_to_string(st->role))) ||
                    mp_kv_str(&pk, "token", st->token) ||
                    mp_kv_i64(&pk, "expires_at", st->expires_at);
        if (!fail)
                rpc_reply(r, sb.data, sb.size);
        secret_wipe(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return fail ? -ENOMEM : RPC_REPLIED;
}

/* ---- resume ---- */

typedef struct ResumeParams {
        ParamStr token;
} ResumeParams;

static const ParamField resume_fields[] = {
        { "token", PARAM_STR, offsetof(ResumeParams, token), true, VMM_TOKEN_LEN, VMM_TOKEN_LEN,
          valid_token, NULL },
};

typedef struct ResumeState {
        uint8_t hash[SECRET_HASH_BYTES];
        StoreSession session;           /* as read before the write */
        bool attached;                  /* some connection is attached (the loop's view) */
        int role;
        int64_t now, expires_at;
} ResumeState;

static int resume_invalid(Request *r) {
        if (rpc_peer_limited(r))
                return rpc_fail(r, VMM_E_RATE_LIMITED,
                                "too many failed logins from this address; retry in a minute");
        rpc_login_failed(r, "(token)", false);
        return rpc_fail(r, VMM_E_UNAUTHENTICATED, token_invalid_msg);
}

static int resume_start(Request *r) {
        ResumeParams *p = PARAMS(r, ResumeParams);
        ResumeState *st = STATE(r, ResumeState);
        Manager *m = r->manager;
        uint8_t raw[VMM_TOKEN_BYTES];
        StoreTxn *t = NULL;
        int q;

        /* a valid token proves possession: only a failed resume counts
         * against the address, and only then does its limit apply */
        if (secret_token_decode(p->token.ptr, p->token.len, raw) < 0)
                return resume_invalid(r);
        secret_token_hash(m->hash_key, raw, st->hash);
        secret_wipe(raw, sizeof raw);
        st->now = now_ms();
        st->expires_at = st->now + (int64_t) (m->config.session_ttl_s * 1000);
        st->attached = sessions_is_attached(m->sessions, st->hash);

        q = store_read_begin(m->store, &t);
        if (q < 0)
                return q;
        q = store_session_get(t, st->hash, &st->session);
        if (q >= 0 && st->session.user[0]) {
                StoreUser u;
                q = store_user_get(t, st->session.user, &u);
                st->role = q >= 0 ? u.role : 0;
        }
        store_read_end(t);
        if (q == -ENOENT || (q >= 0 && st->session.expires_at <= st->now && !st->attached))
                return resume_invalid(r);
        if (q < 0)
                return q;
        return RPC_NEXT;
}

static int resume_write(Request *r, StoreTxn *t) {
        ResumeState *st = STATE(r, ResumeState);
        StoreSession s;
        int q;

        q = store_session_get(t, st->hash, &s);
        if (q == -ENOENT || (q >= 0 && s.expires_at <= st->now && !st->attached))
                return rpc_fail(r, VMM_E_UNAUTHENTICATED, token_invalid_msg);
        if (q < 0)
                return q;
        s.expires_at = st->expires_at;
        q = store_session_put(t, &s);
        if (q < 0 || !s.vm_id[0])
                return q;
        StoreVm *vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = store_vm_get(t, s.vm_id, vm);
        if (q >= 0) {
                vm->last_seen_at = st->now;
                vm->requested = false;
                q = store_vm_put_same_disks(t, vm);
        }
        free(vm);
        return q;
}

static int resume_reply(Request *r, int64_t expires_at) {
        ResumeState *st = STATE(r, ResumeState);
        StoreSession *s = &st->session;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int q;

        q = rpc_attach(r, st->hash, s->user[0] ? PRINCIPAL_USER : PRINCIPAL_VM,
                       s->user[0] ? s->user : s->vm_id);
        if (q < 0)
                return q;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = s->user[0] ? msgpack_pack_map(&pk, 3) || mp_kv_str(&pk, "name", s->user) ||
                                         mp_kv_str(&pk, "role", role_to_string(st->role))
                               : msgpack_pack_map(&pk, 2) || mp_kv_str(&pk, "vm_id", s->vm_id);
        fail = fail || mp_kv_i64(&pk, "expires_at", expires_at);
        return reply_packed(r, &sb, fail);
}

static int resume_done(Request *r) {
        return resume_reply(r, STATE(r, ResumeState)->expires_at);
}

/* Storage is full: the renewal cannot be stored, but the session is, and
 * using it needs no write. Attach with the expiry on disk; while attached
 * the session counts as used, and the renewal is stored once there is
 * room. */
static int resume_unavailable_attach(Request *r) {
        return resume_reply(r, STATE(r, ResumeState)->session.expires_at);
}

/* ---- logout ---- */

static int logout_write(Request *r, StoreTxn *t) {
        char sid[SECRET_SESSION_ID_LEN + 1];
        int q = store_session_delete(t, r->caller.session_hash);

        if (q == -ENOENT)
                return 0;
        if (q < 0)
                return q;
        session_public_id(r->caller.session_hash, sid);
        return events_append(r, t, &(Event) {
                .type = "session.ended", .session = sid, .reason = "logout",
                .vm_id = r->caller.kind == PRINCIPAL_VM ? r->caller.vm_id : NULL,
                .user = r->caller.kind == PRINCIPAL_USER ? r->caller.name : NULL });
}

static int logout_done(Request *r) {
        (void) sessions_end(r->manager->sessions, r->caller.session_hash, rpc_detached,
                            r->manager);
        rpc_reply(r, NULL, 0);
        return RPC_REPLIED;
}

/* ---- passwd ---- */

typedef struct PasswdParams {
        ParamStr password, new_password;
} PasswdParams;

static const ParamField passwd_fields[] = {
        { "password", PARAM_STR, offsetof(PasswdParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
        { "new_password", PARAM_STR, offsetof(PasswdParams, new_password), true,
          VMM_PASSWORD_MIN, VMM_PASSWORD_MAX, NULL, NULL },
};

typedef struct PasswdState {
        char old_hash[SECRET_PWHASH_MAX];
        char new_hash[SECRET_PWHASH_MAX];
        Ended ended;
} PasswdState;

static void passwd_state_done(void *p) {
        PasswdState *st = p;
        ended_free(&st->ended);
}

static bool caller_is_user(Request *r) {
        return r->caller.kind == PRINCIPAL_USER;
}

static int passwd_start(Request *r) {
        PasswdState *st = STATE(r, PasswdState);
        StoreTxn *t = NULL;
        int q;

        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                return q;
        if (caller_is_user(r)) {
                StoreUser u;
                q = store_user_get(t, r->caller.name, &u);
                if (q >= 0)
                        memcpy(st->old_hash, u.pwhash, sizeof st->old_hash);
        } else {
                StoreVm *vm = malloc(sizeof *vm);
                q = vm ? store_vm_get(t, r->caller.vm_id, vm) : -ENOMEM;
                if (q >= 0)
                        memcpy(st->old_hash, vm->pwhash, sizeof st->old_hash);
                free(vm);
        }
        store_read_end(t);
        return q < 0 ? q : RPC_NEXT;
}

static int passwd_hash(Request *r) {
        PasswdParams *p = PARAMS(r, PasswdParams);
        PasswdState *st = STATE(r, PasswdState);

        if (!secret_password_verify(st->old_hash, p->password.ptr, p->password.len))
                return 0;
        int q = secret_password_hash(p->new_password.ptr, p->new_password.len, st->new_hash);
        return q < 0 ? q : 1;
}

static int passwd_hashed(Request *r, int result) {
        if (result < 0)
                return result;
        if (rpc_peer_limited(r))
                return rpc_fail(r, VMM_E_RATE_LIMITED,
                                "too many failed logins from this address; retry in a minute");
        if (result == 0) {
                /* a wrong old password is a failed login */
                rpc_login_failed(r, caller_is_user(r) ? r->caller.name : r->caller.vm_id,
                                 caller_is_user(r));
                return rpc_fail(r, VMM_E_UNAUTHENTICATED, "wrong password");
        }
        return RPC_NEXT;
}

static int passwd_write(Request *r, StoreTxn *t) {
        PasswdState *st = STATE(r, PasswdState);
        int q;

        if (caller_is_user(r)) {
                StoreUser u;
                q = store_user_get(t, r->caller.name, &u);
                if (q >= 0 && strcmp(u.pwhash, st->old_hash) != 0)
                        return rpc_fail(r, VMM_E_UNAUTHENTICATED,
                                        "the password was changed meanwhile");
                if (q >= 0) {
                        memcpy(u.pwhash, st->new_hash, sizeof u.pwhash);
                        q = store_user_put(t, &u);
                }
                if (q >= 0)
                        q = events_append(r, t, &(Event) { .type = "user.changed",
                                                           .name = r->caller.name });
        } else {
                StoreVm *vm = malloc(sizeof *vm);
                q = vm ? store_vm_get(t, r->caller.vm_id, vm) : -ENOMEM;
                if (q >= 0 && strcmp(vm->pwhash, st->old_hash) != 0)
                        q = rpc_fail(r, VMM_E_UNAUTHENTICATED,
                                     "the password was changed meanwhile");
                else if (q >= 0) {
                        memcpy(vm->pwhash, st->new_hash, sizeof vm->pwhash);
                        q = store_vm_put_same_disks(t, vm);
                }
                free(vm);
                if (q >= 0)
                        q = events_append(r, t, &(Event) { .type = "vm.password_changed",
                                                           .vm_id = r->caller.vm_id });
        }
        if (q < 0)
                return q;
        return end_sessions(r, t, caller_is_user(r) ? NULL : r->caller.vm_id,
                            caller_is_user(r) ? r->caller.name : NULL, 0,
                            r->caller.session_hash, "password", &st->ended);
}

static int passwd_done(Request *r) {
        PasswdState *st = STATE(r, PasswdState);

        ended_detach(r->manager, &st->ended);
        log_info("%s '%s' changed its password (%zu other sessions ended)",
                 caller_is_user(r) ? "User" : "VM",
                 caller_is_user(r) ? r->caller.name : r->caller.vm_id, st->ended.n);
        rpc_reply(r, NULL, 0);
        return RPC_REPLIED;
}

/* ---- ping ---- */

static int ping_start(Request *r) {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        return reply_packed(r, &sb, msgpack_pack_map(&pk, 4) || mp_kv_bool(&pk, "pong", true) ||
                                            mp_kv_str(&pk, "version", VMMD_VERSION) ||
                                            mp_kv_u64(&pk, "protocol", VMM_PROTOCOL_VERSION) ||
                                            mp_kv_i64(&pk, "time", now_ms()));
}

/* ---- whoami ---- */

static int whoami_start(Request *r) {
        Caller *c = &r->caller;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        bool fail;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (c->kind == PRINCIPAL_VM)
                fail = msgpack_pack_map(&pk, 2) || mp_kv_str(&pk, "kind", "vm") ||
                       mp_kv_str(&pk, "vm_id", c->vm_id);
        else
                fail = msgpack_pack_map(&pk, 3) || mp_kv_str(&pk, "kind", "user") ||
                       mp_kv_str(&pk, "name", c->name) ||
                       mp_kv_str(&pk, "role", role_to_string(c->role));
        return reply_packed(r, &sb, fail);
}

/* ---- purging expired sessions ---- */

#define PURGE_MAX 4096                  /* expired sessions ended per run */

typedef struct PurgeJob {
        Job job;
        Manager *manager;
        uint8_t *attached;              /* sorted hashes: the loop's snapshot */
        size_t n_attached;
        int64_t now;
        uint64_t ttl_ms;
        StoreSession *expired;          /* grows with what is found */
        size_t n_expired, cap_expired;
        PendingEvent *events;
        size_t purged, renewed;
} PurgeJob;

static int hash_cmp(const void *a, const void *b) {
        return memcmp(a, b, SECRET_HASH_BYTES);
}

static bool purge_attached(PurgeJob *pj, const uint8_t *hash) {
        return pj->n_attached &&
               bsearch(hash, pj->attached, pj->n_attached, SECRET_HASH_BYTES, hash_cmp);
}

static int purge_collect(void *userdata, const StoreSession *s) {
        PurgeJob *pj = userdata;

        if (pj->n_expired == PURGE_MAX)
                return 1;       /* the rest next time */
        if (pj->n_expired == pj->cap_expired) {
                size_t cap = pj->cap_expired ? pj->cap_expired * 2 : 16;
                void *p = realloc(pj->expired, cap * sizeof *pj->expired);
                if (!p)
                        return -ENOMEM;
                pj->expired = p;
                pj->cap_expired = cap;
        }
        pj->expired[pj->n_expired++] = *s;
        return 0;
}

static int renew(PurgeJob *pj, StoreTxn *t, StoreSession *s) {
        if (s->expires_at >= pj->now + (int64_t) (pj->ttl_ms / 2))
                return 0;
        s->expires_at = pj->now + (int64_t) pj->ttl_ms;
        pj->renewed++;
        return store_session_put(t, s);
}

static int purge_write(Job *j, StoreTxn *t) {
        PurgeJob *pj = (PurgeJob *) j;
        int q;

        events_list_free(&pj->events);
        pj->n_expired = pj->purged = pj->renewed = 0;
        q = store_session_expiry_foreach(t, pj->now, purge_collect, pj);
        if (q < 0)
                return q;
        for (size_t i = 0; i < pj->n_expired; i++) {
                StoreSession *s = &pj->expired[i];
                char sid[SECRET_SESSION_ID_LEN + 1];

                /* attached sessions stay alive while their connections are open */
                if (purge_attached(pj, s->hash)) {
                        q = renew(pj, t, s);
                        if (q < 0)
                                return q;
                        continue;
                }
                q = store_session_delete(t, s->hash);
                if (q == -ENOENT)
                        continue;
                session_public_id(s->hash, sid);
                if (q >= 0)
                        q = events_append_to(&pj->events, t, &(Event) {
                                        .type = "session.ended", .session = sid,
                                        .reason = "expired", .vm_id = s->vm_id[0] ? s->vm_id : NULL,
                                        .user = s->user[0] ? s->user : NULL }, NULL);
                if (q < 0)
                        return q;
                pj->purged++;
        }
        for (size_t i = 0; i < pj->n_attached; i++) {
                StoreSession s;
                q = store_session_get(t, pj->attached + i * SECRET_HASH_BYTES, &s);
                if (q == -ENOENT)
                        continue;
                if (q >= 0)
                        q = renew(pj, t, &s);
                if (q < 0)
                        return q;
        }
        return 0;
}

static void purge_done(Job *j, int q) {
        PurgeJob *pj = (PurgeJob *) j;

        if (q < 0)
                log_warning_errno(q, "Purging expired sessions failed: %s", strerror(-q));
        else {
                if (pj->purged + pj->renewed > 0)
                        log_debug("Sessions: %zu expired ended, %zu in use renewed", pj->purged,
                                  pj->renewed);
                events_publish_list(pj->manager->events, &pj->events);
        }
        events_list_free(&pj->events);
        free(pj->expired);
        free(pj->attached);
        free(pj);
}

void session_purge(Manager *m) {
        PurgeJob *pj = calloc(1, sizeof *pj);

        if (!pj)
                return;
        if (sessions_attached_hashes(m->sessions, &pj->attached, &pj->n_attached) < 0) {
                free(pj);
                return;
        }
        pj->manager = m;
        pj->now = now_ms();
        pj->ttl_ms = m->config.session_ttl_s * 1000;
        pj->job.write = purge_write;
        pj->job.done = purge_done;
        jobs_submit_write(m->jobs, &pj->job);
}

/* ---- the rows ---- */

static const Method m_ping = {
        .name = VMM_M_PING, .flags = ON_TCP, .callers = CALLER_ANY, .start = ping_start,
};
static const Method m_auth = {
        .name = VMM_M_AUTH, .flags = ON_TCP | METHOD_PEER | METHOD_LOGIN, .callers = CALLER_ANY,
        .fields = FIELDS(auth_fields), .params_size = sizeof(AuthParams),
        .state_size = sizeof(AuthState), .state_done = auth_state_done,
        .start = auth_start, .hash = auth_hash, .hashed = auth_hashed, .write = auth_write,
        .done = auth_done,
};
static const Method m_user_auth = {
        .name = VMM_M_USER_AUTH, .flags = ON_TCP | METHOD_PEER | METHOD_LOGIN,
        .callers = CALLER_ANY, .fields = FIELDS(user_auth_fields),
        .params_size = sizeof(AuthParams), .state_size = sizeof(AuthState),
        .state_done = auth_state_done, .start = auth_start, .hash = auth_hash,
        .hashed = auth_hashed, .write = auth_write, .done = auth_done,
};
static const Method m_resume = {
        .name = VMM_M_RESUME, .flags = ON_TCP | METHOD_PEER, .callers = CALLER_ANY,
        .fields = FIELDS(resume_fields), .params_size = sizeof(ResumeParams),
        .state_size = sizeof(ResumeState), .start = resume_start, .write = resume_write,
        .done = resume_done, .unavailable = resume_unavailable_attach,
};
static const Method m_logout = {
        .name = VMM_M_LOGOUT, .flags = ON_TCP, .callers = CALLER_VM | CALLER_USER,
        .write = logout_write, .done = logout_done,
};
static const Method m_passwd = {
        .name = VMM_M_PASSWD, .flags = ON_TCP | METHOD_PEER | METHOD_LOGIN,
        .callers = CALLER_VM | CALLER_USER, .min_role = STORE_ROLE_VIEWER,
        .fields = FIELDS(passwd_fields), .params_size = sizeof(PasswdParams),
        .state_size = sizeof(PasswdState), .state_done = passwd_state_done,
        .start = passwd_start, .hash = passwd_hash, .hashed = passwd_hashed,
        .write = passwd_write, .done = passwd_done,
};
static const Method m_whoami = {
        .name = VMM_M_WHOAMI, .flags = ON_BOTH, .callers = CALLER_SESSION,
        .start = whoami_start,
};

METHOD_ROWS(session, &m_ping, &m_auth, &m_user_auth, &m_resume, &m_logout, &m_passwd, &m_whoami);
