/* SPDX-License-Identifier: MIT */
/* Sessions in memory (L1): attach and detach links, connected VMs, ending
 * sessions, and the per-address counters and their folding of addresses. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/sessions.h"

static void hash_of(uint8_t h[SECRET_HASH_BYTES], uint8_t v) {
        memset(h, v, SECRET_HASH_BYTES);
}

static void count_link(SessionLink *l, void *userdata) {
        (*(int *) userdata)++;
        assert_false(l->attached);
}

static void test_attach_detach(void **state) {
        Sessions *s = NULL;
        SessionLink a = { 0 }, b = { 0 }, c = { 0 };
        uint8_t h1[SECRET_HASH_BYTES], h2[SECRET_HASH_BYTES];
        int n = 0;

        assert_int_equal(sessions_new(&s), 0);
        hash_of(h1, 1);
        hash_of(h2, 2);
        assert_int_equal(sessions_attach(s, &a, h1, PRINCIPAL_VM, "vm1"), 0);
        assert_int_equal(sessions_attach(s, &b, h1, PRINCIPAL_VM, "vm1"), 0);
        assert_int_equal(sessions_attach(s, &c, h2, PRINCIPAL_USER, "alice"), 0);
        assert_true(sessions_is_attached(s, h1));
        assert_true(sessions_vm_connected(s, "vm1"));
        /* a user's session makes no VM connected */
        assert_int_equal(sessions_connected_count(s), 1);

        /* a link moves: detached from its old session first */
        assert_int_equal(sessions_attach(s, &a, h2, PRINCIPAL_VM, "vm2"), 0);
        assert_true(sessions_vm_connected(s, "vm1"));
        assert_true(sessions_vm_connected(s, "vm2"));
        assert_int_equal(sessions_connected_count(s), 2);

        assert_true(sessions_detach(s, &b));
        assert_false(sessions_detach(s, &b));
        assert_false(sessions_vm_connected(s, "vm1"));
        assert_false(sessions_is_attached(s, h1));

        /* ending a session detaches all its links, each reported */
        assert_int_equal(sessions_end(s, h2, count_link, &n), 2);
        assert_int_equal(n, 2);
        assert_false(a.attached);
        assert_false(c.attached);
        assert_int_equal(sessions_connected_count(s), 0);
        sessions_free(s);
}

static int collect(void *userdata, const char *vm_id) {
        char *out = userdata;
        strcat(out, vm_id);
        strcat(out, ",");
        return 0;
}

static void test_connected_order_and_owner_end(void **state) {
        Sessions *s = NULL;
        SessionLink l[4] = { 0 };
        uint8_t h[SECRET_HASH_BYTES];
        const char *names[] = { "vm3", "vm1", "vm2", "vm1" };
        char out[128] = "";
        uint8_t *hashes = NULL;
        size_t n = 0;

        assert_int_equal(sessions_new(&s), 0);
        for (int i = 0; i < 4; i++) {
                hash_of(h, (uint8_t) (10 - i));
                assert_int_equal(sessions_attach(s, &l[i], h, PRINCIPAL_VM, names[i]), 0);
        }
        assert_int_equal(sessions_connected_foreach(s, NULL, collect, out), 0);
        assert_string_equal(out, "vm1,vm2,vm3,");
        out[0] = '\0';
        assert_int_equal(sessions_connected_foreach(s, "vm1", collect, out), 0);
        assert_string_equal(out, "vm2,vm3,");

        /* the snapshot for the writer is sorted */
        assert_int_equal(sessions_attached_hashes(s, &hashes, &n), 0);
        assert_int_equal(n, 4);
        for (size_t i = 1; i < n; i++)
                assert_true(memcmp(hashes + (i - 1) * SECRET_HASH_BYTES,
                                   hashes + i * SECRET_HASH_BYTES, SECRET_HASH_BYTES) < 0);
        free(hashes);

        /* every session of vm1 (two of them) */
        assert_int_equal(sessions_end_owner(s, PRINCIPAL_VM, "vm1", NULL, NULL), 2);
        assert_false(sessions_vm_connected(s, "vm1"));
        assert_true(sessions_vm_connected(s, "vm3"));
        sessions_free(s);
}

static struct sockaddr_storage addr(const char *text) {
        struct sockaddr_storage ss = { 0 };
        if (strchr(text, ':')) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
                in6->sin6_family = AF_INET6;
                assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
        } else {
                struct sockaddr_in *in = (struct sockaddr_in *) &ss;
                in->sin_family = AF_INET;
                assert_int_equal(inet_pton(AF_INET, text, &in->sin_addr), 1);
        }
        return ss;
}

static void test_peers_fold(void **state) {
        Sessions *s = NULL;
        struct sockaddr_storage a = addr("127.0.0.1"), m = addr("::ffff:127.0.0.1");
        struct sockaddr_storage x = addr("2001:db8:1:2::5"), y = addr("2001:db8:1:2:ffff::9");
        struct sockaddr_storage z = addr("2001:db8:1:3::5"), o = addr("127.0.0.2");

        assert_int_equal(sessions_new(&s), 0);
        Peer *pa = sessions_peer_get(s, (struct sockaddr *) &a, 64);
        Peer *pm = sessions_peer_get(s, (struct sockaddr *) &m, 64);
        Peer *px = sessions_peer_get(s, (struct sockaddr *) &x, 64);
        Peer *py = sessions_peer_get(s, (struct sockaddr *) &y, 64);
        Peer *pz = sessions_peer_get(s, (struct sockaddr *) &z, 64);
        Peer *po = sessions_peer_get(s, (struct sockaddr *) &o, 64);
        assert_ptr_equal(pa, pm);               /* IPv4-mapped is its IPv4 */
        assert_ptr_equal(px, py);               /* the same /64 */
        assert_ptr_not_equal(px, pz);           /* another /64 */
        assert_ptr_not_equal(pa, po);           /* IPv4 as is */
        assert_string_equal(sessions_peer_address(pa), "127.0.0.1");
        assert_string_equal(sessions_peer_address(px), "2001:db8:1:2::/64");

        Peer *pt = NULL;
        assert_int_equal(sessions_peer_get_text(s, "::ffff:127.0.0.1", 16, 64, &pt), 0);
        assert_ptr_equal(pt, pa);
        assert_int_equal(sessions_peer_get_text(s, "not-an-ip", 9, 64, &pt), -EINVAL);
        sessions_free(s);
}

static void test_peer_limits(void **state) {
        Sessions *s = NULL;
        struct sockaddr_storage a = addr("10.0.0.1");

        assert_int_equal(sessions_new(&s), 0);
        Peer *p = sessions_peer_get(s, (struct sockaddr *) &a, 64);
        /* failed logins: limited at the count, for a minute */
        for (int i = 0; i < 3; i++) {
                assert_false(sessions_peer_limited(p, 1000, 3));
                sessions_peer_failed(p, 1000);
        }
        assert_true(sessions_peer_limited(p, 1000, 3));
        assert_true(sessions_peer_limited(p, 60999, 3));
        assert_false(sessions_peer_limited(p, 61000, 3));
        /* registrations: counted when allowed */
        assert_true(sessions_peer_register(p, 0, 2));
        assert_true(sessions_peer_register(p, 1, 2));
        assert_false(sessions_peer_register(p, 2, 2));
        assert_true(sessions_peer_register(p, 60000, 2));
        /* hashes in flight */
        assert_true(sessions_peer_hash_begin(p, 2));
        assert_true(sessions_peer_hash_begin(p, 2));
        assert_false(sessions_peer_hash_begin(p, 2));
        sessions_peer_hash_end(p);
        assert_true(sessions_peer_hash_begin(p, 2));
        /* log lines: a few a minute, then one saying the rest is quiet */
        int logged = 0;
        for (int i = 0; i < 20; i++)
                logged += sessions_peer_log_allowed(p, 5000);
        assert_int_equal(logged, SESSIONS_LOG_PER_MINUTE);
        sessions_peer_put(s, p);
        sessions_free(s);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_attach_detach),
                cmocka_unit_test(test_connected_order_and_owner_end),
                cmocka_unit_test(test_peers_fold),
                cmocka_unit_test(test_peer_limits),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
