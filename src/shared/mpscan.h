/* SPDX-License-Identifier: MIT */
/* Bounded, resumable pre-scan of one MessagePack object.
 *
 * msgpack-c allocates count*32 bytes at an array or map header before it has
 * seen the elements, so no byte reaches msgpack-c before this scanner has seen
 * the whole object and found it within the limits. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define MPSCAN_DEPTH_CAP 32

typedef enum MpScanResult {
        MPSCAN_COMPLETE,   /* one whole object; *ret_len is its size in bytes */
        MPSCAN_NEED_MORE,  /* a valid prefix that could still fit the limits */
        MPSCAN_BAD,        /* not MessagePack (e.g. the byte 0xc1) */
        MPSCAN_TOO_LARGE,  /* over max_bytes (declared or actual) or deeper than max_depth */
        _MPSCAN_MAX,
        _MPSCAN_INVALID = -1,
} MpScanResult;

typedef struct MpScan {
        size_t max_bytes;     /* the object may be at most this many bytes */
        unsigned max_depth;   /* the outermost container is depth 1 */
        /* private state, kept between calls */
        size_t pos;
        unsigned depth;
        uint64_t remaining[MPSCAN_DEPTH_CAP + 1]; /* [0]: the object itself; [d]: at depth d */
        uint64_t pending;     /* sum of remaining[0..depth]: each needs at least one byte */
} MpScan;

/* max_depth must be <= MPSCAN_DEPTH_CAP. */
void mpscan_init(MpScan *s, size_t max_bytes, unsigned max_depth);

/* Forget the current object: the next call scans a new object. */
void mpscan_reset(MpScan *s);

/* buf[0..len) holds the object's bytes from its first byte; len only grows
 * between calls for the same object (bytes past the object are ignored).
 * Work already done is not repeated, so feeding a message a byte at a time is
 * linear. After COMPLETE, BAD or TOO_LARGE call mpscan_reset() before the
 * next object. */
MpScanResult mpscan_feed(MpScan *s, const uint8_t *buf, size_t len, size_t *ret_len);
