/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "log.h"
#include "manager.h"
#include "rpc.h"
#include "session-touch.h"
#include "shared/clock.h"
#include "shared/macro.h"
#include "shared/mpout.h"
#include "shared/secret.h"

#define REQUEST_ZONE_CHUNK 896
/* a reply's first buffer (grows by doubling) */
#define REPLY_FIRST_ALLOC 512
#define REQUEST_OF(j) ((Request *) ((char *) (j) - offsetof(Request, job)))

/* ---- clients ---- */

Client *client_ref(Client *c) {
        c->n_ref++;
        return c;
}

Client *client_unref(Client *c) {
        if (!c || --c->n_ref > 0)
                return NULL;
        free(c);
        return NULL;
}

int rpc_attach(Request *r, const uint8_t hash[SECRET_HASH_BYTES], PrincipalKind kind,
               const char *name) {
        Manager *m = r->manager;
        Client *c = r->client;
        int q;

        if (!c->conn)
                return 0;
        if (c->link.attached) {
                uint8_t old[SECRET_HASH_BYTES];
                char old_name[STORE_NAME_MAX + 1];
                PrincipalKind old_kind = c->link.kind;

                if (memcmp(c->link.hash, hash, SECRET_HASH_BYTES) == 0)
                        return 0;
                memcpy(old, c->link.hash, sizeof old);
                snprintf(old_name, sizeof old_name, "%s", c->link.name);
                (void) sessions_detach(m->sessions, &c->link);
                session_touch(m, old, old_kind == PRINCIPAL_VM ? old_name : NULL, NULL);
        }
        q = sessions_attach(m->sessions, &c->link, hash, kind, name);
        if (q < 0)
                return q;
        conn_set_idle_timeout(c->conn, 0);
        return 0;
}

void rpc_detached(SessionLink *l, void *userdata) {
        Manager *m = userdata;
        Client *c = (Client *) ((char *) l - offsetof(Client, link));

        if (c->conn && c->socket == SOCKET_TCP)
                conn_set_idle_timeout(c->conn, m->config.idle_timeout_s * 1000);
}

/* ---- method tables ---- */

static int entry_cmp(const void *a, const void *b) {
        return strcmp(((const MethodEntry *) a)->name, ((const MethodEntry *) b)->name);
}

int method_table_build(const Method *const *lists[], const size_t *sizes, size_t n_lists,
                       MethodTable *ret) {
        size_t n = 0, cap = 0;
        MethodEntry *e = NULL;

        for (size_t l = 0; l < n_lists; l++)
                cap += sizes[l];
        e = calloc(MAX(cap, (size_t) 1), sizeof *e);
        if (!e)
                return -ENOMEM;
        for (size_t l = 0; l < n_lists; l++)
                for (size_t i = 0; i < sizes[l]; i++) {
                        const Method *m = lists[l][i];
                        size_t j;
                        for (j = 0; j < n; j++)
                                if (strcmp(e[j].name, m->name) == 0)
                                        break;
                        if (j == n)
                                e[n++].name = m->name;
                        if (m->flags & (METHOD_TCP | METHOD_TCP_ADMIN)) {
                                if (e[j].row[SOCKET_TCP]) {
                                        free(e);
                                        return -EEXIST;
                                }
                                e[j].row[SOCKET_TCP] = m;
                        }
                        if (m->flags & METHOD_ADMIN) {
                                if (e[j].row[SOCKET_ADMIN]) {
                                        free(e);
                                        return -EEXIST;
                                }
                                e[j].row[SOCKET_ADMIN] = m;
                        }
                }
        qsort(e, n, sizeof *e, entry_cmp);
        *ret = (MethodTable) { .entries = e, .n = n };
        return 0;
}

void method_table_done(MethodTable *t) {
        free(t->entries);
        *t = (MethodTable) { 0 };
}

static MethodEntry *method_find(const MethodTable *t, const char *name, size_t len) {
        size_t lo = 0, hi = t->n;

        if (len == 0)
                return NULL;    /* no method is nameless (and name may be NULL) */

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                const char *m = t->entries[mid].name;
                size_t mlen = strlen(m);
                /* name may hold any byte, NUL too: compare bytes, then
                 * lengths (a prefix sorts first, as in the table's order) */
                int c = memcmp(m, name, MIN(mlen, len));
                if (c == 0)
                        c = mlen < len ? -1 : mlen > len;
                if (c == 0)
                        return &t->entries[mid];
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

/* Two buckets per doubling: bucket b holds times up to 2^((b+1)/2) µs,
 * b = floor(2 log2(us + 1)), in integers (once per request): with
 * x = us + 1 and k = floor(log2 x), b is 2k, plus one when x >= 2^(k + 1/2),
 * that is when x^2 >= 2^(2k + 1). */
static unsigned stats_bucket(uint64_t us) {
        if (us >= UINT32_MAX)
                return 63u;
        uint64_t x = us + 1;
        unsigned k = 63u - (unsigned) __builtin_clzll(x);
        unsigned b = 2 * k + (x * x >= (UINT64_C(1) << (2 * k + 1)) ? 1 : 0);
        return MIN(b, 63u);
}

static uint64_t bucket_top(unsigned b) {
        return (uint64_t) pow(2.0, (double) (b + 1) / 2.0);
}

void method_stats_percentiles(const MethodStats *s, uint64_t *ret_p50, uint64_t *ret_p99) {
        uint64_t total = 0, seen = 0;
        bool have50 = false;

        *ret_p50 = *ret_p99 = 0;
        for (unsigned b = 0; b < 64; b++)
                total += s->hist[b];
        if (total == 0)
                return;
        for (unsigned b = 0; b < 64; b++) {
                seen += s->hist[b];
                if (!have50 && seen * 2 >= total) {
                        *ret_p50 = bucket_top(b);
                        have50 = true;
                }
                if (seen * 100 >= total * 99) {
                        *ret_p99 = bucket_top(b);
                        return;
                }
        }
}

/* ---- replies ---- */

/* Replies are kept in the request and written when it finishes: then it is
 * known whether what the request read (or wrote) is durable yet. */
static int out_write(void *data, const char *buf, size_t len) {
        msgpack_sbuffer *out = &((Request *) data)->out;

        /* most replies are small: start below msgpack-c's 8 KiB */
        if (out->alloc == 0) {
                size_t n = MAX(len, (size_t) REPLY_FIRST_ALLOC);
                out->data = malloc(n);
                if (!out->data)
                        return -1;
                out->alloc = n;
        }
        return msgpack_sbuffer_write(out, buf, len);
}

void rpc_reply(Request *r, const char *data, size_t len) {
        msgpack_packer pk;

        msgpack_packer_init(&pk, r, out_write);
        if (msgpack_pack_array(&pk, 4) || msgpack_pack_uint8(&pk, VMM_MSG_RESPONSE) ||
            msgpack_pack_uint32(&pk, r->msgid) || msgpack_pack_nil(&pk) ||
            (len == 0 && msgpack_pack_map(&pk, 0)) ||
            (len > 0 && out_write(r, data, len) < 0))
                log_error("Out of memory replying to connection %" PRIu64, r->client->id);
}

static void reply_error_now(Request *r, VmmError code, const char *msg) {
        msgpack_packer pk;

        r->error = code;
        msgpack_packer_init(&pk, r, out_write);
        if (msgpack_pack_array(&pk, 4) || msgpack_pack_uint8(&pk, VMM_MSG_RESPONSE) ||
            msgpack_pack_uint32(&pk, r->msgid) || msgpack_pack_map(&pk, 2) ||
            mp_kv_str(&pk, "code", vmm_error_to_string(code)) ||
            mp_kv_str(&pk, "message", msg) || msgpack_pack_nil(&pk))
                log_error("Out of memory replying to connection %" PRIu64, r->client->id);
}

/* Write what the request replied to its connection. */
static void deliver(Request *r) {
        Conn *c = r->client->conn;

        if (c && r->out.size > 0 && conn_write(c, r->out.data, r->out.size) < 0)
                log_error("Out of memory replying to connection %" PRIu64, r->client->id);
        if (r->out.data)
                secret_wipe(r->out.data, r->out.size);        /* tokens, passwords */
        r->out.size = 0;
}

void rpc_reply_error(Request *r, VmmError code, const char *fmt, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        reply_error_now(r, code, msg);
}

int rpc_fail(Request *r, VmmError code, const char *fmt, ...) {
        va_list ap;

        r->error = code;
        va_start(ap, fmt);
        (void) vsnprintf(r->error_message, sizeof r->error_message, fmt, ap);
        va_end(ap);
        return RPC_FAILED;
}

/* The errno table: what a phase returned when it did not name the error. */
static void reply_errno(Request *r, int error) {
        const char *name = r->method ? r->method->name : "request";

        switch (error) {
        case -ENOENT:
                rpc_reply_error(r, VMM_E_NOT_FOUND, "no such object");
                return;
        case -EEXIST:
                rpc_reply_error(r, VMM_E_EXISTS, "already exists");
                return;
        case -EBUSY:
                rpc_reply_error(r, VMM_E_CONFLICT, "in use");
                return;
        case -EAGAIN:
                rpc_reply_error(r, VMM_E_UNAVAILABLE, "storage is busy; retry");
                return;
        case -ENOSPC:
                rpc_reply_error(r, VMM_E_UNAVAILABLE,
                                "storage is full; nothing was changed, retry later");
                return;
        case -EIO:
                /* a commit that could not write it all (LMDB says EIO for a
                 * short write, as on a disk that filled up midway) */
                log_warning("Storage could not write in %s: %s", name, strerror(EIO));
                rpc_reply_error(r, VMM_E_UNAVAILABLE,
                                "storage could not write (full or failing); nothing was "
                                "changed, retry later");
                return;
        case -ECANCELED:
                rpc_reply_error(r, VMM_E_SHUTTING_DOWN, "the daemon is stopping; reconnect later");
                return;
        case -ENOMEM:
                log_error("Out of memory in %s", name);
                rpc_reply_error(r, VMM_E_INTERNAL, "out of memory");
                return;
        default:
                log_error_errno(error, "Internal error in %s: %s", name, strerror(-error));
                rpc_reply_error(r, VMM_E_INTERNAL, "internal error (logged)");
        }
}

/* ---- the pipeline ---- */

static void request_free(Request *r) {
        Manager *m = r->manager;

        if (r->out.data)
                secret_wipe(r->out.data, r->out.size);        /* tokens, passwords */
        msgpack_sbuffer_destroy(&r->out);
        if (r->state && r->method && r->method->state_done)
                r->method->state_done(r->state);
        if (r->hashing)
                sessions_peer_hash_end(r->peer);
        if (r->peer_ref)
                sessions_peer_put(m->sessions, r->peer);
        events_list_free(&r->events);
        if (r->zone)
                msgpack_zone_destroy(r->zone);
        if (!r->inline_used) {
                free(r->params);
                free(r->state);
        }
        client_unref(r->client);
        free(r);
}

/* The newest commit this request's reads on the loop saw: reads_begin at
 * each entry onto the loop, reads_end before it leaves it. */
static void reads_begin(Request *r) {
        (void) store_read_seq_take(r->manager->store);
}

static void reads_end(Request *r) {
        uint64_t seq = store_read_seq_take(r->manager->store);
        if (seq > r->seen_seq)
                r->seen_seq = seq;
}

static void request_finish(Request *r);

/* Replies that showed a commit not yet durable wait here, in order. */
static void wait_for_durable(Request *r) {
        Manager *m = r->manager;

        r->wait_next = NULL;
        if (m->durable_wait_tail)
                m->durable_wait_tail->wait_next = r;
        else
                m->durable_wait = r;
        m->durable_wait_tail = r;
}

void rpc_durable_advanced(void *userdata) {
        Manager *m = userdata;
        uint64_t durable = store_durable_seq(m->store);

        while (m->durable_wait && m->durable_wait->seen_seq <= durable) {
                Request *r = m->durable_wait;
                m->durable_wait = r->wait_next;
                if (!m->durable_wait)
                        m->durable_wait_tail = NULL;
                r->seen_seq = 0;
                reads_begin(r);         /* it reads nothing more */
                request_finish(r);
        }
}

/* At a stop: replies still waiting are dropped (their connections are gone). */
void rpc_release_waiting(Manager *m) {
        while (m->durable_wait) {
                Request *r = m->durable_wait;
                m->durable_wait = r->wait_next;
                r->seen_seq = 0;
                reads_begin(r);         /* it reads nothing more */
                request_finish(r);
        }
        m->durable_wait_tail = NULL;
}

static void request_finish(Request *r) {
        Client *c;
        bool held;

        reads_end(r);
        if (r->seen_seq > store_durable_seq(r->manager->store) && r->client->conn) {
                /* nobody is shown what a power cut could still take away */
                wait_for_durable(r);
                return;
        }
        deliver(r);
        if (r->delivered)
                r->delivered(r);
        c = client_ref(r->client);
        held = c->busy_held && c->busy == r;
        if (r->entry) {
                MethodStats *s = &r->entry->stats;
                s->calls++;
                if (r->error != VMM_OK)
                        s->errors++;
                s->hist[stats_bucket(mono_us() - r->started_us)]++;
        }
        if (c->busy == r) {
                c->busy = NULL;
                c->busy_held = false;
        }
        request_free(r);
        if (held && c->conn)
                conn_resume(c->conn);
        client_unref(c);
}

static void request_failed(Request *r, int q) {
        if (q == RPC_FAILED)
                reply_error_now(r, r->error, r->error_message);
        else
                reply_errno(r, q);
        request_finish(r);
}

static void phase_next(Request *r, bool after_hash, bool after_write);

/* A phase's result: go on, or end the request. */
static void phase_result(Request *r, int q, bool after_hash, bool after_write) {
        if (q < 0)
                request_failed(r, q);
        else if (q == RPC_REPLIED)
                request_finish(r);
        else
                phase_next(r, after_hash, after_write);
}

static int job_hash(Job *j) {
        Request *r = REQUEST_OF(j);
        return r->method->hash(r);
}

static void job_hashed(Job *j, int result) {
        Request *r = REQUEST_OF(j);

        reads_begin(r);
        r->in_hash = false;
        if (r->abandoned) {
                /* answered already (shutting_down): nothing more is done */
                request_finish(r);
                return;
        }

        if (r->hashing) {
                sessions_peer_hash_end(r->peer);
                r->hashing = false;
        }
        if (result == -ECANCELED && !r->method->long_hash) {
                request_failed(r, result);
                return;
        }
        r->hash_result = result;
        if (r->method->hashed)
                phase_result(r, r->method->hashed(r, result), true, false);
        else
                phase_result(r, result < 0 ? result : RPC_NEXT, true, false);
}

static int job_write(Job *j, StoreTxn *t) {
        Request *r = REQUEST_OF(j);

        /* a batch may run again: start over */
        events_list_free(&r->events);
        r->error = VMM_OK;
        r->error_message[0] = '\0';
        return r->method->write(r, t);
}

static void job_written(Job *j, int q) {
        Request *r = REQUEST_OF(j);

        reads_begin(r);
        if (q < 0) {
                events_list_free(&r->events);
                if (q == -ENOSPC && r->method->unavailable) {
                        r->error = VMM_OK;
                        phase_result(r, r->method->unavailable(r), true, true);
                        return;
                }
                request_failed(r, q);
                return;
        }
        r->error = VMM_OK;
        events_publish_list(r->manager->events, &r->events);
        phase_result(r, RPC_NEXT, true, true);
}

static void submit_hash(Request *r) {
        Manager *m = r->manager;
        int q;

        reads_end(r);
        if (r->method->long_hash) {
                r->job.hash = job_hash;
                r->job.done = job_hashed;
                q = jobs_submit_thread(m->jobs, &r->job);
                if (q < 0)
                        request_failed(r, q);
                return;
        }
        /* the bound per address is for TCP: admin-socket peers are trusted
         * and all share one "address" (the hash queue's bound still holds) */
        bool counted = r->peer && r->client->socket == SOCKET_TCP;
        if (counted && !sessions_peer_hash_begin(r->peer, (unsigned) m->config.hashes_per_peer)) {
                rpc_reply_error(r, VMM_E_RATE_LIMITED,
                                "too many password checks in flight from this address; retry "
                                "in a moment");
                request_finish(r);
                return;
        }
        r->hashing = counted;
        r->in_hash = true;
        r->job.hash = job_hash;
        r->job.done = job_hashed;
        q = jobs_submit_hash(m->jobs, &r->job);
        if (q < 0) {
                if (r->hashing)
                        sessions_peer_hash_end(r->peer);
                r->hashing = false;
                r->in_hash = false;
                rpc_reply_error(r, VMM_E_RATE_LIMITED,
                                "the server is busy checking passwords; retry in a moment");
                request_finish(r);
        }
}

static void phase_next(Request *r, bool after_hash, bool after_write) {
        const Method *m = r->method;

        if (!after_hash && m->hash) {
                submit_hash(r);
                return;
        }
        if (!after_write && m->write) {
                reads_end(r);
                r->job.write = job_write;
                r->job.done = job_written;
                jobs_submit_write(r->manager->jobs, &r->job);
                return;
        }
        if (m->done) {
                phase_result(r, m->done(r), true, true);
                return;
        }
        rpc_reply(r, NULL, 0);
        request_finish(r);
}

void rpc_abandon_hashing(Manager *m) {
        for (Client *c = m->clients; c; c = c->next) {
                Request *r = c->busy;
                if (!r || !r->in_hash || r->abandoned || !c->conn)
                        continue;
                rpc_reply_error(r, VMM_E_SHUTTING_DOWN,
                                "the daemon is stopping; reconnect later");
                deliver(r);     /* it shows nothing: out at once */
                r->abandoned = true;
                conn_close_after_flush(c->conn, "shutdown");
        }
}

/* ---- who is calling ---- */

static const char *const role_names[] = { "none", "viewer", "user", "admin" };

const char *role_to_string(int role) {
        return role >= 0 && role < (int) ELEMENTSOF(role_names) ? role_names[role] : "?";
}

int role_from_string(const char *s, size_t len) {
        for (int i = STORE_ROLE_VIEWER; i < (int) ELEMENTSOF(role_names); i++)
                if (streq_n(s, len, role_names[i]))
                        return i;
        return -EINVAL;
}

/* The role of a user session's user (it may have changed since login). */
static int user_role(Request *r, const char *name, int *ret) {
        StoreTxn *t = NULL;
        StoreUser u;
        int q;

        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                return q;
        q = store_user_get(t, name, &u);
        store_read_end(t);
        if (q >= 0)
                *ret = u.role;
        return q;
}

/* A token in the params: the session it names. */
static int caller_from_token(Request *r) {
        Manager *m = r->manager;
        uint8_t raw[VMM_TOKEN_BYTES], hash[SECRET_HASH_BYTES];
        StoreSession s;
        StoreTxn *t = NULL;
        int q;

        if (secret_token_decode(r->token.ptr, r->token.len, raw) < 0)
                return -ENOENT;
        secret_token_hash(m->hash_key, raw, hash);
        secret_wipe(raw, sizeof raw);
        q = store_read_begin(m->store, &t);
        if (q < 0)
                return q;
        q = store_session_get(t, hash, &s);
        store_read_end(t);
        if (q < 0)
                return q;
        if (s.expires_at <= now_ms() && !sessions_is_attached(m->sessions, hash))
                return -ENOENT;
        r->caller.kind = s.user[0] ? PRINCIPAL_USER : PRINCIPAL_VM;
        r->caller.has_session = true;
        r->caller.via_token = true;
        memcpy(r->caller.session_hash, hash, sizeof hash);
        snprintf(r->caller.vm_id, sizeof r->caller.vm_id, "%s", s.vm_id);
        snprintf(r->caller.name, sizeof r->caller.name, "%s", s.user);
        /* sliding expiry: a token's use counts; refreshed at most every 1/16 TTL */
        uint64_t ttl = m->config.session_ttl_s * 1000;
        if ((uint64_t) (s.expires_at - now_ms()) < ttl - ttl / 16)
                session_touch(m, hash, NULL, NULL);
        return 0;
}

/* Sets r->caller; replies and returns false when the request may not run. */
static bool caller_check(Request *r) {
        Client *c = r->client;
        const Method *m = r->method;
        int q;

        if (c->socket == SOCKET_ADMIN) {
                r->caller.kind = PRINCIPAL_PEER;
                r->caller.role = c->peer_role;
                snprintf(r->caller.name, sizeof r->caller.name, "%s", c->login);
        } else if (r->token.set) {
                q = caller_from_token(r);
                if (q == -ENOENT) {
                        rpc_reply_error(r, VMM_E_UNAUTHENTICATED,
                                        "the token is not valid (expired or ended)");
                        return false;
                }
                if (q < 0) {
                        reply_errno(r, q);
                        return false;
                }
        } else if (c->link.attached) {
                r->caller.kind = c->link.kind;
                r->caller.has_session = true;
                memcpy(r->caller.session_hash, c->link.hash, SECRET_HASH_BYTES);
                if (c->link.kind == PRINCIPAL_VM)
                        str_copy(r->caller.vm_id, sizeof r->caller.vm_id, c->link.name);
                else
                        snprintf(r->caller.name, sizeof r->caller.name, "%s", c->link.name);
        }
        if (r->caller.kind == PRINCIPAL_USER) {
                q = user_role(r, r->caller.name, &r->caller.role);
                if (q == -ENOENT) {
                        rpc_reply_error(r, VMM_E_UNAUTHENTICATED, "the user no longer exists");
                        return false;
                }
                if (q < 0) {
                        reply_errno(r, q);
                        return false;
                }
        }

        if (!(m->callers & (1u << r->caller.kind))) {
                if (r->caller.kind == PRINCIPAL_NONE)
                        rpc_reply_error(r, VMM_E_UNAUTHENTICATED,
                                        "log in first (auth, user.auth or resume), or pass a "
                                        "token");
                else if (r->caller.kind == PRINCIPAL_VM)
                        rpc_reply_error(r, VMM_E_FORBIDDEN, "%s is not for VM sessions", m->name);
                else
                        rpc_reply_error(r, VMM_E_FORBIDDEN, "%s is only for VM sessions",
                                        m->name);
                return false;
        }
        if ((r->caller.kind == PRINCIPAL_USER || r->caller.kind == PRINCIPAL_PEER) &&
            r->caller.role < m->min_role) {
                rpc_reply_error(r, VMM_E_FORBIDDEN, "%s needs the role %s (%s has %s)", m->name,
                                role_to_string(m->min_role),
                                r->caller.name[0] ? r->caller.name : "this session",
                                role_to_string(r->caller.role));
                return false;
        }
        return true;
}

/* "peer" from a trusted proxy: the limits count against that address. */
static bool peer_check(Request *r) {
        Manager *m = r->manager;
        Client *c = r->client;

        r->peer = c->peer;
        if (!r->peer_param.set)
                return true;
        if (!c->trusted_proxy) {
                rpc_reply_error(r, VMM_E_FORBIDDEN,
                                "peer is accepted only from a trusted proxy (trusted_proxies)");
                return false;
        }
        Peer *p = NULL;
        if (sessions_peer_get_text(m->sessions, r->peer_param.ptr, r->peer_param.len,
                                   (unsigned) m->config.ipv6_prefix, &p) < 0) {
                rpc_reply_error(r, VMM_E_BAD_REQUEST, "peer: expected an IPv4 or IPv6 address");
                return false;
        }
        r->peer = p;
        r->peer_ref = true;
        return true;
}

bool rpc_peer_limited(Request *r) {
        return r->peer && sessions_peer_limited(r->peer, now_ms(),
                                                (unsigned) r->manager->config.auth_failures_per_minute);
}

const char *rpc_peer_text(Request *r) {
        return r->peer_param.set && r->peer ? sessions_peer_address(r->peer) : r->client->peer_str;
}

void rpc_login_failed(Request *r, const char *who, bool user) {
        const char *peer = rpc_peer_text(r);

        if (!r->peer)
                return;
        sessions_peer_failed(r->peer, now_ms());
        if (sessions_peer_log_allowed(r->peer, now_ms()))
                log_struct(LOG_NOTICE, &(LogFields) { .message_id = LOG_MID_LOGIN_FAILED,
                                                      .vm_id = user ? NULL : who,
                                                      .user = user ? who : NULL,
                                                      .peer = peer, .has_conn = true,
                                                      .conn = r->client->id, .admin_uid = -1 },
                           "Failed login for %s '%s' from %s", user ? "user" : "VM", who, peer);
        events_emit(r->manager->events, &(Event) { .type = "auth.failed",
                                                   .vm_id = user ? NULL : who,
                                                   .user = user ? who : NULL, .peer = peer });
}

/* ---- dispatch ---- */

static bool obj_uint(const msgpack_object *o, uint64_t max, uint64_t *ret) {
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
                return false;
        *ret = o->via.u64;
        return true;
}

static bool framing_error(Client *c, Request *r, const char *msg) {
        if (c->conn) {
                (void) conn_write_error(c->conn, 0, VMM_E_BAD_REQUEST, msg);
                conn_close_after_flush(c->conn, "error");
        }
        request_free(r);
        return false;
}

bool rpc_on_message(Conn *conn, const uint8_t *bytes, size_t len, bool after_cutoff,
                    void *userdata) {
        Client *c = userdata;
        Manager *m = c->manager;
        const msgpack_object *o, *a;
        ParamError perr;
        uint64_t v;
        int q;

        /* one allocation for the request and its message */
        Request *r = len <= SIZE_MAX - sizeof *r ? malloc(sizeof *r + len) : NULL;
        if (!r) {
                (void) conn_write_error(conn, 0, VMM_E_INTERNAL, "out of memory");
                conn_close_after_flush(conn, "error");
                return false;
        }
        memset(r, 0, offsetof(Request, inline_mem));
        r->manager = m;
        r->client = client_ref(c);
        r->started_us = mono_us();
        msgpack_sbuffer_init(&r->out);
        reads_begin(r);
        /* a small first chunk: requests are small, and a chunk this size
         * comes from malloc's per-thread cache (msgpack-c's 8 KiB does not) */
        r->bytes = (uint8_t *) (r + 1);
        if (!msgpack_zone_init(&r->zone_s, REQUEST_ZONE_CHUNK)) {
                (void) conn_write_error(conn, 0, VMM_E_INTERNAL, "out of memory");
                conn_close_after_flush(conn, "error");
                request_free(r);
                return false;
        }
        r->zone = &r->zone_s;
        memcpy(r->bytes, bytes, len);

        size_t off = 0;
        if (msgpack_unpack((const char *) r->bytes, len, &off, r->zone, &r->obj) !=
            MSGPACK_UNPACK_SUCCESS || off != len)
                return framing_error(c, r, "malformed MessagePack");
        o = &r->obj;

        /* A notification from a client is ignored. */
        if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 3 &&
            obj_uint(&o->via.array.ptr[0], UINT8_MAX, &v) && v == VMM_MSG_NOTIFICATION) {
                request_free(r);
                return false;
        }
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4)
                return framing_error(c, r, "a request is an array [0, msgid, method, params]");
        a = o->via.array.ptr;
        if (!obj_uint(&a[0], UINT8_MAX, &v) || v != VMM_MSG_REQUEST)
                return framing_error(c, r, "message type must be 0 (request)");
        if (!obj_uint(&a[1], UINT32_MAX, &v))
                return framing_error(c, r, "msgid must be an unsigned 32-bit integer");
        r->msgid = (uint32_t) v;
        c->requests++;
        m->requests++;
        c->busy = r;

        /* the order of the errors: shape (no schema needed), method, params */
        if (a[2].type != MSGPACK_OBJECT_STR || !valid_utf8(a[2].via.str.ptr, a[2].via.str.size)) {
                rpc_reply_error(r, VMM_E_BAD_REQUEST, "method must be a string");
                goto finish;
        }
        if (params_shape_check(&a[3], &perr) < 0) {
                rpc_reply_error(r, perr.code, "%s", perr.message);
                goto finish;
        }
        r->entry = method_find(c->methods, a[2].via.str.ptr, a[2].via.str.size);
        r->method = r->entry ? r->entry->row[c->socket] : NULL;
        if (r->method && c->socket == SOCKET_TCP && (r->method->flags & METHOD_TCP_ADMIN) &&
            !m->config.tcp_admin)
                r->method = NULL;
        if (!r->method) {
                char name[80];
                r->entry = NULL;
                rpc_reply_error(r, VMM_E_UNKNOWN_METHOD, "no method %s on this socket",
                                log_quote(name, sizeof name, a[2].via.str.ptr,
                                          a[2].via.str.size));
                goto finish;
        }

        r->has_params = a[3].via.array.size > 0;
        size_t align = _Alignof(max_align_t);
        size_t pbytes = MAX(r->method->params_size, (size_t) 1);
        size_t psize = (pbytes + align - 1) / align * align;      /* state is aligned after */
        if (psize + r->method->state_size <= sizeof r->inline_mem) {
                r->inline_used = true;
                memset(r->inline_mem, 0, psize + r->method->state_size);
                r->params = r->inline_mem;
                if (r->method->state_size)
                        r->state = r->inline_mem + psize;
        } else {
                r->params = calloc(1, pbytes);
                if (r->method->state_size)
                        r->state = calloc(1, r->method->state_size);
        }
        if (!r->params || (r->method->state_size && !r->state)) {
                rpc_reply_error(r, VMM_E_INTERNAL, "out of memory");
                goto finish;
        }
        bool token_ok = c->socket == SOCKET_TCP && !(r->method->callers & CALLER_ANON);
        bool peer_ok = c->socket == SOCKET_TCP && (r->method->flags & METHOD_PEER);
        q = params_parse_ex(&a[3], r->method->fields, r->method->n_fields, r->params,
                            token_ok ? &r->token : NULL, peer_ok ? &r->peer_param : NULL, &perr);
        if (q < 0) {
                rpc_reply_error(r, perr.code, "%s", perr.message);
                goto finish;
        }
        if (r->method->check) {
                char msg[200];
                if (!r->method->check(r->params, msg, sizeof msg)) {
                        rpc_reply_error(r, VMM_E_BAD_REQUEST, "%s", msg);
                        goto finish;
                }
        }
        if (after_cutoff) {
                rpc_reply_error(r, VMM_E_SHUTTING_DOWN, "the daemon is stopping; reconnect later");
                goto finish;
        }
        if (!caller_check(r) || !peer_check(r))
                goto finish;
        if ((r->method->flags & METHOD_LOGIN) && rpc_peer_limited(r)) {
                rpc_reply_error(r, VMM_E_RATE_LIMITED,
                                "too many failed logins from this address; retry in a minute");
                goto finish;
        }

        phase_result(r, r->method->start ? r->method->start(r) : RPC_NEXT, false, false);
        goto held;
finish:
        request_finish(r);
held:
        /* still working on it, or its answer waits for a durable commit (an
         * early error that read the store, too): the connection waits, and
         * is resumed, and so flushed, when the answer goes out */
        if (c->busy) {
                c->busy_held = true;
                return true;
        }
        return false;
}
