/* SPDX-License-Identifier: MIT */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/common/escape.h"

size_t utf8_sequence_len(const unsigned char *p, size_t n) {
        unsigned char b = p[0], lo = 0x80, hi = 0xbf;
        size_t len;

        if (b < 0x80)
                return 1;
        if (b >= 0xc2 && b <= 0xdf)
                len = 2;
        else if (b >= 0xe0 && b <= 0xef) {
                len = 3;
                if (b == 0xe0)
                        lo = 0xa0;          /* no overlong forms */
                else if (b == 0xed)
                        hi = 0x9f;          /* no surrogates */
        } else if (b >= 0xf0 && b <= 0xf4) {
                len = 4;
                if (b == 0xf0)
                        lo = 0x90;
                else if (b == 0xf4)
                        hi = 0x8f;          /* nothing past U+10FFFF */
        } else
                return 0;
        if (len > n || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (p[i] < 0x80 || p[i] > 0xbf)
                        return 0;
        return len;
}

/* One step: how the text at p (n >= 1 bytes) prints. Sets *ret_in to the
 * bytes consumed and writes the output (at most 7 bytes, not terminated)
 * into out; returns its length. */
static size_t escape_step(const unsigned char *p, size_t n, unsigned flags, char out[8],
                          size_t *ret_in) {
        unsigned char b = p[0];

        if (b == '\\') {
                *ret_in = 1;
                memcpy(out, "\\\\", 2);
                return 2;
        }
        if ((b < 0x20 && !(b == '\t' && (flags & ESCAPE_KEEP_TAB))) || b == 0x7f) {
                *ret_in = 1;
                return (size_t) snprintf(out, 8, "\\x%02x", b);
        }
        if (b < 0x80) {
                *ret_in = 1;
                out[0] = (char) b;
                return 1;
        }
        size_t k = utf8_sequence_len(p, n);
        if (k == 0) {
                *ret_in = 1;
                return (size_t) snprintf(out, 8, "\\x%02x", b);
        }
        *ret_in = k;
        if (k == 2 && b == 0xc2 && p[1] <= 0x9f)       /* C1 control, U+0080..U+009F */
                return (size_t) snprintf(out, 8, "\\u%04x", (unsigned) p[1]);
        memcpy(out, p, k);
        return k;
}

bool text_needs_escape(const char *s, size_t n, unsigned flags) {
        const unsigned char *p = (const unsigned char *) s;

        for (size_t i = 0; i < n;) {
                char out[8];
                size_t in, len = escape_step(p + i, n - i, flags, out, &in);
                if (len != in || memcmp(out, p + i, len) != 0)
                        return true;
                i += in;
        }
        return false;
}

size_t text_escape_buf(const char *s, size_t n, unsigned flags, char *buf, size_t size) {
        const unsigned char *p = (const unsigned char *) s;
        size_t w = 0;

        if (size == 0)
                return 0;
        for (size_t i = 0; i < n;) {
                char out[8];
                size_t in, len = escape_step(p + i, n - i, flags, out, &in);
                if (w + len >= size)
                        break;
                memcpy(buf + w, out, len);
                w += len;
                i += in;
        }
        buf[w] = '\0';
        return w;
}

void fputs_escaped(FILE *f, const char *s, size_t n, unsigned flags) {
        const unsigned char *p = (const unsigned char *) s;

        for (size_t i = 0; i < n;) {
                char out[8];
                size_t in, len = escape_step(p + i, n - i, flags, out, &in);
                fwrite(out, 1, len, f);
                i += in;
        }
}

char *text_escape(const char *s, size_t n, unsigned flags) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);

        if (!f)
                return NULL;
        fputs_escaped(f, s, n, flags);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}
