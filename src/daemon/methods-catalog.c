/* SPDX-License-Identifier: MIT */
/* The OS catalog (os.create, list, delete) and VM requests (request.create,
 * list, approve, reject, cancel), seed 004. Approving a request creates its
 * VMs and their passwords in the same transaction as the request's change. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"
#include "shared/clock.h"
#include "shared/mpout.h"
#include "shared/secret.h"

static const char *const state_names[] = { "pending", "approved", "rejected", "cancelled", NULL };

typedef struct CatalogParams {
        ParamUint id;
        ParamStr name, version, iso, qcow2, description, reason, state;
        ParamUint ram, cpu, os_id, count;
        ParamList disks, vm_ids;
        ParamUint limit, after;
} CatalogParams;

typedef struct CatalogState {
        StoreOs os;
        StoreRequest rq;
        char passwords[VMM_REQUEST_COUNT_MAX][SECRET_GEN_PASSWORD_LEN + 1];
        char hashes[VMM_REQUEST_COUNT_MAX][STORE_PWHASH_MAX];
        char vm_ids[VMM_REQUEST_COUNT_MAX][VMM_VM_ID_MAX + 1];
        uint32_t n_vms;
        StoreConflict conflict;
} CatalogState;

static void catalog_state_done(void *p) {
        CatalogState *st = p;
        secret_wipe(st->passwords, sizeof st->passwords);
        secret_wipe(st->hashes, sizeof st->hashes);
}

static void str_item(const msgpack_object *o, char *dst, size_t cap) {
        ParamStr s = { .set = true, .ptr = o->via.str.ptr, .len = o->via.str.size };
        pstr_copy(dst, cap, &s);
}

/* ---- the OS catalog ---- */

static int pack_os(msgpack_packer *pk, const StoreOs *os) {
        if (msgpack_pack_map(pk, 6) || mp_kv_u64(pk, "id", os->id) ||
            mp_kv_str(pk, "name", os->name) || mp_kv_str(pk, "version", os->version) ||
            mp_kv_str(pk, "iso", os->iso[0] ? os->iso : NULL) ||
            mp_kv_str(pk, "qcow2", os->qcow2[0] ? os->qcow2 : NULL) ||
            mp_kv_str(pk, "description", os->description))
                return -ENOMEM;
        return 0;
}

static int os_create_write(Request *r, StoreTxn *t) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        CatalogState *st = STATE(r, CatalogState);
        int q;

        st->os = (StoreOs) { 0 };
        pstr_copy(st->os.name, sizeof st->os.name, &p->name);
        pstr_copy(st->os.version, sizeof st->os.version, &p->version);
        if (p->iso.set)
                pstr_copy(st->os.iso, sizeof st->os.iso, &p->iso);
        if (p->qcow2.set)
                pstr_copy(st->os.qcow2, sizeof st->os.qcow2, &p->qcow2);
        if (p->description.set)
                pstr_copy(st->os.description, sizeof st->os.description, &p->description);
        q = store_os_create(t, &st->os);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "os.created", .has_id = true,
                                              .id = st->os.id });
}

static int os_create_done(Request *r) {
        CatalogState *st = STATE(r, CatalogState);
        msgpack_sbuffer sb;
        msgpack_packer pk;

        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "added OS %" PRIu64 " (%s %s)", st->os.id,
                   st->os.name, st->os.version);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        return reply_packed(r, &sb, pack_os(&pk, &st->os) < 0);
}

static int os_delete_write(Request *r, StoreTxn *t) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        int q = store_os_delete(t, p->id.v);

        if (q == -ENOENT)
                return rpc_fail(r, VMM_E_NOT_FOUND, "no OS %" PRIu64 " in the catalog", p->id.v);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "os.deleted", .has_id = true,
                                              .id = p->id.v });
}

static int os_delete_done(Request *r) {
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "removed OS %" PRIu64 " from the catalog",
                   PARAMS(r, CatalogParams)->id.v);
        rpc_reply(r, NULL, 0);
        return RPC_REPLIED;
}

static int os_list_one(void *userdata, const StoreOs *os) {
        msgpack_sbuffer *items = userdata;
        msgpack_packer pk;

        msgpack_packer_init(&pk, items, msgpack_sbuffer_write);
        return pack_os(&pk, os);
}

typedef struct Count {
        uint32_t n;
} Count;

static int os_count(void *userdata, const StoreOs *os) {
        ((Count *) userdata)->n++;
        return 0;
}

static int os_list_start(Request *r) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        StoreTxn *t = NULL;
        Count c = { 0 };
        int q;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = store_os_foreach(t, os_count, &c);
                if (q >= 0)
                        q = msgpack_pack_map(&pk, 1) || mp_str(&pk, "os") ||
                            msgpack_pack_array(&pk, c.n) ? -ENOMEM : 0;
                if (q >= 0)
                        q = store_os_foreach(t, os_list_one, &sb);
                store_read_end(t);
        }
        if (q < 0) {
                msgpack_sbuffer_destroy(&sb);
                return q;
        }
        return reply_packed(r, &sb, false);
}

/* ---- requests ---- */

static int pack_request(msgpack_packer *pk, const StoreRequest *rq) {
        if (msgpack_pack_map(pk, 14) || mp_kv_u64(pk, "id", rq->id) ||
            mp_kv_str(pk, "requester", rq->requester) ||
            mp_kv_str(pk, "description", rq->description) || mp_kv_u64(pk, "ram", rq->ram) ||
            mp_kv_u64(pk, "cpu", rq->cpu) || mp_str(pk, "disks") ||
            msgpack_pack_array(pk, rq->n_disks))
                return -ENOMEM;
        for (uint32_t i = 0; i < rq->n_disks; i++)
                if (msgpack_pack_uint64(pk, rq->disks[i]))
                        return -ENOMEM;
        if ((rq->os_id ? mp_kv_u64(pk, "os_id", rq->os_id) : mp_kv_nil(pk, "os_id")) ||
            mp_kv_u64(pk, "count", rq->count) ||
            mp_kv_str(pk, "state", state_names[rq->state % _STORE_REQUEST_STATE_MAX]) ||
            mp_kv_i64(pk, "created_at", rq->created_at) ||
            (rq->decided_at < 0 ? mp_kv_nil(pk, "decided_at")
                                : mp_kv_i64(pk, "decided_at", rq->decided_at)) ||
            mp_kv_str(pk, "decided_by", rq->decided_by[0] ? rq->decided_by : NULL) ||
            mp_kv_str(pk, "reason", rq->reason[0] ? rq->reason : NULL) ||
            mp_str(pk, "vm_ids") || msgpack_pack_array(pk, rq->n_vm_ids))
                return -ENOMEM;
        for (uint32_t i = 0; i < rq->n_vm_ids; i++)
                if (mp_str(pk, rq->vm_ids[i]))
                        return -ENOMEM;
        return 0;
}

static int request_event(Request *r, StoreTxn *t, const char *type, const StoreRequest *rq) {
        return events_append(r, t, &(Event) { .type = type, .has_id = true, .id = rq->id,
                                              .requester = rq->requester });
}

static int request_create_write(Request *r, StoreTxn *t) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        CatalogState *st = STATE(r, CatalogState);
        StoreRequest *rq = &st->rq;
        int q;

        *rq = (StoreRequest) { .decided_at = -1 };
        snprintf(rq->requester, sizeof rq->requester, "%s", r->caller.name);
        pstr_copy(rq->description, sizeof rq->description, &p->description);
        rq->ram = (uint32_t) p->ram.v;
        rq->cpu = (uint32_t) p->cpu.v;
        rq->n_disks = p->disks.set ? p->disks.n : 0;
        for (uint32_t i = 0; i < rq->n_disks; i++)
                rq->disks[i] = p->disks.items[i].via.u64;
        rq->os_id = p->os_id.v;
        rq->count = p->count.set ? (uint32_t) p->count.v : 1;
        rq->created_at = now_ms();
        if (rq->os_id) {
                q = store_os_get(t, rq->os_id, &st->os);
                if (q == -ENOENT)
                        return rpc_fail(r, VMM_E_NOT_FOUND, "no OS %" PRIu64 " in the catalog",
                                        rq->os_id);
                if (q < 0)
                        return q;
        }
        q = store_request_create(t, rq);
        return q < 0 ? q : request_event(r, t, "request.created", rq);
}

/* The request, pending, in st->rq. */
static int pending_request(Request *r, StoreTxn *t, uint64_t id) {
        StoreRequest *rq = &STATE(r, CatalogState)->rq;
        int q = store_request_get(t, id, rq);

        if (q == -ENOENT)
                return rpc_fail(r, VMM_E_NOT_FOUND, "no request %" PRIu64, id);
        if (q < 0)
                return q;
        if (rq->state != STORE_REQUEST_PENDING)
                return rpc_fail(r, VMM_E_CONFLICT, "request %" PRIu64 " is %s, not pending", id,
                                state_names[rq->state % _STORE_REQUEST_STATE_MAX]);
        return 0;
}

static void decided(Request *r, StoreRequest *rq, int state) {
        rq->state = (uint8_t) state;
        rq->decided_at = now_ms();
        snprintf(rq->decided_by, sizeof rq->decided_by, "%s", r->caller.name);
}

/* The request exists and asks for as many VMs as vm_ids names (bad_request
 * otherwise, first in the errors table's order after its absence). */
static int approve_check(Request *r, StoreTxn *t) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        StoreRequest *rq = &STATE(r, CatalogState)->rq;
        int q = store_request_get(t, p->id.v, rq);

        if (q == -ENOENT)
                return rpc_fail(r, VMM_E_NOT_FOUND, "no request %" PRIu64, p->id.v);
        if (q < 0)
                return q;
        if (p->vm_ids.n != rq->count)
                return rpc_fail(r, VMM_E_BAD_REQUEST, "request %" PRIu64 " asks for %" PRIu32
                                " VMs: give that many vm_ids", rq->id, rq->count);
        return 0;
}

static int approve_start(Request *r) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        CatalogState *st = STATE(r, CatalogState);
        StoreTxn *t = NULL;
        int q;

        /* an id given twice is bad_request, before anything is looked up */
        for (uint32_t i = 0; i < p->vm_ids.n; i++)
                for (uint32_t j = 0; j < i; j++)
                        if (p->vm_ids.items[i].via.str.size == p->vm_ids.items[j].via.str.size &&
                            memcmp(p->vm_ids.items[i].via.str.ptr, p->vm_ids.items[j].via.str.ptr,
                                   p->vm_ids.items[i].via.str.size) == 0)
                                return rpc_fail(r, VMM_E_BAD_REQUEST, "vm_ids: '%.*s' given twice",
                                                (int) p->vm_ids.items[i].via.str.size,
                                                p->vm_ids.items[i].via.str.ptr);
        /* before any password is hashed: a wrong count or a missing request
         * costs nothing */
        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                return q;
        q = approve_check(r, t);
        store_read_end(t);
        if (q < 0)
                return q;
        st->n_vms = p->vm_ids.n;        /* = the request's count, <= VMM_REQUEST_COUNT_MAX */
        for (uint32_t i = 0; i < st->n_vms; i++) {
                str_item(&p->vm_ids.items[i], st->vm_ids[i], sizeof st->vm_ids[i]);
                secret_password_generate(st->passwords[i]);
        }
        return RPC_NEXT;
}

static int approve_hash(Request *r) {
        CatalogState *st = STATE(r, CatalogState);
        int q = 0;

        for (uint32_t i = 0; q >= 0 && i < st->n_vms; i++)
                q = secret_password_hash(st->passwords[i], strlen(st->passwords[i]),
                                         st->hashes[i]);
        return q;
}

static int approve_write(Request *r, StoreTxn *t) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        CatalogState *st = STATE(r, CatalogState);
        StoreRequest *rq = &st->rq;
        int q;

        /* the errors table's order: not_found, bad_request (the count),
         * exists (a VM), conflict (not pending) */
        q = approve_check(r, t);
        if (q < 0)
                return q;
        StoreVm *vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        for (uint32_t i = 0; q >= 0 && i < st->n_vms; i++) {
                q = store_vm_get(t, st->vm_ids[i], vm);
                if (q >= 0)
                        q = rpc_fail(r, VMM_E_EXISTS, "VM '%s' already exists", st->vm_ids[i]);
                else if (q == -ENOENT)
                        q = 0;
        }
        free(vm);
        if (q < 0)
                return q;
        q = pending_request(r, t, p->id.v);
        if (q < 0)
                return q;
        bool have_os = rq->os_id && store_os_get(t, rq->os_id, &st->os) >= 0;
        vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        int64_t now = now_ms();
        for (uint32_t i = 0; q >= 0 && i < st->n_vms; i++) {
                q = store_vm_get(t, st->vm_ids[i], vm);
                if (q >= 0) {
                        q = rpc_fail(r, VMM_E_EXISTS, "VM '%s' already exists", st->vm_ids[i]);
                        break;
                }
                if (q != -ENOENT)
                        break;
                memset(vm, 0, offsetof(StoreVm, disks));
                snprintf(vm->vm_id, sizeof vm->vm_id, "%s", st->vm_ids[i]);
                memcpy(vm->pwhash, st->hashes[i], sizeof vm->pwhash);
                vm->described = true;
                vm->ram = rq->ram;
                vm->cpu = rq->cpu;
                vm->registered_at = vm->updated_at = vm->free_since = now;
                vm->last_seen_at = -1;
                vm->requested = true;
                snprintf(vm->owner, sizeof vm->owner, "%s", rq->requester);
                if (have_os) {
                        vm->has_os = true;
                        snprintf(vm->os_name, sizeof vm->os_name, "%s", st->os.name);
                        snprintf(vm->os_version, sizeof vm->os_version, "%s", st->os.version);
                }
                vm->n_disks = rq->n_disks;
                for (uint32_t d = 0; d < rq->n_disks; d++) {
                        vm->disks[d].id[0] = '\0';      /* assigned: <vm_id>-disk<N> */
                        vm->disks[d].size = rq->disks[d];
                }
                q = store_vm_put(t, vm, &st->conflict);
                if (q >= 0)
                        q = events_append(r, t, &(Event) { .type = "vm.created",
                                                           .vm_id = vm->vm_id });
                if (q >= 0)
                        snprintf(rq->vm_ids[i], sizeof rq->vm_ids[i], "%s", vm->vm_id);
        }
        free(vm);
        if (q < 0)
                return q;
        rq->n_vm_ids = st->n_vms;
        decided(r, rq, STORE_REQUEST_APPROVED);
        q = store_request_put(t, rq);
        return q < 0 ? q : request_event(r, t, "request.approved", rq);
}

static int approve_done(Request *r) {
        CatalogState *st = STATE(r, CatalogState);
        msgpack_sbuffer sb;
        msgpack_packer pk;

        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "approved request %" PRIu64 " (%" PRIu32
                   " VMs for %s)", st->rq.id, st->n_vms, st->rq.requester);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 2) || mp_str(&pk, "request") ||
                    pack_request(&pk, &st->rq) < 0 || mp_str(&pk, "vms") ||
                    msgpack_pack_array(&pk, st->n_vms);
        for (uint32_t i = 0; !fail && i < st->n_vms; i++)
                fail = msgpack_pack_map(&pk, 2) || mp_kv_str(&pk, "vm_id", st->vm_ids[i]) ||
                       mp_kv_str(&pk, "password", st->passwords[i]);
        if (!fail)
                rpc_reply(r, sb.data, sb.size);
        secret_wipe(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return fail ? -ENOMEM : RPC_REPLIED;
}

static int reject_write(Request *r, StoreTxn *t) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        StoreRequest *rq = &STATE(r, CatalogState)->rq;
        int q = pending_request(r, t, p->id.v);

        if (q < 0)
                return q;
        decided(r, rq, STORE_REQUEST_REJECTED);
        pstr_copy(rq->reason, sizeof rq->reason, &p->reason);
        q = store_request_put(t, rq);
        return q < 0 ? q : request_event(r, t, "request.rejected", rq);
}

static int cancel_write(Request *r, StoreTxn *t) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        StoreRequest *rq = &STATE(r, CatalogState)->rq;
        int q = store_request_get(t, p->id.v, rq);

        if (q == -ENOENT)
                return rpc_fail(r, VMM_E_NOT_FOUND, "no request %" PRIu64, p->id.v);
        if (q < 0)
                return q;
        if (strcmp(rq->requester, r->caller.name) != 0)
                return rpc_fail(r, VMM_E_FORBIDDEN, "only its requester (%s) cancels request %"
                                PRIu64, rq->requester, rq->id);
        q = pending_request(r, t, p->id.v);
        if (q < 0)
                return q;
        decided(r, rq, STORE_REQUEST_CANCELLED);
        q = store_request_put(t, rq);
        return q < 0 ? q : request_event(r, t, "request.cancelled", rq);
}

static int request_done(Request *r) {
        const StoreRequest *rq = &STATE(r, CatalogState)->rq;
        msgpack_sbuffer sb;
        msgpack_packer pk;

        if (strcmp(r->method->name, VMM_M_REQUEST_REJECT) == 0)
                LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "rejected request %" PRIu64 " of %s",
                           rq->id, rq->requester);

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        return reply_packed(r, &sb, pack_request(&pk, &STATE(r, CatalogState)->rq) < 0);
}

typedef struct RequestWalk {
        Page pg;
        const char *requester;          /* NULL: all */
        int state;                      /* -1: any */
} RequestWalk;

static int request_one(void *userdata, const StoreRequest *rq) {
        RequestWalk *w = userdata;
        char key[32];

        if ((w->requester && strcmp(rq->requester, w->requester) != 0) ||
            (w->state >= 0 && rq->state != w->state))
                return 0;
        if (!page_room(&w->pg))
                return 1;
        size_t before = w->pg.items.size;
        if (pack_request(&w->pg.pk, rq) < 0)
                return -ENOMEM;
        snprintf(key, sizeof key, "%" PRIu64, rq->id);
        return page_added(&w->pg, before, key) ? 0 : 1;
}

static int request_list_start(Request *r) {
        CatalogParams *p = PARAMS(r, CatalogParams);
        RequestWalk w = { .state = -1 };
        StoreTxn *t = NULL;
        int q;

        /* a user sees only its own */
        if (r->caller.role < STORE_ROLE_ADMIN)
                w.requester = r->caller.name;
        for (int i = 0; p->state.set && state_names[i]; i++)
                if (pstr_eq(&p->state, state_names[i]))
                        w.state = i;
        page_init(&w.pg, &p->limit);
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = store_request_foreach(t, p->after.set ? p->after.v : 0, request_one, &w);
                store_read_end(t);
        }
        if (q >= 0)
                q = page_reply_uint(r, &w.pg, "requests");
        page_done(&w.pg);
        return q;
}

/* ---- the rows ---- */

#define ID_FIELD { "id", PARAM_UINT, offsetof(CatalogParams, id), true, 1, UINT64_MAX, NULL, NULL }
#define OS_NAME(f, min) \
        { #f, PARAM_STR, offsetof(CatalogParams, f), true, min, VMM_OS_NAME_MAX, valid_text_line, NULL }
#define TEXT(f, max, check) \
        { #f, PARAM_STR, offsetof(CatalogParams, f), false, 0, max, check, NULL }
#define PAGE_FIELDS \
        { "limit", PARAM_UINT, offsetof(CatalogParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL }, \
        { "after", PARAM_UINT, offsetof(CatalogParams, after), false, 0, UINT64_MAX, NULL, NULL }

static const ParamField os_create_fields[] = {
        OS_NAME(name, 1),
        OS_NAME(version, 0),
        TEXT(iso, STORE_TEXT_MAX, valid_text_line),
        TEXT(qcow2, STORE_TEXT_MAX, valid_text_line),
        TEXT(description, VMM_DESCRIPTION_MAX, valid_text),
};
static const ParamField id_fields[] = { ID_FIELD };
static const ParamField request_create_fields[] = {
        { "description", PARAM_STR, offsetof(CatalogParams, description), true, 0,
          VMM_DESCRIPTION_MAX, valid_text, NULL },
        { "ram", PARAM_UINT, offsetof(CatalogParams, ram), true, VMM_RAM_MIN, VMM_RAM_MAX, NULL, NULL },
        { "cpu", PARAM_UINT, offsetof(CatalogParams, cpu), true, VMM_CPU_MIN, VMM_CPU_MAX, NULL, NULL },
        { "disks", PARAM_UINTS, offsetof(CatalogParams, disks), false, VMM_DISK_SIZE_MIN,
          VMM_DISK_SIZE_MAX, NULL, NULL, VMM_MAX_DISKS, false, NULL },
        { "os_id", PARAM_UINT, offsetof(CatalogParams, os_id), false, 1, UINT64_MAX, NULL, NULL },
        { "count", PARAM_UINT, offsetof(CatalogParams, count), false, 1, VMM_REQUEST_COUNT_MAX,
          NULL, NULL },
};
static const ParamField request_list_fields[] = {
        { "state", PARAM_STR, offsetof(CatalogParams, state), false, 1, 16, NULL, state_names },
        PAGE_FIELDS,
};
static const ParamField approve_fields[] = {
        ID_FIELD,
        { "vm_ids", PARAM_STRS, offsetof(CatalogParams, vm_ids), true, 1, VMM_VM_ID_MAX,
          valid_vm_id, NULL, VMM_VM_IDS_MAX, false, NULL },
};
static const ParamField reject_fields[] = {
        ID_FIELD,
        { "reason", PARAM_STR, offsetof(CatalogParams, reason), true, 1, STORE_TEXT_MAX,
          valid_text, NULL },
};

#define ROW(role) .flags = ON_BOTH, .callers = CALLER_USER | CALLER_PEER, .min_role = role, \
        .params_size = sizeof(CatalogParams), .state_size = sizeof(CatalogState), \
        .state_done = catalog_state_done

static const Method m_os_create = {
        .name = VMM_M_OS_CREATE, ROW(STORE_ROLE_ADMIN), .fields = FIELDS(os_create_fields),
        .write = os_create_write, .done = os_create_done,
};
static const Method m_os_list = {
        .name = VMM_M_OS_LIST, ROW(STORE_ROLE_VIEWER), .start = os_list_start,
};
static const Method m_os_delete = {
        .name = VMM_M_OS_DELETE, ROW(STORE_ROLE_ADMIN), .fields = FIELDS(id_fields),
        .write = os_delete_write, .done = os_delete_done,
};
static const Method m_request_create = {
        .name = VMM_M_REQUEST_CREATE, ROW(STORE_ROLE_USER), .fields = FIELDS(request_create_fields),
        .write = request_create_write, .done = request_done,
};
static const Method m_request_list = {
        .name = VMM_M_REQUEST_LIST, ROW(STORE_ROLE_USER), .fields = FIELDS(request_list_fields),
        .start = request_list_start,
};
static const Method m_request_approve = {
        .name = VMM_M_REQUEST_APPROVE, ROW(STORE_ROLE_ADMIN), .fields = FIELDS(approve_fields),
        .start = approve_start, .hash = approve_hash, .write = approve_write,
        .done = approve_done,
};
static const Method m_request_reject = {
        .name = VMM_M_REQUEST_REJECT, ROW(STORE_ROLE_ADMIN), .fields = FIELDS(reject_fields),
        .write = reject_write, .done = request_done,
};
static const Method m_request_cancel = {
        .name = VMM_M_REQUEST_CANCEL, ROW(STORE_ROLE_USER), .fields = FIELDS(id_fields),
        .write = cancel_write, .done = request_done,
};

METHOD_ROWS(catalog, &m_os_create, &m_os_list, &m_os_delete, &m_request_create, &m_request_list,
            &m_request_approve, &m_request_reject, &m_request_cancel);
