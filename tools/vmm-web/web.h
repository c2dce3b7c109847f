/* SPDX-License-Identifier: MIT */
/* vmm-web: the HTTP/JSON gateway in front of vmmd (HTTP.md, vmm-web(8)).
 *
 * One sd-event loop owns everything: libmicrohttpd's epoll descriptor, the
 * connections to vmmd (a small pool shared by every request, short-lived
 * ones for logins, one per watched session for the event streams) and the
 * timers. A request that needs vmmd is suspended in libmicrohttpd and
 * resumed when vmmd has answered. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <syslog.h>

#include <jansson.h>
#include <microhttpd.h>
#include <systemd/sd-event.h>

#include "shared/macro.h"
#include "vmm/client.h"

#define WEB_BODY_MAX          (64u * 1024u)
#define WEB_HEADERS_MAX       (8u * 1024u)
#define WEB_JSON_DEPTH_MAX    6
#define WEB_PATH_PARAMS_MAX   3
#define WEB_BASIC_TTL_MS      (5u * 60u * 1000u)

typedef struct Web Web;
typedef struct Req Req;
typedef struct Route Route;
typedef struct Pool Pool;
typedef struct Vconn Vconn;
typedef struct Call Call;
typedef struct Auth Auth;
typedef struct Sse Sse;
typedef struct Assets Assets;
typedef struct Login Login;
typedef struct Stream Stream;

/* ---- configuration (main.c) ---- */

typedef struct WebConfig {
        char **listen;              /* HOST:PORT, when not socket-activated */
        size_t n_listen;
        char *vmmd;                 /* HOST:PORT of vmmd */
        char *www_dir;              /* the page's files and openapi.json */
        char *tls_cert, *tls_key;   /* PEM files; TLS is off without them */
        unsigned pool_size;         /* persistent connections to vmmd */
        unsigned max_connections;
        unsigned max_connections_per_ip;
        unsigned idle_timeout_s;
        bool pass_peer;             /* send the client's address as `peer` at logins */
} WebConfig;

/* ---- the program (web.c) ---- */

struct Web {
        WebConfig config;
        sd_event *event;
        struct MHD_Daemon *daemons[8];
        sd_event_source *mhd_io[8];
        sd_event_source *mhd_timer[8];
        uint64_t mhd_due[8];        /* when each timer fires (ms, monotonic), 0 if off */
        sd_event_source *kick;      /* runs libmicrohttpd after resumes */
        bool kick_wanted;           /* libmicrohttpd has work waiting: web_settle() */
        sd_event_source *flush;     /* sends what was queued for vmmd */
        Vconn *dirty;               /* connections to vmmd with requests to send */
        size_t n_daemons;
        Pool *pool;
        Auth *auth;
        Sse *sse;
        Assets *assets;
        bool tls;
        bool stopping;
        uint64_t stop_started;
        unsigned suspended;         /* requests waiting for vmmd */
        Req *waiting;               /* those requests (a list, for the stop) */
        uint64_t requests;
};

int web_new(Web **ret, WebConfig *config);
Web *web_free(Web *w);
int web_run(Web *w);
/* Calls MHD_run on every daemon. */
void web_kick(Web *w);
/* Runs libmicrohttpd soon, from the loop: after MHD_resume_connection()
 * (an external event loop gets no wake-up of its own for that). */
void web_schedule(Web *w);
/* At the end of a callback: runs libmicrohttpd while it has work waiting
 * (a few times at most) and sends what was queued for vmmd. */
void web_settle(Web *w);
uint64_t now_ms(void);

/* ---- logging (log.c) ---- */

void log_set_max(int level);
int log_level_parse(const char *s);
int log_at(int prio, int error, const char *fmt, ...) _printf_(3, 4);
#define log_error_errno(e, ...)   log_at(LOG_ERR, (e), __VA_ARGS__)
#define log_warning_errno(e, ...) log_at(LOG_WARNING, (e), __VA_ARGS__)
#define log_error(...)   log_at(LOG_ERR, 0, __VA_ARGS__)
#define log_warning(...) log_at(LOG_WARNING, 0, __VA_ARGS__)
#define log_info(...)    log_at(LOG_INFO, 0, __VA_ARGS__)
#define log_debug(...)   log_at(LOG_DEBUG, 0, __VA_ARGS__)

/* ---- connections to vmmd (vconn.c) ---- */

/* Called once per request sent: m is the response, or NULL when the
 * connection failed first (error is then a negative errno). */
typedef void (*CallDone)(void *userdata, const VmmMessage *m, int error);
/* Notifications ([2, method, params]) on a connection. */
typedef void (*VconnNotify)(void *userdata, const VmmMessage *m);
/* The connection is gone (error < 0) after every pending call was failed. */
typedef void (*VconnClosed)(void *userdata, int error);

int vconn_new(Web *w, const char *address, VconnNotify notify, VconnClosed closed,
              void *userdata, Vconn **ret);
Vconn *vconn_free(Vconn *v);
/* Queue a request; params is a JSON object (or NULL for []); token, when
 * given, is added as the `token` param. ret_call (may be NULL) lets the
 * caller forget the call later (call_forget). */
int vconn_call(Vconn *v, const char *method, const json_t *params, const char *token,
               CallDone done, void *userdata, Call **ret_call);
size_t vconn_in_flight(const Vconn *v);
bool vconn_usable(const Vconn *v);
uint64_t vconn_last_used(const Vconn *v);
/* Sends the requests queued on every connection (once per loop iteration). */
void vconn_flush_all(Web *w);
void web_schedule_flush(Web *w);
/* The caller is no longer interested: its callback will not run. */
void call_forget(Call *c);

int pool_new(Web *w, Pool **ret);
Pool *pool_free(Pool *p);
int pool_call(Pool *p, const char *method, const json_t *params, const char *token,
              CallDone done, void *userdata, Call **ret_call);

/* ---- JSON (json.c) ---- */

int json_to_msgpack(msgpack_packer *pk, const json_t *j);
/* A result or event as JSON: times (key "time" or "..._at", integers of
 * Unix milliseconds) become RFC 3339 strings. */
json_t *json_from_msgpack(const msgpack_object *o);
/* "2026-12-06T18:00:00.000Z"; buf of at least 32 bytes. */
char *time_rfc3339(int64_t ms, char *buf, size_t size);
/* "18:00 UTC" (the same day) or "2026-12-07 18:00 UTC". */
char *time_human(int64_t ms, char *buf, size_t size);
size_t json_depth(const json_t *j);
/* Body text as a JSON object or NULL with *ret_error (static text). */
json_t *json_parse_body(const char *body, size_t len, char *err, size_t errsize,
                        bool *ret_too_deep);
const char *json_str(const json_t *o, const char *key);

/* ---- requests (http.c) ---- */

typedef enum AuthKind {
        AUTH_NONE,
        AUTH_COOKIE,
        AUTH_BEARER,
        AUTH_BASIC,
        _AUTH_KIND_MAX,
        _AUTH_KIND_INVALID = -1,
} AuthKind;

typedef void (*ReqStep)(Req *req, const VmmMessage *m);

struct Req {
        Web *web;
        struct MHD_Connection *conn;
        const Route *route;
        const char *method;         /* valid while the request lives (libmicrohttpd's) */
        char *url;
        char *path_params[WEB_PATH_PARAMS_MAX];
        char peer[64];
        bool head;

        char *body;
        size_t body_len;
        size_t body_discarded;
        bool body_too_large;
        json_t *json;               /* the parsed body (an object), or NULL */

        AuthKind auth;
        char token[VMM_TOKEN_LEN + 1];
        uint8_t basic_key[32];      /* keyed hash of Basic credentials */
        bool basic_waiting;         /* waits for a Basic login under way */
        Login *login;               /* a login of its own under way */
        bool retried;

        bool started, suspended, ready, queued, is_stream;
        Call *call;
        unsigned call_flags;
        ReqStep step;               /* what to do with the next vmmd answer */
        const char *rpc;            /* the vmmd method the route calls */
        json_t *params;             /* the params of that call */
        json_t *acc, *acc2;         /* multi-step handlers' accumulators */
        const char *page_key;       /* a whole list gathered page by page */
        void (*page_done)(Req *req);

        unsigned status;
        char *resp;
        size_t resp_len;
        const char *resp_type;
        const char *resp_cache;
        bool resp_persistent;       /* resp is not ours (a file in memory) */
        char *set_cookie;
        char *allow;
        char *etag;
        struct MHD_Response *stream_response;
        Stream *stream;
        Req *waiting_next, *waiting_prev;
};

int http_start(Web *w, int listen_fd, size_t index);
void http_stop_all(Web *w);
/* Answers every request still waiting for vmmd with 503 (at the stop). */
void http_fail_waiting(Web *w);

/* Build the response (one place): the request is answered once the access
 * handler runs again (a suspended request is resumed). body is taken. */
void reply(Req *req, unsigned status, const char *type, char *body, size_t len);
void reply_json(Req *req, unsigned status, json_t *j);   /* takes j */
/* data stays valid for the life of the program (a file in memory) */
void reply_static(Req *req, unsigned status, const char *type, const char *data, size_t len);
void reply_error(Req *req, unsigned status, const char *code, const char *fmt, ...)
        _printf_(4, 5);
/* A vmmd error response, mapped to its HTTP status. */
void reply_vmmd_error(Req *req, const VmmMessage *m);
/* A transport failure towards vmmd (502). */
void reply_unreachable(Req *req, int error);
/* Let libmicrohttpd answer a suspended request (its response is ready). */
void req_wake(Req *req);
/* HTTP status of a protocol error code. */
unsigned http_status_of(const char *code);
/* Send one vmmd call for this request with the caller's token; the answer
 * goes to step (errors are answered here unless step handles them: see
 * REQ_CALL_RAW). */
#define REQ_CALL_RAW (1u << 0)
int req_call(Req *req, const char *method, json_t *params, unsigned flags, ReqStep step);
const char *req_header(Req *req, const char *name);
const char *req_query(Req *req, const char *name);
bool req_wants_json(Req *req);
void req_set_cookie(Req *req, const char *token);
/* Continue a request whose identity is now known (auth.c calls it). */
void req_dispatch(Req *req);

/* ---- routes (routes.c, seed.c) ---- */

typedef void (*RouteHandler)(Req *req);

#define R_API     (1u << 0)   /* under /api/v1: documented in openapi.json */
#define R_SESSION (1u << 1)   /* needs an identity */
#define R_BODY    (1u << 2)   /* takes a JSON object body */
#define R_CREATED (1u << 3)   /* 201 on success */
#define R_ADMIN   (1u << 4)   /* vmmd serves it only with tcp_admin = yes */
#define R_SEED    (1u << 5)   /* a seed's route */
#define R_NOCSRF  (1u << 6)   /* no state change: no content-type rule */
#define R_ANON    (1u << 7)   /* no identity looked at (files, health, login) */
#define R_ASSET   (1u << 8)   /* matches only the page's own files */

struct Route {
        const char *method;
        const char *path;        /* segments; {name} a string, {name:u} an integer */
        RouteHandler handler;
        const char *rpc;         /* the vmmd method, for the generic handler */
        unsigned flags;
        const char *query;       /* accepted query params "name:s,limit:u,filter:s=all" */
        const char *summary;
};

extern const Route routes[];
extern const size_t n_routes;
/* The route for method and path; *ret_path_ok says a route has this path
 * (for 405), *ret_allow the methods it takes. */
const Route *route_find(const char *method, const char *path, const Assets *assets,
                        char **params, bool *ret_path_ok, char *allow, size_t allow_size);
void routes_print(void);
/* The generic handler: params from the path, the query and the body. */
void route_rpc(Req *req);
json_t *req_base_params(Req *req, bool with_body);

void seed_add_vm(Req *req);
void seed_update_vm(Req *req);
void seed_connect_vm(Req *req);
void seed_authorize_vm(Req *req);
void seed_deauthorize_vm(Req *req);
void seed_list_vms(Req *req);
void seed_list_disks(Req *req);
void seed_health(Req *req);
void lz_vms(Req *req);
void lz_add_vm(Req *req);
void lz_groups(Req *req);
void lz_group_add(Req *req);
void lz_delete_vm(Req *req);
void lz_delete_group(Req *req);
void lz_remove_vm(Req *req);
void lz_book(Req *req);
void lz_renew(Req *req);
void lz_cancel(Req *req);

/* ---- identity (auth.c) ---- */

int auth_new(Web *w, Auth **ret);
Auth *auth_free(Auth *a);
/* Works out who the request is (Authorization header, then cookie); ends in
 * req_dispatch() or an error reply. */
void auth_identify(Req *req);
/* The request's Basic session was refused: forget it. */
void auth_basic_drop(Req *req);
/* The request goes away: it waits for no login any more. */
void auth_forget(Req *req);
void handle_login(Req *req);
void handle_logout(Req *req);
void handle_me(Req *req);
void handle_password(Req *req);

/* ---- live events (sse.c, msg.c) ---- */

int sse_new(Web *w, Sse **ret);
Sse *sse_free(Sse *s);
void handle_events(Req *req);
/* Ends every stream (shutdown). */
void sse_stop(Sse *s);
void req_stream_gone(Req *req);
/* A sentence for people about an event (a map as vmmd sends it). */
char *event_sentence_mp(const msgpack_object *ev);

/* ---- files (assets.c) ---- */

int assets_load(const char *dir, Assets **ret);
Assets *assets_free(Assets *a);
bool assets_has(const Assets *a, const char *name);
void handle_static(Req *req);
void handle_openapi(Req *req);
