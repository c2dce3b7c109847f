/* SPDX-License-Identifier: MIT */
/* Bounded, resumable pre-scan of one MessagePack object (see mpscan.h).
 *
 * The scanner walks headers only. For every element it knows how many bytes
 * its header takes, how many payload bytes follow (str, bin, ext) and how
 * many elements it opens (array, map). The invariant kept after each header is
 *
 *         pos + pending <= max_bytes
 *
 * where pos is the end of what has been declared so far (it may run ahead of
 * the bytes received while a payload is still arriving) and pending counts the
 * elements announced but not yet started, each needing at least one byte. So
 * a declared length that cannot fit is refused at its header, before its bytes
 * arrive. */
#include <assert.h>
#include <stdbool.h>
#include <string.h>

#include "shared/mpscan.h"

void mpscan_reset(MpScan *s) {
        assert(s);
        s->pos = 0;
        s->depth = 0;
        memset(s->remaining, 0, sizeof s->remaining);
        s->remaining[0] = 1;
        s->pending = 1;
}

void mpscan_init(MpScan *s, size_t max_bytes, unsigned max_depth) {
        assert(s);
        assert(max_depth <= MPSCAN_DEPTH_CAP);
        s->max_bytes = max_bytes;
        s->max_depth = max_depth;
        mpscan_reset(s);
}

/* What one first byte announces. */
typedef enum ItemKind {
        ITEM_FIXED,      /* hdr is the whole element (scalars, fixext) */
        ITEM_BYTES,      /* str/bin/ext: hdr, then a length read from the header */
        ITEM_ARRAY,
        ITEM_MAP,
        ITEM_BAD,
} ItemKind;

typedef struct Item {
        ItemKind kind;
        unsigned hdr;       /* header bytes, including the first byte */
        unsigned len_size;  /* bytes of the big-endian length/count after the first byte */
        uint32_t inline_n;  /* the length or count carried in the first byte (fix formats) */
} Item;

static Item item_classify(uint8_t b) {
        if (b <= 0x7f || b >= 0xe0)                     /* positive/negative fixint */
                return (Item) { ITEM_FIXED, 1, 0, 0 };
        if (b <= 0x8f)
                return (Item) { ITEM_MAP, 1, 0, b & 0x0fu };
        if (b <= 0x9f)
                return (Item) { ITEM_ARRAY, 1, 0, b & 0x0fu };
        if (b <= 0xbf)
                return (Item) { ITEM_BYTES, 1, 0, b & 0x1fu };

        switch (b) {
        case 0xc0: /* nil */
        case 0xc2: /* false */
        case 0xc3: /* true */
                return (Item) { ITEM_FIXED, 1, 0, 0 };
        case 0xc4: return (Item) { ITEM_BYTES, 2, 1, 0 };  /* bin 8 */
        case 0xc5: return (Item) { ITEM_BYTES, 3, 2, 0 };  /* bin 16 */
        case 0xc6: return (Item) { ITEM_BYTES, 5, 4, 0 };  /* bin 32 */
        case 0xc7: return (Item) { ITEM_BYTES, 3, 1, 0 };  /* ext 8: len, type */
        case 0xc8: return (Item) { ITEM_BYTES, 4, 2, 0 };  /* ext 16 */
        case 0xc9: return (Item) { ITEM_BYTES, 6, 4, 0 };  /* ext 32 */
        case 0xca: return (Item) { ITEM_FIXED, 5, 0, 0 };  /* float 32 */
        case 0xcb: return (Item) { ITEM_FIXED, 9, 0, 0 };  /* float 64 */
        case 0xcc: return (Item) { ITEM_FIXED, 2, 0, 0 };  /* uint 8 */
        case 0xcd: return (Item) { ITEM_FIXED, 3, 0, 0 };  /* uint 16 */
        case 0xce: return (Item) { ITEM_FIXED, 5, 0, 0 };  /* uint 32 */
        case 0xcf: return (Item) { ITEM_FIXED, 9, 0, 0 };  /* uint 64 */
        case 0xd0: return (Item) { ITEM_FIXED, 2, 0, 0 };  /* int 8 */
        case 0xd1: return (Item) { ITEM_FIXED, 3, 0, 0 };  /* int 16 */
        case 0xd2: return (Item) { ITEM_FIXED, 5, 0, 0 };  /* int 32 */
        case 0xd3: return (Item) { ITEM_FIXED, 9, 0, 0 };  /* int 64 */
        case 0xd4: return (Item) { ITEM_FIXED, 3, 0, 0 };  /* fixext 1: type + 1 */
        case 0xd5: return (Item) { ITEM_FIXED, 4, 0, 0 };  /* fixext 2 */
        case 0xd6: return (Item) { ITEM_FIXED, 6, 0, 0 };  /* fixext 4 */
        case 0xd7: return (Item) { ITEM_FIXED, 10, 0, 0 }; /* fixext 8 */
        case 0xd8: return (Item) { ITEM_FIXED, 18, 0, 0 }; /* fixext 16 */
        case 0xd9: return (Item) { ITEM_BYTES, 2, 1, 0 };  /* str 8 */
        case 0xda: return (Item) { ITEM_BYTES, 3, 2, 0 };  /* str 16 */
        case 0xdb: return (Item) { ITEM_BYTES, 5, 4, 0 };  /* str 32 */
        case 0xdc: return (Item) { ITEM_ARRAY, 3, 2, 0 };  /* array 16 */
        case 0xdd: return (Item) { ITEM_ARRAY, 5, 4, 0 };  /* array 32 */
        case 0xde: return (Item) { ITEM_MAP, 3, 2, 0 };    /* map 16 */
        case 0xdf: return (Item) { ITEM_MAP, 5, 4, 0 };    /* map 32 */
        default:   return (Item) { ITEM_BAD, 1, 0, 0 };    /* 0xc1: never used */
        }
}

static uint32_t read_be(const uint8_t *p, unsigned n) {
        uint32_t v = 0;

        for (unsigned i = 0; i < n; i++)
                v = (v << 8) | p[i];
        return v;
}

MpScanResult mpscan_feed(MpScan *s, const uint8_t *buf, size_t len, size_t *ret_len) {
        assert(s);
        assert(buf || len == 0);

        for (;;) {
                if (s->depth == 0 && s->remaining[0] == 0) {
                        /* every header is in; the last payload may still be arriving */
                        if (s->pos > len)
                                return MPSCAN_NEED_MORE;
                        if (ret_len)
                                *ret_len = s->pos;
                        return MPSCAN_COMPLETE;
                }
                if (s->pos >= len)
                        return MPSCAN_NEED_MORE;

                Item it = item_classify(buf[s->pos]);
                if (it.kind == ITEM_BAD)
                        return MPSCAN_BAD;

                /* This element replaces one pending element; what it adds must fit. */
                uint64_t after = (uint64_t) s->pos + it.hdr + (s->pending - 1);
                if (after > s->max_bytes)
                        return MPSCAN_TOO_LARGE;
                if (len - s->pos < it.hdr)
                        return MPSCAN_NEED_MORE;   /* re-read this header next time */

                uint64_t n = it.len_size > 0 ? read_be(buf + s->pos + 1, it.len_size)
                                             : it.inline_n;
                uint64_t adds = 0, payload = 0;
                if (it.kind == ITEM_BYTES)
                        payload = n;
                else if (it.kind == ITEM_ARRAY)
                        adds = n;
                else if (it.kind == ITEM_MAP)
                        adds = 2 * n;
                if (after + payload + adds > s->max_bytes)
                        return MPSCAN_TOO_LARGE;

                bool opens = (it.kind == ITEM_ARRAY || it.kind == ITEM_MAP);
                if (opens && s->depth + 1 > s->max_depth)
                        return MPSCAN_TOO_LARGE;

                /* Commit: the element is started. */
                s->pos += it.hdr + (size_t) payload;
                s->remaining[s->depth]--;
                s->pending = s->pending - 1 + adds;
                if (opens && adds > 0) {
                        s->depth++;
                        s->remaining[s->depth] = adds;
                }
                while (s->depth > 0 && s->remaining[s->depth] == 0)
                        s->depth--;
        }
}
