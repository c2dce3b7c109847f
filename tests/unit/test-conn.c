/* SPDX-License-Identifier: MIT */
/* Connections (L2) over a socketpair, on a real event loop: messages cut
 * from the stream and delivered one at a time, a framing error answered and
 * closed, the idle timeout, and the total bound on unsent output. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/conn.h"
#include "shared/clock.h"

typedef struct Seen {
        int messages;
        size_t lens[16];
        bool hold;              /* keep the first message (owner busy) */
        bool closed;
        char reason[32];
        int reply_bytes;        /* write this many bytes per message */
} Seen;

static bool on_message(Conn *c, const uint8_t *bytes, size_t len, bool after_cutoff,
                       void *userdata) {
        Seen *s = userdata;
        if (s->messages < 16)
                s->lens[s->messages] = len;
        s->messages++;
        if (s->reply_bytes) {
                uint8_t *junk = calloc(1, (size_t) s->reply_bytes);
                assert_int_equal(conn_write(c, junk, (size_t) s->reply_bytes), 0);
                free(junk);
        }
        return s->hold && s->messages == 1;
}

static void on_closed(Conn *c, const char *reason, void *userdata) {
        Seen *s = userdata;
        s->closed = true;
        snprintf(s->reason, sizeof s->reason, "%s", reason);
}

static const ConnOps ops = { .message = on_message, .closed = on_closed };

typedef struct Pair {
        sd_event *e;
        ConnHub *hub;
        Conn *conn;
        int peer;
        Seen seen;
} Pair;

static void pair_open(Pair *p, size_t max_message) {
        int sv[2];
        ConnOptions o = { .max_message = max_message, .max_depth = 8, .peer = "test" };

        memset(p, 0, sizeof *p);
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(sd_event_new(&p->e), 0);
        assert_int_equal(conn_hub_new(p->e, &p->hub), 0);
        assert_int_equal(conn_new(p->hub, sv[0], &o, &ops, &p->seen, &p->conn), 0);
        conn_ref(p->conn);
        p->peer = sv[1];
}

static void pair_close(Pair *p) {
        conn_hub_free(p->hub);
        conn_unref(p->conn);
        sd_event_unref(p->e);
        close(p->peer);
}

static void spin(Pair *p, int rounds) {
        for (int i = 0; i < rounds; i++)
                (void) sd_event_run(p->e, 10000);
}

static void test_messages_in_order(void **state) {
        Pair p;
        /* three requests [0, 1, "ping", []] in one write, the last split */
        const uint8_t msg[] = { 0x94, 0x00, 0x01, 0xa4, 'p', 'i', 'n', 'g', 0x90 };
        uint8_t buf[3 * sizeof msg];

        pair_open(&p, 1024);
        for (int i = 0; i < 3; i++)
                memcpy(buf + i * sizeof msg, msg, sizeof msg);
        p.seen.hold = true;
        assert_int_equal(send(p.peer, buf, sizeof buf - 4, 0), (ssize_t) sizeof buf - 4);
        spin(&p, 5);
        assert_int_equal(p.seen.messages, 1);           /* held: the next waits */
        conn_resume(p.conn);
        spin(&p, 5);
        assert_int_equal(p.seen.messages, 2);           /* the third is half there */
        assert_int_equal(send(p.peer, buf + sizeof buf - 4, 4, 0), 4);
        spin(&p, 5);
        assert_int_equal(p.seen.messages, 3);
        for (int i = 0; i < 3; i++)
                assert_int_equal(p.seen.lens[i], sizeof msg);
        pair_close(&p);
}

static void test_framing_error_answered_and_closed(void **state) {
        Pair p;
        uint8_t bad = 0xc1, reply[256];

        pair_open(&p, 1024);
        assert_int_equal(send(p.peer, &bad, 1, 0), 1);
        spin(&p, 5);
        ssize_t n = recv(p.peer, reply, sizeof reply, 0);
        assert_true(n > 10);
        assert_non_null(memmem(reply, (size_t) n, "bad_request", 11));
        /* the sending side is shut: end of file follows the error */
        shutdown(p.peer, SHUT_WR);
        spin(&p, 5);
        assert_true(p.seen.closed);
        assert_string_equal(p.seen.reason, "error");
        assert_int_equal(p.seen.messages, 0);
        pair_close(&p);
}

static void test_too_large(void **state) {
        Pair p;
        uint8_t big[64] = { 0xc4, 60 }, reply[256];    /* bin8 of 60 bytes > max 32 */

        pair_open(&p, 32);
        assert_int_equal(send(p.peer, big, sizeof big, 0), (ssize_t) sizeof big);
        spin(&p, 5);
        ssize_t n = recv(p.peer, reply, sizeof reply, 0);
        assert_true(n > 0);
        assert_non_null(memmem(reply, (size_t) n, "too_large", 9));
        pair_close(&p);
}

static void test_idle_timeout(void **state) {
        Pair p;

        pair_open(&p, 1024);
        conn_set_idle_timeout(p.conn, 50);
        conn_hub_sweep(p.hub, mono_ms());
        assert_false(p.seen.closed);
        usleep(80 * 1000);
        conn_hub_sweep(p.hub, mono_ms());
        assert_true(p.seen.closed);
        assert_string_equal(p.seen.reason, "timeout");
        pair_close(&p);
}

static void test_unsent_total_bound(void **state) {
        Pair p;
        const uint8_t msg[] = { 0x94, 0x00, 0x01, 0xa4, 'p', 'i', 'n', 'g', 0x90 };
        int one = 4096;

        pair_open(&p, 1024);
        /* small socket buffers: the replies pile up in the connection */
        setsockopt(p.peer, SOL_SOCKET, SO_RCVBUF, &one, sizeof one);
        conn_hub_set_limits(p.hub, 30000, 512u << 10);
        p.seen.reply_bytes = 256 << 10;
        for (int i = 0; i < 40 && !p.seen.closed; i++) {
                (void) send(p.peer, msg, sizeof msg, MSG_DONTWAIT);
                spin(&p, 2);
        }
        /* over 1 MiB unsent it stops reading (it is not reading either): past
         * the total bound, such a connection is closed */
        assert_true(p.seen.closed);
        assert_true(p.seen.messages >= 4);
        assert_int_equal(conn_hub_unsent_total(p.hub), 0);
        pair_close(&p);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_messages_in_order),
                cmocka_unit_test(test_framing_error_answered_and_closed),
                cmocka_unit_test(test_too_large),
                cmocka_unit_test(test_idle_timeout),
                cmocka_unit_test(test_unsent_total_bound),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
