/* SPDX-License-Identifier: MIT */
/* Small msgpack-c packing helpers (header-only). Each returns 0 or non-zero
 * like msgpack-c's own functions. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static inline int mp_strn(msgpack_packer *pk, const char *s, size_t n) {
        return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

static inline int mp_str(msgpack_packer *pk, const char *s) {
        return mp_strn(pk, s, strlen(s));
}

static inline int mp_kv_str(msgpack_packer *pk, const char *k, const char *v) {
        return mp_str(pk, k) || (v ? mp_str(pk, v) : msgpack_pack_nil(pk));
}

static inline int mp_kv_u64(msgpack_packer *pk, const char *k, uint64_t v) {
        return mp_str(pk, k) || msgpack_pack_uint64(pk, v);
}

static inline int mp_kv_i64(msgpack_packer *pk, const char *k, int64_t v) {
        return mp_str(pk, k) || msgpack_pack_int64(pk, v);
}

static inline int mp_kv_bool(msgpack_packer *pk, const char *k, bool v) {
        return mp_str(pk, k) || (v ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
}

static inline int mp_kv_nil(msgpack_packer *pk, const char *k) {
        return mp_str(pk, k) || msgpack_pack_nil(pk);
}
