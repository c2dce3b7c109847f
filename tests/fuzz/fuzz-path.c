/* SPDX-License-Identifier: MIT */
/* fuzz-client-path / fuzz-admin-path: the whole request path of one socket,
 * in-process. A Manager is started (embedded: a real LMDB in a private
 * temporary directory that does not sync, the worker threads, no listeners);
 * per input a connection is made from one end of a socketpair, the input is
 * written to the other end followed by EOF, and the event loop runs until the
 * connection is closed and no job is pending.
 *
 * Speed (the CI smoke wants thousands of inputs a second): under libFuzzer
 * one Manager serves FUZZ_INPUTS_PER_DAEMON inputs (default 1000) before it is
 * stopped and its state directory emptied, or sooner when an input stops it
 * (`shutdown`); the fuzz build hashes passwords at libsodium's minimum cost
 * (VMMD_FUZZ_CHEAP_HASH). FUZZ_INPUTS_PER_DAEMON=1 gives every input a fresh
 * daemon, as the replay driver (replay.c) always does: use it to reproduce a
 * crash that needs no earlier input. Every byte the daemon sends back must be a
 * sequence of whole, well-formed MessagePack-RPC responses or notifications,
 * and none may be an `internal` error.
 *
 * Built with -DFUZZ_ADMIN for the admin socket. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "daemon/config.h"
#include "daemon/conn.h"
#include "daemon/events.h"
#include "daemon/listen.h"
#include "daemon/log.h"
#include "daemon/manager.h"
#include "fuzz.h"
#include "shared/secret.h"

#ifdef FUZZ_ADMIN
#define FUZZ_KIND SOCKET_ADMIN
#else
#define FUZZ_KIND SOCKET_TCP
#endif

#define OUT_KEEP_MAX (64u * 1024u * 1024u)  /* responses kept for checking */
#define RUN_SECONDS_MAX 300                  /* one input; then it is a hang */

static char state_dir[256];

static void state_clean(void) {
        DIR *d = opendir(state_dir);
        if (!d)
                return;
        for (struct dirent *de; (de = readdir(d));) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                (void) unlinkat(dirfd(d), de->d_name, 0);
        }
        closedir(d);
}

static void state_remove(void) {
        state_clean();
        (void) rmdir(state_dir);
}

static void daemon_drop(void);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        /* tmpfs if there is one: LMDB's fsync per commit is free there */
        const char *tmp = getenv("FUZZ_STATE_PARENT");
        if (!tmp || !*tmp)
                tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
        if (!tmp || !*tmp)
                tmp = "/tmp";

        FUZZ_CHECK(secret_init() >= 0, "libsodium");
        snprintf(state_dir, sizeof state_dir, "%s/vmmd-fuzz-XXXXXX", tmp);
        FUZZ_CHECK(mkdtemp(state_dir), "mkdtemp %s: %s", state_dir, strerror(errno));
        atexit(state_remove);
        atexit(daemon_drop);
        /* the daemon blocks these before its threads start; so do we */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &ss, NULL);
        return 0;
}

/* The command line of every Manager made here. It lives as long as they do:
 * `reload` reads it again, as the real daemon reads its own argv. */
static char *manager_args[] = {
        (char *) "vmmd-fuzz",
        (char *) "--config", (char *) "/dev/null",
        (char *) "--state-dir", state_dir,
        (char *) "--hash-workers", (char *) "1",
        (char *) "--log-level", (char *) "crit",
        (char *) "--auth-failures-per-minute", (char *) "1000000",
        (char *) "--registrations-per-minute", (char *) "1000000",
        NULL,
};

static Manager *manager_make(void) {
        const char *level = getenv("FUZZ_LOG_LEVEL");
        int argc = (int) (sizeof manager_args / sizeof manager_args[0]) - 1;
        for (int i = 1; i + 1 < argc; i++)
                if (level && *level && strcmp(manager_args[i], "--log-level") == 0)
                        manager_args[i + 1] = (char *) level;
        Config cfg;
        Manager *m = NULL;

        FUZZ_CHECK(config_load(argc, manager_args, &cfg, NULL) == 0, "config");
        log_set_level(cfg.log_level);
        FUZZ_CHECK(manager_new(&m, &cfg) >= 0, "manager_new");
        m->argc = argc;
        m->argv = manager_args;
        /* commits need not be durable here: what is fuzzed is the path */
        int r = manager_start_embedded(m, true);
        FUZZ_CHECK(r >= 0, "manager_start_embedded: %s", strerror(-r));
        return m;
}

typedef struct Out {
        uint8_t *buf;
        size_t len, cap;
        bool overflow;
        bool eof;
} Out;

static void out_drain(Out *o, int fd) {
        uint8_t tmp[65536];

        for (;;) {
                ssize_t n = recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
                if (n == 0) {
                        o->eof = true;
                        return;
                }
                if (n < 0) {
                        FUZZ_CHECK(errno == EAGAIN || errno == EINTR || errno == ECONNRESET,
                                   "recv: %s", strerror(errno));
                        if (errno == ECONNRESET)
                                o->eof = true;
                        return;
                }
                if (o->overflow || o->len + (size_t) n > OUT_KEEP_MAX) {
                        o->overflow = true;
                        continue;
                }
                if (o->cap - o->len < (size_t) n) {
                        size_t cap = o->cap ? o->cap : 65536;
                        while (cap - o->len < (size_t) n)
                                cap *= 2;
                        uint8_t *p = realloc(o->buf, cap);
                        FUZZ_CHECK(p, "out of memory");
                        o->buf = p;
                        o->cap = cap;
                }
                memcpy(o->buf + o->len, tmp, (size_t) n);
                o->len += (size_t) n;
        }
}

static bool str_is(const msgpack_object *o, const char *s) {
        return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
               memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key) {
        for (uint32_t i = 0; i < m->via.map.size; i++)
                if (str_is(&m->via.map.ptr[i].key, key))
                        return &m->via.map.ptr[i].val;
        return NULL;
}

static void check_message(const msgpack_object *o) {
        FUZZ_CHECK(o->type == MSGPACK_OBJECT_ARRAY, "reply is not an array (type %d)",
                   (int) o->type);
        const msgpack_object *a = o->via.array.ptr;
        uint32_t n = o->via.array.size;
        FUZZ_CHECK(n >= 3 && a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER, "bad envelope");
        if (a[0].via.u64 == 2) {
                FUZZ_CHECK(n == 3 && a[1].type == MSGPACK_OBJECT_STR &&
                           a[2].type == MSGPACK_OBJECT_ARRAY, "bad notification");
                return;
        }
        FUZZ_CHECK(a[0].via.u64 == 1 && n == 4, "bad response envelope");
        FUZZ_CHECK(a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 <= UINT32_MAX,
                   "bad msgid");
        if (a[2].type == MSGPACK_OBJECT_NIL) {
                FUZZ_CHECK(a[3].type != MSGPACK_OBJECT_NIL, "a result of nil");
                return;
        }
        FUZZ_CHECK(a[2].type == MSGPACK_OBJECT_MAP && a[2].via.map.size == 2, "bad error");
        FUZZ_CHECK(a[3].type == MSGPACK_OBJECT_NIL, "error with a result");
        const msgpack_object *code = map_get(&a[2], "code");
        const msgpack_object *msg = map_get(&a[2], "message");
        FUZZ_CHECK(code && code->type == MSGPACK_OBJECT_STR && msg &&
                   msg->type == MSGPACK_OBJECT_STR && msg->via.str.size > 0,
                   "error without code or message");
        FUZZ_CHECK(vmm_error_from_string(code->via.str.ptr, code->via.str.size) !=
                   _VMM_E_INVALID, "unknown error code '%.*s'", (int) code->via.str.size,
                   code->via.str.ptr);
        FUZZ_CHECK(!str_is(code, "internal"), "internal error: %.*s",
                   (int) msg->via.str.size, msg->via.str.ptr);
}

static void out_check(const Out *o) {
        size_t off = 0;

        if (o->overflow)
                return;
        while (off < o->len) {
                msgpack_unpacked u;
                msgpack_unpacked_init(&u);
                size_t before = off;
                msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *) o->buf, o->len,
                                                              &off);
                FUZZ_CHECK(r == MSGPACK_UNPACK_SUCCESS, "reply stream broken at byte %zu (%d)",
                           before, (int) r);
                if (getenv("FUZZ_VERBOSE")) {
                        msgpack_object_print(stderr, u.data);
                        fputc('\n', stderr);
                }
                check_message(&u.data);
                msgpack_unpacked_destroy(&u);
        }
}

static uint64_t mono_s(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec;
}

/* The daemon kept between inputs, and how many inputs it has served. */
static Manager *daemon_kept;
static unsigned daemon_inputs;

static unsigned inputs_per_daemon(void) {
#ifdef VMMD_FUZZ_CHEAP_HASH
        const char *e = getenv("FUZZ_INPUTS_PER_DAEMON");
        long n = e && *e ? strtol(e, NULL, 10) : 1000;
        return n >= 1 ? (unsigned) n : 1;
#else
        return 1;       /* the replay driver: a fresh daemon per input */
#endif
}

static void daemon_drop(void) {
        if (!daemon_kept)
                return;
        manager_free(daemon_kept);
        daemon_kept = NULL;
        daemon_inputs = 0;
        state_clean();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (!daemon_kept)
                daemon_kept = manager_make();
        Manager *m = daemon_kept;
        Client *c = NULL;
        Out out = { 0 };
        int sv[2];
        union {
                struct sockaddr sa;
                struct sockaddr_in in;
                struct sockaddr_un un;
        } peer = { 0 };
        socklen_t peer_len;

        FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
                   "socketpair: %s", strerror(errno));
        if (FUZZ_KIND == SOCKET_TCP) {
                peer.in.sin_family = AF_INET;
                peer.in.sin_port = htons(40000);
                peer.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                peer_len = sizeof peer.in;
        } else {
                peer.un.sun_family = AF_UNIX;
                peer_len = sizeof(sa_family_t);
        }
        /* as listen.c does for an allowed peer */
        char login[64];
        snprintf(login, sizeof login, "uid%u", (unsigned) getuid());
        int r = client_new(m, sv[0], FUZZ_KIND, FUZZ_KIND == SOCKET_TCP ? &peer.sa : NULL,
                           peer_len, getuid(), getpid(), STORE_ROLE_ADMIN, login, &c);
        FUZZ_CHECK(r >= 0, "client_new: %s", strerror(-r));
        if (FUZZ_KIND == SOCKET_TCP) {
                c->announced = true;
                events_emit(m->events, &(Event) { .type = "conn.opened", .has_conn = true,
                                                  .conn = c->id, .peer = c->peer_str });
        }
        c = NULL;   /* the loop may free it */

        size_t sent = 0;
        bool shut = false;
        uint64_t start = mono_s();
        for (;;) {
                while (sent < size) {
                        ssize_t n = send(sv[1], data + sent, size - sent,
                                         MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (n < 0) {
                                FUZZ_CHECK(errno == EAGAIN || errno == EINTR || errno == EPIPE ||
                                           errno == ECONNRESET, "send: %s", strerror(errno));
                                if (errno == EPIPE || errno == ECONNRESET)
                                        sent = size;   /* the daemon closed early */
                                break;
                        }
                        sent += (size_t) n;
                }
                if (sent == size && !shut) {
                        (void) shutdown(sv[1], SHUT_WR);
                        shut = true;
                }
                out_drain(&out, sv[1]);
                if (conn_hub_count(m->hub) == 0 && jobs_pending(m->jobs) == 0)
                        break;
                if (sd_event_get_state(m->event) == SD_EVENT_FINISHED)
                        break;
                FUZZ_CHECK(mono_s() - start < RUN_SECONDS_MAX,
                           "the request path did not finish in %d s", RUN_SECONDS_MAX);
                r = sd_event_run(m->event, 200 * 1000);
                if (r == -ESTALE)
                        break;
                FUZZ_CHECK(r >= 0, "sd_event_run: %s", strerror(-r));
        }

        /* a stopped daemon, or one that served its share, is replaced */
        if (sd_event_get_state(m->event) == SD_EVENT_FINISHED || m->shutting_down ||
            ++daemon_inputs >= inputs_per_daemon())
                daemon_drop();
        /* the daemon's end is closed: read everything to EOF */
        for (int i = 0; i < 1000 && !out.eof; i++)
                out_drain(&out, sv[1]);
        out_check(&out);
        free(out.buf);
        close(sv[1]);
        return 0;
}
