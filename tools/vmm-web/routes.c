/* SPDX-License-Identifier: MIT */
/* The one request handler table: every route of HTTP.md (the /api/v1
 * resources, seed 002's and seed 003's routes, /health, the page) with its
 * handler, the vmmd method it calls, its flags and its query parameters.
 * openapi.json and vmm-web(8) describe the same rows (test_web_docs.py
 * checks them against `vmm-web --list-routes`). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

#define API  R_API | R_SESSION
#define APIB R_API | R_SESSION | R_BODY
#define SEED R_SEED | R_SESSION
#define SEEDB R_SEED | R_SESSION | R_BODY

#define PAGE_Q "limit:u,after:s"
#define PAGE_QU "limit:u,after:u"

const Route routes[] = {
        /* the page, health, the document */
        { "GET", "/", handle_static, NULL, R_ANON, NULL, "the web page" },
        { "GET", "/health", seed_health, "ping", R_ANON | R_SEED, NULL,
          "OK when vmmd answers, else 503" },
        { "GET", "/api/v1/openapi.json", handle_openapi, NULL, R_ANON | R_API, NULL,
          "this API as an OpenAPI 3 document" },

        /* identity */
        { "POST", "/api/v1/login", handle_login, "user.auth", R_ANON | R_API | R_BODY, NULL,
          "log in: a session token and the vmm_session cookie" },
        { "POST", "/api/v1/logout", handle_logout, "logout", R_API | R_BODY, NULL,
          "end the session" },
        { "GET", "/api/v1/me", handle_me, "whoami", R_API, NULL, "who is logged in" },
        { "POST", "/api/v1/me/password", handle_password, "passwd", APIB, NULL,
          "change one's own password" },
        { "GET", "/api/v1/whoami", route_rpc, "whoami", API, NULL, "the session's principal" },

        /* VMs */
        { "GET", "/api/v1/vms", route_rpc, "vm.list", API,
          "filter:s=all,limit:u,after:s,group:u,owner:s,booked_by:s,status:s", "list VMs" },
        { "POST", "/api/v1/vms", route_rpc, "vm.create", APIB | R_CREATED | R_ADMIN, NULL,
          "create a VM (admin; tcp_admin)" },
        { "GET", "/api/v1/vms/{vm_id}", route_rpc, "vm.get", API, NULL, "one VM" },
        { "PATCH", "/api/v1/vms/{vm_id}", route_rpc, "vm.set", APIB, NULL,
          "set a VM's spec and metadata (admin)" },
        { "DELETE", "/api/v1/vms/{vm_id}", route_rpc, "vm.delete", API | R_ADMIN, NULL,
          "delete a VM (admin; tcp_admin)" },
        { "POST", "/api/v1/vms/{vm_id}/approve", route_rpc, "vm.approve", APIB, NULL,
          "let a VM log in (admin)" },
        { "POST", "/api/v1/vms/{vm_id}/suspend", route_rpc, "vm.suspend", APIB, NULL,
          "end a VM's sessions and refuse its logins (admin)" },
        { "POST", "/api/v1/vms/{vm_id}/password", route_rpc, "vm.passwd", APIB | R_ADMIN, NULL,
          "set or generate a VM's password (admin; tcp_admin)" },
        { "GET", "/api/v1/vms/{vm_id}/booking", route_rpc, "booking.get", API, NULL,
          "a VM's booking" },
        { "POST", "/api/v1/vms/{vm_id}/booking", route_rpc, "booking.create",
          APIB | R_CREATED, NULL, "book a VM" },
        { "POST", "/api/v1/vms/{vm_id}/booking/renew", route_rpc, "booking.renew", APIB, NULL,
          "renew a booking" },
        { "DELETE", "/api/v1/vms/{vm_id}/booking", route_rpc, "booking.cancel", API, NULL,
          "cancel a booking" },
        { "GET", "/api/v1/vms/{vm_id}/monitor", route_rpc, "vm.monitor", API, NULL,
          "a VM's last report and the last hour of reports" },
        { "GET", "/api/v1/disks", route_rpc, "disk.list", API, PAGE_Q, "list disks" },

        /* groups */
        { "GET", "/api/v1/groups", route_rpc, "group.list", API, PAGE_QU, "list groups" },
        { "POST", "/api/v1/groups", route_rpc, "group.create", APIB | R_CREATED, NULL,
          "create a group (admin)" },
        { "GET", "/api/v1/groups/{id:u}", route_rpc, "group.get", API, NULL, "one group" },
        { "PATCH", "/api/v1/groups/{id:u}", route_rpc, "group.rename", APIB, NULL,
          "rename a group (admin)" },
        { "DELETE", "/api/v1/groups/{id:u}", route_rpc, "group.delete", API, NULL,
          "delete a group; its VMs stay (admin)" },
        { "POST", "/api/v1/groups/{id:u}/vms", route_rpc, "group.add", APIB, NULL,
          "move VMs into a group (admin)" },
        { "DELETE", "/api/v1/groups/{id:u}/vms/{vm_id}", route_rpc, "group.remove", API, NULL,
          "take a VM out of a group (admin)" },

        /* bookings and history */
        { "GET", "/api/v1/bookings", route_rpc, "booking.list", API,
          "user:s,group:u,limit:u,after:s", "active bookings" },
        { "POST", "/api/v1/bookings", route_rpc, "booking.create", APIB | R_CREATED, NULL,
          "book a VM, or a free VM of a group" },
        { "GET", "/api/v1/history", route_rpc, "booking.history", API,
          "user:s,vm_id:s,limit:u,after:u", "booking history, newest first" },

        /* users */
        { "GET", "/api/v1/users", route_rpc, "user.list", API, PAGE_Q, "list users (admin)" },
        { "POST", "/api/v1/users", route_rpc, "user.create", APIB | R_CREATED, NULL,
          "create a user (admin)" },
        { "GET", "/api/v1/users/{name}", route_rpc, "user.get", API, NULL, "one user (admin)" },
        { "PATCH", "/api/v1/users/{name}", route_rpc, "user.set", APIB, NULL,
          "change a user's role or password (admin)" },
        { "DELETE", "/api/v1/users/{name}", route_rpc, "user.delete", API, NULL,
          "delete a user (admin)" },

        /* OS catalog */
        { "GET", "/api/v1/os", route_rpc, "os.list", API, NULL, "the OS catalog" },
        { "POST", "/api/v1/os", route_rpc, "os.create", APIB | R_CREATED, NULL,
          "add an OS (admin)" },
        { "DELETE", "/api/v1/os/{id:u}", route_rpc, "os.delete", API, NULL,
          "remove an OS (admin)" },

        /* VM requests */
        { "GET", "/api/v1/requests", route_rpc, "request.list", API, "state:s,limit:u,after:u",
          "VM requests (a user sees its own)" },
        { "POST", "/api/v1/requests", route_rpc, "request.create", APIB | R_CREATED, NULL,
          "file a VM request" },
        { "POST", "/api/v1/requests/{id:u}/approve", route_rpc, "request.approve", APIB, NULL,
          "approve a request: creates its VMs (admin)" },
        { "POST", "/api/v1/requests/{id:u}/reject", route_rpc, "request.reject", APIB, NULL,
          "reject a request (admin)" },
        { "POST", "/api/v1/requests/{id:u}/cancel", route_rpc, "request.cancel", APIB, NULL,
          "cancel one's own pending request" },

        /* sessions (admin; tcp_admin) */
        { "GET", "/api/v1/sessions", route_rpc, "session.list", API | R_ADMIN,
          "vm_id:s,user:s,limit:u,after:s", "list sessions (admin; tcp_admin)" },
        { "POST", "/api/v1/sessions/revoke", route_rpc, "session.revoke", APIB | R_ADMIN, NULL,
          "end sessions by vm_id, user or id (admin; tcp_admin)" },

        /* live events */
        { "GET", "/api/v1/events", handle_events, "events.watch", API, NULL,
          "Server-Sent Events: what the user may see, with Last-Event-ID replay" },

        /* seed 002 */
        { "POST", "/add_vm", seed_add_vm, "vm.create", SEEDB | R_CREATED | R_ADMIN, NULL,
          "create a described VM" },
        { "POST", "/update_vm", seed_update_vm, "vm.set", SEEDB, NULL, "set a VM's spec" },
        { "POST", "/connect_vm", seed_connect_vm, "vm.create", SEEDB | R_ADMIN, NULL,
          "create the VM, or set its spec when it exists" },
        { "POST", "/authorize_vm", seed_authorize_vm, "vm.approve", SEEDB, NULL, "approve a VM" },
        { "POST", "/deauthorize_vm", seed_deauthorize_vm, "vm.suspend", SEEDB, NULL,
          "suspend a VM" },
        { "GET", "/get_all_vms", seed_list_vms, "vm.list", SEED, NULL, "every VM" },
        { "GET", "/get_connected_vms", seed_list_vms, "vm.list", SEED, NULL, "connected VMs" },
        { "GET", "/get_authorized_vms", seed_list_vms, "vm.list", SEED, NULL, "authorized VMs" },
        { "GET", "/get_all_disks", seed_list_disks, "disk.list", SEED, NULL, "every disk" },

        /* seed 003 (LoadZone) */
        { "GET", "/vms", lz_vms, "vm.list", SEED, NULL, "the pool and its groups" },
        { "GET", "/me", handle_me, "whoami", R_SEED, NULL, "who is logged in" },
        { "POST", "/add-vm", lz_add_vm, "vm.create", SEEDB | R_ADMIN, NULL, "create a VM" },
        { "POST", "/groups", lz_groups, "group.create", SEEDB, NULL, "create a group" },
        { "POST", "/groups/{id:u}/add-existing-vms", lz_group_add, "group.add", SEEDB, NULL,
          "move VMs into a group" },
        { "POST", "/delete-vm", lz_delete_vm, "vm.delete", SEEDB | R_ADMIN, NULL, "delete a VM" },
        { "POST", "/delete-group", lz_delete_group, "group.delete", SEEDB, NULL,
          "delete a group" },
        { "POST", "/remove-vm-from-group", lz_remove_vm, "group.remove", SEEDB, NULL,
          "take a VM out of its group" },
        { "POST", "/book", lz_book, "booking.create", SEEDB, NULL, "book a VM" },
        { "POST", "/renew", lz_renew, "booking.renew", SEEDB, NULL, "renew a booking" },
        { "POST", "/cancel", lz_cancel, "booking.cancel", SEEDB, NULL, "cancel a booking" },

        /* the page's other files (/app.js, /style.css, /icon.svg, ...) */
        { "GET", "/{file}", handle_static, NULL, R_ANON | R_ASSET, NULL, "the page's files" },
};
const size_t n_routes = ELEMENTSOF(routes);

/* Next segment of a path: [*p, end) without the '/'; advances *p. */
static bool next_segment(const char **p, const char **ret_start, size_t *ret_len) {
        if (**p != '/')
                return false;
        const char *s = *p + 1;
        const char *e = strchrnul(s, '/');
        *ret_start = s;
        *ret_len = (size_t) (e - s);
        *p = e;
        return true;
}

/* Matches path against a route's pattern; fills params (taken on success). */
static bool path_match(const char *pattern, const char *path, const Assets *assets,
                       char **params) {
        const char *pp = pattern, *up = path;
        size_t n = 0;
        char *found[WEB_PATH_PARAMS_MAX] = { NULL };

        if (strcmp(pattern, "/") == 0)
                return strcmp(path, "/") == 0;
        for (;;) {
                const char *ps, *us;
                size_t pl, ul;
                bool pm = next_segment(&pp, &ps, &pl), um = next_segment(&up, &us, &ul);
                if (!pm || !um) {
                        if (pm == um && *pp == '\0' && *up == '\0')
                                break;
                        goto fail;
                }
                if (pl > 0 && ps[0] == '{') {
                        if (ul == 0 || n >= WEB_PATH_PARAMS_MAX)
                                goto fail;
                        found[n] = strndup(us, ul);
                        if (!found[n])
                                goto fail;
                        n++;
                } else if (pl != ul || memcmp(ps, us, ul) != 0)
                        goto fail;
        }
        for (size_t i = 0; i < n; i++)
                params[i] = found[i];
        return true;
fail:
        for (size_t i = 0; i < n; i++)
                free(found[i]);
        return false;
}

const Route *route_find(const char *method, const char *path, const Assets *assets,
                        char **params, bool *ret_path_ok, char *allow, size_t allow_size) {
        const Route *hit = NULL;
        allow[0] = '\0';
        *ret_path_ok = false;
        for (size_t i = 0; i < n_routes; i++) {
                const Route *rt = &routes[i];
                char *tmp[WEB_PATH_PARAMS_MAX] = { NULL };
                if (!path_match(rt->path, path, assets, tmp))
                        continue;
                if ((rt->flags & R_ASSET) && !assets_has(assets, path + 1)) {
                        for (size_t k = 0; k < WEB_PATH_PARAMS_MAX; k++)
                                free(tmp[k]);
                        continue;
                }
                *ret_path_ok = true;
                size_t used = strlen(allow);
                (void) snprintf(allow + used, allow_size - used, "%s%s", used ? ", " : "",
                                rt->method);
                if (!hit && strcmp(rt->method, method) == 0) {
                        hit = rt;
                        memcpy(params, tmp, sizeof tmp);
                } else
                        for (size_t k = 0; k < WEB_PATH_PARAMS_MAX; k++)
                                free(tmp[k]);
        }
        return hit;
}

void routes_print(void) {
        for (size_t i = 0; i < n_routes; i++) {
                const Route *rt = &routes[i];
                printf("%s %s %s %s%s%s%s\n", rt->method, rt->path, rt->rpc ? rt->rpc : "-",
                       rt->flags & R_API ? "api" : rt->flags & R_SEED ? "seed" : "page",
                       rt->flags & R_ADMIN ? ",tcp_admin" : "",
                       rt->flags & R_CREATED ? ",201" : "", rt->flags & R_SESSION ? ",login" : "");
        }
}

/* ---- the generic handler ---- */

static bool parse_uint(const char *s, json_int_t *ret) {
        if (!s || !*s || strlen(s) > 19)
                return false;
        json_int_t v = 0;
        for (const char *p = s; *p; p++) {
                if (*p < '0' || *p > '9')
                        return false;
                v = v * 10 + (*p - '0');
        }
        *ret = v;
        return true;
}

/* Looks name up in a spec "a:s,b:u=3"; fills type and default. */
static bool query_spec(const char *spec, const char *name, char *ret_type, char *def,
                       size_t def_size) {
        size_t n = strlen(name);
        for (const char *p = spec; p && *p;) {
                const char *end = strchrnul(p, ',');
                const char *colon = memchr(p, ':', (size_t) (end - p));
                if (colon && (size_t) (colon - p) == n && memcmp(p, name, n) == 0) {
                        *ret_type = colon[1];
                        def[0] = '\0';
                        if (colon[2] == '=')
                                (void) snprintf(def, def_size, "%.*s", (int) (end - colon - 3),
                                                colon + 3);
                        return true;
                }
                p = *end ? end + 1 : end;
        }
        return false;
}

typedef struct QueryCheck {
        Req *req;
        json_t *params;
        bool failed;
} QueryCheck;

static enum MHD_Result query_item(void *cls, enum MHD_ValueKind kind, const char *key,
                                  const char *value) {
        QueryCheck *q = cls;
        char type, def[32];
        json_int_t v;
        if (q->failed)
                return MHD_NO;
        const char *spec = q->req->route->query;
        if (!spec || !query_spec(spec, key, &type, def, sizeof def)) {
                reply_error(q->req, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "unknown query parameter '%.64s'", key);
                q->failed = true;
                return MHD_NO;
        }
        if (!value || !*value)
                return MHD_YES;
        if (type == 'u') {
                if (!parse_uint(value, &v)) {
                        reply_error(q->req, MHD_HTTP_BAD_REQUEST, "bad_request",
                                    "query parameter '%s' must be a whole number", key);
                        q->failed = true;
                        return MHD_NO;
                }
                (void) json_object_set_new(q->params, key, json_integer(v));
        } else if (json_object_set_new(q->params, key, json_string(value)) < 0) {
                reply_error(q->req, MHD_HTTP_BAD_REQUEST, "bad_request",
                            "query parameter '%s' is not valid UTF-8", key);
                q->failed = true;
                return MHD_NO;
        }
        return MHD_YES;
}

json_t *req_base_params(Req *req, bool with_body) {
        const Route *rt = req->route;
        json_t *p = with_body && req->json ? json_deep_copy(req->json) : json_object();
        if (!p) {
                reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return NULL;
        }
        /* defaults of the query, then what the query says */
        for (const char *s = rt->query; s && *s;) {
                const char *end = strchrnul(s, ',');
                const char *eq = memchr(s, '=', (size_t) (end - s));
                const char *colon = memchr(s, ':', (size_t) (end - s));
                if (eq && colon) {
                        _cleanup_free_ char *k = strndup(s, (size_t) (colon - s));
                        _cleanup_free_ char *v = strndup(eq + 1, (size_t) (end - eq - 1));
                        if (k && v && !json_object_get(p, k))
                                (void) json_object_set_new(p, k, json_string(v));
                }
                s = *end ? end + 1 : end;
        }
        QueryCheck q = { .req = req, .params = p };
        (void) MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_item, &q);
        if (q.failed) {
                json_decref(p);
                return NULL;
        }
        /* the address's own parts win over the body */
        size_t n = 0;
        for (const char *s = strchr(rt->path, '{'); s; s = strchr(s + 1, '{')) {
                const char *close = strchr(s, '}');
                const char *colon = memchr(s, ':', (size_t) (close - s));
                const char *name_end = colon ? colon : close;
                _cleanup_free_ char *name = strndup(s + 1, (size_t) (name_end - s - 1));
                const char *value = req->path_params[n++];
                if (!name || !value)
                        break;
                if (colon && colon[1] == 'u') {
                        json_int_t v;
                        if (!parse_uint(value, &v)) {
                                reply_error(req, MHD_HTTP_NOT_FOUND, "not_found",
                                            "there is nothing at this address ('%.64s' is not a "
                                            "number)", value);
                                json_decref(p);
                                return NULL;
                        }
                        (void) json_object_set_new(p, name, json_integer(v));
                } else if (json_object_set_new(p, name, json_string(value)) < 0) {
                        reply_error(req, MHD_HTTP_NOT_FOUND, "not_found",
                                    "there is nothing at this address");
                        json_decref(p);
                        return NULL;
                }
        }
        return p;
}

static void rpc_done(Req *req, const VmmMessage *m) {
        unsigned status = req->route->flags & R_CREATED ? MHD_HTTP_CREATED : MHD_HTTP_OK;
        reply_json(req, status, json_from_msgpack(&m->result));
}

void route_rpc(Req *req) {
        json_t *p = req_base_params(req, true);
        if (!p)
                return;
        (void) req_call(req, req->route->rpc, p, 0, rpc_done);
}
