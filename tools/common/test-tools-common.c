/* SPDX-License-Identifier: MIT */
/* tools/common: escaping of wire text, the JSON printer, the formats of
 * times and sizes, error texts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "tools/common/errors.h"
#include "tools/common/escape.h"
#include "tools/common/json.h"
#include "tools/common/output.h"
#include "vmm/client.h"

static char *esc(const char *s, unsigned flags) {
        char *r = text_escape(s, strlen(s), flags);
        assert_non_null(r);
        return r;
}

#define ASSERT_ESC(in, flags, want) do {                        \
                char *_got = esc(in, flags);                    \
                assert_string_equal(_got, want);                \
                free(_got);                                     \
        } while (0)

static void test_escape_controls(void **state) {
        /* plain text, UTF-8 and tabs in free text stay */
        ASSERT_ESC("vm-1 disk_2.x", 0, "vm-1 disk_2.x");
        ASSERT_ESC("caf\xc3\xa9 \xe2\x82\xac", 0, "caf\xc3\xa9 \xe2\x82\xac");
        ASSERT_ESC("a\tb", ESCAPE_KEEP_TAB, "a\tb");
        ASSERT_ESC("a\tb", 0, "a\\x09b");
        /* CSI (clear screen), OSC (window title, hyperlink), BEL, NUL-free C0 */
        ASSERT_ESC("\x1b[2J\x1b[H", 0, "\\x1b[2J\\x1b[H");
        ASSERT_ESC("\x1b]0;pwned\x07", 0, "\\x1b]0;pwned\\x07");
        ASSERT_ESC("\x1b]8;;http://x\x1b\\link", 0, "\\x1b]8;;http://x\\x1b\\\\link");
        ASSERT_ESC("line1\nline2\r", ESCAPE_KEEP_TAB, "line1\\x0aline2\\x0d");
        ASSERT_ESC("del\x7f", 0, "del\\x7f");
        /* C1 controls as UTF-8 (U+009B is CSI, U+009D OSC) and raw 8-bit bytes */
        ASSERT_ESC("\xc2\x9b" "31m", 0, "\\u009b31m");
        ASSERT_ESC("\xc2\x9d" "0;t", 0, "\\u009d0;t");
        ASSERT_ESC("\x9b" "31m", 0, "\\x9b31m");
        ASSERT_ESC("\xc3\x28", 0, "\\xc3(");           /* invalid sequence */
        ASSERT_ESC("\xed\xa0\x80", 0, "\\xed\\xa0\\x80"); /* a surrogate */
        ASSERT_ESC("back\\slash", 0, "back\\\\slash");
        assert_false(text_needs_escape("plain", 5, 0));
        assert_true(text_needs_escape("\x1b", 1, 0));
}

static void test_escape_buf_cuts_at_whole_escape(void **state) {
        char buf[8];
        size_t n = text_escape_buf("ab\x1b[c", 5, 0, buf, sizeof(buf));
        /* "ab" + "\x1b" is 6 bytes, "[" makes 7: fits; "c" would make 8 with NUL */
        assert_string_equal(buf, "ab\\x1b[");
        assert_int_equal(n, 7);
        n = text_escape_buf("a\x1b", 2, 0, buf, 4);
        assert_string_equal(buf, "a");
        assert_int_equal(n, 1);
}

static char *json_of(const msgpack_object *o) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        assert_non_null(f);
        assert_int_equal(json_print(f, o, 0), 0);
        assert_int_equal(fclose(f), 0);
        return text;
}

static void test_json_escapes(void **state) {
        const char s[] = "q\"\\\n\x1b\xc2\x9b\x7f\xff\xc3\xa9";
        msgpack_object o = { .type = MSGPACK_OBJECT_STR,
                             .via.str = { .size = sizeof(s) - 1, .ptr = s } };
        char *j = json_of(&o);
        assert_string_equal(j, "\"q\\\"\\\\\\n\\u001b\\u009b\\u007f\\ufffd\xc3\xa9\"");
        free(j);

        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str_with_body(&pk, "a", 1);
        msgpack_pack_array(&pk, 3);
        msgpack_pack_int64(&pk, -42);
        msgpack_pack_nil(&pk);
        msgpack_pack_true(&pk);
        msgpack_pack_uint64(&pk, 7);
        msgpack_pack_double(&pk, 1.5);
        msgpack_pack_str_with_body(&pk, "b", 1);
        msgpack_pack_bin_with_body(&pk, "\x01\xab", 2);
        msgpack_zone z;
        msgpack_zone_init(&z, 1024);
        msgpack_object m;
        assert_int_equal(msgpack_unpack(sb.data, sb.size, NULL, &z, &m), MSGPACK_UNPACK_SUCCESS);
        j = json_of(&m);
        assert_string_equal(j, "{\"a\":[-42,null,true],\"7\":1.5,\"b\":\"01ab\"}");
        free(j);
        msgpack_zone_destroy(&z);
        msgpack_sbuffer_destroy(&sb);

        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        json_print_error(f, "not_found", "VM 'x\x1b' does not exist");
        fclose(f);
        assert_string_equal(text, "{\"error\":{\"code\":\"not_found\",\"message\":"
                                  "\"VM 'x\\u001b' does not exist\"}}\n");
        free(text);
}

static void test_formats(void **state) {
        char buf[64];
        msgpack_object t = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER,
                             .via.u64 = 1763800000123ull };
        fmt_time(&t, buf, sizeof(buf));
        assert_string_equal(buf, "2025-11-22 08:26:40 UTC");
        msgpack_object nil = { .type = MSGPACK_OBJECT_NIL };
        fmt_time(&nil, buf, sizeof(buf));
        assert_string_equal(buf, "-");
        msgpack_object ram = { .type = MSGPACK_OBJECT_POSITIVE_INTEGER, .via.u64 = 4096 };
        fmt_size(&ram, "MiB", buf, sizeof(buf));
        assert_string_equal(buf, "4096 MiB");
        fmt_size(NULL, "GiB", buf, sizeof(buf));
        assert_string_equal(buf, "-");
        msgpack_object s = { .type = MSGPACK_OBJECT_STR,
                             .via.str = { .size = 5, .ptr = "a\x1b[2J" } };
        fmt_scalar(&s, buf, sizeof(buf));
        assert_string_equal(buf, "a\\x1b[2J");
        fmt_duration(90061000, buf, sizeof(buf));
        assert_string_equal(buf, "1d 1h 1m 1s");

        /* time left: the two largest units */
        int64_t now = 1763800000000;
        fmt_left(now + (2 * 3600 + 14 * 60 + 59) * 1000, now, buf, sizeof(buf));
        assert_string_equal(buf, "2h 14m left");
        fmt_left(now + 2 * 3600 * 1000 - 10, now, buf, sizeof(buf));    /* rounded up */
        assert_string_equal(buf, "2h 0m left");
        fmt_left(now + (3 * 86400 + 5 * 3600 + 7) * 1000, now, buf, sizeof(buf));
        assert_string_equal(buf, "3d 5h left");
        fmt_left(now + 845000, now, buf, sizeof(buf));
        assert_string_equal(buf, "14m 5s left");
        fmt_left(now + 42000, now, buf, sizeof(buf));
        assert_string_equal(buf, "42s left");
        fmt_left(now - 5000, now, buf, sizeof(buf));
        assert_string_equal(buf, "0s left");
        fmt_left_obj(&nil, now, buf, sizeof(buf));
        assert_string_equal(buf, "-");
}

static void test_lists_and_bookings(void **state) {
        msgpack_zone z;
        msgpack_object o;
        char buf[256];
        char *text;

        msgpack_sbuffer sb;
        msgpack_packer pk;
        static const char *const ips[] = { "10.0.0.5", "fd00::5" };
        static const uint64_t sizes[] = { 10, 20 };
        size_t off = 0;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        assert_int_equal(msgpack_pack_map(&pk, 6), 0);
        assert_int_equal(vmm_pack_kv_strv(&pk, "ips", ips, 2), 0);
        assert_int_equal(vmm_pack_kv_uintv(&pk, "sizes", sizes, 2), 0);
        assert_int_equal(vmm_pack_kv_strv(&pk, "none", NULL, 0), 0);
        assert_int_equal(vmm_pack_str(&pk, "booking"), 0);
        assert_int_equal(msgpack_pack_map(&pk, 2), 0);
        assert_int_equal(vmm_pack_kv_str(&pk, "user", "al\x1bice"), 0);
        assert_int_equal(vmm_pack_kv_uint(&pk, "expires_at", 1763800845000), 0);
        assert_int_equal(vmm_pack_str(&pk, "os"), 0);
        assert_int_equal(msgpack_pack_map(&pk, 2), 0);
        assert_int_equal(vmm_pack_kv_str(&pk, "name", "Debian"), 0);
        assert_int_equal(vmm_pack_kv_str(&pk, "version", "12"), 0);
        assert_int_equal(vmm_pack_str(&pk, "os2"), 0);
        assert_int_equal(msgpack_pack_map(&pk, 2), 0);
        assert_int_equal(vmm_pack_kv_str(&pk, "name", "Arch"), 0);
        assert_int_equal(vmm_pack_kv_str(&pk, "version", ""), 0);
        msgpack_zone_init(&z, 1024);
        assert_int_equal(msgpack_unpack(sb.data, sb.size, &off, &z, &o), MSGPACK_UNPACK_SUCCESS);
        text = fmt_list(vmm_object_get(&o, "ips"), NULL);
        assert_string_equal(text, "10.0.0.5, fd00::5");
        free(text);
        text = fmt_list(vmm_object_get(&o, "sizes"), "GiB");
        assert_string_equal(text, "10 GiB, 20 GiB");
        free(text);
        text = fmt_list(vmm_object_get(&o, "none"), NULL);
        assert_string_equal(text, "-");
        free(text);
        fmt_booking(vmm_object_get(&o, "booking"), 1763800000000, buf, sizeof(buf));
        assert_string_equal(buf, "al\\x1bice until 2025-11-22 08:40:45 UTC (14m 5s left)");
        fmt_booking(NULL, 0, buf, sizeof(buf));
        assert_string_equal(buf, "-");
        fmt_os(vmm_object_get(&o, "os"), buf, sizeof(buf));
        assert_string_equal(buf, "Debian 12");
        fmt_os(vmm_object_get(&o, "os2"), buf, sizeof(buf));
        assert_string_equal(buf, "Arch");
        msgpack_zone_destroy(&z);
        msgpack_sbuffer_destroy(&sb);
}

static void test_error_texts(void **state) {
        static const ErrorText mine[] = {
                { "unauthenticated", "not logged in", "log in first" },
                { NULL, NULL, NULL },
        };
        assert_string_equal(error_text(mine, "unauthenticated",
                                       "not logged in: use auth or resume, or pass a token"),
                            "log in first");
        /* the shared rows: a field the user typed */
        const char *t = error_text(mine, "bad_request", "vm_id: expected 1..48 characters");
        assert_non_null(t);
        assert_non_null(strstr(t, "VM id"));
        t = error_text(NULL, "bad_request", "new_password: expected a string of 6..1024 bytes");
        assert_non_null(strstr(t, "new password"));
        /* nothing known: the daemon's message stays */
        assert_null(error_text(mine, "not_found", "VM 'x' does not exist"));
        assert_null(error_text(mine, NULL, "x"));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_escape_controls),
                cmocka_unit_test(test_escape_buf_cuts_at_whole_escape),
                cmocka_unit_test(test_json_escapes),
                cmocka_unit_test(test_formats),
                cmocka_unit_test(test_lists_and_bookings),
                cmocka_unit_test(test_error_texts),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
