/* SPDX-License-Identifier: MIT */
/* vmmbench's http-get workload, the HTTP side (vmmbench.h): the request made
 * once from --url and --header, and the framing of responses (status line,
 * header fields, a Content-Length body). vmmbench.c's closed loop sends the
 * request and times each response exactly as it does vm.get, so that an HTTP
 * server and vmmd are measured by the same client.
 *
 * Only what a keep-alive GET needs is read: HTTP/1.0 and 1.1 status lines,
 * Content-Length, Connection: close. A chunked (or otherwise transfer-coded)
 * body, or one delimited by the end of the connection, is refused with a
 * sentence that says so: vmmbench cannot know where such a response ends
 * without reading it as the server meant. */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "shared/address.h"
#include "vmmbench.h"

#define HEAD_MAX (64u * 1024u)          /* a status line and header fields longer than this: refused */
#define REQUEST_MAX (64u * 1024u)       /* the request vmmbench sends */

/* RFC 9110's tchar: the characters of a header field's name */
static bool is_tchar(unsigned char ch) {
        return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* A field value we may send: visible ASCII, space and tab (no CR, LF, NUL) */
static bool value_ok(const char *s) {
        for (; *s; s++) {
                unsigned char ch = (unsigned char) *s;
                if (ch != '\t' && (ch < 0x20 || ch == 0x7f))
                        return false;
        }
        return true;
}

static bool has_host_header(char *const *headers, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (strncasecmp(headers[i], "host:", 5) == 0)
                        return true;
        return false;
}

void http_target_done(HttpTarget *t) {
        free(t->request);
        *t = (HttpTarget) { 0 };
}

int http_target_init(HttpTarget *t, const char *url, char *const *headers, size_t n_headers) {
        char host[256], port[16], authority[300];
        const char *p;

        if (strncasecmp(url, "https://", 8) == 0) {
                fprintf(stderr, "vmmbench: --url %s: https is not supported; vmmbench drives plain "
                        "HTTP on loopback\n", url);
                return -EINVAL;
        }
        if (strncasecmp(url, "http://", 7) != 0) {
                fprintf(stderr, "vmmbench: --url %s: give http://HOST:PORT/PATH\n", url);
                return -EINVAL;
        }
        p = url + 7;
        size_t alen = strcspn(p, "/?#");
        if (alen == 0 || alen >= sizeof authority) {
                fprintf(stderr, "vmmbench: --url %s: no host, or one too long\n", url);
                return -EINVAL;
        }
        memcpy(authority, p, alen);
        authority[alen] = '\0';
        if (strchr(authority, '@')) {
                fprintf(stderr, "vmmbench: --url %s: a user name in the URL is not supported; "
                        "give --header 'Authorization: ...' instead\n", url);
                return -EINVAL;
        }
        if (address_split(authority, "80", host, sizeof host, port, sizeof port) < 0) {
                fprintf(stderr, "vmmbench: --url %s: the host is not HOST, HOST:PORT or "
                        "[IPv6]:PORT\n", url);
                return -EINVAL;
        }
        snprintf(t->server, sizeof t->server, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host,
                 port);

        /* the path and query, without a fragment (never sent) */
        p += alen;
        size_t plen = strcspn(p, "#");
        if (plen >= sizeof t->path - 1) {
                fprintf(stderr, "vmmbench: --url: the path is longer than %zu bytes\n",
                        sizeof t->path - 2);
                return -EINVAL;
        }
        snprintf(t->path, sizeof t->path, "%s%.*s", plen == 0 || p[0] == '?' ? "/" : "",
                 (int) plen, p);
        for (const char *q = t->path; *q; q++)
                if ((unsigned char) *q <= 0x20 || (unsigned char) *q >= 0x7f) {
                        fprintf(stderr, "vmmbench: --url %s: the path has a space or a character "
                                "that needs %%-encoding\n", url);
                        return -EINVAL;
                }

        for (size_t i = 0; i < n_headers; i++) {
                const char *h = headers[i];
                size_t nlen = 0;
                while (is_tchar((unsigned char) h[nlen]))
                        nlen++;
                if (nlen == 0 || h[nlen] != ':' || !value_ok(h + nlen + 1)) {
                        fprintf(stderr, "vmmbench: --header '%s': give 'Name: value' (a name of "
                                "letters, digits and -, then a value on one line)\n", h);
                        return -EINVAL;
                }
                if (strncasecmp(h, "content-length:", 15) == 0 ||
                    strncasecmp(h, "transfer-encoding:", 18) == 0 ||
                    strncasecmp(h, "connection:", 11) == 0) {
                        fprintf(stderr, "vmmbench: --header '%s': vmmbench sets this one itself "
                                "(a GET without a body, on a kept connection)\n", h);
                        return -EINVAL;
                }
        }

        /* the request, once: every client sends these bytes */
        size_t cap = REQUEST_MAX;
        char *req = malloc(cap);
        if (!req)
                return -ENOMEM;
        int n = snprintf(req, cap, "GET %s HTTP/1.1\r\n", t->path);
        size_t len = (size_t) n;
        if (!has_host_header(headers, n_headers)) {
                n = snprintf(req + len, cap - len, "Host: %s\r\n", authority);
                len += (size_t) n;
        }
        for (size_t i = 0; i < n_headers && len < cap; i++) {
                const char *v = headers[i] + strcspn(headers[i], ":") + 1;
                v += strspn(v, " \t");
                n = snprintf(req + len, cap - len, "%.*s: %s\r\n",
                             (int) strcspn(headers[i], ":"), headers[i], v);
                len += (size_t) n;
        }
        if (len < cap) {
                n = snprintf(req + len, cap - len, "User-Agent: vmmbench\r\n\r\n");
                len += (size_t) n;
        }
        if (len >= cap) {
                free(req);
                fprintf(stderr, "vmmbench: the request would be longer than %u bytes\n",
                        REQUEST_MAX);
                return -EINVAL;
        }
        t->request = req;
        t->request_len = len;
        return 0;
}

/* p[0..n) equals the NUL-terminated lower-case word, ignoring case */
static bool word_is(const char *p, size_t n, const char *word) {
        return strlen(word) == n && strncasecmp(p, word, n) == 0;
}

/* A Connection field's value: does one of its comma-separated options say close? */
static bool connection_says(const char *v, size_t n, const char *option) {
        size_t i = 0;
        while (i < n) {
                while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
                        i++;
                size_t start = i;
                while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
                        i++;
                if (i > start && word_is(v + start, i - start, option))
                        return true;
        }
        return false;
}

static ssize_t fail(char *err, size_t err_size, const char *what) {
        snprintf(err, err_size, "%s", what);
        return -1;
}

ssize_t http_response_len(const uint8_t *p, size_t n, size_t max, HttpResponse *ret,
                          char *err, size_t err_size) {
        const char *s = (const char *) p;
        size_t limit = n < HEAD_MAX ? n : HEAD_MAX;

        /* the head ends with an empty line */
        const char *end = memmem(s, limit, "\r\n\r\n", 4);
        if (!end) {
                if (n >= HEAD_MAX)
                        return fail(err, err_size, "response headers longer than 64 KiB");
                /* what has come so far must already look like a status line */
                size_t k = n < 7 ? n : 7;
                if (strncmp(s, "HTTP/1.", k) != 0)
                        return fail(err, err_size, "not an HTTP/1.x response");
                return 0;
        }
        size_t head_len = (size_t) (end - s) + 4;

        /* status line: HTTP/1.x SSS[ reason] */
        const char *eol = memmem(s, head_len, "\r\n", 2);
        size_t line = (size_t) (eol - s);
        if (line < 12 || strncmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') ||
            s[8] != ' ' || !isdigit((unsigned char) s[9]) || !isdigit((unsigned char) s[10]) ||
            !isdigit((unsigned char) s[11]) || (line > 12 && s[12] != ' '))
                return fail(err, err_size, "not an HTTP/1.x response (its status line)");
        unsigned status = (unsigned) ((s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0'));
        if (status < 100)
                return fail(err, err_size, "a status code under 100");
        bool http10 = s[7] == '0';
        bool close = http10, keep_alive = false, have_length = false;
        uint64_t length = 0;

        /* header fields, one a line, up to the empty one */
        for (const char *q = eol + 2; q < end + 2; ) {
                const char *le = memmem(q, (size_t) (end + 2 - q), "\r\n", 2);
                size_t ll = (size_t) (le - q);
                if (q[0] == ' ' || q[0] == '\t')
                        return fail(err, err_size, "a folded header line (obsolete in HTTP/1.1)");
                size_t nl = 0;
                while (nl < ll && is_tchar((unsigned char) q[nl]))
                        nl++;
                if (nl == 0 || nl >= ll || q[nl] != ':')
                        return fail(err, err_size, "a header line without 'Name:'");
                const char *v = q + nl + 1, *ve = q + ll;
                while (v < ve && (*v == ' ' || *v == '\t'))
                        v++;
                while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                        ve--;
                size_t vl = (size_t) (ve - v);
                if (word_is(q, nl, "content-length")) {
                        uint64_t x = 0;
                        if (vl == 0 || vl > 15)
                                return fail(err, err_size, "a Content-Length that is not a number");
                        for (size_t i = 0; i < vl; i++) {
                                if (!isdigit((unsigned char) v[i]))
                                        return fail(err, err_size,
                                                    "a Content-Length that is not a number");
                                x = x * 10 + (uint64_t) (v[i] - '0');
                        }
                        if (have_length && x != length)
                                return fail(err, err_size, "two different Content-Length fields");
                        have_length = true;
                        length = x;
                } else if (word_is(q, nl, "transfer-encoding")) {
                        return fail(err, err_size,
                                    connection_says(v, vl, "chunked")
                                            ? "a chunked response (Transfer-Encoding: chunked); "
                                              "vmmbench reads only bodies with a Content-Length"
                                            : "a Transfer-Encoding vmmbench does not read (it "
                                              "needs a Content-Length)");
                } else if (word_is(q, nl, "connection")) {
                        if (connection_says(v, vl, "close"))
                                close = true;
                        if (connection_says(v, vl, "keep-alive"))
                                keep_alive = true;
                }
                q = le + 2;
        }
        if (http10 && keep_alive)
                close = false;

        /* the body: none for 1xx, 204 and 304; else exactly Content-Length */
        bool no_body = status < 200 || status == 204 || status == 304;
        if (!no_body && !have_length)
                return fail(err, err_size, "a response without Content-Length (its end would be "
                            "the connection's, and vmmbench keeps connections open)");
        if (no_body)
                length = 0;
        if (length > max || head_len + length > max)
                return fail(err, err_size, "a response larger than vmmbench takes");
        if (n < head_len + length)
                return 0;
        *ret = (HttpResponse) { .status = status, .close = close };
        return (ssize_t) (head_len + length);
}
