/* SPDX-License-Identifier: MIT */
/* Who a request is: a Bearer token, Basic credentials, or the vmm_session
 * cookie; and the routes of identity (login, logout, me, password).
 *
 * Basic must not cost a password hash per request: the session a Basic login
 * opens is kept at most WEB_BASIC_TTL_MS under a keyed hash (BLAKE2b keyed
 * with a random key of this process) of the credentials, and dropped at the
 * first `unauthenticated`. Requests that arrive while that login is under way
 * wait for it instead of hashing again. Logins run on a short-lived
 * connection of their own, because user.auth attaches the connection it runs
 * on: a pool connection must never belong to anyone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "web.h"

#define BASIC_MAX 256
#define CREDENTIALS_MAX 2048

typedef struct BasicEntry {
        bool used, pending;
        uint8_t key[32];
        char token[VMM_TOKEN_LEN + 1];
        uint64_t created;
        Req **waiters;
        size_t n_waiters;
} BasicEntry;

struct Auth {
        Web *web;
        uint8_t hash_key[crypto_generichash_KEYBYTES];
        BasicEntry entries[BASIC_MAX];
};

typedef void (*LoginDone)(void *userdata, const VmmMessage *m, int error);

struct Login {
        Vconn *v;
        LoginDone done;
        void *userdata;
};

int auth_new(Web *w, Auth **ret) {
        Auth *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->web = w;
        randombytes_buf(a->hash_key, sizeof a->hash_key);
        *ret = a;
        return 0;
}

static void logout_token(Web *w, const char *token) {
        (void) pool_call(w->pool, "logout", NULL, token, NULL, NULL, NULL);
}

Auth *auth_free(Auth *a) {
        if (!a)
                return NULL;
        for (size_t i = 0; i < BASIC_MAX; i++) {
                BasicEntry *e = &a->entries[i];
                if (e->used && !e->pending && a->web->pool)
                        logout_token(a->web, e->token);
                free(e->waiters);
        }
        sodium_memzero(a, sizeof *a);
        free(a);
        return NULL;
}

/* ---- logins on a connection of their own ---- */

static void login_reply(void *userdata, const VmmMessage *m, int error) {
        Login *l = userdata;
        if (l->done)
                l->done(l->userdata, m, error);
        /* we are inside the connection's callback: it is freed after */
        vconn_free(l->v);
        free(l);
}

static int login_start(Web *w, const char *name, const char *password, const char *peer,
                       LoginDone done, void *userdata, Login **ret) {
        Login *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->done = done;
        l->userdata = userdata;
        int r = vconn_new(w, w->config.vmmd, NULL, NULL, NULL, &l->v);
        if (r < 0) {
                free(l);
                return r;
        }
        json_t *p = json_pack("{s:s,s:s}", "name", name, "password", password);
        if (p && peer && w->config.pass_peer)
                (void) json_object_set_new(p, "peer", json_string(peer));
        r = p ? vconn_call(l->v, "user.auth", p, NULL, login_reply, l, NULL) : -ENOMEM;
        json_decref(p);
        if (r < 0) {
                vconn_free(l->v);
                free(l);
                return r;
        }
        if (ret)
                *ret = l;
        return 0;
}

static bool token_ok(const char *t) {
        size_t n = strlen(t);
        if (n != VMM_TOKEN_LEN)
                return false;
        for (const char *p = t; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
                        return false;
        return true;
}

/* ---- Basic ---- */

static BasicEntry *basic_find(Auth *a, const uint8_t *key) {
        for (size_t i = 0; i < BASIC_MAX; i++)
                if (a->entries[i].used && sodium_memcmp(a->entries[i].key, key, 32) == 0)
                        return &a->entries[i];
        return NULL;
}

static BasicEntry *basic_slot(Auth *a) {
        BasicEntry *oldest = NULL;
        for (size_t i = 0; i < BASIC_MAX; i++) {
                BasicEntry *e = &a->entries[i];
                if (!e->used)
                        return e;
                if (!e->pending && (!oldest || e->created < oldest->created))
                        oldest = e;
        }
        if (oldest) {
                logout_token(a->web, oldest->token);
                free(oldest->waiters);
                memset(oldest, 0, sizeof *oldest);
        }
        return oldest;
}

static void basic_done(void *userdata, const VmmMessage *m, int error) {
        BasicEntry *e = userdata;
        Auth *a = NULL;
        Req **waiters = e->waiters;
        size_t n = e->n_waiters;
        e->waiters = NULL;
        e->n_waiters = 0;
        e->pending = false;

        const msgpack_object *tok = m && m->error == VMM_OK ? vmm_object_get(&m->result, "token")
                                                            : NULL;
        bool ok = tok && tok->type == MSGPACK_OBJECT_STR && tok->via.str.size == VMM_TOKEN_LEN;
        if (ok) {
                memcpy(e->token, tok->via.str.ptr, VMM_TOKEN_LEN);
                e->token[VMM_TOKEN_LEN] = '\0';
                e->created = now_ms();
        } else
                memset(e, 0, sizeof *e);
        for (size_t i = 0; i < n; i++) {
                Req *req = waiters[i];
                a = req->web->auth;
                req->basic_waiting = false;
                if (ok) {
                        memcpy(req->token, e->token, sizeof req->token);
                        req->auth = AUTH_BASIC;
                        req_dispatch(req);
                        continue;
                }
                req->rpc = "user.auth";
                if (!m)
                        reply_unreachable(req, error);
                else if (m->error == VMM_OK)
                        reply_error(req, MHD_HTTP_BAD_GATEWAY, "unavailable",
                                    "vmmd answered the login without a token");
                else
                        reply_vmmd_error(req, m);
        }
        (void) a;
        free(waiters);
}

static int basic_wait(BasicEntry *e, Req *req) {
        Req **w = realloc(e->waiters, (e->n_waiters + 1) * sizeof(Req *));
        if (!w)
                return -ENOMEM;
        e->waiters = w;
        e->waiters[e->n_waiters++] = req;
        req->basic_waiting = true;
        return 0;
}

void auth_forget(Req *req) {
        Auth *a = req->web->auth;
        if (req->login) {
                req->login->done = NULL;
                req->login = NULL;
        }
        if (!req->basic_waiting || !a)
                return;
        for (size_t i = 0; i < BASIC_MAX; i++) {
                BasicEntry *e = &a->entries[i];
                for (size_t k = 0; k < e->n_waiters; k++)
                        if (e->waiters[k] == req) {
                                e->waiters[k] = e->waiters[--e->n_waiters];
                                req->basic_waiting = false;
                                return;
                        }
        }
}

static void identify_basic(Req *req, const char *b64) {
        Auth *a = req->web->auth;
        char creds[CREDENTIALS_MAX + 1];
        size_t len = 0;
        if (strlen(b64) > CREDENTIALS_MAX * 4 / 3 + 4 ||
            sodium_base642bin((unsigned char *) creds, CREDENTIALS_MAX, b64, strlen(b64), NULL,
                              &len, NULL, sodium_base64_VARIANT_ORIGINAL) < 0) {
                reply_error(req, MHD_HTTP_UNAUTHORIZED, "unauthenticated",
                            "the Basic credentials are not valid base64");
                return;
        }
        creds[len] = '\0';
        char *colon = memchr(creds, ':', len);
        if (!colon || colon == creds || memchr(creds, '\0', len)) {
                sodium_memzero(creds, sizeof creds);
                reply_error(req, MHD_HTTP_UNAUTHORIZED, "unauthenticated",
                            "Basic credentials are name:password");
                return;
        }
        crypto_generichash(req->basic_key, sizeof req->basic_key, (const uint8_t *) creds, len,
                           a->hash_key, sizeof a->hash_key);
        BasicEntry *e = basic_find(a, req->basic_key);
        uint64_t now = now_ms();
        if (e && e->pending) {
                sodium_memzero(creds, sizeof creds);
                if (basic_wait(e, req) < 0)
                        reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                                    "out of memory");
                return;
        }
        if (e && now - e->created < WEB_BASIC_TTL_MS) {
                sodium_memzero(creds, sizeof creds);
                memcpy(req->token, e->token, sizeof req->token);
                req->auth = AUTH_BASIC;
                req_dispatch(req);
                return;
        }
        if (e) {
                /* kept long enough: end it and log in afresh */
                logout_token(req->web, e->token);
                free(e->waiters);
                memset(e, 0, sizeof *e);
        }
        e = basic_slot(a);
        if (!e) {
                sodium_memzero(creds, sizeof creds);
                reply_error(req, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited",
                            "too many Basic logins under way; try again in a moment");
                return;
        }
        *colon = '\0';
        e->used = e->pending = true;
        memcpy(e->key, req->basic_key, sizeof e->key);
        int r = basic_wait(e, req);
        if (r >= 0)
                r = login_start(req->web, creds, colon + 1, req->peer, basic_done, e, NULL);
        sodium_memzero(creds, sizeof creds);
        if (r < 0) {
                auth_forget(req);
                free(e->waiters);
                memset(e, 0, sizeof *e);
                req->rpc = "user.auth";
                reply_unreachable(req, r);
        }
}

void auth_basic_drop(Req *req) {
        Auth *a = req->web->auth;
        BasicEntry *e = basic_find(a, req->basic_key);
        if (e && !e->pending && strcmp(e->token, req->token) == 0) {
                free(e->waiters);
                memset(e, 0, sizeof *e);
        }
        req->auth = AUTH_NONE;
}

static const char *cookie_token(Req *req) {
        return MHD_lookup_connection_value(req->conn, MHD_COOKIE_KIND, "vmm_session");
}

void auth_identify(Req *req) {
        const char *h = req_header(req, "Authorization");
        req->auth = AUTH_NONE;
        if (h) {
                if (strncasecmp(h, "Bearer ", 7) == 0) {
                        const char *t = h + 7;
                        while (*t == ' ')
                                t++;
                        if (!token_ok(t)) {
                                reply_error(req, MHD_HTTP_UNAUTHORIZED, "unauthenticated",
                                            "the Bearer token is not a session token");
                                return;
                        }
                        memcpy(req->token, t, VMM_TOKEN_LEN + 1);
                        req->auth = AUTH_BEARER;
                        req_dispatch(req);
                        return;
                }
                if (strncasecmp(h, "Basic ", 6) == 0) {
                        const char *t = h + 6;
                        while (*t == ' ')
                                t++;
                        identify_basic(req, t);
                        return;
                }
                reply_error(req, MHD_HTTP_UNAUTHORIZED, "unauthenticated",
                            "use Authorization: Bearer TOKEN or Basic (name:password)");
                return;
        }
        const char *c = cookie_token(req);
        if (c && token_ok(c)) {
                memcpy(req->token, c, VMM_TOKEN_LEN + 1);
                req->auth = AUTH_COOKIE;
                req_dispatch(req);
                return;
        }
        if (c)
                req_set_cookie(req, NULL);
        if (req->route->flags & R_SESSION) {
                reply_error(req, MHD_HTTP_UNAUTHORIZED, "unauthenticated",
                            "log in first (POST /api/v1/login, or Basic or Bearer authorization)");
                return;
        }
        req_dispatch(req);
}

/* ---- routes ---- */

static void login_done(void *userdata, const VmmMessage *m, int error) {
        Req *req = userdata;
        req->login = NULL;
        req->rpc = "user.auth";
        if (!m) {
                reply_unreachable(req, error);
                return;
        }
        if (m->error != VMM_OK) {
                reply_vmmd_error(req, m);
                return;
        }
        json_t *j = json_from_msgpack(&m->result);
        const char *token = json_str(j, "token");
        if (!token || !token_ok(token)) {
                json_decref(j);
                reply_error(req, MHD_HTTP_BAD_GATEWAY, "unavailable",
                            "vmmd answered the login without a token");
                return;
        }
        req_set_cookie(req, token);
        reply_json(req, MHD_HTTP_OK, j);
}

void handle_login(Req *req) {
        if (!req_wants_json(req)) {
                reply_error(req, MHD_HTTP_FORBIDDEN, "forbidden",
                            "send the login as Content-Type: application/json");
                return;
        }
        const char *name = json_str(req->json, "name");
        const char *password = json_str(req->json, "password");
        if (!name || !password) {
                reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "give \"name\" and \"password\" as strings");
                return;
        }
        req->rpc = "user.auth";
        int r = login_start(req->web, name, password, req->peer, login_done, req, &req->login);
        if (r < 0)
                reply_unreachable(req, r);
}

static void logout_done(Req *req, const VmmMessage *m) {
        if (req->auth == AUTH_BASIC)
                auth_basic_drop(req);
        req_set_cookie(req, NULL);
        if (m->error != VMM_OK && m->error != VMM_E_UNAUTHENTICATED) {
                reply_vmmd_error(req, m);
                return;
        }
        reply_json(req, MHD_HTTP_OK, json_object());
}

void handle_logout(Req *req) {
        if (req->auth == AUTH_NONE) {
                req_set_cookie(req, NULL);
                reply_json(req, MHD_HTTP_OK, json_object());
                return;
        }
        (void) req_call(req, "logout", NULL, REQ_CALL_RAW, logout_done);
}

static void me_done(Req *req, const VmmMessage *m) {
        if (m->error == VMM_E_UNAUTHENTICATED) {
                if (req->auth == AUTH_COOKIE)
                        req_set_cookie(req, NULL);
                reply_json(req, MHD_HTTP_OK, json_pack("{s:b}", "authenticated", 0));
                return;
        }
        if (m->error != VMM_OK) {
                reply_vmmd_error(req, m);
                return;
        }
        json_t *j = json_from_msgpack(&m->result);
        if (!j) {
                reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        (void) json_object_set_new(j, "authenticated", json_true());
        json_t *name = json_object_get(j, "name");
        if (name)
                (void) json_object_set(j, "email", name);
        reply_json(req, MHD_HTTP_OK, j);
}

void handle_me(Req *req) {
        if (req->auth == AUTH_NONE) {
                reply_json(req, MHD_HTTP_OK, json_pack("{s:b}", "authenticated", 0));
                return;
        }
        (void) req_call(req, "whoami", NULL, REQ_CALL_RAW, me_done);
}

static void password_done(Req *req, const VmmMessage *m) {
        if (req->auth == AUTH_BASIC)
                auth_basic_drop(req);
        reply_json(req, MHD_HTTP_OK, json_object());
}

void handle_password(Req *req) {
        const char *old = json_str(req->json, "password");
        const char *new = json_str(req->json, "new_password");
        if (!old || !new) {
                reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "give \"password\" and \"new_password\" as strings");
                return;
        }
        json_t *p = json_pack("{s:s,s:s}", "password", old, "new_password", new);
        if (p && req->web->config.pass_peer)
                (void) json_object_set_new(p, "peer", json_string(req->peer));
        (void) req_call(req, "passwd", p, 0, password_done);
}
