/* SPDX-License-Identifier: MIT */
/* The seeds' routes, with the meanings HTTP.md gives them: seed 002's
 * HTTP API (add_vm, update_vm, ... get_all_disks, health) and seed 003's
 * LoadZone page API (/vms, /add-vm, /groups, /book, ...). Each is a small
 * sequence of vmmd calls whose answer is reshaped into the seed's form. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

#define SEED_LIST_MAX 1000000   /* items gathered for one whole-list answer */

/* ---- helpers ---- */

static json_t *or_null(json_t *v) {
        return v ? v : json_null();
}

/* A new reference: v, or a new empty array (for "o" in json_pack). */
static json_t *or_empty(json_t *v) {
        return v ? json_incref(v) : json_array();
}

/* Copies the body, renaming keys: pairs of (from, to), NULL-terminated. */
static json_t *body_renamed(Req *req, const char *const *pairs) {
        json_t *p = req_base_params(req, true);
        if (!p)
                return NULL;
        for (const char *const *r = pairs; r && r[0]; r += 2) {
                json_t *v = json_object_get(p, r[0]);
                if (!v)
                        continue;
                json_incref(v);
                (void) json_object_del(p, r[0]);
                if (json_is_null(v) && strcmp(r[1], "group") == 0) {
                        json_decref(v);
                        continue;
                }
                (void) json_object_set_new(p, r[1], v);
        }
        return p;
}

/* Seed 002's disks [{"disk_id", "size"}] into vmmd's [{"id", "size"}]. */
static void disks_to_vmmd(json_t *p) {
        json_t *disks = json_object_get(p, "disks");
        size_t i;
        json_t *d;
        if (!json_is_array(disks))
                return;
        json_array_foreach(disks, i, d) {
                json_t *id = json_object_get(d, "disk_id");
                if (id && !json_object_get(d, "id")) {
                        json_incref(id);
                        (void) json_object_del(d, "disk_id");
                        (void) json_object_set_new(d, "id", id);
                }
        }
}

/* A disk in seed 002's shape: {"disk_id", "size", "vm_id"}. */
static json_t *seed_disk(const json_t *d, const char *vm_id) {
        return json_pack("{s:O,s:O,s:s}", "disk_id", or_null(json_object_get(d, "id")), "size",
                         or_null(json_object_get(d, "size")), "vm_id", vm_id ? vm_id : "");
}

/* A VM record in seed 002's shape: vm_id, ram, cpu, disks of
 * {"disk_id", "size", "vm_id"}. */
static json_t *seed_vm(const json_t *vm) {
        const char *vm_id = json_str(vm, "vm_id");
        json_t *disks = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(json_object_get(vm, "disks"), i, d)
                (void) json_array_append_new(disks, seed_disk(d, vm_id));
        return json_pack("{s:s,s:O,s:O,s:o}", "vm_id", vm_id ? vm_id : "", "ram",
                         or_null(json_object_get(vm, "ram")), "cpu",
                         or_null(json_object_get(vm, "cpu")), "disks", disks);
}

static json_t *message(const char *text, const json_t *result, const char *const *keys) {
        json_t *j = json_pack("{s:s}", "message", text);
        for (const char *const *k = keys; k && *k; k++) {
                json_t *v = json_object_get(result, *k);
                if (v)
                        (void) json_object_set(j, *k, v);
        }
        return j;
}

/* ---- whole lists, page by page ---- */

static void page_step(Req *req, const VmmMessage *m) {
        const msgpack_object *items = vmm_object_get(&m->result, req->page_key);
        const msgpack_object *next = vmm_object_get(&m->result, "next");
        if (!req->acc)
                req->acc = json_array();
        if (items && items->type == MSGPACK_OBJECT_ARRAY)
                for (uint32_t i = 0; i < items->via.array.size; i++)
                        (void) json_array_append_new(req->acc,
                                                     json_from_msgpack(&items->via.array.ptr[i]));
        if (next && next->type != MSGPACK_OBJECT_NIL && json_array_size(req->acc) < SEED_LIST_MAX &&
            items && items->type == MSGPACK_OBJECT_ARRAY && items->via.array.size > 0) {
                json_t *p = json_deep_copy(req->params);
                (void) json_object_set_new(p, "after", json_from_msgpack(next));
                (void) req_call(req, req->rpc, p, 0, page_step);
                return;
        }
        req->page_done(req);
}

static void page_all(Req *req, const char *method, json_t *params, const char *key,
                     void (*done)(Req *req)) {
        json_decref(req->acc);
        req->acc = json_array();
        req->page_key = key;
        req->page_done = done;
        (void) json_object_set_new(params, "limit", json_integer(VMM_PAGE_MAX));
        (void) req_call(req, method, params, 0, page_step);
}

/* ---- seed 002 ---- */

static void added(Req *req, const VmmMessage *m) {
        static const char *const keys[] = { "vm_id", "password", NULL };
        json_t *r = json_from_msgpack(&m->result);
        reply_json(req, MHD_HTTP_CREATED, message("VM added", r, keys));
        json_decref(r);
}

void seed_add_vm(Req *req) {
        json_t *p = req_base_params(req, true);
        if (!p)
                return;
        disks_to_vmmd(p);
        (void) req_call(req, "vm.create", p, 0, added);
}

static void updated(Req *req, const VmmMessage *m) {
        json_t *r = json_from_msgpack(&m->result);
        json_t *j = json_pack("{s:s,s:O,s:o}", "message", "VM updated", "vm_id",
                              or_null(json_object_get(r, "vm_id")), "vm", seed_vm(r));
        json_decref(r);
        reply_json(req, MHD_HTTP_OK, j);
}

void seed_update_vm(Req *req) {
        json_t *p = req_base_params(req, true);
        if (!p)
                return;
        disks_to_vmmd(p);
        (void) req_call(req, "vm.set", p, 0, updated);
}

static void connected_set(Req *req, const VmmMessage *m) {
        json_t *r = json_from_msgpack(&m->result);
        json_t *j = json_pack("{s:s,s:O,s:b,s:o}", "message", "VM connected", "vm_id",
                              or_null(json_object_get(r, "vm_id")), "created", 0, "vm",
                              seed_vm(r));
        json_decref(r);
        reply_json(req, MHD_HTTP_OK, j);
}

static void connected_create(Req *req, const VmmMessage *m) {
        if (m->error == VMM_E_EXISTS) {
                /* it exists: set the spec the body describes */
                (void) req_call(req, "vm.set", json_deep_copy(req->acc2), 0, connected_set);
                return;
        }
        if (m->error != VMM_OK) {
                reply_vmmd_error(req, m);
                return;
        }
        static const char *const keys[] = { "vm_id", "password", NULL };
        json_t *r = json_from_msgpack(&m->result);
        json_t *j = message("VM connected", r, keys);
        (void) json_object_set_new(j, "created", json_true());
        json_decref(r);
        reply_json(req, MHD_HTTP_CREATED, j);
}

void seed_connect_vm(Req *req) {
        json_t *p = req_base_params(req, true);
        if (!p)
                return;
        disks_to_vmmd(p);
        json_decref(req->acc2);
        req->acc2 = json_deep_copy(p);
        (void) req_call(req, "vm.create", p, REQ_CALL_RAW, connected_create);
}

static void authorized(Req *req, const VmmMessage *m) {
        static const char *const keys[] = { "vm_id", "access", NULL };
        json_t *r = json_from_msgpack(&m->result);
        reply_json(req, MHD_HTTP_OK, message("VM authorized", r, keys));
        json_decref(r);
}

static void deauthorized(Req *req, const VmmMessage *m) {
        static const char *const keys[] = { "vm_id", "access", NULL };
        json_t *r = json_from_msgpack(&m->result);
        reply_json(req, MHD_HTTP_OK, message("VM deauthorized", r, keys));
        json_decref(r);
}

void seed_authorize_vm(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "vm.approve", p, 0, authorized);
}

void seed_deauthorize_vm(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "vm.suspend", p, 0, deauthorized);
}

static void vms_listed(Req *req) {
        json_t *out = json_array();
        size_t i;
        json_t *vm;
        json_array_foreach(req->acc, i, vm)
                (void) json_array_append_new(out, seed_vm(vm));
        reply_json(req, MHD_HTTP_OK, out);
}

void seed_list_vms(Req *req) {
        const char *filter = strstr(req->route->path, "connected") ? "connected"
                             : strstr(req->route->path, "authorized") ? "authorized"
                                                                      : "all";
        page_all(req, "vm.list", json_pack("{s:s}", "filter", filter), "vms", vms_listed);
}

static void disks_listed(Req *req) {
        json_t *out = json_array();
        size_t i;
        json_t *d;
        json_array_foreach(req->acc, i, d)
                (void) json_array_append_new(out, seed_disk(d, json_str(d, "vm_id")));
        reply_json(req, MHD_HTTP_OK, out);
}

void seed_list_disks(Req *req) {
        page_all(req, "disk.list", json_object(), "disks", disks_listed);
}

static void health_done(void *userdata, const VmmMessage *m, int error) {
        Req *req = userdata;
        req->call = NULL;
        if (m && m->error == VMM_OK)
                reply(req, MHD_HTTP_OK, "text/plain; charset=utf-8", strdup("OK"), 2);
        else
                reply(req, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain; charset=utf-8",
                      strdup("vmmd does not answer\n"), strlen("vmmd does not answer\n"));
}

void seed_health(Req *req) {
        int r = pool_call(req->web->pool, "ping", NULL, NULL, health_done, req, &req->call);
        if (r < 0)
                health_done(req, NULL, r);
}

/* ---- seed 003 (LoadZone) ---- */

static void lz_groups_listed(Req *req) {
        json_t *vms = json_array(), *groups = json_array();
        size_t i;
        json_t *v, *g;
        json_array_foreach(req->acc2, i, v) {
                json_t *b = json_object_get(v, "booking");
                json_t *one = json_pack("{s:O,s:O,s:O,s:O}",
                                        "id", or_null(json_object_get(v, "vm_id")),
                                        "group", or_null(json_object_get(v, "group")),
                                        "booked_by", or_null(json_object_get(b, "user")),
                                        "expires_at", or_null(json_object_get(b, "expires_at")));
                (void) json_array_append_new(vms, one);
        }
        json_array_foreach(req->acc, i, g) {
                json_t *one = json_pack("{s:O,s:O,s:o}", "id", or_null(json_object_get(g, "id")),
                                        "name", or_null(json_object_get(g, "name")),
                                        "vm_ids", or_empty(json_object_get(g, "vm_ids")));
                (void) json_array_append_new(groups, one);
        }
        reply_json(req, MHD_HTTP_OK, json_pack("{s:o,s:o}", "vms", vms, "groups", groups));
}

static void lz_vms_listed(Req *req) {
        json_decref(req->acc2);
        req->acc2 = req->acc;
        req->acc = NULL;
        page_all(req, "group.list", json_object(), "groups", lz_groups_listed);
}

void lz_vms(Req *req) {
        page_all(req, "vm.list", json_pack("{s:s}", "filter", "all"), "vms", lz_vms_listed);
}

void lz_add_vm(Req *req) {
        static const char *const ren[] = { "id", "vm_id", "group_id", "group", NULL };
        json_t *p = body_renamed(req, ren);
        if (p)
                (void) req_call(req, "vm.create", p, 0, added);
}

static void record_created(Req *req, const VmmMessage *m) {
        reply_json(req, MHD_HTTP_CREATED, json_from_msgpack(&m->result));
}

static void record_ok(Req *req, const VmmMessage *m) {
        reply_json(req, MHD_HTTP_OK, json_from_msgpack(&m->result));
}

void lz_groups(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "group.create", p, 0, record_created);
}

void lz_group_add(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "group.add", p, 0, record_ok);
}

static void deleted(Req *req, const VmmMessage *m) {
        reply_json(req, MHD_HTTP_OK, json_pack("{s:s}", "message", "VM deleted"));
}

void lz_delete_vm(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "vm.delete", p, 0, deleted);
}

void lz_delete_group(Req *req) {
        static const char *const ren[] = { "group_id", "id", NULL };
        json_t *p = body_renamed(req, ren);
        if (p)
                (void) req_call(req, "group.delete", p, 0, record_ok);
}

void lz_remove_vm(Req *req) {
        static const char *const ren[] = { "group_id", "id", NULL };
        json_t *p = body_renamed(req, ren);
        if (!p)
                return;
        if (json_is_null(json_object_get(p, "id")))
                (void) json_object_del(p, "id");
        (void) req_call(req, "group.remove", p, 0, record_ok);
}

void lz_book(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "booking.create", p, 0, record_ok);
}

void lz_renew(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "booking.renew", p, 0, record_ok);
}

void lz_cancel(Req *req) {
        json_t *p = req_base_params(req, true);
        if (p)
                (void) req_call(req, "booking.cancel", p, 0, record_ok);
}
