/* SPDX-License-Identifier: MIT */
/* JSON (jansson) to and from MessagePack, and the times of HTTP.md: vmmd
 * speaks Unix milliseconds, the gateway RFC 3339 UTC with milliseconds. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "web.h"

static int pack_str(msgpack_packer *pk, const char *s, size_t n) {
        return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n) ? -ENOMEM : 0;
}

int json_to_msgpack(msgpack_packer *pk, const json_t *j) {
        switch (json_typeof(j)) {
        case JSON_OBJECT: {
                const char *k;
                json_t *v;
                if (msgpack_pack_map(pk, json_object_size(j)))
                        return -ENOMEM;
                json_object_foreach((json_t *) j, k, v) {
                        int r = pack_str(pk, k, strlen(k));
                        if (r >= 0)
                                r = json_to_msgpack(pk, v);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        case JSON_ARRAY: {
                size_t i;
                json_t *v;
                if (msgpack_pack_array(pk, json_array_size(j)))
                        return -ENOMEM;
                json_array_foreach(j, i, v) {
                        int r = json_to_msgpack(pk, v);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        case JSON_STRING:
                return pack_str(pk, json_string_value(j), json_string_length(j));
        case JSON_INTEGER: {
                json_int_t v = json_integer_value(j);
                if (v >= 0)
                        return msgpack_pack_uint64(pk, (uint64_t) v) ? -ENOMEM : 0;
                return msgpack_pack_int64(pk, v) ? -ENOMEM : 0;
        }
        case JSON_REAL:
                return msgpack_pack_double(pk, json_real_value(j)) ? -ENOMEM : 0;
        case JSON_TRUE:
                return msgpack_pack_true(pk) ? -ENOMEM : 0;
        case JSON_FALSE:
                return msgpack_pack_false(pk) ? -ENOMEM : 0;
        case JSON_NULL:
                return msgpack_pack_nil(pk) ? -ENOMEM : 0;
        }
        return -EINVAL;
}

char *time_rfc3339(int64_t ms, char *buf, size_t size) {
        time_t t = (time_t) (ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
        int frac = (int) (ms - (int64_t) t * 1000);
        struct tm tm;
        if (!gmtime_r(&t, &tm)) {
                (void) snprintf(buf, size, "%s", "1970-01-01T00:00:00.000Z");
                return buf;
        }
        (void) snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
        return buf;
}

char *time_human(int64_t ms, char *buf, size_t size) {
        time_t t = (time_t) (ms / 1000), now = time(NULL);
        struct tm tm, tn;
        if (!gmtime_r(&t, &tm) || !gmtime_r(&now, &tn)) {
                (void) snprintf(buf, size, "?");
                return buf;
        }
        if (tm.tm_year == tn.tm_year && tm.tm_yday == tn.tm_yday)
                (void) snprintf(buf, size, "%02d:%02d UTC", tm.tm_hour, tm.tm_min);
        else
                (void) snprintf(buf, size, "%04d-%02d-%02d %02d:%02d UTC", tm.tm_year + 1900,
                                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min);
        return buf;
}

static bool is_time_key(const char *k, size_t n) {
        return (n == 4 && memcmp(k, "time", 4) == 0) ||
               (n > 3 && memcmp(k + n - 3, "_at", 3) == 0);
}

/* Length of the valid UTF-8 sequence at p, or 0. */
static size_t utf8_len(const uint8_t *p, size_t n) {
        uint8_t b = p[0], lo = 0x80, hi = 0xbf;
        size_t len;
        if (b < 0x80)
                return 1;
        if (b >= 0xc2 && b <= 0xdf)
                len = 2;
        else if (b >= 0xe0 && b <= 0xef) {
                len = 3;
                lo = b == 0xe0 ? 0xa0 : 0x80;
                hi = b == 0xed ? 0x9f : 0xbf;
        } else if (b >= 0xf0 && b <= 0xf4) {
                len = 4;
                lo = b == 0xf0 ? 0x90 : 0x80;
                hi = b == 0xf4 ? 0x8f : 0xbf;
        } else
                return 0;
        if (len > n || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (p[i] < 0x80 || p[i] > 0xbf)
                        return 0;
        return len;
}

/* A JSON string from bytes that should be UTF-8 (invalid bytes and NUL
 * become U+FFFD). */
static json_t *json_text(const char *s, size_t n) {
        const uint8_t *p = (const uint8_t *) s;
        bool ok = true;
        for (size_t i = 0; i < n && ok;) {
                size_t k = utf8_len(p + i, n - i);
                ok = k > 0 && p[i] != 0;
                i += k;
        }
        if (ok)
                return json_stringn_nocheck(s, n);
        _cleanup_free_ char *fixed = malloc(n * 3 + 1);
        if (!fixed)
                return NULL;
        size_t o = 0;
        for (size_t i = 0; i < n;) {
                size_t k = utf8_len(p + i, n - i);
                if (k == 0 || p[i] == 0) {
                        memcpy(fixed + o, "\xef\xbf\xbd", 3);
                        o += 3;
                        i++;
                } else {
                        memcpy(fixed + o, p + i, k);
                        o += k;
                        i += k;
                }
        }
        return json_stringn_nocheck(fixed, o);
}

static json_t *from_msgpack(const msgpack_object *o, bool time_value, unsigned depth) {
        char buf[40];
        if (depth > 64)
                return json_null();
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                return json_null();
        case MSGPACK_OBJECT_BOOLEAN:
                return json_boolean(o->via.boolean);
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                if (time_value && o->via.u64 <= (uint64_t) INT64_MAX / 2)
                        return json_string(time_rfc3339((int64_t) o->via.u64, buf, sizeof buf));
                if (o->via.u64 > (uint64_t) INT64_MAX)
                        return json_real((double) o->via.u64);
                return json_integer((json_int_t) o->via.u64);
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                return json_integer((json_int_t) o->via.i64);
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
        case MSGPACK_OBJECT_STR:
                return json_text(o->via.str.ptr, o->via.str.size);
        case MSGPACK_OBJECT_BIN: {
                char *hex = malloc((size_t) o->via.bin.size * 2 + 1);
                if (!hex)
                        return NULL;
                for (uint32_t i = 0; i < o->via.bin.size; i++)
                        (void) snprintf(hex + i * 2, 3, "%02x",
                                        (unsigned) (uint8_t) o->via.bin.ptr[i]);
                hex[(size_t) o->via.bin.size * 2] = '\0';
                json_t *j = json_string(hex);
                free(hex);
                return j;
        }
        case MSGPACK_OBJECT_ARRAY: {
                json_t *a = json_array();
                if (!a)
                        return NULL;
                for (uint32_t i = 0; i < o->via.array.size; i++)
                        if (json_array_append_new(a, from_msgpack(&o->via.array.ptr[i], false,
                                                                  depth + 1)) < 0) {
                                json_decref(a);
                                return NULL;
                        }
                return a;
        }
        case MSGPACK_OBJECT_MAP: {
                json_t *m = json_object();
                if (!m)
                        return NULL;
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        const msgpack_object *k = &o->via.map.ptr[i].key;
                        if (k->type != MSGPACK_OBJECT_STR)
                                continue;
                        _cleanup_free_ char *key = strndup(k->via.str.ptr, k->via.str.size);
                        if (!key || memchr(k->via.str.ptr, 0, k->via.str.size)) {
                                continue;
                        }
                        bool t = is_time_key(key, k->via.str.size);
                        if (json_object_set_new(m, key, from_msgpack(&o->via.map.ptr[i].val, t,
                                                                     depth + 1)) < 0) {
                                /* a key that is not UTF-8: left out */
                                continue;
                        }
                }
                return m;
        }
        default:
                return json_null();
        }
}

json_t *json_from_msgpack(const msgpack_object *o) {
        return from_msgpack(o, false, 0);
}

size_t json_depth(const json_t *j) {
        size_t d = 0;
        const char *k;
        json_t *v;
        size_t i;
        switch (json_typeof(j)) {
        case JSON_OBJECT:
                json_object_foreach((json_t *) j, k, v)
                        d = MAX(d, json_depth(v));
                return d + 1;
        case JSON_ARRAY:
                json_array_foreach(j, i, v)
                        d = MAX(d, json_depth(v));
                return d + 1;
        default:
                return 0;
        }
}

json_t *json_parse_body(const char *body, size_t len, char *err, size_t errsize,
                        bool *ret_too_deep) {
        json_error_t e;
        *ret_too_deep = false;
        json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
        if (!j) {
                (void) snprintf(err, errsize, "the body is not valid JSON (%s, at character %d)",
                                e.text, e.position);
                return NULL;
        }
        if (!json_is_object(j)) {
                json_decref(j);
                (void) snprintf(err, errsize, "the body must be a JSON object");
                return NULL;
        }
        if (json_depth(j) > WEB_JSON_DEPTH_MAX) {
                json_decref(j);
                *ret_too_deep = true;
                (void) snprintf(err, errsize, "the body is nested deeper than %d levels",
                                WEB_JSON_DEPTH_MAX);
                return NULL;
        }
        return j;
}

const char *json_str(const json_t *o, const char *key) {
        return json_string_value(json_object_get(o, key));
}
