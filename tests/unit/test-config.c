/* SPDX-License-Identifier: MIT */
/* Configuration (L0): defaults, the file, flags, and what each error is. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/config.h"

static char *write_file(const char *text) {
        static char path[64];
        snprintf(path, sizeof path, "/tmp/test-config-XXXXXX");
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, text, strlen(text)), (ssize_t) strlen(text));
        close(fd);
        return path;
}

static int load(Config *c, ConfigError *e, const char *file, const char *arg1, const char *arg2) {
        char *argv[] = { (char *) "vmmd", (char *) "--config", (char *) file, (char *) arg1,
                         (char *) arg2, NULL };
        int argc = 3 + !!arg1 + !!arg2;
        return config_load(argc, argv, c, e);
}

static void test_defaults_file_flags(void **state) {
        char *path = write_file("# comment\n[vmmd]\nsession_ttl = 60\nregistration = approval\n"
                                "trusted_proxies = 10.0.0.1\ntrusted_proxies = fd00::/64\n"
                                "tcp_admin = yes\nvm_visibility = self\n");
        Config c;
        ConfigError e;

        assert_int_equal(load(&c, &e, path, "--session-ttl", "90"), 0);
        assert_int_equal(c.session_ttl_s, 90);                  /* the flag wins */
        assert_int_equal(c.registration, REGISTRATION_APPROVAL);
        assert_true(c.tcp_admin);
        assert_int_equal(c.vm_visibility, VISIBILITY_SELF);
        assert_int_equal(c.n_trusted_proxies, 2);
        assert_string_equal(c.trusted_proxies[1], "fd00::/64");
        assert_int_equal(c.idle_timeout_s, 30);                 /* a default */
        assert_int_equal(c.hashes_per_peer, 4);
        assert_int_equal(c.registrations_per_minute, 10);
        assert_int_equal(c.max_unsent_total, 64ull << 20);
        assert_true(c.hash_workers >= 1);
        config_done(&c);
        unlink(path);
}

static void test_errors_are_kinds(void **state) {
        char *path = write_file("[vmmd]\nregistration = sometimes\n");
        Config c;
        ConfigError e;
        char err[600];

        /* the file: a configuration error naming FILE:LINE */
        assert_true(load(&c, &e, path, NULL, NULL) < 0);
        assert_int_equal(e, CONFIG_ERROR_FILE);
        unlink(path);

        path = write_file("tcp_admin = maybe\n");
        config_defaults(&c);
        assert_true(config_parse_file(&c, path, err, sizeof err) < 0);
        assert_non_null(strstr(err, ":1: tcp_admin: expected yes or no"));
        config_done(&c);
        unlink(path);

        path = write_file("trusted_proxies = not-an-address\n");
        config_defaults(&c);
        assert_true(config_parse_file(&c, path, err, sizeof err) < 0);
        assert_non_null(strstr(err, ":1: trusted_proxies:"));
        config_done(&c);

        /* flags: a usage error */
        assert_true(load(&c, &e, path, "--bogus", NULL) < 0);
        assert_int_equal(e, CONFIG_ERROR_USAGE);
        assert_true(load(&c, &e, "/dev/null", "--session-ttl", "0") < 0);
        assert_int_equal(e, CONFIG_ERROR_USAGE);
        unlink(path);
}

static void test_reload_reports(void **state) {
        char *path = write_file("session_ttl = 120\n");
        char *argv[] = { (char *) "vmmd", (char *) "--config", path, NULL };
        char err[600];
        Config c;

        assert_int_equal(config_reload(3, argv, &c, err, sizeof err), 0);
        assert_int_equal(c.session_ttl_s, 120);
        config_done(&c);
        FILE *f = fopen(path, "w");
        fputs("session_ttl = 120\nnot a line\n", f);
        fclose(f);
        assert_true(config_reload(3, argv, &c, err, sizeof err) < 0);
        assert_non_null(strstr(err, ":2: expected key = value"));
        unlink(path);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_defaults_file_flags),
                cmocka_unit_test(test_errors_are_kinds),
                cmocka_unit_test(test_reload_reports),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
