/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "rpc.h"
#include "shared/macro.h"
#include "shared/secret.h"

#define REQUEST_ZONE_CHUNK 896

static Request *request_free(Request *r) {
        if (!r)
                return NULL;
        if (r->state_free)
                r->state_free(r->state);
        if (r->zone)
                msgpack_zone_free(r->zone);
        free(r->params);
        free(r->bytes);
        if (r->conn)
                conn_unref(r->conn);
        free(r);
        return NULL;
}

void rpc_reply(Request *r, const char *data, size_t len) {
        if (conn_reply_result(r->conn, r->msgid, data, len) < 0)
                log_error("Out of memory replying to connection %" PRIu64, r->conn->id);
}

void rpc_reply_error(Request *r, VmmError code, const char *fmt, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        if (conn_reply_error(r->conn, r->msgid, code, "%s", msg) < 0)
                log_error("Out of memory replying to connection %" PRIu64, r->conn->id);
}

void rpc_reply_errno(Request *r, int error) {
        switch (error) {
        case -ENOENT:
                rpc_reply_error(r, VMM_E_NOT_FOUND, "no such object");
                return;
        case -EEXIST:
                rpc_reply_error(r, VMM_E_EXISTS, "already exists");
                return;
        case -EBUSY:
                rpc_reply_error(r, VMM_E_CONFLICT, "a disk id belongs to another VM");
                return;
        case -EAGAIN:
                rpc_reply_error(r, VMM_E_UNAVAILABLE, "storage is busy; retry");
                return;
        case -ENOSPC:
                rpc_reply_error(r, VMM_E_UNAVAILABLE,
                                "storage is full; nothing was changed, retry later");
                return;
        case -ENOMEM:
                log_error("Out of memory in %s", r->method ? r->method->name : "request");
                rpc_reply_error(r, VMM_E_INTERNAL, "out of memory");
                return;
        default:
                log_error_errno(error, "Internal error in %s: %s",
                                r->method ? r->method->name : "request", strerror(-error));
                rpc_reply_error(r, VMM_E_INTERNAL, "internal error (logged)");
        }
}

void rpc_finish(Request *r) {
        Conn *c = conn_ref(r->conn);
        bool was_busy = c->busy == r;

        request_free(r);
        if (was_busy)
                conn_request_done(c);
        conn_unref(c);
}

static const Method *method_find(const Method *table, size_t n, const char *name, size_t len) {
        for (size_t i = 0; i < n; i++)
                if (strlen(table[i].name) == len && memcmp(table[i].name, name, len) == 0)
                        return &table[i];
        return NULL;
}

static bool obj_uint(const msgpack_object *o, uint64_t max, uint64_t *ret) {
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > max)
                return false;
        *ret = o->via.u64;
        return true;
}

/* Looks the token up; fills r's session on success. */
static int request_token_session(Request *r) {
        Manager *m = r->manager;
        uint8_t raw[VMM_TOKEN_BYTES], hash[SECRET_HASH_BYTES];
        StoreSession s;
        StoreTxn *t = NULL;
        int q;

        if (secret_token_decode(r->token.ptr, r->token.len, raw) < 0)
                return -EINVAL;
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
        r->has_session = true;
        r->via_token = true;
        memcpy(r->session_hash, hash, sizeof hash);
        memcpy(r->vm_id, s.vm_id, sizeof r->vm_id);
        /* sliding expiry: a token's use counts; refreshed at most every 1/16 TTL */
        uint64_t ttl = m->config.session_ttl_s * 1000;
        if ((uint64_t) (s.expires_at - now_ms()) < ttl - ttl / 16)
                client_session_left(m, hash, NULL);
        return 0;
}

void rpc_dispatch(Conn *c, const uint8_t *bytes, size_t len, bool after_cutoff) {
        Manager *m = c->manager;
        const msgpack_object *o, *a;
        ParamError perr;
        uint64_t v;
        int r;

        Request *req = calloc(1, sizeof *req);
        if (!req) {
                (void) conn_reply_error(c, 0, VMM_E_INTERNAL, "out of memory");
                conn_close_after_flush(c, "error");
                return;
        }
        req->manager = m;
        req->conn = conn_ref(c);
        /* a small first chunk: requests are small, and a chunk this size
         * comes from malloc's per-thread cache (msgpack-c's default 8 KiB
         * does not) */
        req->zone = msgpack_zone_new(REQUEST_ZONE_CHUNK);
        req->bytes = malloc(len);
        if (!req->bytes || !req->zone) {
                (void) conn_reply_error(c, 0, VMM_E_INTERNAL, "out of memory");
                conn_close_after_flush(c, "error");
                request_free(req);
                return;
        }
        memcpy(req->bytes, bytes, len);

        size_t off = 0;
        if (msgpack_unpack((const char *) req->bytes, len, &off, req->zone, &req->obj) !=
            MSGPACK_UNPACK_SUCCESS || off != len) {
                (void) conn_reply_error(c, 0, VMM_E_BAD_REQUEST, "malformed MessagePack");
                conn_close_after_flush(c, "error");
                request_free(req);
                return;
        }
        o = &req->obj;

        /* A notification from a client is ignored. */
        if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 3 &&
            obj_uint(&o->via.array.ptr[0], UINT8_MAX, &v) && v == VMM_MSG_NOTIFICATION) {
                request_free(req);
                return;
        }
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4) {
                (void) conn_reply_error(c, 0, VMM_E_BAD_REQUEST,
                                        "a request is an array [0, msgid, method, params]");
                conn_close_after_flush(c, "error");
                request_free(req);
                return;
        }
        a = o->via.array.ptr;
        if (!obj_uint(&a[0], UINT8_MAX, &v) || v != VMM_MSG_REQUEST) {
                (void) conn_reply_error(c, 0, VMM_E_BAD_REQUEST,
                                        "message type must be 0 (request)");
                conn_close_after_flush(c, "error");
                request_free(req);
                return;
        }
        if (!obj_uint(&a[1], UINT32_MAX, &v)) {
                (void) conn_reply_error(c, 0, VMM_E_BAD_REQUEST,
                                        "msgid must be an unsigned 32-bit integer");
                conn_close_after_flush(c, "error");
                request_free(req);
                return;
        }
        req->msgid = (uint32_t) v;
        c->requests++;
        m->requests++;

        if (a[2].type != MSGPACK_OBJECT_STR || !valid_utf8(a[2].via.str.ptr, a[2].via.str.size)) {
                rpc_reply_error(req, VMM_E_BAD_REQUEST, "method must be a string");
                goto finish;
        }
        if (a[3].type != MSGPACK_OBJECT_ARRAY || a[3].via.array.size > 1 ||
            (a[3].via.array.size == 1 && a[3].via.array.ptr[0].type != MSGPACK_OBJECT_MAP)) {
                rpc_reply_error(req, VMM_E_BAD_REQUEST,
                                "params must be [] or [{...}] (one map of named arguments)");
                goto finish;
        }

        const Method *table = c->kind == CONN_ADMIN ? admin_methods : client_methods;
        size_t n_table = c->kind == CONN_ADMIN ? n_admin_methods : n_client_methods;
        req->method = method_find(table, n_table, a[2].via.str.ptr, a[2].via.str.size);
        if (!req->method) {
                char q[80];
                rpc_reply_error(req, VMM_E_UNKNOWN_METHOD, "no method %s on this socket",
                                log_quote(q, sizeof q, a[2].via.str.ptr, a[2].via.str.size));
                goto finish;
        }

        req->params = calloc(1, MAX(req->method->params_size, (size_t) 1));
        if (!req->params) {
                rpc_reply_error(req, VMM_E_INTERNAL, "out of memory");
                goto finish;
        }
        bool needs_session = !(req->method->flags & METHOD_NOAUTH);
        r = params_parse(&a[3], req->method->fields, req->method->n_fields, req->params,
                         needs_session ? &req->token : NULL, &perr);
        if (r < 0) {
                rpc_reply_error(req, perr.code, "%s", perr.message);
                goto finish;
        }

        if (req->method->check) {
                char msg[200];
                if (!req->method->check(req->params, msg, sizeof msg)) {
                        rpc_reply_error(req, VMM_E_BAD_REQUEST, "%s", msg);
                        goto finish;
                }
        }

        if (after_cutoff) {
                rpc_reply_error(req, VMM_E_SHUTTING_DOWN, "the daemon is stopping; reconnect later");
                goto finish;
        }

        if (needs_session) {
                if (req->token.set) {
                        r = request_token_session(req);
                        if (r == -ENOENT || r == -EINVAL) {
                                rpc_reply_error(req, VMM_E_UNAUTHENTICATED,
                                                "the token is not valid (expired or ended)");
                                goto finish;
                        }
                        if (r < 0) {
                                rpc_reply_errno(req, r);
                                goto finish;
                        }
                } else if (c->attached) {
                        req->has_session = true;
                        memcpy(req->session_hash, c->session_hash, SECRET_HASH_BYTES);
                        memcpy(req->vm_id, c->vm_id, sizeof req->vm_id);
                } else {
                        rpc_reply_error(req, VMM_E_UNAUTHENTICATED,
                                        "not logged in: use auth or resume, or pass a token");
                        goto finish;
                }
        }

        r = req->method->handler(req);
        if (r > 0) {
                c->busy = req;
                return;
        }
        if (r < 0)
                rpc_reply_errno(req, r);
finish:
        request_free(req);
}
