/* SPDX-License-Identifier: MIT */
/* VMs: register, vm.add, vm.update, vm.get (with its answer cache), and the
 * admins' vm.create, vm.delete, vm.passwd, vm.set, vm.approve, vm.suspend. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "build-config.h"
#include "log.h"
#include "methods.h"
#include "methods-booking.h"
#include "methods-monitor.h"
#include "shared/clock.h"
#include "shared/mpout.h"
#include "shared/secret.h"

/* ---- parameters ---- */

#define VM_ID_FIELD(type, mandatory) \
        { "vm_id", PARAM_STR, offsetof(type, vm_id), mandatory, 1, VMM_VM_ID_MAX, valid_vm_id, NULL }
#define META_FIELDS(type) \
        { "hostname", PARAM_STR, offsetof(type, hostname), false, 1, VMM_HOSTNAME_MAX, \
          valid_hostname, NULL, 0, true, NULL }, \
        { "ip", PARAM_STRS, offsetof(type, ip), false, 2, STORE_IP_LEN - 1, valid_ip, NULL, \
          VMM_IP_MAX, true, NULL }, \
        { "os", PARAM_ANY, offsetof(type, os), false, 0, 0, NULL, NULL, 0, false, check_os_param }
#define SPEC_FIELDS(type, mandatory) \
        { "ram", PARAM_UINT, offsetof(type, ram), mandatory, VMM_RAM_MIN, VMM_RAM_MAX, NULL, NULL }, \
        { "cpu", PARAM_UINT, offsetof(type, cpu), mandatory, VMM_CPU_MIN, VMM_CPU_MAX, NULL, NULL }

typedef struct VmParams {
        ParamStr vm_id, password;
        ParamUint ram, cpu;
        ParamDisks disks;
        ParamStr hostname, owner;
        ParamList ip;
        ParamAny os;
        ParamUint group;
} VmParams;

typedef struct VmState {
        StoreVm vm;
        char vm_id[VMM_VM_ID_MAX + 1];
        char password[VMM_PASSWORD_MAX + 1];    /* vm.create, vm.passwd */
        StoreConflict conflict;
        Ended ended;
        int64_t now;
        bool registration_approval;
} VmState;

static void vm_state_done(void *p) {
        VmState *st = p;
        secret_wipe(st->password, sizeof st->password);
        ended_free(&st->ended);
}

static void disks_from_params(StoreVm *vm, const ParamDisks *d) {
        vm->n_disks = (uint32_t) d->n;
        for (size_t i = 0; i < d->n; i++) {
                memset(vm->disks[i].id, 0, sizeof vm->disks[i].id);
                if (d->d[i].id.set)
                        pstr_copy(vm->disks[i].id, sizeof vm->disks[i].id, &d->d[i].id);
                vm->disks[i].size = d->d[i].size;
        }
}

/* -EBUSY from store_vm_put: which disk, held by which VM. */
static int conflict(Request *r, const StoreConflict *c) {
        return rpc_fail(r, VMM_E_CONFLICT,
                        "disk '%s' belongs to VM '%s'; choose another disk id or remove it "
                        "from that VM first", c->disk_id, c->vm_id);
}

static int vm_not_found(Request *r, const char *vm_id) {
        return rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", vm_id);
}

/* ---- register ---- */

static const ParamField register_fields[] = {
        VM_ID_FIELD(VmParams, true),
        { "password", PARAM_STR, offsetof(VmParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
        SPEC_FIELDS(VmParams, true),
        { "disks", PARAM_DISKS, offsetof(VmParams, disks), false, 0, VMM_MAX_DISKS, NULL, NULL },
};

static int register_start(Request *r) {
        Manager *m = r->manager;
        VmParams *p = PARAMS(r, VmParams);
        VmState *st = STATE(r, VmState);
        int q;

        if (r->peer && !sessions_peer_register(r->peer, now_ms(),
                                               (unsigned) m->config.registrations_per_minute))
                return rpc_fail(r, VMM_E_RATE_LIMITED,
                                "too many registrations from this address; retry in a minute");
        if (m->config.registration == REGISTRATION_CLOSED)
                return rpc_fail(r, VMM_E_FORBIDDEN,
                                "registration is closed on this server; ask an admin to create "
                                "the VM (vmadm create)");
        st->registration_approval = m->config.registration == REGISTRATION_APPROVAL;
        pstr_copy(st->vm.vm_id, sizeof st->vm.vm_id, &p->vm_id);
        /* fail fast without hashing when the id is taken */
        StoreVm *tmp = malloc(sizeof *tmp);
        if (!tmp)
                return -ENOMEM;
        q = read_vm(r, st->vm.vm_id, tmp);
        free(tmp);
        if (q >= 0)
                return rpc_fail(r, VMM_E_EXISTS, "VM '%s' is already registered", st->vm.vm_id);
        if (q != -ENOENT)
                return q;
        st->now = now_ms();
        st->vm.described = true;
        st->vm.ram = (uint32_t) p->ram.v;
        st->vm.cpu = (uint32_t) p->cpu.v;
        st->vm.registered_at = st->vm.updated_at = st->vm.free_since = st->now;
        st->vm.last_seen_at = -1;
        st->vm.access = st->registration_approval ? STORE_ACCESS_PENDING : STORE_ACCESS_ACTIVE;
        disks_from_params(&st->vm, &p->disks);
        return RPC_NEXT;
}

static int register_hash(Request *r) {
        VmParams *p = PARAMS(r, VmParams);
        return secret_password_hash(p->password.ptr, p->password.len, STATE(r, VmState)->vm.pwhash);
}

static int create_put(Request *r, StoreTxn *t, StoreVm *vm, const char *event) {
        StoreVm *old = malloc(sizeof *old);
        VmState *st = STATE(r, VmState);
        int q;

        if (!old)
                return -ENOMEM;
        /* not_found (the group) wins over exists: the errors table's order */
        if (vm->group) {
                StoreGroup g;
                q = store_group_get(t, vm->group, &g);
                if (q == -ENOENT) {
                        free(old);
                        return rpc_fail(r, VMM_E_NOT_FOUND, "group %" PRIu64 " does not exist",
                                        vm->group);
                }
                if (q < 0) {
                        free(old);
                        return q;
                }
        }
        q = store_vm_get(t, vm->vm_id, old);
        free(old);
        if (q >= 0)
                return rpc_fail(r, VMM_E_EXISTS, "VM '%s' already exists", vm->vm_id);
        if (q != -ENOENT)
                return q;
        q = store_vm_put(t, vm, &st->conflict);
        if (q == -EBUSY)
                return conflict(r, &st->conflict);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = event, .vm_id = vm->vm_id });
}

static int register_write(Request *r, StoreTxn *t) {
        return create_put(r, t, &STATE(r, VmState)->vm, "vm.registered");
}

static int register_done(Request *r) {
        VmState *st = STATE(r, VmState);

        log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_VM_REGISTERED,
                                            .vm_id = st->vm.vm_id, .peer = rpc_peer_text(r),
                                            .has_conn = true, .conn = r->client->id,
                                            .admin_uid = -1 },
                   "VM '%s' registered from %s%s", st->vm.vm_id, rpc_peer_text(r),
                   st->registration_approval ? " (awaiting approval)" : "");
        return reply_vm(r, &st->vm);
}

/* ---- vm.add, vm.update ---- */

static const ParamField add_fields[] = {
        VM_ID_FIELD(VmParams, true),
        SPEC_FIELDS(VmParams, true),
        { "disks", PARAM_DISKS, offsetof(VmParams, disks), true, 0, VMM_MAX_DISKS, NULL, NULL },
        META_FIELDS(VmParams),
};

static const ParamField update_fields[] = {
        SPEC_FIELDS(VmParams, false),
        { "disks", PARAM_DISKS, offsetof(VmParams, disks), false, 0, VMM_MAX_DISKS, NULL, NULL },
        META_FIELDS(VmParams),
};

static bool update_check(const void *params, char *msg, size_t len) {
        const VmParams *p = params;
        if (p->ram.set || p->cpu.set || p->disks.set || p->hostname.set || p->ip.set || p->os.set)
                return true;
        snprintf(msg, len, "nothing to update: give ram, cpu, disks, hostname, ip or os");
        return false;
}

static int add_start(Request *r) {
        VmParams *p = PARAMS(r, VmParams);

        if (!pstr_eq(&p->vm_id, r->caller.vm_id))
                return rpc_fail(r, VMM_E_FORBIDDEN,
                                "a VM describes only itself: give vm_id '%s'", r->caller.vm_id);
        return RPC_NEXT;
}

static int describe_write(Request *r, StoreTxn *t) {
        VmParams *p = PARAMS(r, VmParams);
        VmState *st = STATE(r, VmState);
        bool is_add = strcmp(r->method->name, VMM_M_VM_ADD) == 0;
        int q;

        q = store_vm_get(t, r->caller.vm_id, &st->vm);
        if (q == -ENOENT)
                return vm_not_found(r, r->caller.vm_id);
        if (q < 0)
                return q;
        if (is_add && st->vm.described)
                return rpc_fail(r, VMM_E_EXISTS,
                                "VM '%s' is already described; change it with an update",
                                r->caller.vm_id);
        if (!is_add && !st->vm.described)
                return rpc_fail(r, VMM_E_NOT_FOUND,
                                "VM '%s' was never described; describe it first (add)",
                                r->caller.vm_id);
        st->vm.described = true;
        if (p->ram.set)
                st->vm.ram = (uint32_t) p->ram.v;
        if (p->cpu.set)
                st->vm.cpu = (uint32_t) p->cpu.v;
        if (p->disks.set)
                disks_from_params(&st->vm, &p->disks);
        vm_apply_meta(&st->vm, &p->hostname, &p->ip, &p->os);
        st->vm.updated_at = now_ms();
        if (!p->disks.set)
                q = store_vm_put_same_disks(t, &st->vm);        /* ram, cpu, meta only */
        else
                q = store_vm_put(t, &st->vm, &st->conflict);
        if (q == -EBUSY)
                return conflict(r, &st->conflict);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = is_add ? "vm.described" : "vm.updated",
                                              .vm_id = r->caller.vm_id });
}

static int vm_cached_reply(Request *r, const char *vm_id);

static int describe_done(Request *r) {
        return vm_cached_reply(r, r->caller.vm_id);
}

/* ---- vm.get ---- */

/* vm.get answers, by VM: a VM's record changes far less often than it is
 * read. An entry holds the stored bytes of a record and the packed answer
 * made from them; it is used only while the stored bytes are exactly these
 * (the answer is a function of them), so it is never stale. It also holds
 * the packed booking, and the transaction it was read in: while the read
 * transaction is still that one, nothing in the database has changed, so
 * neither the record nor the booking is looked up again (two B-tree
 * searches: a fifth of a vm.get's time). Direct-mapped, small records only,
 * loop thread only, allocated on first use. */
#define VM_CACHE_SLOTS 1024
#define VM_CACHE_BYTES 448
/* "booking", a map of three: user (up to VMM_USER_NAME_MAX), two times */
#define VM_CACHE_BOOKING_BYTES (48 + VMM_USER_NAME_MAX)

typedef struct VmCacheEntry {
        char vm_id[VMM_VM_ID_MAX + 1];
        bool requested;                 /* of the record: what the state needs */
        uint16_t rec_len, out_len;      /* rec_len 0: the entry is empty */
        uint16_t booking_len;           /* 0: booking not held for txn */
        uint64_t txn;                   /* the snapshot booking_len is of */
        uint8_t rec[VM_CACHE_BYTES];
        uint8_t out[VM_CACHE_BYTES];
        uint8_t booking[VM_CACHE_BOOKING_BYTES];
} VmCacheEntry;

struct VmCache {
        VmCacheEntry slots[VM_CACHE_SLOTS];
        StoreVm scratch;
        msgpack_sbuffer sb;             /* kept: its memory is reused */
};

void vm_cache_free(VmCache *c) {
        if (!c)
                return;
        msgpack_sbuffer_destroy(&c->sb);
        free(c);
}

static VmCacheEntry *vm_cache_slot(VmCache *c, const char *vm_id) {
        uint32_t h = 2166136261u;
        for (const char *p = vm_id; *p; p++)
                h = (h ^ (uint8_t) *p) * 16777619u;
        return &c->slots[h % VM_CACHE_SLOTS];
}

/* The entry's answer: the record is not decoded again, the state needs
 * only its id and whether it was requested. */
static int vm_cache_hit(VmCache *c, const VmCacheEntry *e, const char *vm_id) {
        memcpy(c->scratch.vm_id, vm_id, strlen(vm_id) + 1);
        c->scratch.requested = e->requested;
        return msgpack_sbuffer_write(&c->sb, (const char *) e->out, e->out_len) < 0 ? -ENOMEM : 0;
}

/* The fields of the record, from the entry or packed anew (and kept). */
static int vm_cache_fields(VmCache *c, VmCacheEntry *e, StoreTxn *t, const char *vm_id,
                           msgpack_packer *pk) {
        StoreVm *vm = &c->scratch;
        const void *rec;
        size_t rec_len;
        int q;

        q = store_vm_get_raw(t, vm_id, &rec, &rec_len);
        if (q < 0)
                return q;
        if (e->rec_len == rec_len && strcmp(e->vm_id, vm_id) == 0 &&
            memcmp(e->rec, rec, rec_len) == 0)
                return vm_cache_hit(c, e, vm_id);
        e->rec_len = 0;
        q = store_vm_get(t, vm_id, vm);
        if (q >= 0)
                q = pack_vm_fields(pk, vm);
        if (q >= 0 && rec_len <= VM_CACHE_BYTES && c->sb.size <= VM_CACHE_BYTES) {
                memcpy(e->vm_id, vm->vm_id, strlen(vm->vm_id) + 1);
                memcpy(e->rec, rec, rec_len);
                e->rec_len = (uint16_t) rec_len;
                e->requested = vm->requested;
                memcpy(e->out, c->sb.data, c->sb.size);
                e->out_len = (uint16_t) c->sb.size;
        }
        return q;
}

/* The hottest path: no allocation once the cache exists. */
static int vm_cached_reply(Request *r, const char *vm_id) {
        Manager *m = r->manager;
        StoreTxn *t = NULL;
        msgpack_packer pk;
        int q;

        if (!m->vm_cache) {
                m->vm_cache = calloc(1, sizeof *m->vm_cache);
                if (!m->vm_cache)
                        return -ENOMEM;
        }
        VmCache *c = m->vm_cache;
        StoreVm *vm = &c->scratch;
        c->sb.size = 0;
        msgpack_packer_init(&pk, &c->sb, msgpack_sbuffer_write);
        /* one read transaction for the record and its answer */
        q = store_read_begin(m->store, &t);
        if (q < 0)
                return q;
        uint64_t txn = store_txn_seq(t);
        VmCacheEntry *e = vm_cache_slot(c, vm_id);
        bool same_snapshot = e->rec_len > 0 && e->booking_len > 0 && e->txn == txn &&
                strcmp(e->vm_id, vm_id) == 0;
        if (same_snapshot)
                q = vm_cache_hit(c, e, vm_id);
        else {
                e->booking_len = 0;
                q = vm_cache_fields(c, e, t, vm_id, &pk);
        }
        /* a VM reading itself holds a valid session: it is authorized */
        if (q >= 0)
                q = pack_vm_live(m, t, &pk, vm,
                                 r->caller.kind == PRINCIPAL_VM &&
                                 strcmp(r->caller.vm_id, vm_id) == 0 ? 1 : -1);
        if (q >= 0 && same_snapshot)
                q = msgpack_sbuffer_write(&c->sb, (const char *) e->booking, e->booking_len) < 0 ?
                        -ENOMEM : 0;
        else if (q >= 0) {
                size_t at = c->sb.size;
                q = pack_vm_booking(t, &pk, vm_id);
                if (q >= 0 && e->rec_len > 0 && c->sb.size - at <= VM_CACHE_BOOKING_BYTES) {
                        memcpy(e->booking, c->sb.data + at, c->sb.size - at);
                        e->booking_len = (uint16_t) (c->sb.size - at);
                        e->txn = txn;
                }
        }
        store_read_end(t);
        if (q == -ENOENT)
                return vm_not_found(r, vm_id);
        if (q < 0)
                return q;
        rpc_reply(r, c->sb.data, c->sb.size);
        return RPC_REPLIED;
}

/* vm.get takes only vm_id: its own small params, which fit in the
 * request's allocation (VmParams, with room for every disk, does not) */
typedef struct GetParams {
        ParamStr vm_id;
} GetParams;

static const ParamField get_fields[] = {
        VM_ID_FIELD(GetParams, false),
};

static int get_start(Request *r) {
        GetParams *p = PARAMS(r, GetParams);
        char vm_id[VMM_VM_ID_MAX + 1];

        if (r->caller.kind == PRINCIPAL_VM) {
                if (p->vm_id.set && !pstr_eq(&p->vm_id, r->caller.vm_id))
                        return rpc_fail(r, VMM_E_FORBIDDEN, "a VM sees only itself ('%s')",
                                        r->caller.vm_id);
                return vm_cached_reply(r, r->caller.vm_id);
        }
        if (!p->vm_id.set)
                return rpc_fail(r, VMM_E_BAD_REQUEST, "missing field 'vm_id'");
        pstr_copy(vm_id, sizeof vm_id, &p->vm_id);
        return vm_cached_reply(r, vm_id);
}

/* ---- vm.create, vm.passwd ---- */

static const ParamField create_fields[] = {
        VM_ID_FIELD(VmParams, true),
        { "password", PARAM_STR, offsetof(VmParams, password), false, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
        SPEC_FIELDS(VmParams, false),
        { "disks", PARAM_DISKS, offsetof(VmParams, disks), false, 0, VMM_MAX_DISKS, NULL, NULL },
        { "hostname", PARAM_STR, offsetof(VmParams, hostname), false, 1, VMM_HOSTNAME_MAX,
          valid_hostname, NULL },
        { "owner", PARAM_STR, offsetof(VmParams, owner), false, 1, VMM_USER_NAME_MAX,
          valid_user_name, NULL },
        { "group", PARAM_UINT, offsetof(VmParams, group), false, 1, UINT64_MAX, NULL, NULL },
};

static const ParamField passwd_fields[] = {
        VM_ID_FIELD(VmParams, true),
        { "password", PARAM_STR, offsetof(VmParams, password), false, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
};

static bool create_check(const void *params, char *msg, size_t len) {
        const VmParams *p = params;
        if (p->ram.set == p->cpu.set && (p->ram.set || !p->disks.set))
                return true;
        snprintf(msg, len, "give ram and cpu together (disks need them too)");
        return false;
}

/* The password given (no NUL in it), or a generated one. */
static int password_param(Request *r, const ParamStr *pw, char ret[VMM_PASSWORD_MAX + 1]) {
        if (pw->set) {
                if (memchr(pw->ptr, '\0', pw->len))
                        return rpc_fail(r, VMM_E_BAD_REQUEST, "password: must not contain NUL");
                memcpy(ret, pw->ptr, pw->len);
                ret[pw->len] = '\0';
        } else {
                char gen[SECRET_GEN_PASSWORD_LEN + 1];
                secret_password_generate(gen);
                memcpy(ret, gen, sizeof gen);
                secret_wipe(gen, sizeof gen);
        }
        return RPC_NEXT;
}

static int create_start(Request *r) {
        VmParams *p = PARAMS(r, VmParams);
        VmState *st = STATE(r, VmState);

        pstr_copy(st->vm.vm_id, sizeof st->vm.vm_id, &p->vm_id);
        st->now = now_ms();
        st->vm.registered_at = st->vm.updated_at = st->vm.free_since = st->now;
        st->vm.last_seen_at = -1;
        st->vm.described = p->ram.set;
        st->vm.ram = (uint32_t) p->ram.v;
        st->vm.cpu = (uint32_t) p->cpu.v;
        disks_from_params(&st->vm, &p->disks);
        if (p->hostname.set)
                pstr_copy(st->vm.hostname, sizeof st->vm.hostname, &p->hostname);
        if (p->owner.set)
                pstr_copy(st->vm.owner, sizeof st->vm.owner, &p->owner);
        st->vm.group = p->group.v;
        return password_param(r, &p->password, st->password);
}

static int cred_hash(Request *r) {
        VmState *st = STATE(r, VmState);
        return secret_password_hash(st->password, strlen(st->password), st->vm.pwhash);
}

static int create_write(Request *r, StoreTxn *t) {
        return create_put(r, t, &STATE(r, VmState)->vm, "vm.created");
}

static int reply_credentials(Request *r) {
        VmState *st = STATE(r, VmState);
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 2) || mp_kv_str(&pk, "vm_id", st->vm.vm_id) ||
                    mp_kv_str(&pk, "password", st->password);
        if (!fail)
                rpc_reply(r, sb.data, sb.size);
        secret_wipe(sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        return fail ? -ENOMEM : RPC_REPLIED;
}

static int create_done(Request *r) {
        LOG_CHANGE(r, LOG_MID_VM_CREATED, STATE(r, VmState)->vm.vm_id, "created VM '%s'",
                   STATE(r, VmState)->vm.vm_id);
        return reply_credentials(r);
}

static int vm_passwd_start(Request *r) {
        VmParams *p = PARAMS(r, VmParams);
        VmState *st = STATE(r, VmState);

        pstr_copy(st->vm.vm_id, sizeof st->vm.vm_id, &p->vm_id);
        return password_param(r, &p->password, st->password);
}

static int vm_passwd_write(Request *r, StoreTxn *t) {
        VmState *st = STATE(r, VmState);
        StoreVm *vm = malloc(sizeof *vm);
        int q;

        if (!vm)
                return -ENOMEM;
        q = store_vm_get(t, st->vm.vm_id, vm);
        if (q >= 0) {
                memcpy(vm->pwhash, st->vm.pwhash, sizeof vm->pwhash);
                q = store_vm_put_same_disks(t, vm);
        }
        free(vm);
        if (q == -ENOENT)
                return vm_not_found(r, st->vm.vm_id);
        if (q >= 0)
                q = events_append(r, t, &(Event) { .type = "vm.password_changed",
                                                   .vm_id = st->vm.vm_id });
        if (q < 0)
                return q;
        return end_sessions(r, t, st->vm.vm_id, NULL, 0, NULL, "password", &st->ended);
}

static int vm_passwd_done(Request *r) {
        VmState *st = STATE(r, VmState);

        ended_detach(r->manager, &st->ended);
        LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, st->vm.vm_id,
                   "set the password of VM '%s' (%zu sessions ended)", st->vm.vm_id, st->ended.n);
        return reply_credentials(r);
}

/* ---- vm.delete, vm.set, vm.approve, vm.suspend ---- */

static const ParamField vm_id_fields[] = {
        VM_ID_FIELD(VmParams, true),
};

static const ParamField set_fields[] = {
        VM_ID_FIELD(VmParams, true),
        SPEC_FIELDS(VmParams, false),
        { "disks", PARAM_DISKS, offsetof(VmParams, disks), false, 0, VMM_MAX_DISKS, NULL, NULL },
        META_FIELDS(VmParams),
        { "owner", PARAM_STR, offsetof(VmParams, owner), false, 1, VMM_USER_NAME_MAX,
          valid_user_name, NULL, 0, true, NULL },
        { "group", PARAM_UINT, offsetof(VmParams, group), false, 1, UINT64_MAX, NULL, NULL, 0,
          true, NULL },
};

static int vm_id_start(Request *r) {
        pstr_copy(STATE(r, VmState)->vm_id, sizeof STATE(r, VmState)->vm_id,
                  &PARAMS(r, VmParams)->vm_id);
        return RPC_NEXT;
}

static int delete_write(Request *r, StoreTxn *t) {
        VmState *st = STATE(r, VmState);
        int q;

        q = store_vm_get(t, st->vm_id, &st->vm);
        if (q == -ENOENT)
                return vm_not_found(r, st->vm_id);
        if (q < 0)
                return q;
        /* its booking ends, then its sessions (each with its event), then the VM */
        q = booking_end_in(r, t, st->vm_id, STORE_HISTORY_END, "deleted", r->caller.name);
        if (q < 0 && q != -ENOENT)
                return q;
        q = end_sessions(r, t, st->vm_id, NULL, 0, NULL, "deleted", &st->ended);
        if (q < 0)
                return q;
        q = store_vm_delete(t, st->vm_id);
        if (q < 0)
                return q;
        q = events_append(r, t, &(Event) { .type = "vm.deleted", .vm_id = st->vm_id });
        /* the group it was in lost a VM */
        if (q >= 0 && st->vm.group)
                q = events_append(r, t, &(Event) { .type = "group.changed", .has_id = true,
                                                   .id = st->vm.group });
        return q;
}

static int delete_done(Request *r) {
        VmState *st = STATE(r, VmState);

        ended_detach(r->manager, &st->ended);
        detach_owner(r->manager, PRINCIPAL_VM, st->vm_id);
        monitor_forget(r->manager->monitor, st->vm_id);
        LOG_CHANGE(r, LOG_MID_VM_DELETED, st->vm_id, "deleted VM '%s'", st->vm_id);
        rpc_reply(r, NULL, 0);
        return RPC_REPLIED;
}

static int set_write(Request *r, StoreTxn *t) {
        VmParams *p = PARAMS(r, VmParams);
        VmState *st = STATE(r, VmState);
        int q;

        q = store_vm_get(t, st->vm_id, &st->vm);
        if (q == -ENOENT)
                return vm_not_found(r, st->vm_id);
        if (q < 0)
                return q;
        if ((p->ram.set || p->cpu.set || p->disks.set) && !st->vm.described &&
            !(p->ram.set && p->cpu.set))
                return rpc_fail(r, VMM_E_BAD_REQUEST,
                                "VM '%s' is not described yet: give ram and cpu together",
                                st->vm_id);
        if (p->ram.set || p->cpu.set || p->disks.set) {
                st->vm.described = true;
                st->vm.updated_at = now_ms();
        }
        if (p->ram.set)
                st->vm.ram = (uint32_t) p->ram.v;
        if (p->cpu.set)
                st->vm.cpu = (uint32_t) p->cpu.v;
        if (p->disks.set)
                disks_from_params(&st->vm, &p->disks);
        vm_apply_meta(&st->vm, &p->hostname, &p->ip, &p->os);
        if (p->owner.set) {
                if (p->owner.nil)
                        st->vm.owner[0] = '\0';
                else
                        pstr_copy(st->vm.owner, sizeof st->vm.owner, &p->owner);
        }
        uint64_t old_group = st->vm.group;
        if (p->group.set) {
                st->vm.group = p->group.nil ? 0 : p->group.v;
                if (st->vm.group) {
                        StoreGroup g;
                        q = store_group_get(t, st->vm.group, &g);
                        if (q == -ENOENT)
                                return rpc_fail(r, VMM_E_NOT_FOUND,
                                                "group %" PRIu64 " does not exist", st->vm.group);
                        if (q < 0)
                                return q;
                }
        }
        q = store_vm_put(t, &st->vm, &st->conflict);
        if (q == -EBUSY)
                return conflict(r, &st->conflict);
        if (q < 0)
                return q;
        q = events_append(r, t, &(Event) { .type = "vm.updated", .vm_id = st->vm_id });
        /* a move between groups changes both */
        if (q >= 0 && old_group != st->vm.group && old_group)
                q = events_append(r, t, &(Event) { .type = "group.changed", .has_id = true,
                                                   .id = old_group });
        if (q >= 0 && old_group != st->vm.group && st->vm.group)
                q = events_append(r, t, &(Event) { .type = "group.changed", .has_id = true,
                                                   .id = st->vm.group });
        return q;
}

static int access_write(Request *r, StoreTxn *t) {
        VmState *st = STATE(r, VmState);
        bool suspend = strcmp(r->method->name, VMM_M_VM_SUSPEND) == 0;
        int q;

        q = store_vm_get(t, st->vm_id, &st->vm);
        if (q == -ENOENT)
                return vm_not_found(r, st->vm_id);
        if (q < 0)
                return q;
        st->vm.access = suspend ? STORE_ACCESS_SUSPENDED : STORE_ACCESS_ACTIVE;
        q = store_vm_put_same_disks(t, &st->vm);
        if (q >= 0)
                q = events_append(r, t, &(Event) { .type = suspend ? "vm.suspended" : "vm.approved",
                                                   .vm_id = st->vm_id });
        if (q < 0 || !suspend)
                return q;
        return end_sessions(r, t, st->vm_id, NULL, 0, NULL, "suspended", &st->ended);
}

static int vm_record_done(Request *r) {
        VmState *st = STATE(r, VmState);

        ended_detach(r->manager, &st->ended);
        if (strcmp(r->method->name, VMM_M_VM_SET) == 0)
                LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, st->vm_id, "changed VM '%s'", st->vm_id);
        else
                LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, st->vm_id, "%s VM '%s'",
                           strcmp(r->method->name, VMM_M_VM_SUSPEND) == 0 ? "suspended"
                                                                          : "approved",
                           st->vm_id);
        return reply_vm(r, &st->vm);
}

/* ---- the rows ---- */

#define ADMIN_ONLY .callers = CALLER_USER | CALLER_PEER, .min_role = STORE_ROLE_ADMIN
#define VM_STATE .state_size = sizeof(VmState), .state_done = vm_state_done

static const Method m_register = {
        .name = VMM_M_REGISTER, .flags = ON_TCP | METHOD_PEER, .callers = CALLER_ANY,
        .fields = FIELDS(register_fields), .params_size = sizeof(VmParams), VM_STATE,
        .start = register_start, .hash = register_hash, .write = register_write,
        .done = register_done,
};
static const Method m_add = {
        .name = VMM_M_VM_ADD, .flags = ON_TCP, .callers = CALLER_VM,
        .fields = FIELDS(add_fields), .params_size = sizeof(VmParams), VM_STATE,
        .start = add_start, .write = describe_write, .done = describe_done,
};
static const Method m_update = {
        .name = VMM_M_VM_UPDATE, .flags = ON_TCP, .callers = CALLER_VM,
        .fields = FIELDS(update_fields), .params_size = sizeof(VmParams), .check = update_check,
        VM_STATE, .write = describe_write, .done = describe_done,
};
static const Method m_get = {
        .name = VMM_M_VM_GET, .flags = ON_BOTH, .callers = CALLER_SESSION,
        .min_role = STORE_ROLE_VIEWER, .fields = FIELDS(get_fields),
        .params_size = sizeof(GetParams), .start = get_start,
};
static const Method m_create = {
        .name = VMM_M_VM_CREATE, .flags = ON_ADMIN | METHOD_TCP_ADMIN, ADMIN_ONLY,
        .fields = FIELDS(create_fields), .params_size = sizeof(VmParams), .check = create_check,
        VM_STATE, .start = create_start, .hash = cred_hash, .write = create_write,
        .done = create_done,
};
static const Method m_passwd = {
        .name = VMM_M_VM_PASSWD, .flags = ON_ADMIN | METHOD_TCP_ADMIN, ADMIN_ONLY,
        .fields = FIELDS(passwd_fields), .params_size = sizeof(VmParams), VM_STATE,
        .start = vm_passwd_start, .hash = cred_hash, .write = vm_passwd_write,
        .done = vm_passwd_done,
};
static const Method m_delete = {
        .name = VMM_M_VM_DELETE, .flags = ON_ADMIN | METHOD_TCP_ADMIN, ADMIN_ONLY,
        .fields = FIELDS(vm_id_fields), .params_size = sizeof(VmParams), VM_STATE,
        .start = vm_id_start, .write = delete_write, .done = delete_done,
};
static const Method m_set = {
        .name = VMM_M_VM_SET, .flags = ON_BOTH, ADMIN_ONLY,
        .fields = FIELDS(set_fields), .params_size = sizeof(VmParams), VM_STATE,
        .start = vm_id_start, .write = set_write, .done = vm_record_done,
};
static const Method m_approve = {
        .name = VMM_M_VM_APPROVE, .flags = ON_BOTH, ADMIN_ONLY,
        .fields = FIELDS(vm_id_fields), .params_size = sizeof(VmParams), VM_STATE,
        .start = vm_id_start, .write = access_write, .done = vm_record_done,
};
static const Method m_suspend = {
        .name = VMM_M_VM_SUSPEND, .flags = ON_BOTH, ADMIN_ONLY,
        .fields = FIELDS(vm_id_fields), .params_size = sizeof(VmParams), VM_STATE,
        .start = vm_id_start, .write = access_write, .done = vm_record_done,
};

METHOD_ROWS(vm, &m_register, &m_add, &m_update, &m_get, &m_create, &m_passwd, &m_delete, &m_set,
            &m_approve, &m_suspend);
