/* SPDX-License-Identifier: MIT */
/* agents-load: many VM agents at once against vmmd, the workload of
 * `vmclient agent` at fleet scale (tools/bench/agents runs it).
 *
 *     agents-load sessions STATE_DIR COUNT TOKENS_FILE
 *         gives each of the VMs vm000001..vmCOUNT (loaded by vmm-load) one
 *         session, written directly into the store (no password hash), and
 *         writes "vm_id token" lines to TOKENS_FILE. Run while no vmmd uses
 *         STATE_DIR.
 *
 *     agents-load run --tokens FILE [OPTIONS]
 *         N agents, each one connection from a 127.0.0.0/8 source address
 *         (at most 1000 per address: vmmd's per-address limit is 1024),
 *         resume their session once, then report every --interval seconds
 *         (vm.report with load, memory, uptime and disk use, or --method
 *         vm.get where vmmd has no vm.report), their reports spread evenly
 *         over the interval. Meanwhile one more connection pings every 10 ms.
 *         Measured over --seconds: vmmd's CPU (/proc/PID/stat), its RSS per
 *         connected agent, ping and report latency. With --restart-cmd, the
 *         command then restarts vmmd (it prints the new pid) and the agents
 *         come back as the real agent does, with exponential backoff and full
 *         jitter (1 s doubling to 30 s), resuming their sessions: the time
 *         until all have resumed is measured.
 *
 * One epoll loop, a 10 ms timing wheel, requests packed once with the msgid
 * patched in, responses walked by msgpack_unpack. Loopback only. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/macro.h"
#include "shared/secret.h"
#include "store/store.h"
#include "vmm/protocol.h"

#define AGENTS_MAX      200000u
#define PER_SOURCE      1000u
#define TICK_MS         10u
#define WHEEL_SLOTS     4096u           /* 40.96 s */
#define BACKOFF_BASE_MS 1000u
#define BACKOFF_CAP_MS  30000u
#define BACKOFF_MIN_MS  100u
#define REQUEST_TIMEOUT_MS 30000u
#define RBUF            512u
#define BATCH_DEFAULT   10000u

/* ---- sessions ---- */

static int64_t wall_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct SessionBatch {
        size_t n;
        StoreSession s[BATCH_DEFAULT];
        char tok[BATCH_DEFAULT][VMM_TOKEN_LEN + 1];
} SessionBatch;

static int sessions_write(void *item, StoreTxn *t) {
        SessionBatch *b = item;
        int r = 0;

        for (size_t i = 0; r >= 0 && i < b->n; i++)
                r = store_session_put(t, &b->s[i]);
        return r;
}

static int cmd_sessions(int argc, char **argv) {
        if (argc != 4) {
                fprintf(stderr, "usage: agents-load sessions STATE_DIR COUNT TOKENS_FILE\n");
                return 2;
        }
        char *end;
        unsigned long count = strtoul(argv[2], &end, 10);
        if (*end || count == 0 || count > AGENTS_MAX) {
                fprintf(stderr, "agents-load: bad COUNT '%s'\n", argv[2]);
                return 2;
        }
        if (secret_init() < 0)
                return 1;
        Store *s = NULL;
        char err[512] = "";
        StoreOptions so = { .dir = argv[1] };
        int r = store_open(&so, &s, NULL, err, sizeof err);
        if (r < 0) {
                fprintf(stderr, "agents-load: cannot open %s: %s\n", argv[1],
                        err[0] ? err : strerror(-r));
                return 1;
        }
        FILE *out = fopen(argv[3], "we");
        if (!out) {
                fprintf(stderr, "agents-load: %s: %s\n", argv[3], strerror(errno));
                store_close(s);
                return 1;
        }
        uint8_t key[32];
        store_hash_key(s, key);
        int64_t now = wall_ms();
        SessionBatch *b = calloc(1, sizeof *b);
        if (!b)
                r = -ENOMEM;
        for (unsigned long first = 1; first <= count && r >= 0;) {
                unsigned long last = MIN(count, first + BATCH_DEFAULT - 1);
                void *items[1] = { b };
                int result = 0;

                /* the tokens first: a batch may be written twice (the store
                 * grows and runs it again), the same sessions each time */
                b->n = 0;
                for (unsigned long k = first; k <= last; k++) {
                        uint8_t raw[VMM_TOKEN_BYTES];
                        StoreSession *ss = &b->s[b->n];
                        *ss = (StoreSession) { .created_at = now, .expires_at = now + 86400000 };
                        secret_token_new(raw, b->tok[b->n]);
                        secret_token_hash(key, raw, ss->hash);
                        snprintf(ss->vm_id, sizeof ss->vm_id, "vm%06lu", k);
                        b->n++;
                }
                r = store_write_batch(s, items, 1, sessions_write, &result);
                if (r >= 0)
                        r = result;
                for (size_t i = 0; r >= 0 && i < b->n; i++)
                        fprintf(out, "%s %s\n", b->s[i].vm_id, b->tok[i]);
                first = last + 1;
        }
        free(b);
        store_close(s);
        if (fclose(out) != 0 || r < 0) {
                fprintf(stderr, "agents-load: writing sessions failed: %s\n", strerror(-r));
                return 1;
        }
        printf("%lu sessions written to %s\n", count, argv[3]);
        return 0;
}

/* ---- time, wheel ---- */

static uint64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static uint64_t mono_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static double mono_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

typedef enum State {
        ST_DOWN,                /* waiting to (re)connect */
        ST_CONNECTING,
        ST_RESUMING,
        ST_UP,                  /* resumed: reporting */
} State;

typedef struct Agent Agent;
struct Agent {
        int fd;
        uint32_t idx;
        uint8_t state;
        bool waiting;           /* a request is out */
        uint8_t attempt;
        uint16_t rlen;
        Agent *tprev, *tnext;   /* in a wheel slot */
        uint64_t due_ms;        /* timer, when armed */
        uint64_t sent_ms;
        uint64_t sent_ns;       /* for the latency */
        uint64_t report_at;     /* the next report's slot */
        uint32_t msgid;
        bool armed;
        char *rbuf;             /* a partial response (rare) */
};

typedef struct Wheel {
        Agent *slot[WHEEL_SLOTS];
        uint64_t now_tick;
} Wheel;

static Wheel wheel;

static void timer_cancel(Agent *a) {
        if (!a->armed)
                return;
        uint64_t s = (a->due_ms / TICK_MS) % WHEEL_SLOTS;
        if (a->tprev)
                a->tprev->tnext = a->tnext;
        else
                wheel.slot[s] = a->tnext;
        if (a->tnext)
                a->tnext->tprev = a->tprev;
        a->tprev = a->tnext = NULL;
        a->armed = false;
}

static void timer_at(Agent *a, uint64_t due_ms) {
        timer_cancel(a);
        uint64_t tick = (due_ms + TICK_MS - 1) / TICK_MS;     /* never early */
        if (tick <= wheel.now_tick)
                tick = wheel.now_tick + 1;
        a->due_ms = tick * TICK_MS;
        uint64_t s = tick % WHEEL_SLOTS;
        a->tprev = NULL;
        a->tnext = wheel.slot[s];
        if (a->tnext)
                a->tnext->tprev = a;
        wheel.slot[s] = a;
        a->armed = true;
}

/* ---- the run ---- */

typedef struct Lat {
        double *v;
        size_t n, cap;
} Lat;

static void lat_add(Lat *l, double ms) {
        if (l->n == l->cap) {
                size_t cap = l->cap ? l->cap * 2 : 4096;
                double *v = realloc(l->v, cap * sizeof(double));
                if (!v)
                        return;
                l->v = v;
                l->cap = cap;
        }
        l->v[l->n++] = ms;
}

static int dbl_cmp(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return (x > y) - (x < y);
}

static double lat_pct(Lat *l, double p) {
        if (l->n == 0)
                return NAN;
        qsort(l->v, l->n, sizeof(double), dbl_cmp);
        size_t i = (size_t) ceil(p / 100.0 * (double) l->n);
        return l->v[i == 0 ? 0 : i - 1];
}

static struct {
        const char *server;
        const char *tokens;
        const char *method;
        const char *restart_cmd;
        unsigned n;
        unsigned interval_s;
        unsigned seconds;
        unsigned warmup;
        unsigned ramp_per_tick;         /* connects started per 10 ms tick */
        long pid;
        bool json;
} opt = {
        .server = "127.0.0.1:7707",
        .method = "vm.report",
        .interval_s = 10,
        .seconds = 30,
        .warmup = 5,
        .ramp_per_tick = 500,
};

static struct sockaddr_in server_sa;
static int epfd = -1;
static Agent *agents;
static char (*tokens)[VMM_TOKEN_LEN + 1];
static msgpack_sbuffer report_req;      /* packed with msgid 0xffffffff, patched */
static size_t report_msgid_off;
static bool measuring, restarting;
static uint64_t up_count, resumes_ok, resume_fail, reports_ok, reports_err, reports_limited;
static uint64_t conn_fail, timeouts, disconnects;
static Lat rep_lat, ping_lat;
static uint64_t all_up_at, restart_at;

static uint64_t rand_u64(void) {
        uint64_t v;
        if (getrandom(&v, sizeof v, 0) != (ssize_t) sizeof v)
                v = (uint64_t) random() * 2654435761u ^ mono_ms();
        return v;
}

static int pack_request(msgpack_sbuffer *sb, const char *method, const char *token,
                        size_t *ret_off) {
        msgpack_packer pk;
        msgpack_sbuffer_init(sb);
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint8(&pk, 0);
        *ret_off = sb->size;
        msgpack_pack_uint32(&pk, UINT32_MAX);   /* 0xce + 4 bytes: patched per request */
        msgpack_pack_str(&pk, strlen(method));
        msgpack_pack_str_body(&pk, method, strlen(method));
        if (token) {
                msgpack_pack_array(&pk, 1);
                msgpack_pack_map(&pk, 1);
                msgpack_pack_str(&pk, 5);
                msgpack_pack_str_body(&pk, "token", 5);
                msgpack_pack_str(&pk, VMM_TOKEN_LEN);
                msgpack_pack_str_body(&pk, token, VMM_TOKEN_LEN);
        } else if (strcmp(method, "vm.report") == 0) {
                /* what a VM reports: load, memory, uptime, one disk's use */
                msgpack_pack_array(&pk, 1);
                msgpack_pack_map(&pk, 5);
                msgpack_pack_str(&pk, 4);
                msgpack_pack_str_body(&pk, "load", 4);
                msgpack_pack_array(&pk, 3);
                msgpack_pack_double(&pk, 0.42);
                msgpack_pack_double(&pk, 0.37);
                msgpack_pack_double(&pk, 0.30);
                msgpack_pack_str(&pk, 9);
                msgpack_pack_str_body(&pk, "mem_total", 9);
                msgpack_pack_uint32(&pk, 4096);
                msgpack_pack_str(&pk, 8);
                msgpack_pack_str_body(&pk, "mem_used", 8);
                msgpack_pack_uint32(&pk, 1234);
                msgpack_pack_str(&pk, 6);
                msgpack_pack_str_body(&pk, "uptime", 6);
                msgpack_pack_uint32(&pk, 86400);
                msgpack_pack_str(&pk, 10);
                msgpack_pack_str_body(&pk, "disks_used", 10);
                msgpack_pack_array(&pk, 0);
        } else
                msgpack_pack_array(&pk, 0);
        return 0;
}

static void patch_msgid(char *buf, size_t off, uint32_t id) {
        buf[off + 1] = (char) (id >> 24);
        buf[off + 2] = (char) (id >> 16);
        buf[off + 3] = (char) (id >> 8);
        buf[off + 4] = (char) id;
}

static void agent_close(Agent *a) {
        if (a->fd >= 0) {
                (void) epoll_ctl(epfd, EPOLL_CTL_DEL, a->fd, NULL);
                (void) close(a->fd);
        }
        a->fd = -1;
        free(a->rbuf);
        a->rbuf = NULL;
        a->rlen = 0;
        a->waiting = false;
        if (a->state == ST_UP)
                up_count--;
        a->state = ST_DOWN;
}

/* Reconnect later: full jitter over min(cap, base * 2^attempt). */
static void agent_backoff(Agent *a) {
        uint64_t ceiling = MIN((uint64_t) BACKOFF_BASE_MS << MIN(a->attempt, 15), BACKOFF_CAP_MS);
        uint64_t delay = MAX(rand_u64() % (ceiling + 1), (uint64_t) BACKOFF_MIN_MS);
        if (a->attempt < 30)
                a->attempt++;
        timer_at(a, mono_ms() + delay);
}

static void agent_lost(Agent *a) {
        disconnects++;
        agent_close(a);
        agent_backoff(a);
}

static int send_all(Agent *a, const char *p, size_t n) {
        /* requests are small: the socket buffer takes them whole */
        ssize_t k = send(a->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        return k == (ssize_t) n ? 0 : -EIO;
}

static void agent_send_resume(Agent *a) {
        msgpack_sbuffer sb;
        size_t off;
        pack_request(&sb, "resume", tokens[a->idx], &off);
        a->msgid++;
        patch_msgid(sb.data, off, a->msgid);
        int r = send_all(a, sb.data, sb.size);
        msgpack_sbuffer_destroy(&sb);
        if (r < 0) {
                agent_lost(a);
                return;
        }
        a->state = ST_RESUMING;
        a->waiting = true;
        a->sent_ms = mono_ms();
        timer_at(a, a->sent_ms + REQUEST_TIMEOUT_MS);
}

static void agent_send_report(Agent *a) {
        a->msgid++;
        patch_msgid(report_req.data, report_msgid_off, a->msgid);
        if (send_all(a, report_req.data, report_req.size) < 0) {
                agent_lost(a);
                return;
        }
        a->waiting = true;
        a->sent_ms = mono_ms();
        a->sent_ns = mono_ns();
}

static uint64_t next_report_ms(const Agent *a, uint64_t now) {
        /* agent i reports at offset i/N of every interval */
        uint64_t period = (uint64_t) opt.interval_s * 1000u;
        uint64_t phase = (uint64_t) a->idx * period / opt.n;
        uint64_t base = now - now % period + phase;
        while (base <= now)
                base += period;
        return base;
}

static void agent_connect(Agent *a) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                conn_fail++;
                agent_backoff(a);
                return;
        }
        struct sockaddr_in src = {
                .sin_family = AF_INET,
                .sin_addr.s_addr = htonl(0x7f010001u + a->idx / PER_SOURCE),  /* 127.1.x.y */
        };
        int one = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (bind(fd, (struct sockaddr *) &src, sizeof src) < 0 ||
            (connect(fd, (struct sockaddr *) &server_sa, sizeof server_sa) < 0 &&
             errno != EINPROGRESS)) {
                (void) close(fd);
                conn_fail++;
                agent_backoff(a);
                return;
        }
        a->fd = fd;
        a->state = ST_CONNECTING;
        struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.ptr = a };
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                agent_close(a);
                conn_fail++;
                agent_backoff(a);
                return;
        }
        timer_at(a, mono_ms() + REQUEST_TIMEOUT_MS);
}

/* One whole response in buf; returns its length, 0 if incomplete, -1 bad. */
static ssize_t response(Agent *a, const char *buf, size_t len, bool *ret_ok, char *code,
                        size_t codelen) {
        static msgpack_zone *z;
        if (!z)
                z = msgpack_zone_new(4096);
        msgpack_object o;
        size_t off = 0;
        msgpack_zone_clear(z);
        msgpack_unpack_return ur = msgpack_unpack(buf, len, &off, z, &o);
        if (ur == MSGPACK_UNPACK_CONTINUE)
                return 0;
        if (ur < 0 || o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size != 4)
                return -1;
        const msgpack_object *e = &o.via.array.ptr[2];
        *ret_ok = e->type == MSGPACK_OBJECT_NIL;
        code[0] = '\0';
        if (e->type == MSGPACK_OBJECT_MAP)
                for (uint32_t i = 0; i < e->via.map.size; i++) {
                        msgpack_object_kv *kv = &e->via.map.ptr[i];
                        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 4 &&
                            memcmp(kv->key.via.str.ptr, "code", 4) == 0 &&
                            kv->val.type == MSGPACK_OBJECT_STR)
                                snprintf(code, codelen, "%.*s", (int) kv->val.via.str.size,
                                         kv->val.via.str.ptr);
                }
        return (ssize_t) off;
}

static void on_response(Agent *a, bool ok, const char *code) {
        uint64_t now = mono_ms();
        a->waiting = false;
        if (a->state == ST_RESUMING) {
                if (!ok) {
                        resume_fail++;
                        if (resume_fail <= 5)
                                fprintf(stderr, "agents-load: resume of agent %u: %s%s\n", a->idx,
                                        code, resume_fail == 5 ? " (no more of these)" : "");
                        agent_lost(a);
                        return;
                }
                resumes_ok++;
                a->state = ST_UP;
                a->attempt = 0;
                up_count++;
                if (up_count == opt.n && !all_up_at)
                        all_up_at = now;
                a->report_at = next_report_ms(a, now);
                timer_at(a, a->report_at);
                return;
        }
        if (!ok && strcmp(code, "shutting_down") == 0) {
                agent_lost(a);          /* vmmd is stopping: come back later */
                return;
        }
        if (measuring)
                lat_add(&rep_lat, (double) (mono_ns() - a->sent_ns) / 1e6);
        if (ok)
                reports_ok++;
        else if (strcmp(code, "rate_limited") == 0)
                reports_limited++;
        else {
                reports_err++;
                if (reports_err <= 5)
                        fprintf(stderr, "agents-load: %s: %s\n", opt.method, code);
        }
        /* one report per interval, in the agent's own slot */
        if (a->report_at <= now)
                a->report_at = next_report_ms(a, now);
        timer_at(a, a->report_at);
}

static void agent_readable(Agent *a) {
        char buf[4096];
        for (;;) {
                ssize_t n = recv(a->fd, buf, sizeof buf, MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return;
                if (n <= 0) {
                        agent_lost(a);
                        return;
                }
                const char *p = buf;
                size_t len = (size_t) n;
                if (a->rlen > 0) {
                        size_t take = MIN(len, (size_t) RBUF - a->rlen);
                        if (take < len) {
                                agent_lost(a);          /* no response is this long */
                                return;
                        }
                        memcpy(a->rbuf + a->rlen, buf, take);
                        a->rlen += (uint16_t) take;
                        p = a->rbuf;
                        len = a->rlen;
                }
                while (len > 0) {
                        bool ok;
                        char code[32];
                        ssize_t k = response(a, p, len, &ok, code, sizeof code);
                        if (k < 0) {
                                agent_lost(a);
                                return;
                        }
                        if (k == 0)
                                break;
                        on_response(a, ok, code);
                        if (a->state == ST_DOWN)
                                return;
                        p += k;
                        len -= (size_t) k;
                }
                if (len > 0) {
                        if (len > RBUF || (!a->rbuf && !(a->rbuf = malloc(RBUF)))) {
                                agent_lost(a);
                                return;
                        }
                        memmove(a->rbuf, p, len);
                        a->rlen = (uint16_t) len;
                } else {
                        a->rlen = 0;
                }
        }
}

static void on_timer(Agent *a, uint64_t now) {
        a->armed = false;
        switch (a->state) {
        case ST_DOWN:
                agent_connect(a);
                return;
        case ST_CONNECTING:
        case ST_RESUMING:
                timeouts++;
                agent_lost(a);
                return;
        case ST_UP:
                if (a->waiting) {
                        if (now - a->sent_ms >= REQUEST_TIMEOUT_MS) {
                                timeouts++;
                                agent_lost(a);
                        } else
                                timer_at(a, a->sent_ms + REQUEST_TIMEOUT_MS);
                        return;
                }
                a->report_at += (uint64_t) opt.interval_s * 1000u;
                agent_send_report(a);
                if (a->state == ST_UP)
                        timer_at(a, a->sent_ms + REQUEST_TIMEOUT_MS);
                return;
        }
}

static void run_wheel(uint64_t now) {
        uint64_t tick = now / TICK_MS;
        while (wheel.now_tick < tick) {
                wheel.now_tick++;
                uint64_t s = wheel.now_tick % WHEEL_SLOTS;
                Agent *a = wheel.slot[s];
                while (a) {
                        Agent *next = a->tnext;
                        if (a->due_ms / TICK_MS <= wheel.now_tick) {
                                timer_cancel(a);
                                on_timer(a, now);
                        }
                        a = next;
                }
        }
}

/* ---- the pinger and vmmd's figures ---- */

static int ping_fd = -1;
static uint64_t ping_sent_ns;
static bool ping_waiting;
static uint32_t ping_id;

static int ping_open(void) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -1;
        int one = 1;
        (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *) &server_sa, sizeof server_sa) < 0) {
                (void) close(fd);
                return -1;
        }
        (void) fcntl(fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
        (void) epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
        return fd;
}

static void ping_send(void) {
        msgpack_sbuffer sb;
        size_t off;
        pack_request(&sb, "ping", NULL, &off);
        patch_msgid(sb.data, off, ++ping_id);
        ping_sent_ns = mono_ns();
        ping_waiting = send(ping_fd, sb.data, sb.size, MSG_NOSIGNAL) == (ssize_t) sb.size;
        msgpack_sbuffer_destroy(&sb);
}

static void ping_readable(void) {
        char buf[1024];
        ssize_t n = recv(ping_fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) {
                if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
                        (void) epoll_ctl(epfd, EPOLL_CTL_DEL, ping_fd, NULL);
                        (void) close(ping_fd);
                        ping_fd = -1;
                        ping_waiting = false;
                }
                return;
        }
        if (ping_waiting && measuring)
                lat_add(&ping_lat, (double) (mono_ns() - ping_sent_ns) / 1e6);
        ping_waiting = false;
}

static bool proc_cpu(long pid, double *ret_s) {
        char path[64], text[2048];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        char *p = strrchr(text, ')');
        unsigned long long ut, st;
        /* after "pid (comm) ": state is field 3; utime 14, stime 15 */
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                         &st) != 2)
                return false;
        *ret_s = (double) (ut + st) / (double) sysconf(_SC_CLK_TCK);
        return true;
}

/* Anonymous memory (the heap: connections, buffers); the database map is
 * file-backed and shared, and comes and goes with the page cache. */
static long proc_rss_kib(long pid) {
        char path[64], line[256];
        long kib = -1;
        snprintf(path, sizeof path, "/proc/%ld/status", pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof line, f))
                if (sscanf(line, "RssAnon: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

/* The restart command runs beside the loop (the agents must see their
 * connections end while vmmd stops); it prints the new pid. */
static int restart_fd = -1;
static pid_t restart_child;
static char restart_out[64];
static size_t restart_len;
static bool restart_done;
static uint64_t restart_done_at;
static const int RESTART_MARK = 1;

static int restart_start(void) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return -errno;
        pid_t pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                (void) dup2(p[1], 1);
                execl("/bin/sh", "sh", "-c", opt.restart_cmd, (char *) NULL);
                _exit(127);
        }
        (void) close(p[1]);
        restart_fd = p[0];
        restart_child = pid;
        (void) fcntl(restart_fd, F_SETFL, O_NONBLOCK);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = (void *) &RESTART_MARK };
        return epoll_ctl(epfd, EPOLL_CTL_ADD, restart_fd, &ev) < 0 ? -errno : 0;
}

static void restart_readable(void) {
        ssize_t n = read(restart_fd, restart_out + restart_len,
                         sizeof restart_out - 1 - restart_len);
        if (n > 0) {
                restart_len += (size_t) n;
                restart_out[restart_len] = '\0';
                return;
        }
        if (n < 0 && errno == EAGAIN)
                return;
        (void) epoll_ctl(epfd, EPOLL_CTL_DEL, restart_fd, NULL);
        (void) close(restart_fd);
        restart_fd = -1;
        (void) waitpid(restart_child, NULL, 0);
        restart_done = true;
        restart_done_at = mono_ms();
}

/* Runs the loop until `until` (ms) or cond() holds. */
static void loop_until(uint64_t until, bool (*cond)(void)) {
        struct epoll_event evs[1024];
        uint64_t last_ping = 0;
        while (mono_ms() < until && !(cond && cond())) {
                int n = epoll_wait(epfd, evs, 1024, TICK_MS);
                for (int i = 0; i < n; i++) {
                        Agent *a = evs[i].data.ptr;
                        if (!a) {
                                ping_readable();
                                continue;
                        }
                        if (evs[i].data.ptr == (void *) &RESTART_MARK) {
                                restart_readable();
                                continue;
                        }
                        if (a->fd < 0)
                                continue;
                        if (a->state == ST_CONNECTING) {
                                int err = 0;
                                socklen_t len = sizeof err;
                                if (!(evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
                                        continue;
                                if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 ||
                                    err != 0) {
                                        conn_fail++;
                                        agent_lost(a);
                                        continue;
                                }
                                struct epoll_event ev = { .events = EPOLLIN, .data.ptr = a };
                                (void) epoll_ctl(epfd, EPOLL_CTL_MOD, a->fd, &ev);
                                agent_send_resume(a);
                                continue;
                        }
                        agent_readable(a);
                }
                uint64_t now = mono_ms();
                run_wheel(now);
                if (ping_fd < 0 && !restarting)
                        ping_fd = ping_open();
                if (ping_fd >= 0 && !ping_waiting && now - last_ping >= 10) {
                        last_ping = now;
                        ping_send();
                }
        }
}

static bool all_up(void) {
        return up_count == opt.n;
}

static unsigned some_up_n;

static bool some_up(void) {
        return up_count >= some_up_n;
}

static bool restart_finished(void) {
        return restart_done;
}

static void usage(void) {
        printf("Usage: agents-load sessions STATE_DIR COUNT TOKENS_FILE\n"
               "       agents-load run --tokens FILE [OPTIONS]\n\n"
               "Options of run:\n"
               "  --server HOST:PORT     vmmd (IPv4 loopback; default 127.0.0.1:7707)\n"
               "  -n N                   agents (default: every token of the file)\n"
               "  --interval SECONDS     between one agent's reports (default 10)\n"
               "  --seconds SECONDS      measured (default 30), after --warmup (default 5)\n"
               "  --method METHOD        vm.report (default) or vm.get\n"
               "  --server-pid PID       vmmd's pid, for its CPU and memory\n"
               "  --restart-cmd CMD      restart vmmd after the measurement (sh -c CMD; it\n"
               "                         prints the new pid) and time the agents' return\n"
               "  --json                 one JSON object\n");
}

static int load_tokens(void) {
        FILE *f = fopen(opt.tokens, "re");
        if (!f) {
                fprintf(stderr, "agents-load: %s: %s\n", opt.tokens, strerror(errno));
                return -1;
        }
        size_t cap = 0, n = 0;
        char line[256];
        while (fgets(line, sizeof line, f)) {
                char vm[64], tok[64];
                if (sscanf(line, "%63s %63s", vm, tok) != 2 || strlen(tok) != VMM_TOKEN_LEN)
                        continue;
                if (n == cap) {
                        cap = cap ? cap * 2 : 1024;
                        void *p = realloc(tokens, cap * sizeof(*tokens));
                        if (!p) {
                                fclose(f);
                                return -1;
                        }
                        tokens = p;
                }
                memcpy(tokens[n++], tok, VMM_TOKEN_LEN + 1);
        }
        fclose(f);
        if (opt.n == 0 || opt.n > n)
                opt.n = (unsigned) n;
        return opt.n > 0 ? 0 : -1;
}

static int cmd_run(int argc, char **argv) {
        static const struct option options[] = {
                { "server",      required_argument, NULL, 's' },
                { "tokens",      required_argument, NULL, 't' },
                { "interval",    required_argument, NULL, 'i' },
                { "seconds",     required_argument, NULL, 'S' },
                { "warmup",      required_argument, NULL, 'w' },
                { "method",      required_argument, NULL, 'm' },
                { "server-pid",  required_argument, NULL, 'p' },
                { "restart-cmd", required_argument, NULL, 'r' },
                { "json",        no_argument,       NULL, 'j' },
                { "help",        no_argument,       NULL, 'h' },
                { 0 }
        };
        int c;
        while ((c = getopt_long(argc, argv, "n:h", options, NULL)) >= 0) {
                switch (c) {
                case 's': opt.server = optarg; break;
                case 't': opt.tokens = optarg; break;
                case 'n': opt.n = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'i': opt.interval_s = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'S': opt.seconds = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'w': opt.warmup = (unsigned) strtoul(optarg, NULL, 10); break;
                case 'm': opt.method = optarg; break;
                case 'p': opt.pid = strtol(optarg, NULL, 10); break;
                case 'r': opt.restart_cmd = optarg; break;
                case 'j': opt.json = true; break;
                case 'h': usage(); return 0;
                default: return 2;
                }
        }
        if (!opt.tokens || opt.interval_s == 0 || opt.interval_s > 40 || opt.seconds == 0 ||
            opt.seconds > 3600 ||
            (strcmp(opt.method, "vm.report") && strcmp(opt.method, "vm.get"))) {
                usage();
                return 2;
        }
        char host[64];
        unsigned port;
        if (sscanf(opt.server, "%63[^:]:%u", host, &port) != 2 ||
            inet_pton(AF_INET, host, &server_sa.sin_addr) != 1 ||
            (ntohl(server_sa.sin_addr.s_addr) >> 24) != 127 || port == 0 || port > 65535) {
                fprintf(stderr, "agents-load: --server must be 127.x.x.x:PORT\n");
                return 2;
        }
        server_sa.sin_family = AF_INET;
        server_sa.sin_port = htons((uint16_t) port);
        if (load_tokens() < 0 || opt.n > AGENTS_MAX)
                return 1;
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_max != RLIM_INFINITY &&
            rl.rlim_max < opt.n + 64)
                rl.rlim_max = opt.n + 64;       /* may fail: then say so */
        rl.rlim_cur = opt.n + 64;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                fprintf(stderr, "agents-load: cannot raise the descriptor limit to %u: %s\n",
                        opt.n + 64, strerror(errno));
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        epfd = epoll_create1(EPOLL_CLOEXEC);
        agents = calloc(opt.n, sizeof(Agent));
        if (epfd < 0 || !agents)
                return 1;
        pack_request(&report_req, opt.method, NULL, &report_msgid_off);
        wheel.now_tick = mono_ms() / TICK_MS;
        long rss0 = -1;

        /* the ping's latency with no agent, for comparison */
        measuring = true;
        loop_until(mono_ms() + 2000, NULL);
        measuring = false;
        double base_p50 = lat_pct(&ping_lat, 50), base_p99 = lat_pct(&ping_lat, 99);
        ping_lat.n = 0;

        /* connect the first half, a ramp of opt.ramp_per_tick per 10 ms */
        uint64_t t0 = mono_ms();
        some_up_n = MAX(opt.n / 2, 1u);
        for (unsigned i = 0; i < opt.n; i++)
                agents[i] = (Agent) { .fd = -1, .idx = i };
        for (unsigned i = 0; i < some_up_n; i++)
                timer_at(&agents[i], t0 + (i / opt.ramp_per_tick) * TICK_MS);
        /* vmmd's heap is measured with half of the agents and with all of
         * them: the difference over the other half is the cost of one agent (the
         * heap at start still holds the 64 MiB of a password hash for a while,
         * so "before any agent" is no baseline) */
        loop_until(t0 + 120000, some_up);
        uint64_t half_ms = mono_ms() - t0;
        if (opt.pid) {
                loop_until(mono_ms() + 2000, NULL);
                rss0 = proc_rss_kib(opt.pid);
        }
        uint64_t t1 = mono_ms();
        all_up_at = 0;
        for (unsigned i = some_up_n; i < opt.n; i++)
                timer_at(&agents[i], t1 + ((i - some_up_n) / opt.ramp_per_tick) * TICK_MS);
        loop_until(t0 + 120000, all_up);
        double connect_s = (double) (half_ms + (all_up_at ? all_up_at : mono_ms()) - t1) / 1000.0;
        if (!all_up()) {
                fprintf(stderr, "agents-load: only %" PRIu64 " of %u agents up after 120 s\n",
                        up_count, opt.n);
                return 1;
        }
        loop_until(mono_ms() + opt.warmup * 1000u, NULL);

        double cpu0 = 0, cpu1 = 0;
        bool have_cpu = opt.pid && proc_cpu(opt.pid, &cpu0);
        uint64_t rep0 = reports_ok + reports_limited + reports_err;
        double m0 = mono_s();
        measuring = true;
        loop_until(mono_ms() + opt.seconds * 1000u, NULL);
        measuring = false;
        double wall = mono_s() - m0;
        have_cpu = have_cpu && proc_cpu(opt.pid, &cpu1);
        long rss1 = opt.pid ? proc_rss_kib(opt.pid) : -1;
        uint64_t reports = reports_ok + reports_limited + reports_err - rep0;
        double ping_p50 = lat_pct(&ping_lat, 50), ping_p99 = lat_pct(&ping_lat, 99),
               ping_max = lat_pct(&ping_lat, 100);
        double rep_p50 = lat_pct(&rep_lat, 50), rep_p99 = lat_pct(&rep_lat, 99);

        double back_s = NAN;
        uint64_t resumes_before = resumes_ok, disc_before = disconnects;
        long pid2 = 0;
        if (opt.restart_cmd) {
                restarting = true;
                if (ping_fd >= 0) {
                        (void) epoll_ctl(epfd, EPOLL_CTL_DEL, ping_fd, NULL);
                        (void) close(ping_fd);
                        ping_fd = -1;
                        ping_waiting = false;
                }
                all_up_at = 0;
                restart_at = mono_ms();
                if (restart_start() < 0) {
                        fprintf(stderr, "agents-load: cannot run the restart command\n");
                        return 1;
                }
                /* every agent sees its connection end, backs off, comes back */
                loop_until(mono_ms() + 1000, NULL);
                loop_until(mono_ms() + 300000, all_up);
                loop_until(mono_ms() + 30000, restart_finished);
                pid2 = strtol(restart_out, NULL, 10);
                back_s = all_up_at ? (double) (all_up_at - restart_at) / 1000.0 : NAN;
                restarting = false;
        }
        long rss2 = pid2 ? proc_rss_kib(pid2) : -1;

        double cpu_pct = have_cpu ? (cpu1 - cpu0) / wall * 100.0 : NAN;
        double bytes_per_agent = rss0 > 0 && rss1 > 0 && opt.n > some_up_n
                ? (double) (rss1 - rss0) * 1024.0 / (double) (opt.n - some_up_n) : NAN;
        if (opt.json) {
                printf("{\"agents\":%u,\"interval_s\":%u,\"method\":\"%s\","
                       "\"connect_resume_s\":%.3f,"
                       "\"seconds\":%.1f,\"reports\":%" PRIu64 ",\"reports_per_s\":%.1f,"
                       "\"report_errors\":%" PRIu64 ",\"report_rate_limited\":%" PRIu64 ","
                       "\"report_p50_ms\":%.3f,\"report_p99_ms\":%.3f,"
                       "\"ping_p50_ms\":%.3f,\"ping_p99_ms\":%.3f,\"ping_max_ms\":%.3f,"
                       "\"ping_idle_p50_ms\":%.3f,\"ping_idle_p99_ms\":%.3f,"
                       "\"vmmd_cpu_pct\":%.2f,\"vmmd_anon_kib_before\":%ld,\"vmmd_anon_kib\":%ld,"
                       "\"bytes_per_agent\":%.0f,\"restart_all_resumed_s\":%.3f,"
                       "\"resumes_after_restart\":%" PRIu64 ",\"vmmd_anon_kib_after_restart\":%ld,"
                       "\"resume_failures\":%" PRIu64 ",\"timeouts\":%" PRIu64 "}\n",
                       opt.n, opt.interval_s, opt.method, connect_s, wall, reports,
                       (double) reports / wall, reports_err, reports_limited, rep_p50, rep_p99,
                       ping_p50, ping_p99, ping_max, base_p50, base_p99, cpu_pct, rss0, rss1,
                       bytes_per_agent,
                       back_s, resumes_ok - resumes_before, rss2, resume_fail, timeouts);
        } else {
                printf("agents: %u, each resuming once, then %s every %u s\n", opt.n, opt.method,
                       opt.interval_s);
                printf("connect + resume, all: %.2f s\n", connect_s);
                printf("measured %.1f s: %" PRIu64 " reports (%.0f/s), %" PRIu64 " errors, %" PRIu64
                       " rate_limited; latency p50 %.2f ms, p99 %.2f ms\n", wall, reports,
                       (double) reports / wall, reports_err, reports_limited, rep_p50, rep_p99);
                printf("ping (every 10 ms on another connection): p50 %.3f ms, p99 %.3f ms, "
                       "max %.3f ms (%zu pings); with no agent: p50 %.3f ms, p99 %.3f ms\n",
                       ping_p50, ping_p99, ping_max, ping_lat.n, base_p50, base_p99);
                if (have_cpu)
                        printf("vmmd CPU: %.1f%% of one core\n", cpu_pct);
                if (rss0 > 0 && rss1 > 0)
                        printf("vmmd heap (RssAnon): %ld KiB with %u agents, %ld KiB with %u: "
                               "%.0f bytes per connected agent\n", rss0, some_up_n, rss1, opt.n,
                               bytes_per_agent);
                if (opt.restart_cmd)
                        printf("after the restart of vmmd: all %u agents resumed in %.2f s "
                               "(%" PRIu64 " resumes, %" PRIu64 " disconnects or refused "
                               "connects; the restart command took %.2f s)\n",
                               opt.n, back_s, resumes_ok - resumes_before,
                               disconnects - disc_before,
                               (double) (restart_done_at - restart_at) / 1000.0);
                if (resume_fail || timeouts)
                        printf("resume failures: %" PRIu64 ", timeouts: %" PRIu64 "\n",
                               resume_fail, timeouts);
        }
        return resume_fail == 0 && reports_err == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
        if (argc >= 2 && strcmp(argv[1], "sessions") == 0)
                return cmd_sessions(argc - 1, argv + 1);
        if (argc >= 2 && strcmp(argv[1], "run") == 0)
                return cmd_run(argc - 1, argv + 1);
        usage();
        return argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) ? 0 : 2;
}
