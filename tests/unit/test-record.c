/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "shared/macro.h"
#include "store/record.h"

/* ---- fixtures ---- */

static void fill(char *dst, size_t n, char c) {
        memset(dst, c, n);
        dst[n] = 0;
}

/* A VM record at the limits of every field. */
static void vm_full(StoreVm *vm) {
        memset(vm, 0, sizeof(*vm));
        fill(vm->vm_id, VMM_VM_ID_MAX, 'v');
        fill(vm->pwhash, STORE_PWHASH_MAX - 1, 'p');
        vm->described = true;
        vm->ram = UINT32_MAX;
        vm->cpu = 1024;
        vm->registered_at = INT64_MIN;
        vm->updated_at = INT64_MAX;
        vm->last_seen_at = -1;
        vm->n_disks = VMM_MAX_DISKS;
        for (uint32_t i = 0; i < vm->n_disks; i++) {
                fill(vm->disks[i].id, VMM_DISK_ID_MAX, 'a' + (char) (i % 26));
                vm->disks[i].id[0] = (char) ('0' + i % 10);
                vm->disks[i].id[1] = (char) ('0' + i / 10);
                vm->disks[i].size = i == 0 ? UINT64_MAX : i;
        }
}

static void vm_small(StoreVm *vm) {
        memset(vm, 0, sizeof(*vm));
        strcpy(vm->vm_id, "vm1");
        strcpy(vm->pwhash, "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA");
        vm->described = true;
        vm->ram = 2048;
        vm->cpu = 2;
        vm->registered_at = 1763800000000;
        vm->updated_at = 1763800000001;
        vm->last_seen_at = 1763800000002;
        vm->n_disks = 2;
        strcpy(vm->disks[0].id, "disk1");
        vm->disks[0].size = 100;
        strcpy(vm->disks[1].id, "disk0");
        vm->disks[1].size = 200;
}

static void assert_vm_equal(const StoreVm *a, const StoreVm *b) {
        assert_string_equal(a->vm_id, b->vm_id);
        assert_string_equal(a->pwhash, b->pwhash);
        assert_int_equal(a->described, b->described);
        assert_int_equal(a->ram, b->ram);
        assert_int_equal(a->cpu, b->cpu);
        assert_true(a->registered_at == b->registered_at);
        assert_true(a->updated_at == b->updated_at);
        assert_true(a->last_seen_at == b->last_seen_at);
        assert_int_equal(a->n_disks, b->n_disks);
        for (uint32_t i = 0; i < a->n_disks; i++) {
                assert_string_equal(a->disks[i].id, b->disks[i].id);
                assert_true(a->disks[i].size == b->disks[i].size);
        }
}

/* ---- hand-built records, to feed the decoder what the encoder never writes ---- */

typedef void (*PackFunc)(msgpack_packer *pk);

static void pk_str(msgpack_packer *pk, const char *s) {
        msgpack_pack_str(pk, strlen(s));
        msgpack_pack_str_body(pk, s, strlen(s));
}

static void pk_v1(msgpack_packer *pk) { msgpack_pack_uint64(pk, 1); }
static void pk_v2(msgpack_packer *pk) { msgpack_pack_uint64(pk, RECORD_VERSION + 1); }
static void pk_v0(msgpack_packer *pk) { msgpack_pack_uint64(pk, 0); }
static void pk_vneg(msgpack_packer *pk) { msgpack_pack_int64(pk, -1); }
static void pk_vm1(msgpack_packer *pk) { pk_str(pk, "vm1"); }
static void pk_hash(msgpack_packer *pk) { pk_str(pk, "$argon2id$x"); }
static void pk_true(msgpack_packer *pk) { msgpack_pack_true(pk); }
static void pk_u7(msgpack_packer *pk) { msgpack_pack_uint64(pk, 7); }
static void pk_time(msgpack_packer *pk) { msgpack_pack_int64(pk, 1763800000000); }
static void pk_nil(msgpack_packer *pk) { msgpack_pack_nil(pk); }
static void pk_int1(msgpack_packer *pk) { msgpack_pack_int64(pk, 1); }
static void pk_neg(msgpack_packer *pk) { msgpack_pack_int64(pk, -5); }
static void pk_float(msgpack_packer *pk) { msgpack_pack_double(pk, 1.5); }
static void pk_strnum(msgpack_packer *pk) { pk_str(pk, "1"); }
static void pk_bin(msgpack_packer *pk) {
        msgpack_pack_bin(pk, 3);
        msgpack_pack_bin_body(pk, "vm1", 3);
}
static void pk_empty_str(msgpack_packer *pk) { pk_str(pk, ""); }
static void pk_big_u64(msgpack_packer *pk) { msgpack_pack_uint64(pk, UINT64_MAX); }
static void pk_u32_over(msgpack_packer *pk) { msgpack_pack_uint64(pk, (uint64_t) UINT32_MAX + 1); }
static void pk_array(msgpack_packer *pk) { msgpack_pack_array(pk, 0); }
static void pk_map(msgpack_packer *pk) { msgpack_pack_map(pk, 0); }
static void pk_nul_str(msgpack_packer *pk) {
        msgpack_pack_str(pk, 3);
        msgpack_pack_str_body(pk, "a\0b", 3);
}
static void pk_long_vm_id(msgpack_packer *pk) {
        char s[VMM_VM_ID_MAX + 2];
        fill(s, VMM_VM_ID_MAX + 1, 'x');
        pk_str(pk, s);
}
static void pk_long_pwhash(msgpack_packer *pk) {
        char s[STORE_PWHASH_MAX + 1];
        fill(s, STORE_PWHASH_MAX, 'x');
        pk_str(pk, s);
}

static void pk_disks_ok(msgpack_packer *pk) {
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pk_str(pk, "id");
        pk_str(pk, "d1");
        pk_str(pk, "size");
        msgpack_pack_uint64(pk, 10);
}
static void pk_disks_too_many(msgpack_packer *pk) {
        msgpack_pack_array(pk, VMM_MAX_DISKS + 1);
        for (unsigned i = 0; i <= VMM_MAX_DISKS; i++) {
                char id[16];
                snprintf(id, sizeof(id), "d%u", i);
                msgpack_pack_map(pk, 2);
                pk_str(pk, "id");
                pk_str(pk, id);
                pk_str(pk, "size");
                msgpack_pack_uint64(pk, 10);
        }
}
static void pk_disks_not_map(msgpack_packer *pk) {
        msgpack_pack_array(pk, 1);
        pk_str(pk, "d1");
}
static void pk_disks_empty_id(msgpack_packer *pk) {
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pk_str(pk, "id");
        pk_str(pk, "");
        pk_str(pk, "size");
        msgpack_pack_uint64(pk, 10);
}
static void pk_disks_long_id(msgpack_packer *pk) {
        char id[VMM_DISK_ID_MAX + 2];
        fill(id, VMM_DISK_ID_MAX + 1, 'd');
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pk_str(pk, "id");
        pk_str(pk, id);
        pk_str(pk, "size");
        msgpack_pack_uint64(pk, 10);
}
static void pk_disks_neg_size(msgpack_packer *pk) {
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 2);
        pk_str(pk, "id");
        pk_str(pk, "d1");
        pk_str(pk, "size");
        msgpack_pack_int64(pk, -1);
}
static void pk_disks_missing_size(msgpack_packer *pk) {
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 1);
        pk_str(pk, "id");
        pk_str(pk, "d1");
}
static void pk_disks_extra_key(msgpack_packer *pk) {
        msgpack_pack_array(pk, 1);
        msgpack_pack_map(pk, 3);
        pk_str(pk, "id");
        pk_str(pk, "d1");
        pk_str(pk, "size");
        msgpack_pack_uint64(pk, 10);
        pk_str(pk, "vm_id");
        pk_str(pk, "vm1");
}

typedef struct KeyDef {
        const char *key;
        PackFunc val;
} KeyDef;

static const KeyDef vm_keys[] = {
        { "v", pk_v1 },
        { "vm_id", pk_vm1 },
        { "pwhash", pk_hash },
        { "described", pk_true },
        { "ram", pk_u7 },
        { "cpu", pk_u7 },
        { "registered_at", pk_time },
        { "updated_at", pk_time },
        { "last_seen_at", pk_time },
        { "disks", pk_disks_ok },
};

static const KeyDef session_keys[] = {
        { "v", pk_v1 },
        { "vm_id", pk_vm1 },
        { "created_at", pk_time },
        { "expires_at", pk_time },
};

static const KeyDef disk_keys[] = {
        { "v", pk_v1 },
        { "vm_id", pk_vm1 },
        { "size", pk_u7 },
};

typedef struct Mutation {
        const char *key;      /* the key changed */
        PackFunc val;         /* its new value; NULL: the key is left out */
        bool dup;             /* the key appears twice (second time with val) */
        const char *extra;    /* an additional key, with a nil value */
} Mutation;

/* Packs the map of keys with mutation m applied. */
static void build(const KeyDef *keys, size_t n, const Mutation *m, uint8_t **ret, size_t *ret_len) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        size_t size = n;

        if (m->key && !m->val)
                size--;
        if (m->dup)
                size++;
        if (m->extra)
                size++;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, size);
        for (size_t i = 0; i < n; i++) {
                bool hit = m->key && strcmp(m->key, keys[i].key) == 0;

                if (hit && !m->val)
                        continue;
                pk_str(&pk, keys[i].key);
                if (hit && !m->dup)
                        m->val(&pk);
                else
                        keys[i].val(&pk);
                if (hit && m->dup) {
                        pk_str(&pk, keys[i].key);
                        m->val(&pk);
                }
        }
        if (m->extra) {
                pk_str(&pk, m->extra);
                msgpack_pack_nil(&pk);
        }
        assert_non_null(sb.data);
        *ret_len = sb.size;
        *ret = (uint8_t *) msgpack_sbuffer_release(&sb);
}

static const uint8_t zero_hash[STORE_HASH_BYTES];

static int decode_kind(const KeyDef *keys, const uint8_t *buf, size_t len) {
        char vm_id[VMM_VM_ID_MAX + 1];
        uint64_t size;
        StoreVm vm;
        StoreSession s;

        if (keys == vm_keys)
                return record_vm_decode(buf, len, &vm);
        if (keys == session_keys)
                return record_session_decode(buf, len, zero_hash, &s);
        return record_disk_decode(buf, len, vm_id, &size);
}

static void check_mutation(const KeyDef *keys, size_t n, Mutation m, int expected) {
        uint8_t *buf;
        size_t len;
        int r;

        build(keys, n, &m, &buf, &len);
        r = decode_kind(keys, buf, len);
        free(buf);
        if (r != expected)
                fail_msg("key %s%s%s%s: got %d, expected %d", m.key ? m.key : "-",
                         m.val ? "" : " (left out)", m.dup ? " (twice)" : "",
                         m.extra ? " (+extra)" : "", r, expected);
}

/* ---- tests ---- */

static void test_vm_round_trip(void **state) {
        StoreVm in, out;
        uint8_t *buf = NULL;
        size_t len = 0;

        vm_full(&in);
        assert_int_equal(record_vm_encode(&in, &buf, &len), 0);
        assert_non_null(buf);
        assert_true(len > 0 && len <= RECORD_MAX_BYTES);
        memset(&out, 0x55, sizeof(out));
        assert_int_equal(record_vm_decode(buf, len, &out), 0);
        assert_vm_equal(&in, &out);
        free(buf);

        vm_small(&in);
        in.described = false;
        in.ram = in.cpu = 0;
        in.n_disks = 0;
        in.pwhash[0] = 0;
        assert_int_equal(record_vm_encode(&in, &buf, &len), 0);
        assert_int_equal(record_vm_decode(buf, len, &out), 0);
        assert_vm_equal(&in, &out);
        assert_int_equal(out.n_disks, 0);
        free(buf);
}

static void test_session_disk_round_trip(void **state) {
        StoreSession in = { 0 }, out;
        uint8_t hash[STORE_HASH_BYTES], *buf = NULL;
        char vm_id[VMM_VM_ID_MAX + 1];
        uint64_t size;
        size_t len;

        for (unsigned i = 0; i < sizeof(hash); i++)
                hash[i] = (uint8_t) (i * 7 + 1);
        fill(in.vm_id, VMM_VM_ID_MAX, 'z');
        in.created_at = 1763800000000;
        in.expires_at = -3;
        assert_int_equal(record_session_encode(&in, &buf, &len), 0);
        assert_int_equal(record_session_decode(buf, len, hash, &out), 0);
        assert_string_equal(out.vm_id, in.vm_id);
        assert_true(out.created_at == in.created_at);
        assert_true(out.expires_at == in.expires_at);
        assert_memory_equal(out.hash, hash, sizeof(hash));
        free(buf);

        assert_int_equal(record_disk_encode("vm-7", UINT64_MAX, &buf, &len), 0);
        assert_int_equal(record_disk_decode(buf, len, vm_id, &size), 0);
        assert_string_equal(vm_id, "vm-7");
        assert_true(size == UINT64_MAX);
        free(buf);
}

static void test_encode_rejects(void **state) {
        StoreVm vm;
        StoreSession s = { 0 };
        uint8_t *buf = (uint8_t *) "untouched";
        size_t len = 12345;
        char long_id[VMM_VM_ID_MAX + 2];

        vm_small(&vm);
        vm.n_disks = VMM_MAX_DISKS + 1;
        assert_int_equal(record_vm_encode(&vm, &buf, &len), -EINVAL);
        vm_small(&vm);
        vm.vm_id[0] = 0;
        assert_int_equal(record_vm_encode(&vm, &buf, &len), -EINVAL);
        vm_small(&vm);
        memset(vm.vm_id, 'x', sizeof(vm.vm_id));   /* no NUL */
        assert_int_equal(record_vm_encode(&vm, &buf, &len), -EINVAL);
        vm_small(&vm);
        memset(vm.pwhash, 'x', sizeof(vm.pwhash));
        assert_int_equal(record_vm_encode(&vm, &buf, &len), -EINVAL);
        vm_small(&vm);
        vm.disks[1].id[0] = 0;
        assert_int_equal(record_vm_encode(&vm, &buf, &len), -EINVAL);
        assert_int_equal(record_session_encode(&s, &buf, &len), -EINVAL);
        fill(long_id, VMM_VM_ID_MAX + 1, 'q');
        assert_int_equal(record_disk_encode(long_id, 1, &buf, &len), -EINVAL);
        assert_int_equal(record_disk_encode("", 1, &buf, &len), -EINVAL);
        /* outputs untouched on failure */
        assert_string_equal((const char *) buf, "untouched");
        assert_int_equal(len, 12345);
}

/* Every proper prefix of a valid record is malformed, never a crash. The
 * prefix is copied to a buffer of exactly its length so that ASan sees any
 * read past it. */
static void truncate_all(const uint8_t *buf, size_t len, int (*decode)(const uint8_t *, size_t)) {
        for (size_t i = 0; i < len; i++) {
                uint8_t *copy = malloc(i ? i : 1);
                int r;

                assert_non_null(copy);
                memcpy(copy, buf, i);
                r = decode(copy, i);
                free(copy);
                if (r != -EBADMSG)
                        fail_msg("prefix %zu/%zu: got %d, expected -EBADMSG", i, len, r);
        }
        assert_int_equal(decode(buf, len), 0);
}

static int dec_vm(const uint8_t *b, size_t n) {
        StoreVm vm;
        return record_vm_decode(b, n, &vm);
}

static int dec_session(const uint8_t *b, size_t n) {
        StoreSession s;
        return record_session_decode(b, n, zero_hash, &s);
}

static int dec_disk(const uint8_t *b, size_t n) {
        char vm_id[VMM_VM_ID_MAX + 1];
        uint64_t size;
        return record_disk_decode(b, n, vm_id, &size);
}

static void test_truncated(void **state) {
        StoreVm vm;
        StoreSession s = { 0 };
        uint8_t *buf;
        size_t len;

        vm_full(&vm);
        assert_int_equal(record_vm_encode(&vm, &buf, &len), 0);
        truncate_all(buf, len, dec_vm);
        free(buf);

        vm_small(&vm);
        assert_int_equal(record_vm_encode(&vm, &buf, &len), 0);
        truncate_all(buf, len, dec_vm);
        free(buf);

        strcpy(s.vm_id, "vm1");
        assert_int_equal(record_session_encode(&s, &buf, &len), 0);
        truncate_all(buf, len, dec_session);
        free(buf);

        assert_int_equal(record_disk_encode("vm1", 5, &buf, &len), 0);
        truncate_all(buf, len, dec_disk);
        free(buf);
}

static void test_trailing_and_hostile(void **state) {
        static const uint8_t huge_map[] = { 0xdf, 0x40, 0x00, 0x00, 0x00 };
        static const uint8_t huge_array[] = { 0xdd, 0x00, 0x40, 0x00, 0x00 };
        static const uint8_t never[] = { 0xc1 };
        StoreVm vm;
        uint8_t *buf, *longer;
        size_t len;

        assert_int_equal(dec_vm(huge_map, sizeof(huge_map)), -EBADMSG);
        assert_int_equal(dec_vm(huge_array, sizeof(huge_array)), -EBADMSG);
        assert_int_equal(dec_session(huge_map, sizeof(huge_map)), -EBADMSG);
        assert_int_equal(dec_disk(never, sizeof(never)), -EBADMSG);
        assert_int_equal(dec_vm(NULL, 0), -EBADMSG);

        vm_small(&vm);
        assert_int_equal(record_vm_encode(&vm, &buf, &len), 0);
        /* a trailing byte after a valid record */
        longer = malloc(len + 1);
        assert_non_null(longer);
        memcpy(longer, buf, len);
        longer[len] = 0xc0;
        assert_int_equal(dec_vm(longer, len + 1), -EBADMSG);
        /* every byte flipped in turn: decodes or is refused, never crashes, and
         * a success still holds a well-formed vm */
        for (size_t i = 0; i < len; i++) {
                StoreVm out;
                int r;

                memcpy(longer, buf, len);
                longer[i] ^= 0xff;
                r = record_vm_decode(longer, len, &out);
                if (r == 0) {
                        assert_true(strlen(out.vm_id) >= 1 && strlen(out.vm_id) <= VMM_VM_ID_MAX);
                        assert_true(out.n_disks <= VMM_MAX_DISKS);
                } else if (r != -EBADMSG && r != -EPROTO)
                        fail_msg("flip at %zu: unexpected %d", i, r);
        }
        free(longer);
        free(buf);
        /* a record too large to be ours */
        longer = calloc(1, RECORD_MAX_BYTES + 1);
        assert_non_null(longer);
        assert_int_equal(dec_vm(longer, RECORD_MAX_BYTES + 1), -EBADMSG);
        free(longer);
}

static void test_versions(void **state) {
        /* newer: -EPROTO, even when the rest would not decode as version 1 */
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "v", pk_v2, false, NULL },
                       -EPROTO);
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "v", pk_v2, false, "future" },
                       -EPROTO);
        check_mutation(session_keys, ELEMENTSOF(session_keys),
                       (Mutation) { "v", pk_v2, false, NULL }, -EPROTO);
        check_mutation(disk_keys, ELEMENTSOF(disk_keys), (Mutation) { "v", pk_v2, false, NULL },
                       -EPROTO);
        /* the unmutated builds decode */
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { NULL, NULL, false, NULL }, 0);
        check_mutation(session_keys, ELEMENTSOF(session_keys),
                       (Mutation) { NULL, NULL, false, NULL }, 0);
        check_mutation(disk_keys, ELEMENTSOF(disk_keys), (Mutation) { NULL, NULL, false, NULL },
                       0);
        /* missing, zero, negative, wrong type, twice */
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "v", NULL, false, NULL },
                       -EBADMSG);
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "v", pk_v0, false, NULL },
                       -EBADMSG);
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "v", pk_vneg, false, NULL },
                       -EBADMSG);
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "v", pk_strnum, false, NULL },
                       -EBADMSG);
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "v", pk_v1, true, NULL },
                       -EBADMSG);
}

static void test_wrong_types(void **state) {
        static const struct {
                const char *key;
                PackFunc val;
        } bad_vm[] = {
                { "vm_id", pk_int1 }, { "vm_id", pk_empty_str }, { "vm_id", pk_long_vm_id },
                { "vm_id", pk_bin }, { "vm_id", pk_nil }, { "vm_id", pk_nul_str },
                { "pwhash", pk_int1 }, { "pwhash", pk_long_pwhash },
                { "described", pk_int1 }, { "described", pk_nil },
                { "ram", pk_strnum }, { "ram", pk_neg }, { "ram", pk_float },
                { "ram", pk_u32_over }, { "cpu", pk_true }, { "cpu", pk_u32_over },
                { "registered_at", pk_big_u64 }, { "registered_at", pk_float },
                { "updated_at", pk_strnum }, { "last_seen_at", pk_nil },
                { "disks", pk_map }, { "disks", pk_nil }, { "disks", pk_disks_too_many },
                { "disks", pk_disks_not_map }, { "disks", pk_disks_empty_id },
                { "disks", pk_disks_long_id }, { "disks", pk_disks_neg_size },
                { "disks", pk_disks_missing_size }, { "disks", pk_disks_extra_key },
        };

        for (size_t i = 0; i < ELEMENTSOF(bad_vm); i++)
                check_mutation(vm_keys, ELEMENTSOF(vm_keys),
                               (Mutation) { bad_vm[i].key, bad_vm[i].val, false, NULL }, -EBADMSG);
        /* every key left out, given twice, and an unknown key */
        for (size_t i = 1; i < ELEMENTSOF(vm_keys); i++) {
                check_mutation(vm_keys, ELEMENTSOF(vm_keys),
                               (Mutation) { vm_keys[i].key, NULL, false, NULL }, -EBADMSG);
                check_mutation(vm_keys, ELEMENTSOF(vm_keys),
                               (Mutation) { vm_keys[i].key, vm_keys[i].val, true, NULL },
                               -EBADMSG);
        }
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { NULL, NULL, false, "extra" },
                       -EBADMSG);
        /* the empty array of disks is fine */
        check_mutation(vm_keys, ELEMENTSOF(vm_keys), (Mutation) { "disks", pk_array, false, NULL },
                       0);

        for (size_t i = 1; i < ELEMENTSOF(session_keys); i++)
                check_mutation(session_keys, ELEMENTSOF(session_keys),
                               (Mutation) { session_keys[i].key, NULL, false, NULL }, -EBADMSG);
        check_mutation(session_keys, ELEMENTSOF(session_keys),
                       (Mutation) { "vm_id", pk_array, false, NULL }, -EBADMSG);
        check_mutation(session_keys, ELEMENTSOF(session_keys),
                       (Mutation) { "expires_at", pk_float, false, NULL }, -EBADMSG);
        check_mutation(session_keys, ELEMENTSOF(session_keys),
                       (Mutation) { NULL, NULL, false, "hash" }, -EBADMSG);
        check_mutation(disk_keys, ELEMENTSOF(disk_keys),
                       (Mutation) { "size", pk_neg, false, NULL }, -EBADMSG);
        check_mutation(disk_keys, ELEMENTSOF(disk_keys),
                       (Mutation) { "vm_id", pk_long_vm_id, false, NULL }, -EBADMSG);
        check_mutation(disk_keys, ELEMENTSOF(disk_keys), (Mutation) { "size", NULL, false, NULL },
                       -EBADMSG);

        /* a root that is not a map */
        {
                static const uint8_t arr[] = { 0x91, 0x01 };
                static const uint8_t num[] = { 0x01 };
                assert_int_equal(dec_vm(arr, sizeof(arr)), -EBADMSG);
                assert_int_equal(dec_session(num, sizeof(num)), -EBADMSG);
        }
}

static void test_decode_failure_leaves_output(void **state) {
        StoreVm vm, out;
        uint8_t *buf;
        size_t len;

        vm_small(&vm);
        assert_int_equal(record_vm_encode(&vm, &buf, &len), 0);
        memset(&out, 0x5a, sizeof(out));
        assert_int_equal(record_vm_decode(buf, len - 1, &out), -EBADMSG);
        for (size_t i = 0; i < sizeof(out); i++)
                assert_int_equal(((uint8_t *) &out)[i], 0x5a);
        free(buf);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_vm_round_trip),
                cmocka_unit_test(test_session_disk_round_trip),
                cmocka_unit_test(test_encode_rejects),
                cmocka_unit_test(test_truncated),
                cmocka_unit_test(test_trailing_and_hostile),
                cmocka_unit_test(test_versions),
                cmocka_unit_test(test_wrong_types),
                cmocka_unit_test(test_decode_failure_leaves_output),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
