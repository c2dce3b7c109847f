/* SPDX-License-Identifier: MIT */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <msgpack.h>

#include "shared/mpscan.h"
#include "vmm/protocol.h"

#define BIG (64u * 1024u)

/* One call with all bytes. */
static MpScanResult scan_once(const uint8_t *buf, size_t len, size_t max_bytes, unsigned depth,
                              size_t *ret_len) {
        MpScan s;

        mpscan_init(&s, max_bytes, depth);
        return mpscan_feed(&s, buf, len, ret_len);
}

/* Feeds buf[0..1), buf[0..2), ... and checks NEED_MORE before the end and
 * COMPLETE with the full length exactly at the end. The prefix is copied to a
 * fresh buffer each time: the scanner must not keep pointers. */
static void scan_bytewise_complete(const uint8_t *buf, size_t len, size_t max_bytes,
                                   unsigned depth) {
        MpScan s;
        size_t got = 0;

        mpscan_init(&s, max_bytes, depth);
        for (size_t i = 0; i + 1 < len; i++) {
                uint8_t *copy = malloc(i + 1);
                assert_non_null(copy);
                memcpy(copy, buf, i + 1);
                MpScanResult r = mpscan_feed(&s, copy, i + 1, &got);
                free(copy);
                if (r != MPSCAN_NEED_MORE)
                        fail_msg("prefix of %zu/%zu bytes gave %d, expected NEED_MORE", i + 1, len,
                                 (int) r);
        }
        assert_int_equal(mpscan_feed(&s, buf, len, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, len);
}

/* msgpack-c's own idea of where the first object ends. */
static size_t msgpack_c_length(const uint8_t *buf, size_t len) {
        msgpack_unpacked u;
        size_t off = 0;

        msgpack_unpacked_init(&u);
        msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *) buf, len, &off);
        msgpack_unpacked_destroy(&u);
        assert_int_equal(r, MSGPACK_UNPACK_SUCCESS);
        return off;
}

typedef struct Sample {
        const char *name;
        uint8_t bytes[40];
        size_t len;
} Sample;

#define S(n, ...) { n, { __VA_ARGS__ }, sizeof((uint8_t[]) { __VA_ARGS__ }) }

static const Sample samples[] = {
        S("positive fixint", 0x05),
        S("negative fixint", 0xe0),
        S("nil", 0xc0),
        S("false", 0xc2),
        S("true", 0xc3),
        S("float32", 0xca, 0x3f, 0x80, 0x00, 0x00),
        S("float64", 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0),
        S("uint8", 0xcc, 0xff),
        S("uint16", 0xcd, 0x01, 0x00),
        S("uint32", 0xce, 0, 1, 0, 0),
        S("uint64", 0xcf, 0, 0, 0, 1, 0, 0, 0, 0),
        S("int8", 0xd0, 0x80),
        S("int16", 0xd1, 0xff, 0x00),
        S("int32", 0xd2, 0xff, 0xff, 0, 0),
        S("int64", 0xd3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0),
        S("fixstr", 0xa3, 'a', 'b', 'c'),
        S("empty fixstr", 0xa0),
        S("str8", 0xd9, 0x03, 'a', 'b', 'c'),
        S("str16", 0xda, 0x00, 0x03, 'a', 'b', 'c'),
        S("str32", 0xdb, 0, 0, 0, 0x03, 'a', 'b', 'c'),
        S("bin8", 0xc4, 0x02, 0x00, 0xc1),
        S("bin16", 0xc5, 0x00, 0x02, 0x00, 0xc1),
        S("bin32", 0xc6, 0, 0, 0, 0x02, 0x00, 0xc1),
        S("ext8", 0xc7, 0x02, 0x05, 0xc1, 0xc1),
        S("ext16", 0xc8, 0x00, 0x02, 0x05, 0xc1, 0xc1),
        S("ext32", 0xc9, 0, 0, 0, 0x02, 0x05, 0xc1, 0xc1),
        S("fixext1", 0xd4, 0x05, 0xc1),
        S("fixext2", 0xd5, 0x05, 0xc1, 0xc1),
        S("fixext4", 0xd6, 0x05, 1, 2, 3, 4),
        S("fixext8", 0xd7, 0x05, 1, 2, 3, 4, 5, 6, 7, 8),
        S("fixext16", 0xd8, 0x05, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16),
        S("fixarray", 0x92, 0x01, 0xa1, 'x'),
        S("empty fixarray", 0x90),
        S("array16", 0xdc, 0x00, 0x02, 0x01, 0xc0),
        S("array32", 0xdd, 0, 0, 0, 0x02, 0x01, 0xc3),
        S("fixmap", 0x81, 0xa1, 'a', 0x01),
        S("empty fixmap", 0x80),
        S("map16", 0xde, 0x00, 0x01, 0xa1, 'a', 0x90),
        S("map32", 0xdf, 0, 0, 0, 0x01, 0xa1, 'a', 0x80),
        S("bin in array", 0x92, 0xc4, 0x01, 0xc1, 0x07),
};

static void test_every_format(void **state) {
        for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++) {
                const Sample *x = &samples[i];
                uint8_t buf[64];
                size_t got = 0;

                print_message("# format %s\n", x->name);
                /* agrees with msgpack-c */
                assert_int_equal(msgpack_c_length(x->bytes, x->len), x->len);
                /* alone */
                assert_int_equal(scan_once(x->bytes, x->len, BIG, 8, &got), MPSCAN_COMPLETE);
                assert_int_equal(got, x->len);
                /* trailing bytes (even invalid ones) are not looked at */
                memcpy(buf, x->bytes, x->len);
                memset(buf + x->len, 0xc1, 8);
                got = 0;
                assert_int_equal(scan_once(buf, x->len + 8, BIG, 8, &got), MPSCAN_COMPLETE);
                assert_int_equal(got, x->len);
                /* every prefix is NEED_MORE */
                scan_bytewise_complete(x->bytes, x->len, BIG, 8);
        }
}

static void test_scalar_top_level(void **state) {
        static const uint8_t b[] = { 0x2a, 0x2b };
        size_t got = 0;

        assert_int_equal(scan_once(b, 2, BIG, 8, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, 1);
}

static void test_empty_input(void **state) {
        size_t got = 77;

        assert_int_equal(scan_once((const uint8_t *) "", 0, BIG, 8, &got), MPSCAN_NEED_MORE);
        assert_int_equal(got, 77);   /* untouched */
}

static void test_bad_byte(void **state) {
        static const uint8_t top[] = { 0xc1 };
        static const uint8_t nested[] = { 0x93, 0x01, 0xc1, 0x02 };
        static const uint8_t in_map[] = { 0x81, 0xc1, 0x01 };

        assert_int_equal(scan_once(top, sizeof top, BIG, 8, NULL), MPSCAN_BAD);
        assert_int_equal(scan_once(nested, sizeof nested, BIG, 8, NULL), MPSCAN_BAD);
        assert_int_equal(scan_once(in_map, sizeof in_map, BIG, 8, NULL), MPSCAN_BAD);
        /* a prefix before the bad byte is still fine */
        assert_int_equal(scan_once(nested, 2, BIG, 8, NULL), MPSCAN_NEED_MORE);
}

static void test_nested_maps(void **state) {
        /* {"a": {"b": 1}, "c": [1, {"d": []}]} then a trailing object */
        static const uint8_t b[] = {
                0x82,
                0xa1, 'a', 0x81, 0xa1, 'b', 0x01,
                0xa1, 'c', 0x92, 0x01, 0x81, 0xa1, 'd', 0x90,
                0x05,
        };
        size_t got = 0;

        assert_int_equal(scan_once(b, sizeof b, BIG, 8, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, sizeof b - 1);
        assert_int_equal(got, msgpack_c_length(b, sizeof b));
        scan_bytewise_complete(b, sizeof b - 1, BIG, 8);
        /* depth of this object is 4: map, array, map, empty array */
        assert_int_equal(scan_once(b, sizeof b, BIG, 4, &got), MPSCAN_COMPLETE);
        assert_int_equal(scan_once(b, sizeof b, BIG, 3, &got), MPSCAN_TOO_LARGE);
}

static void nest(uint8_t *b, unsigned levels, uint8_t inner) {
        memset(b, 0x91, levels);
        b[levels] = inner;
}

static void test_depth(void **state) {
        uint8_t b[16];
        size_t got = 0;

        /* 8 arrays around a scalar: depth 8 */
        nest(b, 8, 0x01);
        assert_int_equal(scan_once(b, 9, BIG, VMM_MAX_DEPTH, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, 9);
        /* 9 arrays: depth 9 */
        nest(b, 9, 0x01);
        assert_int_equal(scan_once(b, 10, BIG, VMM_MAX_DEPTH, &got), MPSCAN_TOO_LARGE);
        /* known at the 9th header, before the rest arrives */
        assert_int_equal(scan_once(b, 9, BIG, VMM_MAX_DEPTH, &got), MPSCAN_TOO_LARGE);
        /* an empty container counts as a level too */
        nest(b, 7, 0x90);
        assert_int_equal(scan_once(b, 8, BIG, VMM_MAX_DEPTH, &got), MPSCAN_COMPLETE);
        nest(b, 8, 0x80);
        assert_int_equal(scan_once(b, 9, BIG, VMM_MAX_DEPTH, &got), MPSCAN_TOO_LARGE);
        /* maps nest too: {"k": {"k": ...}} */
        uint8_t m[64];
        size_t n = 0;
        for (int i = 0; i < 9; i++) {
                m[n++] = 0x81;
                m[n++] = 0xa1;
                m[n++] = 'k';
        }
        m[n++] = 0x01;
        assert_int_equal(scan_once(m, n, BIG, 9, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, n);
        assert_int_equal(scan_once(m, n, BIG, 8, &got), MPSCAN_TOO_LARGE);
}

static void test_huge_array_header(void **state) {
        /* array32 of 0x400000 elements: msgpack-c would allocate 128 MiB */
        static const uint8_t b[] = { 0xdd, 0x00, 0x40, 0x00, 0x00 };
        static const uint8_t m[] = { 0xdf, 0x00, 0x00, 0x80, 0x00 };  /* 2*32768 elements */
        static const uint8_t s[] = { 0xdb, 0xff, 0xff, 0xff, 0xff };  /* 4 GiB string */

        assert_int_equal(scan_once(b, sizeof b, BIG, 8, NULL), MPSCAN_TOO_LARGE);
        assert_int_equal(scan_once(m, sizeof m, BIG, 8, NULL), MPSCAN_TOO_LARGE);
        assert_int_equal(scan_once(s, sizeof s, BIG, 8, NULL), MPSCAN_TOO_LARGE);
        /* with an incomplete header, nothing is known yet */
        assert_int_equal(scan_once(b, 4, BIG, 8, NULL), MPSCAN_NEED_MORE);
}

/* A bin object of exactly total bytes. */
static uint8_t *make_bin(size_t total) {
        uint8_t *b = calloc(1, total + 1);
        assert_non_null(b);
        assert_true(total >= 5);
        b[0] = 0xc6;
        uint32_t n = (uint32_t) (total - 5);
        b[1] = (uint8_t) (n >> 24);
        b[2] = (uint8_t) (n >> 16);
        b[3] = (uint8_t) (n >> 8);
        b[4] = (uint8_t) n;
        return b;
}

/* An array16 of fixints, exactly total bytes. */
static uint8_t *make_array(size_t total) {
        uint8_t *b = calloc(1, total + 1);
        assert_non_null(b);
        uint16_t n = (uint16_t) (total - 3);
        b[0] = 0xdc;
        b[1] = (uint8_t) (n >> 8);
        b[2] = (uint8_t) n;
        memset(b + 3, 0x07, n);
        return b;
}

static void test_max_bytes_boundary(void **state) {
        const size_t max = 1000;
        size_t got = 0;
        uint8_t *b;

        /* a bulk payload: exactly max is fine, one more is refused at the header */
        b = make_bin(max);
        assert_int_equal(scan_once(b, max, max, 8, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, max);
        free(b);
        b = make_bin(max + 1);
        assert_int_equal(scan_once(b, max + 1, max, 8, NULL), MPSCAN_TOO_LARGE);
        assert_int_equal(scan_once(b, 5, max, 8, NULL), MPSCAN_TOO_LARGE);
        free(b);

        /* elements: exactly max is fine, one more element is refused at the header */
        b = make_array(max);
        got = 0;
        assert_int_equal(scan_once(b, max, max, 8, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, max);
        free(b);
        b = make_array(max + 1);
        assert_int_equal(scan_once(b, max + 1, max, 8, NULL), MPSCAN_TOO_LARGE);
        assert_int_equal(scan_once(b, 3, max, 8, NULL), MPSCAN_TOO_LARGE);
        free(b);

        /* a map's count needs two bytes per entry: 3 + 2*n */
        static const uint8_t m[3] = { 0xde, 0x00, 0x80 };   /* 128 entries: >= 259 bytes */
        assert_int_equal(scan_once(m, 3, 259, 8, NULL), MPSCAN_NEED_MORE);
        assert_int_equal(scan_once(m, 3, 258, 8, NULL), MPSCAN_TOO_LARGE);

        /* the sum over levels counts: [[x, y, z], a, b] needs 7 bytes */
        static const uint8_t nested[] = { 0x93, 0x93, 0x01, 0x02, 0x03, 0x04, 0x05 };
        assert_int_equal(scan_once(nested, sizeof nested, 7, 8, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, 7);
        assert_int_equal(scan_once(nested, 2, 6, 8, NULL), MPSCAN_TOO_LARGE);

        /* a fixed-size scalar that crosses max */
        static const uint8_t f64[] = { 0xcb, 1, 2, 3, 4, 5, 6, 7, 8 };
        assert_int_equal(scan_once(f64, 9, 9, 8, &got), MPSCAN_COMPLETE);
        assert_int_equal(scan_once(f64, 1, 8, 8, NULL), MPSCAN_TOO_LARGE);
}

static void pack_request(msgpack_sbuffer *sb, uint32_t msgid) {
        msgpack_packer pk;

        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        assert_int_equal(msgpack_pack_array(&pk, 4), 0);
        assert_int_equal(msgpack_pack_uint8(&pk, 0), 0);
        assert_int_equal(msgpack_pack_uint32(&pk, msgid), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "register", 8), 0);
        assert_int_equal(msgpack_pack_array(&pk, 1), 0);
        assert_int_equal(msgpack_pack_map(&pk, 5), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "vm_id", 5), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "vm1", 3), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "password", 8), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "s3cret-pw", 9), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "ram", 3), 0);
        assert_int_equal(msgpack_pack_uint64(&pk, 4096), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "cpu", 3), 0);
        assert_int_equal(msgpack_pack_uint64(&pk, 2), 0);
        assert_int_equal(msgpack_pack_str_with_body(&pk, "disks", 5), 0);
        assert_int_equal(msgpack_pack_array(&pk, 2), 0);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(msgpack_pack_map(&pk, 2), 0);
                assert_int_equal(msgpack_pack_str_with_body(&pk, "id", 2), 0);
                assert_int_equal(msgpack_pack_str_with_body(&pk, i ? "disk2" : "disk1", 5), 0);
                assert_int_equal(msgpack_pack_str_with_body(&pk, "size", 4), 0);
                assert_int_equal(msgpack_pack_uint64(&pk, 100000), 0);
        }
}

static void test_real_request_bytewise(void **state) {
        msgpack_sbuffer sb;
        size_t got = 0;

        msgpack_sbuffer_init(&sb);
        pack_request(&sb, 1);
        size_t first = sb.size;
        pack_request(&sb, 2);
        const uint8_t *b = (const uint8_t *) sb.data;

        assert_int_equal(msgpack_c_length(b, sb.size), first);
        scan_bytewise_complete(b, first, VMM_MAX_MSG_TCP, VMM_MAX_DEPTH);

        /* two pipelined requests: the first ends where it ends; reset, then the second */
        MpScan s;
        mpscan_init(&s, VMM_MAX_MSG_TCP, VMM_MAX_DEPTH);
        assert_int_equal(mpscan_feed(&s, b, sb.size, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, first);
        mpscan_reset(&s);
        got = 0;
        assert_int_equal(mpscan_feed(&s, b + first, sb.size - first, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, sb.size - first);

        /* one byte over the limit; depth 5: request, params, map, disks, disk */
        assert_int_equal(scan_once(b, first, first - 1, VMM_MAX_DEPTH, NULL), MPSCAN_TOO_LARGE);
        assert_int_equal(scan_once(b, first, first, VMM_MAX_DEPTH, &got), MPSCAN_COMPLETE);
        assert_int_equal(scan_once(b, first, first, 5, &got), MPSCAN_COMPLETE);
        assert_int_equal(scan_once(b, first, first, 4, NULL), MPSCAN_TOO_LARGE);
        msgpack_sbuffer_destroy(&sb);
}

static double now_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static void feed_slowly(const uint8_t *b, size_t len, size_t max) {
        MpScan s;
        size_t got = 0;

        mpscan_init(&s, max, VMM_MAX_DEPTH);
        for (size_t i = 1; i < len; i++)
                if (mpscan_feed(&s, b, i, &got) != MPSCAN_NEED_MORE)
                        fail_msg("prefix %zu gave no NEED_MORE", i);
        assert_int_equal(mpscan_feed(&s, b, len, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, len);
}

static void test_64k_bytewise_is_linear(void **state) {
        /* 65533 one-byte elements: a rescanning scanner would do ~2e9 steps */
        uint8_t *a = make_array(BIG);
        uint8_t *bin = make_bin(BIG);
        double t0 = now_s();

        feed_slowly(a, BIG, BIG);
        feed_slowly(bin, BIG, BIG);
        double elapsed = now_s() - t0;
        print_message("# 2 x 64 KiB byte by byte: %.3f s\n", elapsed);
        assert_true(elapsed < 1.0);
        assert_int_equal(msgpack_c_length(a, BIG), BIG);
        free(a);
        free(bin);
}

static void test_complete_is_sticky(void **state) {
        static const uint8_t b[] = { 0x92, 0x01, 0x02 };
        MpScan s;
        size_t got = 0;

        mpscan_init(&s, BIG, 8);
        assert_int_equal(mpscan_feed(&s, b, 3, &got), MPSCAN_COMPLETE);
        got = 0;
        assert_int_equal(mpscan_feed(&s, b, 3, &got), MPSCAN_COMPLETE);
        assert_int_equal(got, 3);
        /* reset starts over */
        mpscan_reset(&s);
        assert_int_equal(mpscan_feed(&s, b, 2, &got), MPSCAN_NEED_MORE);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_every_format),
                cmocka_unit_test(test_scalar_top_level),
                cmocka_unit_test(test_empty_input),
                cmocka_unit_test(test_bad_byte),
                cmocka_unit_test(test_nested_maps),
                cmocka_unit_test(test_depth),
                cmocka_unit_test(test_huge_array_header),
                cmocka_unit_test(test_max_bytes_boundary),
                cmocka_unit_test(test_real_request_bytewise),
                cmocka_unit_test(test_64k_bytewise_is_linear),
                cmocka_unit_test(test_complete_is_sticky),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
