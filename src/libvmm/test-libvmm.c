/* SPDX-License-Identifier: MIT */
/* libvmm checks against the scripted fake server of test_libvmm.py:
 *     test-libvmm SCENARIO ADDRESS
 * Each scenario asserts what the client sees; the Python side asserts what
 * the server received. Exit 0 only when every check passed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tools/common/json.h"
#include "vmm/client.h"

static int failures = 0;

#define CHECK(cond) do {                                                        \
                if (!(cond)) {                                                  \
                        fprintf(stderr, "%s:%d: check failed: %s\n",            \
                                __FILE__, __LINE__, #cond);                     \
                        failures++;                                             \
                }                                                               \
        } while (0)

#define CHECK_EQ_INT(a, b) do {                                                 \
                long long _a = (long long) (a), _b = (long long) (b);           \
                if (_a != _b) {                                                 \
                        fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", \
                                __FILE__, __LINE__, #a, _a, #b, _b);            \
                        failures++;                                             \
                }                                                               \
        } while (0)

#define CHECK_STR(a, b) do {                                                    \
                const char *_a = (a), *_b = (b);                                \
                if (!_a || !_b || strcmp(_a, _b) != 0) {                        \
                        fprintf(stderr, "%s:%d: %s == \"%s\", expected \"%s\"\n", \
                                __FILE__, __LINE__, #a, _a ? _a : "(null)",     \
                                _b ? _b : "(null)");                            \
                        failures++;                                             \
                }                                                               \
        } while (0)

static VmmClient *connect_or_die(const char *addr, int timeout_ms) {
        VmmClient *c;
        if (vmm_client_new(&c) < 0)
                abort();
        vmm_client_set_timeout(c, timeout_ms);
        int r = vmm_client_connect(c, addr);
        if (r < 0) {
                fprintf(stderr, "connect %s: %s\n", addr, strerror(-r));
                exit(2);
        }
        return c;
}

static bool str_is(const msgpack_object *o, const char *s) {
        return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
               memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static int64_t now_ms(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ping (response trickled byte by byte), 200 pipelined requests answered with
 * a notification first and two errors among them, JSON of an echoed map, a
 * too-large request, then a response declaring 2^30 elements. */
static void scenario_basic(const char *addr) {
        VmmClient *c = connect_or_die(addr, 10000);
        VmmMessage m;
        uint64_t u;

        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), 0);
        CHECK_EQ_INT(m.type, VMM_MESSAGE_RESPONSE);
        CHECK_EQ_INT(m.msgid, 1);
        CHECK_EQ_INT(m.error, VMM_OK);
        CHECK(m.error_code == NULL);
        const msgpack_object *pong = vmm_object_get(&m.result, "pong");
        CHECK(pong && pong->type == MSGPACK_OBJECT_BOOLEAN && pong->via.boolean);
        CHECK(vmm_object_uint(vmm_object_get(&m.result, "protocol"), &u) && u == 1);
        CHECK(str_is(vmm_object_get(&m.result, "version"), "fake"));
        CHECK(vmm_object_get(&m.result, "nope") == NULL);
        vmm_message_release(&m);

        /* pipelining */
        uint32_t first = 0;
        for (uint64_t i = 0; i < 200; i++) {
                msgpack_packer *pk;
                uint32_t id;
                CHECK_EQ_INT(vmm_client_begin_map(c, "vm.get", 1, &pk, &id), 0);
                CHECK_EQ_INT(vmm_pack_kv_uint(pk, "n", i), 0);
                CHECK_EQ_INT(vmm_client_end(c), 0);
                if (i == 0)
                        first = id;
                CHECK_EQ_INT(id, first + i);
        }
        CHECK(vmm_client_pending(c) > 0);
        CHECK_EQ_INT(vmm_client_flush(c), 0);
        CHECK_EQ_INT(vmm_client_pending(c), 0);
        unsigned notifications = 0, responses = 0;
        while (responses < 200) {
                CHECK_EQ_INT(vmm_client_read(c, &m), 0);
                if (m.type == VMM_MESSAGE_NOTIFICATION) {
                        notifications++;
                        CHECK_STR(m.method, "event");
                        CHECK(m.result.type == MSGPACK_OBJECT_ARRAY &&
                              m.result.via.array.size == 1);
                        vmm_message_release(&m);
                        continue;
                }
                CHECK_EQ_INT(m.msgid, first + responses);
                if (responses == 100) {
                        CHECK_EQ_INT(m.error, VMM_E_NOT_FOUND);
                        CHECK_STR(m.error_code, "not_found");
                        CHECK_STR(m.error_message, "no such vm");
                        CHECK(m.result.type == MSGPACK_OBJECT_NIL);
                } else if (responses == 101) {
                        CHECK_EQ_INT(m.error, _VMM_E_INVALID);
                        CHECK_STR(m.error_code, "weird_code");
                } else {
                        CHECK_EQ_INT(m.error, VMM_OK);
                        CHECK(vmm_object_uint(vmm_object_get(&m.result, "n"), &u) &&
                              u == responses);
                }
                responses++;
                vmm_message_release(&m);
        }
        CHECK_EQ_INT(notifications, 1);

        /* a request over the limit is refused locally and not sent */
        vmm_client_set_max_request(c, 1000);
        msgpack_packer *pk;
        static char big[2000];
        memset(big, 'x', sizeof(big) - 1);
        CHECK_EQ_INT(vmm_client_begin_map(c, "echo", 1, &pk, NULL), 0);
        CHECK_EQ_INT(vmm_pack_kv_str(pk, "big", big), 0);
        CHECK_EQ_INT(vmm_client_end(c), -EMSGSIZE);
        CHECK_EQ_INT(vmm_client_pending(c), 0);
        vmm_client_set_max_request(c, VMM_MAX_MSG_TCP);

        /* echo: the server returns params[0] as the result; printed as JSON */
        CHECK_EQ_INT(vmm_client_begin_map(c, "echo", 5, &pk, NULL), 0);
        CHECK_EQ_INT(vmm_pack_kv_str(pk, "s",
                                     "quote\" back\\slash\nnl\ttab\x01 \xc3\xa9 \xe2\x82\xac"), 0);
        CHECK_EQ_INT(vmm_pack_str(pk, "bad"), 0);
        CHECK_EQ_INT(vmm_pack_strn(pk, "a\xff" "b\xc3", 4), 0);
        CHECK_EQ_INT(vmm_pack_kv_uint(pk, "big", UINT64_MAX), 0);
        CHECK_EQ_INT(vmm_pack_kv_bool(pk, "t", true), 0);
        CHECK_EQ_INT(vmm_pack_str(pk, "list"), 0);
        CHECK_EQ_INT(msgpack_pack_array(pk, 4), 0);
        CHECK_EQ_INT(msgpack_pack_int64(pk, -42), 0);
        CHECK_EQ_INT(msgpack_pack_nil(pk), 0);
        CHECK_EQ_INT(msgpack_pack_double(pk, 1.5), 0);
        CHECK_EQ_INT(msgpack_pack_map(pk, 0), 0);
        CHECK_EQ_INT(vmm_call_end(c, &m), 0);
        CHECK_EQ_INT(m.error, VMM_OK);
        CHECK_EQ_INT(json_print(stdout, &m.result, 0), 0);
        putchar('\n');
        CHECK_EQ_INT(json_print(stdout, &m.result, JSON_PRETTY), 0);
        putchar('\n');
        fflush(stdout);
        vmm_message_release(&m);

        /* a response that declares 2^30 elements: refused before allocating */
        CHECK_EQ_INT(vmm_call(c, "huge", NULL, &m), -EMSGSIZE);
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), -EMSGSIZE);   /* sticky */
        vmm_client_free(c);
}

static void scenario_garbage(const char *addr) {
        VmmClient *c = connect_or_die(addr, 10000);
        VmmMessage m;
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), -EBADMSG);
        vmm_client_free(c);
}

static void scenario_notarray(const char *addr) {
        VmmClient *c = connect_or_die(addr, 10000);
        VmmMessage m;
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), -EPROTO);
        vmm_client_free(c);
}

static void scenario_eof(const char *addr) {
        VmmClient *c = connect_or_die(addr, 10000);
        VmmMessage m;
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), -ECONNRESET);
        vmm_client_free(c);
}

/* The server answers a framing error (msgid 0) and closes: vmm_call_end
 * returns that error. */
static void scenario_msgid0(const char *addr) {
        VmmClient *c = connect_or_die(addr, 10000);
        VmmMessage m;
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), 0);
        CHECK_EQ_INT(m.msgid, 0);
        CHECK_EQ_INT(m.error, VMM_E_TOO_LARGE);
        vmm_message_release(&m);
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), -ECONNRESET);
        vmm_client_free(c);
}

static void scenario_timeout(const char *addr) {
        VmmClient *c = connect_or_die(addr, 300);
        VmmMessage m;
        int64_t t0 = now_ms();
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), -ETIMEDOUT);
        int64_t dt = now_ms() - t0;
        CHECK(dt >= 250 && dt < 5000);
        vmm_client_free(c);
}

/* 3000 requests of ~2 KiB each answered with ~2 KiB each: the server writes
 * replies as it reads, so a client that did not read while flushing would
 * deadlock once both directions' buffers are full. */
static void scenario_pipeline(const char *addr) {
        VmmClient *c = connect_or_die(addr, 20000);
        static char pad[2000];
        int small = 16 * 1024;
        /* small buffers, so that 6 MB each way cannot hide in them */
        CHECK(setsockopt(vmm_client_fd(c), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0);
        CHECK(setsockopt(vmm_client_fd(c), SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) == 0);
        memset(pad, 'p', sizeof(pad) - 1);
        for (unsigned i = 0; i < 3000; i++) {
                msgpack_packer *pk;
                CHECK_EQ_INT(vmm_client_begin_map(c, "echo", 1, &pk, NULL), 0);
                CHECK_EQ_INT(vmm_pack_kv_str(pk, "pad", pad), 0);
                CHECK_EQ_INT(vmm_client_end(c), 0);
        }
        CHECK_EQ_INT(vmm_client_flush(c), 0);
        for (unsigned i = 0; i < 3000; i++) {
                VmmMessage m;
                int r = vmm_client_read(c, &m);
                CHECK_EQ_INT(r, 0);
                if (r < 0)
                        break;
                CHECK_EQ_INT(m.msgid, i + 1);
                CHECK(str_is(vmm_object_get(&m.result, "pad"), pad));
                vmm_message_release(&m);
        }
        vmm_client_free(c);
}

/* Unix socket: a plain request, then "backup" with a descriptor attached. */
static void scenario_fd(const char *addr) {
        VmmClient *c = connect_or_die(addr, 10000);
        char path[] = "/tmp/test-libvmm-XXXXXX";
        int fd = mkostemp(path, O_CLOEXEC);
        CHECK(fd >= 0);
        (void) unlink(path);

        CHECK_EQ_INT(vmm_client_queue(c, "status", NULL), 0);
        CHECK_EQ_INT(vmm_client_attach_fd(c, fd), -EINVAL);   /* no open request */
        CHECK_EQ_INT(vmm_client_begin(c, "backup", 0, NULL, NULL), 0);
        CHECK_EQ_INT(vmm_client_attach_fd(c, fd), 0);
        CHECK_EQ_INT(vmm_client_attach_fd(c, fd), -EBUSY);
        VmmMessage m;
        CHECK_EQ_INT(vmm_call_end(c, &m), 0);
        CHECK_EQ_INT(m.msgid, 2);
        CHECK_EQ_INT(m.error, VMM_OK);
        uint64_t n = 0;
        CHECK(vmm_object_uint(vmm_object_get(&m.result, "bytes"), &n) && n == 12);
        vmm_message_release(&m);

        char buf[64] = { 0 };
        ssize_t k = pread(fd, buf, sizeof(buf) - 1, 0);
        CHECK_EQ_INT(k, 12);
        CHECK_STR(buf, "backup-bytes");
        close(fd);
        vmm_client_free(c);
}

static void scenario_ping(const char *addr) {
        VmmClient *c = connect_or_die(addr, 10000);
        VmmMessage m;
        CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), 0);
        CHECK_EQ_INT(m.error, VMM_OK);
        CHECK(vmm_object_get(&m.result, "pong") != NULL);
        vmm_message_release(&m);
        vmm_client_free(c);
}

/* Part 2's calls and helpers: the server checks each request's exact
 * params and answers with values for the inspecting helpers. */
static void scenario_part2(const char *addr) {
        static const char token[] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        VmmClient *c = connect_or_die(addr, 10000);
        VmmMessage m;
        int64_t i;
        double d;
        bool b;

        CHECK_EQ_INT(vmm_whoami(c, NULL, &m), 0);
        CHECK(vmm_object_streq(vmm_object_get(&m.result, "kind"), "user"));
        CHECK(!vmm_object_streq(vmm_object_get(&m.result, "kind"), "use"));
        CHECK(!vmm_object_streq(vmm_object_get(&m.result, "nope"), "user"));
        CHECK(vmm_object_is_nil(vmm_object_get(&m.result, "vm_id")));      /* missing */
        CHECK(vmm_object_is_nil(vmm_object_get(&m.result, "owner")));      /* nil */
        CHECK(!vmm_object_is_nil(vmm_object_get(&m.result, "kind")));
        CHECK(vmm_object_int(vmm_object_get(&m.result, "before"), &i) && i == -1500);
        CHECK(vmm_object_int(vmm_object_get(&m.result, "after"), &i) && i == 1763800000000);
        CHECK(!vmm_object_int(vmm_object_get(&m.result, "huge"), &i));     /* 2^64-1 */
        CHECK(!vmm_object_int(vmm_object_get(&m.result, "kind"), &i));
        CHECK(vmm_object_double(vmm_object_get(&m.result, "load"), &d) && d == 0.25);
        CHECK(vmm_object_double(vmm_object_get(&m.result, "after"), &d) && d == 1763800000000.0);
        CHECK(vmm_object_double(vmm_object_get(&m.result, "before"), &d) && d == -1500.0);
        CHECK(!vmm_object_double(vmm_object_get(&m.result, "kind"), &d));
        CHECK(vmm_object_bool(vmm_object_get(&m.result, "yes"), &b) && b);
        CHECK(!vmm_object_bool(vmm_object_get(&m.result, "after"), &b));
        vmm_message_release(&m);

        CHECK_EQ_INT(vmm_whoami(c, token, &m), 0);
        CHECK(vmm_object_streq(vmm_object_get(&m.result, "kind"), "vm"));
        vmm_message_release(&m);

        CHECK_EQ_INT(vmm_user_auth(c, "alice@example.org", "secret-pw", &m), 0);
        CHECK_EQ_INT(m.error, VMM_E_UNAUTHENTICATED);
        vmm_message_release(&m);
        CHECK_EQ_INT(vmm_user_auth(c, NULL, "x", &m), -EINVAL);

        CHECK_EQ_INT(vmm_booking_get(c, "vm1", NULL, &m), 0);
        const msgpack_object *bk = vmm_object_get(&m.result, "booking");
        CHECK(vmm_object_streq(vmm_object_get(bk, "user"), "alice"));
        vmm_message_release(&m);
        CHECK_EQ_INT(vmm_booking_get(c, NULL, token, &m), 0);
        CHECK(vmm_object_is_nil(vmm_object_get(&m.result, "booking")));
        vmm_message_release(&m);
        CHECK_EQ_INT(vmm_booking_get(c, NULL, NULL, &m), 0);
        vmm_message_release(&m);

        static const char *const types[] = { "booking.", "group." };
        uint64_t since = 41;
        CHECK_EQ_INT(vmm_events_watch(c, NULL, NULL, 0, &m), 0);
        vmm_message_release(&m);
        CHECK_EQ_INT(vmm_events_watch(c, &since, types, 2, &m), 0);
        CHECK(vmm_object_int(vmm_object_get(&m.result, "feed"), &i) && i == 50);
        vmm_message_release(&m);
        CHECK_EQ_INT(vmm_events_watch(c, NULL, NULL, 1, &m), -EINVAL);
        CHECK_EQ_INT(vmm_client_read(c, &m), 0);
        CHECK_EQ_INT(m.type, VMM_MESSAGE_NOTIFICATION);
        CHECK_STR(m.method, "event");
        vmm_message_release(&m);

        /* the packing helpers, echoed back */
        static const char *const ids[] = { "vm1", "vm2" };
        static const char *const holes[] = { "vm1", NULL };
        static const uint64_t sizes[] = { 10, 1ull << 40 };
        msgpack_packer *pk;
        CHECK_EQ_INT(vmm_client_begin_map(c, "echo", 4, &pk, NULL), 0);
        CHECK_EQ_INT(vmm_pack_kv_nil(pk, "owner"), 0);
        CHECK_EQ_INT(vmm_pack_kv_strv(pk, "vm_ids", ids, 2), 0);
        CHECK_EQ_INT(vmm_pack_kv_strv(pk, "bad", holes, 2), -EINVAL);     /* nothing packed */
        CHECK_EQ_INT(vmm_pack_kv_uintv(pk, "disks", sizes, 2), 0);
        CHECK_EQ_INT(vmm_pack_kv_strv(pk, "none", NULL, 0), 0);
        CHECK_EQ_INT(vmm_call_end(c, &m), 0);
        CHECK_EQ_INT(m.error, VMM_OK);
        vmm_message_release(&m);
        vmm_client_free(c);
}

/* No server needed: address parsing and connect errors. */
static void scenario_addresses(const char *unused) {
        static const struct {
                const char *addr;
                int expect;
        } cases[] = {
                { "[::1", -EINVAL },
                { "[::1]x", -EINVAL },
                { "[]:1", -EINVAL },
                { "host:", -EINVAL },
                { ":7707", -EINVAL },
                { "/nonexistent/dir/sock", -ENOENT },
                { "127.0.0.1:notaport", -EINVAL },
                /* a name that cannot resolve, refused by the resolver without a query */
                { "bad..host-name:7707", -ENXIO },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                VmmClient *c;
                CHECK_EQ_INT(vmm_client_new(&c), 0);
                int r = vmm_client_connect(c, cases[i].addr);
                if (r != cases[i].expect)
                        fprintf(stderr, "address %s\n", cases[i].addr);
                CHECK_EQ_INT(r, cases[i].expect);
                VmmMessage m;
                CHECK_EQ_INT(vmm_call(c, "ping", NULL, &m), -ENOTCONN);
                vmm_client_free(c);
        }
        CHECK(vmm_client_free(NULL) == NULL);
        vmm_message_release(NULL);
        CHECK_STR(vmm_error_to_string(VMM_E_CONFLICT), "conflict");
        CHECK_EQ_INT(vmm_error_from_string("shutting_down", 13), VMM_E_SHUTTING_DOWN);
}

/* No server needed: VmmAsync's reads against a socket this side writes to.
 * Two answers in one segment, then "not now"; an answer in two parts; an
 * answer sent after the socket was found empty; the end of the stream. */
static void async_answer(msgpack_sbuffer *sb, uint32_t msgid, const char *text) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint8(&pk, 1);
        msgpack_pack_uint32(&pk, msgid);
        msgpack_pack_nil(&pk);
        msgpack_pack_str(&pk, strlen(text));
        msgpack_pack_str_body(&pk, text, strlen(text));
}

static bool async_readable(VmmAsync *a) {
        struct pollfd p = { .fd = vmm_async_fd(a), .events = POLLIN };
        return poll(&p, 1, 5000) == 1;
}

static void async_expect(VmmAsync *a, uint32_t msgid, const char *text) {
        VmmMessage m;
        int r = vmm_async_read(a, &m);
        CHECK_EQ_INT(r, 0);
        if (r < 0)
                return;
        CHECK_EQ_INT(m.msgid, msgid);
        CHECK(str_is(&m.result, text));
        vmm_message_release(&m);
}

static void scenario_async(const char *unused) {
        int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof sin;
        CHECK(l >= 0 && bind(l, (struct sockaddr *) &sin, sizeof sin) == 0 && listen(l, 1) == 0 &&
              getsockname(l, (struct sockaddr *) &sin, &len) == 0);
        char addr[64];
        snprintf(addr, sizeof addr, "127.0.0.1:%u", (unsigned) ntohs(sin.sin_port));
        VmmAsync *a;
        CHECK_EQ_INT(vmm_async_new(&a), 0);
        CHECK_EQ_INT(vmm_async_connect(a, addr), 0);
        int s = accept(l, NULL, NULL);
        CHECK(s >= 0);
        VmmMessage m;
        CHECK_EQ_INT(vmm_async_read(a, &m), -EAGAIN);

        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        async_answer(&sb, 1, "one");
        async_answer(&sb, 2, "two");
        CHECK(write(s, sb.data, sb.size) == (ssize_t) sb.size);
        CHECK(async_readable(a));
        async_expect(a, 1, "one");
        async_expect(a, 2, "two");
        CHECK_EQ_INT(vmm_async_read(a, &m), -EAGAIN);

        msgpack_sbuffer_clear(&sb);
        async_answer(&sb, 3, "three, in two parts");
        CHECK(write(s, sb.data, 5) == 5);
        CHECK(async_readable(a));
        CHECK_EQ_INT(vmm_async_read(a, &m), -EAGAIN);
        CHECK(write(s, sb.data + 5, sb.size - 5) == (ssize_t) (sb.size - 5));
        CHECK(async_readable(a));
        async_expect(a, 3, "three, in two parts");
        CHECK_EQ_INT(vmm_async_read(a, &m), -EAGAIN);

        /* sent after the read that found the socket empty: readable again */
        msgpack_sbuffer_clear(&sb);
        async_answer(&sb, 4, "four");
        CHECK(write(s, sb.data, sb.size) == (ssize_t) sb.size);
        CHECK(async_readable(a));
        async_expect(a, 4, "four");
        CHECK_EQ_INT(vmm_async_read(a, &m), -EAGAIN);

        CHECK(close(s) == 0);
        CHECK(async_readable(a));
        CHECK_EQ_INT(vmm_async_read(a, &m), -ECONNRESET);
        msgpack_sbuffer_destroy(&sb);
        vmm_async_free(a);
        close(l);
}

int main(int argc, char **argv) {
        static const struct {
                const char *name;
                void (*run)(const char *addr);
        } scenarios[] = {
                { "basic", scenario_basic },
                { "garbage", scenario_garbage },
                { "notarray", scenario_notarray },
                { "eof", scenario_eof },
                { "msgid0", scenario_msgid0 },
                { "timeout", scenario_timeout },
                { "pipeline", scenario_pipeline },
                { "fd", scenario_fd },
                { "ping", scenario_ping },
                { "addresses", scenario_addresses },
                { "async", scenario_async },
                { "part2", scenario_part2 },
        };
        if (argc != 3) {
                fprintf(stderr, "usage: test-libvmm SCENARIO ADDRESS\n");
                return 2;
        }
        for (size_t i = 0; i < sizeof(scenarios) / sizeof(scenarios[0]); i++)
                if (strcmp(scenarios[i].name, argv[1]) == 0) {
                        scenarios[i].run(argv[2]);
                        if (failures > 0)
                                fprintf(stderr, "%s: %d check(s) failed\n", argv[1], failures);
                        return failures > 0 ? 1 : 0;
                }
        fprintf(stderr, "unknown scenario %s\n", argv[1]);
        return 2;
}
