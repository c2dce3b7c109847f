/* SPDX-License-Identifier: MIT */
/* Record codecs (see record.h for the layout). Decoding never trusts the
 * bytes: the bounded pre-scanner sees them first, so msgpack-c never
 * allocates for a count that the bytes cannot hold. */

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "shared/macro.h"
#include "shared/mpscan.h"

/* Nesting of each record kind: the vm is map > disks array > disk map. */
#define RECORD_VM_DEPTH 3
#define RECORD_FLAT_DEPTH 1

/* ---- encoding ---- */

static int pack_str(msgpack_packer *pk, const char *s, size_t n) {
        return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static int pack_key(msgpack_packer *pk, const char *key) {
        return pack_str(pk, key, strlen(key));
}

static int pack_kv_str(msgpack_packer *pk, const char *key, const char *v, size_t n) {
        return pack_key(pk, key) || pack_str(pk, v, n);
}

static int pack_kv_u64(msgpack_packer *pk, const char *key, uint64_t v) {
        return pack_key(pk, key) || msgpack_pack_uint64(pk, v);
}

static int pack_kv_i64(msgpack_packer *pk, const char *key, int64_t v) {
        return pack_key(pk, key) || msgpack_pack_int64(pk, v);
}

/* Length of a NUL-terminated string held in a fixed array, or SIZE_MAX when
 * the array holds no NUL. */
static size_t field_len(const char *s, size_t size) {
        size_t n = strnlen(s, size);
        return n < size ? n : SIZE_MAX;
}

/* Hands the buffer over on success, frees it on failure. */
static int encode_finish(msgpack_sbuffer *sb, bool failed, uint8_t **ret_buf, size_t *ret_len) {
        if (failed || !sb->data) {
                msgpack_sbuffer_destroy(sb);
                return -ENOMEM;
        }
        *ret_len = sb->size;
        *ret_buf = (uint8_t *) msgpack_sbuffer_release(sb);
        return 0;
}

int record_vm_encode(const StoreVm *vm, uint8_t **ret_buf, size_t *ret_len) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        size_t id_len, pw_len;
        bool failed;

        if (!vm || !ret_buf || !ret_len)
                return -EINVAL;
        id_len = field_len(vm->vm_id, sizeof(vm->vm_id));
        pw_len = field_len(vm->pwhash, sizeof(vm->pwhash));
        if (id_len == 0 || id_len == SIZE_MAX || pw_len == SIZE_MAX || vm->n_disks > VMM_MAX_DISKS)
                return -EINVAL;
        for (uint32_t i = 0; i < vm->n_disks; i++) {
                size_t n = field_len(vm->disks[i].id, sizeof(vm->disks[i].id));
                if (n == 0 || n == SIZE_MAX)
                        return -EINVAL;
        }

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        failed = msgpack_pack_map(&pk, 10) ||
                pack_kv_u64(&pk, "v", RECORD_VERSION) ||
                pack_kv_str(&pk, "vm_id", vm->vm_id, id_len) ||
                pack_kv_str(&pk, "pwhash", vm->pwhash, pw_len) ||
                pack_key(&pk, "described") ||
                (vm->described ? msgpack_pack_true(&pk) : msgpack_pack_false(&pk)) ||
                pack_kv_u64(&pk, "ram", vm->ram) ||
                pack_kv_u64(&pk, "cpu", vm->cpu) ||
                pack_kv_i64(&pk, "registered_at", vm->registered_at) ||
                pack_kv_i64(&pk, "updated_at", vm->updated_at) ||
                pack_kv_i64(&pk, "last_seen_at", vm->last_seen_at) ||
                pack_key(&pk, "disks") ||
                msgpack_pack_array(&pk, vm->n_disks);
        for (uint32_t i = 0; !failed && i < vm->n_disks; i++)
                failed = msgpack_pack_map(&pk, 2) ||
                        pack_kv_str(&pk, "id", vm->disks[i].id, strlen(vm->disks[i].id)) ||
                        pack_kv_u64(&pk, "size", vm->disks[i].size);
        return encode_finish(&sb, failed, ret_buf, ret_len);
}

int record_session_encode(const StoreSession *s, uint8_t **ret_buf, size_t *ret_len) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        size_t id_len;
        bool failed;

        if (!s || !ret_buf || !ret_len)
                return -EINVAL;
        id_len = field_len(s->vm_id, sizeof(s->vm_id));
        if (id_len == 0 || id_len == SIZE_MAX)
                return -EINVAL;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        failed = msgpack_pack_map(&pk, 4) ||
                pack_kv_u64(&pk, "v", RECORD_VERSION) ||
                pack_kv_str(&pk, "vm_id", s->vm_id, id_len) ||
                pack_kv_i64(&pk, "created_at", s->created_at) ||
                pack_kv_i64(&pk, "expires_at", s->expires_at);
        return encode_finish(&sb, failed, ret_buf, ret_len);
}

int record_disk_encode(const char *vm_id, uint64_t size, uint8_t **ret_buf, size_t *ret_len) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        size_t id_len;
        bool failed;

        if (!vm_id || !ret_buf || !ret_len)
                return -EINVAL;
        id_len = strnlen(vm_id, VMM_VM_ID_MAX + 1);
        if (id_len == 0 || id_len > VMM_VM_ID_MAX)
                return -EINVAL;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        failed = msgpack_pack_map(&pk, 3) ||
                pack_kv_u64(&pk, "v", RECORD_VERSION) ||
                pack_kv_str(&pk, "vm_id", vm_id, id_len) ||
                pack_kv_u64(&pk, "size", size);
        return encode_finish(&sb, failed, ret_buf, ret_len);
}

/* ---- decoding ---- */

typedef enum FieldKind {
        FIELD_VERSION,  /* checked by record_unpack; only skipped here */
        FIELD_STR,      /* char[size], NUL-terminated, length min..size-1, no NUL inside */
        FIELD_BOOL,
        FIELD_U32,
        FIELD_U64,
        FIELD_I64,
        FIELD_DISKS,    /* dst is a StoreVm */
        _FIELD_KIND_MAX,
        _FIELD_KIND_INVALID = -1,
} FieldKind;

typedef struct Field {
        const char *name;
        FieldKind kind;
        void *dst;
        size_t size;    /* FIELD_STR: size of the array */
        size_t min;     /* FIELD_STR: minimum length */
} Field;

static bool key_is(const msgpack_object *k, const char *name) {
        return k->type == MSGPACK_OBJECT_STR && streq_n(k->via.str.ptr, k->via.str.size, name);
}

/* Records are decoded in a zone kept per thread and cleared after each
 * record: a fresh zone would cost an 8 KiB allocation per record read. */
#define RECORD_ZONE_CHUNK 4096

static pthread_key_t zone_key;
static pthread_once_t zone_once = PTHREAD_ONCE_INIT;
static bool zone_key_ok;

static void zone_destroy(void *z) {
        msgpack_zone_free(z);
}

static void zone_key_init(void) {
        zone_key_ok = pthread_key_create(&zone_key, zone_destroy) == 0;
}

typedef struct RecordZone {
        msgpack_zone *zone;
        bool kept;              /* the thread's zone: cleared, not freed */
} RecordZone;

static int record_zone_get(RecordZone *rz) {
        (void) pthread_once(&zone_once, zone_key_init);
        rz->kept = false;
        rz->zone = zone_key_ok ? pthread_getspecific(zone_key) : NULL;
        if (rz->zone) {
                rz->kept = true;
                return 0;
        }
        rz->zone = msgpack_zone_new(RECORD_ZONE_CHUNK);
        if (!rz->zone)
                return -ENOMEM;
        if (zone_key_ok && pthread_setspecific(zone_key, rz->zone) == 0)
                rz->kept = true;
        return 0;
}

static void record_zone_release(RecordZone *rz) {
        if (!rz->zone)
                return;
        if (rz->kept)
                msgpack_zone_clear(rz->zone);
        else
                msgpack_zone_free(rz->zone);
        rz->zone = NULL;
}

static int decode_str(const msgpack_object *o, char *dst, size_t size, size_t min) {
        if (o->type != MSGPACK_OBJECT_STR)
                return -EBADMSG;
        if (o->via.str.size < min || o->via.str.size >= size)
                return -EBADMSG;
        if (o->via.str.size > 0 && memchr(o->via.str.ptr, 0, o->via.str.size))
                return -EBADMSG;
        if (o->via.str.size > 0)
                memcpy(dst, o->via.str.ptr, o->via.str.size);
        dst[o->via.str.size] = 0;
        return 0;
}

static int decode_u64(const msgpack_object *o, uint64_t *ret) {
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return -EBADMSG;
        *ret = o->via.u64;
        return 0;
}

static int decode_i64(const msgpack_object *o, int64_t *ret) {
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                *ret = o->via.i64;
                return 0;
        }
        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
                *ret = (int64_t) o->via.u64;
                return 0;
        }
        return -EBADMSG;
}

static int decode_fields(const msgpack_object_map *m, const Field *fields, size_t n_fields);

static int decode_disks(const msgpack_object *o, StoreVm *vm) {
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > VMM_MAX_DISKS)
                return -EBADMSG;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                const msgpack_object *d = &o->via.array.ptr[i];
                StoreDisk *disk = &vm->disks[i];
                memset(disk, 0, sizeof *disk);
                const Field fields[] = {
                        { "id", FIELD_STR, disk->id, sizeof(disk->id), 1 },
                        { "size", FIELD_U64, &disk->size, 0, 0 },
                };
                int r;

                if (d->type != MSGPACK_OBJECT_MAP)
                        return -EBADMSG;
                r = decode_fields(&d->via.map, fields, ELEMENTSOF(fields));
                if (r < 0)
                        return r;
        }
        vm->n_disks = o->via.array.size;
        return 0;
}

static int decode_value(const msgpack_object *o, const Field *f) {
        uint64_t u;
        int r;

        switch (f->kind) {
        case FIELD_VERSION:
                return 0;
        case FIELD_STR:
                return decode_str(o, f->dst, f->size, f->min);
        case FIELD_BOOL:
                if (o->type != MSGPACK_OBJECT_BOOLEAN)
                        return -EBADMSG;
                *(bool *) f->dst = o->via.boolean;
                return 0;
        case FIELD_U32:
                r = decode_u64(o, &u);
                if (r < 0)
                        return r;
                if (u > UINT32_MAX)
                        return -EBADMSG;
                *(uint32_t *) f->dst = (uint32_t) u;
                return 0;
        case FIELD_U64:
                return decode_u64(o, f->dst);
        case FIELD_I64:
                return decode_i64(o, f->dst);
        case FIELD_DISKS:
                return decode_disks(o, f->dst);
        default:
                assert(false);
                return -EINVAL;
        }
}

/* Every key of m names one of fields, once; every field is present. */
static int decode_fields(const msgpack_object_map *m, const Field *fields, size_t n_fields) {
        uint32_t seen = 0;

        assert(n_fields < 32);
        if (m->size != n_fields)
                return -EBADMSG;
        for (uint32_t i = 0; i < m->size; i++) {
                const msgpack_object_kv *kv = &m->ptr[i];
                size_t j;
                int r;

                /* records are written in field order: try that first */
                if (i < n_fields && key_is(&kv->key, fields[i].name))
                        j = i;
                else
                        for (j = 0; j < n_fields; j++)
                                if (key_is(&kv->key, fields[j].name))
                                        break;
                if (j == n_fields || (seen & (1u << j)))
                        return -EBADMSG;
                seen |= 1u << j;
                r = decode_value(&kv->val, &fields[j]);
                if (r < 0)
                        return r;
        }
        return seen == (1u << n_fields) - 1 ? 0 : -EBADMSG;
}

/* Pre-scans and unpacks exactly one map filling buf, and checks its "v". */
static int record_unpack(const uint8_t *buf, size_t len, unsigned max_depth, RecordZone *rz,
                         msgpack_object *obj, const msgpack_object_map **ret_map) {
        const msgpack_object_map *m;
        const msgpack_object *version = NULL;
        MpScan scan;
        size_t n = 0, off = 0;

        if (!buf || len == 0 || len > RECORD_MAX_BYTES)
                return -EBADMSG;
        mpscan_init(&scan, len, max_depth);
        if (mpscan_feed(&scan, buf, len, &n) != MPSCAN_COMPLETE || n != len)
                return -EBADMSG;
        if (record_zone_get(rz) < 0)
                return -ENOMEM;
        if (msgpack_unpack((const char *) buf, len, &off, rz->zone, obj) !=
            MSGPACK_UNPACK_SUCCESS || off != len)
                return -EBADMSG;
        if (obj->type != MSGPACK_OBJECT_MAP)
                return -EBADMSG;

        m = &obj->via.map;
        for (uint32_t i = 0; i < m->size; i++)
                if (key_is(&m->ptr[i].key, "v")) {
                        if (version)
                                return -EBADMSG;
                        version = &m->ptr[i].val;
                }
        if (!version || version->type != MSGPACK_OBJECT_POSITIVE_INTEGER || version->via.u64 == 0)
                return -EBADMSG;
        if (version->via.u64 > RECORD_VERSION)
                return -EPROTO;
        *ret_map = m;
        return 0;
}

int record_vm_decode(const uint8_t *buf, size_t len, StoreVm *ret) {
        _cleanup_(record_zone_release) RecordZone rz = { 0 };
        msgpack_object obj;
        const msgpack_object_map *m;
        StoreVm vm;             /* 5 KiB: only the part in use is cleared and copied */
        const Field fields[] = {
                { "v", FIELD_VERSION, NULL, 0, 0 },
                { "vm_id", FIELD_STR, vm.vm_id, sizeof(vm.vm_id), 1 },
                { "pwhash", FIELD_STR, vm.pwhash, sizeof(vm.pwhash), 0 },
                { "described", FIELD_BOOL, &vm.described, 0, 0 },
                { "ram", FIELD_U32, &vm.ram, 0, 0 },
                { "cpu", FIELD_U32, &vm.cpu, 0, 0 },
                { "registered_at", FIELD_I64, &vm.registered_at, 0, 0 },
                { "updated_at", FIELD_I64, &vm.updated_at, 0, 0 },
                { "last_seen_at", FIELD_I64, &vm.last_seen_at, 0, 0 },
                { "disks", FIELD_DISKS, &vm, 0, 0 },
        };
        int r;

        memset(&vm, 0, offsetof(StoreVm, disks));
        if (!ret)
                return -EINVAL;
        r = record_unpack(buf, len, RECORD_VM_DEPTH, &rz, &obj, &m);
        if (r < 0)
                return r;
        r = decode_fields(m, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        store_vm_copy(ret, &vm);
        return 0;
}

int record_session_decode(const uint8_t *buf, size_t len, const uint8_t hash[STORE_HASH_BYTES],
                          StoreSession *ret) {
        _cleanup_(record_zone_release) RecordZone rz = { 0 };
        msgpack_object obj;
        const msgpack_object_map *m;
        StoreSession s = { 0 };
        const Field fields[] = {
                { "v", FIELD_VERSION, NULL, 0, 0 },
                { "vm_id", FIELD_STR, s.vm_id, sizeof(s.vm_id), 1 },
                { "created_at", FIELD_I64, &s.created_at, 0, 0 },
                { "expires_at", FIELD_I64, &s.expires_at, 0, 0 },
        };
        int r;

        if (!ret || !hash)
                return -EINVAL;
        r = record_unpack(buf, len, RECORD_FLAT_DEPTH, &rz, &obj, &m);
        if (r < 0)
                return r;
        r = decode_fields(m, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        memcpy(s.hash, hash, STORE_HASH_BYTES);
        *ret = s;
        return 0;
}

int record_disk_decode(const uint8_t *buf, size_t len, char ret_vm_id[VMM_VM_ID_MAX + 1],
                       uint64_t *ret_size) {
        _cleanup_(record_zone_release) RecordZone rz = { 0 };
        msgpack_object obj;
        const msgpack_object_map *m;
        char vm_id[VMM_VM_ID_MAX + 1];
        uint64_t size = 0;
        const Field fields[] = {
                { "v", FIELD_VERSION, NULL, 0, 0 },
                { "vm_id", FIELD_STR, vm_id, sizeof(vm_id), 1 },
                { "size", FIELD_U64, &size, 0, 0 },
        };
        int r;

        if (!ret_vm_id || !ret_size)
                return -EINVAL;
        r = record_unpack(buf, len, RECORD_FLAT_DEPTH, &rz, &obj, &m);
        if (r < 0)
                return r;
        r = decode_fields(m, fields, ELEMENTSOF(fields));
        if (r < 0)
                return r;
        memcpy(ret_vm_id, vm_id, strlen(vm_id) + 1);
        *ret_size = size;
        return 0;
}
