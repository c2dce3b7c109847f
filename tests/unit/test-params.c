/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "shared/params.h"
#include "vmm/protocol.h"

/* ---- field tables like the daemon's ---- */

typedef struct RegisterParams {
        ParamStr vm_id;
        ParamStr password;
        ParamUint ram;
        ParamUint cpu;
        ParamDisks disks;
} RegisterParams;

static const ParamField register_fields[] = {
        { "vm_id", PARAM_STR, offsetof(RegisterParams, vm_id), true, 1, VMM_VM_ID_MAX,
          valid_vm_id, NULL },
        { "password", PARAM_STR, offsetof(RegisterParams, password), true, VMM_PASSWORD_MIN,
          VMM_PASSWORD_MAX, NULL, NULL },
        { "ram", PARAM_UINT, offsetof(RegisterParams, ram), true, VMM_RAM_MIN, VMM_RAM_MAX,
          NULL, NULL },
        { "cpu", PARAM_UINT, offsetof(RegisterParams, cpu), true, VMM_CPU_MIN, VMM_CPU_MAX,
          NULL, NULL },
        { "disks", PARAM_DISKS, offsetof(RegisterParams, disks), false, 0, 0, NULL, NULL },
};

typedef struct ListParams {
        ParamStr filter;
        ParamUint limit;
        ParamStr after;
} ListParams;

static const char *const filters[] = { "connected", "authorized", "all", NULL };

static const ParamField list_fields[] = {
        { "filter", PARAM_STR, offsetof(ListParams, filter), true, 0, 0, NULL, filters },
        { "limit", PARAM_UINT, offsetof(ListParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX,
          NULL, NULL },
        { "after", PARAM_STR, offsetof(ListParams, after), false, 1, VMM_VM_ID_MAX,
          valid_vm_id, NULL },
};

typedef struct UpdateParams {
        ParamUint ram;
        ParamUint cpu;
        ParamDisks disks;
} UpdateParams;

static const ParamField update_fields[] = {
        { "ram", PARAM_UINT, offsetof(UpdateParams, ram), false, VMM_RAM_MIN, VMM_RAM_MAX,
          NULL, NULL },
        { "cpu", PARAM_UINT, offsetof(UpdateParams, cpu), false, VMM_CPU_MIN, VMM_CPU_MAX,
          NULL, NULL },
        { "disks", PARAM_DISKS, offsetof(UpdateParams, disks), false, 0, 0, NULL, NULL },
};

#define TOKEN "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_A"

/* ---- building requests with msgpack-c ---- */

typedef struct Req {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_unpacked u;
} Req;

/* Starts [0, 1, "m", <params>]: the caller packs params. */
static msgpack_packer *req_begin(Req *r) {
        memset(r, 0, sizeof *r);
        msgpack_sbuffer_init(&r->sb);
        msgpack_packer_init(&r->pk, &r->sb, msgpack_sbuffer_write);
        assert_int_equal(msgpack_pack_array(&r->pk, 4), 0);
        assert_int_equal(msgpack_pack_uint8(&r->pk, 0), 0);
        assert_int_equal(msgpack_pack_uint8(&r->pk, 1), 0);
        assert_int_equal(msgpack_pack_str_with_body(&r->pk, "m", 1), 0);
        return &r->pk;
}

/* Starts [0, 1, "m", [{n entries}]]. */
static msgpack_packer *req_map(Req *r, uint32_t n) {
        msgpack_packer *pk = req_begin(r);
        assert_int_equal(msgpack_pack_array(pk, 1), 0);
        assert_int_equal(msgpack_pack_map(pk, n), 0);
        return pk;
}

static const msgpack_object *req_params(Req *r) {
        size_t off = 0;

        msgpack_unpacked_init(&r->u);
        assert_int_equal(msgpack_unpack_next(&r->u, r->sb.data, r->sb.size, &off),
                         MSGPACK_UNPACK_SUCCESS);
        assert_int_equal(off, r->sb.size);
        assert_int_equal(r->u.data.type, MSGPACK_OBJECT_ARRAY);
        return &r->u.data.via.array.ptr[3];
}

static void req_free(Req *r) {
        msgpack_unpacked_destroy(&r->u);
        msgpack_sbuffer_destroy(&r->sb);
}

static void pstr(msgpack_packer *pk, const char *s) {
        assert_int_equal(msgpack_pack_str_with_body(pk, s, strlen(s)), 0);
}

static void kstr(msgpack_packer *pk, const char *k, const char *v) {
        pstr(pk, k);
        pstr(pk, v);
}

static void kuint(msgpack_packer *pk, const char *k, uint64_t v) {
        pstr(pk, k);
        assert_int_equal(msgpack_pack_uint64(pk, v), 0);
}

/* vm_id, password, ram, cpu: 4 entries */
static void register_base(msgpack_packer *pk) {
        kstr(pk, "vm_id", "vm1");
        kstr(pk, "password", "secret1");
        kuint(pk, "ram", 2048);
        kuint(pk, "cpu", 2);
}

/* n disks {"id": "d<i>", "size": 10+i}; entry bad (if < n) gets an extra key "foo" */
static void pack_disks(msgpack_packer *pk, uint32_t n, uint32_t bad) {
        pstr(pk, "disks");
        assert_int_equal(msgpack_pack_array(pk, n), 0);
        for (uint32_t i = 0; i < n; i++) {
                char id[16];
                snprintf(id, sizeof id, "d%u", i);
                assert_int_equal(msgpack_pack_map(pk, i == bad ? 3 : 2), 0);
                kstr(pk, "id", id);
                kuint(pk, "size", 10 + i);
                if (i == bad)
                        kuint(pk, "foo", 1);
        }
}

#define NO_BAD UINT32_MAX

static int parse_register(Req *r, RegisterParams *p, ParamError *err) {
        return params_parse(req_params(r), register_fields, 5, p, NULL, err);
}

static void expect_error(int r, const ParamError *err, VmmError code, const char *message) {
        assert_int_equal(r, -EINVAL);
        assert_int_equal(err->code, code);
        if (message)
                assert_string_equal(err->message, message);
}

/* ---- tests ---- */

static void test_register_ok(void **state) {
        Req q;
        RegisterParams p;
        ParamError err;

        msgpack_packer *pk = req_map(&q, 5);
        register_base(pk);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 2);
        msgpack_pack_map(pk, 2);
        kstr(pk, "id", "disk1");
        kuint(pk, "size", 100);
        msgpack_pack_map(pk, 1);
        kuint(pk, "size", VMM_DISK_SIZE_MAX);

        assert_int_equal(parse_register(&q, &p, &err), 0);
        assert_true(p.vm_id.set);
        assert_int_equal(p.vm_id.len, 3);
        assert_memory_equal(p.vm_id.ptr, "vm1", 3);
        assert_true(p.password.set);
        assert_int_equal(p.password.len, 7);
        assert_memory_equal(p.password.ptr, "secret1", 7);
        assert_true(p.ram.set);
        assert_int_equal(p.ram.v, 2048);
        assert_true(p.cpu.set);
        assert_int_equal(p.cpu.v, 2);
        assert_true(p.disks.set);
        assert_int_equal(p.disks.n, 2);
        assert_true(p.disks.d[0].id.set);
        assert_int_equal(p.disks.d[0].id.len, 5);
        assert_memory_equal(p.disks.d[0].id.ptr, "disk1", 5);
        assert_int_equal(p.disks.d[0].size, 100);
        assert_false(p.disks.d[1].id.set);
        assert_int_equal(p.disks.d[1].size, VMM_DISK_SIZE_MAX);
        req_free(&q);
}

static void test_out_zeroed_and_optional(void **state) {
        Req q;
        UpdateParams p;
        ParamError err;

        /* [] with only optional fields: nothing set, even over garbage */
        msgpack_packer *pk = req_begin(&q);
        msgpack_pack_array(pk, 0);
        memset(&p, 0xa5, sizeof p);
        assert_int_equal(params_parse(req_params(&q), update_fields, 3, &p, NULL, &err), 0);
        assert_false(p.ram.set);
        assert_false(p.cpu.set);
        assert_false(p.disks.set);
        assert_int_equal(p.disks.n, 0);
        req_free(&q);

        /* [{}] too */
        pk = req_map(&q, 0);
        memset(&p, 0xa5, sizeof p);
        assert_int_equal(params_parse(req_params(&q), update_fields, 3, &p, NULL, &err), 0);
        assert_false(p.ram.set);
        req_free(&q);

        /* disks [] is set and empty */
        pk = req_map(&q, 2);
        kuint(pk, "cpu", 4);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 0);
        assert_int_equal(params_parse(req_params(&q), update_fields, 3, &p, NULL, &err), 0);
        assert_false(p.ram.set);
        assert_true(p.cpu.set);
        assert_int_equal(p.cpu.v, 4);
        assert_true(p.disks.set);
        assert_int_equal(p.disks.n, 0);
        req_free(&q);
}

static void test_params_shape(void **state) {
        Req q;
        UpdateParams p;
        ParamError err;
        int r;
        const char *msg = "params must be [] or [{...}] (one map of named arguments)";

        /* a map, not an array */
        msgpack_packer *pk = req_begin(&q);
        msgpack_pack_map(pk, 0);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, msg);
        req_free(&q);

        /* nil */
        pk = req_begin(&q);
        msgpack_pack_nil(pk);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, msg);
        req_free(&q);

        /* two maps */
        pk = req_begin(&q);
        msgpack_pack_array(pk, 2);
        msgpack_pack_map(pk, 0);
        msgpack_pack_map(pk, 0);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, msg);
        req_free(&q);

        /* [1] and [[]] */
        pk = req_begin(&q);
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint8(pk, 1);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, msg);
        req_free(&q);
        pk = req_begin(&q);
        msgpack_pack_array(pk, 1);
        msgpack_pack_array(pk, 0);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, msg);
        req_free(&q);
}

/* Duplicate keys in a large map (checked by sorting, not pairwise): found
 * wherever they are, nested too; distinct keys pass the shape check. */
static void test_large_map_duplicates(void **state) {
        ParamError err;
        Req q;
        char k[16];

        for (int round = 0; round < 3; round++) {
                msgpack_packer *pk = req_begin(&q);
                msgpack_pack_array(pk, 1);
                msgpack_pack_map(pk, 1);
                pstr(pk, "x");
                msgpack_pack_map(pk, 500);
                for (int i = 0; i < 500; i++) {
                        /* round 1: key 499 repeats key 3; round 2: key 250 repeats 249 */
                        int n = round == 1 && i == 499 ? 3 : round == 2 && i == 250 ? 249 : i;
                        snprintf(k, sizeof k, "k%d", n);
                        kuint(pk, k, (uint64_t) i);
                }
                int r = params_shape_check(req_params(&q), &err);
                if (round == 0)
                        assert_int_equal(r, 0);
                else
                        expect_error(r, &err, VMM_E_BAD_REQUEST,
                                     round == 1 ? "duplicate key 'x.k3'" : "duplicate key 'x.k249'");
                req_free(&q);
        }
}

static void test_keys(void **state) {
        Req q;
        UpdateParams p;
        ParamError err;
        int r;

        /* bin key */
        msgpack_packer *pk = req_map(&q, 1);
        msgpack_pack_bin_with_body(pk, "ram", 3);
        msgpack_pack_uint8(pk, 1);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, "params: keys must be strings");
        req_free(&q);

        /* integer key */
        pk = req_map(&q, 1);
        msgpack_pack_uint8(pk, 1);
        msgpack_pack_uint8(pk, 1);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, "params: keys must be strings");
        req_free(&q);

        /* invalid UTF-8 key */
        pk = req_map(&q, 1);
        msgpack_pack_str_with_body(pk, "r\xff", 2);
        msgpack_pack_uint8(pk, 1);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, "params: a key is not valid UTF-8");
        req_free(&q);

        /* duplicate */
        pk = req_map(&q, 2);
        kuint(pk, "ram", 1);
        kuint(pk, "ram", 2);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, "duplicate key 'ram'");
        req_free(&q);

        /* unknown */
        pk = req_map(&q, 2);
        kuint(pk, "ram", 1);
        kuint(pk, "x", 2);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, "unknown field 'x'");
        req_free(&q);

        /* an unknown key with odd bytes is quoted safely */
        pk = req_map(&q, 1);
        msgpack_pack_str_with_body(pk, "a'b\n\xc3\xa9", 6);
        msgpack_pack_uint8(pk, 1);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, "unknown field 'a?b?\?\?'");
        req_free(&q);

        /* token is an unknown key when tokens are not accepted */
        pk = req_map(&q, 1);
        kstr(pk, "token", TOKEN);
        r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        expect_error(r, &err, VMM_E_BAD_REQUEST, "unknown field 'token'");
        req_free(&q);
}

static void test_missing(void **state) {
        Req q;
        RegisterParams p;
        ParamError err;

        msgpack_packer *pk = req_map(&q, 3);
        kstr(pk, "vm_id", "vm1");
        kstr(pk, "password", "secret1");
        kuint(pk, "cpu", 2);
        expect_error(parse_register(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "missing field 'ram'");
        req_free(&q);

        pk = req_begin(&q);
        msgpack_pack_array(pk, 0);
        expect_error(parse_register(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "missing field 'vm_id'");
        req_free(&q);
}

/* register with vm_id replaced by a value packed by f */
static void check_vm_id(void (*f)(msgpack_packer *), const char *message) {
        Req q;
        RegisterParams p;
        ParamError err;

        msgpack_packer *pk = req_map(&q, 4);
        pstr(pk, "vm_id");
        f(pk);
        kstr(pk, "password", "secret1");
        kuint(pk, "ram", 2048);
        kuint(pk, "cpu", 2);
        expect_error(parse_register(&q, &p, &err), &err, VMM_E_BAD_REQUEST, message);
        req_free(&q);
}

static void v_bin(msgpack_packer *pk) { msgpack_pack_bin_with_body(pk, "vm1", 3); }
static void v_int(msgpack_packer *pk) { msgpack_pack_uint8(pk, 7); }
static void v_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void v_empty(msgpack_packer *pk) { pstr(pk, ""); }
static void v_dash(msgpack_packer *pk) { pstr(pk, "-vm"); }
static void v_space(msgpack_packer *pk) { pstr(pk, "vm 1"); }
static void v_utf8(msgpack_packer *pk) { msgpack_pack_str_with_body(pk, "vm\xc0\x80", 4); }
static void v_49(msgpack_packer *pk) {
        char s[50];
        memset(s, 'a', 49);
        s[49] = '\0';
        pstr(pk, s);
}

static void test_strings(void **state) {
        const char *rule = "vm_id: expected 1..48 characters of [A-Za-z0-9._-], "
                           "first a letter or digit";

        check_vm_id(v_bin, "vm_id: expected a string, got binary");
        check_vm_id(v_int, "vm_id: expected a string");
        check_vm_id(v_nil, "vm_id: expected a string");
        check_vm_id(v_utf8, "vm_id: not valid UTF-8");
        check_vm_id(v_empty, "vm_id: expected a string of 1..48 bytes");
        check_vm_id(v_49, "vm_id: expected a string of 1..48 bytes");
        check_vm_id(v_dash, rule);
        check_vm_id(v_space, rule);

        /* password length bounds: 6 ok, 5 not; 1024 ok, 1025 not */
        for (size_t len = 5; len <= 1025; len++) {
                if (len > 6 && len < 1024)
                        continue;
                Req q;
                RegisterParams p;
                ParamError err;
                char *pw = malloc(len);
                assert_non_null(pw);
                memset(pw, 'p', len);
                msgpack_packer *pk = req_map(&q, 4);
                kstr(pk, "vm_id", "vm1");
                pstr(pk, "password");
                msgpack_pack_str_with_body(pk, pw, len);
                kuint(pk, "ram", 2048);
                kuint(pk, "cpu", 2);
                int r = parse_register(&q, &p, &err);
                if (len == 5 || len == 1025)
                        expect_error(r, &err, VMM_E_BAD_REQUEST,
                                     "password: expected a string of 6..1024 bytes");
                else {
                        assert_int_equal(r, 0);
                        assert_int_equal(p.password.len, len);
                }
                free(pw);
                req_free(&q);
        }

        /* a valid multi-byte UTF-8 password is fine */
        Req q;
        RegisterParams p;
        ParamError err;
        msgpack_packer *pk = req_map(&q, 4);
        kstr(pk, "vm_id", "a.b_c-9");
        kstr(pk, "password", "p\xc3\xa4ss\xf0\x9f\x94\x91");
        kuint(pk, "ram", 1);
        kuint(pk, "cpu", 1);
        assert_int_equal(parse_register(&q, &p, &err), 0);
        assert_int_equal(p.password.len, 9);
        req_free(&q);
}

static void test_choices(void **state) {
        Req q;
        ListParams p;
        ParamError err;

        msgpack_packer *pk = req_map(&q, 3);
        kstr(pk, "filter", "authorized");
        kuint(pk, "limit", VMM_PAGE_MAX);
        kstr(pk, "after", "vm9");
        assert_int_equal(params_parse(req_params(&q), list_fields, 3, &p, NULL, &err), 0);
        assert_true(p.filter.set);
        assert_int_equal(p.filter.len, 10);
        assert_memory_equal(p.filter.ptr, "authorized", 10);
        assert_int_equal(p.limit.v, VMM_PAGE_MAX);
        assert_true(p.after.set);
        req_free(&q);

        pk = req_map(&q, 1);
        kstr(pk, "filter", "some");
        expect_error(params_parse(req_params(&q), list_fields, 3, &p, NULL, &err), &err,
                     VMM_E_BAD_REQUEST, "filter: expected one of connected, authorized, all");
        req_free(&q);

        /* a prefix of a choice is not a choice */
        pk = req_map(&q, 1);
        kstr(pk, "filter", "al");
        expect_error(params_parse(req_params(&q), list_fields, 3, &p, NULL, &err), &err,
                     VMM_E_BAD_REQUEST, NULL);
        req_free(&q);

        pk = req_map(&q, 2);
        kstr(pk, "filter", "all");
        kuint(pk, "limit", 0);
        expect_error(params_parse(req_params(&q), list_fields, 3, &p, NULL, &err), &err,
                     VMM_E_BAD_REQUEST, "limit: expected an integer in 1..10000");
        req_free(&q);
}

/* update {"ram": <value packed by f>} */
static void check_ram(void (*f)(msgpack_packer *), int expect_ok, uint64_t want) {
        Req q;
        UpdateParams p;
        ParamError err;

        msgpack_packer *pk = req_map(&q, 1);
        pstr(pk, "ram");
        f(pk);
        int r = params_parse(req_params(&q), update_fields, 3, &p, NULL, &err);
        if (expect_ok) {
                assert_int_equal(r, 0);
                assert_true(p.ram.set);
                assert_int_equal(p.ram.v, want);
        } else
                expect_error(r, &err, VMM_E_BAD_REQUEST,
                             "ram: expected an integer in 1..4294967295");
        req_free(&q);
}

static void u_neg(msgpack_packer *pk) { msgpack_pack_int64(pk, -5); }
static void u_f32(msgpack_packer *pk) { msgpack_pack_float(pk, 2048.0f); }
static void u_f64(msgpack_packer *pk) { msgpack_pack_double(pk, 2048.0); }
static void u_true(msgpack_packer *pk) { msgpack_pack_true(pk); }
static void u_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void u_str(msgpack_packer *pk) { pstr(pk, "2048"); }
static void u_zero(msgpack_packer *pk) { msgpack_pack_uint64(pk, 0); }
static void u_max(msgpack_packer *pk) { msgpack_pack_uint64(pk, 4294967295ull); }
static void u_over(msgpack_packer *pk) { msgpack_pack_uint64(pk, 4294967296ull); }
static void u_u64max(msgpack_packer *pk) { msgpack_pack_uint64(pk, UINT64_MAX); }
static void u_one(msgpack_packer *pk) { msgpack_pack_uint8(pk, 1); }
/* a positive value in a signed encoding (d0 05) is an unsigned integer for msgpack-c */
static void u_int8(msgpack_packer *pk) { msgpack_pack_int8(pk, 5); }

static void test_uints(void **state) {
        check_ram(u_neg, 0, 0);
        check_ram(u_f32, 0, 0);
        check_ram(u_f64, 0, 0);
        check_ram(u_true, 0, 0);
        check_ram(u_nil, 0, 0);
        check_ram(u_str, 0, 0);
        check_ram(u_zero, 0, 0);
        check_ram(u_over, 0, 0);
        check_ram(u_u64max, 0, 0);
        check_ram(u_max, 1, 4294967295ull);
        check_ram(u_one, 1, 1);
        check_ram(u_int8, 1, 5);

        /* cpu 1024 ok, 1025 not */
        Req q;
        UpdateParams p;
        ParamError err;
        msgpack_packer *pk = req_map(&q, 1);
        kuint(pk, "cpu", 1024);
        assert_int_equal(params_parse(req_params(&q), update_fields, 3, &p, NULL, &err), 0);
        assert_int_equal(p.cpu.v, 1024);
        req_free(&q);
        pk = req_map(&q, 1);
        kuint(pk, "cpu", 1025);
        expect_error(params_parse(req_params(&q), update_fields, 3, &p, NULL, &err), &err,
                     VMM_E_BAD_REQUEST, "cpu: expected an integer in 1..1024");
        req_free(&q);
}

static int parse_update(Req *q, UpdateParams *p, ParamError *err) {
        return params_parse(req_params(q), update_fields, 3, p, NULL, err);
}

static void test_disks_errors(void **state) {
        Req q;
        UpdateParams p;
        ParamError err;
        msgpack_packer *pk;

        /* not an array */
        pk = req_map(&q, 1);
        kuint(pk, "disks", 1);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks: expected an array of {\"id\"?, \"size\"} maps");
        req_free(&q);

        /* an element that is not a map */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 2);
        msgpack_pack_map(pk, 1);
        kuint(pk, "size", 1);
        pstr(pk, "d");
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks[1]: expected a map {\"id\"?, \"size\"}");
        req_free(&q);

        /* unknown key in disk 2 */
        pk = req_map(&q, 1);
        pack_disks(pk, 3, 2);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "unknown field 'disks[2].foo'");
        req_free(&q);

        /* missing size */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 2);
        msgpack_pack_map(pk, 1);
        kuint(pk, "size", 1);
        msgpack_pack_map(pk, 1);
        kstr(pk, "id", "x");
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "missing field 'disks[1].size'");
        req_free(&q);

        /* size 0, size 2^40 + 1, size as float */
        uint64_t sizes[] = { 0, VMM_DISK_SIZE_MAX + 1 };
        for (size_t i = 0; i < 2; i++) {
                pk = req_map(&q, 1);
                pstr(pk, "disks");
                msgpack_pack_array(pk, 1);
                msgpack_pack_map(pk, 1);
                kuint(pk, "size", sizes[i]);
                expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                             "disks[0].size: expected an integer in 1..1099511627776");
                req_free(&q);
        }
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 1);
        pstr(pk, "size");
        msgpack_pack_double(pk, 1.0);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks[0].size: expected an integer in 1..1099511627776");
        req_free(&q);

        /* bad id: bin, invalid characters, too long */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pstr(pk, "id");
        msgpack_pack_bin_with_body(pk, "d1", 2);
        kuint(pk, "size", 1);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks[0].id: expected a string, got binary");
        req_free(&q);

        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        kstr(pk, "id", "d/1");
        kuint(pk, "size", 1);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks[0].id: expected 1..64 characters of [A-Za-z0-9._-], "
                     "first a letter or digit");
        req_free(&q);

        /* duplicate key inside a disk */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        kuint(pk, "size", 1);
        kuint(pk, "size", 2);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "duplicate key 'disks[0].size'");
        req_free(&q);

        /* nil id: no nil params */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pstr(pk, "id");
        msgpack_pack_nil(pk);
        kuint(pk, "size", 2);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks[0].id: expected a string");
        req_free(&q);

        /* nil disks */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_nil(pk);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST, NULL);
        req_free(&q);
}

static void test_disks_duplicate_ids(void **state) {
        Req q;
        UpdateParams p;
        ParamError err;
        msgpack_packer *pk = req_map(&q, 1);

        pstr(pk, "disks");
        msgpack_pack_array(pk, 4);
        const char *ids[] = { "a", "b", NULL, "b" };
        for (int i = 0; i < 4; i++) {
                msgpack_pack_map(pk, ids[i] ? 2 : 1);
                if (ids[i])
                        kstr(pk, "id", ids[i]);
                kuint(pk, "size", 1);
        }
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks: duplicate disk id 'b'");
        req_free(&q);

        /* ids that share a prefix are distinct; unnamed disks never collide */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 4);
        const char *ok[] = { "d", "d1", NULL, NULL };
        for (int i = 0; i < 4; i++) {
                msgpack_pack_map(pk, ok[i] ? 2 : 1);
                if (ok[i])
                        kstr(pk, "id", ok[i]);
                kuint(pk, "size", 1);
        }
        assert_int_equal(parse_update(&q, &p, &err), 0);
        assert_int_equal(p.disks.n, 4);
        assert_false(p.disks.d[3].id.set);
        req_free(&q);
}

static void test_disks_limits(void **state) {
        Req q;
        UpdateParams p;
        ParamError err;
        msgpack_packer *pk;

        /* 64 ok */
        pk = req_map(&q, 1);
        pack_disks(pk, VMM_MAX_DISKS, NO_BAD);
        assert_int_equal(parse_update(&q, &p, &err), 0);
        assert_int_equal(p.disks.n, VMM_MAX_DISKS);
        assert_int_equal(p.disks.d[63].size, 10 + 63);
        assert_memory_equal(p.disks.d[63].id.ptr, "d63", 3);
        req_free(&q);

        /* 65: too_large */
        pk = req_map(&q, 1);
        pack_disks(pk, VMM_MAX_DISKS + 1, NO_BAD);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_TOO_LARGE,
                     "disks: at most 64 disks (got 65)");
        req_free(&q);

        /* 65, one malformed (past the 64th): bad_request wins */
        pk = req_map(&q, 1);
        pack_disks(pk, VMM_MAX_DISKS + 1, 64);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "unknown field 'disks[64].foo'");
        req_free(&q);

        /* 65 and a bad field after them: bad_request wins */
        pk = req_map(&q, 2);
        pack_disks(pk, VMM_MAX_DISKS + 1, NO_BAD);
        kuint(pk, "cpu", 0);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "cpu: expected an integer in 1..1024");
        req_free(&q);

        /* 65 and an unknown key after them */
        pk = req_map(&q, 2);
        pack_disks(pk, VMM_MAX_DISKS + 1, NO_BAD);
        kuint(pk, "bogus", 0);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "unknown field 'bogus'");
        req_free(&q);

        /* 65 with a duplicate id: bad_request */
        pk = req_map(&q, 1);
        pstr(pk, "disks");
        msgpack_pack_array(pk, 65);
        for (int i = 0; i < 65; i++) {
                char id[8];
                snprintf(id, sizeof id, "x%d", i == 64 ? 3 : i);
                msgpack_pack_map(pk, 2);
                kstr(pk, "id", id);
                kuint(pk, "size", 1);
        }
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_BAD_REQUEST,
                     "disks: duplicate disk id 'x3'");
        req_free(&q);

        /* 65 and a missing mandatory field: bad_request */
        RegisterParams rp;
        pk = req_map(&q, 4);
        kstr(pk, "vm_id", "vm1");
        kstr(pk, "password", "secret1");
        kuint(pk, "ram", 1);
        pack_disks(pk, VMM_MAX_DISKS + 1, NO_BAD);
        expect_error(parse_register(&q, &rp, &err), &err, VMM_E_BAD_REQUEST,
                     "missing field 'cpu'");
        req_free(&q);

        /* many disks (a long list on the admin socket) stay fast and exact */
        pk = req_map(&q, 1);
        pack_disks(pk, 20000, NO_BAD);
        expect_error(parse_update(&q, &p, &err), &err, VMM_E_TOO_LARGE,
                     "disks: at most 64 disks (got 20000)");
        req_free(&q);
}

static void test_token(void **state) {
        Req q;
        UpdateParams p;
        ParamError err;
        ParamStr tok;
        msgpack_packer *pk;

        /* accepted and returned */
        pk = req_map(&q, 2);
        kstr(pk, "token", TOKEN);
        kuint(pk, "ram", 3);
        memset(&tok, 0xa5, sizeof tok);
        assert_int_equal(params_parse(req_params(&q), update_fields, 3, &p, &tok, &err), 0);
        assert_true(tok.set);
        assert_int_equal(tok.len, VMM_TOKEN_LEN);
        assert_memory_equal(tok.ptr, TOKEN, VMM_TOKEN_LEN);
        assert_int_equal(p.ram.v, 3);
        req_free(&q);

        /* absent: not set */
        pk = req_map(&q, 1);
        kuint(pk, "ram", 3);
        memset(&tok, 0xa5, sizeof tok);
        assert_int_equal(params_parse(req_params(&q), update_fields, 3, &p, &tok, &err), 0);
        assert_false(tok.set);
        req_free(&q);

        /* wrong shapes */
        const char *bad[] = {
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_",    /* 42 */
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_AB",  /* 44 */
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123+/A",   /* not url-safe */
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123-_=",   /* padding */
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                pk = req_map(&q, 1);
                kstr(pk, "token", bad[i]);
                int r = params_parse(req_params(&q), update_fields, 3, &p, &tok, &err);
                expect_error(r, &err, VMM_E_BAD_REQUEST, NULL);
                assert_non_null(strstr(err.message, "token"));
                req_free(&q);
        }
        pk = req_map(&q, 1);
        pstr(pk, "token");
        msgpack_pack_bin_with_body(pk, TOKEN, VMM_TOKEN_LEN);
        expect_error(params_parse(req_params(&q), update_fields, 3, &p, &tok, &err), &err,
                     VMM_E_BAD_REQUEST, "token: expected a string, got binary");
        req_free(&q);
        pk = req_map(&q, 1);
        kuint(pk, "token", 1);
        expect_error(params_parse(req_params(&q), update_fields, 3, &p, &tok, &err), &err,
                     VMM_E_BAD_REQUEST, "token: expected a string");
        req_free(&q);

        /* twice */
        pk = req_map(&q, 2);
        kstr(pk, "token", TOKEN);
        kstr(pk, "token", TOKEN);
        expect_error(params_parse(req_params(&q), update_fields, 3, &p, &tok, &err), &err,
                     VMM_E_BAD_REQUEST, "duplicate key 'token'");
        req_free(&q);
}

static void test_valid_utf8(void **state) {
        static const struct {
                const char *s;
                size_t len;
                bool ok;
        } cases[] = {
                { "", 0, true },
                { "plain ascii", 11, true },
                { "\x00", 1, true },                   /* NUL is a code point */
                { "\xc3\xa9", 2, true },               /* U+00E9 */
                { "\xe2\x82\xac", 3, true },           /* U+20AC */
                { "\xf0\x9f\x98\x80", 4, true },       /* U+1F600 */
                { "\xf4\x8f\xbf\xbf", 4, true },       /* U+10FFFF */
                { "\xef\xbf\xbf", 3, true },           /* U+FFFF */
                { "\xed\x9f\xbf", 3, true },           /* U+D7FF */
                { "\xee\x80\x80", 3, true },           /* U+E000 */
                { "\xc0\x80", 2, false },              /* overlong NUL */
                { "\xc1\xbf", 2, false },              /* overlong */
                { "\xe0\x80\x80", 3, false },          /* overlong */
                { "\xe0\x9f\xbf", 3, false },          /* overlong */
                { "\xf0\x80\x80\x80", 4, false },      /* overlong */
                { "\xf0\x8f\xbf\xbf", 4, false },      /* overlong */
                { "\xed\xa0\x80", 3, false },          /* U+D800 surrogate */
                { "\xed\xbf\xbf", 3, false },          /* U+DFFF surrogate */
                { "\xf4\x90\x80\x80", 4, false },      /* U+110000 */
                { "\xf5\x80\x80\x80", 4, false },
                { "\xff", 1, false },
                { "\x80", 1, false },                  /* lone continuation */
                { "\xc3", 1, false },                  /* truncated */
                { "\xe2\x82", 2, false },              /* truncated */
                { "\xf0\x9f\x98", 3, false },          /* truncated */
                { "\xc3\x28", 2, false },              /* bad continuation */
                { "\xe2\x28\xac", 3, false },
                { "\xf0\x9f\x28\x80", 4, false },
                { "a\xc3\xa9z", 4, true },
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
                if (valid_utf8(cases[i].s, cases[i].len) != cases[i].ok)
                        fail_msg("valid_utf8 case %zu: expected %d", i, cases[i].ok);
}

static void test_valid_ids(void **state) {
        char s[80];

        assert_true(valid_vm_id("vm1", 3));
        assert_true(valid_vm_id("A", 1));
        assert_true(valid_vm_id("9a._-Z", 6));
        assert_false(valid_vm_id("", 0));
        assert_false(valid_vm_id(".vm", 3));
        assert_false(valid_vm_id("-vm", 3));
        assert_false(valid_vm_id("_vm", 3));
        assert_false(valid_vm_id("vm 1", 4));
        assert_false(valid_vm_id("vm/1", 4));
        assert_false(valid_vm_id("vm\0", 3));
        assert_false(valid_vm_id("v\xc3\xa9", 3));
        memset(s, 'a', sizeof s);
        assert_true(valid_vm_id(s, 48));
        assert_false(valid_vm_id(s, 49));
        assert_true(valid_disk_id(s, 64));
        assert_false(valid_disk_id(s, 65));
        assert_true(valid_id(s, 5, 5));
        assert_false(valid_id(s, 6, 5));

        assert_true(valid_token(TOKEN, 43));
        assert_false(valid_token(TOKEN, 42));
        memcpy(s, TOKEN, 43);
        s[43] = 'A';
        assert_false(valid_token(s, 44));
        s[10] = '+';
        assert_false(valid_token(s, 43));
        s[10] = '=';
        assert_false(valid_token(s, 43));
        s[10] = '.';
        assert_false(valid_token(s, 43));
        s[10] = '_';
        assert_true(valid_token(s, 43));
}

static void test_valid_user_name(void **state) {
        assert_true(valid_user_name("alice", 5));
        assert_true(valid_user_name("a.b_c@d+e-f", 11));
        assert_true(valid_user_name("9", 1));
        assert_false(valid_user_name("", 0));
        assert_false(valid_user_name(".a", 2));
        assert_false(valid_user_name("a b", 3));
        assert_false(valid_user_name("a/b", 3));
        /* a NUL inside (a terminator to strchr, not an allowed character) */
        assert_false(valid_user_name("a\0", 2));
        assert_false(valid_user_name("a\0b", 3));
        char s[66];
        memset(s, 'u', sizeof s);
        assert_true(valid_user_name(s, 64));
        assert_false(valid_user_name(s, 65));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_register_ok),
                cmocka_unit_test(test_out_zeroed_and_optional),
                cmocka_unit_test(test_params_shape),
                cmocka_unit_test(test_keys),
                cmocka_unit_test(test_missing),
                cmocka_unit_test(test_strings),
                cmocka_unit_test(test_choices),
                cmocka_unit_test(test_uints),
                cmocka_unit_test(test_disks_errors),
                cmocka_unit_test(test_disks_duplicate_ids),
                cmocka_unit_test(test_disks_limits),
                cmocka_unit_test(test_token),
                cmocka_unit_test(test_valid_utf8),
                cmocka_unit_test(test_valid_ids),
                cmocka_unit_test(test_valid_user_name),
                cmocka_unit_test(test_large_map_duplicates),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
