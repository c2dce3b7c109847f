/* SPDX-License-Identifier: MIT */
/* fuzz-mpscan: the bounded pre-scan against msgpack-c.
 *
 * The input is scanned with the TCP limits (64 KiB, depth 8), in one call and
 * again a byte at a time (the resumable path); both must agree. A COMPLETE
 * object must be a whole object for msgpack-c too, of the same length, and
 * its strict prefixes must be NEED_MORE. BAD and NEED_MORE must match what
 * msgpack-c says on the same bytes (safe to ask: every header seen was within
 * the limits). An unlimited scan cross-checks TOO_LARGE: an object that is
 * whole, within 64 KiB and at most 8 deep must not be refused. */
#include <msgpack.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "shared/mpscan.h"

#define MAX_BYTES (64u * 1024u)
#define MAX_DEPTH 8u

static const char *result_name(MpScanResult r) {
        switch (r) {
        case MPSCAN_COMPLETE: return "COMPLETE";
        case MPSCAN_NEED_MORE: return "NEED_MORE";
        case MPSCAN_BAD: return "BAD";
        case MPSCAN_TOO_LARGE: return "TOO_LARGE";
        default: return "?";
        }
}

static MpScanResult scan_whole(const uint8_t *data, size_t size, size_t max_bytes,
                               unsigned max_depth, size_t *ret_len) {
        MpScan s;
        mpscan_init(&s, max_bytes, max_depth);
        return mpscan_feed(&s, data, size, ret_len);
}

/* Byte by byte, then (if still NEED_MORE) once more with everything. */
static MpScanResult scan_bytewise(const uint8_t *data, size_t size, size_t *ret_len) {
        MpScan s;
        MpScanResult r = MPSCAN_NEED_MORE;

        mpscan_init(&s, MAX_BYTES, MAX_DEPTH);
        for (size_t i = 1; i <= size; i++) {
                r = mpscan_feed(&s, data, i, ret_len);
                if (r != MPSCAN_NEED_MORE)
                        return r;
        }
        /* len did not grow: the same answer again */
        if (size > 0) {
                MpScanResult again = mpscan_feed(&s, data, size, ret_len);
                FUZZ_CHECK(again == r, "repeated feed changed NEED_MORE to %s",
                           result_name(again));
        }
        return r;
}

/* In chunks whose sizes come from the data itself. */
static MpScanResult scan_chunked(const uint8_t *data, size_t size, size_t *ret_len) {
        MpScan s;
        MpScanResult r = MPSCAN_NEED_MORE;
        size_t len = 0, k = 0;

        mpscan_init(&s, MAX_BYTES, MAX_DEPTH);
        while (len < size) {
                size_t step = 1 + (size > 0 ? data[k++ % size] % 37u : 0);
                len = len + step > size ? size : len + step;
                r = mpscan_feed(&s, data, len, ret_len);
                if (r != MPSCAN_NEED_MORE)
                        return r;
        }
        return r;
}

static unsigned object_depth(const msgpack_object *o) {
        unsigned d = 0;

        if (o->type == MSGPACK_OBJECT_ARRAY) {
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        unsigned c = object_depth(&o->via.array.ptr[i]);
                        if (c > d)
                                d = c;
                }
                return d + 1;
        }
        if (o->type == MSGPACK_OBJECT_MAP) {
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        unsigned k = object_depth(&o->via.map.ptr[i].key);
                        unsigned v = object_depth(&o->via.map.ptr[i].val);
                        if (k > d)
                                d = k;
                        if (v > d)
                                d = v;
                }
                return d + 1;
        }
        return 0;
}

/* msgpack-c on data[0..size): its return code and, on success, the length
 * and the nesting depth. */
static msgpack_unpack_return msgpack_answer(const uint8_t *data, size_t size, size_t *ret_off,
                                            unsigned *ret_depth) {
        msgpack_unpacked u;
        size_t off = 0;

        msgpack_unpacked_init(&u);
        msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *) data, size, &off);
        if (r == MSGPACK_UNPACK_SUCCESS) {
                *ret_off = off;
                if (ret_depth)
                        *ret_depth = object_depth(&u.data);
        }
        msgpack_unpacked_destroy(&u);
        return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        size_t len = SIZE_MAX, len_b = SIZE_MAX, len_c = SIZE_MAX, off = 0;
        unsigned depth = 0;

        MpScanResult r = scan_whole(data, size, MAX_BYTES, MAX_DEPTH, &len);
        MpScanResult rb = scan_bytewise(data, size, &len_b);
        MpScanResult rc = scan_chunked(data, size, &len_c);
        FUZZ_CHECK(r == rb, "whole %s, byte by byte %s", result_name(r), result_name(rb));
        FUZZ_CHECK(r == rc, "whole %s, in chunks %s", result_name(r), result_name(rc));

        /* a scan with no practical limit (the input itself bounds msgpack-c) */
        size_t ulen = SIZE_MAX;
        MpScanResult u = scan_whole(data, size, SIZE_MAX / 2, MPSCAN_DEPTH_CAP, &ulen);

        switch (r) {
        case MPSCAN_COMPLETE: {
                FUZZ_CHECK(len > 0 && len <= size && len <= MAX_BYTES, "length %zu of %zu",
                           len, size);
                FUZZ_CHECK(len == len_b && len == len_c, "lengths %zu, %zu, %zu", len, len_b,
                           len_c);
                FUZZ_CHECK(u == MPSCAN_COMPLETE && ulen == len, "unlimited scan %s, %zu",
                           result_name(u), ulen);
                msgpack_unpack_return m = msgpack_answer(data, len, &off, &depth);
                FUZZ_CHECK(m == MSGPACK_UNPACK_SUCCESS, "msgpack-c says %d", (int) m);
                FUZZ_CHECK(off == len, "msgpack-c length %zu, scan %zu", off, len);
                FUZZ_CHECK(depth <= MAX_DEPTH, "msgpack-c depth %u", depth);
                /* exactly the object's bytes, and one byte fewer */
                size_t l2 = 0;
                FUZZ_CHECK(scan_whole(data, len, MAX_BYTES, MAX_DEPTH, &l2) == MPSCAN_COMPLETE &&
                           l2 == len, "not COMPLETE on its own bytes");
                FUZZ_CHECK(scan_whole(data, len - 1, MAX_BYTES, MAX_DEPTH, &l2) ==
                           MPSCAN_NEED_MORE, "a strict prefix is not NEED_MORE");
                break;
        }
        case MPSCAN_NEED_MORE: {
                FUZZ_CHECK(u == MPSCAN_NEED_MORE, "unlimited scan %s", result_name(u));
                msgpack_unpack_return m = msgpack_answer(data, size, &off, NULL);
                /* msgpack-c refuses an ext 32 of length 0xffffffff as soon as it
                 * has the length (length + type byte overflows); the scanner
                 * calls it TOO_LARGE once the header is whole. */
                if (m == MSGPACK_UNPACK_PARSE_ERROR &&
                    memmem(data, size, "\xc9\xff\xff\xff\xff", 5))
                        break;
                FUZZ_CHECK(m == MSGPACK_UNPACK_CONTINUE, "msgpack-c says %d on a prefix",
                           (int) m);
                break;
        }
        case MPSCAN_BAD: {
                FUZZ_CHECK(u == MPSCAN_BAD, "unlimited scan %s", result_name(u));
                msgpack_unpack_return m = msgpack_answer(data, size, &off, NULL);
                FUZZ_CHECK(m == MSGPACK_UNPACK_PARSE_ERROR, "msgpack-c says %d on BAD", (int) m);
                break;
        }
        case MPSCAN_TOO_LARGE:
                /* a whole object that fits both limits must not be refused */
                if (u == MPSCAN_COMPLETE && ulen <= MAX_BYTES) {
                        msgpack_unpack_return m = msgpack_answer(data, ulen, &off, &depth);
                        FUZZ_CHECK(m == MSGPACK_UNPACK_SUCCESS && off == ulen,
                                   "msgpack-c says %d", (int) m);
                        FUZZ_CHECK(depth > MAX_DEPTH, "%zu bytes, depth %u refused", ulen,
                                   depth);
                }
                break;
        default:
                FUZZ_CHECK(false, "result %d", (int) r);
        }
        return 0;
}
