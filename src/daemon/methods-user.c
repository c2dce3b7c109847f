/* SPDX-License-Identifier: MIT */
/* Users (people) and their roles: user.create, get, list, set, delete. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"
#include "methods-booking.h"
#include "shared/clock.h"
#include "shared/mpout.h"
#include "shared/secret.h"

static const char *const role_choices[] = { "viewer", "user", "admin", NULL };

typedef struct UserParams {
        ParamStr name, role, password_str;
        ParamAny password;              /* user.set: a string or true */
        ParamUint limit;
        ParamStr after;
} UserParams;

typedef struct UserState {
        StoreUser user;
        char name[STORE_NAME_MAX + 1];
        char password[VMM_PASSWORD_MAX + 1];
        char new_hash[STORE_PWHASH_MAX];
        bool new_password;
        Ended ended;
} UserState;

static void user_state_done(void *p) {
        UserState *st = p;
        secret_wipe(st->password, sizeof st->password);
        secret_wipe(st->user.pwhash, sizeof st->user.pwhash);
        secret_wipe(st->new_hash, sizeof st->new_hash);
        ended_free(&st->ended);
}

static bool check_password_or_true(const msgpack_object *o, char *msg, size_t len) {
        if (o->type == MSGPACK_OBJECT_BOOLEAN && o->via.boolean)
                return true;
        if (o->type == MSGPACK_OBJECT_STR && o->via.str.size >= VMM_PASSWORD_MIN &&
            o->via.str.size <= VMM_PASSWORD_MAX && !memchr(o->via.str.ptr, 0, o->via.str.size))
                return true;
        snprintf(msg, len, "expected true (generate one) or a password of %d..%d bytes",
                 VMM_PASSWORD_MIN, VMM_PASSWORD_MAX);
        return false;
}

static int pack_user(msgpack_packer *pk, const StoreUser *u) {
        if (msgpack_pack_map(pk, 4) || mp_kv_str(pk, "name", u->name) ||
            mp_kv_str(pk, "role", role_to_string(u->role)) ||
            mp_kv_i64(pk, "created_at", u->created_at) ||
            (u->last_login_at < 0 ? mp_kv_nil(pk, "last_login_at")
                                  : mp_kv_i64(pk, "last_login_at", u->last_login_at)))
                return -ENOMEM;
        return 0;
}

static int user_not_found(Request *r, const char *name) {
        return rpc_fail(r, VMM_E_NOT_FOUND, "user '%s' does not exist", name);
}

/* ---- user.create ---- */

static void password_from(const ParamStr *s, char ret[VMM_PASSWORD_MAX + 1]) {
        if (s && s->set) {
                memcpy(ret, s->ptr, s->len);
                ret[s->len] = '\0';
        } else {
                char gen[SECRET_GEN_PASSWORD_LEN + 1];
                secret_password_generate(gen);
                memcpy(ret, gen, sizeof gen);
                secret_wipe(gen, sizeof gen);
        }
}

static int create_start(Request *r) {
        UserParams *p = PARAMS(r, UserParams);
        UserState *st = STATE(r, UserState);

        if (p->password_str.set && memchr(p->password_str.ptr, 0, p->password_str.len))
                return rpc_fail(r, VMM_E_BAD_REQUEST, "password: must not contain NUL");
        pstr_copy(st->user.name, sizeof st->user.name, &p->name);
        /* a name already taken is answered before its password is hashed
         * (a hash thread's 0.1-0.3 s); the write checks again */
        StoreTxn *t = NULL;
        StoreUser *old = malloc(sizeof *old);
        int q = old ? store_read_begin(r->manager->store, &t) : -ENOMEM;
        if (q >= 0) {
                q = store_user_get(t, st->user.name, old);
                store_read_end(t);
        }
        free(old);
        if (q >= 0)
                return rpc_fail(r, VMM_E_EXISTS, "user '%s' already exists", st->user.name);
        if (q != -ENOENT)
                return q;
        st->user.role = p->role.set ? (uint8_t) role_from_string(p->role.ptr, p->role.len)
                                    : STORE_ROLE_USER;
        st->user.created_at = now_ms();
        st->user.last_login_at = -1;
        password_from(&p->password_str, st->password);
        st->new_password = true;
        return RPC_NEXT;
}

static int password_hash(Request *r) {
        UserState *st = STATE(r, UserState);
        if (!st->new_password)
                return 0;
        return secret_password_hash(st->password, strlen(st->password), st->new_hash);
}

static int create_write(Request *r, StoreTxn *t) {
        UserState *st = STATE(r, UserState);
        StoreUser old;
        int q;

        q = store_user_get(t, st->user.name, &old);
        if (q >= 0)
                return rpc_fail(r, VMM_E_EXISTS, "user '%s' already exists", st->user.name);
        if (q != -ENOENT)
                return q;
        memcpy(st->user.pwhash, st->new_hash, sizeof st->user.pwhash);
        q = store_user_put(t, &st->user);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "user.created", .name = st->user.name });
}

static int reply_user_password(Request *r) {
        UserState *st = STATE(r, UserState);
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 3) || mp_kv_str(&pk, "name", st->user.name) ||
                    mp_kv_str(&pk, "role", role_to_string(st->user.role)) ||
                    mp_kv_str(&pk, "password", st->password);
        if (!fail)
                rpc_reply(r, sb.data, sb.size);
        secret_wipe(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return fail ? -ENOMEM : RPC_REPLIED;
}

static int create_done(Request *r) {
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "created user '%s' (%s)",
                   STATE(r, UserState)->user.name, role_to_string(STATE(r, UserState)->user.role));
        return reply_user_password(r);
}

/* ---- user.get, user.list ---- */

static int get_start(Request *r) {
        UserParams *p = PARAMS(r, UserParams);
        char name[STORE_NAME_MAX + 1];
        StoreTxn *t = NULL;
        StoreUser u;
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int q;

        pstr_copy(name, sizeof name, &p->name);
        q = store_read_begin(r->manager->store, &t);
        if (q < 0)
                return q;
        q = store_user_get(t, name, &u);
        store_read_end(t);
        if (q == -ENOENT)
                return user_not_found(r, name);
        if (q < 0)
                return q;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        return reply_packed(r, &sb, pack_user(&pk, &u) < 0);
}

static int list_one(void *userdata, const StoreUser *u) {
        Page *pg = userdata;

        if (!page_room(pg))
                return 1;
        size_t before = pg->items.size;
        if (pack_user(&pg->pk, u) < 0)
                return -ENOMEM;
        return page_added(pg, before, u->name) ? 0 : 1;
}

static int list_start(Request *r) {
        UserParams *p = PARAMS(r, UserParams);
        char after[STORE_NAME_MAX + 1] = "";
        StoreTxn *t = NULL;
        Page pg;
        int q;

        if (p->after.set)
                pstr_copy(after, sizeof after, &p->after);
        page_init(&pg, &p->limit);
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = store_user_foreach(t, after[0] ? after : NULL, list_one, &pg);
                store_read_end(t);
        }
        if (q >= 0)
                q = page_reply(r, &pg, "users");
        page_done(&pg);
        return q;
}

/* ---- user.set ---- */

static int set_start(Request *r) {
        UserParams *p = PARAMS(r, UserParams);
        UserState *st = STATE(r, UserState);

        pstr_copy(st->name, sizeof st->name, &p->name);
        if (p->password.set) {
                const msgpack_object *o = p->password.o;
                st->new_password = true;
                if (o->type == MSGPACK_OBJECT_STR) {
                        ParamStr s = { .set = true, .ptr = o->via.str.ptr, .len = o->via.str.size };
                        password_from(&s, st->password);
                } else
                        password_from(NULL, st->password);
        }
        return RPC_NEXT;
}

static int set_write(Request *r, StoreTxn *t) {
        UserParams *p = PARAMS(r, UserParams);
        UserState *st = STATE(r, UserState);
        int q;

        q = store_user_get(t, st->name, &st->user);
        if (q == -ENOENT)
                return user_not_found(r, st->name);
        if (q < 0)
                return q;
        if (p->role.set)
                st->user.role = (uint8_t) role_from_string(p->role.ptr, p->role.len);
        if (st->new_password)
                memcpy(st->user.pwhash, st->new_hash, sizeof st->user.pwhash);
        q = store_user_put(t, &st->user);
        if (q >= 0)
                q = events_append(r, t, &(Event) { .type = "user.changed", .name = st->name });
        if (q < 0 || !st->new_password)
                return q;
        return end_sessions(r, t, NULL, st->name, 0, NULL, "password", &st->ended);
}

static int set_done(Request *r) {
        UserState *st = STATE(r, UserState);
        msgpack_sbuffer sb;
        msgpack_packer pk;
        bool fail;

        ended_detach(r->manager, &st->ended);
        bool role = PARAMS(r, UserParams)->role.set;
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "changed user '%s'%s%s%s%s%s", st->name,
                   role || st->new_password ? " (" : "", role ? "role " : "",
                   role ? role_to_string(st->user.role) : "",
                   role && st->new_password ? ", " : "",
                   st->new_password ? "new password)" : role ? ")" : "");
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (!st->new_password)
                fail = pack_user(&pk, &st->user) < 0;
        else {
                /* the record and, once, the password */
                StoreUser *u = &st->user;
                fail = msgpack_pack_map(&pk, 5) || mp_kv_str(&pk, "name", u->name) ||
                       mp_kv_str(&pk, "role", role_to_string(u->role)) ||
                       mp_kv_i64(&pk, "created_at", u->created_at) ||
                       (u->last_login_at < 0 ? mp_kv_nil(&pk, "last_login_at")
                                             : mp_kv_i64(&pk, "last_login_at", u->last_login_at)) ||
                       mp_kv_str(&pk, "password", st->password);
        }
        if (!fail)
                rpc_reply(r, sb.data, sb.size);
        secret_wipe(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return fail ? -ENOMEM : RPC_REPLIED;
}

/* ---- user.delete ---- */

typedef struct Held {
        char (*vm_ids)[VMM_VM_ID_MAX + 1];
        size_t n, cap;
} Held;

static int held_one(void *userdata, const StoreBooking *b) {
        Held *h = userdata;

        if (h->n == h->cap) {
                size_t cap = h->cap ? h->cap * 2 : 8;
                void *p = realloc(h->vm_ids, cap * sizeof h->vm_ids[0]);
                if (!p)
                        return -ENOMEM;
                h->vm_ids = p;
                h->cap = cap;
        }
        snprintf(h->vm_ids[h->n++], sizeof h->vm_ids[0], "%s", b->vm_id);
        return 0;
}

static int delete_write(Request *r, StoreTxn *t) {
        UserState *st = STATE(r, UserState);
        Held held = { 0 };
        int q;

        q = store_user_get(t, st->name, &st->user);
        if (q == -ENOENT)
                return user_not_found(r, st->name);
        if (q < 0)
                return q;
        /* its bookings end, its sessions end, then the user goes */
        q = store_user_booking_foreach(t, st->name, NULL, held_one, &held);
        for (size_t i = 0; q >= 0 && i < held.n; i++) {
                q = booking_end_in(r, t, held.vm_ids[i], STORE_HISTORY_END, "deleted",
                                   r->caller.name);
                if (q == -ENOENT)
                        q = 0;
        }
        free(held.vm_ids);
        if (q >= 0)
                q = end_sessions(r, t, NULL, st->name, 0, NULL, "deleted", &st->ended);
        if (q >= 0)
                q = store_user_delete(t, st->name);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "user.deleted", .name = st->name });
}

static int delete_done(Request *r) {
        UserState *st = STATE(r, UserState);

        ended_detach(r->manager, &st->ended);
        detach_owner(r->manager, PRINCIPAL_USER, st->name);
        bookings_changed(r->manager);
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, NULL, "deleted user '%s'", st->name);
        rpc_reply(r, NULL, 0);
        return RPC_REPLIED;
}

static int name_start(Request *r) {
        pstr_copy(STATE(r, UserState)->name, sizeof STATE(r, UserState)->name,
                  &PARAMS(r, UserParams)->name);
        return RPC_NEXT;
}

/* ---- the rows ---- */

#define NAME_FIELD \
        { "name", PARAM_STR, offsetof(UserParams, name), true, 1, VMM_USER_NAME_MAX, \
          valid_user_name, NULL }
#define ROLE_FIELD \
        { "role", PARAM_STR, offsetof(UserParams, role), false, 1, 16, NULL, role_choices }

static const ParamField create_fields[] = {
        NAME_FIELD,
        ROLE_FIELD,
        { "password", PARAM_STR, offsetof(UserParams, password_str), false, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
};
static const ParamField name_fields[] = { NAME_FIELD };
static const ParamField list_fields[] = {
        { "limit", PARAM_UINT, offsetof(UserParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL },
        { "after", PARAM_STR, offsetof(UserParams, after), false, 0, VMM_USER_NAME_MAX, NULL, NULL },
};
static const ParamField set_fields[] = {
        NAME_FIELD,
        ROLE_FIELD,
        { "password", PARAM_ANY, offsetof(UserParams, password), false, 0, 0, NULL, NULL, 0,
          false, check_password_or_true },
};

#define USER_ROW .flags = ON_BOTH, .callers = CALLER_USER | CALLER_PEER, \
        .min_role = STORE_ROLE_ADMIN, .params_size = sizeof(UserParams), \
        .state_size = sizeof(UserState), .state_done = user_state_done

static const Method m_create = {
        .name = VMM_M_USER_CREATE, USER_ROW, .fields = FIELDS(create_fields),
        .start = create_start, .hash = password_hash, .write = create_write, .done = create_done,
};
static const Method m_get = {
        .name = VMM_M_USER_GET, USER_ROW, .fields = FIELDS(name_fields), .start = get_start,
};
static const Method m_list = {
        .name = VMM_M_USER_LIST, USER_ROW, .fields = FIELDS(list_fields), .start = list_start,
};
static const Method m_set = {
        .name = VMM_M_USER_SET, USER_ROW, .fields = FIELDS(set_fields), .start = set_start,
        .hash = password_hash, .write = set_write, .done = set_done,
};
static const Method m_delete = {
        .name = VMM_M_USER_DELETE, USER_ROW, .fields = FIELDS(name_fields), .start = name_start,
        .write = delete_write, .done = delete_done,
};

METHOD_ROWS(user, &m_create, &m_get, &m_list, &m_set, &m_delete);
