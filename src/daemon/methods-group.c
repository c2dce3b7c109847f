/* SPDX-License-Identifier: MIT */
/* Groups of VMs (seed 003): group.create, get, list, rename, add, remove,
 * delete. A VM is in at most one group; its record says which. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"
#include "shared/clock.h"
#include "shared/mpout.h"

typedef struct GroupParams {
        ParamUint id;
        ParamStr name, vm_id;
        ParamList vm_ids;
        ParamUint limit, after;
} GroupParams;

typedef struct GroupState {
        StoreGroup group;
        bool deleted;
} GroupState;

typedef struct PackMembers {
        msgpack_packer *pk;
        uint32_t n;
        bool count_only;
} PackMembers;

static int member_one(void *userdata, const char *vm_id) {
        PackMembers *pm = userdata;

        pm->n++;
        if (!pm->count_only && mp_str(pm->pk, vm_id))
                return -ENOMEM;
        return 0;
}

/* The group record with its members, as of t. */
static int pack_group(StoreTxn *t, msgpack_packer *pk, const StoreGroup *g) {
        PackMembers pm = { .pk = pk, .count_only = true };
        int q;

        q = store_group_vm_foreach(t, g->id, member_one, &pm);
        if (q < 0)
                return q;
        if (msgpack_pack_map(pk, 4) || mp_kv_u64(pk, "id", g->id) || mp_kv_str(pk, "name", g->name) ||
            mp_str(pk, "vm_ids") || msgpack_pack_array(pk, pm.n))
                return -ENOMEM;
        pm.count_only = false;
        pm.n = 0;
        q = store_group_vm_foreach(t, g->id, member_one, &pm);
        if (q < 0)
                return q;
        return mp_kv_i64(pk, "created_at", g->created_at) ? -ENOMEM : 0;
}

static int reply_group(Request *r, uint64_t id) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        StoreTxn *t = NULL;
        StoreGroup g;
        int q;

        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                return q;
        q = store_group_get(t, id, &g);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (q >= 0)
                q = pack_group(t, &pk, &g);
        store_read_end(t);
        if (q == -ENOENT) {
                msgpack_sbuffer_destroy(&sb);
                return rpc_fail(r, VMM_E_NOT_FOUND, "group %" PRIu64 " does not exist", id);
        }
        if (q < 0) {
                msgpack_sbuffer_destroy(&sb);
                return q;
        }
        return reply_packed(r, &sb, false);
}

static int group_not_found(Request *r, uint64_t id) {
        return rpc_fail(r, VMM_E_NOT_FOUND, "group %" PRIu64 " does not exist", id);
}

/* Moves the listed VMs into group id (all must exist). The groups they
 * leave changed too: each gets its group.changed event. */
static int move_vms(Request *r, StoreTxn *t, const ParamList *ids, uint64_t id) {
        StoreVm *vm = malloc(sizeof *vm);
        uint64_t *left = ids->set && ids->n ? calloc(ids->n, sizeof *left) : NULL;
        uint32_t n_left = 0;
        int q = 0;

        if (!vm || (ids->set && ids->n && !left)) {
                free(vm);
                free(left);
                return -ENOMEM;
        }
        for (uint32_t i = 0; q >= 0 && ids->set && i < ids->n; i++) {
                char vm_id[VMM_VM_ID_MAX + 1];
                ParamStr s = { .set = true, .ptr = ids->items[i].via.str.ptr,
                               .len = ids->items[i].via.str.size };

                pstr_copy(vm_id, sizeof vm_id, &s);
                q = store_vm_get(t, vm_id, vm);
                if (q == -ENOENT)
                        q = rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", vm_id);
                else if (q >= 0 && vm->group != id) {
                        uint32_t k = 0;
                        while (k < n_left && left[k] != vm->group)
                                k++;
                        if (vm->group != 0 && k == n_left)
                                left[n_left++] = vm->group;
                        vm->group = id;
                        q = store_vm_put(t, vm, NULL);
                }
        }
        for (uint32_t k = 0; q >= 0 && k < n_left; k++)
                q = events_append(r, t, &(Event) { .type = "group.changed", .has_id = true,
                                                   .id = left[k] });
        free(vm);
        free(left);
        return q;
}

/* not_found when one of the listed VMs does not exist. */
static int check_vms_exist(Request *r, StoreTxn *t, const ParamList *ids) {
        StoreVm *vm = malloc(sizeof *vm);
        int q = 0;

        if (!vm)
                return -ENOMEM;
        for (uint32_t i = 0; q >= 0 && ids->set && i < ids->n; i++) {
                char vm_id[VMM_VM_ID_MAX + 1];
                ParamStr s = { .set = true, .ptr = ids->items[i].via.str.ptr,
                               .len = ids->items[i].via.str.size };

                pstr_copy(vm_id, sizeof vm_id, &s);
                q = store_vm_get(t, vm_id, vm);
                if (q == -ENOENT)
                        q = rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", vm_id);
        }
        free(vm);
        return q;
}

static int name_taken(Request *r, const char *name) {
        return rpc_fail(r, VMM_E_EXISTS, "a group named '%s' exists already", name);
}

static int create_write(Request *r, StoreTxn *t) {
        GroupParams *p = PARAMS(r, GroupParams);
        GroupState *st = STATE(r, GroupState);
        int q;

        pstr_copy(st->group.name, sizeof st->group.name, &p->name);
        st->group.created_at = now_ms();
        /* not_found (a VM) wins over exists (the name): the errors table's order */
        q = check_vms_exist(r, t, &p->vm_ids);
        if (q < 0)
                return q;
        q = store_group_create(t, &st->group);
        if (q == -EEXIST)
                return name_taken(r, st->group.name);
        if (q >= 0)
                q = move_vms(r, t, &p->vm_ids, st->group.id);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "group.created", .has_id = true,
                                              .id = st->group.id });
}

static int rename_write(Request *r, StoreTxn *t) {
        GroupParams *p = PARAMS(r, GroupParams);
        GroupState *st = STATE(r, GroupState);
        int q;

        q = store_group_get(t, p->id.v, &st->group);
        if (q == -ENOENT)
                return group_not_found(r, p->id.v);
        if (q < 0)
                return q;
        pstr_copy(st->group.name, sizeof st->group.name, &p->name);
        q = store_group_put(t, &st->group);
        if (q == -EEXIST)
                return name_taken(r, st->group.name);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "group.changed", .has_id = true,
                                              .id = st->group.id });
}

static int add_write(Request *r, StoreTxn *t) {
        GroupParams *p = PARAMS(r, GroupParams);
        GroupState *st = STATE(r, GroupState);
        int q;

        q = store_group_get(t, p->id.v, &st->group);
        if (q == -ENOENT)
                return group_not_found(r, p->id.v);
        if (q >= 0)
                q = move_vms(r, t, &p->vm_ids, st->group.id);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "group.changed", .has_id = true,
                                              .id = st->group.id });
}

static int remove_write(Request *r, StoreTxn *t) {
        GroupParams *p = PARAMS(r, GroupParams);
        GroupState *st = STATE(r, GroupState);
        char vm_id[VMM_VM_ID_MAX + 1];
        StoreVm *vm;
        int q;

        pstr_copy(vm_id, sizeof vm_id, &p->vm_id);
        vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = store_vm_get(t, vm_id, vm);
        if (q == -ENOENT)
                q = rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", vm_id);
        else if (q >= 0 && (vm->group == 0 || (p->id.set && vm->group != p->id.v)))
                q = rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' is not in %s", vm_id,
                             p->id.set ? "that group" : "any group");
        else if (q >= 0) {
                q = store_group_get(t, vm->group, &st->group);
                if (q >= 0) {
                        vm->group = 0;
                        q = store_vm_put(t, vm, NULL);
                }
        }
        free(vm);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "group.changed", .has_id = true,
                                              .id = st->group.id });
}

static int delete_write(Request *r, StoreTxn *t) {
        GroupParams *p = PARAMS(r, GroupParams);
        /* its name, for the log line */
        int q = store_group_get(t, p->id.v, &STATE(r, GroupState)->group);

        if (q >= 0)
                q = store_group_delete(t, p->id.v);
        if (q == -ENOENT)
                return group_not_found(r, p->id.v);
        if (q < 0)
                return q;
        STATE(r, GroupState)->deleted = true;
        return events_append(r, t, &(Event) { .type = "group.deleted", .has_id = true,
                                              .id = p->id.v });
}

static int group_done(Request *r) {
        GroupState *st = STATE(r, GroupState);

        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "%s group %" PRIu64 " ('%s')", r->method->name,
                   st->group.id, st->group.name);
        if (st->deleted) {
                rpc_reply(r, NULL, 0);
                return RPC_REPLIED;
        }
        return reply_group(r, st->group.id);
}

static int get_start(Request *r) {
        return reply_group(r, PARAMS(r, GroupParams)->id.v);
}

typedef struct ListWalk {
        Page pg;
        StoreTxn *t;
} ListWalk;

static int list_one(void *userdata, const StoreGroup *g) {
        ListWalk *w = userdata;
        char key[32];
        int q;

        if (!page_room(&w->pg))
                return 1;
        size_t before = w->pg.items.size;
        q = pack_group(w->t, &w->pg.pk, g);
        if (q < 0)
                return q;
        snprintf(key, sizeof key, "%" PRIu64, g->id);
        return page_added(&w->pg, before, key) ? 0 : 1;
}

static int list_start(Request *r) {
        GroupParams *p = PARAMS(r, GroupParams);
        ListWalk w;
        int q;

        page_init(&w.pg, &p->limit);
        q = store_read_begin(r->manager->store, &w.t);
        if (q >= 0) {
                q = store_group_foreach(w.t, p->after.set ? p->after.v : 0, list_one, &w);
                store_read_end(w.t);
        }
        if (q >= 0)
                q = page_reply_uint(r, &w.pg, "groups");
        page_done(&w.pg);
        return q;
}

/* ---- the rows ---- */

#define ID_FIELD(mandatory) \
        { "id", PARAM_UINT, offsetof(GroupParams, id), mandatory, 1, UINT64_MAX, NULL, NULL }
#define NAME_FIELD \
        { "name", PARAM_STR, offsetof(GroupParams, name), true, 1, VMM_GROUP_NAME_MAX, \
          valid_text_line, NULL }
#define VM_IDS_FIELD(mandatory) \
        { "vm_ids", PARAM_STRS, offsetof(GroupParams, vm_ids), mandatory, 1, VMM_VM_ID_MAX, \
          valid_vm_id, NULL, VMM_VM_IDS_MAX, false, NULL }

static const ParamField create_fields[] = { NAME_FIELD, VM_IDS_FIELD(false) };
static const ParamField id_fields[] = { ID_FIELD(true) };
static const ParamField rename_fields[] = { ID_FIELD(true), NAME_FIELD };
static const ParamField add_fields[] = { ID_FIELD(true), VM_IDS_FIELD(true) };
static const ParamField remove_fields[] = {
        { "vm_id", PARAM_STR, offsetof(GroupParams, vm_id), true, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        ID_FIELD(false),
};
static const ParamField list_fields[] = {
        { "limit", PARAM_UINT, offsetof(GroupParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL },
        { "after", PARAM_UINT, offsetof(GroupParams, after), false, 0, UINT64_MAX, NULL, NULL },
};

#define GROUP_ROW(role) .flags = ON_BOTH, .callers = CALLER_USER | CALLER_PEER, \
        .min_role = role, .params_size = sizeof(GroupParams), .state_size = sizeof(GroupState)
#define ADMIN_WRITE(w) GROUP_ROW(STORE_ROLE_ADMIN), .write = w, .done = group_done

static const Method m_create = {
        .name = VMM_M_GROUP_CREATE, ADMIN_WRITE(create_write), .fields = FIELDS(create_fields),
};
static const Method m_get = {
        .name = VMM_M_GROUP_GET, GROUP_ROW(STORE_ROLE_VIEWER), .fields = FIELDS(id_fields),
        .start = get_start,
};
static const Method m_list = {
        .name = VMM_M_GROUP_LIST, GROUP_ROW(STORE_ROLE_VIEWER), .fields = FIELDS(list_fields),
        .start = list_start,
};
static const Method m_rename = {
        .name = VMM_M_GROUP_RENAME, ADMIN_WRITE(rename_write), .fields = FIELDS(rename_fields),
};
static const Method m_add = {
        .name = VMM_M_GROUP_ADD, ADMIN_WRITE(add_write), .fields = FIELDS(add_fields),
};
static const Method m_remove = {
        .name = VMM_M_GROUP_REMOVE, ADMIN_WRITE(remove_write), .fields = FIELDS(remove_fields),
};
static const Method m_delete = {
        .name = VMM_M_GROUP_DELETE, ADMIN_WRITE(delete_write), .fields = FIELDS(id_fields),
};

METHOD_ROWS(group, &m_create, &m_get, &m_list, &m_rename, &m_add, &m_remove, &m_delete);
