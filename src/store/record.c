/* SPDX-License-Identifier: MIT */
/* Record codecs (see record.h for the layout). Each record kind is a table
 * of fields that drives both encoding and decoding. Decoding never trusts
 * the bytes: the bounded pre-scanner sees them first, so msgpack-c never
 * allocates for a count that the bytes cannot hold. */

#include <assert.h>
#include <errno.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "record.h"
#include "shared/macro.h"
#include "shared/mpscan.h"

typedef enum FieldKind {
        FIELD_VERSION,  /* "v": written as RECORD_VERSION, checked by record_unpack */
        FIELD_STR,      /* char[size], NUL-terminated, length min..size-1, no NUL inside */
        FIELD_STR_NIL,  /* the same, "" written and read as nil */
        FIELD_BOOL,
        FIELD_U8,       /* uint8_t, 0..max */
        FIELD_U32,
        FIELD_U64,
        FIELD_U64_NIL,  /* 0 written and read as nil */
        FIELD_I64,
        FIELD_I64_NIL,  /* -1 written and read as nil */
        FIELD_DISKS,    /* StoreDisk[max] at off, uint32_t count at count_off */
        FIELD_STRS,     /* char[max][size] at off, uint32_t count at count_off */
        FIELD_U64S,     /* uint64_t[max] at off, uint32_t count at count_off */
        _FIELD_KIND_MAX,
        _FIELD_KIND_INVALID = -1,
} FieldKind;

typedef struct Field {
        const char *name;
        FieldKind kind;
        size_t off;
        size_t size;            /* STR: the array; STRS: one element */
        size_t min;             /* STR, STRS: minimum length */
        uint64_t max;           /* U8: largest value; arrays: most elements */
        size_t count_off;
        unsigned since;         /* the record version that added this key */
} Field;

typedef struct RecordDesc {
        const Field *fields;
        size_t n_fields;
        unsigned depth;         /* nesting: map > array > map is 3 */
} RecordDesc;

#define F(name, kind, type, member) \
        { name, kind, offsetof(type, member), sizeof(((type *) 0)->member), 0, 0, 0, 1 }
#define F2(name, kind, type, member) \
        { name, kind, offsetof(type, member), sizeof(((type *) 0)->member), 0, 0, 0, 2 }
#define FSTR(name, type, member, minlen, since) \
        { name, FIELD_STR, offsetof(type, member), sizeof(((type *) 0)->member), minlen, 0, 0, since }
#define FU8(name, type, member, maxv, since) \
        { name, FIELD_U8, offsetof(type, member), 1, 0, maxv, 0, since }
#define FARR(name, kind, type, member, count, elem, minlen, since) \
        { name, kind, offsetof(type, member), elem, minlen, ELEMENTSOF(((type *) 0)->member), \
          offsetof(type, count), since }
#define FVERSION { "v", FIELD_VERSION, 0, 0, 0, 0, 0, 1 }

static const Field vm_fields[] = {
        FVERSION,
        FSTR("vm_id", StoreVm, vm_id, 1, 1),
        FSTR("pwhash", StoreVm, pwhash, 0, 1),
        F("described", FIELD_BOOL, StoreVm, described),
        F("ram", FIELD_U32, StoreVm, ram),
        F("cpu", FIELD_U32, StoreVm, cpu),
        F("registered_at", FIELD_I64, StoreVm, registered_at),
        F("updated_at", FIELD_I64, StoreVm, updated_at),
        F("last_seen_at", FIELD_I64, StoreVm, last_seen_at),
        FARR("disks", FIELD_DISKS, StoreVm, disks, n_disks, sizeof(StoreDisk), 1, 1),
        F2("hostname", FIELD_STR_NIL, StoreVm, hostname),
        FARR("ip", FIELD_STRS, StoreVm, ip, n_ip, STORE_IP_LEN, 1, 2),
        F2("has_os", FIELD_BOOL, StoreVm, has_os),
        F2("os_name", FIELD_STR_NIL, StoreVm, os_name),
        F2("os_version", FIELD_STR_NIL, StoreVm, os_version),
        F2("owner", FIELD_STR_NIL, StoreVm, owner),
        F2("group", FIELD_U64_NIL, StoreVm, group),
        FU8("access", StoreVm, access, _STORE_ACCESS_MAX - 1, 2),
        F2("requested", FIELD_BOOL, StoreVm, requested),
        F2("free_since", FIELD_I64, StoreVm, free_since),
};

static const Field session_fields[] = {
        FVERSION,
        F("vm_id", FIELD_STR_NIL, StoreSession, vm_id),
        F("created_at", FIELD_I64, StoreSession, created_at),
        F("expires_at", FIELD_I64, StoreSession, expires_at),
        F2("user", FIELD_STR_NIL, StoreSession, user),
};

typedef struct DiskValue {
        char vm_id[VMM_VM_ID_MAX + 1];
        uint64_t size;
} DiskValue;

static const Field disk_fields[] = {
        FVERSION,
        FSTR("vm_id", DiskValue, vm_id, 1, 1),
        F("size", FIELD_U64, DiskValue, size),
};

static const Field user_fields[] = {
        FVERSION,
        FSTR("name", StoreUser, name, 1, 2),
        FU8("role", StoreUser, role, _STORE_ROLE_MAX - 1, 2),
        FSTR("pwhash", StoreUser, pwhash, 0, 2),
        F2("created_at", FIELD_I64, StoreUser, created_at),
        F2("last_login_at", FIELD_I64, StoreUser, last_login_at),
};

static const Field group_fields[] = {
        FVERSION,
        F2("id", FIELD_U64, StoreGroup, id),
        FSTR("name", StoreGroup, name, 1, 2),
        F2("created_at", FIELD_I64, StoreGroup, created_at),
};

static const Field booking_fields[] = {
        FVERSION,
        FSTR("vm_id", StoreBooking, vm_id, 1, 2),
        FSTR("user", StoreBooking, user, 1, 2),
        F2("started_at", FIELD_I64, StoreBooking, started_at),
        F2("expires_at", FIELD_I64, StoreBooking, expires_at),
        F2("warned", FIELD_BOOL, StoreBooking, warned),
};

static const Field history_fields[] = {
        FVERSION,
        F2("feed", FIELD_U64, StoreHistory, feed),
        F2("time", FIELD_I64, StoreHistory, time),
        FSTR("vm_id", StoreHistory, vm_id, 1, 2),
        FSTR("user", StoreHistory, user, 1, 2),
        FU8("action", StoreHistory, action, _STORE_HISTORY_MAX - 1, 2),
        F2("expires_at", FIELD_I64_NIL, StoreHistory, expires_at),
        F2("by", FIELD_STR_NIL, StoreHistory, by),
};

static const Field os_fields[] = {
        FVERSION,
        F2("id", FIELD_U64, StoreOs, id),
        FSTR("name", StoreOs, name, 1, 2),
        FSTR("version", StoreOs, version, 0, 2),
        F2("iso", FIELD_STR_NIL, StoreOs, iso),
        F2("qcow2", FIELD_STR_NIL, StoreOs, qcow2),
        FSTR("description", StoreOs, description, 0, 2),
};

static const Field request_fields[] = {
        FVERSION,
        F2("id", FIELD_U64, StoreRequest, id),
        FSTR("requester", StoreRequest, requester, 1, 2),
        FSTR("description", StoreRequest, description, 0, 2),
        F2("ram", FIELD_U32, StoreRequest, ram),
        F2("cpu", FIELD_U32, StoreRequest, cpu),
        FARR("disks", FIELD_U64S, StoreRequest, disks, n_disks, sizeof(uint64_t), 0, 2),
        F2("os_id", FIELD_U64_NIL, StoreRequest, os_id),
        F2("count", FIELD_U32, StoreRequest, count),
        FU8("state", StoreRequest, state, _STORE_REQUEST_STATE_MAX - 1, 2),
        F2("created_at", FIELD_I64, StoreRequest, created_at),
        F2("decided_at", FIELD_I64_NIL, StoreRequest, decided_at),
        F2("decided_by", FIELD_STR_NIL, StoreRequest, decided_by),
        F2("reason", FIELD_STR_NIL, StoreRequest, reason),
        FARR("vm_ids", FIELD_STRS, StoreRequest, vm_ids, n_vm_ids, VMM_VM_ID_MAX + 1, 1, 2),
};

#define DESC(f, d) ((RecordDesc) { f, ELEMENTSOF(f), d })

/* ---- encoding ---- */

static int pack_str(msgpack_packer *pk, const char *s, size_t n) {
        return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

/* Length of a NUL-terminated string held in a fixed array, or SIZE_MAX when
 * the array holds no NUL. */
static size_t field_len(const char *s, size_t size) {
        size_t n = strnlen(s, size);
        return n < size ? n : SIZE_MAX;
}

static uint32_t field_count(const void *rec, const Field *f) {
        uint32_t n;
        memcpy(&n, (const uint8_t *) rec + f->count_off, sizeof n);
        return n;
}

static int check_str(const char *s, size_t size, size_t min, size_t *ret_len) {
        size_t n = field_len(s, size);
        if (n == SIZE_MAX || n < min)
                return -EINVAL;
        *ret_len = n;
        return 0;
}

/* Does the struct hold what a record can carry? */
static int check_field(const void *rec, const Field *f) {
        const uint8_t *p = (const uint8_t *) rec + f->off;
        size_t n;

        switch (f->kind) {
        case FIELD_STR:
                return check_str((const char *) p, f->size, f->min, &n);
        case FIELD_STR_NIL:
                return check_str((const char *) p, f->size, 0, &n);
        case FIELD_U8:
                return *p <= f->max ? 0 : -EINVAL;
        case FIELD_DISKS: {
                uint32_t c = field_count(rec, f);
                if (c > f->max)
                        return -EINVAL;
                for (uint32_t i = 0; i < c; i++) {
                        const StoreDisk *d = (const StoreDisk *) p + i;
                        if (check_str(d->id, sizeof d->id, 1, &n) < 0)
                                return -EINVAL;
                }
                return 0;
        }
        case FIELD_STRS: {
                uint32_t c = field_count(rec, f);
                if (c > f->max)
                        return -EINVAL;
                for (uint32_t i = 0; i < c; i++)
                        if (check_str((const char *) p + i * f->size, f->size, f->min, &n) < 0)
                                return -EINVAL;
                return 0;
        }
        case FIELD_U64S:
                return field_count(rec, f) <= f->max ? 0 : -EINVAL;
        default:
                return 0;
        }
}

static int pack_field(msgpack_packer *pk, const void *rec, const Field *f) {
        const uint8_t *p = (const uint8_t *) rec + f->off;
        uint64_t u64;
        int64_t i64;
        uint32_t u32;

        if (pack_str(pk, f->name, strlen(f->name)))
                return -ENOMEM;
        switch (f->kind) {
        case FIELD_VERSION:
                return msgpack_pack_uint64(pk, RECORD_VERSION) ? -ENOMEM : 0;
        case FIELD_STR:
        case FIELD_STR_NIL: {
                size_t n = strlen((const char *) p);
                if (f->kind == FIELD_STR_NIL && n == 0)
                        return msgpack_pack_nil(pk) ? -ENOMEM : 0;
                return pack_str(pk, (const char *) p, n) ? -ENOMEM : 0;
        }
        case FIELD_BOOL:
                return (*(const bool *) p ? msgpack_pack_true(pk) : msgpack_pack_false(pk)) ?
                        -ENOMEM : 0;
        case FIELD_U8:
                return msgpack_pack_uint8(pk, *p) ? -ENOMEM : 0;
        case FIELD_U32:
                memcpy(&u32, p, sizeof u32);
                return msgpack_pack_uint32(pk, u32) ? -ENOMEM : 0;
        case FIELD_U64:
        case FIELD_U64_NIL:
                memcpy(&u64, p, sizeof u64);
                if (f->kind == FIELD_U64_NIL && u64 == 0)
                        return msgpack_pack_nil(pk) ? -ENOMEM : 0;
                return msgpack_pack_uint64(pk, u64) ? -ENOMEM : 0;
        case FIELD_I64:
        case FIELD_I64_NIL:
                memcpy(&i64, p, sizeof i64);
                if (f->kind == FIELD_I64_NIL && i64 == -1)
                        return msgpack_pack_nil(pk) ? -ENOMEM : 0;
                return msgpack_pack_int64(pk, i64) ? -ENOMEM : 0;
        case FIELD_DISKS: {
                uint32_t c = field_count(rec, f);
                if (msgpack_pack_array(pk, c))
                        return -ENOMEM;
                for (uint32_t i = 0; i < c; i++) {
                        const StoreDisk *d = (const StoreDisk *) p + i;
                        if (msgpack_pack_map(pk, 2) || pack_str(pk, "id", 2) ||
                            pack_str(pk, d->id, strlen(d->id)) || pack_str(pk, "size", 4) ||
                            msgpack_pack_uint64(pk, d->size))
                                return -ENOMEM;
                }
                return 0;
        }
        case FIELD_STRS: {
                uint32_t c = field_count(rec, f);
                if (msgpack_pack_array(pk, c))
                        return -ENOMEM;
                for (uint32_t i = 0; i < c; i++) {
                        const char *s = (const char *) p + i * f->size;
                        if (pack_str(pk, s, strlen(s)))
                                return -ENOMEM;
                }
                return 0;
        }
        case FIELD_U64S: {
                uint32_t c = field_count(rec, f);
                if (msgpack_pack_array(pk, c))
                        return -ENOMEM;
                for (uint32_t i = 0; i < c; i++) {
                        memcpy(&u64, p + i * sizeof u64, sizeof u64);
                        if (msgpack_pack_uint64(pk, u64))
                                return -ENOMEM;
                }
                return 0;
        }
        default:
                assert(false);
                return -EINVAL;
        }
}

static int record_encode(const RecordDesc *d, const void *rec, uint8_t **ret_buf, size_t *ret_len) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int r = 0;

        if (!rec || !ret_buf || !ret_len)
                return -EINVAL;
        for (size_t i = 0; i < d->n_fields; i++) {
                r = check_field(rec, &d->fields[i]);
                if (r < 0)
                        return r;
        }
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (msgpack_pack_map(&pk, (uint32_t) d->n_fields))
                r = -ENOMEM;
        for (size_t i = 0; r >= 0 && i < d->n_fields; i++)
                r = pack_field(&pk, rec, &d->fields[i]);
        if (r < 0 || !sb.data) {
                msgpack_sbuffer_destroy(&sb);
                return -ENOMEM;
        }
        *ret_len = sb.size;
        *ret_buf = (uint8_t *) msgpack_sbuffer_release(&sb);
        return 0;
}

/* ---- decoding ---- */

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

static int decode_str(const msgpack_object *o, char *dst, size_t size, size_t min, bool nil_ok) {
        if (nil_ok && o->type == MSGPACK_OBJECT_NIL) {
                dst[0] = 0;
                return 0;
        }
        if (o->type != MSGPACK_OBJECT_STR)
                return -EBADMSG;
        if (o->via.str.size < MAX(min, (size_t) nil_ok) || o->via.str.size >= size)
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

static int decode_fields(const msgpack_object_map *m, const Field *fields, size_t n_fields,
                         unsigned version, void *rec);

static const Field disk_elem_fields[] = {
        { "id", FIELD_STR, offsetof(StoreDisk, id), sizeof(((StoreDisk *) 0)->id), 1, 0, 0, 1 },
        { "size", FIELD_U64, offsetof(StoreDisk, size), 8, 0, 0, 0, 1 },
};

static int decode_array(const msgpack_object *o, const Field *f, void *rec) {
        uint8_t *p = (uint8_t *) rec + f->off;
        uint32_t n;

        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > f->max)
                return -EBADMSG;
        n = o->via.array.size;
        for (uint32_t i = 0; i < n; i++) {
                const msgpack_object *e = &o->via.array.ptr[i];
                int r;

                switch (f->kind) {
                case FIELD_DISKS: {
                        StoreDisk *d = (StoreDisk *) p + i;
                        memset(d, 0, sizeof *d);
                        if (e->type != MSGPACK_OBJECT_MAP)
                                return -EBADMSG;
                        r = decode_fields(&e->via.map, disk_elem_fields,
                                          ELEMENTSOF(disk_elem_fields), 1, d);
                        break;
                }
                case FIELD_STRS:
                        r = decode_str(e, (char *) p + i * f->size, f->size, f->min, false);
                        break;
                default: {
                        uint64_t u;
                        r = decode_u64(e, &u);
                        if (r >= 0)
                                memcpy(p + i * sizeof u, &u, sizeof u);
                }
                }
                if (r < 0)
                        return r;
        }
        memcpy((uint8_t *) rec + f->count_off, &n, sizeof n);
        return 0;
}

static int decode_value(const msgpack_object *o, const Field *f, void *rec) {
        uint8_t *p = (uint8_t *) rec + f->off;
        uint64_t u;
        int64_t i;
        int r;

        switch (f->kind) {
        case FIELD_VERSION:
                return 0;
        case FIELD_STR:
        case FIELD_STR_NIL:
                return decode_str(o, (char *) p, f->size, f->min, f->kind == FIELD_STR_NIL);
        case FIELD_BOOL:
                if (o->type != MSGPACK_OBJECT_BOOLEAN)
                        return -EBADMSG;
                *(bool *) p = o->via.boolean;
                return 0;
        case FIELD_U8:
                r = decode_u64(o, &u);
                if (r < 0 || u > f->max)
                        return -EBADMSG;
                *p = (uint8_t) u;
                return 0;
        case FIELD_U32:
                r = decode_u64(o, &u);
                if (r < 0 || u > UINT32_MAX)
                        return -EBADMSG;
                uint32_t u32 = (uint32_t) u;
                memcpy(p, &u32, sizeof u32);
                return 0;
        case FIELD_U64:
        case FIELD_U64_NIL:
                if (f->kind == FIELD_U64_NIL && o->type == MSGPACK_OBJECT_NIL)
                        u = 0;
                else if (decode_u64(o, &u) < 0 || (f->kind == FIELD_U64_NIL && u == 0))
                        return -EBADMSG;
                memcpy(p, &u, sizeof u);
                return 0;
        case FIELD_I64:
        case FIELD_I64_NIL:
                if (f->kind == FIELD_I64_NIL && o->type == MSGPACK_OBJECT_NIL)
                        i = -1;
                else if (decode_i64(o, &i) < 0 || (f->kind == FIELD_I64_NIL && i == -1))
                        return -EBADMSG;
                memcpy(p, &i, sizeof i);
                return 0;
        case FIELD_DISKS:
        case FIELD_STRS:
        case FIELD_U64S:
                return decode_array(o, f, rec);
        default:
                assert(false);
                return -EINVAL;
        }
}

/* Every key of m names one of the fields of this version, once; every such
 * field is present. */
static int decode_fields(const msgpack_object_map *m, const Field *fields, size_t n_fields,
                         unsigned version, void *rec) {
        uint32_t seen = 0, want = 0;

        assert(n_fields < 32);
        for (size_t j = 0; j < n_fields; j++)
                if (fields[j].since <= version)
                        want |= 1u << j;
        if (m->size != (uint32_t) __builtin_popcount(want))
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
                if (j == n_fields || !(want & (1u << j)) || (seen & (1u << j)))
                        return -EBADMSG;
                seen |= 1u << j;
                r = decode_value(&kv->val, &fields[j], rec);
                if (r < 0)
                        return r;
        }
        return seen == want ? 0 : -EBADMSG;
}

/* Pre-scans and unpacks exactly one map filling buf, and reads its "v". */
static int record_unpack(const uint8_t *buf, size_t len, unsigned max_depth, RecordZone *rz,
                         msgpack_object *obj, const msgpack_object_map **ret_map,
                         unsigned *ret_version) {
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
        *ret_version = (unsigned) version->via.u64;
        return 0;
}

/* Decodes into rec (already cleared by the caller); ret_version: the
 * record's version, for defaults of keys it predates. */
static int record_decode(const RecordDesc *d, const uint8_t *buf, size_t len, void *rec,
                         unsigned *ret_version) {
        _cleanup_(record_zone_release) RecordZone rz = { 0 };
        const msgpack_object_map *m;
        msgpack_object obj;
        unsigned version;
        int r;

        r = record_unpack(buf, len, d->depth, &rz, &obj, &m, &version);
        if (r < 0)
                return r;
        r = decode_fields(m, d->fields, d->n_fields, version, rec);
        if (r < 0)
                return r;
        if (ret_version)
                *ret_version = version;
        return 0;
}

/* ---- the record kinds ---- */

int record_vm_encode(const StoreVm *vm, uint8_t **ret_buf, size_t *ret_len) {
        if (vm && (vm->n_disks > VMM_MAX_DISKS || vm->n_ip > VMM_IP_MAX))
                return -EINVAL;
        return record_encode(&DESC(vm_fields, 3), vm, ret_buf, ret_len);
}

int record_vm_decode(const uint8_t *buf, size_t len, StoreVm *ret) {
        StoreVm vm;             /* 7 KiB: only the part in use is cleared and copied */
        unsigned version;
        int r;

        if (!ret)
                return -EINVAL;
        memset(&vm, 0, offsetof(StoreVm, disks));
        r = record_decode(&DESC(vm_fields, 3), buf, len, &vm, &version);
        if (r < 0)
                return r;
        if (version < 2)
                vm.free_since = vm.registered_at;
        if (vm.has_os ? !vm.os_name[0] : (vm.os_name[0] || vm.os_version[0]))
                return -EBADMSG;
        store_vm_copy(ret, &vm);
        return 0;
}

int record_session_encode(const StoreSession *s, uint8_t **ret_buf, size_t *ret_len) {
        if (s && !s->vm_id[0] == !s->user[0])
                return -EINVAL;         /* exactly one owner */
        return record_encode(&DESC(session_fields, 1), s, ret_buf, ret_len);
}

int record_session_decode(const uint8_t *buf, size_t len, const uint8_t hash[STORE_HASH_BYTES],
                          StoreSession *ret) {
        StoreSession s = { 0 };
        int r;

        if (!ret || !hash)
                return -EINVAL;
        r = record_decode(&DESC(session_fields, 1), buf, len, &s, NULL);
        if (r < 0)
                return r;
        if (!s.vm_id[0] == !s.user[0])
                return -EBADMSG;
        memcpy(s.hash, hash, STORE_HASH_BYTES);
        *ret = s;
        return 0;
}

int record_disk_encode(const char *vm_id, uint64_t size, uint8_t **ret_buf, size_t *ret_len) {
        DiskValue d = { .size = size };
        size_t n;

        if (!vm_id)
                return -EINVAL;
        n = strnlen(vm_id, VMM_VM_ID_MAX + 1);
        if (n == 0 || n > VMM_VM_ID_MAX)
                return -EINVAL;
        memcpy(d.vm_id, vm_id, n);
        return record_encode(&DESC(disk_fields, 1), &d, ret_buf, ret_len);
}

int record_disk_decode(const uint8_t *buf, size_t len, char ret_vm_id[VMM_VM_ID_MAX + 1],
                       uint64_t *ret_size) {
        DiskValue d = { .size = 0 };
        int r;

        if (!ret_vm_id || !ret_size)
                return -EINVAL;
        r = record_decode(&DESC(disk_fields, 1), buf, len, &d, NULL);
        if (r < 0)
                return r;
        memcpy(ret_vm_id, d.vm_id, strlen(d.vm_id) + 1);
        *ret_size = d.size;
        return 0;
}

/* The part 2 kinds: a table each, decoded into a cleared copy. */
#define RECORD_KIND(kind, type, fields, depth)                                          \
        int record_##kind##_encode(const type *rec, uint8_t **ret_buf, size_t *ret_len) { \
                return record_encode(&DESC(fields, depth), rec, ret_buf, ret_len);      \
        }                                                                               \
        int record_##kind##_decode(const uint8_t *buf, size_t len, type *ret) {         \
                _cleanup_free_ type *tmp = calloc(1, sizeof(type));                    \
                int r;                                                                  \
                if (!ret)                                                               \
                        return -EINVAL;                                                 \
                if (!tmp)                                                               \
                        return -ENOMEM;                                                 \
                r = record_decode(&DESC(fields, depth), buf, len, tmp, NULL);           \
                if (r < 0)                                                              \
                        return r;                                                       \
                *ret = *tmp;                                                            \
                return 0;                                                               \
        }

RECORD_KIND(user, StoreUser, user_fields, 1)
RECORD_KIND(group, StoreGroup, group_fields, 1)
RECORD_KIND(booking, StoreBooking, booking_fields, 1)
RECORD_KIND(history, StoreHistory, history_fields, 1)
RECORD_KIND(os, StoreOs, os_fields, 1)
RECORD_KIND(request, StoreRequest, request_fields, 2)
