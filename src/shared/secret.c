/* SPDX-License-Identifier: MIT */
/* Secrets through libsodium (see secret.h). */
#include <assert.h>
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "shared/secret.h"

_Static_assert(SECRET_PWHASH_MAX == crypto_pwhash_STRBYTES, "pwhash buffer size");
_Static_assert(SECRET_HASH_BYTES >= crypto_generichash_BYTES_MIN &&
               SECRET_HASH_BYTES <= crypto_generichash_BYTES_MAX, "generichash size");
_Static_assert(SECRET_KEY_BYTES >= crypto_generichash_KEYBYTES_MIN &&
               SECRET_KEY_BYTES <= crypto_generichash_KEYBYTES_MAX, "generichash key size");
_Static_assert(SECRET_SESSION_ID_LEN % 2 == 0 && SECRET_SESSION_ID_LEN / 2 <= SECRET_HASH_BYTES,
               "session id length");

#define TOKEN_B64_VARIANT sodium_base64_VARIANT_URLSAFE_NO_PADDING

_Static_assert(VMM_TOKEN_LEN + 1 == sodium_base64_ENCODED_LEN(VMM_TOKEN_BYTES, TOKEN_B64_VARIANT),
               "token length");

static const char password_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

int secret_init(void) {
        return sodium_init() < 0 ? -EIO : 0;
}

void secret_token_new(uint8_t ret_raw[VMM_TOKEN_BYTES], char ret_token[VMM_TOKEN_LEN + 1]) {
        randombytes_buf(ret_raw, VMM_TOKEN_BYTES);
        sodium_bin2base64(ret_token, VMM_TOKEN_LEN + 1, ret_raw, VMM_TOKEN_BYTES,
                          TOKEN_B64_VARIANT);
}

int secret_token_decode(const char *s, size_t len, uint8_t ret_raw[VMM_TOKEN_BYTES]) {
        uint8_t raw[VMM_TOKEN_BYTES];
        char again[VMM_TOKEN_LEN + 1];
        size_t n = 0;
        const char *end = NULL;
        int r = -EINVAL;

        if (!s || len != VMM_TOKEN_LEN)
                return -EINVAL;
        if (sodium_base642bin(raw, sizeof raw, s, len, NULL, &n, &end, TOKEN_B64_VARIANT) != 0)
                goto finish;
        if (n != VMM_TOKEN_BYTES || end != s + len)
                goto finish;
        /* The last character carries 2 spare bits: only the canonical form is a token. */
        sodium_bin2base64(again, sizeof again, raw, sizeof raw, TOKEN_B64_VARIANT);
        if (sodium_memcmp(again, s, VMM_TOKEN_LEN) != 0)
                goto finish;

        memcpy(ret_raw, raw, sizeof raw);
        r = 0;
finish:
        sodium_memzero(raw, sizeof raw);
        sodium_memzero(again, sizeof again);
        return r;
}

void secret_token_hash(const uint8_t key[SECRET_KEY_BYTES], const uint8_t raw[VMM_TOKEN_BYTES],
                       uint8_t ret_hash[SECRET_HASH_BYTES]) {
        int r = crypto_generichash(ret_hash, SECRET_HASH_BYTES, raw, VMM_TOKEN_BYTES,
                                   key, SECRET_KEY_BYTES);
        assert(r == 0);
        (void) r;
}

void secret_session_id(const uint8_t hash[SECRET_HASH_BYTES],
                       char ret_id[SECRET_SESSION_ID_LEN + 1]) {
        sodium_bin2hex(ret_id, SECRET_SESSION_ID_LEN + 1, hash, SECRET_SESSION_ID_LEN / 2);
}

bool secret_hash_equal(const uint8_t a[SECRET_HASH_BYTES], const uint8_t b[SECRET_HASH_BYTES]) {
        return sodium_memcmp(a, b, SECRET_HASH_BYTES) == 0;
}

void secret_key_new(uint8_t ret_key[SECRET_KEY_BYTES]) {
        randombytes_buf(ret_key, SECRET_KEY_BYTES);
}

static _Thread_local const SecretOffload *thread_offload;

void secret_offload_set(const SecretOffload *o) {
        thread_offload = o;
}

int secret_password_hash(const char *pw, size_t len, char ret_hash[SECRET_PWHASH_MAX]) {
        char out[SECRET_PWHASH_MAX];

        assert(pw || len == 0);
        if (thread_offload &&
            thread_offload->hash(thread_offload->userdata, pw ? pw : "", len, ret_hash) == 0)
                return 0;
#ifdef VMMD_FUZZ_CHEAP_HASH
        /* fuzz builds only (tests/fuzz/meson.build): the path, not the cost */
        if (crypto_pwhash_str(out, pw ? pw : "", len, crypto_pwhash_OPSLIMIT_MIN,
                              crypto_pwhash_MEMLIMIT_MIN) != 0)
#else
        if (crypto_pwhash_str(out, pw ? pw : "", len, crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
#endif
                return -ENOMEM;
        /* libsodium 1.0.18 hashes with argon2id by default; we rely on that. */
        assert(strncmp(out, "$argon2id$", 10) == 0);
        memcpy(ret_hash, out, sizeof out);
        sodium_memzero(out, sizeof out);
        return 0;
}

bool secret_password_verify(const char *hash, const char *pw, size_t len) {
        if (!hash)
                return false;
        assert(pw || len == 0);
        /* the stored hash must be a C string within its buffer */
        if (strnlen(hash, SECRET_PWHASH_MAX) == SECRET_PWHASH_MAX)
                return false;
        if (thread_offload) {
                int r = thread_offload->verify(thread_offload->userdata, hash, pw ? pw : "", len);
                if (r >= 0)
                        return r == 1;
        }
        return crypto_pwhash_str_verify(hash, pw ? pw : "", len) == 0;
}

void secret_password_generate(char ret[SECRET_GEN_PASSWORD_LEN + 1]) {
        for (size_t i = 0; i < SECRET_GEN_PASSWORD_LEN; i++)
                ret[i] = password_alphabet[randombytes_uniform(sizeof password_alphabet - 1)];
        ret[SECRET_GEN_PASSWORD_LEN] = '\0';
}

void secret_wipe(void *p, size_t n) {
        if (p && n > 0)
                sodium_memzero(p, n);
}
