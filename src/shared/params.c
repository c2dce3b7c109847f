/* SPDX-License-Identifier: MIT */
/* Declarative request parameters and the validators behind them (see params.h). */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/macro.h"
#include "shared/params.h"

/* Room for a field path such as "disks[63].id" or a quoted client key. */
#define NAME_MAX_LEN 80
#define QUOTE_MAX 48

bool valid_utf8(const char *str, size_t len) {
        const uint8_t *s = (const uint8_t *) str;
        size_t i = 0;

        assert(s || len == 0);
        while (i < len) {
                uint8_t c = s[i];
                size_t n;
                uint8_t lo = 0x80, hi = 0xbf;   /* range of the second byte */

                if (c < 0x80) {
                        i++;
                        continue;
                }
                if (c >= 0xc2 && c <= 0xdf)
                        n = 1;
                else if (c == 0xe0) {
                        n = 2;
                        lo = 0xa0;              /* no overlong 3-byte forms */
                } else if (c == 0xed) {
                        n = 2;
                        hi = 0x9f;              /* no UTF-16 surrogates */
                } else if (c >= 0xe1 && c <= 0xef)
                        n = 2;
                else if (c == 0xf0) {
                        n = 3;
                        lo = 0x90;              /* no overlong 4-byte forms */
                } else if (c >= 0xf1 && c <= 0xf3)
                        n = 3;
                else if (c == 0xf4) {
                        n = 3;
                        hi = 0x8f;              /* nothing past U+10FFFF */
                } else
                        return false;           /* stray continuation, 0xc0/0xc1, 0xf5.. */

                if (len - i - 1 < n)
                        return false;
                if (s[i + 1] < lo || s[i + 1] > hi)
                        return false;
                for (size_t k = 2; k <= n; k++)
                        if ((s[i + k] & 0xc0) != 0x80)
                                return false;
                i += n + 1;
        }
        return true;
}

static bool is_alnum(char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool valid_id(const char *s, size_t len, size_t max) {
        if (!s || len < 1 || len > max)
                return false;
        if (!is_alnum(s[0]))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!is_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
                        return false;
        return true;
}

bool valid_vm_id(const char *s, size_t len) {
        return valid_id(s, len, VMM_VM_ID_MAX);
}

bool valid_disk_id(const char *s, size_t len) {
        return valid_id(s, len, VMM_DISK_ID_MAX);
}

bool valid_token(const char *s, size_t len) {
        if (!s || len != VMM_TOKEN_LEN)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!is_alnum(s[i]) && s[i] != '_' && s[i] != '-')
                        return false;
        return true;
}

bool valid_user_name(const char *s, size_t len) {
        if (!s || len < 1 || len > VMM_USER_NAME_MAX || !is_alnum(s[0]))
                return false;
        for (size_t i = 1; i < len; i++)
                if (!is_alnum(s[i]) && !memchr("._@+-", s[i], 5))
                        return false;
        return true;
}

/* A control character starting at s[i] (C0, DEL, or a C1 code point as
 * UTF-8 0xc2 0x80..0x9f); the string is valid UTF-8. */
static bool is_control_at(const char *str, size_t len, size_t i) {
        const uint8_t *s = (const uint8_t *) str;
        return s[i] < 0x20 || s[i] == 0x7f ||
               (s[i] == 0xc2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9f);
}

bool valid_text_line(const char *s, size_t len) {
        if (!valid_utf8(s, len))
                return false;
        for (size_t i = 0; i < len; i++)
                if (is_control_at(s, len, i))
                        return false;
        return true;
}

bool valid_text(const char *s, size_t len) {
        if (!valid_utf8(s, len))
                return false;
        for (size_t i = 0; i < len; i++)
                if (s[i] != '\t' && s[i] != '\n' && is_control_at(s, len, i))
                        return false;
        return true;
}

bool valid_hostname(const char *s, size_t len) {
        size_t label = 0;

        if (!s || len < 1 || len > VMM_HOSTNAME_MAX)
                return false;
        for (size_t i = 0; i <= len; i++) {
                if (i == len || s[i] == '.') {
                        if (label == 0 || label > 63 || s[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!is_alnum(s[i]) && (s[i] != '-' || label == 0))
                        return false;
                label++;
        }
        return true;
}

bool valid_ip(const char *s, size_t len) {
        char buf[INET6_ADDRSTRLEN + 1];
        uint8_t addr[16];

        if (!s || len < 2 || len >= sizeof buf)
                return false;
        memcpy(buf, s, len);
        buf[len] = '\0';
        return inet_pton(memchr(s, ':', len) ? AF_INET6 : AF_INET, buf, addr) == 1;
}

_printf_(3, 4)
static int fail(ParamError *err, VmmError code, const char *fmt, ...) {
        va_list ap;

        err->code = code;
        va_start(ap, fmt);
        (void) vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        return -EINVAL;
}

/* A client-supplied name made safe to show: printable ASCII, others as '?',
 * long names cut with "...". */
static const char *quote(char *buf, size_t size, const char *s, size_t len) {
        size_t o = 0;

        assert(size > QUOTE_MAX + 4);
        for (size_t i = 0; i < len && o < size - 1; i++) {
                if (o >= QUOTE_MAX) {
                        memcpy(buf + o, "...", 3);
                        o += 3;
                        break;
                }
                char c = s[i];
                buf[o++] = (c >= 0x20 && c < 0x7f && c != '\'') ? c : '?';
        }
        buf[o] = '\0';
        return buf;
}

/* A key of a params or disk map: a valid UTF-8 str. */
static int check_key(const msgpack_object *k, const char *where, ParamError *err) {
        if (k->type != MSGPACK_OBJECT_STR)
                return fail(err, VMM_E_BAD_REQUEST, "%s: keys must be strings", where);
        if (!valid_utf8(k->via.str.ptr, k->via.str.size))
                return fail(err, VMM_E_BAD_REQUEST, "%s: a key is not valid UTF-8", where);
        return 0;
}

static int parse_uint(const msgpack_object *o, const char *name, uint64_t min, uint64_t max,
                      uint64_t *ret, ParamError *err) {
        if (min == 0 && max == 0)
                max = UINT64_MAX;
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 < min || o->via.u64 > max)
                return fail(err, VMM_E_BAD_REQUEST, "%s: expected an integer in %" PRIu64
                            "..%" PRIu64, name, min, max);
        *ret = o->via.u64;
        return 0;
}

static const char *check_rule(bool (*check)(const char *, size_t)) {
        if (check == valid_user_name)
                return "expected 1..64 characters of [A-Za-z0-9._@+-], first a letter or digit";
        if (check == valid_text_line)
                return "expected text without control characters";
        if (check == valid_text)
                return "expected text without control characters but tab and newline";
        if (check == valid_hostname)
                return "expected a host name (RFC 1123 labels, at most 253 bytes)";
        if (check == valid_ip)
                return "expected an IPv4 or IPv6 address";
        if (check == valid_vm_id)
                return "expected 1..48 characters of [A-Za-z0-9._-], first a letter or digit";
        if (check == valid_disk_id)
                return "expected 1..64 characters of [A-Za-z0-9._-], first a letter or digit";
        if (check == valid_token)
                return "expected a token of 43 characters [A-Za-z0-9_-]";
        return "invalid value";
}

static int parse_str(const msgpack_object *o, const char *name, uint64_t min, uint64_t max,
                     bool (*check)(const char *, size_t), const char *const *choices,
                     ParamStr *ret, ParamError *err) {
        if (o->type == MSGPACK_OBJECT_BIN)
                return fail(err, VMM_E_BAD_REQUEST, "%s: expected a string, got binary", name);
        if (o->type != MSGPACK_OBJECT_STR)
                return fail(err, VMM_E_BAD_REQUEST, "%s: expected a string", name);

        const char *p = o->via.str.ptr;
        size_t len = o->via.str.size;
        if (!valid_utf8(p, len))
                return fail(err, VMM_E_BAD_REQUEST, "%s: not valid UTF-8", name);
        if (len < min || (max > 0 && len > max)) {
                if (max > 0)
                        return fail(err, VMM_E_BAD_REQUEST,
                                    "%s: expected a string of %" PRIu64 "..%" PRIu64 " bytes",
                                    name, min, max);
                return fail(err, VMM_E_BAD_REQUEST,
                            "%s: expected a string of at least %" PRIu64 " bytes", name, min);
        }
        if (check && !check(p, len))
                return fail(err, VMM_E_BAD_REQUEST, "%s: %s", name, check_rule(check));
        if (choices) {
                bool found = false;
                for (size_t i = 0; choices[i]; i++)
                        if (streq_n(p, len, choices[i])) {
                                found = true;
                                break;
                        }
                if (!found) {
                        char list[120] = "";
                        size_t o_len = 0;
                        for (size_t i = 0; choices[i] && o_len < sizeof list; i++) {
                                int r = snprintf(list + o_len, sizeof list - o_len, "%s%s",
                                                 i > 0 ? ", " : "", choices[i]);
                                if (r < 0)
                                        break;
                                o_len += (size_t) r;
                        }
                        return fail(err, VMM_E_BAD_REQUEST, "%s: expected one of %s", name, list);
                }
        }
        *ret = (ParamStr) { .set = true, .ptr = p, .len = len };
        return 0;
}

static int parse_disk(const msgpack_object *o, size_t idx, ParamDisk *ret, ParamError *err) {
        char where[NAME_MAX_LEN], name[NAME_MAX_LEN + QUOTE_MAX + 8], q[QUOTE_MAX + 8];
        ParamDisk d = { 0 };
        bool have_id = false, have_size = false;
        int r;

        (void) snprintf(where, sizeof where, "disks[%zu]", idx);
        if (o->type != MSGPACK_OBJECT_MAP)
                return fail(err, VMM_E_BAD_REQUEST,
                            "%s: expected a map {\"id\"?, \"size\"}", where);

        for (uint32_t i = 0; i < o->via.map.size; i++) {
                const msgpack_object *k = &o->via.map.ptr[i].key;
                const msgpack_object *v = &o->via.map.ptr[i].val;

                r = check_key(k, where, err);
                if (r < 0)
                        return r;
                const char *kp = k->via.str.ptr;
                size_t kl = k->via.str.size;
                (void) snprintf(name, sizeof name, "%s.%s", where, quote(q, sizeof q, kp, kl));

                if (streq_n(kp, kl, "id")) {
                        if (have_id)
                                return fail(err, VMM_E_BAD_REQUEST, "duplicate key '%s'", name);
                        have_id = true;
                        r = parse_str(v, name, 1, VMM_DISK_ID_MAX, valid_disk_id, NULL, &d.id,
                                      err);
                } else if (streq_n(kp, kl, "size")) {
                        if (have_size)
                                return fail(err, VMM_E_BAD_REQUEST, "duplicate key '%s'", name);
                        have_size = true;
                        r = parse_uint(v, name, VMM_DISK_SIZE_MIN, VMM_DISK_SIZE_MAX, &d.size,
                                       err);
                } else
                        return fail(err, VMM_E_BAD_REQUEST, "unknown field '%s'", name);
                if (r < 0)
                        return r;
        }
        if (!have_size)
                return fail(err, VMM_E_BAD_REQUEST, "missing field '%s.size'", where);
        if (ret)
                *ret = d;
        return 0;
}

static int str_cmp(const void *a, const void *b) {
        const ParamStr *x = a, *y = b;
        int c = memcmp(x->ptr, y->ptr, MIN(x->len, y->len));

        if (c != 0)
                return c;
        return (x->len > y->len) - (x->len < y->len);
}

/* Explicit disk ids must be distinct within the request. Sorting keeps this
 * O(n log n) even for a long (too_large) list. */
static int check_disk_ids(const msgpack_object *arr, ParamError *err) {
        ParamStr stack[VMM_MAX_DISKS];
        _cleanup_free_ ParamStr *heap = NULL;
        ParamStr *ids = stack;
        uint32_t n = arr->via.array.size;
        size_t m = 0;

        if (n > VMM_MAX_DISKS) {
                heap = calloc(n, sizeof *heap);
                if (!heap) {
                        err->code = VMM_E_INTERNAL;
                        (void) snprintf(err->message, sizeof err->message, "out of memory");
                        return -ENOMEM;
                }
                ids = heap;
        }
        for (uint32_t i = 0; i < n; i++) {
                const msgpack_object *o = &arr->via.array.ptr[i];
                /* parse_disk() accepted every entry: maps of str keys */
                for (uint32_t j = 0; j < o->via.map.size; j++) {
                        const msgpack_object *k = &o->via.map.ptr[j].key;
                        if (streq_n(k->via.str.ptr, k->via.str.size, "id")) {
                                const msgpack_object *v = &o->via.map.ptr[j].val;
                                ids[m++] = (ParamStr) { .set = true, .ptr = v->via.str.ptr, .len = v->via.str.size };
                        }
                }
        }
        if (m < 2)
                return 0;
        qsort(ids, m, sizeof *ids, str_cmp);
        for (size_t i = 1; i < m; i++)
                if (str_cmp(&ids[i - 1], &ids[i]) == 0) {
                        char q[QUOTE_MAX + 8];
                        return fail(err, VMM_E_BAD_REQUEST, "disks: duplicate disk id '%s'",
                                    quote(q, sizeof q, ids[i].ptr, ids[i].len));
                }
        return 0;
}

/* Returns 0, <0 with *err (bad_request), or 1 when the list is only too long
 * (too_large, filled into *big). */
static int parse_disks(const msgpack_object *o, ParamDisks *ret, ParamError *err,
                       ParamError *big) {
        int r;

        if (o->type != MSGPACK_OBJECT_ARRAY)
                return fail(err, VMM_E_BAD_REQUEST,
                            "disks: expected an array of {\"id\"?, \"size\"} maps");
        uint32_t n = o->via.array.size;
        for (uint32_t i = 0; i < n; i++) {
                r = parse_disk(&o->via.array.ptr[i], i, i < VMM_MAX_DISKS ? &ret->d[i] : NULL,
                               err);
                if (r < 0)
                        return r;
        }
        r = check_disk_ids(o, err);
        if (r < 0)
                return r;
        if (n > VMM_MAX_DISKS) {
                (void) fail(big, VMM_E_TOO_LARGE, "disks: at most %d disks (got %" PRIu32 ")",
                            VMM_MAX_DISKS, n);
                return 1;
        }
        ret->set = true;
        ret->n = n;
        return 0;
}

static void *field_ptr(void *out, const ParamField *f) {
        return (char *) out + f->offset;
}

static void fields_zero(void *out, const ParamField *fields, size_t n_fields) {
        for (size_t i = 0; i < n_fields; i++) {
                const ParamField *f = &fields[i];
                switch (f->type) {
                case PARAM_STR:
                        memset(field_ptr(out, f), 0, sizeof(ParamStr));
                        break;
                case PARAM_UINT:
                        memset(field_ptr(out, f), 0, sizeof(ParamUint));
                        break;
                case PARAM_DISKS:
                        memset(field_ptr(out, f), 0, sizeof(ParamDisks));
                        break;
                case PARAM_BOOL:
                        memset(field_ptr(out, f), 0, sizeof(ParamBool));
                        break;
                case PARAM_STRS:
                case PARAM_UINTS:
                        memset(field_ptr(out, f), 0, sizeof(ParamList));
                        break;
                case PARAM_ANY:
                        memset(field_ptr(out, f), 0, sizeof(ParamAny));
                        break;
                default:
                        break;
                }
        }
}

/* Returns 0, <0 with *err, or 1 when the list is only too long (*big). */
static int parse_list(const ParamField *f, const msgpack_object *v, ParamList *ret,
                      ParamError *err, ParamError *big) {
        char name[NAME_MAX_LEN + 16];

        if (v->type != MSGPACK_OBJECT_ARRAY)
                return fail(err, VMM_E_BAD_REQUEST, "%s: expected a list", f->name);
        uint32_t n = v->via.array.size;
        for (uint32_t i = 0; i < n; i++) {
                const msgpack_object *o = &v->via.array.ptr[i];
                uint64_t u;
                ParamStr str;
                int r;

                (void) snprintf(name, sizeof name, "%s[%" PRIu32 "]", f->name, i);
                if (f->type == PARAM_STRS)
                        r = parse_str(o, name, f->min, f->max, f->check, f->choices, &str, err);
                else
                        r = parse_uint(o, name, f->min, f->max, &u, err);
                if (r < 0)
                        return r;
        }
        if (f->max_items && n > f->max_items) {
                (void) fail(big, VMM_E_TOO_LARGE, "%s: at most %" PRIu32 " items (got %" PRIu32
                            ")", f->name, f->max_items, n);
                return 1;
        }
        *ret = (ParamList) { .set = true, .n = n, .items = v->via.array.ptr };
        return 0;
}

static int parse_field(const ParamField *f, const msgpack_object *v, void *out, ParamError *err,
                       ParamError *big) {
        int r;

        if (f->nullable && v->type == MSGPACK_OBJECT_NIL &&
            (f->type == PARAM_STR || f->type == PARAM_UINT || f->type == PARAM_STRS)) {
                bool *set = field_ptr(out, f), *nil = set + 1;
                /* set and nil lead each of ParamStr, ParamUint and ParamList */
                *set = true;
                *nil = true;
                return 0;
        }
        switch (f->type) {
        case PARAM_STR:
                return parse_str(v, f->name, f->min, f->max, f->check, f->choices,
                                 field_ptr(out, f), err);
        case PARAM_UINT: {
                ParamUint *u = field_ptr(out, f);
                r = parse_uint(v, f->name, f->min, f->max, &u->v, err);
                if (r < 0)
                        return r;
                u->set = true;
                return 0;
        }
        case PARAM_BOOL: {
                ParamBool *b = field_ptr(out, f);
                if (v->type != MSGPACK_OBJECT_BOOLEAN)
                        return fail(err, VMM_E_BAD_REQUEST, "%s: expected true or false",
                                    f->name);
                *b = (ParamBool) { .set = true, .v = v->via.boolean };
                return 0;
        }
        case PARAM_STRS:
        case PARAM_UINTS:
                return parse_list(f, v, field_ptr(out, f), err, big);
        case PARAM_ANY: {
                ParamAny *a = field_ptr(out, f);
                char msg[160] = "invalid value";
                if (f->check_obj && !f->check_obj(v, msg, sizeof msg))
                        return fail(err, VMM_E_BAD_REQUEST, "%s: %s", f->name, msg);
                *a = (ParamAny) { .set = true, .o = v };
                return 0;
        }
        case PARAM_DISKS:
                return parse_disks(v, field_ptr(out, f), err, big);
        default:
                /* not a wire field (PARAM_FD_MARKER): never matched by name */
                return fail(err, VMM_E_BAD_REQUEST, "unknown field '%s'", f->name);
        }
}

int params_parse(const msgpack_object *params, const ParamField *fields, size_t n_fields,
                 void *out, ParamStr *ret_token, ParamError *err) {
        return params_parse_ex(params, fields, n_fields, out, ret_token, NULL, err);
}

static bool peer_char(char c) {
        return is_alnum(c) || c == '.' || c == ':' || c == '%';
}

static bool valid_peer(const char *s, size_t len) {
        if (len < 1 || len > 45)
                return false;
        for (size_t i = 0; i < len; i++)
                if (!peer_char(s[i]))
                        return false;
        return true;
}

int params_parse_ex(const msgpack_object *params, const ParamField *fields, size_t n_fields,
                    void *out, ParamStr *ret_token, ParamStr *ret_peer, ParamError *err) {
        bool seen[PARAMS_FIELDS_MAX] = { false }, seen_token = false, seen_peer = false;
        ParamError big = { 0 };
        bool too_large = false;
        int r;

        assert(params && err);
        assert(n_fields <= PARAMS_FIELDS_MAX);
        assert(out || n_fields == 0);

        fields_zero(out, fields, n_fields);
        if (ret_token)
                *ret_token = (ParamStr) { 0 };
        if (ret_peer)
                *ret_peer = (ParamStr) { 0 };

        if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size > 1 ||
            (params->via.array.size == 1 &&
             params->via.array.ptr[0].type != MSGPACK_OBJECT_MAP))
                return fail(err, VMM_E_BAD_REQUEST,
                            "params must be [] or [{...}] (one map of named arguments)");

        const msgpack_object_map *map = NULL;
        if (params->via.array.size == 1)
                map = &params->via.array.ptr[0].via.map;

        for (uint32_t i = 0; map && i < map->size; i++) {
                const msgpack_object *k = &map->ptr[i].key;
                const msgpack_object *v = &map->ptr[i].val;
                char q[QUOTE_MAX + 8];

                r = check_key(k, "params", err);
                if (r < 0)
                        return r;
                const char *kp = k->via.str.ptr;
                size_t kl = k->via.str.size;

                size_t idx = n_fields;
                for (size_t j = 0; j < n_fields; j++)
                        if (fields[j].type != PARAM_FD_MARKER && streq_n(kp, kl, fields[j].name)) {
                                idx = j;
                                break;
                        }

                if (idx == n_fields && ret_peer && streq_n(kp, kl, "peer")) {
                        if (seen_peer)
                                return fail(err, VMM_E_BAD_REQUEST, "duplicate key 'peer'");
                        seen_peer = true;
                        r = parse_str(v, "peer", 1, 45, NULL, NULL, ret_peer, err);
                        if (r < 0)
                                return r;
                        if (!valid_peer(ret_peer->ptr, ret_peer->len))
                                return fail(err, VMM_E_BAD_REQUEST,
                                            "peer: expected an IPv4 or IPv6 address");
                        continue;
                }
                if (idx == n_fields) {
                        if (!ret_token || !streq_n(kp, kl, "token"))
                                return fail(err, VMM_E_BAD_REQUEST, "unknown field '%s'",
                                            quote(q, sizeof q, kp, kl));
                        if (seen_token)
                                return fail(err, VMM_E_BAD_REQUEST, "duplicate key 'token'");
                        seen_token = true;
                        r = parse_str(v, "token", VMM_TOKEN_LEN, VMM_TOKEN_LEN, valid_token, NULL,
                                      ret_token, err);
                        if (r < 0)
                                return r;
                        continue;
                }

                if (seen[idx])
                        return fail(err, VMM_E_BAD_REQUEST, "duplicate key '%s'", fields[idx].name);
                seen[idx] = true;
                r = parse_field(&fields[idx], v, out, err, &big);
                if (r < 0)
                        return r;
                if (r > 0)
                        too_large = true;
        }

        for (size_t j = 0; j < n_fields; j++)
                if (fields[j].mandatory && fields[j].type != PARAM_FD_MARKER && !seen[j])
                        return fail(err, VMM_E_BAD_REQUEST, "missing field '%s'", fields[j].name);

        if (too_large) {
                *err = big;
                return -EINVAL;
        }
        return 0;
}

/* ---- shape checks that need no schema ---- */

/* path: where o is ("vm_id", "disks[0].id"), for the message. */
/* Maps up to this size are checked for duplicate keys pair by pair; larger
 * ones by sorting their keys (a map of thousands of keys, which one message
 * can hold, would otherwise cost the loop quadratic time). */
#define SHAPE_SMALL_MAP 16

static int key_cmp(const void *a, const void *b) {
        const msgpack_object *x = *(const msgpack_object *const *) a;
        const msgpack_object *y = *(const msgpack_object *const *) b;

        if (x->via.str.size != y->via.str.size)
                return x->via.str.size < y->via.str.size ? -1 : 1;
        return memcmp(x->via.str.ptr, y->via.str.ptr, x->via.str.size);
}

/* A key of m (string keys, checked already) that comes twice, or NULL;
 * -ENOMEM in *ret_error when it cannot tell. */
static const msgpack_object *duplicate_key_sorted(const msgpack_object_map *m, int *ret_error) {
        const msgpack_object **keys = malloc(m->size * sizeof *keys);
        const msgpack_object *dup = NULL;

        *ret_error = 0;
        if (!keys) {
                *ret_error = -ENOMEM;
                return NULL;
        }
        for (uint32_t i = 0; i < m->size; i++)
                keys[i] = &m->ptr[i].key;
        qsort(keys, m->size, sizeof *keys, key_cmp);
        for (uint32_t i = 1; i < m->size && !dup; i++)
                if (key_cmp(&keys[i - 1], &keys[i]) == 0)
                        dup = keys[i];
        free(keys);
        return dup;
}

static int duplicate_key_error(const msgpack_object *k, unsigned depth, const char *path,
                               ParamError *err) {
        char q[QUOTE_MAX + 8];

        quote(q, sizeof q, k->via.str.ptr, k->via.str.size);
        return depth == 1 ? fail(err, VMM_E_BAD_REQUEST, "duplicate key '%s'", q)
                          : fail(err, VMM_E_BAD_REQUEST, "duplicate key '%s.%s'", path, q);
}

static int shape_walk(const msgpack_object *o, unsigned depth, const char *path, ParamError *err) {
        char sub[NAME_MAX_LEN + QUOTE_MAX + 8], q[QUOTE_MAX + 8];

        if (depth > 64)
                return fail(err, VMM_E_BAD_REQUEST, "params: nested too deep");
        switch (o->type) {
        case MSGPACK_OBJECT_BIN:
                return fail(err, VMM_E_BAD_REQUEST, "%s: expected a string, got binary", path);
        case MSGPACK_OBJECT_STR:
                if (!valid_utf8(o->via.str.ptr, o->via.str.size))
                        return fail(err, VMM_E_BAD_REQUEST, "%s: not valid UTF-8", path);
                return 0;
        case MSGPACK_OBJECT_ARRAY:
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        (void) snprintf(sub, sizeof sub, "%s[%" PRIu32 "]", path, i);
                        int r = shape_walk(&o->via.array.ptr[i], depth + 1, sub, err);
                        if (r < 0)
                                return r;
                }
                return 0;
        case MSGPACK_OBJECT_MAP: {
                const msgpack_object_map *m = &o->via.map;
                bool small = m->size <= SHAPE_SMALL_MAP;
                if (!small) {
                        /* every key a string first, then duplicates by sorting */
                        for (uint32_t i = 0; i < m->size; i++) {
                                int r = check_key(&m->ptr[i].key, path, err);
                                if (r < 0)
                                        return r;
                        }
                        int error;
                        const msgpack_object *dup = duplicate_key_sorted(m, &error);
                        if (error < 0)
                                return fail(err, VMM_E_INTERNAL, "out of memory");
                        if (dup)
                                return duplicate_key_error(dup, depth, path, err);
                }
                for (uint32_t i = 0; i < m->size; i++) {
                        const msgpack_object *k = &m->ptr[i].key;
                        int r = small ? check_key(k, path, err) : 0;
                        if (r < 0)
                                return r;
                        quote(q, sizeof q, k->via.str.ptr, k->via.str.size);
                        /* small maps: the pairwise check costs less than sorting */
                        for (uint32_t j = 0; small && j < i; j++) {
                                const msgpack_object *kj = &m->ptr[j].key;
                                if (kj->via.str.size == k->via.str.size &&
                                    memcmp(kj->via.str.ptr, k->via.str.ptr, k->via.str.size) == 0)
                                        return duplicate_key_error(k, depth, path, err);
                        }
                        if (depth == 1)
                                (void) snprintf(sub, sizeof sub, "%s", q);
                        else
                                (void) snprintf(sub, sizeof sub, "%s.%s", path, q);
                        r = shape_walk(&m->ptr[i].val, depth + 1, sub, err);
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        default:
                return 0;
        }
}

int params_shape_check(const msgpack_object *params, ParamError *err) {
        if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size > 1 ||
            (params->via.array.size == 1 &&
             params->via.array.ptr[0].type != MSGPACK_OBJECT_MAP))
                return fail(err, VMM_E_BAD_REQUEST,
                            "params must be [] or [{...}] (one map of named arguments)");
        return shape_walk(params, 0, "params", err);
}
