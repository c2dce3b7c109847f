/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "shared/secret.h"
#include "vmm/protocol.h"

static const char url_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int setup(void **state) {
        return secret_init();
}

static void test_init_twice(void **state) {
        assert_int_equal(secret_init(), 0);
        assert_int_equal(secret_init(), 0);
}

static void test_token_round_trip(void **state) {
        uint8_t raw[VMM_TOKEN_BYTES], raw2[VMM_TOKEN_BYTES], back[VMM_TOKEN_BYTES];
        char tok[VMM_TOKEN_LEN + 1], tok2[VMM_TOKEN_LEN + 1];

        memset(tok, 'X', sizeof tok);
        secret_token_new(raw, tok);
        assert_int_equal(strlen(tok), VMM_TOKEN_LEN);
        for (size_t i = 0; i < VMM_TOKEN_LEN; i++)
                assert_non_null(memchr(url_alphabet, tok[i], 64));
        assert_int_equal(secret_token_decode(tok, VMM_TOKEN_LEN, back), 0);
        assert_memory_equal(raw, back, VMM_TOKEN_BYTES);

        /* two tokens differ */
        secret_token_new(raw2, tok2);
        assert_memory_not_equal(raw, raw2, VMM_TOKEN_BYTES);
        assert_string_not_equal(tok, tok2);
}

static void test_token_known_answers(void **state) {
        uint8_t raw[VMM_TOKEN_BYTES], want[VMM_TOKEN_BYTES];
        char zeros[VMM_TOKEN_LEN + 1], ones[VMM_TOKEN_LEN + 1];

        /* bytes 100..131, encoded by Python's base64.urlsafe_b64encode */
        for (int i = 0; i < VMM_TOKEN_BYTES; i++)
                want[i] = (uint8_t) (100 + i);
        assert_int_equal(secret_token_decode("ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1-f4CBgoM",
                                             VMM_TOKEN_LEN, raw), 0);
        assert_memory_equal(raw, want, VMM_TOKEN_BYTES);

        memset(zeros, 'A', VMM_TOKEN_LEN);
        zeros[VMM_TOKEN_LEN] = '\0';
        assert_int_equal(secret_token_decode(zeros, VMM_TOKEN_LEN, raw), 0);
        memset(want, 0, sizeof want);
        assert_memory_equal(raw, want, VMM_TOKEN_BYTES);

        memset(ones, '_', VMM_TOKEN_LEN - 1);
        ones[VMM_TOKEN_LEN - 1] = '8';
        ones[VMM_TOKEN_LEN] = '\0';
        assert_int_equal(secret_token_decode(ones, VMM_TOKEN_LEN, raw), 0);
        memset(want, 0xff, sizeof want);
        assert_memory_equal(raw, want, VMM_TOKEN_BYTES);
}

static void expect_decode_fails(const char *s, size_t len) {
        uint8_t raw[VMM_TOKEN_BYTES], untouched[VMM_TOKEN_BYTES];

        memset(raw, 0x5a, sizeof raw);
        memset(untouched, 0x5a, sizeof untouched);
        assert_int_equal(secret_token_decode(s, len, raw), -EINVAL);
        assert_memory_equal(raw, untouched, sizeof raw);   /* not clobbered */
}

static void test_token_decode_rejects(void **state) {
        uint8_t raw[VMM_TOKEN_BYTES];
        char tok[VMM_TOKEN_LEN + 2], bad[VMM_TOKEN_LEN + 2];

        secret_token_new(raw, tok);
        expect_decode_fails(tok, VMM_TOKEN_LEN - 1);
        expect_decode_fails("", 0);
        memcpy(bad, tok, VMM_TOKEN_LEN);
        bad[VMM_TOKEN_LEN] = 'A';
        bad[VMM_TOKEN_LEN + 1] = '\0';
        expect_decode_fails(bad, VMM_TOKEN_LEN + 1);

        const char wrong[] = { '+', '/', '=', '.', ' ', '\0', '\xc3' };
        for (size_t i = 0; i < sizeof wrong; i++) {
                memcpy(bad, tok, VMM_TOKEN_LEN + 1);
                bad[5] = wrong[i];
                expect_decode_fails(bad, VMM_TOKEN_LEN);
                memcpy(bad, tok, VMM_TOKEN_LEN + 1);
                bad[VMM_TOKEN_LEN - 1] = wrong[i];
                expect_decode_fails(bad, VMM_TOKEN_LEN);
        }

        /* The last character carries 4 bits and 2 zero bits; with a spare bit set
         * it still decodes to the same bytes in lax decoders, but is not a token. */
        memcpy(bad, tok, VMM_TOKEN_LEN + 1);
        const char *p = memchr(url_alphabet, bad[VMM_TOKEN_LEN - 1], 64);
        assert_non_null(p);
        size_t idx = (size_t) (p - url_alphabet);
        assert_int_equal(idx & 3, 0);
        bad[VMM_TOKEN_LEN - 1] = url_alphabet[idx | 1];
        expect_decode_fails(bad, VMM_TOKEN_LEN);
        bad[VMM_TOKEN_LEN - 1] = url_alphabet[idx | 2];
        expect_decode_fails(bad, VMM_TOKEN_LEN);
}

static void test_token_hash(void **state) {
        uint8_t key[SECRET_KEY_BYTES], key2[SECRET_KEY_BYTES], raw[VMM_TOKEN_BYTES];
        uint8_t h[SECRET_HASH_BYTES], h2[SECRET_HASH_BYTES];
        char hex[2 * SECRET_HASH_BYTES + 1];

        /* keyed BLAKE2b-256, known answer from Python's hashlib.blake2b */
        for (int i = 0; i < 32; i++) {
                key[i] = (uint8_t) i;
                raw[i] = (uint8_t) (100 + i);
        }
        secret_token_hash(key, raw, h);
        for (int i = 0; i < SECRET_HASH_BYTES; i++)
                snprintf(hex + 2 * i, 3, "%02x", h[i]);
        assert_string_equal(hex,
                            "996a078588602817860c92990597421973cd6c8854a051a715a351a29197d22f");

        /* deterministic; another key or token gives another hash */
        secret_token_hash(key, raw, h2);
        assert_true(secret_hash_equal(h, h2));
        memcpy(key2, key, sizeof key);
        key2[31] ^= 1;
        secret_token_hash(key2, raw, h2);
        assert_false(secret_hash_equal(h, h2));
        raw[0] ^= 0x80;
        secret_token_hash(key, raw, h2);
        assert_false(secret_hash_equal(h, h2));
}

static void test_session_id(void **state) {
        uint8_t h[SECRET_HASH_BYTES];
        char id[SECRET_SESSION_ID_LEN + 1];

        memset(h, 0xee, sizeof h);
        memcpy(h, (const uint8_t[]) { 0x01, 0x23, 0x45, 0x67, 0x89, 0xab }, 6);
        memset(id, 'X', sizeof id);
        secret_session_id(h, id);
        assert_string_equal(id, "0123456789ab");
}

static void test_hash_equal(void **state) {
        uint8_t a[SECRET_HASH_BYTES], b[SECRET_HASH_BYTES];

        for (int i = 0; i < SECRET_HASH_BYTES; i++)
                a[i] = b[i] = (uint8_t) (i * 7);
        assert_true(secret_hash_equal(a, b));
        b[SECRET_HASH_BYTES - 1] ^= 1;
        assert_false(secret_hash_equal(a, b));
        b[SECRET_HASH_BYTES - 1] ^= 1;
        b[0] ^= 0x80;
        assert_false(secret_hash_equal(a, b));
}

static void test_key_new(void **state) {
        uint8_t a[SECRET_KEY_BYTES], b[SECRET_KEY_BYTES], zero[SECRET_KEY_BYTES] = { 0 };

        secret_key_new(a);
        secret_key_new(b);
        assert_memory_not_equal(a, b, sizeof a);
        assert_memory_not_equal(a, zero, sizeof a);
}

static void test_password_hash(void **state) {
        char h[SECRET_PWHASH_MAX], h2[SECRET_PWHASH_MAX];
        const char *pw = "correct horse";

        assert_int_equal(secret_password_hash(pw, strlen(pw), h), 0);
        assert_int_equal(strncmp(h, "$argon2id$", 10), 0);
        assert_true(strlen(h) < SECRET_PWHASH_MAX);
        assert_null(strstr(h, pw));

        assert_true(secret_password_verify(h, pw, strlen(pw)));
        assert_false(secret_password_verify(h, "correct horsf", 13));
        assert_false(secret_password_verify(h, pw, strlen(pw) - 1));
        assert_false(secret_password_verify(h, "", 0));
        assert_false(secret_password_verify(NULL, pw, strlen(pw)));
        assert_false(secret_password_verify("$argon2id$garbage", pw, strlen(pw)));
        assert_false(secret_password_verify("", pw, strlen(pw)));

        /* salted: the same password hashes differently, both verify */
        assert_int_equal(secret_password_hash(pw, strlen(pw), h2), 0);
        assert_string_not_equal(h, h2);
        assert_true(secret_password_verify(h2, pw, strlen(pw)));

        /* lengths count, not NUL bytes */
        static const char with_nul[] = { 'a', 'b', 'c', '\0', 'd', 'e', 'f' };
        assert_int_equal(secret_password_hash(with_nul, sizeof with_nul, h), 0);
        assert_true(secret_password_verify(h, with_nul, sizeof with_nul));
        assert_false(secret_password_verify(h, with_nul, 3));
}

static void test_password_generate(void **state) {
        static const char alnum[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        char a[SECRET_GEN_PASSWORD_LEN + 1], b[SECRET_GEN_PASSWORD_LEN + 1];
        bool seen[256] = { false };

        memset(a, '!', sizeof a);
        secret_password_generate(a);
        assert_int_equal(strlen(a), SECRET_GEN_PASSWORD_LEN);
        secret_password_generate(b);
        assert_string_not_equal(a, b);

        /* 200 passwords (4800 characters) use only, and (all but surely) all, 62 symbols */
        for (int n = 0; n < 200; n++) {
                secret_password_generate(a);
                assert_int_equal(strlen(a), SECRET_GEN_PASSWORD_LEN);
                for (size_t i = 0; i < SECRET_GEN_PASSWORD_LEN; i++) {
                        assert_non_null(memchr(alnum, a[i], 62));
                        seen[(uint8_t) a[i]] = true;
                }
        }
        for (size_t i = 0; i < 62; i++)
                if (!seen[(uint8_t) alnum[i]])
                        fail_msg("'%c' never generated", alnum[i]);

        /* a generated password hashes and verifies */
        char h[SECRET_PWHASH_MAX];
        assert_int_equal(secret_password_hash(b, strlen(b), h), 0);
        assert_true(secret_password_verify(h, b, strlen(b)));
}

static void test_wipe(void **state) {
        uint8_t buf[64], zero[64] = { 0 };

        memset(buf, 0xa5, sizeof buf);
        secret_wipe(buf, 40);
        assert_memory_equal(buf, zero, 40);
        assert_int_equal(buf[40], 0xa5);
        secret_wipe(NULL, 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_init_twice),
                cmocka_unit_test(test_token_round_trip),
                cmocka_unit_test(test_token_known_answers),
                cmocka_unit_test(test_token_decode_rejects),
                cmocka_unit_test(test_token_hash),
                cmocka_unit_test(test_session_id),
                cmocka_unit_test(test_hash_equal),
                cmocka_unit_test(test_key_new),
                cmocka_unit_test(test_password_hash),
                cmocka_unit_test(test_password_generate),
                cmocka_unit_test(test_wipe),
        };
        return cmocka_run_group_tests(tests, setup, NULL);
}
