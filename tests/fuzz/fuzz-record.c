/* SPDX-License-Identifier: MIT */
/* fuzz-record: the LMDB record codecs on hostile bytes (a damaged or
 * hand-edited database). Each decoder gets the input; whatever decodes must
 * encode, decode again to the same struct, and encode to the same bytes. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "store/record.h"

static void check_vm_equal(const StoreVm *a, const StoreVm *b) {
        FUZZ_CHECK(strcmp(a->vm_id, b->vm_id) == 0, "vm_id changed");
        FUZZ_CHECK(strcmp(a->pwhash, b->pwhash) == 0, "pwhash changed");
        FUZZ_CHECK(a->described == b->described, "described changed");
        FUZZ_CHECK(a->ram == b->ram && a->cpu == b->cpu, "ram/cpu changed");
        FUZZ_CHECK(a->registered_at == b->registered_at && a->updated_at == b->updated_at &&
                   a->last_seen_at == b->last_seen_at, "times changed");
        FUZZ_CHECK(a->n_disks == b->n_disks, "disk count %u vs %u", a->n_disks, b->n_disks);
        for (uint32_t i = 0; i < a->n_disks; i++)
                FUZZ_CHECK(strcmp(a->disks[i].id, b->disks[i].id) == 0 &&
                           a->disks[i].size == b->disks[i].size, "disk %u changed", i);
}

static void check_same_bytes(const uint8_t *a, size_t an, const uint8_t *b, size_t bn) {
        FUZZ_CHECK(an == bn && memcmp(a, b, an) == 0, "re-encoding differs (%zu vs %zu bytes)",
                   an, bn);
}

static void fuzz_vm(const uint8_t *data, size_t size) {
        StoreVm vm, vm2;
        uint8_t *buf = NULL, *buf2 = NULL;
        size_t len = 0, len2 = 0;

        int r = record_vm_decode(data, size, &vm);
        FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EPROTO, "vm decode %d", r);
        if (r < 0)
                return;
        FUZZ_CHECK(vm.vm_id[0] != '\0', "empty vm_id decoded");
        FUZZ_CHECK(vm.n_disks <= VMM_MAX_DISKS, "%u disks", vm.n_disks);
        r = record_vm_encode(&vm, &buf, &len);
        FUZZ_CHECK(r == 0, "a decoded vm does not encode: %d", r);
        FUZZ_CHECK(len <= RECORD_MAX_BYTES, "vm re-encodes to %zu bytes", len);
        r = record_vm_decode(buf, len, &vm2);
        FUZZ_CHECK(r == 0, "a re-encoded vm does not decode: %d", r);
        check_vm_equal(&vm, &vm2);
        r = record_vm_encode(&vm2, &buf2, &len2);
        FUZZ_CHECK(r == 0, "second encoding failed: %d", r);
        check_same_bytes(buf, len, buf2, len2);
        free(buf);
        free(buf2);
}

static void fuzz_session(const uint8_t *data, size_t size) {
        static const uint8_t hash[STORE_HASH_BYTES] = { 1, 2, 3, 4, 5 };
        StoreSession s, s2;
        uint8_t *buf = NULL, *buf2 = NULL;
        size_t len = 0, len2 = 0;

        int r = record_session_decode(data, size, hash, &s);
        FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EPROTO, "session decode %d", r);
        if (r < 0)
                return;
        FUZZ_CHECK(memcmp(s.hash, hash, sizeof hash) == 0, "hash not filled in");
        r = record_session_encode(&s, &buf, &len);
        FUZZ_CHECK(r == 0, "a decoded session does not encode: %d", r);
        r = record_session_decode(buf, len, hash, &s2);
        FUZZ_CHECK(r == 0, "a re-encoded session does not decode: %d", r);
        FUZZ_CHECK(strcmp(s.vm_id, s2.vm_id) == 0 && s.created_at == s2.created_at &&
                   s.expires_at == s2.expires_at, "session changed");
        r = record_session_encode(&s2, &buf2, &len2);
        FUZZ_CHECK(r == 0, "second encoding failed: %d", r);
        check_same_bytes(buf, len, buf2, len2);
        free(buf);
        free(buf2);
}

static void fuzz_disk(const uint8_t *data, size_t size) {
        char vm_id[VMM_VM_ID_MAX + 1], vm_id2[VMM_VM_ID_MAX + 1];
        uint64_t sz = 0, sz2 = 0;
        uint8_t *buf = NULL, *buf2 = NULL;
        size_t len = 0, len2 = 0;

        int r = record_disk_decode(data, size, vm_id, &sz);
        FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -EPROTO, "disk decode %d", r);
        if (r < 0)
                return;
        FUZZ_CHECK(memchr(vm_id, '\0', sizeof vm_id) && vm_id[0], "vm_id not a string");
        r = record_disk_encode(vm_id, sz, &buf, &len);
        FUZZ_CHECK(r == 0, "a decoded disk does not encode: %d", r);
        r = record_disk_decode(buf, len, vm_id2, &sz2);
        FUZZ_CHECK(r == 0, "a re-encoded disk does not decode: %d", r);
        FUZZ_CHECK(strcmp(vm_id, vm_id2) == 0 && sz == sz2, "disk changed");
        r = record_disk_encode(vm_id2, sz2, &buf2, &len2);
        FUZZ_CHECK(r == 0, "second encoding failed: %d", r);
        check_same_bytes(buf, len, buf2, len2);
        free(buf);
        free(buf2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* an exact-size copy: ASan sees any read past the record */
        uint8_t *copy = malloc(size ? size : 1);
        FUZZ_CHECK(copy, "out of memory");
        if (size)
                memcpy(copy, data, size);
        fuzz_vm(copy, size);
        fuzz_session(copy, size);
        fuzz_disk(copy, size);
        free(copy);
        return 0;
}
