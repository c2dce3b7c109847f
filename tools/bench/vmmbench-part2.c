/* SPDX-License-Identifier: MIT */
/* vmmbench's part 2 workloads (vmmbench.h): users made over the admin
 * socket, the replay of the durable event feed to one watcher, and booking
 * events to many watchers. Requests are packed with msgpack-c; replies are
 * framed by the shared pre-scanner before msgpack-c decodes them. Every wait
 * is bounded by the test's time limit; vmmbench.c has checked that the
 * address is a loopback one.
 *
 * Watchers' receipt times are the kernel's receive timestamps
 * (SO_TIMESTAMPNS: when the bytes reached the watcher's socket), so that
 * vmmbench reading 1,000 sockets one after another does not add its own
 * delay to the later ones; where a timestamp is missing, the time of the
 * read stands in (and the report says how often). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/macro.h"
#include "shared/mpout.h"
#include "shared/mpscan.h"
#include "vmm/protocol.h"
#include "vmmbench.h"

#define MSG_MAX (16u * 1024u * 1024u)   /* a reply larger than this is an error */
#define REPLAY_CHUNK (256u * 1024u)     /* bytes read at once by the replay watcher */
#define WATCH_CHUNK 4096u               /* by each of the many watchers */
#define PER_SOURCE 500u                 /* connections per 127.0.0.x (vmmd allows 1024) */
#define SETUP_BATCH 200u                /* watchers connected before their replies are read */
#define ROUND_WAIT_NS (5ull * 1000000000ull)    /* a booking event reaches every watcher */
#define RETRIES 100u                    /* rate_limited logins: 100 ms apart */
#define CREATE_BATCH 64u                /* user.create in flight (each costs a hash) */

static uint64_t mono_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ull + (uint64_t) ts.tv_nsec;
}

static int64_t real_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- requests ---- */

typedef struct Req {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        uint32_t msgid;
        bool oom;
} Req;

static void req_init(Req *q) {
        msgpack_sbuffer_init(&q->sb);
        msgpack_packer_init(&q->pk, &q->sb, msgpack_sbuffer_write);
        q->msgid = 1;
        q->oom = false;
}

static void req_done(Req *q) {
        msgpack_sbuffer_destroy(&q->sb);
}

/* [0, msgid, method, [{n pairs follow}]] */
static void req_begin(Req *q, const char *method, uint32_t n) {
        q->oom |= msgpack_pack_array(&q->pk, 4) || msgpack_pack_uint8(&q->pk, 0) ||
                  msgpack_pack_uint32(&q->pk, q->msgid++) || mp_str(&q->pk, method) ||
                  msgpack_pack_array(&q->pk, 1) || msgpack_pack_map(&q->pk, n);
}

static void req_str(Req *q, const char *k, const char *v) {
        q->oom |= mp_kv_str(&q->pk, k, v) != 0;
}

static void req_u64(Req *q, const char *k, uint64_t v) {
        q->oom |= mp_kv_u64(&q->pk, k, v) != 0;
}

/* Sends what is packed (blocking) and empties q. */
static int req_send(int fd, Req *q) {
        size_t off = 0;

        if (q->oom)
                return -ENOMEM;
        while (off < q->sb.size) {
                ssize_t n = send(fd, q->sb.data + off, q->sb.size - off, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                off += (size_t) n;
        }
        msgpack_sbuffer_clear(&q->sb);
        return 0;
}

/* ---- reading ---- */

typedef struct Rd {
        uint8_t *data;
        size_t len, off, cap, chunk;
        MpScan scan;
        bool scanning;          /* scan holds the state of the object at off */
        int64_t kernel_ns;      /* receive timestamp of the last read (CLOCK_REALTIME), 0: none */
        int64_t user_ns;        /* when the last read returned */
} Rd;

static void rd_init(Rd *rd, size_t chunk) {
        *rd = (Rd) { .chunk = chunk };
        mpscan_init(&rd->scan, MSG_MAX, MPSCAN_DEPTH_CAP);
}

static void rd_free(Rd *rd) {
        free(rd->data);
        rd->data = NULL;
}

/* One read of what the socket holds; > 0 bytes, -EAGAIN (nonblocking and
 * nothing there), other < 0 on failure or end of stream. */
static int rd_recv(int fd, Rd *rd, bool nonblock) {
        char cbuf[CMSG_SPACE(sizeof(struct timespec))];

        if (rd->off == rd->len)
                rd->off = rd->len = 0;
        else if (rd->off > 0 && rd->off >= rd->cap / 2) {
                /* the scanner's state is relative to the object's start */
                memmove(rd->data, rd->data + rd->off, rd->len - rd->off);
                rd->len -= rd->off;
                rd->off = 0;
        }
        if (rd->cap - rd->len < rd->chunk / 2) {
                size_t cap = MAX(rd->cap * 2, rd->len + rd->chunk);
                if (cap > MSG_MAX + rd->chunk)
                        return -EMSGSIZE;
                uint8_t *p = realloc(rd->data, cap);
                if (!p)
                        return -ENOMEM;
                rd->data = p;
                rd->cap = cap;
        }
        struct iovec iov = { .iov_base = rd->data + rd->len, .iov_len = rd->cap - rd->len };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                             .msg_controllen = sizeof cbuf };
        ssize_t n;
        do
                n = recvmsg(fd, &mh, nonblock ? MSG_DONTWAIT : 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return errno == EWOULDBLOCK ? -EAGAIN : negative_errno();
        if (n == 0)
                return -ECONNRESET;
        rd->user_ns = real_ns();
        rd->kernel_ns = 0;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
                if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
                        struct timespec ts;
                        memcpy(&ts, CMSG_DATA(cm), sizeof ts);
                        rd->kernel_ns = (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
                }
        rd->len += (size_t) n;
        return (int) n;
}

/* The next complete object, valid until the next rd_recv: its length, 0
 * when more bytes are needed, < 0 when the bytes are not MessagePack. */
static ssize_t rd_next(Rd *rd, const uint8_t **ret) {
        size_t len = 0;

        if (rd->off == rd->len)
                return 0;
        if (!rd->scanning) {
                mpscan_reset(&rd->scan);
                rd->scanning = true;
        }
        switch (mpscan_feed(&rd->scan, rd->data + rd->off, rd->len - rd->off, &len)) {
        case MPSCAN_COMPLETE:
                rd->scanning = false;
                *ret = rd->data + rd->off;
                rd->off += len;
                return (ssize_t) len;
        case MPSCAN_NEED_MORE:
                return 0;
        default:
                return -EBADMSG;
        }
}

static const msgpack_object *map_get(const msgpack_object *o, const char *key) {
        if (!o || o->type != MSGPACK_OBJECT_MAP)
                return NULL;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
                const msgpack_object *k = &o->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && streq_n(k->via.str.ptr, k->via.str.size, key))
                        return &o->via.map.ptr[i].val;
        }
        return NULL;
}

static bool obj_str_eq(const msgpack_object *o, const char *s) {
        return o && o->type == MSGPACK_OBJECT_STR && streq_n(o->via.str.ptr, o->via.str.size, s);
}

static uint64_t obj_u64(const msgpack_object *o) {
        return o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? o->via.u64 : 0;
}

typedef enum Msg {
        MSG_RESULT,             /* a response with a result */
        MSG_ERROR,              /* a response with an error (its code) */
        MSG_EVENT,              /* a notification: the event's map */
} Msg;

/* Decodes one message into z: its kind, and the result, or the event map. */
static int msg_decode(const uint8_t *p, size_t len, msgpack_zone *z, msgpack_object *ret,
                      char code[64]) {
        msgpack_object o;
        size_t off = 0;

        if (msgpack_unpack((const char *) p, len, &off, z, &o) != MSGPACK_UNPACK_SUCCESS ||
            o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 3)
                return -EBADMSG;
        const msgpack_object *a = o.via.array.ptr;
        if (obj_u64(&a[0]) == VMM_MSG_NOTIFICATION) {
                const msgpack_object *params = &a[2];
                if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size != 1)
                        return -EBADMSG;
                *ret = params->via.array.ptr[0];
                return MSG_EVENT;
        }
        if (obj_u64(&a[0]) != VMM_MSG_RESPONSE || o.via.array.size != 4)
                return -EBADMSG;
        if (a[2].type == MSGPACK_OBJECT_NIL) {
                *ret = a[3];
                return MSG_RESULT;
        }
        const msgpack_object *c = map_get(&a[2], "code");
        snprintf(code, 64, "%.*s", c && c->type == MSGPACK_OBJECT_STR ? (int) MIN(c->via.str.size, 60u)
                                                                         : 5,
                 c && c->type == MSGPACK_OBJECT_STR ? c->via.str.ptr : "error");
        return MSG_ERROR;
}

/* Blocking: the next response on fd (events before it are skipped). */
static int wait_reply(int fd, Rd *rd, msgpack_zone *z, msgpack_object *ret, char code[64]) {
        for (;;) {
                const uint8_t *p;
                ssize_t l = rd_next(rd, &p);
                if (l < 0)
                        return (int) l;
                if (l == 0) {
                        int r = rd_recv(fd, rd, false);
                        if (r < 0)
                                return r;
                        continue;
                }
                msgpack_zone_clear(z);
                int k = msg_decode(p, (size_t) l, z, ret, code);
                if (k != MSG_EVENT)
                        return k;
        }
}

/* ---- connections ---- */

/* TCP to vmmd from source (an IPv4 address, 0: any), blocking with 10 s
 * timeouts, with receive timestamps. */
static int tcp_open(const BenchEnv *env, uint32_t source) {
        _cleanup_close_ int fd = socket(env->addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct timeval tv = { .tv_sec = 10 };
        int one = 1;

        if (fd < 0)
                return negative_errno();
        if (source != 0 && env->addr->ss_family == AF_INET) {
                struct sockaddr_in src = { .sin_family = AF_INET,
                                           .sin_addr.s_addr = htonl(source) };
                if (bind(fd, (struct sockaddr *) &src, sizeof src) < 0)
                        return negative_errno();
        }
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        (void) setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        (void) setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
        if (connect(fd, (const struct sockaddr *) env->addr, env->addr_len) < 0)
                return negative_errno();
        return TAKE_FD(fd);
}

static int unix_open(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval tv = { .tv_sec = 60 };   /* user.create waits for a hash */
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
                return negative_errno();
        if (strlen(path) >= sizeof sa.sun_path)
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path));
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                return negative_errno();
        return TAKE_FD(fd);
}

/* ---- users ---- */

/* Users "<prefix>%06u" */
static int users_create_role(const BenchEnv *env, char prefix, const char *role,
                             unsigned first, unsigned n) {
        _cleanup_close_ int fd = -1;
        msgpack_zone *z = msgpack_zone_new(4096);
        msgpack_object res;
        char code[64], name[32];
        Req q;
        Rd rd;
        int r = 0;

        if (!z)
                return -ENOMEM;
        fd = unix_open(env->admin_socket);
        if (fd < 0) {
                fprintf(stderr, "vmmbench: admin socket %s: %s\n", env->admin_socket,
                        strerror(-fd));
                msgpack_zone_free(z);
                return fd;
        }
        req_init(&q);
        rd_init(&rd, 65536);
        for (unsigned done = 0; r >= 0 && done < n; ) {
                unsigned k = MIN(CREATE_BATCH, n - done);
                for (unsigned i = 0; i < k; i++) {
                        snprintf(name, sizeof name, "%c%06u", prefix, first + done + i);
                        req_begin(&q, VMM_M_USER_CREATE, 3);
                        req_str(&q, "name", name);
                        req_str(&q, "role", role);
                        req_str(&q, "password", env->password);
                }
                r = req_send(fd, &q);
                for (unsigned i = 0; r >= 0 && i < k; i++) {
                        r = wait_reply(fd, &rd, z, &res, code);
                        if (r == MSG_ERROR && strcmp(code, "exists") != 0) {
                                fprintf(stderr, "vmmbench: user.create: %s\n", code);
                                r = -EACCES;
                        }
                }
                done += k;
        }
        req_done(&q);
        rd_free(&rd);
        msgpack_zone_free(z);
        return r < 0 ? r : 0;
}

int part2_users_create(const BenchEnv *env, unsigned first, unsigned n) {
        return users_create_role(env, 'u', "user", first, n);
}

/* user.auth as name on fd; the token into token (may be NULL). */
static int user_login(const BenchEnv *env, int fd, Rd *rd, const char *name,
                      char token[VMM_TOKEN_LEN + 1]) {
        msgpack_zone *z = msgpack_zone_new(4096);
        msgpack_object res;
        char code[64] = "";
        Req q;
        int r = -EIO;

        if (!z)
                return -ENOMEM;
        req_init(&q);
        for (unsigned tries = 0; tries < RETRIES; tries++) {
                req_begin(&q, VMM_M_USER_AUTH, 2);
                req_str(&q, "name", name);
                req_str(&q, "password", env->password);
                r = req_send(fd, &q);
                if (r >= 0)
                        r = wait_reply(fd, rd, z, &res, code);
                if (r != MSG_ERROR || strcmp(code, "rate_limited") != 0)
                        break;
                (void) usleep(100 * 1000);
        }
        if (r == MSG_RESULT) {
                const msgpack_object *t = map_get(&res, "token");
                if (!t || t->type != MSGPACK_OBJECT_STR || t->via.str.size != VMM_TOKEN_LEN)
                        r = -EBADMSG;
                else if (token)
                        snprintf(token, VMM_TOKEN_LEN + 1, "%.*s", VMM_TOKEN_LEN, t->via.str.ptr);
        } else if (r == MSG_ERROR) {
                fprintf(stderr, "vmmbench: user.auth as %s: %s%s\n", name, code,
                        strcmp(code, "unauthenticated") == 0
                                ? " (no such user? give --admin-socket, or load users with "
                                  "vmm-load --users)" : "");
                r = -EACCES;
        }
        req_done(&q);
        msgpack_zone_free(z);
        return r < 0 ? r : 0;
}

/* ---- the admin socket's status ---- */

int part2_admin_open(const char *path) {
        return unix_open(path);
}

int part2_status_bookings(int fd, uint64_t *ret) {
        msgpack_zone *z = msgpack_zone_new(16384);
        msgpack_object res;
        char code[64];
        Req q;
        Rd rd;
        int r;

        if (!z)
                return -ENOMEM;
        req_init(&q);
        rd_init(&rd, 65536);
        req_begin(&q, "status", 0);
        r = req_send(fd, &q);
        if (r >= 0)
                r = wait_reply(fd, &rd, z, &res, code);
        if (r == MSG_RESULT) {
                const msgpack_object *b = map_get(&res, "bookings");
                if (b && b->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                        *ret = b->via.u64;
                else
                        r = -EBADMSG;
        } else if (r >= 0)
                r = -EIO;
        req_done(&q);
        rd_free(&rd);
        msgpack_zone_free(z);
        return r < 0 ? r : 0;
}

/* ---- replay ---- */

int part2_run_replay(const BenchEnv *env) {
        _cleanup_close_ int fd = -1;
        msgpack_zone *z = msgpack_zone_new(65536);
        msgpack_object res;
        char code[64] = "";
        double cpu0 = 0, cpu1 = 0;
        Req q;
        Rd rd;
        int r;

        if (!z)
                return -ENOMEM;
        req_init(&q);
        rd_init(&rd, REPLAY_CHUNK);
        /* an admin user sees every event of the feed */
        r = env->admin_socket ? users_create_role(env, 'a', "admin", 1, 1) : 0;
        if (r >= 0) {
                fd = tcp_open(env, 0);
                r = fd;
        }
        if (r >= 0)
                r = user_login(env, fd, &rd, "a000001", NULL);
        if (r < 0)
                goto finish;

        if (env->server_pid > 0 && bench_proc_cpu_s(env->server_pid, &cpu0) < 0)
                cpu0 = -1;
        uint64_t t0 = mono_ns(), deadline = t0 + (uint64_t) env->seconds * 1000000000ull;
        req_begin(&q, VMM_M_EVENTS_WATCH, 1);
        req_u64(&q, "since", 0);
        r = req_send(fd, &q);
        if (r >= 0)
                r = wait_reply(fd, &rd, z, &res, code);
        if (r == MSG_ERROR) {
                fprintf(stderr, "vmmbench: events.watch: %s\n", code);
                r = -EIO;
        }
        if (r < 0)
                goto finish;
        uint64_t t_reply = mono_ns();
        uint64_t last = obj_u64(map_get(&res, "feed")), oldest = obj_u64(map_get(&res, "oldest"));
        uint64_t kept = oldest ? last - oldest + 1 : 0;
        uint64_t want = MIN((uint64_t) env->replay_events, kept);
        uint64_t got = 0, gaps = 0, prev = 0, truncated = 0, t_first = 0, t_last = 0;

        while (got < want) {
                const uint8_t *p;
                ssize_t l = rd_next(&rd, &p);
                if (l < 0) {
                        r = (int) l;
                        break;
                }
                if (l == 0) {
                        if (mono_ns() >= deadline) {
                                r = -ETIMEDOUT;
                                break;
                        }
                        r = rd_recv(fd, &rd, false);
                        if (r < 0 && r != -EAGAIN)
                                break;
                        r = 0;
                        continue;
                }
                msgpack_zone_clear(z);
                msgpack_object ev;
                int k = msg_decode(p, (size_t) l, z, &ev, code);
                if (k != MSG_EVENT) {
                        r = k < 0 ? k : -EPROTO;
                        break;
                }
                uint64_t feed = obj_u64(map_get(&ev, "feed"));
                if (feed == 0) {
                        truncated += obj_str_eq(map_get(&ev, "type"), "events.truncated");
                        continue;
                }
                if (prev && feed != prev + 1)
                        gaps++;
                prev = feed;
                if (++got == 1)
                        t_first = mono_ns();
        }
        t_last = mono_ns();
        if (env->server_pid > 0 && cpu0 >= 0 && bench_proc_cpu_s(env->server_pid, &cpu1) < 0)
                cpu0 = -1;
        double ms = (double) (t_last - t0) / 1e6;
        double server_cpu = env->server_pid > 0 && cpu0 >= 0 ? (cpu1 - cpu0) / (ms / 1e3) : -1;
        if (r == -ETIMEDOUT)
                fprintf(stderr, "vmmbench: replay: %" PRIu64 " of %" PRIu64 " events within "
                        "%u s\n", got, want, env->seconds);
        if (want < env->replay_events)
                fprintf(stderr, "vmmbench: replay: the feed keeps %" PRIu64 " events, fewer "
                        "than %u\n", kept, env->replay_events);
        if (env->json) {
                bench_json_begin();
                printf("\"server\": \"vmmd\", \"test\": \"replay\", \"request\": "
                       "\"events.watch since 0\", \"feed_last\": %" PRIu64 ", \"feed_oldest\": "
                       "%" PRIu64 ", \"wanted\": %" PRIu64 ", \"events\": %" PRIu64 ", "
                       "\"reply_ms\": %.3f, \"first_ms\": %.3f, \"ms\": %.3f, "
                       "\"events_per_s\": %.0f, \"gaps\": %" PRIu64 ", \"truncated\": %" PRIu64
                       ", \"server_cpu\": %.2f, \"errors\": %d}", last, oldest, want, got,
                       (double) (t_reply - t0) / 1e6,
                       t_first ? (double) (t_first - t0) / 1e6 : -1.0, ms,
                       got / (ms > 0 ? ms / 1e3 : 1e-9), gaps, truncated, server_cpu,
                       got < want || gaps ? 1 : 0);
        } else {
                printf("vmmd replay (events.watch {since: 0}, an admin user on TCP): feed "
                       "%" PRIu64 "..%" PRIu64 "\n", oldest, last);
                printf("  %" PRIu64 " of %" PRIu64 " events in %.1f ms from the request "
                       "(%.0f events/s); reply after %.2f ms, first event after %.2f ms\n",
                       got, want, ms, got / (ms > 0 ? ms / 1e3 : 1e-9),
                       (double) (t_reply - t0) / 1e6,
                       t_first ? (double) (t_first - t0) / 1e6 : -1.0);
                printf("  gaps in feed positions: %" PRIu64 "; events.truncated: %" PRIu64 "\n",
                       gaps, truncated);
                if (server_cpu >= 0)
                        printf("  CPU (share of one core): server %.2f\n", server_cpu);
        }
        fflush(stdout);
        if (r >= 0 && (got < want || gaps))
                r = -EIO;
finish:
        req_done(&q);
        rd_free(&rd);
        msgpack_zone_free(z);
        return r < 0 ? r : 0;
}

/* ---- watchers ---- */

typedef struct Watcher {
        int fd;
        Rd rd;
        bool got;               /* this round's event arrived */
} Watcher;

typedef struct Lat {
        int64_t *v;
        size_t n;
} Lat;

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
        return x < y ? -1 : x > y;
}

/* in ms, of sorted values */
static double lat_q(const Lat *l, double q) {
        if (l->n == 0)
                return 0;
        size_t i = (size_t) (q * (double) l->n + 0.5);
        i = i < 1 ? 0 : MIN(i - 1, l->n - 1);
        return (double) l->v[i] / 1e6;
}

typedef struct Watch {
        const BenchEnv *env;
        Watcher *w;
        unsigned n;
        int epfd;
        msgpack_zone *z;
        Lat after_reply, after_send;
        uint64_t received, unexpected, no_kernel_ts;
} Watch;

/* Opens the watchers: each resumes one of the sessions and watches
 * booking.created. */
static int watchers_open(Watch *wa, char (*tokens)[VMM_TOKEN_LEN + 1]) {
        const BenchEnv *env = wa->env;
        msgpack_object res;
        char code[64];
        Req q;
        int r = 0;

        req_init(&q);
        for (unsigned first = 0; r >= 0 && first < wa->n; first += SETUP_BATCH) {
                unsigned last = MIN(wa->n, first + SETUP_BATCH);
                for (unsigned i = first; r >= 0 && i < last; i++) {
                        Watcher *w = &wa->w[i];
                        /* 127.0.0.2 and on: vmmd limits connections per address */
                        w->fd = tcp_open(env, 0x7f000002u + i / PER_SOURCE);
                        if (w->fd < 0) {
                                r = w->fd;
                                fprintf(stderr, "vmmbench: watcher %u: %s\n", i, strerror(-r));
                                break;
                        }
                        req_begin(&q, VMM_M_RESUME, 1);
                        req_str(&q, "token", tokens[i % env->watch_users]);
                        req_begin(&q, VMM_M_EVENTS_WATCH, 1);
                        q.oom |= mp_str(&q.pk, "types") || msgpack_pack_array(&q.pk, 1) ||
                                 mp_str(&q.pk, "booking.created");
                        r = req_send(w->fd, &q);
                }
                for (unsigned i = first; r >= 0 && i < last; i++)
                        for (int k = 0; r >= 0 && k < 2; k++) {
                                r = wait_reply(wa->w[i].fd, &wa->w[i].rd, wa->z, &res, code);
                                if (r == MSG_ERROR) {
                                        fprintf(stderr, "vmmbench: watcher %u: %s: %s\n", i,
                                                k == 0 ? "resume" : "events.watch", code);
                                        r = -EACCES;
                                }
                        }
        }
        for (unsigned i = 0; r >= 0 && i < wa->n; i++) {
                struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i };
                if (fcntl(wa->w[i].fd, F_SETFL, O_NONBLOCK) < 0 ||
                    epoll_ctl(wa->epfd, EPOLL_CTL_ADD, wa->w[i].fd, &ev) < 0)
                        r = negative_errno();
        }
        req_done(&q);
        return r < 0 ? r : 0;
}

/* Reads watcher i; records the booking.created of vm_id. */
static int watcher_read(Watch *wa, unsigned i, const char *vm_id, int64_t reply_ns,
                        int64_t send_ns) {
        Watcher *w = &wa->w[i];
        char code[64];

        for (;;) {
                int r = rd_recv(w->fd, &w->rd, true);
                if (r == -EAGAIN)
                        return 0;
                if (r < 0)
                        return r;
                const uint8_t *p;
                ssize_t l;
                while ((l = rd_next(&w->rd, &p)) > 0) {
                        msgpack_object ev;
                        msgpack_zone_clear(wa->z);
                        int k = msg_decode(p, (size_t) l, wa->z, &ev, code);
                        if (k < 0)
                                return k;
                        if (k != MSG_EVENT || w->got ||
                            !obj_str_eq(map_get(&ev, "type"), "booking.created") ||
                            !obj_str_eq(map_get(&ev, "vm_id"), vm_id)) {
                                wa->unexpected++;
                                continue;
                        }
                        /* the kernel's receive time; the read's when it is missing or
                         * not plausible (a clock other than CLOCK_REALTIME) */
                        int64_t at = w->rd.kernel_ns;
                        if (at == 0 || llabs(at - w->rd.user_ns) > 1000000000) {
                                at = w->rd.user_ns;
                                wa->no_kernel_ts++;
                        }
                        w->got = true;
                        wa->received++;
                        wa->after_reply.v[wa->after_reply.n++] = at - reply_ns;
                        wa->after_send.v[wa->after_send.n++] = at - send_ns;
                }
                if (l < 0)
                        return (int) l;
        }
}

/* One booking: create, wait for every watcher (bounded), cancel. */
static int watch_round(Watch *wa, int bfd, Rd *brd, unsigned k, Lat *commit) {
        char vm_id[32], code[64];
        msgpack_object res;
        Req q;
        int r;

        /* the VMs from the end of the range: not the ones the booking test books */
        snprintf(vm_id, sizeof vm_id, "vm%06u", wa->env->vms - k);
        for (unsigned i = 0; i < wa->n; i++)
                wa->w[i].got = false;
        req_init(&q);
        req_begin(&q, VMM_M_BOOKING_CREATE, 2);
        req_str(&q, "vm_id", vm_id);
        req_u64(&q, "minutes", 60);
        int64_t send_ns = real_ns();
        r = req_send(bfd, &q);
        if (r >= 0)
                r = wait_reply(bfd, brd, wa->z, &res, code);
        int64_t reply_ns = brd->kernel_ns && llabs(brd->kernel_ns - brd->user_ns) < 1000000000
                                   ? brd->kernel_ns : brd->user_ns;
        if (r == MSG_ERROR) {
                fprintf(stderr, "vmmbench: booking.create %s: %s\n", vm_id, code);
                r = -EIO;
        }
        if (r < 0)
                goto finish;
        commit->v[commit->n++] = reply_ns - send_ns;

        uint64_t deadline = mono_ns() + ROUND_WAIT_NS;
        uint64_t want = wa->received + wa->n;
        while (wa->received < want && mono_ns() < deadline) {
                struct epoll_event evs[256];
                int n = epoll_wait(wa->epfd, evs, ELEMENTSOF(evs), 100);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = negative_errno();
                        goto finish;
                }
                for (int i = 0; i < n; i++) {
                        r = watcher_read(wa, evs[i].data.u32, vm_id, reply_ns, send_ns);
                        if (r < 0) {
                                fprintf(stderr, "vmmbench: watcher %u: %s\n", evs[i].data.u32,
                                        strerror(-r));
                                goto finish;
                        }
                }
        }
        req_begin(&q, VMM_M_BOOKING_CANCEL, 1);
        req_str(&q, "vm_id", vm_id);
        r = req_send(bfd, &q);
        if (r >= 0)
                r = wait_reply(bfd, brd, wa->z, &res, code);
        if (r == MSG_ERROR) {
                fprintf(stderr, "vmmbench: booking.cancel %s: %s\n", vm_id, code);
                r = -EIO;
        }
finish:
        req_done(&q);
        return r < 0 ? r : 0;
}

static void watch_report(const Watch *wa, const Lat *commit, unsigned rounds) {
        const BenchEnv *env = wa->env;
        uint64_t expected = (uint64_t) wa->n * rounds;

        if (env->json) {
                bench_json_begin();
                printf("\"server\": \"vmmd\", \"test\": \"watchers\", \"request\": "
                       "\"booking.created to watchers\", \"watchers\": %u, \"sessions\": %u, "
                       "\"bookings\": %u, \"received\": %" PRIu64 ", \"missing\": %" PRIu64 ", "
                       "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, \"min_ms\": %.3f, "
                       "\"send_p50_ms\": %.3f, \"send_p99_ms\": %.3f, \"send_max_ms\": %.3f, "
                       "\"commit_p50_ms\": %.3f, \"commit_max_ms\": %.3f, "
                       "\"read_time_used\": %" PRIu64 ", \"errors\": %" PRIu64 "}",
                       wa->n, env->watch_users, rounds, wa->received, expected - wa->received,
                       lat_q(&wa->after_reply, 0.5), lat_q(&wa->after_reply, 0.99),
                       lat_q(&wa->after_reply, 1), lat_q(&wa->after_reply, 0),
                       lat_q(&wa->after_send, 0.5), lat_q(&wa->after_send, 0.99),
                       lat_q(&wa->after_send, 1), lat_q(commit, 0.5), lat_q(commit, 1),
                       wa->no_kernel_ts, expected - wa->received);
                return;
        }
        printf("vmmd watchers: %u connections (%u user sessions) watching booking.created; "
               "%u bookings, one at a time\n", wa->n, env->watch_users, rounds);
        printf("  received %" PRIu64 " of %" PRIu64 " (missing %" PRIu64 ", other messages %"
               PRIu64 ")\n", wa->received, expected, expected - wa->received, wa->unexpected);
        printf("  after the booking's reply, ms: p50 %.3f  p99 %.3f  max %.3f  (min %.3f)\n",
               lat_q(&wa->after_reply, 0.5), lat_q(&wa->after_reply, 0.99),
               lat_q(&wa->after_reply, 1), lat_q(&wa->after_reply, 0));
        printf("  after the booking was sent, ms: p50 %.3f  p99 %.3f  max %.3f; "
               "booking.create itself p50 %.3f  max %.3f\n",
               lat_q(&wa->after_send, 0.5), lat_q(&wa->after_send, 0.99),
               lat_q(&wa->after_send, 1), lat_q(commit, 0.5), lat_q(commit, 1));
        printf("  receipt times: the kernel's receive timestamps%s\n",
               wa->no_kernel_ts ? " (some missing: the read's time instead)" : "");
}

int part2_run_watchers(const BenchEnv *env) {
        char (*tokens)[VMM_TOKEN_LEN + 1] = calloc(env->watch_users, sizeof *tokens);
        Watch wa = { .env = env, .n = env->watchers, .epfd = -1 };
        Lat commit = { 0 };
        _cleanup_close_ int bfd = -1;
        char name[32];
        Rd brd;
        int r = 0;

        rd_init(&brd, 65536);
        wa.w = calloc(wa.n, sizeof *wa.w);
        wa.after_reply.v = calloc((size_t) wa.n * env->bookings, sizeof(int64_t));
        wa.after_send.v = calloc((size_t) wa.n * env->bookings, sizeof(int64_t));
        commit.v = calloc(env->bookings, sizeof(int64_t));
        wa.z = msgpack_zone_new(4096);
        wa.epfd = epoll_create1(EPOLL_CLOEXEC);
        if (!tokens || !wa.w || !wa.after_reply.v || !wa.after_send.v || !commit.v || !wa.z)
                r = -ENOMEM;
        else if (wa.epfd < 0)
                r = negative_errno();
        if (r >= 0 && env->vms < env->bookings) {
                fprintf(stderr, "vmmbench: watchers: --vms %u is fewer than --bookings %u\n",
                        env->vms, env->bookings);
                r = -EINVAL;
        }
        for (unsigned i = 0; i < wa.n && wa.w; i++) {
                wa.w[i].fd = -1;
                rd_init(&wa.w[i].rd, WATCH_CHUNK);
        }
        /* room for the connections: the soft limit up to the hard one */
        struct rlimit rl;
        if (r >= 0 && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < wa.n + 64u) {
                rl.rlim_cur = MIN(rl.rlim_max, (rlim_t) wa.n + 64u);
                (void) setrlimit(RLIMIT_NOFILE, &rl);
        }
        /* the sessions (one password hash each), then the booker's */
        if (r >= 0 && env->admin_socket)
                r = part2_users_create(env, 1, env->watch_users + 1);
        for (unsigned u = 0; r >= 0 && u < env->watch_users; u++) {
                _cleanup_close_ int fd = tcp_open(env, 0);
                Rd rd;
                if (fd < 0) {
                        r = fd;
                        break;
                }
                rd_init(&rd, 65536);
                snprintf(name, sizeof name, BENCH_USER_FORMAT, u + 1);
                r = user_login(env, fd, &rd, name, tokens[u]);
                rd_free(&rd);
        }
        if (r >= 0) {
                bfd = tcp_open(env, 0);
                r = bfd;
        }
        if (r >= 0) {
                snprintf(name, sizeof name, BENCH_USER_FORMAT, env->watch_users + 1);
                r = user_login(env, bfd, &brd, name, NULL);
        }
        if (r >= 0)
                r = watchers_open(&wa, tokens);
        for (unsigned k = 0; r >= 0 && k < env->bookings; k++)
                r = watch_round(&wa, bfd, &brd, k, &commit);
        if (r >= 0) {
                qsort(wa.after_reply.v, wa.after_reply.n, sizeof(int64_t), cmp_i64);
                qsort(wa.after_send.v, wa.after_send.n, sizeof(int64_t), cmp_i64);
                qsort(commit.v, commit.n, sizeof(int64_t), cmp_i64);
                watch_report(&wa, &commit, env->bookings);
                fflush(stdout);
                if (wa.received < (uint64_t) wa.n * env->bookings)
                        r = -EIO;
        }
        for (unsigned i = 0; i < wa.n && wa.w; i++) {
                if (wa.w[i].fd >= 0)
                        (void) close(wa.w[i].fd);
                rd_free(&wa.w[i].rd);
        }
        if (wa.epfd >= 0)
                (void) close(wa.epfd);
        if (wa.z)
                msgpack_zone_free(wa.z);
        rd_free(&brd);
        free(wa.w);
        free(wa.after_reply.v);
        free(wa.after_send.v);
        free(commit.v);
        free(tokens);
        return r < 0 ? r : 0;
}
