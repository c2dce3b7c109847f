/* SPDX-License-Identifier: MIT */
/* vmmbench: vmmd's load generator, in the manner of redis-benchmark. Each
 * client is one non-blocking connection in a closed loop (send a batch of
 * PIPELINE requests, wait for all their responses, send the next); clients
 * are spread over --threads epoll loops. Requests are encoded and responses
 * walked by hand (MessagePack-RPC for vmmd, RESP for --redis), so the client
 * costs little next to the server it measures. Every test is bounded by -n
 * and --seconds; only loopback servers are accepted. Part 2's workloads that
 * are not a closed loop of requests (the feed's replay, events to many
 * watchers) are in vmmbench-part2.c. The same closed loop also drives an
 * HTTP server (http-get: a keep-alive GET of --url), so that a gateway and
 * vmmd behind it are measured by one client; vmmbench-http.c makes the
 * request and frames the responses. */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shared/address.h"
#include "shared/macro.h"
#include "shared/mpscan.h"
#include "shared/secret.h"
#include "vmm/protocol.h"
#include "vmmbench.h"

#define DEFAULT_SERVER "127.0.0.1:7707"
#define DEFAULT_REDIS_SERVER "127.0.0.1:6379"
#define DEFAULT_PASSWORD "bench-password"
#define CLIENTS_MAX 20000u
#define PIPELINE_MAX 1024u
#define THREADS_MAX 64u
#define SECONDS_MAX 3600u
#define GRACE_NS (5ull * 1000000000ull)   /* wait this long for late responses */
/* auth, register: answers wait in vmmd's hash queue (50 clients at 150 ms a
 * hash on one worker is 7.5 s), so wait longer for them */
#define HASH_GRACE_NS (60ull * 1000000000ull)
#define RBUF_MAX (16u * 1024u * 1024u)     /* a response larger than this is an error */
#define CONNS_PER_SOURCE 1000u             /* idle test: connections per 127.0.0.x */
#define HIST_BUCKETS 4096u
#define HEADERS_MAX 32u                     /* --header */

typedef enum Test {
        TEST_PING,
        TEST_GET,
        TEST_UPDATE,
        TEST_LIST,
        TEST_AUTH,
        TEST_REGISTER,
        TEST_IDLE,
        TEST_BOOKING,
        TEST_REPLAY,
        TEST_WATCHERS,
        TEST_HTTP_GET,
        _TEST_MAX,
        _TEST_INVALID = -1,
} Test;

static const char *const test_names[_TEST_MAX] = {
        [TEST_PING] = "ping",
        [TEST_GET] = "get",
        [TEST_UPDATE] = "update",
        [TEST_LIST] = "list",
        [TEST_AUTH] = "auth",
        [TEST_REGISTER] = "register",
        [TEST_IDLE] = "idle",
        [TEST_BOOKING] = "booking",
        [TEST_REPLAY] = "replay",
        [TEST_WATCHERS] = "watchers",
        [TEST_HTTP_GET] = "http-get",
};

/* what each test sends, for the report */
static const char *const test_vmmd_requests[_TEST_MAX] = {
        [TEST_PING] = "ping",
        [TEST_GET] = "vm.get",
        [TEST_UPDATE] = "vm.update",
        [TEST_LIST] = "vm.list",
        [TEST_AUTH] = "auth",
        [TEST_REGISTER] = "register",
        [TEST_IDLE] = "ping (once)",
        [TEST_BOOKING] = "booking.create, booking.cancel",
        [TEST_REPLAY] = "events.watch since 0",
        [TEST_WATCHERS] = "booking.create to watchers",
        [TEST_HTTP_GET] = "GET",
};
static const char *const test_redis_requests[_TEST_MAX] = {
        [TEST_PING] = "PING",
        [TEST_GET] = "HGETALL",
        [TEST_UPDATE] = "HSET",
        [TEST_IDLE] = "PING (once)",
};

/* arguments */
static unsigned arg_clients = 50;
static uint64_t arg_requests = 100000;
static unsigned arg_pipeline = 1;
static bool arg_tests[_TEST_MAX];
static unsigned arg_vms;                /* 0: as many as clients */
static unsigned arg_seconds = 10;
static const char *arg_server;
static bool arg_json;
static unsigned arg_threads = 1;
static bool arg_redis;
static bool arg_load;
static const char *arg_password = DEFAULT_PASSWORD;
static long arg_server_pid;             /* 0: unknown */
static unsigned arg_list_limit = 100;
static unsigned arg_monitor_ms = 10;
static unsigned arg_hash_workers;       /* 0: as vmmd: number of CPUs, at most 4 */
static bool arg_startup;
static char **arg_startup_cmd;
static unsigned arg_startup_watch;      /* s of pings after the first answered one */
static const char *arg_admin_socket;
static unsigned arg_watchers = 1000;
static unsigned arg_watch_users = 10;
static unsigned arg_bookings = 20;
static unsigned arg_replay_events = 100000;
static unsigned arg_expect_bookings = UINT_MAX; /* --startup: wait for status to show it */
static const char *arg_url;             /* http-get */
static char *arg_headers[HEADERS_MAX];
static size_t arg_n_headers;
static bool arg_http;                   /* the server is an HTTP server (http-get) */
static HttpTarget http_target;

/* ---- time, histograms ---- */

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static int64_t wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Log-linear histogram of nanoseconds: exact below 128, then 64 buckets per
 * power of two (under 1.6 % error). */
typedef struct Hist {
        uint64_t count[HIST_BUCKETS];
        uint64_t n;
        uint64_t max;
} Hist;

static unsigned hist_index(uint64_t v) {
        if (v < 128)
                return (unsigned) v;
        unsigned shift = (unsigned) (63 - __builtin_clzll(v)) - 6;
        unsigned i = 64 * shift + (unsigned) (v >> shift);
        return i < HIST_BUCKETS ? i : HIST_BUCKETS - 1;
}

static uint64_t hist_value(unsigned i) {
        if (i < 128)
                return i;
        unsigned shift = i / 64 - 1;
        uint64_t mant = i - 64 * shift;
        /* the middle of the bucket */
        return (mant << shift) + ((1ull << shift) >> 1);
}

static void hist_add(Hist *h, uint64_t v) {
        h->count[hist_index(v)]++;
        h->n++;
        if (v > h->max)
                h->max = v;
}

static void hist_merge(Hist *into, const Hist *h) {
        for (unsigned i = 0; i < HIST_BUCKETS; i++)
                into->count[i] += h->count[i];
        into->n += h->n;
        if (h->max > into->max)
                into->max = h->max;
}

/* The value at quantile q (0..1), in ms; 0 when empty. */
static double hist_quantile_ms(const Hist *h, double q) {
        if (h->n == 0)
                return 0;
        uint64_t rank = (uint64_t) (q * (double) h->n + 0.5);
        if (rank < 1)
                rank = 1;
        uint64_t seen = 0;
        for (unsigned i = 0; i < HIST_BUCKETS; i++) {
                seen += h->count[i];
                if (seen >= rank)
                        return (double) MIN(hist_value(i), h->max) / 1e6;
        }
        return (double) h->max / 1e6;
}

/* ---- output buffers and encoders ---- */

typedef struct Buf {
        uint8_t *data;
        size_t len;
        size_t off;     /* bytes already consumed (sent or parsed) */
        size_t cap;
        bool oom;       /* sticky: an append failed */
} Buf;

static void buf_free(Buf *b) {
        free(b->data);
        *b = (Buf) { 0 };
}

static bool buf_reserve(Buf *b, size_t more) {
        if (b->oom)
                return false;
        if (b->len + more <= b->cap)
                return true;
        if (b->off > 0) {
                memmove(b->data, b->data + b->off, b->len - b->off);
                b->len -= b->off;
                b->off = 0;
                if (b->len + more <= b->cap)
                        return true;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + more)
                cap *= 2;
        uint8_t *p = realloc(b->data, cap);
        if (!p) {
                b->oom = true;
                return false;
        }
        b->data = p;
        b->cap = cap;
        return true;
}

static void buf_put(Buf *b, const void *p, size_t n) {
        if (!buf_reserve(b, n))
                return;
        memcpy(b->data + b->len, p, n);
        b->len += n;
}

static void buf_byte(Buf *b, uint8_t c) {
        buf_put(b, &c, 1);
}

static void buf_be(Buf *b, uint8_t tag, uint64_t v, unsigned bytes) {
        uint8_t tmp[9];
        tmp[0] = tag;
        for (unsigned i = 0; i < bytes; i++)
                tmp[1 + i] = (uint8_t) (v >> (8 * (bytes - 1 - i)));
        buf_put(b, tmp, 1 + bytes);
}

static size_t buf_pending(const Buf *b) {
        return b->len - b->off;
}

/* MessagePack */
static void mp_uint(Buf *b, uint64_t v) {
        if (v < 128)
                buf_byte(b, (uint8_t) v);
        else if (v <= UINT8_MAX)
                buf_be(b, 0xcc, v, 1);
        else if (v <= UINT16_MAX)
                buf_be(b, 0xcd, v, 2);
        else if (v <= UINT32_MAX)
                buf_be(b, 0xce, v, 4);
        else
                buf_be(b, 0xcf, v, 8);
}

static void mp_strn(Buf *b, const char *s, size_t n) {
        if (n < 32)
                buf_byte(b, (uint8_t) (0xa0 | n));
        else if (n <= UINT8_MAX)
                buf_be(b, 0xd9, n, 1);
        else
                buf_be(b, 0xda, n, 2);
        buf_put(b, s, n);
}

static void mp_str(Buf *b, const char *s) {
        mp_strn(b, s, strlen(s));
}

static void mp_array(Buf *b, unsigned n) {
        if (n < 16)
                buf_byte(b, (uint8_t) (0x90 | n));
        else
                buf_be(b, 0xdc, n, 2);
}

static void mp_map(Buf *b, unsigned n) {
        if (n < 16)
                buf_byte(b, (uint8_t) (0x80 | n));
        else
                buf_be(b, 0xde, n, 2);
}

/* [0, msgid, method, [{...}]] with map_size pairs to follow; map_size < 0: params []. */
static void mp_request(Buf *b, uint32_t msgid, const char *method, int map_size) {
        mp_array(b, 4);
        mp_uint(b, 0);
        mp_uint(b, msgid);
        mp_str(b, method);
        if (map_size < 0)
                mp_array(b, 0);
        else {
                mp_array(b, 1);
                mp_map(b, (unsigned) map_size);
        }
}

/* RESP: one command as an array of bulk strings */
static void resp_command(Buf *b, unsigned argc, const char *const *argv) {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "*%u\r\n", argc);
        buf_put(b, tmp, (size_t) n);
        for (unsigned i = 0; i < argc; i++) {
                size_t len = strlen(argv[i]);
                n = snprintf(tmp, sizeof tmp, "$%zu\r\n", len);
                buf_put(b, tmp, (size_t) n);
                buf_put(b, argv[i], len);
                buf_put(b, "\r\n", 2);
        }
}

/* ---- response walkers ---- */

static uint64_t read_be(const uint8_t *p, unsigned bytes) {
        uint64_t v = 0;
        for (unsigned i = 0; i < bytes; i++)
                v = v << 8 | p[i];
        return v;
}

/* Length of the first complete MessagePack object in p[0..n): > 0, or 0 when
 * more bytes are needed, or -1 when the bytes are not MessagePack or declare
 * more than a response may hold. The shared pre-scanner, from the start each
 * time (a reply is small; the walk is a few headers). */
static ssize_t mp_object_len(const uint8_t *p, size_t n) {
        MpScan scan;
        size_t len = 0;

        mpscan_init(&scan, RBUF_MAX, MPSCAN_DEPTH_CAP);
        switch (mpscan_feed(&scan, p, n, &len)) {
        case MPSCAN_COMPLETE:
                return (ssize_t) len;
        case MPSCAN_NEED_MORE:
                return 0;
        default:
                return -1;
        }
}

/* A string at p (of a complete object); false if not a string. */
static bool mp_read_str(const uint8_t *p, size_t n, const char **ret, size_t *ret_len) {
        size_t hdr, len;
        if (n < 1)
                return false;
        if ((p[0] & 0xe0) == 0xa0) {
                hdr = 1;
                len = p[0] & 0x1fu;
        } else if (p[0] == 0xd9 && n >= 2) {
                hdr = 2;
                len = p[1];
        } else if (p[0] == 0xda && n >= 3) {
                hdr = 3;
                len = (size_t) read_be(p + 1, 2);
        } else
                return false;
        if (n - hdr < len)
                return false;
        *ret = (const char *) p + hdr;
        *ret_len = len;
        return true;
}

typedef enum Reply {
        REPLY_OK,
        REPLY_ERROR,            /* an error response to a request */
        REPLY_FATAL,            /* msgid 0 error, or not a response: the connection is done */
        REPLY_SKIP,             /* a notification: not a response */
} Reply;

/* One complete vmmd message of len bytes. On an error fills code. */
static Reply vmmd_reply(const uint8_t *p, size_t len, char *code, size_t code_size) {
        size_t off;
        uint64_t msgid;

        if (len >= 2 && p[0] == 0x93 && p[1] == 0x02)
                return REPLY_SKIP;
        if (len < 5 || p[0] != 0x94 || p[1] != 0x01) {
                snprintf(code, code_size, "not a response");
                return REPLY_FATAL;
        }
        off = 2;
        if (p[off] < 0x80) {
                msgid = p[off];
                off += 1;
        } else if (p[off] >= 0xcc && p[off] <= 0xce) {
                unsigned bytes = 1u << (p[off] - 0xcc);
                if (len - off - 1 < bytes)
                        return REPLY_FATAL;
                msgid = read_be(p + off + 1, bytes);
                off += 1 + bytes;
        } else {
                snprintf(code, code_size, "bad msgid");
                return REPLY_FATAL;
        }
        if (off >= len)
                return REPLY_FATAL;
        if (p[off] == 0xc0)
                return msgid == 0 ? REPLY_FATAL : REPLY_OK;

        /* the error map: find "code" */
        snprintf(code, code_size, "error");
        if ((p[off] & 0xf0) == 0x80) {
                unsigned pairs = p[off] & 0x0fu;
                off++;
                for (unsigned i = 0; i < pairs; i++) {
                        const char *k, *v;
                        size_t klen, vlen;
                        ssize_t l = mp_object_len(p + off, len - off);
                        if (l <= 0)
                                break;
                        bool is_code = mp_read_str(p + off, len - off, &k, &klen) &&
                                       streq_n(k, klen, "code");
                        off += (size_t) l;
                        if (is_code && mp_read_str(p + off, len - off, &v, &vlen)) {
                                snprintf(code, code_size, "%.*s", (int) MIN(vlen, 64u), v);
                                break;
                        }
                        l = mp_object_len(p + off, len - off);
                        if (l <= 0)
                                break;
                        off += (size_t) l;
                }
        }
        return msgid == 0 ? REPLY_FATAL : REPLY_ERROR;
}

/* Parse the decimal number of a RESP header line p[1..eol) */
static bool resp_number(const uint8_t *p, const uint8_t *eol, long long *ret) {
        long long v = 0;
        bool neg = false;
        const uint8_t *q = p + 1;
        if (q < eol && *q == '-') {
                neg = true;
                q++;
        }
        if (q >= eol)
                return false;
        for (; q < eol; q++) {
                if (*q < '0' || *q > '9' || v > LLONG_MAX / 10 - 10)
                        return false;
                v = v * 10 + (*q - '0');
        }
        *ret = neg ? -v : v;
        return true;
}

/* Length of the first complete RESP reply in p[0..n), 0 when incomplete, -1 on garbage. */
static ssize_t resp_reply_len(const uint8_t *p, size_t n) {
        size_t off = 0;
        uint64_t pending = 1;

        while (pending > 0) {
                if (off >= n)
                        return 0;
                const uint8_t *nl = memchr(p + off, '\n', n - off);
                if (!nl)
                        return 0;
                if (nl == p + off || nl[-1] != '\r')
                        return -1;
                const uint8_t *eol = nl - 1;
                size_t next = (size_t) (nl - p) + 1;
                long long v;
                uint8_t t = p[off];
                pending--;
                switch (t) {
                case '+': case '-': case ':': case '_': case ',': case '#': case '(':
                        off = next;
                        break;
                case '$': case '!': case '=':
                        if (!resp_number(p + off, eol, &v))
                                return -1;
                        off = next;
                        if (v >= 0) {
                                if ((uint64_t) v + 2 > n - off)
                                        return 0;
                                off += (size_t) v + 2;
                        }
                        break;
                case '*': case '~': case '>': case '%': case '|':
                        if (!resp_number(p + off, eol, &v))
                                return -1;
                        off = next;
                        if (v > 0)
                                pending += (uint64_t) v * (t == '%' || t == '|' ? 2u : 1u);
                        break;
                default:
                        return -1;
                }
        }
        return (ssize_t) off;
}

/* ---- addresses and sockets ---- */

typedef struct Target {
        struct sockaddr_storage addr;
        socklen_t addr_len;
        char text[128];
} Target;

static int target_parse(const char *s, Target *ret) {
        char host[100], port[16];
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL;

        if (address_split(s, NULL, host, sizeof host, port, sizeof port) < 0)
                return -EINVAL;
        if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
                return -ENXIO;
        bool loopback = false;
        if (res->ai_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) res->ai_addr;
                loopback = (ntohl(in->sin_addr.s_addr) >> 24) == 127;
        } else if (res->ai_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) res->ai_addr;
                loopback = IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
        }
        if (!loopback) {
                freeaddrinfo(res);
                return -EPERM;
        }
        memcpy(&ret->addr, res->ai_addr, res->ai_addrlen);
        ret->addr_len = res->ai_addrlen;
        snprintf(ret->text, sizeof ret->text, "%s", s);
        freeaddrinfo(res);
        return 0;
}

static const char *target_error(int r) {
        switch (r) {
        case -EPERM:
                return "not a loopback address (vmmbench drives loopback only)";
        case -ENXIO:
                return "the host name does not resolve";
        case -EINVAL:
                return "not HOST:PORT or [IPv6]:PORT";
        default:
                return strerror(-r);
        }
}

/* A connected TCP socket (blocking, with timeouts); source: an IPv4 source
 * address to bind first, or 0. */
static int tcp_connect(const Target *t, uint32_t source) {
        _cleanup_close_ int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (source != 0 && t->addr.ss_family == AF_INET) {
                struct sockaddr_in src = {
                        .sin_family = AF_INET,
                        .sin_addr.s_addr = htonl(source),
                };
                if (bind(fd, (struct sockaddr *) &src, sizeof src) < 0)
                        return negative_errno();
        }
        struct timeval tv = { .tv_sec = 10 };
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        int one = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (const struct sockaddr *) &t->addr, t->addr_len) < 0)
                return negative_errno();
        return TAKE_FD(fd);
}

/* ---- clients ---- */

typedef struct Client {
        int fd;
        unsigned index;         /* 0-based client number */
        unsigned vm;            /* 1-based VM number */
        uint32_t msgid;
        Buf out, in;
        unsigned outstanding;   /* responses still expected for the current batch */
        uint64_t sent_ns;       /* when the current batch was sent */
        bool dead;              /* the connection failed; no more requests */
        bool done;              /* no more batches in this test */
        bool want_out;          /* EPOLLOUT registered */
        bool booked;            /* booking: its VM is booked; cancel next */
} Client;

static Client *client_free(Client *c) {
        if (!c)
                return NULL;
        if (c->fd >= 0)
                (void) close(c->fd);
        buf_free(&c->out);
        buf_free(&c->in);
        free(c);
        return NULL;
}

static int client_new(const Target *t, unsigned index, uint32_t source, Client **ret) {
        Client *c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->fd = tcp_connect(t, source);
        if (c->fd < 0) {
                int r = c->fd;
                free(c);
                return r;
        }
        c->index = index;
        c->msgid = 1;
        *ret = c;
        return 0;
}

/* Blocking: send what is queued. */
static int client_flush_blocking(Client *c) {
        while (buf_pending(&c->out) > 0) {
                ssize_t n = send(c->fd, c->out.data + c->out.off, buf_pending(&c->out),
                                 MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                c->out.off += (size_t) n;
        }
        c->out.len = c->out.off = 0;
        return 0;
}

/* Blocking: read one complete reply; returns its length, at c->in.data + c->in.off. */
static ssize_t client_read_reply(Client *c) {
        for (;;) {
                size_t avail = buf_pending(&c->in);
                ssize_t l = arg_redis ? resp_reply_len(c->in.data + c->in.off, avail)
                                      : mp_object_len(c->in.data + c->in.off, avail);
                if (l < 0)
                        return -EBADMSG;
                if (l > 0) {
                        if (!arg_redis && avail >= 2 && c->in.data[c->in.off] == 0x93 &&
                            c->in.data[c->in.off + 1] == 0x02) {
                                c->in.off += (size_t) l;   /* a notification */
                                continue;
                        }
                        return l;
                }
                if (avail > RBUF_MAX)
                        return -EMSGSIZE;
                if (!buf_reserve(&c->in, 65536))
                        return -ENOMEM;
                ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        return -ECONNRESET;
                c->in.len += (size_t) n;
        }
}

/* Blocking request/response for preparation; ret_code gets the error code
 * ("" on success). */
static int client_call(Client *c, char *ret_code, size_t code_size) {
        int r = client_flush_blocking(c);
        if (r < 0)
                return r;
        ssize_t l = client_read_reply(c);
        if (l < 0)
                return (int) l;
        const uint8_t *p = c->in.data + c->in.off;
        ret_code[0] = '\0';
        if (arg_redis) {
                if (p[0] == '-')
                        snprintf(ret_code, code_size, "%.*s", (int) MIN((size_t) l - 2, 64u),
                                 (const char *) p + 1);
        } else {
                Reply rep = vmmd_reply(p, (size_t) l, ret_code, code_size);
                if (rep == REPLY_FATAL) {
                        c->in.off += (size_t) l;
                        return -EPROTO;
                }
        }
        c->in.off += (size_t) l;
        return 0;
}

static void vm_name(unsigned vm, char ret[16]) {
        snprintf(ret, 16, "vm%06u", vm);
}

/* Redis keys follow redis-benchmark's __rand_int__ (12 digits from 0), so its
 * own figures read the same records: VM k is vm:%012u of k - 1. */
static void redis_key(unsigned vm, char ret[24]) {
        snprintf(ret, 24, "vm:%012u", vm - 1);
}

static void queue_auth(Client *c) {
        char name[16];
        vm_name(c->vm, name);
        mp_request(&c->out, c->msgid++, "auth", 2);
        mp_str(&c->out, "vm_id");
        mp_str(&c->out, name);
        mp_str(&c->out, "password");
        mp_str(&c->out, arg_password);
}

static void queue_register(Client *c, const char *vm_id) {
        char disk[64];
        mp_request(&c->out, c->msgid++, "register", 5);
        mp_str(&c->out, "vm_id");
        mp_str(&c->out, vm_id);
        mp_str(&c->out, "password");
        mp_str(&c->out, arg_password);
        mp_str(&c->out, "ram");
        mp_uint(&c->out, 1024);
        mp_str(&c->out, "cpu");
        mp_uint(&c->out, 1);
        mp_str(&c->out, "disks");
        mp_array(&c->out, 2);
        for (unsigned d = 1; d <= 2; d++) {
                snprintf(disk, sizeof disk, "%s-disk%u", vm_id, d);
                mp_map(&c->out, 2);
                mp_str(&c->out, "id");
                mp_str(&c->out, disk);
                mp_str(&c->out, "size");
                mp_uint(&c->out, 10 * d);
        }
}

static void redis_queue_record(Client *c, unsigned vm) {
        char key[24], name[16], ram[16], cpu[16], now[24], d1[32], d2[32], s1[16], s2[16];
        redis_key(vm, key);
        vm_name(vm, name);
        snprintf(ram, sizeof ram, "%u", 1024u * (1u + vm % 16u));
        snprintf(cpu, sizeof cpu, "%u", 1u + vm % 8u);
        snprintf(now, sizeof now, "%" PRId64, wall_ms());
        snprintf(d1, sizeof d1, "%s-disk1", name);
        snprintf(d2, sizeof d2, "%s-disk2", name);
        snprintf(s1, sizeof s1, "%u", 10u + vm % 100u);
        snprintf(s2, sizeof s2, "%u", 20u + vm % 100u);
        const char *argv[] = {
                "HSET", key, "vm_id", name, "ram", ram, "cpu", cpu,
                "registered_at", now, "updated_at", now, "last_seen_at", "",
                "disk1_id", d1, "disk1_size", s1, "disk2_id", d2, "disk2_size", s2,
        };
        resp_command(&c->out, ELEMENTSOF(argv), argv);
}

/* ---- the benchmark ---- */

typedef struct Bench Bench;

typedef struct Worker {
        pthread_t thread;
        Bench *bench;
        unsigned id;
        Client **clients;
        size_t n_clients;
        Client *monitor;        /* pings every arg_monitor_ms during the test */
        uint64_t monitor_next_ns;
        Hist hist;
        Hist monitor_hist;
        uint64_t done, errors, lost;
        uint64_t reconnects;    /* http-get: after a response with Connection: close */
        uint64_t last_ns;       /* time of the last completion */
        uint64_t seq;           /* per-worker counter for request contents */
        unsigned rng;
        char first_error[160];
        int failure;            /* a setup error (negative errno) */
} Worker;

struct Bench {
        Target target;
        BenchEnv env;           /* for vmmbench-part2.c */
        Test test;
        Client **clients;       /* VM sessions */
        unsigned n_clients;
        Client **users;         /* user sessions (booking) */
        unsigned n_users;
        Worker *workers;
        unsigned n_workers;
        Client *monitor;
        atomic_uint_fast64_t issued;
        uint64_t start_ns, deadline_ns, grace_ns;
        pthread_barrier_t barrier;
};

static unsigned rng_next(unsigned *s) {
        *s ^= *s << 13;
        *s ^= *s >> 17;
        *s ^= *s << 5;
        return *s;
}

static void queue_request(Worker *w, Client *c, Test test) {
        char key[24], name[48], num[24], num2[24], now[24];
        uint64_t seq = w->seq++;

        if (arg_redis) {
                switch (test) {
                case TEST_PING: {
                        const char *argv[] = { "PING" };
                        resp_command(&c->out, 1, argv);
                        break;
                }
                case TEST_GET: {
                        redis_key(c->vm, key);
                        const char *argv[] = { "HGETALL", key };
                        resp_command(&c->out, 2, argv);
                        break;
                }
                case TEST_UPDATE: {
                        redis_key(c->vm, key);
                        snprintf(num, sizeof num, "%" PRIu64, 1024 + seq % 4096);
                        snprintf(num2, sizeof num2, "%" PRIu64, 1 + seq % 8);
                        snprintf(now, sizeof now, "%" PRId64, wall_ms());
                        const char *argv[] = { "HSET", key, "ram", num, "cpu", num2,
                                               "updated_at", now };
                        resp_command(&c->out, ELEMENTSOF(argv), argv);
                        break;
                }
                default:
                        assert(false);
                }
                return;
        }
        switch (test) {
        case TEST_PING:
        case TEST_IDLE:
                mp_request(&c->out, c->msgid++, "ping", -1);
                break;
        case TEST_GET:
                mp_request(&c->out, c->msgid++, "vm.get", -1);
                break;
        case TEST_UPDATE:
                mp_request(&c->out, c->msgid++, "vm.update", 2);
                mp_str(&c->out, "ram");
                mp_uint(&c->out, 1024 + seq % 4096);
                mp_str(&c->out, "cpu");
                mp_uint(&c->out, 1 + seq % 8);
                break;
        case TEST_LIST:
                vm_name(1 + rng_next(&w->rng) % arg_vms, name);
                mp_request(&c->out, c->msgid++, "vm.list", 3);
                mp_str(&c->out, "filter");
                mp_str(&c->out, "all");
                mp_str(&c->out, "limit");
                mp_uint(&c->out, arg_list_limit);
                mp_str(&c->out, "after");
                mp_str(&c->out, name);
                break;
        case TEST_AUTH:
                queue_auth(c);
                break;
        case TEST_REGISTER:
                snprintf(name, sizeof name, "r%lx-%x-%u-%" PRIu64, (long) getpid(),
                         (unsigned) (w->bench->start_ns & 0xffffff), w->id, seq);
                queue_register(c, name);
                break;
        case TEST_HTTP_GET:
                buf_put(&c->out, http_target.request, http_target.request_len);
                break;
        case TEST_BOOKING:
                /* its own VM, booked and cancelled in turn: two durable writes */
                vm_name(c->vm, name);
                if (!c->booked) {
                        mp_request(&c->out, c->msgid++, "booking.create", 2);
                        mp_str(&c->out, "vm_id");
                        mp_str(&c->out, name);
                        mp_str(&c->out, "minutes");
                        mp_uint(&c->out, 60);
                } else {
                        mp_request(&c->out, c->msgid++, "booking.cancel", 1);
                        mp_str(&c->out, "vm_id");
                        mp_str(&c->out, name);
                }
                c->booked = !c->booked;
                break;
        default:
                assert(false);
        }
}

static void worker_note(Worker *w, const char *code) {
        if (!w->first_error[0])
                snprintf(w->first_error, sizeof w->first_error, "%s", code);
}

/* an error response */
static void worker_error(Worker *w, const char *code) {
        w->errors++;
        worker_note(w, code);
}

static int worker_watch(Worker *w, int epfd, Client *c, bool out) {
        struct epoll_event ev = {
                .events = EPOLLIN | (out ? EPOLLOUT : 0),
                .data.ptr = c,
        };
        if (epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                return negative_errno();
        c->want_out = out;
        return 0;
}

/* Send what is queued without blocking; register EPOLLOUT for the rest. */
static int client_push(Worker *w, int epfd, Client *c) {
        while (buf_pending(&c->out) > 0) {
                ssize_t n = send(c->fd, c->out.data + c->out.off, buf_pending(&c->out),
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n < 0)
                        return negative_errno();
                c->out.off += (size_t) n;
        }
        if (buf_pending(&c->out) == 0)
                c->out.len = c->out.off = 0;
        bool out = buf_pending(&c->out) > 0;
        if (out != c->want_out)
                return worker_watch(w, epfd, c, out);
        return 0;
}

/* Claim and send the next batch; false when the test is over for c. */
static bool client_next_batch(Worker *w, int epfd, Client *c) {
        Bench *b = w->bench;
        if (c->dead || now_ns() >= b->deadline_ns) {
                c->done = true;
                return false;
        }
        uint64_t old = atomic_fetch_add(&b->issued, arg_pipeline);
        if (old >= arg_requests) {
                c->done = true;
                return false;
        }
        unsigned k = (unsigned) MIN((uint64_t) arg_pipeline, arg_requests - old);
        for (unsigned i = 0; i < k; i++)
                queue_request(w, c, b->test);
        if (c->out.oom) {
                c->dead = c->done = true;
                worker_note(w, "out of memory");
                return false;
        }
        c->outstanding = k;
        c->sent_ns = now_ns();
        if (client_push(w, epfd, c) < 0) {
                c->dead = c->done = true;
                w->lost += k;
                c->outstanding = 0;
                worker_note(w, "send failed");
                return false;
        }
        return true;
}

/* The connection is done for: its unanswered requests count as lost. */
static void client_kill(Worker *w, Client *c, const char *why) {
        if (!c->dead)
                worker_note(w, why);
        w->lost += c->outstanding;
        c->outstanding = 0;
        c->dead = c->done = true;
}

/* http-get: the server closes the connection after a response that says
 * Connection: close (nginx does after keepalive_requests); open another, as a
 * browser would, outside any request's time, unless the test is over.
 * Requests still in flight on the old one are lost. */
static int client_reconnect(Worker *w, int epfd, Client *c) {
        Bench *b = w->bench;
        (void) epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
        (void) close(c->fd);
        c->fd = -1;
        w->lost += c->outstanding;
        c->outstanding = 0;
        c->in.len = c->in.off = 0;
        c->out.len = c->out.off = 0;
        c->want_out = false;
        if (now_ns() >= b->deadline_ns || atomic_load(&b->issued) >= arg_requests) {
                c->done = true;
                return 0;
        }
        int fd = tcp_connect(&b->target, 0);
        if (fd < 0)
                return fd;
        c->fd = fd;
        if (fcntl(fd, F_SETFL, O_NONBLOCK) < 0)
                return negative_errno();
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
                return negative_errno();
        w->reconnects++;
        return 0;
}

/* The first complete reply in c->in, by protocol: its length, 0 when more
 * bytes are needed, -1 when it cannot be framed (why in code); rep and code
 * say what it answered. */
static ssize_t client_frame(const uint8_t *p, size_t avail, Reply *rep, bool *close_after,
                            char *code, size_t code_size) {
        ssize_t l;
        *close_after = false;
        if (arg_http) {
                HttpResponse hr;
                l = http_response_len(p, avail, RBUF_MAX, &hr, code, code_size);
                if (l <= 0)
                        return l;
                *close_after = hr.close;
                if (hr.status == 200)
                        *rep = REPLY_OK;
                else if (hr.status < 200 && hr.status != 101)
                        *rep = REPLY_SKIP;      /* an interim response; the real one follows */
                else if (hr.status == 101) {
                        snprintf(code, code_size, "HTTP 101: the server switched protocols");
                        *rep = REPLY_FATAL;
                } else {
                        snprintf(code, code_size, "HTTP %u", hr.status);
                        *rep = REPLY_ERROR;
                }
                return l;
        }
        l = arg_redis ? resp_reply_len(p, avail) : mp_object_len(p, avail);
        if (l < 0)
                snprintf(code, code_size, "garbage from the server");
        if (l <= 0)
                return l;
        if (arg_redis) {
                *rep = p[0] == '-' ? REPLY_ERROR : REPLY_OK;
                if (*rep == REPLY_ERROR)
                        snprintf(code, code_size, "%.*s", (int) MIN((size_t) l - 3, 64u),
                                 (const char *) p + 1);
        } else
                *rep = vmmd_reply(p, (size_t) l, code, code_size);
        return l;
}

/* Read and account for responses; returns true when c's batch finished. */
static void client_on_input(Worker *w, int epfd, Client *c, bool is_monitor) {
        for (;;) {
                if (!buf_reserve(&c->in, 65536)) {
                        client_kill(w, c, "out of memory");
                        return;
                }
                ssize_t n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len,
                                 MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n <= 0) {
                        client_kill(w, c, n == 0 ? "connection closed" : "receive failed");
                        return;
                }
                c->in.len += (size_t) n;
                if ((size_t) n < c->in.cap - c->in.len + (size_t) n)
                        break;  /* the socket is drained */
        }

        uint64_t t = now_ns();
        for (;;) {
                const uint8_t *p = c->in.data + c->in.off;
                size_t avail = buf_pending(&c->in);
                if (avail == 0)
                        break;
                char code[160] = "";
                Reply rep = REPLY_OK;
                bool close_after;
                ssize_t l = client_frame(p, avail, &rep, &close_after, code, sizeof code);
                if (l < 0) {
                        client_kill(w, c, code);
                        return;
                }
                if (l == 0) {
                        if (avail > RBUF_MAX)
                                client_kill(w, c, "response too large");
                        break;
                }
                c->in.off += (size_t) l;
                if (rep == REPLY_SKIP)
                        continue;
                if (rep == REPLY_FATAL) {
                        client_kill(w, c, code);
                        return;
                }
                if (c->outstanding == 0) {
                        client_kill(w, c, "unexpected response");
                        return;
                }
                c->outstanding--;
                if (is_monitor) {
                        hist_add(&w->monitor_hist, t - c->sent_ns);
                        continue;
                }
                hist_add(&w->hist, t - c->sent_ns);
                w->done++;
                w->last_ns = t;
                if (rep == REPLY_ERROR)
                        worker_error(w, code);
                if (close_after) {
                        if (client_reconnect(w, epfd, c) < 0) {
                                client_kill(w, c, "cannot reconnect after Connection: close");
                                return;
                        }
                        break;
                }
        }
        if (buf_pending(&c->in) == 0)
                c->in.len = c->in.off = 0;
        if (!is_monitor && c->outstanding == 0 && !c->done)
                (void) client_next_batch(w, epfd, c);
}

static void monitor_tick(Worker *w, int epfd) {
        Client *m = w->monitor;
        uint64_t t = now_ns();
        if (m->dead || m->outstanding > 0 || t < w->monitor_next_ns)
                return;
        if (arg_redis) {
                const char *argv[] = { "PING" };
                resp_command(&m->out, 1, argv);
        } else
                mp_request(&m->out, m->msgid++, "ping", -1);
        m->outstanding = 1;
        m->sent_ns = t;
        w->monitor_next_ns = t + (uint64_t) arg_monitor_ms * 1000000ull;
        if (client_push(w, epfd, m) < 0)
                client_kill(w, m, "monitor send failed");
}

static void *worker_run(void *userdata) {
        Worker *w = userdata;
        Bench *b = w->bench;
        _cleanup_close_ int epfd = epoll_create1(EPOLL_CLOEXEC);
        size_t active = 0;

        if (epfd < 0)
                w->failure = negative_errno();
        for (size_t i = 0; epfd >= 0 && i < w->n_clients + (w->monitor ? 1 : 0); i++) {
                Client *c = i < w->n_clients ? w->clients[i] : w->monitor;
                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
                c->done = c->dead;
                c->want_out = false;
                c->outstanding = 0;
                if (!c->dead && epoll_ctl(epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
                        w->failure = negative_errno();
        }
        pthread_barrier_wait(&b->barrier);
        if (w->failure < 0)
                return NULL;

        for (size_t i = 0; i < w->n_clients; i++)
                if (!w->clients[i]->done && client_next_batch(w, epfd, w->clients[i]))
                        active++;
        if (w->monitor)
                monitor_tick(w, epfd);

        for (;;) {
                active = 0;
                for (size_t i = 0; i < w->n_clients; i++)
                        if (!w->clients[i]->done || w->clients[i]->outstanding > 0)
                                active++;
                uint64_t t = now_ns();
                if (active == 0 || t >= b->deadline_ns + b->grace_ns)
                        break;
                int timeout = 100;
                if (w->monitor && !w->monitor->dead) {
                        if (t >= w->monitor_next_ns)
                                monitor_tick(w, epfd);
                        uint64_t wait_ns = w->monitor_next_ns > t ? w->monitor_next_ns - t : 0;
                        timeout = (int) MIN(wait_ns / 1000000 + 1, 100u);
                }
                struct epoll_event evs[64];
                int n = epoll_wait(epfd, evs, ELEMENTSOF(evs), timeout);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        w->failure = negative_errno();
                        break;
                }
                for (int i = 0; i < n; i++) {
                        Client *c = evs[i].data.ptr;
                        bool is_monitor = c == w->monitor;
                        if (c->dead || c->fd < 0)
                                continue;
                        if (evs[i].events & EPOLLOUT && client_push(w, epfd, c) < 0) {
                                client_kill(w, c, "send failed");
                                continue;
                        }
                        if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                                client_on_input(w, epfd, c, is_monitor);
                }
                /* the test is over: clients with nothing outstanding stop */
                if (now_ns() >= b->deadline_ns)
                        for (size_t i = 0; i < w->n_clients; i++)
                                if (w->clients[i]->outstanding == 0)
                                        w->clients[i]->done = true;
        }
        /* responses that never came */
        for (size_t i = 0; i < w->n_clients; i++) {
                Client *c = w->clients[i];
                if (c->outstanding > 0)
                        client_kill(w, c, "timeout");
        }
        if (w->monitor && w->monitor->outstanding > 0)
                client_kill(w, w->monitor, "monitor timeout");
        return NULL;
}

/* ---- process statistics ---- */

static int proc_rss_kib(long pid, uint64_t *ret) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return negative_errno();
        int r = -ENOENT;
        while (fgets(line, sizeof line, f))
                if (strncmp(line, "VmRSS:", 6) == 0) {
                        *ret = strtoull(line + 6, NULL, 10);
                        r = 0;
                        break;
                }
        fclose(f);
        return r;
}

/* user + system CPU time of a process in seconds */
static int proc_cpu_s(long pid, double *ret) {
        char path[64], line[1024];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return negative_errno();
        char *ok = fgets(line, sizeof line, f);
        fclose(f);
        if (!ok)
                return -EIO;
        char *p = strrchr(line, ')');
        if (!p)
                return -EIO;
        /* fields after the command: state is 3; utime 14, stime 15 */
        unsigned long long ut = 0, st = 0;
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
                return -EIO;
        *ret = (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
        return 0;
}

int bench_proc_cpu_s(long pid, double *ret) {
        return proc_cpu_s(pid, ret);
}

static double self_cpu_s(void) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return 0;
        return (double) ru.ru_utime.tv_sec + (double) ru.ru_utime.tv_usec / 1e6 +
               (double) ru.ru_stime.tv_sec + (double) ru.ru_stime.tv_usec / 1e6;
}

/* ---- reporting ---- */

static bool first_json = true;

void bench_json_begin(void) {
        printf("%s\n  {", first_json ? "[" : ",");
        first_json = false;
}

void bench_json_string(const char *s) {
        putchar('"');
        for (; *s; s++) {
                unsigned char ch = (unsigned char) *s;
                if (ch == '"' || ch == '\\')
                        printf("\\%c", ch);
                else if (ch < 0x20)
                        printf("\\u%04x", ch);
                else
                        putchar(ch);
        }
        putchar('"');
}

typedef struct Result {
        Test test;
        uint64_t requests, errors, lost, reconnects;
        double seconds, rps;
        double p50, p99, p999, max;
        char first_error[160];
        bool monitor;
        Hist *monitor_hist;
        double server_cpu, client_cpu;  /* share of one core; < 0 unknown */
        double hash_ms;                 /* auth, register: one argon2id hash here */
        double parallel_hash_rps;       /* hash_workers threads hashing at once */
        unsigned hash_workers;
} Result;

static void result_print(const Result *res) {
        const char *server = arg_http ? "http" : arg_redis ? "redis" : "vmmd";
        char req[sizeof http_target.path + 8];
        if (arg_http)
                snprintf(req, sizeof req, "GET %s", http_target.path);
        else
                snprintf(req, sizeof req, "%s",
                         (arg_redis ? test_redis_requests : test_vmmd_requests)[res->test]);
        if (arg_json) {
                bench_json_begin();
                printf("\"server\": \"%s\", \"test\": \"%s\", \"request\": ", server,
                       test_names[res->test]);
                bench_json_string(req);
                printf(", \"clients\": %u, \"pipeline\": %u, \"threads\": %u, "
                       "\"requests\": %" PRIu64 ", \"errors\": %" PRIu64 ", "
                       "\"seconds\": %.3f, \"rps\": %.1f, \"p50_ms\": %.3f, \"p99_ms\": %.3f, "
                       "\"p999_ms\": %.3f, \"max_ms\": %.3f, \"server_cpu\": %.2f, "
                       "\"client_cpu\": %.2f",
                       arg_clients, arg_pipeline,
                       arg_threads, res->requests, res->errors + res->lost, res->seconds,
                       res->rps, res->p50, res->p99, res->p999, res->max, res->server_cpu,
                       res->client_cpu);
                if (arg_http) {
                        printf(", \"url\": ");
                        bench_json_string(arg_url);
                        printf(", \"error_responses\": %" PRIu64 ", \"lost\": %" PRIu64
                               ", \"reconnects\": %" PRIu64, res->errors, res->lost,
                               res->reconnects);
                }
                if (res->first_error[0]) {
                        printf(", \"first_error\": ");
                        bench_json_string(res->first_error);
                }
                if (res->monitor)
                        printf(", \"ping_count\": %" PRIu64 ", \"ping_p50_ms\": %.3f, "
                               "\"ping_p99_ms\": %.3f, \"ping_max_ms\": %.3f",
                               res->monitor_hist->n, hist_quantile_ms(res->monitor_hist, 0.5),
                               hist_quantile_ms(res->monitor_hist, 0.99),
                               (double) res->monitor_hist->max / 1e6);
                if (res->hash_ms > 0)
                        printf(", \"hash_ms\": %.2f, \"hash_workers\": %u, \"bound_rps\": %.1f, "
                               "\"parallel_hash_rps\": %.1f", res->hash_ms, res->hash_workers,
                               res->hash_workers * 1000.0 / res->hash_ms,
                               res->parallel_hash_rps);
                printf("}");
                return;
        }
        printf("%s %s (%s): %u clients, pipeline %u, %u thread%s\n", server,
               test_names[res->test], req, arg_clients, arg_pipeline, arg_threads,
               arg_threads == 1 ? "" : "s");
        printf("  %" PRIu64 " requests in %.2f s: %.1f requests/s\n", res->requests,
               res->seconds, res->rps);
        printf("  latency ms: p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", res->p50, res->p99,
               res->p999, res->max);
        printf("  errors: %" PRIu64 "%s%s%s\n", res->errors + res->lost,
               res->first_error[0] ? " (first: " : "", res->first_error,
               res->first_error[0] ? ")" : "");
        if (arg_http)
                printf("  of which responses other than 200: %" PRIu64 "; reconnections after "
                       "Connection: close: %" PRIu64 "\n", res->errors, res->reconnects);
        if (res->server_cpu >= 0)
                printf("  CPU (share of one core): server %.2f, vmmbench %.2f\n",
                       res->server_cpu, res->client_cpu);
        else
                printf("  CPU (share of one core): vmmbench %.2f\n", res->client_cpu);
        if (res->monitor)
                printf("  ping on another connection every %u ms: %" PRIu64 " pings, p50 %.3f  "
                       "p99 %.3f  max %.3f ms\n", arg_monitor_ms, res->monitor_hist->n,
                       hist_quantile_ms(res->monitor_hist, 0.5),
                       hist_quantile_ms(res->monitor_hist, 0.99),
                       (double) res->monitor_hist->max / 1e6);
        if (res->hash_ms > 0)
                printf("  argon2id here: %.1f ms per hash; bound with %u hash workers: %.1f/s "
                       "(%.0f %%)\n", res->hash_ms, res->hash_workers,
                       res->hash_workers * 1000.0 / res->hash_ms,
                       res->rps * 100.0 / (res->hash_workers * 1000.0 / res->hash_ms));
        if (res->hash_ms > 0)
                printf("  %u threads hashing at once here: %.1f hashes/s\n", res->hash_workers,
                       res->parallel_hash_rps);
}

/* ---- preparation ---- */

/* Authenticate every client as its VM, registering VMs that do not exist. */
static int prepare_sessions(Bench *b) {
        char code[80];
        int r;

        for (unsigned i = 0; i < b->n_clients; i++)
                queue_auth(b->clients[i]);
        for (unsigned i = 0; i < b->n_clients; i++) {
                r = client_flush_blocking(b->clients[i]);
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < b->n_clients; i++) {
                Client *c = b->clients[i];
                ssize_t l = client_read_reply(c);
                if (l < 0) {
                        fprintf(stderr, "vmmbench: auth of client %u: %s\n", i, strerror((int) -l));
                        return (int) l;
                }
                Reply rep = vmmd_reply(c->in.data + c->in.off, (size_t) l, code, sizeof code);
                c->in.off += (size_t) l;
                /* too many logins from this address at once: one at a time,
                 * as a client should, after a pause (bounded) */
                for (int tries = 0; rep != REPLY_OK && rep != REPLY_FATAL &&
                     strcmp(code, "rate_limited") == 0 && tries < 600; tries++) {
                        (void) usleep(100 * 1000);
                        queue_auth(c);
                        r = client_call(c, code, sizeof code);
                        if (r < 0)
                                return r;
                        rep = code[0] ? REPLY_ERROR : REPLY_OK;
                }
                if (rep == REPLY_OK)
                        continue;
                if (rep == REPLY_FATAL || strcmp(code, "unauthenticated") != 0) {
                        fprintf(stderr, "vmmbench: auth as vm%06u failed: %s\n", c->vm, code);
                        return -EACCES;
                }
                /* no such VM (or another password): try to register it */
                char name[16];
                vm_name(c->vm, name);
                queue_register(c, name);
                r = client_call(c, code, sizeof code);
                if (r < 0)
                        return r;
                if (code[0]) {
                        fprintf(stderr, "vmmbench: auth as %s failed and register said %s "
                                "(wrong --password?)\n", name, code);
                        return -EACCES;
                }
                queue_auth(c);
                r = client_call(c, code, sizeof code);
                if (r < 0)
                        return r;
                if (code[0]) {
                        fprintf(stderr, "vmmbench: auth as %s failed: %s\n", name, code);
                        return -EACCES;
                }
        }
        return 0;
}

static void queue_user_auth(Client *c) {
        char name[32];
        snprintf(name, sizeof name, BENCH_USER_FORMAT, c->index + 1);
        mp_request(&c->out, c->msgid++, "user.auth", 2);
        mp_str(&c->out, "name");
        mp_str(&c->out, name);
        mp_str(&c->out, "password");
        mp_str(&c->out, arg_password);
}

/* booking: client k is user k+1 (made over --admin-socket if given), logged
 * in with user.auth; all at once, then one at a time when rate_limited. */
static int prepare_users(Bench *b) {
        char code[80];
        int r;

        if (arg_admin_socket) {
                r = part2_users_create(&b->env, 1, b->n_users);
                if (r < 0)
                        return r;
        }
        /* connected only now: vmmd closes a connection that stays idle
         * without a session for --idle-timeout (30 s), which creating many
         * users on a busy machine can take */
        for (unsigned i = 0; i < b->n_users; i++) {
                r = client_new(&b->target, i, 0, &b->users[i]);
                if (r < 0) {
                        fprintf(stderr, "vmmbench: cannot connect to %s: %s\n", arg_server,
                                strerror(-r));
                        return r;
                }
                b->users[i]->vm = i % arg_vms + 1;
        }
        for (unsigned i = 0; i < b->n_users; i++) {
                queue_user_auth(b->users[i]);
                r = client_flush_blocking(b->users[i]);
                if (r < 0)
                        return r;
        }
        for (unsigned i = 0; i < b->n_users; i++) {
                Client *c = b->users[i];
                /* the logins wait in vmmd's hash queue (a busy machine may
                 * take more than the socket's 10 s): up to 2 minutes */
                ssize_t l;
                unsigned waits = 0;
                do
                        l = client_read_reply(c);
                while (l == -EAGAIN && ++waits < 12);
                if (l < 0) {
                        fprintf(stderr, "vmmbench: user.auth as " BENCH_USER_FORMAT ": %s\n",
                                i + 1, l == -EAGAIN ? "no answer in 2 minutes"
                                                    : strerror((int) -l));
                        return (int) l;
                }
                Reply rep = vmmd_reply(c->in.data + c->in.off, (size_t) l, code, sizeof code);
                c->in.off += (size_t) l;
                for (int tries = 0; rep == REPLY_ERROR && strcmp(code, "rate_limited") == 0 &&
                     tries < 600; tries++) {
                        (void) usleep(100 * 1000);
                        queue_user_auth(c);
                        r = client_call(c, code, sizeof code);
                        if (r < 0)
                                return r;
                        rep = code[0] ? REPLY_ERROR : REPLY_OK;
                }
                if (rep != REPLY_OK) {
                        fprintf(stderr, "vmmbench: user.auth as " BENCH_USER_FORMAT " failed: %s%s\n",
                                i + 1, code, arg_admin_socket ? "" : " (give --admin-socket, or "
                                "load the users with vmm-load --users)");
                        return -EACCES;
                }
                /* a booking that an earlier run left (it stopped between
                 * create and cancel) goes first, or create would fail */
                char vm[16];
                vm_name(c->vm, vm);
                mp_request(&c->out, c->msgid++, "booking.cancel", 1);
                mp_str(&c->out, "vm_id");
                mp_str(&c->out, vm);
                r = client_call(c, code, sizeof code);
                if (r < 0)
                        return r;
                if (code[0] && strcmp(code, "not_found") != 0) {
                        fprintf(stderr, "vmmbench: booking.cancel %s as " BENCH_USER_FORMAT
                                ": %s\n", vm, i + 1, code);
                        return -EIO;
                }
        }
        return 0;
}

/* --redis --load: write the records of all --vms VMs, pipelined. */
static int redis_load(Bench *b) {
        Client *c = b->clients[0];
        char code[80];
        const unsigned depth = 1000;
        uint64_t t0 = now_ns();

        for (unsigned first = 1; first <= arg_vms; first += depth) {
                unsigned last = MIN(arg_vms, first + depth - 1);
                for (unsigned vm = first; vm <= last; vm++)
                        redis_queue_record(c, vm);
                if (c->out.oom)
                        return -ENOMEM;
                int r = client_flush_blocking(c);
                if (r < 0)
                        return r;
                for (unsigned vm = first; vm <= last; vm++) {
                        ssize_t l = client_read_reply(c);
                        if (l < 0)
                                return (int) l;
                        if (c->in.data[c->in.off] == '-') {
                                snprintf(code, sizeof code, "%.*s",
                                         (int) MIN((size_t) l - 3, 64u),
                                         (const char *) c->in.data + c->in.off + 1);
                                fprintf(stderr, "vmmbench: HSET failed: %s\n", code);
                                return -EIO;
                        }
                        c->in.off += (size_t) l;
                }
        }
        if (!arg_json)
                printf("redis: loaded %u records in %.2f s\n", arg_vms,
                       (double) (now_ns() - t0) / 1e9);
        return 0;
}

static void *hash_thread(void *userdata) {
        char hash[SECRET_PWHASH_MAX];
        for (int i = 0; i < 2; i++)
                if (secret_password_hash(arg_password, strlen(arg_password), hash) < 0)
                        *(bool *) userdata = true;
        return NULL;
}

/* argon2id here: the best of three single hashes in ms, and the hashes per
 * second of arg_hash_workers threads hashing at once (memory bandwidth and
 * cores are shared, so this is the tighter bound). */
static int measure_hash(double *ret_ms, double *ret_parallel_rps) {
        char hash[SECRET_PWHASH_MAX];
        double best = 0;
        if (secret_init() < 0)
                return -EIO;
        for (int i = 0; i < 3; i++) {
                uint64_t t0 = now_ns();
                if (secret_password_hash(arg_password, strlen(arg_password), hash) < 0)
                        return -ENOMEM;
                double ms = (double) (now_ns() - t0) / 1e6;
                if (best == 0 || ms < best)
                        best = ms;
        }
        pthread_t threads[THREADS_MAX];
        bool failed = false;
        unsigned n = MIN(arg_hash_workers, THREADS_MAX), started = 0;
        uint64_t t0 = now_ns();
        for (; started < n; started++)
                if (pthread_create(&threads[started], NULL, hash_thread, &failed) != 0)
                        break;
        for (unsigned i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        double s = (double) (now_ns() - t0) / 1e9;
        if (failed || started == 0)
                return -ENOMEM;
        *ret_ms = best;
        *ret_parallel_rps = 2.0 * started / s;
        return 0;
}

/* ---- running a test ---- */

static int run_test(Bench *b, Test test) {
        Result res = { .test = test, .server_cpu = -1 };
        double server_cpu0 = 0;
        int r;

        if (test == TEST_AUTH || test == TEST_REGISTER) {
                if (measure_hash(&res.hash_ms, &res.parallel_hash_rps) < 0)
                        res.hash_ms = 0;
                res.hash_workers = arg_hash_workers;
        }
        bool monitor = arg_monitor_ms > 0 && (test == TEST_AUTH || test == TEST_REGISTER);
        if (monitor && !b->monitor) {
                r = client_new(&b->target, UINT_MAX, 0, &b->monitor);
                if (r < 0)
                        return r;
                if (fcntl(b->monitor->fd, F_SETFL, O_NONBLOCK) < 0)
                        return negative_errno();
        }

        /* booking runs on the user sessions, the others on the VMs' */
        Client **set = test == TEST_BOOKING ? b->users : b->clients;
        unsigned n_set = test == TEST_BOOKING ? b->n_users : b->n_clients;
        for (unsigned i = 0; i < b->n_workers; i++)
                b->workers[i].n_clients = 0;
        for (unsigned i = 0; i < n_set; i++) {
                Worker *w = &b->workers[i % b->n_workers];
                w->clients[w->n_clients++] = set[i];
        }
        for (unsigned i = 0; i < b->n_workers; i++) {
                Worker *w = &b->workers[i];
                Client **clients = w->clients;
                size_t n = w->n_clients;
                *w = (Worker) {
                        .bench = b, .id = i, .clients = clients, .n_clients = n,
                        .rng = 2463534242u + i * 7919u,
                        .monitor = monitor && i == 0 ? b->monitor : NULL,
                };
        }
        atomic_store(&b->issued, 0);
        b->test = test;
        r = pthread_barrier_init(&b->barrier, NULL, b->n_workers + 1);
        if (r != 0)
                return -r;
        unsigned started = 0;
        for (; started < b->n_workers; started++) {
                r = pthread_create(&b->workers[started].thread, NULL, worker_run,
                                   &b->workers[started]);
                if (r != 0)
                        break;
        }
        if (started < b->n_workers) {
                /* cannot happen after the first test; give up cleanly */
                fprintf(stderr, "vmmbench: cannot start threads: %s\n", strerror(r));
                exit(EXIT_FAILURE);
        }
        if (arg_server_pid > 0 && proc_cpu_s(arg_server_pid, &server_cpu0) < 0)
                arg_server_pid = 0;
        double client_cpu0 = self_cpu_s();
        b->start_ns = now_ns();
        b->deadline_ns = b->start_ns + (uint64_t) arg_seconds * 1000000000ull;
        b->grace_ns = test == TEST_AUTH || test == TEST_REGISTER ? HASH_GRACE_NS : GRACE_NS;
        pthread_barrier_wait(&b->barrier);
        for (unsigned i = 0; i < b->n_workers; i++)
                pthread_join(b->workers[i].thread, NULL);
        pthread_barrier_destroy(&b->barrier);
        uint64_t end_ns = b->start_ns;

        Hist *all = calloc(1, sizeof *all), *mon = calloc(1, sizeof *mon);
        if (!all || !mon) {
                free(all);
                free(mon);
                return -ENOMEM;
        }
        for (unsigned i = 0; i < b->n_workers; i++) {
                Worker *w = &b->workers[i];
                if (w->failure < 0) {
                        free(all);
                        free(mon);
                        return w->failure;
                }
                hist_merge(all, &w->hist);
                hist_merge(mon, &w->monitor_hist);
                res.requests += w->done;
                res.errors += w->errors;
                res.lost += w->lost;
                res.reconnects += w->reconnects;
                if (w->last_ns > end_ns)
                        end_ns = w->last_ns;
                if (!res.first_error[0] && w->first_error[0])
                        snprintf(res.first_error, sizeof res.first_error, "%s", w->first_error);
        }
        if (res.requests == 0)
                end_ns = now_ns();      /* nothing answered: the time it waited */
        res.seconds = (double) (end_ns - b->start_ns) / 1e9;
        if (res.seconds <= 0)
                res.seconds = 1e-9;
        double server_cpu1;
        if (arg_server_pid > 0 && proc_cpu_s(arg_server_pid, &server_cpu1) >= 0)
                res.server_cpu = (server_cpu1 - server_cpu0) / res.seconds;
        res.client_cpu = (self_cpu_s() - client_cpu0) / res.seconds;
        res.rps = (double) res.requests / res.seconds;
        res.p50 = hist_quantile_ms(all, 0.5);
        res.p99 = hist_quantile_ms(all, 0.99);
        res.p999 = hist_quantile_ms(all, 0.999);
        res.max = (double) all->max / 1e6;
        res.monitor = monitor;
        res.monitor_hist = mon;
        result_print(&res);
        fflush(stdout);
        free(all);
        free(mon);

        /* dead clients are not reused */
        for (unsigned i = 0; i < n_set; i++)
                if (set[i]->dead) {
                        fprintf(stderr, "vmmbench: client %u lost its connection; stopping\n", i);
                        return -ECONNRESET;
                }
        return 0;
}

/* idle: open -c connections, each answers one ping, and measure the server's
 * RSS before and after. */
static int run_idle(Bench *b) {
        uint64_t rss0 = 0, rss1 = 0;
        char code[80];
        const unsigned batch = 200;
        Client **conns = calloc(arg_clients, sizeof *conns);
        int r = 0;

        if (!conns)
                return -ENOMEM;
        if (arg_server_pid > 0)
                (void) proc_rss_kib(arg_server_pid, &rss0);
        bool ipv4 = b->target.addr.ss_family == AF_INET;
        uint64_t t0 = now_ns();
        unsigned opened = 0;
        for (unsigned first = 0; first < arg_clients && r >= 0; first += batch) {
                unsigned last = MIN(arg_clients, first + batch);
                for (unsigned i = first; i < last; i++) {
                        /* 127.0.0.1, .2, ...: vmmd limits connections per peer address */
                        uint32_t source = ipv4 ? 0x7f000001u + i / CONNS_PER_SOURCE : 0;
                        r = client_new(&b->target, i, source, &conns[i]);
                        if (r < 0) {
                                fprintf(stderr, "vmmbench: connection %u: %s\n", i,
                                        strerror(-r));
                                break;
                        }
                        opened++;
                        if (arg_redis) {
                                const char *argv[] = { "PING" };
                                resp_command(&conns[i]->out, 1, argv);
                        } else
                                mp_request(&conns[i]->out, conns[i]->msgid++, "ping", -1);
                        r = client_flush_blocking(conns[i]);
                        if (r < 0)
                                break;
                }
                for (unsigned i = first; i < first + batch && i < opened && r >= 0; i++) {
                        r = client_call(conns[i], code, sizeof code);
                        if (r >= 0 && code[0]) {
                                fprintf(stderr, "vmmbench: ping %u: %s\n", i, code);
                                r = -EIO;
                        }
                }
        }
        double connect_s = (double) (now_ns() - t0) / 1e9;
        if (r >= 0) {
                /* let the server settle, then look */
                usleep(500000);
                if (arg_server_pid > 0)
                        (void) proc_rss_kib(arg_server_pid, &rss1);
        }
        double per_conn = opened > 0 && rss1 > rss0 ? (double) (rss1 - rss0) * 1024.0 / opened : 0;
        if (r >= 0) {
                if (arg_json) {
                        bench_json_begin();
                        printf("\"server\": \"%s\", \"test\": \"idle\", \"connections\": %u, "
                               "\"connect_s\": %.3f, \"rss_before_kib\": %" PRIu64 ", "
                               "\"rss_after_kib\": %" PRIu64 ", \"bytes_per_conn\": %.0f}",
                               arg_redis ? "redis" : "vmmd", opened, connect_s, rss0, rss1,
                               per_conn);
                } else {
                        printf("%s idle: %u connections opened and pinged in %.2f s\n",
                               arg_redis ? "redis" : "vmmd", opened, connect_s);
                        if (arg_server_pid > 0)
                                printf("  server RSS %" PRIu64 " KiB before, %" PRIu64
                                       " KiB after: %.0f bytes per connection\n",
                                       rss0, rss1, per_conn);
                        else
                                printf("  (give --server-pid to measure the server's RSS)\n");
                }
                fflush(stdout);
        }
        for (unsigned i = 0; i < arg_clients; i++)
                client_free(conns[i]);
        free(conns);
        return r;
}

/* ---- start-up time ---- */

/* --startup-watch: how the loop answered in its first seconds, while it ends
 * the bookings that expired while it was down */
typedef struct StartupWatch {
        uint64_t pings, slow_pings;     /* slow: a round trip over 10 ms */
        uint64_t max_rtt_ns, max_gap_ns, max_status_ns;
        double bookings_ms;             /* READY to --expect-bookings; < 0: not seen */
        uint64_t bookings;              /* the last count seen; UINT64_MAX: none */
} StartupWatch;

static int startup_watch(const Target *t, uint64_t ready_ns, StartupWatch *sw) {
        const uint64_t ms = 1000000ull;
        uint64_t interval = (uint64_t) MAX(arg_monitor_ms, 1u) * ms;
        uint64_t end = now_ns() + (uint64_t) arg_startup_watch * 1000000000ull;
        uint64_t last = 0, next_status = 0;
        _cleanup_close_ int afd = -1;
        Client *c = NULL;
        char code[80];
        int r;

        *sw = (StartupWatch) { .bookings_ms = -1, .bookings = UINT64_MAX };
        r = client_new(t, 0, 0, &c);
        if (r >= 0 && arg_admin_socket) {
                afd = part2_admin_open(arg_admin_socket);
                r = afd < 0 ? afd : 0;
        }
        while (r >= 0 && now_ns() < end) {
                uint64_t t0 = now_ns();
                mp_request(&c->out, c->msgid++, "ping", -1);
                r = client_call(c, code, sizeof code);
                if (r >= 0 && code[0])
                        r = -EIO;
                uint64_t t1 = now_ns();
                sw->pings++;
                sw->max_rtt_ns = MAX(sw->max_rtt_ns, t1 - t0);
                sw->slow_pings += t1 - t0 > 10 * ms;
                if (last)
                        sw->max_gap_ns = MAX(sw->max_gap_ns, t1 - last);
                last = t1;
                if (r >= 0 && afd >= 0 && sw->bookings_ms < 0 && t1 >= next_status) {
                        uint64_t n;
                        r = part2_status_bookings(afd, &n);
                        uint64_t t2 = now_ns();
                        sw->max_status_ns = MAX(sw->max_status_ns, t2 - t1);
                        sw->max_gap_ns = MAX(sw->max_gap_ns, t2 - last);
                        last = t2;
                        if (r >= 0) {
                                sw->bookings = n;
                                if (n <= arg_expect_bookings)
                                        sw->bookings_ms = (double) (t2 - ready_ns) / 1e6;
                        }
                        next_status = t2 + 20 * ms;
                }
                uint64_t t3 = now_ns();
                if (t3 < t0 + interval)
                        (void) usleep((useconds_t) ((t0 + interval - t3) / 1000));
        }
        client_free(c);
        return r;
}

static int run_startup(void) {
        char dir[] = "/tmp/vmmbench-XXXXXX";
        char path[sizeof dir + 16];
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        Target t;
        int r;

        r = target_parse(arg_server, &t);
        if (r < 0) {
                fprintf(stderr, "vmmbench: --server %s: %s\n", arg_server,
                        target_error(r));
                return r;
        }
        if (!mkdtemp(dir))
                return negative_errno();
        snprintf(path, sizeof path, "%s/notify", dir);
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
        _cleanup_close_ int nfd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (nfd < 0 || bind(nfd, (struct sockaddr *) &sa, sizeof sa) < 0) {
                r = negative_errno();
                (void) rmdir(dir);
                return r;
        }

        uint64_t t0 = now_ns();
        pid_t pid = fork();
        if (pid < 0) {
                r = negative_errno();
                (void) unlink(path);
                (void) rmdir(dir);
                return r;
        }
        if (pid == 0) {
                setenv("NOTIFY_SOCKET", path, 1);
                execvp(arg_startup_cmd[0], arg_startup_cmd);
                fprintf(stderr, "vmmbench: cannot run %s: %s\n", arg_startup_cmd[0],
                        strerror(errno));
                _exit(127);
        }

        uint64_t deadline = t0 + (uint64_t) arg_seconds * 1000000000ull;
        uint64_t ready_ns = 0, ping_ns = 0;
        StartupWatch sw = { .bookings_ms = -1 };
        r = 0;
        while ((ready_ns == 0 || ping_ns == 0) && now_ns() < deadline) {
                char msg[4096];
                ssize_t n;
                while ((n = recv(nfd, msg, sizeof msg - 1, 0)) > 0) {
                        msg[n] = '\0';
                        if (ready_ns == 0 && (strncmp(msg, "READY=1", 7) == 0 ||
                                              strstr(msg, "\nREADY=1")))
                                ready_ns = now_ns();
                }
                if (ping_ns == 0) {
                        Client *c = NULL;
                        char code[80];
                        if (client_new(&t, 0, 0, &c) >= 0) {
                                mp_request(&c->out, c->msgid++, "ping", -1);
                                if (client_call(c, code, sizeof code) >= 0 && !code[0])
                                        ping_ns = now_ns();
                                client_free(c);
                        }
                }
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        fprintf(stderr, "vmmbench: %s exited before it was ready\n",
                                arg_startup_cmd[0]);
                        pid = 0;
                        r = -ECHILD;
                        break;
                }
                if (ready_ns == 0 || ping_ns == 0) {
                        struct pollfd pfd = { .fd = nfd, .events = POLLIN };
                        (void) poll(&pfd, 1, 1);
                }
        }
        if (pid > 0 && ready_ns && ping_ns && arg_startup_watch > 0) {
                r = startup_watch(&t, ready_ns, &sw);
                if (r < 0)
                        fprintf(stderr, "vmmbench: --startup-watch: %s\n", strerror(-r));
        }
        if (pid > 0) {
                /* stop it by its pid; give it 10 s, as vmmd promises */
                (void) kill(pid, SIGTERM);
                int status;
                uint64_t stop = now_ns() + 10000000000ull;
                while (waitpid(pid, &status, WNOHANG) == 0) {
                        if (now_ns() > stop) {
                                (void) kill(pid, SIGKILL);
                                (void) waitpid(pid, &status, 0);
                                break;
                        }
                        usleep(10000);
                }
        }
        (void) unlink(path);
        (void) rmdir(dir);
        if (r < 0)
                return r;
        double ready_ms = ready_ns ? (double) (ready_ns - t0) / 1e6 : -1;
        double ping_ms = ping_ns ? (double) (ping_ns - t0) / 1e6 : -1;
        if (arg_json) {
                bench_json_begin();
                printf("\"test\": \"startup\", \"command\": ");
                bench_json_string(arg_startup_cmd[0]);
                printf(", \"ready_ms\": %.1f, \"first_ping_ms\": %.1f", ready_ms, ping_ms);
                if (arg_startup_watch > 0)
                        printf(", \"watch_s\": %u, \"interval_ms\": %u, \"pings\": %" PRIu64
                               ", \"slow_pings\": %" PRIu64 ", \"max_rtt_ms\": %.3f, "
                               "\"max_gap_ms\": %.3f, \"max_status_ms\": %.3f, "
                               "\"bookings_done_ms\": %.1f, \"bookings_left\": %" PRId64,
                               arg_startup_watch, arg_monitor_ms, sw.pings, sw.slow_pings,
                               (double) sw.max_rtt_ns / 1e6, (double) sw.max_gap_ns / 1e6,
                               (double) sw.max_status_ns / 1e6, sw.bookings_ms,
                               sw.bookings == UINT64_MAX ? (int64_t) -1 : (int64_t) sw.bookings);
                printf("}\n]\n");
        } else {
                printf("start-up of %s: READY=1 after %.1f ms, first ping answered after %.1f ms\n",
                       arg_startup_cmd[0], ready_ms, ping_ms);
                if (arg_startup_watch > 0)
                        printf("  then %" PRIu64 " pings every %u ms for %u s: longest round trip "
                               "%.3f ms, %" PRIu64 " over 10 ms; longest gap between answers "
                               "%.3f ms\n", sw.pings, arg_monitor_ms, arg_startup_watch,
                               (double) sw.max_rtt_ns / 1e6, sw.slow_pings,
                               (double) sw.max_gap_ns / 1e6);
                if (arg_startup_watch > 0 && arg_admin_socket)
                        printf("  status: %s%.1f ms after READY (bookings %" PRId64 "; longest "
                               "status call %.3f ms)\n",
                               sw.bookings_ms >= 0 ? "the expected bookings left " : "not seen ",
                               sw.bookings_ms, sw.bookings == UINT64_MAX ? (int64_t) -1
                                                                         : (int64_t) sw.bookings,
                               (double) sw.max_status_ns / 1e6);
        }
        return ready_ns || ping_ns ? 0 : -ETIMEDOUT;
}

/* ---- command line ---- */

static void help(void) {
        printf("Usage: vmmbench [OPTIONS]\n"
               "       vmmbench --startup [--server HOST:PORT] [--seconds S] -- CMD [ARGS]\n\n"
               "vmmd's load generator. Each client is one connection in a closed loop: it\n"
               "sends PIPELINE requests, waits for their responses, and sends the next ones.\n"
               "Each test ends after REQUESTS requests or S seconds, whichever comes first, and\n"
               "prints requests/s, latency p50/p99/p99.9/max and errors. Loopback servers only.\n\n"
               "Options:\n"
               "  -c, --clients N       connections (default 50; idle: connections to open)\n"
               "  -n, --requests N      requests per test, over all clients (default 100000)\n"
               "  -P, --pipeline N      requests in flight per connection (default 1)\n"
               "  -t, --tests LIST      comma-separated, run in this order (default ping,get):\n"
               "                        ping      ping                  (Redis: PING)\n"
               "                        get       vm.get of its own VM  (Redis: HGETALL vm:K)\n"
               "                        update    vm.update ram, cpu    (Redis: HSET vm:K ...)\n"
               "                        list      vm.list all: --list-limit VMs after a random\n"
               "                                  one\n"
               "                        auth      auth as its VM (argon2id on vmmd's hash\n"
               "                                  workers); another connection pings meanwhile\n"
               "                        register  register a new VM each time (with 2 disks)\n"
               "                        idle      open -c connections, one ping each; with\n"
               "                                  --server-pid, the server's RSS per connection\n"
               "                        booking   a user session each (u000001, u000002, ...):\n"
               "                                  booking.create of its own VM for 60 minutes,\n"
               "                                  then booking.cancel, in turn (both durable)\n"
               "                        replay    events.watch {since: 0} as an admin user on\n"
               "                                  TCP: the time to the last of --replay-events\n"
               "                                  feed events (and gaps in their positions)\n"
               "                        watchers  --watchers connections from 127.0.0.2..\n"
               "                                  resume --watch-users sessions and watch\n"
               "                                  booking.created; another user books\n"
               "                                  --bookings VMs (from the end of --vms) one\n"
               "                                  at a time: p50/p99/max from each booking's\n"
               "                                  reply to each watcher's receipt (kernel\n"
               "                                  receive timestamps)\n"
               "                        http-get  GET --url on a kept HTTP/1.1 connection\n"
               "                                  (alone: the server is an HTTP server);\n"
               "                                  a status other than 200 is an error\n"
               "      --vms N           VMs vm000001..vmN to use (default: one per client);\n"
               "                        client k works on VM (k mod N) + 1. Missing VMs are\n"
               "                        registered; for many, fill the database with vmm-load\n"
               "      --password PW     their password (default %s, as vmm-load)\n"
               "      --seconds S       time limit per test (default 10)\n"
               "      --server HOST:PORT  (default %s;\n"
               "                        with --redis %s)\n"
               "      --threads N       client threads (default 1)\n"
               "      --redis           drive Redis over RESP instead (ping, get, update, idle);\n"
               "                        VM k's record is the hash vm:%%012u of k-1, the keys\n"
               "                        redis-benchmark's __rand_int__ makes\n"
               "      --load            with --redis: first write the records of all --vms VMs\n"
               "      --server-pid PID  report the server's CPU use, and its RSS for idle\n",
               DEFAULT_PASSWORD, DEFAULT_SERVER, DEFAULT_REDIS_SERVER);
        printf("      --list-limit N    VMs per vm.list page (default 100)\n"
               "      --monitor-ms MS   auth/register: ping interval on the extra connection\n"
               "                        (default 10; 0: none)\n"
               "      --hash-workers N  vmmd's hash workers, for the auth bound (default: CPUs,\n"
               "                        at most 4, as vmmd)\n"
               "      --admin-socket PATH  booking, replay, watchers: create the users there\n"
               "                        first (user.create; one that exists is used as it is);\n"
               "                        --startup: poll its status for --expect-bookings\n"
               "      --watchers N      watchers: connections (default 1000)\n"
               "      --watch-users N   watchers: user sessions they resume (default 10)\n"
               "      --bookings N      watchers: bookings, one at a time (default 20)\n"
               "      --replay-events N replay: feed events to wait for (default 100000)\n"
               "      --startup         run CMD (a vmmd with its arguments) with NOTIFY_SOCKET\n"
               "                        set, report the time to READY=1 and to the first\n"
               "                        answered ping at --server, then stop it (SIGTERM)\n"
               "      --startup-watch S --startup: then ping every --monitor-ms for S seconds\n"
               "                        and report the longest round trip and gap (the loop's\n"
               "                        stalls while it ends expired bookings)\n"
               "      --expect-bookings N  --startup-watch: the time from READY until the\n"
               "                        admin socket's status shows at most N bookings\n"
               "      --url URL         http-get: http://HOST:PORT/PATH (loopback; a body\n"
               "                        needs Content-Length: chunked ones are refused)\n"
               "      --header 'NAME: VALUE'  http-get: add this header (repeatable, e.g.\n"
               "                        'Authorization: Bearer TOKEN')\n"
               "      --json            print a JSON array of results instead\n"
               "  -h, --help            show this help\n\n"
               "Latency is from sending a batch to receiving each response. Errors are error\n"
               "responses, plus requests lost with a connection or unanswered 5 s after the\n"
               "time limit; requests/s counts every response.\n");
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || *end != '\0' || *s == '-' || v < min || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_uint_arg(const char *name, const char *s, unsigned min, unsigned max,
                          unsigned *ret) {
        uint64_t v;
        if (parse_u64(s, min, max, &v) < 0) {
                fprintf(stderr, "vmmbench: %s must be a number %u-%u, not '%s'\n", name, min, max,
                        s);
                return -EINVAL;
        }
        *ret = (unsigned) v;
        return 0;
}

static int parse_tests(const char *s) {
        memset(arg_tests, 0, sizeof arg_tests);
        while (*s) {
                size_t n = strcspn(s, ",");
                Test t = _TEST_INVALID;
                for (int i = 0; i < _TEST_MAX; i++)
                        if (strlen(test_names[i]) == n && strncmp(s, test_names[i], n) == 0)
                                t = (Test) i;
                if (t == _TEST_INVALID) {
                        fprintf(stderr, "vmmbench: unknown test '%.*s'\n", (int) n, s);
                        return -EINVAL;
                }
                arg_tests[t] = true;
                s += n;
                if (*s == ',')
                        s++;
        }
        return 0;
}

static char *tests_order;   /* the -t list as given, for the run order */

static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VMS = 0x100, ARG_SECONDS, ARG_SERVER, ARG_JSON, ARG_THREADS, ARG_REDIS,
                ARG_LOAD, ARG_PASSWORD, ARG_SERVER_PID, ARG_LIST_LIMIT, ARG_MONITOR_MS,
                ARG_HASH_WORKERS, ARG_STARTUP, ARG_ADMIN_SOCKET, ARG_WATCHERS, ARG_WATCH_USERS,
                ARG_BOOKINGS, ARG_REPLAY_EVENTS, ARG_STARTUP_WATCH, ARG_EXPECT_BOOKINGS,
                ARG_URL, ARG_HEADER,
        };
        static const struct option options[] = {
                { "clients",      required_argument, NULL, 'c' },
                { "requests",     required_argument, NULL, 'n' },
                { "pipeline",     required_argument, NULL, 'P' },
                { "tests",        required_argument, NULL, 't' },
                { "vms",          required_argument, NULL, ARG_VMS },
                { "seconds",      required_argument, NULL, ARG_SECONDS },
                { "server",       required_argument, NULL, ARG_SERVER },
                { "json",         no_argument,       NULL, ARG_JSON },
                { "threads",      required_argument, NULL, ARG_THREADS },
                { "redis",        no_argument,       NULL, ARG_REDIS },
                { "load",         no_argument,       NULL, ARG_LOAD },
                { "password",     required_argument, NULL, ARG_PASSWORD },
                { "server-pid",   required_argument, NULL, ARG_SERVER_PID },
                { "list-limit",   required_argument, NULL, ARG_LIST_LIMIT },
                { "monitor-ms",   required_argument, NULL, ARG_MONITOR_MS },
                { "hash-workers", required_argument, NULL, ARG_HASH_WORKERS },
                { "startup",      no_argument,       NULL, ARG_STARTUP },
                { "admin-socket", required_argument, NULL, ARG_ADMIN_SOCKET },
                { "watchers",     required_argument, NULL, ARG_WATCHERS },
                { "watch-users",  required_argument, NULL, ARG_WATCH_USERS },
                { "bookings",     required_argument, NULL, ARG_BOOKINGS },
                { "replay-events", required_argument, NULL, ARG_REPLAY_EVENTS },
                { "startup-watch", required_argument, NULL, ARG_STARTUP_WATCH },
                { "expect-bookings", required_argument, NULL, ARG_EXPECT_BOOKINGS },
                { "url",          required_argument, NULL, ARG_URL },
                { "header",       required_argument, NULL, ARG_HEADER },
                { "help",         no_argument,       NULL, 'h' },
                { NULL, 0, NULL, 0 }
        };
        uint64_t v;
        unsigned u;
        int c;

        tests_order = "ping,get";
        while ((c = getopt_long(argc, argv, "+c:n:P:t:h", options, NULL)) >= 0) {
                switch (c) {
                case 'c':
                        if (parse_uint_arg("-c", optarg, 1, CLIENTS_MAX, &arg_clients) < 0)
                                return -EINVAL;
                        break;
                case 'n':
                        if (parse_u64(optarg, 1, UINT64_MAX / 2, &arg_requests) < 0) {
                                fprintf(stderr, "vmmbench: bad -n '%s'\n", optarg);
                                return -EINVAL;
                        }
                        break;
                case 'P':
                        if (parse_uint_arg("-P", optarg, 1, PIPELINE_MAX, &arg_pipeline) < 0)
                                return -EINVAL;
                        break;
                case 't':
                        tests_order = optarg;
                        break;
                case ARG_VMS:
                        if (parse_uint_arg("--vms", optarg, 1, 99999999, &arg_vms) < 0)
                                return -EINVAL;
                        break;
                case ARG_SECONDS:
                        if (parse_uint_arg("--seconds", optarg, 1, SECONDS_MAX, &arg_seconds) < 0)
                                return -EINVAL;
                        break;
                case ARG_SERVER:
                        arg_server = optarg;
                        break;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_THREADS:
                        if (parse_uint_arg("--threads", optarg, 1, THREADS_MAX, &arg_threads) < 0)
                                return -EINVAL;
                        break;
                case ARG_REDIS:
                        arg_redis = true;
                        break;
                case ARG_LOAD:
                        arg_load = true;
                        break;
                case ARG_PASSWORD:
                        arg_password = optarg;
                        break;
                case ARG_SERVER_PID:
                        if (parse_u64(optarg, 1, INT_MAX, &v) < 0) {
                                fprintf(stderr, "vmmbench: bad --server-pid '%s'\n", optarg);
                                return -EINVAL;
                        }
                        arg_server_pid = (long) v;
                        break;
                case ARG_LIST_LIMIT:
                        if (parse_uint_arg("--list-limit", optarg, VMM_PAGE_MIN, VMM_PAGE_MAX,
                                           &arg_list_limit) < 0)
                                return -EINVAL;
                        break;
                case ARG_MONITOR_MS:
                        if (parse_uint_arg("--monitor-ms", optarg, 0, 60000, &arg_monitor_ms) < 0)
                                return -EINVAL;
                        break;
                case ARG_HASH_WORKERS:
                        if (parse_uint_arg("--hash-workers", optarg, 1, 256, &u) < 0)
                                return -EINVAL;
                        arg_hash_workers = u;
                        break;
                case ARG_STARTUP:
                        arg_startup = true;
                        break;
                case ARG_ADMIN_SOCKET:
                        arg_admin_socket = optarg;
                        break;
                case ARG_WATCHERS:
                        if (parse_uint_arg("--watchers", optarg, 1, CLIENTS_MAX, &arg_watchers) < 0)
                                return -EINVAL;
                        break;
                case ARG_WATCH_USERS:
                        if (parse_uint_arg("--watch-users", optarg, 1, 1000, &arg_watch_users) < 0)
                                return -EINVAL;
                        break;
                case ARG_BOOKINGS:
                        if (parse_uint_arg("--bookings", optarg, 1, 10000, &arg_bookings) < 0)
                                return -EINVAL;
                        break;
                case ARG_REPLAY_EVENTS:
                        if (parse_uint_arg("--replay-events", optarg, 1, 100000000,
                                           &arg_replay_events) < 0)
                                return -EINVAL;
                        break;
                case ARG_STARTUP_WATCH:
                        if (parse_uint_arg("--startup-watch", optarg, 0, SECONDS_MAX,
                                           &arg_startup_watch) < 0)
                                return -EINVAL;
                        break;
                case ARG_EXPECT_BOOKINGS:
                        if (parse_uint_arg("--expect-bookings", optarg, 0, 100000000,
                                           &arg_expect_bookings) < 0)
                                return -EINVAL;
                        break;
                case ARG_URL:
                        arg_url = optarg;
                        break;
                case ARG_HEADER:
                        if (arg_n_headers >= HEADERS_MAX) {
                                fprintf(stderr, "vmmbench: at most %u --header\n", HEADERS_MAX);
                                return -EINVAL;
                        }
                        arg_headers[arg_n_headers++] = optarg;
                        break;
                case 'h':
                        help();
                        return 1;
                default:
                        return -EINVAL;
                }
        }
        if (parse_tests(tests_order) < 0)
                return -EINVAL;
        if (arg_startup) {
                if (optind >= argc) {
                        fprintf(stderr, "vmmbench: --startup needs a command after --\n");
                        return -EINVAL;
                }
                arg_startup_cmd = argv + optind;
        } else if (optind < argc) {
                fprintf(stderr, "vmmbench: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        arg_http = arg_tests[TEST_HTTP_GET];
        if (arg_http) {
                for (int i = 0; i < _TEST_MAX; i++)
                        if (arg_tests[i] && i != TEST_HTTP_GET) {
                                fprintf(stderr, "vmmbench: http-get runs alone (its server is an "
                                        "HTTP server, not vmmd); run %s in another vmmbench\n",
                                        test_names[i]);
                                return -EINVAL;
                        }
                if (!arg_url) {
                        fprintf(stderr, "vmmbench: http-get needs --url http://HOST:PORT/PATH\n");
                        return -EINVAL;
                }
                if (arg_server || arg_redis) {
                        fprintf(stderr, "vmmbench: http-get takes its server from --url, not "
                                "--server or --redis\n");
                        return -EINVAL;
                }
                if (http_target_init(&http_target, arg_url, arg_headers, arg_n_headers) < 0)
                        return -EINVAL;
                arg_server = http_target.server;
        } else if (arg_url || arg_n_headers > 0) {
                fprintf(stderr, "vmmbench: --url and --header are for -t http-get\n");
                return -EINVAL;
        }
        if (!arg_server)
                arg_server = arg_redis ? DEFAULT_REDIS_SERVER : DEFAULT_SERVER;
        if (arg_vms == 0)
                arg_vms = arg_clients;
        if (arg_threads > arg_clients)
                arg_threads = arg_clients;
        if (arg_hash_workers == 0) {
                long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
                arg_hash_workers = ncpu < 1 ? 1 : ncpu > 4 ? 4 : (unsigned) ncpu;
        }
        if (arg_redis)
                for (int i = 0; i < _TEST_MAX; i++)
                        if (arg_tests[i] && !test_redis_requests[i]) {
                                fprintf(stderr, "vmmbench: test %s has no Redis equivalent\n",
                                        test_names[i]);
                                return -EINVAL;
                        }
        if (arg_load && !arg_redis) {
                fprintf(stderr, "vmmbench: --load is for --redis; fill vmmd's database with "
                        "vmm-load\n");
                return -EINVAL;
        }
        size_t pwlen = strlen(arg_password);
        if (pwlen < VMM_PASSWORD_MIN || pwlen > 256) {
                fprintf(stderr, "vmmbench: --password must be %d-256 bytes\n", VMM_PASSWORD_MIN);
                return -EINVAL;
        }
        return 0;
}

int main(int argc, char *argv[]) {
        Bench b = { 0 };
        int r;

        r = parse_argv(argc, argv);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        (void) signal(SIGPIPE, SIG_IGN);
        if (arg_startup)
                return run_startup() < 0 ? EXIT_FAILURE : EXIT_SUCCESS;

        r = target_parse(arg_server, &b.target);
        if (r < 0) {
                fprintf(stderr, "vmmbench: %s %s: %s\n", arg_http ? "--url" : "--server",
                        arg_http ? arg_url : arg_server, target_error(r));
                http_target_done(&http_target);
                return EXIT_FAILURE;
        }

        /* the closed-loop tests on VM connections (not idle, nor part 2's) */
        bool need_clients = false;
        for (int i = 0; i < _TEST_MAX; i++)
                if (arg_tests[i] && i != TEST_IDLE && i != TEST_BOOKING && i != TEST_REPLAY &&
                    i != TEST_WATCHERS)
                        need_clients = true;
        bool need_session = !arg_redis &&
                            (arg_tests[TEST_GET] || arg_tests[TEST_UPDATE] || arg_tests[TEST_LIST]);
        b.env = (BenchEnv) {
                .addr = &b.target.addr, .addr_len = b.target.addr_len,
                .admin_socket = arg_admin_socket, .password = arg_password,
                .seconds = arg_seconds, .vms = arg_vms, .replay_events = arg_replay_events,
                .watchers = arg_watchers, .watch_users = arg_watch_users,
                .bookings = arg_bookings, .server_pid = arg_server_pid, .json = arg_json,
        };
        if (need_session && arg_clients > arg_vms * VMM_SESSIONS_PER_VM)
                fprintf(stderr, "vmmbench: warning: %u clients on %u VMs: past %d sessions per "
                        "VM, vmmd ends the oldest\n", arg_clients, arg_vms, VMM_SESSIONS_PER_VM);

        /* the clients of the load tests */
        b.n_clients = need_clients ? arg_clients : arg_load ? 1 : 0;
        b.n_users = arg_tests[TEST_BOOKING] ? arg_clients : 0;
        b.clients = calloc(MAX(b.n_clients, 1u), sizeof *b.clients);
        b.users = calloc(MAX(b.n_users, 1u), sizeof *b.users);
        b.n_workers = arg_threads;
        b.workers = calloc(b.n_workers, sizeof *b.workers);
        if (!b.clients || !b.users || !b.workers) {
                fprintf(stderr, "vmmbench: out of memory\n");
                return EXIT_FAILURE;
        }
        for (unsigned i = 0; i < b.n_clients; i++) {
                r = client_new(&b.target, i, 0, &b.clients[i]);
                if (r < 0) {
                        fprintf(stderr, "vmmbench: cannot connect to %s: %s\n", arg_server,
                                strerror(-r));
                        goto finish;
                }
                b.clients[i]->vm = i % arg_vms + 1;
        }
        if (arg_load) {
                r = redis_load(&b);
                if (r < 0) {
                        fprintf(stderr, "vmmbench: loading Redis failed: %s\n", strerror(-r));
                        goto finish;
                }
        }
        if (need_session) {
                r = prepare_sessions(&b);
                if (r < 0)
                        goto finish;
        }
        if (b.n_users > 0) {
                r = prepare_users(&b);
                if (r < 0)
                        goto finish;
        }
        for (unsigned i = 0; i < b.n_clients + b.n_users; i++) {
                Client *c = i < b.n_clients ? b.clients[i] : b.users[i - b.n_clients];
                if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0) {
                        r = negative_errno();
                        goto finish;
                }
        }
        /* run_test gives each worker its share of the clients of each test */
        for (unsigned i = 0; i < b.n_workers; i++) {
                b.workers[i].clients = calloc(MAX(b.n_clients, b.n_users) / b.n_workers + 1,
                                              sizeof(Client *));
                if (!b.workers[i].clients) {
                        r = -ENOMEM;
                        goto finish;
                }
        }

        /* run in the order given */
        for (const char *s = tests_order; *s && r >= 0; ) {
                size_t n = strcspn(s, ",");
                for (int i = 0; i < _TEST_MAX; i++)
                        if (strlen(test_names[i]) == n && strncmp(s, test_names[i], n) == 0)
                                r = i == TEST_IDLE       ? run_idle(&b)
                                    : i == TEST_REPLAY   ? part2_run_replay(&b.env)
                                    : i == TEST_WATCHERS ? part2_run_watchers(&b.env)
                                                         : run_test(&b, (Test) i);
                s += n;
                if (*s == ',')
                        s++;
        }
finish:
        if (r < 0)
                fprintf(stderr, "vmmbench: %s\n", strerror(-r));
        if (arg_json && !first_json)
                printf("\n]\n");
        for (unsigned i = 0; i < b.n_clients; i++)
                client_free(b.clients[i]);
        for (unsigned i = 0; i < b.n_users; i++)
                client_free(b.users[i]);
        free(b.users);
        client_free(b.monitor);
        for (unsigned i = 0; i < b.n_workers; i++)
                free(b.workers[i].clients);
        free(b.workers);
        free(b.clients);
        http_target_done(&http_target);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
