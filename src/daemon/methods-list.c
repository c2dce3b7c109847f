/* SPDX-License-Identifier: MIT */
/* Lists: vm.list (with part 2's filters), disk.list, session.list. Each
 * page is one read transaction; the next page resumes after the last key. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"
#include "shared/clock.h"
#include "shared/mpout.h"

static const char *const filter_choices[] = { "connected", "authorized", "all", NULL };
static const char *const status_choices[] = { "on", "off", "requested", NULL };

typedef struct ListParams {
        ParamStr filter;
        ParamUint limit;
        ParamStr after;
        ParamUint group;
        ParamStr owner, booked_by, status, vm_id, user;
} ListParams;

typedef struct ListWalk {
        Request *request;
        Page pg;
        StoreTxn *t;
        StoreVm *vm;                    /* scratch */
        const char *only;               /* vm_visibility = self: the caller's VM */
        char owner[STORE_NAME_MAX + 1], booked_by[STORE_NAME_MAX + 1], status[16];
        uint64_t group;
        bool authorized_only;
} ListWalk;

static bool vm_wanted(ListWalk *w, const StoreVm *vm) {
        Manager *m = w->request->manager;

        if (w->only && strcmp(vm->vm_id, w->only) != 0)
                return false;
        if (w->group && vm->group != w->group)
                return false;
        if (w->owner[0] && strcmp(vm->owner, w->owner) != 0)
                return false;
        if (w->status[0] && strcmp(vm_status(m, vm), w->status) != 0)
                return false;
        if (w->booked_by[0]) {
                StoreBooking b;
                if (store_booking_get(w->t, vm->vm_id, &b) < 0 || strcmp(b.user, w->booked_by) != 0)
                        return false;
        }
        return true;
}

static int add_vm(void *userdata, const StoreVm *vm) {
        ListWalk *w = userdata;
        int q;

        if (!vm_wanted(w, vm))
                return 0;
        if (!page_room(&w->pg))
                return 1;
        size_t before = w->pg.items.size;
        q = pack_vm(w->request->manager, w->t, &w->pg.pk, vm);
        if (q < 0)
                return q;
        return page_added(&w->pg, before, vm->vm_id) ? 0 : 1;
}

static int add_vm_id(void *userdata, const char *vm_id) {
        ListWalk *w = userdata;
        int q;

        if (w->only && strcmp(vm_id, w->only) != 0)
                return 0;
        if (w->authorized_only && !vm_authorized(w->request->manager, w->t, vm_id))
                return 0;
        q = store_vm_get(w->t, vm_id, w->vm);
        if (q == -ENOENT)
                return 0;
        if (q < 0)
                return q;
        return add_vm(w, w->vm);
}

static int list_begin(Request *r, ListWalk *w) {
        ListParams *p = PARAMS(r, ListParams);

        *w = (ListWalk) { .request = r };
        page_init(&w->pg, &p->limit);
        /* with vm_visibility = self a VM session sees its own VM only */
        if (r->caller.kind == PRINCIPAL_VM && r->manager->config.vm_visibility == VISIBILITY_SELF)
                w->only = r->caller.vm_id;
        w->vm = malloc(sizeof *w->vm);
        if (!w->vm)
                return -ENOMEM;
        return store_read_begin(r->manager->store, &w->t);
}

static void list_end(ListWalk *w) {
        store_read_end(w->t);
        free(w->vm);
        w->vm = NULL;
}

static int vm_list_start(Request *r) {
        ListParams *p = PARAMS(r, ListParams);
        char after[1025] = "";
        ListWalk w;
        int q;

        if (p->after.set)
                pstr_copy(after, sizeof after, &p->after);
        q = list_begin(r, &w);
        if (q < 0)
                goto out;
        w.group = p->group.v;
        if (p->owner.set)
                pstr_copy(w.owner, sizeof w.owner, &p->owner);
        if (p->booked_by.set)
                pstr_copy(w.booked_by, sizeof w.booked_by, &p->booked_by);
        if (p->status.set)
                pstr_copy(w.status, sizeof w.status, &p->status);
        const char *a = after[0] ? after : NULL;
        if (pstr_eq(&p->filter, "authorized")) {
                w.authorized_only = true;
                q = store_session_vm_foreach(w.t, a, add_vm_id, &w);
        } else if (pstr_eq(&p->filter, "connected"))
                q = sessions_connected_foreach(r->manager->sessions, a, add_vm_id, &w);
        else if (w.only) {
                /* vm_visibility = self: one VM, paged like the others (after
                 * it, nothing) */
                if (!a || strcmp(w.only, a) > 0)
                        q = add_vm_id(&w, w.only);
        }
        else
                q = store_vm_foreach(w.t, a, add_vm, &w);
        list_end(&w);
        if (q >= 0)
                q = page_reply(r, &w.pg, "vms");
out:
        free(w.vm);
        page_done(&w.pg);
        return q;
}

static int add_disk(void *userdata, const char *disk_id, const char *vm_id, uint64_t size) {
        ListWalk *w = userdata;

        if (w->only && strcmp(vm_id, w->only) != 0)
                return 0;
        if (!page_room(&w->pg))
                return 1;
        size_t before = w->pg.items.size;
        if (msgpack_pack_map(&w->pg.pk, 3) || mp_kv_str(&w->pg.pk, "id", disk_id) ||
            mp_kv_u64(&w->pg.pk, "size", size) || mp_kv_str(&w->pg.pk, "vm_id", vm_id))
                return -ENOMEM;
        return page_added(&w->pg, before, disk_id) ? 0 : 1;
}

static int disk_list_start(Request *r) {
        ListParams *p = PARAMS(r, ListParams);
        char after[1025] = "";
        ListWalk w;
        int q;

        if (p->after.set)
                pstr_copy(after, sizeof after, &p->after);
        q = list_begin(r, &w);
        if (q >= 0) {
                q = store_disk_foreach(w.t, after[0] ? after : NULL, add_disk, &w);
                list_end(&w);
        }
        if (q >= 0)
                q = page_reply(r, &w.pg, "disks");
        free(w.vm);
        page_done(&w.pg);
        return q;
}

/* ---- session.list ---- */

bool valid_session_id(const char *s, size_t len) {
        if (len != SECRET_SESSION_ID_LEN)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
                        return false;
        return true;
}

void session_id_prefix(const char *id, uint8_t ret[SECRET_HASH_BYTES]) {
        memset(ret, 0, SECRET_HASH_BYTES);
        for (size_t i = 0; i < SECRET_SESSION_ID_LEN / 2; i++) {
                char hex[3] = { id[2 * i], id[2 * i + 1], 0 };
                ret[i] = (uint8_t) strtoul(hex, NULL, 16);
        }
}

typedef struct SessionPage {
        Manager *manager;
        Page pg;
        int64_t now;
        uint8_t after[SECRET_HASH_BYTES];
        bool has_after;
} SessionPage;

static int session_add(void *userdata, const StoreSession *s) {
        SessionPage *sp = userdata;
        bool attached = sessions_is_attached(sp->manager->sessions, s->hash);
        char sid[SECRET_SESSION_ID_LEN + 1];

        if (s->expires_at <= sp->now && !attached)
                return 0;
        if (sp->has_after && memcmp(s->hash, sp->after, SECRET_HASH_BYTES) <= 0)
                return 0;
        if (!page_room(&sp->pg))
                return 1;
        session_public_id(s->hash, sid);
        size_t before = sp->pg.items.size;
        msgpack_packer *pk = &sp->pg.pk;
        if (msgpack_pack_map(pk, 5) || mp_kv_str(pk, "id", sid) ||
            (s->user[0] ? mp_kv_str(pk, "user", s->user) : mp_kv_str(pk, "vm_id", s->vm_id)) ||
            mp_kv_i64(pk, "created_at", s->created_at) ||
            mp_kv_i64(pk, "expires_at", s->expires_at) || mp_kv_bool(pk, "connected", attached))
                return -ENOMEM;
        return page_added(&sp->pg, before, sid) ? 0 : 1;
}

static int session_list_start(Request *r) {
        ListParams *p = PARAMS(r, ListParams);
        SessionPage sp = { .manager = r->manager, .now = now_ms() };
        char owner[STORE_NAME_MAX + 1];
        StoreTxn *t = NULL;
        int q;

        page_init(&sp.pg, &p->limit);
        if (p->after.set) {
                char id[SECRET_SESSION_ID_LEN + 1];
                pstr_copy(id, sizeof id, &p->after);
                session_id_prefix(id, sp.after);
                /* every hash with this public id sorts after the prefix: past them */
                memset(sp.after + SECRET_SESSION_ID_LEN / 2, 0xff,
                       SECRET_HASH_BYTES - SECRET_SESSION_ID_LEN / 2);
                sp.has_after = true;
        }
        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                goto out;
        if (p->vm_id.set || p->user.set) {
                pstr_copy(owner, sizeof owner, p->vm_id.set ? &p->vm_id : &p->user);
                /* an owner's sessions come in hash order: the same paging */
                q = store_owner_session_foreach(t, p->vm_id.set ? owner : NULL,
                                                p->vm_id.set ? NULL : owner, session_add, &sp);
        } else
                q = store_session_foreach(t, sp.has_after ? sp.after : NULL, session_add, &sp);
        store_read_end(t);
        if (q >= 0)
                q = page_reply(r, &sp.pg, "sessions");
out:
        page_done(&sp.pg);
        return q;
}

/* ---- the rows ---- */

#define PAGE_FIELDS(after_check, after_min, after_max) \
        { "limit", PARAM_UINT, offsetof(ListParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL }, \
        { "after", PARAM_STR, offsetof(ListParams, after), false, after_min, after_max, after_check, NULL }

static const ParamField vm_list_fields[] = {
        { "filter", PARAM_STR, offsetof(ListParams, filter), true, 1, 16, NULL, filter_choices },
        PAGE_FIELDS(NULL, 0, 1024),
        { "group", PARAM_UINT, offsetof(ListParams, group), false, 1, UINT64_MAX, NULL, NULL },
        { "owner", PARAM_STR, offsetof(ListParams, owner), false, 1, VMM_USER_NAME_MAX,
          valid_user_name, NULL },
        { "booked_by", PARAM_STR, offsetof(ListParams, booked_by), false, 1, VMM_USER_NAME_MAX,
          valid_user_name, NULL },
        { "status", PARAM_STR, offsetof(ListParams, status), false, 1, 16, NULL, status_choices },
};
static const ParamField disk_list_fields[] = {
        PAGE_FIELDS(NULL, 0, 1024),
};
static const ParamField session_list_fields[] = {
        { "vm_id", PARAM_STR, offsetof(ListParams, vm_id), false, 1, VMM_VM_ID_MAX, valid_vm_id, NULL },
        { "user", PARAM_STR, offsetof(ListParams, user), false, 1, VMM_USER_NAME_MAX,
          valid_user_name, NULL },
        PAGE_FIELDS(valid_session_id, SECRET_SESSION_ID_LEN, SECRET_SESSION_ID_LEN),
};

static bool session_list_check(const void *params, char *msg, size_t len) {
        const ListParams *p = params;
        if (!(p->vm_id.set && p->user.set))
                return true;
        snprintf(msg, len, "give vm_id or user, not both");
        return false;
}

#define LIST_ROW .params_size = sizeof(ListParams), .callers = CALLER_SESSION, \
        .min_role = STORE_ROLE_VIEWER, .flags = ON_BOTH

static const Method m_vm_list = {
        .name = VMM_M_VM_LIST, LIST_ROW, .fields = FIELDS(vm_list_fields), .start = vm_list_start,
};
static const Method m_disk_list = {
        .name = VMM_M_DISK_LIST, LIST_ROW, .fields = FIELDS(disk_list_fields),
        .start = disk_list_start,
};
static const Method m_session_list = {
        .name = VMM_M_SESSION_LIST, .flags = ON_ADMIN | METHOD_TCP_ADMIN,
        .callers = CALLER_USER | CALLER_PEER, .min_role = STORE_ROLE_ADMIN,
        .params_size = sizeof(ListParams), .fields = FIELDS(session_list_fields),
        .check = session_list_check, .start = session_list_start,
};

METHOD_ROWS(list, &m_vm_list, &m_disk_list, &m_session_list);
