/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "tools/common/escape.h"
#include "tools/common/json.h"

void json_print_string(FILE *f, const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *) s;

        fputc('"', f);
        for (size_t i = 0; i < n;) {
                unsigned char b = p[i];
                if (b == '"' || b == '\\') {
                        fputc('\\', f);
                        fputc(b, f);
                        i++;
                } else if (b < 0x20 || b == 0x7f) {
                        switch (b) {
                        case '\n': fputs("\\n", f); break;
                        case '\r': fputs("\\r", f); break;
                        case '\t': fputs("\\t", f); break;
                        case '\b': fputs("\\b", f); break;
                        case '\f': fputs("\\f", f); break;
                        default: fprintf(f, "\\u%04x", b); break;
                        }
                        i++;
                } else if (b < 0x80) {
                        fputc(b, f);
                        i++;
                } else {
                        size_t k = utf8_sequence_len(p + i, n - i);
                        if (k == 0) {
                                fputs("\\ufffd", f);
                                i++;
                        } else if (k == 2 && b == 0xc2 && p[i + 1] <= 0x9f) {
                                fprintf(f, "\\u%04x", (unsigned) p[i + 1]);   /* C1 */
                                i += 2;
                        } else {
                                fwrite(p + i, 1, k, f);
                                i += k;
                        }
                }
        }
        fputc('"', f);
}

static void json_indent(FILE *f, unsigned flags, unsigned level) {
        if (!(flags & JSON_PRETTY))
                return;
        fputc('\n', f);
        for (unsigned i = 0; i < level; i++)
                fputs("  ", f);
}

static void json_value(FILE *f, const msgpack_object *o, unsigned flags, unsigned level);

static void json_key(FILE *f, const msgpack_object *k) {
        char buf[32];
        char *text = NULL;
        size_t len = 0;
        FILE *m;

        switch (k->type) {
        case MSGPACK_OBJECT_STR:
                json_print_string(f, k->via.str.ptr, k->via.str.size);
                return;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                (void) snprintf(buf, sizeof(buf), "%" PRIu64, k->via.u64);
                json_print_string(f, buf, strlen(buf));
                return;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                (void) snprintf(buf, sizeof(buf), "%" PRId64, k->via.i64);
                json_print_string(f, buf, strlen(buf));
                return;
        default:
                /* any other key: its JSON text, as a string */
                m = open_memstream(&text, &len);
                if (!m) {
                        fputs("\"\"", f);
                        return;
                }
                json_value(m, k, 0, 0);
                if (fclose(m) == 0 && text)
                        json_print_string(f, text, len);
                else
                        fputs("\"\"", f);
                free(text);
                return;
        }
}

static void json_value(FILE *f, const msgpack_object *o, unsigned flags, unsigned level) {
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                fputs("null", f);
                break;
        case MSGPACK_OBJECT_BOOLEAN:
                fputs(o->via.boolean ? "true" : "false", f);
                break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                fprintf(f, "%" PRIu64, o->via.u64);
                break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                fprintf(f, "%" PRId64, o->via.i64);
                break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                if (!isfinite(o->via.f64))
                        fputs("null", f);
                else
                        fprintf(f, o->type == MSGPACK_OBJECT_FLOAT32 ? "%.9g" : "%.17g",
                                o->via.f64);
                break;
        case MSGPACK_OBJECT_STR:
                json_print_string(f, o->via.str.ptr, o->via.str.size);
                break;
        case MSGPACK_OBJECT_BIN:
                fputc('"', f);
                for (uint32_t i = 0; i < o->via.bin.size; i++)
                        fprintf(f, "%02x", (unsigned) (uint8_t) o->via.bin.ptr[i]);
                fputc('"', f);
                break;
        case MSGPACK_OBJECT_ARRAY:
                fputc('[', f);
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        if (i > 0)
                                fputc(',', f);
                        json_indent(f, flags, level + 1);
                        json_value(f, &o->via.array.ptr[i], flags, level + 1);
                }
                if (o->via.array.size > 0)
                        json_indent(f, flags, level);
                fputc(']', f);
                break;
        case MSGPACK_OBJECT_MAP:
                fputc('{', f);
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        if (i > 0)
                                fputc(',', f);
                        json_indent(f, flags, level + 1);
                        json_key(f, &o->via.map.ptr[i].key);
                        fputs((flags & JSON_PRETTY) ? ": " : ":", f);
                        json_value(f, &o->via.map.ptr[i].val, flags, level + 1);
                }
                if (o->via.map.size > 0)
                        json_indent(f, flags, level);
                fputc('}', f);
                break;
        default:
                fputs("null", f);
                break;
        }
}

int json_print(FILE *f, const msgpack_object *o, unsigned flags) {
        if (!f || !o)
                return -EINVAL;
        json_value(f, o, flags, 0);
        return ferror(f) ? -EIO : 0;
}

void json_print_error(FILE *f, const char *code, const char *message) {
        fputs("{\"error\":{\"code\":", f);
        json_print_string(f, code, strlen(code));
        fputs(",\"message\":", f);
        json_print_string(f, message, strlen(message));
        fputs("}}\n", f);
}
