/* SPDX-License-Identifier: MIT */
/* fuzz-params: the declarative params parser on hostile objects.
 *
 * The input goes through the pre-scan (TCP limits) and msgpack-c like a
 * request does. If it is a request-shaped array its 4th element is the params,
 * else the whole object is. Every table below (copies of the daemon's
 * register, auth, vm.update, vm.list and resume tables) parses it; an error
 * must carry a code and a message, a success must satisfy every rule of the
 * table, and a second parse must give the same answer. */
#include <errno.h>
#include <msgpack.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "shared/mpscan.h"
#include "shared/params.h"

typedef struct RegisterParams {
        ParamStr vm_id, password;
        ParamUint ram, cpu;
        ParamDisks disks;
} RegisterParams;

static const ParamField register_fields[] = {
        { "vm_id", PARAM_STR, offsetof(RegisterParams, vm_id), true, 1, VMM_VM_ID_MAX,
          valid_vm_id, NULL },
        { "password", PARAM_STR, offsetof(RegisterParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
        { "ram", PARAM_UINT, offsetof(RegisterParams, ram), true, VMM_RAM_MIN, VMM_RAM_MAX, NULL,
          NULL },
        { "cpu", PARAM_UINT, offsetof(RegisterParams, cpu), true, VMM_CPU_MIN, VMM_CPU_MAX, NULL,
          NULL },
        { "disks", PARAM_DISKS, offsetof(RegisterParams, disks), false, 0, VMM_MAX_DISKS, NULL,
          NULL },
};

typedef struct UpdateParams {
        ParamUint ram, cpu;
        ParamDisks disks;
} UpdateParams;

static const ParamField update_fields[] = {
        { "ram", PARAM_UINT, offsetof(UpdateParams, ram), false, VMM_RAM_MIN, VMM_RAM_MAX, NULL,
          NULL },
        { "cpu", PARAM_UINT, offsetof(UpdateParams, cpu), false, VMM_CPU_MIN, VMM_CPU_MAX, NULL,
          NULL },
        { "disks", PARAM_DISKS, offsetof(UpdateParams, disks), false, 0, VMM_MAX_DISKS, NULL,
          NULL },
};

typedef struct ListParams {
        ParamStr filter;
        ParamUint limit;
        ParamStr after;
} ListParams;

static const char *const filter_choices[] = { "connected", "authorized", "all", NULL };

static const ParamField list_fields[] = {
        { "filter", PARAM_STR, offsetof(ListParams, filter), true, 1, 16, NULL, filter_choices },
        { "limit", PARAM_UINT, offsetof(ListParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX,
          NULL, NULL },
        { "after", PARAM_STR, offsetof(ListParams, after), false, 0, 1024, NULL, NULL },
};

typedef struct ResumeParams {
        ParamStr token;
} ResumeParams;

static const ParamField resume_fields[] = {
        { "token", PARAM_STR, offsetof(ResumeParams, token), true, VMM_TOKEN_LEN, VMM_TOKEN_LEN,
          valid_token, NULL },
};

typedef union AnyParams {
        RegisterParams reg;
        UpdateParams upd;
        ListParams list;
        ResumeParams res;
} AnyParams;

typedef struct Table {
        const char *name;
        const ParamField *fields;
        size_t n;
        bool token;
} Table;

static const Table tables[] = {
        { "register", register_fields, sizeof register_fields / sizeof register_fields[0], false },
        { "auth", register_fields, 2, false },
        { "vm.update", update_fields, sizeof update_fields / sizeof update_fields[0], true },
        { "vm.list", list_fields, sizeof list_fields / sizeof list_fields[0], true },
        { "resume", resume_fields, 1, false },
        { "none", NULL, 0, true },
};

static size_t message_len(const ParamError *e) {
        const char *nul = memchr(e->message, '\0', sizeof e->message);
        FUZZ_CHECK(nul, "error message not terminated");
        return (size_t) (nul - e->message);
}

static void check_str(const ParamField *f, const ParamStr *s) {
        if (!s->set) {
                FUZZ_CHECK(!f->mandatory, "mandatory '%s' missing after success", f->name);
                return;
        }
        FUZZ_CHECK(s->ptr || s->len == 0, "'%s' has no bytes", f->name);
        FUZZ_CHECK(s->len >= f->min, "'%s' shorter than %llu", f->name,
                   (unsigned long long) f->min);
        FUZZ_CHECK(f->max == 0 || s->len <= f->max, "'%s' longer than %llu", f->name,
                   (unsigned long long) f->max);
        FUZZ_CHECK(valid_utf8(s->ptr, s->len), "'%s' not UTF-8", f->name);
        if (f->check)
                FUZZ_CHECK(f->check(s->ptr, s->len), "'%s' fails its check", f->name);
        if (f->choices) {
                bool found = false;
                for (size_t i = 0; f->choices[i]; i++)
                        if (strlen(f->choices[i]) == s->len &&
                            memcmp(f->choices[i], s->ptr, s->len) == 0)
                                found = true;
                FUZZ_CHECK(found, "'%s' not one of the choices", f->name);
        }
}

static void check_uint(const ParamField *f, const ParamUint *u) {
        if (!u->set) {
                FUZZ_CHECK(!f->mandatory, "mandatory '%s' missing after success", f->name);
                return;
        }
        if (f->min != 0 || f->max != 0)
                FUZZ_CHECK(u->v >= f->min && u->v <= f->max, "'%s' = %llu out of range",
                           f->name, (unsigned long long) u->v);
}

static void check_disks(const ParamField *f, const ParamDisks *d) {
        if (!d->set) {
                FUZZ_CHECK(!f->mandatory, "mandatory '%s' missing after success", f->name);
                FUZZ_CHECK(d->n == 0, "unset disks with %zu entries", d->n);
                return;
        }
        FUZZ_CHECK(d->n <= VMM_MAX_DISKS, "%zu disks", d->n);
        for (size_t i = 0; i < d->n; i++) {
                const ParamDisk *x = &d->d[i];
                FUZZ_CHECK(x->size >= VMM_DISK_SIZE_MIN && x->size <= VMM_DISK_SIZE_MAX,
                           "disk %zu size %llu", i, (unsigned long long) x->size);
                if (!x->id.set)
                        continue;
                FUZZ_CHECK(valid_disk_id(x->id.ptr, x->id.len), "disk %zu id invalid", i);
                for (size_t j = 0; j < i; j++)
                        FUZZ_CHECK(!d->d[j].id.set || d->d[j].id.len != x->id.len ||
                                   memcmp(d->d[j].id.ptr, x->id.ptr, x->id.len) != 0,
                                   "disks %zu and %zu share an id", j, i);
        }
}

static void run_table(const Table *t, const msgpack_object *params) {
        AnyParams p1, p2;
        ParamStr tok1, tok2;
        ParamError e1, e2;

        memset(&p1, 0xa5, sizeof p1);
        memset(&e1, 0xa5, sizeof e1);
        memset(&tok1, 0xa5, sizeof tok1);
        int r1 = params_parse(params, t->fields, t->n, &p1, t->token ? &tok1 : NULL, &e1);
        memset(&p2, 0, sizeof p2);
        memset(&e2, 0, sizeof e2);
        int r2 = params_parse(params, t->fields, t->n, &p2, t->token ? &tok2 : NULL, &e2);
        FUZZ_CHECK(r1 == r2, "%s: %d then %d", t->name, r1, r2);

        if (r1 < 0) {
                FUZZ_CHECK(r1 == -EINVAL || r1 == -ENOMEM, "%s: returned %d", t->name, r1);
                size_t n = message_len(&e1);
                FUZZ_CHECK(n > 0, "%s: error without a message", t->name);
                FUZZ_CHECK(n == message_len(&e2) && memcmp(e1.message, e2.message, n) == 0 &&
                           e1.code == e2.code, "%s: two different errors", t->name);
                if (r1 == -EINVAL)
                        FUZZ_CHECK(e1.code == VMM_E_BAD_REQUEST || e1.code == VMM_E_TOO_LARGE,
                                   "%s: code %d", t->name, (int) e1.code);
                else
                        FUZZ_CHECK(e1.code == VMM_E_INTERNAL, "%s: code %d", t->name,
                                   (int) e1.code);
                return;
        }
        FUZZ_CHECK(r1 == 0, "%s: returned %d", t->name, r1);
        for (size_t i = 0; i < t->n; i++) {
                const ParamField *f = &t->fields[i];
                const void *at = (const char *) &p1 + f->offset;
                switch (f->type) {
                case PARAM_STR:
                        check_str(f, at);
                        break;
                case PARAM_UINT:
                        check_uint(f, at);
                        break;
                case PARAM_DISKS:
                        check_disks(f, at);
                        break;
                default:
                        FUZZ_CHECK(false, "field type %d", (int) f->type);
                }
        }
        if (t->token && tok1.set) {
                FUZZ_CHECK(valid_token(tok1.ptr, tok1.len), "%s: bad token accepted", t->name);
                FUZZ_CHECK(tok2.set && tok2.len == tok1.len, "%s: token differs", t->name);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        MpScan s;
        size_t len = 0, off = 0;
        msgpack_unpacked u;

        mpscan_init(&s, VMM_MAX_MSG_TCP, VMM_MAX_DEPTH);
        if (mpscan_feed(&s, data, size, &len) != MPSCAN_COMPLETE)
                return 0;

        /* a private copy of exactly the object's bytes, so that ASan sees reads past it */
        char *copy = malloc(len);
        FUZZ_CHECK(copy, "out of memory");
        memcpy(copy, data, len);
        msgpack_unpacked_init(&u);
        if (msgpack_unpack_next(&u, copy, len, &off) == MSGPACK_UNPACK_SUCCESS) {
                const msgpack_object *params = &u.data;
                if (u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 4)
                        params = &u.data.via.array.ptr[3];
                for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++)
                        run_table(&tables[i], params);
        }
        msgpack_unpacked_destroy(&u);
        free(copy);
        return 0;
}
