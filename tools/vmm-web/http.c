/* SPDX-License-Identifier: MIT */
/* The HTTP side: libmicrohttpd's access handler, the life of a request
 * (route, limits, identity, body, handler, suspended while vmmd answers),
 * and the one place where responses are built and errors are mapped. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "web.h"

#define BODY_DISCARD_MAX (1024u * 1024u)
#define SETTLE_ROUNDS    4

static const char csp[] =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'";

/* ---- errors: the one mapping ---- */

static const struct {
        const char *code;
        unsigned status;
} status_map[] = {
        { "bad_request", MHD_HTTP_BAD_REQUEST },
        { "unknown_method", MHD_HTTP_NOT_IMPLEMENTED },
        { "too_large", MHD_HTTP_CONTENT_TOO_LARGE },
        { "unauthenticated", MHD_HTTP_UNAUTHORIZED },
        { "rate_limited", MHD_HTTP_TOO_MANY_REQUESTS },
        { "forbidden", MHD_HTTP_FORBIDDEN },
        { "not_found", MHD_HTTP_NOT_FOUND },
        { "exists", MHD_HTTP_CONFLICT },
        { "conflict", MHD_HTTP_CONFLICT },
        { "unavailable", MHD_HTTP_SERVICE_UNAVAILABLE },
        { "shutting_down", MHD_HTTP_SERVICE_UNAVAILABLE },
        { "internal", MHD_HTTP_INTERNAL_SERVER_ERROR },
};

unsigned http_status_of(const char *code) {
        for (size_t i = 0; i < ELEMENTSOF(status_map); i++)
                if (code && strcmp(code, status_map[i].code) == 0)
                        return status_map[i].status;
        return MHD_HTTP_BAD_GATEWAY;
}

/* ---- building responses ---- */

static void waiting_add(Req *req) {
        Web *w = req->web;
        req->waiting_prev = NULL;
        req->waiting_next = w->waiting;
        if (w->waiting)
                w->waiting->waiting_prev = req;
        w->waiting = req;
        w->suspended++;
}

static void waiting_remove(Req *req) {
        Web *w = req->web;
        if (req->waiting_prev)
                req->waiting_prev->waiting_next = req->waiting_next;
        else if (w->waiting == req)
                w->waiting = req->waiting_next;
        if (req->waiting_next)
                req->waiting_next->waiting_prev = req->waiting_prev;
        req->waiting_next = req->waiting_prev = NULL;
        w->suspended--;
}

static void req_resume(Req *req) {
        if (req->suspended) {
                req->suspended = false;
                waiting_remove(req);
                MHD_resume_connection(req->conn);
                web_schedule(req->web);
        }
}

void req_wake(Req *req) {
        req_resume(req);
}

void reply(Req *req, unsigned status, const char *type, char *body, size_t len) {
        if (req->ready) {
                free(body);
                return;
        }
        req->status = status;
        req->resp = body;
        req->resp_len = len;
        req->resp_type = type;
        req->ready = true;
        req_resume(req);
}

void reply_static(Req *req, unsigned status, const char *type, const char *data, size_t len) {
        if (req->ready)
                return;
        req->status = status;
        req->resp = (char *) data;
        req->resp_len = len;
        req->resp_type = type;
        req->resp_persistent = true;
        req->ready = true;
        req_resume(req);
}

void reply_json(Req *req, unsigned status, json_t *j) {
        char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
        if (!text) {
                reply(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json",
                      strdup("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}"),
                      strlen("{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}"));
                return;
        }
        size_t n = strlen(text);
        /* a trailing newline is kind to curl users */
        char *t = realloc(text, n + 2);
        if (t) {
                text = t;
                text[n++] = '\n';
                text[n] = '\0';
        }
        reply(req, status, "application/json", text, n);
}

static void reply_error_text(Req *req, unsigned status, const char *code, const char *message) {
        json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
        reply_json(req, status, j);
}

void reply_error(Req *req, unsigned status, const char *code, const char *fmt, ...) {
        char msg[512];
        va_list ap;
        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        reply_error_text(req, status, code, msg);
}

void reply_vmmd_error(Req *req, const VmmMessage *m) {
        const char *code = m->error_code && *m->error_code ? m->error_code : "internal";
        const char *message = m->error_message ? m->error_message : "";
        if (strcmp(code, "unknown_method") == 0) {
                reply_error(req, MHD_HTTP_NOT_IMPLEMENTED, "unknown_method",
                            "vmmd does not offer %s to the gateway%s", req->rpc ? req->rpc : "this",
                            req->route && (req->route->flags & R_ADMIN)
                                    ? " (administration over TCP needs tcp_admin = yes in "
                                      "vmmd.conf)"
                                    : " (this vmmd is older than the gateway)");
                return;
        }
        if (m->error == _VMM_E_INVALID) {
                reply_error(req, MHD_HTTP_BAD_GATEWAY, "unavailable",
                            "vmmd answered with an unknown error code");
                return;
        }
        reply_error_text(req, http_status_of(code), code, message);
}

void reply_unreachable(Req *req, int error) {
        if (error == -EMSGSIZE) {
                reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                            "the request is too large for vmmd");
                return;
        }
        reply_error(req, MHD_HTTP_BAD_GATEWAY, "unavailable", "cannot reach vmmd at %s (%s)",
                    req->web->config.vmmd, strerror(error < 0 ? -error : error));
}

static enum MHD_Result add_header(struct MHD_Response *r, const char *k, const char *v) {
        return MHD_add_response_header(r, k, v);
}

static void add_common_headers(Req *req, struct MHD_Response *r) {
        (void) add_header(r, "Content-Security-Policy", csp);
        (void) add_header(r, "X-Content-Type-Options", "nosniff");
        (void) add_header(r, "X-Frame-Options", "DENY");
        (void) add_header(r, "Referrer-Policy", "no-referrer");
        (void) add_header(r, "Cross-Origin-Opener-Policy", "same-origin");
        (void) add_header(r, "Cross-Origin-Resource-Policy", "same-origin");
        (void) add_header(r, "Permissions-Policy", "camera=(), microphone=(), geolocation=()");
        if (req->web->tls)
                (void) add_header(r, "Strict-Transport-Security", "max-age=31536000");
}

/* The one place where a response goes out. */
static enum MHD_Result queue_response(Req *req) {
        struct MHD_Response *r;
        if (req->stream_response) {
                r = req->stream_response;
                req->stream_response = NULL;
                (void) add_header(r, "Content-Type", "text/event-stream; charset=utf-8");
                (void) add_header(r, "Cache-Control", "no-store");
                (void) add_header(r, "X-Accel-Buffering", "no");
                req->status = MHD_HTTP_OK;
        } else {
                r = MHD_create_response_from_buffer(req->resp_len, req->resp,
                                                    req->resp_persistent ? MHD_RESPMEM_PERSISTENT
                                                                         : MHD_RESPMEM_MUST_FREE);
                if (!r)
                        return MHD_NO;
                req->resp = NULL;
                if (req->resp_type)
                        (void) add_header(r, "Content-Type", req->resp_type);
                (void) add_header(r, "Cache-Control",
                                  req->resp_cache ? req->resp_cache : "no-store");
        }
        add_common_headers(req, r);
        if (req->set_cookie)
                (void) add_header(r, "Set-Cookie", req->set_cookie);
        if (req->allow)
                (void) add_header(r, "Allow", req->allow);
        if (req->etag)
                (void) add_header(r, "ETag", req->etag);
        if (req->status == MHD_HTTP_UNAUTHORIZED && req->auth != AUTH_COOKIE &&
            !(req->route && strcmp(req->route->path, "/api/v1/login") == 0))
                (void) add_header(r, "WWW-Authenticate", "Basic realm=\"vmm\", charset=\"UTF-8\"");
        enum MHD_Result q = MHD_queue_response(req->conn, req->status, r);
        MHD_destroy_response(r);
        req->queued = true;
        return q;
}

/* ---- helpers for handlers ---- */

const char *req_header(Req *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *req_query(Req *req, const char *name) {
        return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
}

bool req_wants_json(Req *req) {
        const char *t = req_header(req, "Content-Type");
        if (!t)
                return false;
        size_t n = strlen("application/json");
        return strncasecmp(t, "application/json", n) == 0 && (t[n] == '\0' || t[n] == ';' ||
                                                                t[n] == ' ');
}

void req_set_cookie(Req *req, const char *token) {
        free(req->set_cookie);
        req->set_cookie = NULL;
        const char *secure = req->web->tls ? "; Secure" : "";
        int r;
        if (token)
                r = asprintf(&req->set_cookie,
                             "vmm_session=%s; HttpOnly; SameSite=Strict; Path=/%s", token, secure);
        else
                r = asprintf(&req->set_cookie,
                             "vmm_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0%s",
                             secure);
        if (r < 0)
                req->set_cookie = NULL;         /* out of memory: no cookie is set */
}

static void req_call_done(void *userdata, const VmmMessage *m, int error) {
        Req *req = userdata;
        req->call = NULL;
        if (!m) {
                reply_unreachable(req, error);
                return;
        }
        if (m->msgid == 0 && m->error != VMM_OK) {
                /* vmmd refused the whole stream (e.g. too many connections) */
                reply_vmmd_error(req, m);
                return;
        }
        if (m->error == VMM_E_UNAUTHENTICATED && req->auth == AUTH_BASIC && !req->retried) {
                /* the kept session ended: log in once more and run the route again */
                req->retried = true;
                auth_basic_drop(req);
                auth_identify(req);
                return;
        }
        if (m->error == VMM_E_UNAUTHENTICATED && req->auth == AUTH_COOKIE)
                req_set_cookie(req, NULL);
        if (m->error != VMM_OK && !(req->call_flags & REQ_CALL_RAW)) {
                reply_vmmd_error(req, m);
                return;
        }
        req->step(req, m);
}

int req_call(Req *req, const char *method, json_t *params, unsigned flags, ReqStep step) {
        req->step = step;
        req->rpc = method;
        req->call_flags = flags;
        if (params != req->params) {
                json_decref(req->params);
                req->params = params;
        }
        const char *token = req->auth != AUTH_NONE ? req->token : NULL;
        int r = pool_call(req->web->pool, method, params, token, req_call_done, req, &req->call);
        if (r < 0) {
                reply_unreachable(req, r);
                return r;
        }
        return 0;
}

/* ---- the life of a request ---- */

static void req_free(Req *req) {
        if (!req)
                return;
        if (req->call)
                call_forget(req->call);
        auth_forget(req);
        if (req->is_stream)
                req_stream_gone(req);
        if (req->suspended)
                waiting_remove(req);
        for (size_t i = 0; i < WEB_PATH_PARAMS_MAX; i++)
                free(req->path_params[i]);
        if (req->stream_response)
                MHD_destroy_response(req->stream_response);
        json_decref(req->json);
        json_decref(req->params);
        json_decref(req->acc);
        json_decref(req->acc2);
        free(req->url);
        free(req->body);
        explicit_bzero(req->token, sizeof req->token);
        if (!req->resp_persistent)
                free(req->resp);
        free(req->set_cookie);
        free(req->allow);
        free(req->etag);
        free(req);
}

static void format_peer(struct MHD_Connection *conn, char *buf, size_t size) {
        const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        snprintf(buf, size, "unknown");
        if (!ci || !ci->client_addr)
                return;
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET) {
                (void) inet_ntop(AF_INET, &((const struct sockaddr_in *) sa)->sin_addr, buf,
                                 (socklen_t) size);
        } else if (sa->sa_family == AF_INET6) {
                const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;
                if (IN6_IS_ADDR_V4MAPPED(a))
                        (void) inet_ntop(AF_INET, &a->s6_addr[12], buf, (socklen_t) size);
                else
                        (void) inet_ntop(AF_INET6, a, buf, (socklen_t) size);
        }
}

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
        size_t *n = cls;
        *n += strlen(key) + (value ? strlen(value) : 0) + 4;
        return MHD_YES;
}

static bool is_state_changing(const char *method) {
        return strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 &&
               strcmp(method, "OPTIONS") != 0;
}

/* First call: route, header limits, announced body size. */
static void req_prepare(Req *req, const char *url, const char *method) {
        size_t header_bytes = strlen(url) + strlen(method) + 16;
        (void) MHD_get_connection_values(req->conn, MHD_HEADER_KIND, count_header, &header_bytes);
        if (header_bytes > WEB_HEADERS_MAX) {
                reply_error(req, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, "too_large",
                            "the request headers are larger than %u bytes", WEB_HEADERS_MAX);
                return;
        }
        const char *cl = req_header(req, "Content-Length");
        if (cl && strtoull(cl, NULL, 10) > WEB_BODY_MAX) {
                reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                            "the request body is larger than %u bytes", WEB_BODY_MAX);
                return;
        }
        char allow[128];
        bool path_ok = false;
        const char *m = strcmp(method, "HEAD") == 0 ? "GET" : method;
        req->head = strcmp(method, "HEAD") == 0;
        req->route = route_find(m, url, req->web->assets, req->path_params, &path_ok, allow,
                                sizeof allow);
        if (!req->route && path_ok) {
                req->allow = strdup(allow);
                reply_error(req, MHD_HTTP_METHOD_NOT_ALLOWED, "bad_request",
                            "%s is not allowed here; use %s", method, allow);
        } else if (!req->route)
                reply_error(req, MHD_HTTP_NOT_FOUND, "not_found",
                            "there is nothing at this address");
}

void req_dispatch(Req *req) {
        const Route *rt = req->route;
        if (req->web->stopping) {
                reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                            "the gateway is stopping; try again in a moment");
                return;
        }
        if (req->auth == AUTH_COOKIE && is_state_changing(req->method) &&
            !(rt->flags & R_NOCSRF) && !req_wants_json(req)) {
                reply_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
                            "a request that changes something must be sent as "
                            "Content-Type: application/json");
                return;
        }
        json_decref(req->json);
        req->json = NULL;
        if (req->body_len > 0 && (rt->flags & R_BODY)) {
                char err[256];
                bool too_deep;
                req->json = json_parse_body(req->body, req->body_len, err, sizeof err, &too_deep);
                if (!req->json) {
                        if (too_deep)
                                reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", "%s",
                                            err);
                        else
                                reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "%s", err);
                        return;
                }
        } else if (req->body_len > 0) {
                reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request", "this request takes no body");
                return;
        } else if (rt->flags & R_BODY)
                req->json = json_object();
        rt->handler(req);
}

static void req_start(Req *req) {
        req->web->requests++;
        if (req->body_too_large) {
                reply_error(req, MHD_HTTP_CONTENT_TOO_LARGE, "too_large",
                            "the request body is larger than %u bytes", WEB_BODY_MAX);
                return;
        }
        if (req->route->flags & R_ANON) {
                req_dispatch(req);
                return;
        }
        auth_identify(req);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_size, void **con_cls) {
        Web *w = cls;
        Req *req = *con_cls;

        if (!req) {
                req = calloc(1, sizeof(*req));
                if (!req)
                        return MHD_NO;
                req->web = w;
                req->conn = conn;
                req->method = method;
                req->url = strdup(url);
                if (!req->url) {
                        free(req);
                        return MHD_NO;
                }
                format_peer(conn, req->peer, sizeof req->peer);
                *con_cls = req;
                req_prepare(req, url, method);
                /* too large: answer before the body (then libmicrohttpd closes) */
                if (req->ready && (req->status == MHD_HTTP_CONTENT_TOO_LARGE ||
                                   req->status == MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE))
                        return queue_response(req);
                return MHD_YES;
        }
        if (*upload_size > 0) {
                size_t n = *upload_size;
                *upload_size = 0;
                if (req->ready || req->body_too_large || req->body_len + n > WEB_BODY_MAX) {
                        req->body_too_large = !req->ready;
                        req->body_discarded += n;
                        return req->body_discarded > BODY_DISCARD_MAX ? MHD_NO : MHD_YES;
                }
                char *b = realloc(req->body, req->body_len + n + 1);
                if (!b)
                        return MHD_NO;
                memcpy(b + req->body_len, upload_data, n);
                req->body = b;
                req->body_len += n;
                req->body[req->body_len] = '\0';
                return MHD_YES;
        }
        if (req->queued)
                return MHD_YES;
        if (!req->ready && !req->started) {
                req->started = true;
                req_start(req);
        }
        if (req->ready || req->stream_response)
                return queue_response(req);
        if (!req->suspended) {
                req->suspended = true;
                waiting_add(req);
                MHD_suspend_connection(conn);
        }
        return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
        Req *req = *con_cls;
        *con_cls = NULL;
        req_free(req);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
        char line[512];
        (void) vsnprintf(line, sizeof line, fmt, ap);
        size_t n = strlen(line);
        while (n > 0 && line[n - 1] == '\n')
                line[--n] = '\0';
        log_debug("libmicrohttpd: %s", line);
}

static int mhd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int hex_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Percent-decoding of the path and query, in place; %00 stays as it is, so
 * no decoded path can end early at a NUL byte. */
static size_t unescape(void *cls, struct MHD_Connection *conn, char *s) {
        char *w = s;
        for (const char *r = s; *r;) {
                int hi, lo;
                if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 && (lo = hex_value(r[2])) >= 0 &&
                    (hi | lo) != 0) {
                        *w++ = (char) (hi * 16 + lo);
                        r += 3;
                } else
                        *w++ = *r++;
        }
        *w = '\0';
        return (size_t) (w - s);
}

static void mhd_rearm(Web *w, size_t i) {
        MHD_UNSIGNED_LONG_LONG t = 500;
        /* At most 500 ms even when libmicrohttpd has no timeout to ask for:
         * some of its work is taken up only on its next run, with no
         * descriptor of ours to announce it (the listen socket goes back
         * into its epoll set on the run after a connection below the limit
         * closed). */
        if (MHD_get_timeout(w->daemons[i], &t) == MHD_YES && t == 0) {
                /* work is waiting (a resumed connection, input already
                 * read): run again in this loop iteration */
                web_schedule(w);
                return;
        }
        t = MIN(t, (MHD_UNSIGNED_LONG_LONG) 500);
        /* a timer that fires up to 100 ms early or late is as good, and
         * reprogramming it per request is not */
        uint64_t now = now_ms(), due = now + t;
        if (w->mhd_due[i] && w->mhd_due[i] > now && w->mhd_due[i] <= due + 100 &&
            w->mhd_due[i] + 100 >= due)
                return;
        w->mhd_due[i] = due;
        (void) sd_event_source_set_time_relative(w->mhd_timer[i], t * 1000u);
        (void) sd_event_source_set_enabled(w->mhd_timer[i], SD_EVENT_ONESHOT);
}

void web_kick(Web *w) {
        for (size_t i = 0; i < w->n_daemons; i++) {
                (void) MHD_run(w->daemons[i]);
                mhd_rearm(w, i);
        }
}

/* Runs libmicrohttpd again while it has work waiting (at most
 * SETTLE_ROUNDS times; then the kick source brings it back after the loop
 * has looked at the sockets), and sends what was queued for vmmd. Called at
 * the end of every callback of ours that reads a socket, so that a request
 * goes to vmmd, and an answer to its client, in the loop iteration that
 * brought it: a deferred source would cost a loop iteration each (an
 * epoll_wait and sd-event's own checks) on the path of every request. */
void web_settle(Web *w) {
        for (unsigned n = 0; w->kick_wanted && n < SETTLE_ROUNDS; n++) {
                w->kick_wanted = false;
                web_kick(w);
        }
        if (!w->kick_wanted && w->kick)
                (void) sd_event_source_set_enabled(w->kick, SD_EVENT_OFF);
        vconn_flush_all(w);
}

static int mhd_kick(sd_event_source *s, void *userdata) {
        Web *w = userdata;
        w->kick_wanted = true;
        web_settle(w);
        return 0;
}

void web_schedule(Web *w) {
        w->kick_wanted = true;
        if (w->kick)
                (void) sd_event_source_set_enabled(w->kick, SD_EVENT_ONESHOT);
}

static int mhd_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Web *w = userdata;
        for (size_t i = 0; i < w->n_daemons; i++)
                if (w->mhd_io[i] == s) {
                        (void) MHD_run(w->daemons[i]);
                        mhd_rearm(w, i);
                }
        web_settle(w);
        return 0;
}

static int mhd_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        Web *w = userdata;
        for (size_t i = 0; i < w->n_daemons; i++)
                if (w->mhd_timer[i] == s) {
                        w->mhd_due[i] = 0;
                        (void) MHD_run(w->daemons[i]);
                        mhd_rearm(w, i);
                }
        web_settle(w);
        return 0;
}

static char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        if (m) {
                char chunk[4096];
                size_t k;
                while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
                        (void) fwrite(chunk, 1, k, m);
                (void) fclose(m);
        }
        (void) fclose(f);
        return buf;
}

int http_start(Web *w, int listen_fd, size_t i) {
        unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
        _cleanup_free_ char *cert = NULL, *key = NULL;
        if (w->config.tls_cert) {
                cert = read_file(w->config.tls_cert);
                key = read_file(w->config.tls_key);
                if (!cert || !key)
                        return log_error_errno(EINVAL,
                                               "Cannot read the TLS certificate %s or key %s",
                                               w->config.tls_cert, w->config.tls_key);
                flags |= MHD_USE_TLS;
        }
        struct MHD_OptionItem opts[] = {
                { MHD_OPTION_LISTEN_SOCKET, listen_fd, NULL },
                { MHD_OPTION_NOTIFY_COMPLETED, (intptr_t) on_completed, w },
                { MHD_OPTION_CONNECTION_TIMEOUT, w->config.idle_timeout_s, NULL },
                { MHD_OPTION_CONNECTION_LIMIT, w->config.max_connections, NULL },
                { MHD_OPTION_PER_IP_CONNECTION_LIMIT, w->config.max_connections_per_ip, NULL },
                { MHD_OPTION_CONNECTION_MEMORY_LIMIT, 16 * 1024, NULL },
                { MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t) unescape, NULL },
                { cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, cert },
                { cert ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, key },
                { MHD_OPTION_END, 0, NULL },
        };
        w->daemons[i] = MHD_start_daemon(flags, 0, NULL, NULL, on_request, w,
                                         MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                         MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
        if (!w->daemons[i])
                return log_error_errno(EINVAL, "libmicrohttpd refused to start (listen socket, "
                                       "TLS files or options)");
        const union MHD_DaemonInfo *di = MHD_get_daemon_info(w->daemons[i],
                                                              MHD_DAEMON_INFO_EPOLL_FD);
        if (!di)
                return log_error_errno(EINVAL, "libmicrohttpd has no epoll descriptor");
        int r = sd_event_add_io(w->event, &w->mhd_io[i], di->epoll_fd, EPOLLIN, mhd_io, w);
        if (r < 0)
                return log_error_errno(r, "Cannot watch libmicrohttpd: %s", strerror(-r));
        r = sd_event_add_time_relative(w->event, &w->mhd_timer[i], CLOCK_MONOTONIC, 0, 1,
                                       mhd_timer, w);
        if (r < 0)
                return log_error_errno(r, "Cannot add a timer: %s", strerror(-r));
        if (!w->kick) {
                r = sd_event_add_defer(w->event, &w->kick, mhd_kick, w);
                if (r < 0)
                        return log_error_errno(r, "Cannot add an event source: %s", strerror(-r));
                (void) sd_event_source_set_enabled(w->kick, SD_EVENT_OFF);
        }
        w->n_daemons = i + 1;
        w->tls = cert != NULL;
        mhd_rearm(w, i);
        return 0;
}

void http_fail_waiting(Web *w) {
        while (w->waiting) {
                Req *req = w->waiting;
                if (req->call) {
                        call_forget(req->call);
                        req->call = NULL;
                }
                auth_forget(req);
                reply_error(req, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                            "the gateway is stopping; try again in a moment");
                if (req->suspended) {
                        /* reply() did not resume it (it had answered already) */
                        req->suspended = false;
                        waiting_remove(req);
                        MHD_resume_connection(req->conn);
                }
        }
        web_kick(w);
}

void http_stop_all(Web *w) {
        w->kick = sd_event_source_disable_unref(w->kick);
        for (size_t i = 0; i < w->n_daemons; i++) {
                w->mhd_io[i] = sd_event_source_disable_unref(w->mhd_io[i]);
                w->mhd_timer[i] = sd_event_source_disable_unref(w->mhd_timer[i]);
                if (w->daemons[i])
                        MHD_stop_daemon(w->daemons[i]);
                w->daemons[i] = NULL;
        }
        w->n_daemons = 0;
}
