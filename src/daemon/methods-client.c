/* SPDX-License-Identifier: MIT */
/* The client methods (TCP) of vmmd-protocol(7). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "log.h"
#include "events.h"
#include "methods.h"
#include "rpc.h"
#include "shared/macro.h"
#include "shared/mpout.h"
#include "shared/secret.h"

#define PAGE_OVERHEAD 256

void pstr_copy(char *dst, size_t cap, const ParamStr *s) {
        size_t n = MIN(s->len, cap - 1);
        memcpy(dst, s->ptr, n);
        dst[n] = '\0';
}

/* ---- the dummy hash that unknown VMs are verified against ---- */

static char dummy_hash[SECRET_PWHASH_MAX];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void dummy_init(void) {
        char pw[SECRET_GEN_PASSWORD_LEN + 1];
        secret_password_generate(pw);
        if (secret_password_hash(pw, strlen(pw), dummy_hash) < 0)
                dummy_hash[0] = '\0';
        secret_wipe(pw, sizeof pw);
}

static int dummy_job_hash(Job *j) {
        pthread_once(&dummy_once, dummy_init);
        return 0;
}

static void dummy_job_done(Job *j, int r) {
        free(j);
}

void client_methods_init(Manager *m);
void client_methods_init(Manager *m) {
        Job *j = calloc(1, sizeof *j);
        if (!j)
                return;
        j->hash = dummy_job_hash;
        j->done = dummy_job_done;
        jobs_submit_hash(m->jobs, j);
}

/* ---- records ---- */

typedef struct AuthorizedScan {
        Manager *manager;
        int64_t now;
} AuthorizedScan;

static int authorized_one(void *userdata, const StoreSession *s) {
        AuthorizedScan *a = userdata;
        return s->expires_at > a->now || sessions_is_attached(a->manager->sessions, s->hash);
}

/* Holds at least one unexpired session: stops at the first one. */
static bool vm_authorized(Manager *m, StoreTxn *t, const char *vm_id) {
        AuthorizedScan a = { .manager = m, .now = now_ms() };
        return store_vm_session_foreach(t, vm_id, authorized_one, &a) > 0;
}

/* authorized: 1 or 0 when the caller knows (a VM reading its own record
 * holds a valid session), -1 to look the VM's sessions up. */
/* The record's part of a VM as answered: the map header and the stored
 * fields (connected and authorized follow: pack_vm_status). */
static int pack_vm_fields(msgpack_packer *pk, const StoreVm *vm) {
        if (msgpack_pack_map(pk, 9) || mp_kv_str(pk, "vm_id", vm->vm_id))
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
            mp_kv_i64(pk, "updated_at", vm->updated_at))
                return -ENOMEM;
        if (vm->last_seen_at < 0 ? mp_kv_nil(pk, "last_seen_at")
                                 : mp_kv_i64(pk, "last_seen_at", vm->last_seen_at))
                return -ENOMEM;
        return 0;
}

static int pack_vm_status(Manager *m, StoreTxn *t, msgpack_packer *pk, const char *vm_id,
                          int authorized) {
        if (mp_kv_bool(pk, "connected", sessions_vm_connected(m->sessions, vm_id)) ||
            mp_kv_bool(pk, "authorized",
                       authorized >= 0 ? authorized > 0 : vm_authorized(m, t, vm_id)))
                return -ENOMEM;
        return 0;
}

static int pack_vm_known(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm,
                         int authorized) {
        int q = pack_vm_fields(pk, vm);
        return q < 0 ? q : pack_vm_status(m, t, pk, vm->vm_id, authorized);
}

static int pack_vm(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm) {
        return pack_vm_known(m, t, pk, vm, -1);
}

static void reply_vm_known(Request *r, const StoreVm *vm, int authorized);

void reply_vm(Request *r, const StoreVm *vm) {
        reply_vm_known(r, vm, -1);
}

static void reply_vm_known(Request *r, const StoreVm *vm, int authorized) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        StoreTxn *t = NULL;
        int q;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = pack_vm_known(r->manager, t, &pk, vm, authorized);
                store_read_end(t);
        }
        if (q < 0)
                rpc_reply_errno(r, q);
        else
                rpc_reply(r, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
}

static int disks_from_params(StoreVm *vm, const ParamDisks *d) {
        vm->n_disks = (uint32_t) d->n;
        for (size_t i = 0; i < d->n; i++) {
                memset(vm->disks[i].id, 0, sizeof vm->disks[i].id);
                if (d->d[i].id.set)
                        pstr_copy(vm->disks[i].id, sizeof vm->disks[i].id, &d->d[i].id);
                vm->disks[i].size = d->d[i].size;
        }
        return 0;
}

void free_state(void *p) {
        free(p);
}

/* ---- fire-and-forget writes ---- */

typedef struct TouchJob {
        Job job;
        Manager *manager;
        uint8_t hash[SECRET_HASH_BYTES];
        char vm_id[VMM_VM_ID_MAX + 1];
        bool has_vm;
        int64_t now;
        uint64_t ttl_ms;
} TouchJob;

static int touch_write(Job *j, StoreTxn *t) {
        TouchJob *tj = (TouchJob *) j;
        StoreSession s;
        int r;

        r = store_session_get(t, tj->hash, &s);
        if (r >= 0 && s.expires_at < tj->now + (int64_t) tj->ttl_ms) {
                s.expires_at = tj->now + (int64_t) tj->ttl_ms;
                r = store_session_put(t, &s);
                if (r < 0)
                        return r;
        }
        if (tj->has_vm) {
                StoreVm *vm = malloc(sizeof *vm);
                if (!vm)
                        return -ENOMEM;
                r = store_vm_get(t, tj->vm_id, vm);
                if (r >= 0) {
                        vm->last_seen_at = tj->now;
                        r = store_vm_put_same_disks(t, vm);
                }
                free(vm);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        return 0;
}

static void touch_done(Job *j, int r) {
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Could not record session use: %s", strerror(-r));
        free(j);
}

void client_session_left(Manager *m, const uint8_t hash[SECRET_HASH_BYTES], const char *vm_id) {
        TouchJob *tj = calloc(1, sizeof *tj);
        if (!tj)
                return;
        tj->manager = m;
        memcpy(tj->hash, hash, SECRET_HASH_BYTES);
        if (vm_id) {
                tj->has_vm = true;
                strncpy(tj->vm_id, vm_id, VMM_VM_ID_MAX);
        }
        tj->now = now_ms();
        tj->ttl_ms = m->config.session_ttl_s * 1000;
        tj->job.write = touch_write;
        tj->job.done = touch_done;
        jobs_submit_write(m->jobs, &tj->job);
}

typedef struct PurgeJob {
        Job job;
        Manager *manager;
        uint8_t *attached;
        size_t n_attached;
        int64_t now;
        uint64_t ttl_ms;
        uint8_t (*expired)[SECRET_HASH_BYTES];
        char (*expired_vm)[VMM_VM_ID_MAX + 1];
        size_t n_expired, cap_expired;
        size_t purged;
} PurgeJob;

static int hash_cmp(const void *a, const void *b) {
        return memcmp(a, b, SECRET_HASH_BYTES);
}

static int purge_collect(void *userdata, const StoreSession *s) {
        PurgeJob *pj = userdata;

        if (s->expires_at > pj->now)
                return 0;
        if (pj->n_attached &&
            bsearch(s->hash, pj->attached, pj->n_attached, SECRET_HASH_BYTES, hash_cmp))
                return 0;
        if (pj->n_expired == pj->cap_expired)
                return 1;    /* the rest next time */
        memcpy(pj->expired_vm[pj->n_expired], s->vm_id, VMM_VM_ID_MAX + 1);
        memcpy(pj->expired[pj->n_expired++], s->hash, SECRET_HASH_BYTES);
        return 0;
}

static int purge_write(Job *j, StoreTxn *t) {
        PurgeJob *pj = (PurgeJob *) j;
        int r;

        pj->n_expired = 0;
        pj->purged = 0;
        r = store_session_foreach(t, NULL, purge_collect, pj);
        if (r < 0)
                return r;
        for (size_t i = 0; i < pj->n_expired; i++) {
                r = store_session_delete(t, pj->expired[i]);
                if (r < 0 && r != -ENOENT)
                        return r;
                pj->purged++;
        }
        /* attached sessions stay alive while their connections are open */
        for (size_t i = 0; i < pj->n_attached; i++) {
                StoreSession s;
                r = store_session_get(t, pj->attached + i * SECRET_HASH_BYTES, &s);
                if (r == -ENOENT)
                        continue;
                if (r < 0)
                        return r;
                if (s.expires_at < pj->now + (int64_t) (pj->ttl_ms / 2)) {
                        s.expires_at = pj->now + (int64_t) pj->ttl_ms;
                        r = store_session_put(t, &s);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static void purge_done(Job *j, int r) {
        PurgeJob *pj = (PurgeJob *) j;

        if (r < 0)
                log_warning_errno(r, "Purging expired sessions failed: %s", strerror(-r));
        else {
                if (pj->purged > 0)
                        log_debug("Purged %zu expired sessions", pj->purged);
                for (size_t i = 0; i < pj->purged; i++)
                        sessions_ended(pj->manager, pj->expired_vm[i], pj->expired + i, 1,
                                       "expired");
        }
        free(pj->expired_vm);
        free(pj->attached);
        free(pj->expired);
        free(pj);
}

void client_sessions_purge(Manager *m) {
        PurgeJob *pj = calloc(1, sizeof *pj);
        if (!pj)
                return;
        if (sessions_attached_hashes(m->sessions, &pj->attached, &pj->n_attached) < 0) {
                free(pj);
                return;
        }
        qsort(pj->attached, pj->n_attached, SECRET_HASH_BYTES, hash_cmp);
        pj->cap_expired = 10000;
        pj->manager = m;
        pj->expired = malloc(pj->cap_expired * SECRET_HASH_BYTES);
        pj->expired_vm = malloc(pj->cap_expired * (VMM_VM_ID_MAX + 1));
        if (!pj->expired || !pj->expired_vm) {
                free(pj->expired);
                free(pj->expired_vm);
                free(pj->attached);
                free(pj);
                return;
        }
        pj->now = now_ms();
        pj->ttl_ms = m->config.session_ttl_s * 1000;
        pj->job.write = purge_write;
        pj->job.done = purge_done;
        jobs_submit_write(m->jobs, &pj->job);
}

/* ---- ping ---- */

static int method_ping(Request *r) {
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (msgpack_pack_map(&pk, 4) || mp_kv_bool(&pk, "pong", true) ||
            mp_kv_str(&pk, "version", VMMD_VERSION) ||
            mp_kv_u64(&pk, "protocol", VMM_PROTOCOL_VERSION) || mp_kv_i64(&pk, "time", now_ms())) {
                msgpack_sbuffer_destroy(&sb);
                return -ENOMEM;
        }
        rpc_reply(r, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return 0;
}

/* ---- register ---- */

typedef struct RegisterParams {
        ParamStr vm_id, password;
        ParamUint ram, cpu;
        ParamDisks disks;
} RegisterParams;

static const ParamField register_fields[] = {
        { "vm_id", PARAM_STR, offsetof(RegisterParams, vm_id), true, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "password", PARAM_STR, offsetof(RegisterParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
        { "ram", PARAM_UINT, offsetof(RegisterParams, ram), true, VMM_RAM_MIN, VMM_RAM_MAX, NULL, NULL },
        { "cpu", PARAM_UINT, offsetof(RegisterParams, cpu), true, VMM_CPU_MIN, VMM_CPU_MAX, NULL, NULL },
        { "disks", PARAM_DISKS, offsetof(RegisterParams, disks), false, 0, VMM_MAX_DISKS, NULL, NULL },
};


static int register_hash(Job *j) {
        Request *r = REQUEST_OF(j);
        RegisterParams *p = r->params;
        VmState *st = r->state;

        return secret_password_hash(p->password.ptr, p->password.len, st->vm.pwhash);
}

static int register_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        VmState *st = r->state;
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

static void register_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        VmState *st = r->state;

        if (q == -EEXIST)
                rpc_reply_error(r, VMM_E_EXISTS, "VM '%s' is already registered", st->vm.vm_id);
        else if (q < 0)
                rpc_reply_errno(r, q);
        else {
                log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_VM_REGISTERED,
                                                    .vm_id = st->vm.vm_id,
                                                    .peer = r->conn->peer_str,
                                                    .has_conn = true, .conn = r->conn->id,
                                                    .admin_uid = -1 },
                           "VM '%s' registered from %s", st->vm.vm_id, r->conn->peer_str);
                events_emit(r->manager, &(Event) { .type = "vm.registered",
                                                   .vm_id = st->vm.vm_id });
                reply_vm(r, &st->vm);
        }
        rpc_finish(r);
}

static void register_hashed(Job *j, int q) {
        Request *r = REQUEST_OF(j);

        if (q < 0) {
                rpc_reply_errno(r, q);
                rpc_finish(r);
                return;
        }
        r->job.write = register_write;
        r->job.done = register_written;
        jobs_submit_write(r->manager->jobs, &r->job);
}

static int method_register(Request *r) {
        Manager *m = r->manager;
        RegisterParams *p = r->params;
        VmState *st;
        StoreTxn *t = NULL;
        int q;

        if (!m->config.registration_open) {
                rpc_reply_error(r, VMM_E_FORBIDDEN, "registration is closed on this server");
                return 0;
        }
        st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = free_state;
        pstr_copy(st->vm.vm_id, sizeof st->vm.vm_id, &p->vm_id);

        /* fail fast without hashing when the id is taken */
        q = store_read_begin(m->store, &t);
        if (q < 0)
                return q;
        StoreVm *tmp = malloc(sizeof *tmp);
        if (!tmp) {
                store_read_end(t);
                return -ENOMEM;
        }
        q = store_vm_get(t, st->vm.vm_id, tmp);
        free(tmp);
        store_read_end(t);
        if (q >= 0) {
                rpc_reply_error(r, VMM_E_EXISTS, "VM '%s' is already registered", st->vm.vm_id);
                return 0;
        }
        if (q != -ENOENT)
                return q;

        int64_t now = now_ms();
        st->vm.described = true;
        st->vm.ram = (uint32_t) p->ram.v;
        st->vm.cpu = (uint32_t) p->cpu.v;
        st->vm.registered_at = st->vm.updated_at = now;
        st->vm.last_seen_at = -1;
        disks_from_params(&st->vm, &p->disks);

        r->job.hash = register_hash;
        r->job.done = register_hashed;
        jobs_submit_hash(m->jobs, &r->job);
        return 1;
}

/* ---- auth ---- */

typedef struct AuthParams {
        ParamStr vm_id, password;
} AuthParams;

static const ParamField auth_fields[] = {
        { "vm_id", PARAM_STR, offsetof(AuthParams, vm_id), true, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "password", PARAM_STR, offsetof(AuthParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
};

typedef struct AuthState {
        char vm_id[VMM_VM_ID_MAX + 1];
        char pwhash[SECRET_PWHASH_MAX];
        bool known;
        char token[VMM_TOKEN_LEN + 1];
        uint8_t hash[SECRET_HASH_BYTES];
        int64_t now, expires_at;
        uint8_t (*ended)[SECRET_HASH_BYTES];
        size_t n_ended, cap_ended;
} AuthState;

static void auth_state_free(void *p) {
        AuthState *st = p;
        if (!st)
                return;
        secret_wipe(st->token, sizeof st->token);
        free(st->ended);
        free(st);
}

static const char auth_failed_msg[] = "unknown VM or wrong password";

static void attach_conn(Request *r, const uint8_t hash[SECRET_HASH_BYTES], const char *vm_id) {
        Conn *c = r->conn;
        Manager *m = r->manager;

        if (c->dead)
                return;
        if (c->attached) {
                uint8_t old[SECRET_HASH_BYTES];
                char old_vm[VMM_VM_ID_MAX + 1];
                if (memcmp(c->session_hash, hash, SECRET_HASH_BYTES) == 0)
                        return;
                memcpy(old, c->session_hash, sizeof old);
                memcpy(old_vm, c->vm_id, sizeof old_vm);
                (void) sessions_detach(m->sessions, c);
                client_session_left(m, old, old_vm);
        }
        if (sessions_attach(m->sessions, c, hash, vm_id) < 0)
                log_error("Out of memory attaching connection %" PRIu64, c->id);
}

static int auth_hash(Job *j) {
        Request *r = REQUEST_OF(j);
        AuthParams *p = r->params;
        AuthState *st = r->state;

        if (!st->known) {
                pthread_once(&dummy_once, dummy_init);
                (void) secret_password_verify(dummy_hash, p->password.ptr, p->password.len);
                return 0;
        }
        return secret_password_verify(st->pwhash, p->password.ptr, p->password.len) ? 1 : 0;
}

static int session_sort_created(const void *a, const void *b) {
        const StoreSession *x = a, *y = b;
        if (x->created_at != y->created_at)
                return x->created_at < y->created_at ? -1 : 1;
        return memcmp(x->hash, y->hash, SECRET_HASH_BYTES);
}

int end_sessions(StoreTxn *t, const char *vm_id, size_t keep, const uint8_t *except,
                        uint8_t (**ended)[SECRET_HASH_BYTES], size_t *n_ended, size_t *cap_ended) {
        size_t max = 1024 + 16, n = 0;
        StoreSession *ss = malloc(max * sizeof *ss);
        int q;

        if (!ss)
                return -ENOMEM;
        q = store_vm_sessions(t, vm_id, ss, max, &n);
        if (q < 0 && q != -E2BIG) {
                free(ss);
                return q;
        }
        qsort(ss, n, sizeof *ss, session_sort_created);
        size_t n_end = 0;
        if (keep > 0)
                n_end = n > keep ? n - keep : 0;
        else
                n_end = n;
        for (size_t i = 0; i < n && n_end > 0; i++) {
                if (except && memcmp(ss[i].hash, except, SECRET_HASH_BYTES) == 0)
                        continue;
                q = store_session_delete(t, ss[i].hash);
                if (q < 0 && q != -ENOENT) {
                        free(ss);
                        return q;
                }
                if (*n_ended == *cap_ended) {
                        size_t cap = *cap_ended ? *cap_ended * 2 : 16;
                        void *nb = realloc(*ended, cap * SECRET_HASH_BYTES);
                        if (!nb) {
                                free(ss);
                                return -ENOMEM;
                        }
                        *ended = nb;
                        *cap_ended = cap;
                }
                memcpy((*ended)[(*n_ended)++], ss[i].hash, SECRET_HASH_BYTES);
                n_end--;
        }
        free(ss);
        return 0;
}

void sessions_ended(Manager *m, const char *vm_id, uint8_t (*ended)[SECRET_HASH_BYTES], size_t n,
                    const char *reason) {
        for (size_t i = 0; i < n; i++) {
                char sid[SECRET_SESSION_ID_LEN + 1];
                (void) sessions_end(m->sessions, ended[i]);
                events_session_id(ended[i], sid);
                events_emit(m, &(Event) { .type = "session.ended", .vm_id = vm_id, .session = sid,
                                          .reason = reason });
        }
}

static int auth_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        Manager *m = r->manager;
        AuthState *st = r->state;
        StoreVm *vm;
        int q;

        st->n_ended = 0;
        vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = store_vm_get(t, st->vm_id, vm);
        if (q < 0)
                goto out;
        StoreSession s = { .created_at = st->now, .expires_at = st->expires_at };
        memcpy(s.hash, st->hash, sizeof s.hash);
        memcpy(s.vm_id, st->vm_id, sizeof s.vm_id);
        q = store_session_put(t, &s);
        if (q < 0)
                goto out;
        q = end_sessions(t, st->vm_id, m->config.sessions_per_vm, st->hash, &st->ended,
                         &st->n_ended, &st->cap_ended);
        if (q < 0)
                goto out;
        vm->last_seen_at = st->now;
        q = store_vm_put_same_disks(t, vm);
out:
        free(vm);
        return q;
}

static void auth_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        Manager *m = r->manager;
        AuthState *st = r->state;
        msgpack_sbuffer sb;
        msgpack_packer pk;

        if (q == -ENOENT) {
                rpc_reply_error(r, VMM_E_UNAUTHENTICATED, auth_failed_msg);
                rpc_finish(r);
                return;
        }
        if (q < 0) {
                rpc_reply_errno(r, q);
                rpc_finish(r);
                return;
        }
        sessions_ended(m, st->vm_id, st->ended, st->n_ended, "evicted");
        attach_conn(r, st->hash, st->vm_id);
        log_struct(LOG_INFO, &(LogFields) { .vm_id = st->vm_id, .peer = r->conn->peer_str,
                                            .has_conn = true, .conn = r->conn->id,
                                            .admin_uid = -1 },
                   "VM '%s' logged in from %s", st->vm_id, r->conn->peer_str);
        char sid[SECRET_SESSION_ID_LEN + 1];
        events_session_id(st->hash, sid);
        events_emit(m, &(Event) { .type = "session.started", .vm_id = st->vm_id, .session = sid,
                                  .peer = r->conn->peer_str });

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (msgpack_pack_map(&pk, 3) || mp_kv_str(&pk, "vm_id", st->vm_id) ||
            mp_kv_str(&pk, "token", st->token) || mp_kv_i64(&pk, "expires_at", st->expires_at))
                rpc_reply_errno(r, -ENOMEM);
        else
                rpc_reply(r, sb.data, sb.size);
        secret_wipe(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        rpc_finish(r);
}

static void auth_failed(Request *r, const char *vm_id) {
        Conn *c = r->conn;
        if (c->peer)
                sessions_peer_failed(c->peer, now_ms());
        if (c->peer && sessions_peer_log_allowed(c->peer, now_ms()))
                log_struct(LOG_NOTICE, &(LogFields) { .message_id = LOG_MID_LOGIN_FAILED,
                                                      .vm_id = vm_id, .peer = c->peer_str,
                                                      .has_conn = true, .conn = c->id,
                                                      .admin_uid = -1 },
                           "Failed login for VM '%s' from %s", vm_id, c->peer_str);
        events_emit(r->manager, &(Event) { .type = "auth.failed", .vm_id = vm_id,
                                           .peer = c->peer_str });
}

static bool peer_limited(Request *r) {
        Conn *c = r->conn;
        return c->peer &&
               sessions_peer_limited(c->peer, now_ms(),
                                     (unsigned) r->manager->config.auth_failures_per_minute);
}

static void auth_hashed(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        AuthState *st = r->state;
        uint8_t raw[VMM_TOKEN_BYTES];

        if (q < 0) {
                rpc_reply_errno(r, q);
                rpc_finish(r);
                return;
        }
        /* Attempts from one address run concurrently (one per connection):
         * the limit is checked again now that this one is decided, so that
         * no more than the limit's worth of outcomes is ever revealed in a
         * minute, whatever the concurrency. */
        if (peer_limited(r)) {
                rpc_reply_error(r, VMM_E_RATE_LIMITED,
                                "too many failed logins from this address; retry later");
                rpc_finish(r);
                return;
        }
        if (q == 0) {
                auth_failed(r, st->vm_id);
                rpc_reply_error(r, VMM_E_UNAUTHENTICATED, auth_failed_msg);
                rpc_finish(r);
                return;
        }
        secret_token_new(raw, st->token);
        secret_token_hash(r->manager->hash_key, raw, st->hash);
        secret_wipe(raw, sizeof raw);
        st->now = now_ms();
        st->expires_at = st->now + (int64_t) (r->manager->config.session_ttl_s * 1000);

        r->job.write = auth_write;
        r->job.done = auth_written;
        jobs_submit_write(r->manager->jobs, &r->job);
}

static int method_auth(Request *r) {
        Manager *m = r->manager;
        AuthParams *p = r->params;
        AuthState *st;
        StoreTxn *t = NULL;
        int q;

        if (peer_limited(r)) {
                rpc_reply_error(r, VMM_E_RATE_LIMITED,
                                "too many failed logins from this address; retry later");
                return 0;
        }
        st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = auth_state_free;
        pstr_copy(st->vm_id, sizeof st->vm_id, &p->vm_id);

        StoreVm *vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = store_read_begin(m->store, &t);
        if (q >= 0) {
                q = store_vm_get(t, st->vm_id, vm);
                store_read_end(t);
        }
        if (q >= 0) {
                st->known = true;
                memcpy(st->pwhash, vm->pwhash, sizeof st->pwhash);
        }
        free(vm);
        if (q < 0 && q != -ENOENT)
                return q;

        r->job.hash = auth_hash;
        r->job.done = auth_hashed;
        jobs_submit_hash(m->jobs, &r->job);
        return 1;
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
        char vm_id[VMM_VM_ID_MAX + 1];
        int64_t now, expires_at;
        int64_t stored_expires_at;      /* as read before the write */
} ResumeState;

static int resume_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        ResumeState *st = r->state;
        StoreSession s;
        int q;

        q = store_session_get(t, st->hash, &s);
        if (q < 0)
                return q;
        if (s.expires_at <= st->now && !sessions_is_attached(r->manager->sessions, st->hash))
                return -ENOENT;
        s.expires_at = st->expires_at;
        q = store_session_put(t, &s);
        if (q < 0)
                return q;
        memcpy(st->vm_id, s.vm_id, sizeof st->vm_id);
        StoreVm *vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = store_vm_get(t, s.vm_id, vm);
        if (q >= 0) {
                vm->last_seen_at = st->now;
                q = store_vm_put_same_disks(t, vm);
        }
        free(vm);
        return q;
}

static void resume_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        ResumeState *st = r->state;
        msgpack_sbuffer sb;
        msgpack_packer pk;

        if (q == -ENOENT) {
                auth_failed(r, "(token)");
                rpc_reply_error(r, VMM_E_UNAUTHENTICATED, "the token is not valid (expired or ended)");
                rpc_finish(r);
                return;
        }
        if (q == -ENOSPC && st->vm_id[0] != '\0') {
                /* Storage is full: the renewal cannot be stored, but the
                 * session is, and using it needs no write. Attach with the
                 * expiry on disk; while attached the session counts as
                 * used, and the renewal is stored once there is room. */
                st->expires_at = st->stored_expires_at;
                q = 0;
        }
        if (q < 0) {
                rpc_reply_errno(r, q);
                rpc_finish(r);
                return;
        }
        attach_conn(r, st->hash, st->vm_id);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (msgpack_pack_map(&pk, 2) || mp_kv_str(&pk, "vm_id", st->vm_id) ||
            mp_kv_i64(&pk, "expires_at", st->expires_at))
                rpc_reply_errno(r, -ENOMEM);
        else
                rpc_reply(r, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        rpc_finish(r);
}

static int method_resume(Request *r) {
        Manager *m = r->manager;
        ResumeParams *p = r->params;
        uint8_t raw[VMM_TOKEN_BYTES];
        ResumeState *st;
        StoreSession s;
        StoreTxn *t = NULL;
        int q;

        if (peer_limited(r)) {
                rpc_reply_error(r, VMM_E_RATE_LIMITED,
                                "too many failed logins from this address; retry later");
                return 0;
        }
        st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = free_state;
        if (secret_token_decode(p->token.ptr, p->token.len, raw) < 0) {
                /* well formed (43 characters) but no token we could have made */
                auth_failed(r, "(token)");
                rpc_reply_error(r, VMM_E_UNAUTHENTICATED, "the token is not valid (expired or ended)");
                return 0;
        }
        secret_token_hash(m->hash_key, raw, st->hash);
        secret_wipe(raw, sizeof raw);
        st->now = now_ms();
        st->expires_at = st->now + (int64_t) (m->config.session_ttl_s * 1000);

        q = store_read_begin(m->store, &t);
        if (q < 0)
                return q;
        q = store_session_get(t, st->hash, &s);
        store_read_end(t);
        if (q == -ENOENT ||
            (q >= 0 && s.expires_at <= st->now && !sessions_is_attached(m->sessions, st->hash))) {
                auth_failed(r, "(token)");
                rpc_reply_error(r, VMM_E_UNAUTHENTICATED, "the token is not valid (expired or ended)");
                return 0;
        }
        if (q < 0)
                return q;
        st->stored_expires_at = s.expires_at;
        memcpy(st->vm_id, s.vm_id, sizeof st->vm_id);
        r->job.write = resume_write;
        r->job.done = resume_written;
        jobs_submit_write(m->jobs, &r->job);
        return 1;
}

/* ---- vm.add / vm.update ---- */

typedef struct AddParams {
        ParamStr vm_id;
        ParamUint ram, cpu;
        ParamDisks disks;
} AddParams;

static const ParamField add_fields[] = {
        { "vm_id", PARAM_STR, offsetof(AddParams, vm_id), true, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "ram", PARAM_UINT, offsetof(AddParams, ram), true, VMM_RAM_MIN, VMM_RAM_MAX, NULL, NULL },
        { "cpu", PARAM_UINT, offsetof(AddParams, cpu), true, VMM_CPU_MIN, VMM_CPU_MAX, NULL, NULL },
        { "disks", PARAM_DISKS, offsetof(AddParams, disks), true, 0, VMM_MAX_DISKS, NULL, NULL },
};

typedef struct UpdateParams {
        ParamUint ram, cpu;
        ParamDisks disks;
} UpdateParams;

static const ParamField update_fields[] = {
        { "ram", PARAM_UINT, offsetof(UpdateParams, ram), false, VMM_RAM_MIN, VMM_RAM_MAX, NULL, NULL },
        { "cpu", PARAM_UINT, offsetof(UpdateParams, cpu), false, VMM_CPU_MIN, VMM_CPU_MAX, NULL, NULL },
        { "disks", PARAM_DISKS, offsetof(UpdateParams, disks), false, 0, VMM_MAX_DISKS, NULL, NULL },
};

static int describe_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        VmState *st = r->state;
        bool is_add = r->method->fields == add_fields;
        int q;

        q = store_vm_get(t, r->vm_id, &st->vm);
        if (q < 0)
                return q;
        if (is_add) {
                AddParams *p = r->params;
                if (st->vm.described)
                        return -EEXIST;
                st->vm.described = true;
                st->vm.ram = (uint32_t) p->ram.v;
                st->vm.cpu = (uint32_t) p->cpu.v;
                disks_from_params(&st->vm, &p->disks);
        } else {
                UpdateParams *p = r->params;
                if (!st->vm.described)
                        return -ENOENT;
                if (p->ram.set)
                        st->vm.ram = (uint32_t) p->ram.v;
                if (p->cpu.set)
                        st->vm.cpu = (uint32_t) p->cpu.v;
                if (p->disks.set)
                        disks_from_params(&st->vm, &p->disks);
        }
        st->vm.updated_at = now_ms();
        if (!is_add && !((UpdateParams *) r->params)->disks.set)
                return store_vm_put_same_disks(t, &st->vm);     /* ram, cpu only */
        return store_vm_put(t, &st->vm);
}

static void describe_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        VmState *st = r->state;
        bool is_add = r->method->fields == add_fields;

        if (q == -EEXIST)
                rpc_reply_error(r, VMM_E_EXISTS, "VM '%s' is already described; use vm.update",
                                r->vm_id);
        else if (q == -ENOENT)
                rpc_reply_error(r, VMM_E_NOT_FOUND,
                                is_add ? "VM '%s' no longer exists"
                                       : "VM '%s' was never described; use vm.add", r->vm_id);
        else if (q == -EBUSY)
                rpc_reply_error(r, VMM_E_CONFLICT, "a disk id belongs to another VM");
        else if (q < 0)
                rpc_reply_errno(r, q);
        else {
                events_emit(r->manager, &(Event) { .type = is_add ? "vm.described" : "vm.updated",
                                                   .vm_id = r->vm_id });
                reply_vm_known(r, &st->vm, 1);   /* its own VM: the session is valid */
        }
        rpc_finish(r);
}

static int describe_submit(Request *r) {
        VmState *st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = free_state;
        r->job.write = describe_write;
        r->job.done = describe_written;
        jobs_submit_write(r->manager->jobs, &r->job);
        return 1;
}

static int method_vm_add(Request *r) {
        AddParams *p = r->params;

        if (strlen(r->vm_id) != p->vm_id.len || memcmp(r->vm_id, p->vm_id.ptr, p->vm_id.len) != 0) {
                rpc_reply_error(r, VMM_E_FORBIDDEN,
                                "vm_id must be the VM of this session ('%s')", r->vm_id);
                return 0;
        }
        return describe_submit(r);
}

static bool update_check(const void *params, char *msg, size_t len) {
        const UpdateParams *p = params;
        if (p->ram.set || p->cpu.set || p->disks.set)
                return true;
        snprintf(msg, len, "nothing to update: give ram, cpu or disks");
        return false;
}

static int method_vm_update(Request *r) {
        return describe_submit(r);
}

/* ---- vm.get ---- */

/* vm.get answers, by VM: a VM's record changes far less often than an
 * agent reads it. An entry holds the stored bytes of a record and the packed
 * answer made from them; it is used only when the stored bytes are still
 * exactly these (the answer is a function of them), so it is never stale.
 * Direct-mapped, small records only, loop thread only, allocated on first
 * use (VM_CACHE_SLOTS * about 1 KiB). */
#define VM_CACHE_SLOTS 1024
#define VM_CACHE_BYTES 448

typedef struct VmCacheEntry {
        char vm_id[VMM_VM_ID_MAX + 1];
        uint16_t rec_len, out_len;
        uint8_t rec[VM_CACHE_BYTES];
        uint8_t out[VM_CACHE_BYTES];
} VmCacheEntry;

static VmCacheEntry *vm_cache;

static VmCacheEntry *vm_cache_slot(const char *vm_id) {
        uint32_t h = 2166136261u;
        for (const char *p = vm_id; *p; p++)
                h = (h ^ (uint8_t) *p) * 16777619u;
        if (!vm_cache) {
                vm_cache = calloc(VM_CACHE_SLOTS, sizeof *vm_cache);
                if (!vm_cache)
                        return NULL;
        }
        return &vm_cache[h % VM_CACHE_SLOTS];
}

void client_vm_cache_free(void) {
        free(vm_cache);
        vm_cache = NULL;
}

static int method_vm_get(Request *r) {
        /* the hottest method: no allocation (the loop thread is the only
         * caller, and nothing keeps the record past the reply) */
        static StoreVm vm_scratch;
        static msgpack_sbuffer sb;      /* kept: its memory is reused */
        StoreVm *vm = &vm_scratch;
        StoreTxn *t = NULL;
        msgpack_packer pk;
        const void *rec;
        size_t rec_len;
        int q;

        sb.size = 0;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        /* one read transaction for the record and its answer; the caller's
         * own VM is authorized: the request's session was just checked */
        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                return q;
        q = store_vm_get_raw(t, r->vm_id, &rec, &rec_len);
        if (q >= 0) {
                VmCacheEntry *e = vm_cache_slot(r->vm_id);
                if (e && e->rec_len == rec_len && strcmp(e->vm_id, r->vm_id) == 0 &&
                    memcmp(e->rec, rec, rec_len) == 0)
                        q = msgpack_sbuffer_write(&sb, (const char *) e->out, e->out_len) < 0 ?
                                -ENOMEM : 0;
                else {
                        q = store_vm_get(t, r->vm_id, vm);
                        if (q >= 0)
                                q = pack_vm_fields(&pk, vm);
                        if (q >= 0 && e && rec_len <= VM_CACHE_BYTES &&
                            sb.size <= VM_CACHE_BYTES) {
                                snprintf(e->vm_id, sizeof e->vm_id, "%s", r->vm_id);
                                memcpy(e->rec, rec, rec_len);
                                e->rec_len = (uint16_t) rec_len;
                                memcpy(e->out, sb.data, sb.size);
                                e->out_len = (uint16_t) sb.size;
                        } else if (e)
                                e->rec_len = 0;
                }
        }
        if (q >= 0)
                q = pack_vm_status(r->manager, t, &pk, r->vm_id, 1);
        store_read_end(t);
        if (q == -ENOENT)
                rpc_reply_error(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", r->vm_id);
        else if (q < 0)
                rpc_reply_errno(r, q);
        else
                rpc_reply(r, sb.data, sb.size);
        return 0;
}

/* ---- vm.list / disk.list ---- */

static const char *const filter_choices[] = { "connected", "authorized", "all", NULL };


const ParamField vm_list_fields[] = {
        { "filter", PARAM_STR, offsetof(ListParams, filter), true, 1, 16, NULL, filter_choices },
        { "limit", PARAM_UINT, offsetof(ListParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL },
        { "after", PARAM_STR, offsetof(ListParams, after), false, 0, 1024, NULL, NULL },
};

const ParamField disk_list_fields[] = {
        { "limit", PARAM_UINT, offsetof(ListParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL },
        { "after", PARAM_STR, offsetof(ListParams, after), false, 0, 1024, NULL, NULL },
};

typedef struct Page {
        Manager *manager;
        StoreTxn *txn;
        msgpack_sbuffer items;
        msgpack_packer pk;
        size_t count, limit;
        bool more;
        char last[VMM_DISK_ID_MAX + 1];
        int error;
        StoreVm *vm;            /* scratch */
} Page;

const size_t n_vm_list_fields = ELEMENTSOF(vm_list_fields);
const size_t n_disk_list_fields = ELEMENTSOF(disk_list_fields);

static int page_add_vm(void *userdata, const StoreVm *vm) {
        Page *pg = userdata;
        size_t before = pg->items.size;

        if (pg->count == pg->limit) {
                pg->more = true;
                return 1;
        }
        int q = pack_vm(pg->manager, pg->txn, &pg->pk, vm);
        if (q < 0) {
                pg->error = q;
                return q;
        }
        if (pg->items.size + PAGE_OVERHEAD > VMM_PAGE_BYTES_MAX) {
                pg->items.size = before;
                pg->more = true;
                return 1;
        }
        pg->count++;
        snprintf(pg->last, sizeof pg->last, "%s", vm->vm_id);
        return 0;
}

static int page_add_vm_id(void *userdata, const char *vm_id) {
        Page *pg = userdata;
        int q;

        if (pg->count == pg->limit) {
                pg->more = true;
                return 1;
        }
        q = store_vm_get(pg->txn, vm_id, pg->vm);
        if (q == -ENOENT)
                return 0;
        if (q < 0) {
                pg->error = q;
                return q;
        }
        return page_add_vm(pg, pg->vm);
}

static int page_add_authorized(void *userdata, const char *vm_id) {
        Page *pg = userdata;

        if (!vm_authorized(pg->manager, pg->txn, vm_id))
                return 0;
        return page_add_vm_id(userdata, vm_id);
}

static int page_add_disk(void *userdata, const char *disk_id, const char *vm_id, uint64_t size) {
        Page *pg = userdata;
        size_t before = pg->items.size;

        if (pg->count == pg->limit) {
                pg->more = true;
                return 1;
        }
        if (msgpack_pack_map(&pg->pk, 3) || mp_kv_str(&pg->pk, "id", disk_id) ||
            mp_kv_u64(&pg->pk, "size", size) || mp_kv_str(&pg->pk, "vm_id", vm_id)) {
                pg->error = -ENOMEM;
                return -ENOMEM;
        }
        if (pg->items.size + PAGE_OVERHEAD > VMM_PAGE_BYTES_MAX) {
                pg->items.size = before;
                pg->more = true;
                return 1;
        }
        pg->count++;
        snprintf(pg->last, sizeof pg->last, "%s", disk_id);
        return 0;
}

static int list_run(Request *r, const char *key, int kind) {
        Manager *m = r->manager;
        ListParams *p = r->params;
        Page pg = { .manager = m };
        char after[1025];
        msgpack_sbuffer out;
        msgpack_packer opk;
        int q;

        pg.limit = p->limit.set ? p->limit.v : VMM_PAGE_DEFAULT;
        if (p->after.set)
                pstr_copy(after, sizeof after, &p->after);
        pg.vm = malloc(sizeof *pg.vm);
        if (!pg.vm)
                return -ENOMEM;
        msgpack_sbuffer_init(&pg.items);
        msgpack_packer_init(&pg.pk, &pg.items, msgpack_sbuffer_write);

        q = store_read_begin(m->store, &pg.txn);
        if (q < 0)
                goto out;
        const char *a = p->after.set ? after : NULL;
        switch (kind) {
        case 0:
                q = store_vm_foreach(pg.txn, a, page_add_vm, &pg);
                break;
        case 1:
                q = store_session_vm_foreach(pg.txn, a, page_add_authorized, &pg);
                break;
        case 2:
                q = sessions_connected_foreach(m->sessions, a, page_add_vm_id, &pg);
                break;
        default:
                q = store_disk_foreach(pg.txn, a, page_add_disk, &pg);
        }
        store_read_end(pg.txn);
        if (pg.error < 0)
                q = pg.error;
        if (q < 0)
                goto out;

        msgpack_sbuffer_init(&out);
        msgpack_packer_init(&opk, &out, msgpack_sbuffer_write);
        if (msgpack_pack_map(&opk, 2) || mp_str(&opk, key) ||
            msgpack_pack_array(&opk, pg.count) ||
            (pg.items.size > 0 && msgpack_sbuffer_write(&out, pg.items.data, pg.items.size)) ||
            (pg.more ? mp_kv_str(&opk, "next", pg.last) : mp_kv_nil(&opk, "next")))
                q = -ENOMEM;
        else {
                rpc_reply(r, out.data, out.size);
                q = 0;
        }
        msgpack_sbuffer_destroy(&out);
out:
        msgpack_sbuffer_destroy(&pg.items);
        free(pg.vm);
        return q;
}

int method_vm_list(Request *r) {
        ListParams *p = r->params;
        int kind = 0;

        if (p->filter.len == 10 && memcmp(p->filter.ptr, "authorized", 10) == 0)
                kind = 1;
        else if (p->filter.len == 9 && memcmp(p->filter.ptr, "connected", 9) == 0)
                kind = 2;
        return list_run(r, "vms", kind);
}

int method_disk_list(Request *r) {
        return list_run(r, "disks", 3);
}

/* ---- passwd ---- */

typedef struct PasswdParams {
        ParamStr password, new_password;
} PasswdParams;

static const ParamField passwd_fields[] = {
        { "password", PARAM_STR, offsetof(PasswdParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
        { "new_password", PARAM_STR, offsetof(PasswdParams, new_password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
};

typedef struct PasswdState {
        char old_hash[SECRET_PWHASH_MAX];
        char new_hash[SECRET_PWHASH_MAX];
        uint8_t (*ended)[SECRET_HASH_BYTES];
        size_t n_ended, cap_ended;
} PasswdState;

static void passwd_state_free(void *p) {
        PasswdState *st = p;
        if (!st)
                return;
        free(st->ended);
        free(st);
}

static int passwd_hash(Job *j) {
        Request *r = REQUEST_OF(j);
        PasswdParams *p = r->params;
        PasswdState *st = r->state;

        if (!secret_password_verify(st->old_hash, p->password.ptr, p->password.len))
                return 0;
        int q = secret_password_hash(p->new_password.ptr, p->new_password.len, st->new_hash);
        return q < 0 ? q : 1;
}

static int passwd_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        PasswdState *st = r->state;
        StoreVm *vm = malloc(sizeof *vm);
        int q;

        if (!vm)
                return -ENOMEM;
        st->n_ended = 0;
        q = store_vm_get(t, r->vm_id, vm);
        if (q >= 0) {
                memcpy(vm->pwhash, st->new_hash, sizeof vm->pwhash);
                q = store_vm_put(t, vm);
        }
        free(vm);
        if (q < 0)
                return q;
        return end_sessions(t, r->vm_id, 0, r->session_hash, &st->ended, &st->n_ended,
                            &st->cap_ended);
}

static void passwd_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);
        PasswdState *st = r->state;

        if (q < 0)
                rpc_reply_errno(r, q);
        else {
                sessions_ended(r->manager, r->vm_id, st->ended, st->n_ended, "password");
                events_emit(r->manager, &(Event) { .type = "vm.password_changed",
                                                   .vm_id = r->vm_id });
                log_info("VM '%s' changed its password (%zu other sessions ended)", r->vm_id,
                         st->n_ended);
                rpc_reply(r, NULL, 0);
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
        if (q == 0) {
                rpc_reply_error(r, VMM_E_UNAUTHENTICATED, "wrong password");
                rpc_finish(r);
                return;
        }
        r->job.write = passwd_write;
        r->job.done = passwd_written;
        jobs_submit_write(r->manager->jobs, &r->job);
}

static int method_passwd(Request *r) {
        PasswdState *st;
        StoreTxn *t = NULL;
        int q;

        st = calloc(1, sizeof *st);
        if (!st)
                return -ENOMEM;
        r->state = st;
        r->state_free = passwd_state_free;
        StoreVm *vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = store_vm_get(t, r->vm_id, vm);
                store_read_end(t);
        }
        if (q >= 0)
                memcpy(st->old_hash, vm->pwhash, sizeof st->old_hash);
        free(vm);
        if (q < 0)
                return q;
        r->job.hash = passwd_hash;
        r->job.done = passwd_hashed;
        jobs_submit_hash(r->manager->jobs, &r->job);
        return 1;
}

/* ---- logout ---- */

static int logout_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);
        int q = store_session_delete(t, r->session_hash);
        return q == -ENOENT ? 0 : q;
}

static void logout_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);

        if (q < 0)
                rpc_reply_errno(r, q);
        else {
                uint8_t one[1][SECRET_HASH_BYTES];
                memcpy(one[0], r->session_hash, SECRET_HASH_BYTES);
                sessions_ended(r->manager, r->vm_id, one, 1, "logout");
                log_debug("VM '%s' logged out", r->vm_id);
                rpc_reply(r, NULL, 0);
        }
        rpc_finish(r);
}

static int method_logout(Request *r) {
        r->job.write = logout_write;
        r->job.done = logout_written;
        jobs_submit_write(r->manager->jobs, &r->job);
        return 1;
}

#define FIELDS(f) f, ELEMENTSOF(f)

const Method client_methods[] = {
        { VMM_M_PING, method_ping, METHOD_NOAUTH, NULL, 0, 0, NULL },
        { VMM_M_REGISTER, method_register, METHOD_NOAUTH | METHOD_WRITE, FIELDS(register_fields),
          sizeof(RegisterParams), NULL },
        { VMM_M_AUTH, method_auth, METHOD_NOAUTH | METHOD_WRITE, FIELDS(auth_fields),
          sizeof(AuthParams), NULL },
        { VMM_M_RESUME, method_resume, METHOD_NOAUTH | METHOD_WRITE, FIELDS(resume_fields),
          sizeof(ResumeParams), NULL },
        { VMM_M_VM_ADD, method_vm_add, METHOD_WRITE, FIELDS(add_fields), sizeof(AddParams), NULL },
        { VMM_M_VM_GET, method_vm_get, 0, NULL, 0, 0, NULL },
        { VMM_M_VM_UPDATE, method_vm_update, METHOD_WRITE, FIELDS(update_fields),
          sizeof(UpdateParams), update_check },
        { VMM_M_VM_LIST, method_vm_list, 0, FIELDS(vm_list_fields), sizeof(ListParams), NULL },
        { VMM_M_DISK_LIST, method_disk_list, 0, FIELDS(disk_list_fields), sizeof(ListParams), NULL },
        { VMM_M_PASSWD, method_passwd, METHOD_WRITE, FIELDS(passwd_fields), sizeof(PasswdParams), NULL },
        { VMM_M_LOGOUT, method_logout, METHOD_WRITE, NULL, 0, 0, NULL },
};

const size_t n_client_methods = ELEMENTSOF(client_methods);
