/* SPDX-License-Identifier: MIT */
/* Secrets, all through libsodium: tokens, keyed hashes, password hashes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/protocol.h"

#define SECRET_HASH_BYTES    32   /* keyed hash of a token */
#define SECRET_KEY_BYTES     32
#define SECRET_PWHASH_MAX    128  /* crypto_pwhash_STRBYTES, NUL included */
#define SECRET_SESSION_ID_LEN 12  /* hex characters of the public session id */
#define SECRET_GEN_PASSWORD_LEN 24

/* sodium_init(); returns 0 or -EIO. Safe to call more than once. */
int secret_init(void);

/* 32 random bytes; ret_token gets their base64url form (43 chars + NUL). */
void secret_token_new(uint8_t ret_raw[VMM_TOKEN_BYTES], char ret_token[VMM_TOKEN_LEN + 1]);

/* Decode a 43-character base64url token; -EINVAL if malformed. */
int secret_token_decode(const char *s, size_t len, uint8_t ret_raw[VMM_TOKEN_BYTES]);

/* BLAKE2b-256 of the raw token keyed with key. */
void secret_token_hash(const uint8_t key[SECRET_KEY_BYTES], const uint8_t raw[VMM_TOKEN_BYTES],
                       uint8_t ret_hash[SECRET_HASH_BYTES]);

/* Public session id: lowercase hex of the first 6 bytes of the token hash. */
void secret_session_id(const uint8_t hash[SECRET_HASH_BYTES],
                       char ret_id[SECRET_SESSION_ID_LEN + 1]);

/* Constant-time comparison of two hashes. */
bool secret_hash_equal(const uint8_t a[SECRET_HASH_BYTES], const uint8_t b[SECRET_HASH_BYTES]);

/* A new random key (for the token hash key at database creation). */
void secret_key_new(uint8_t ret_key[SECRET_KEY_BYTES]);

/* argon2id (crypto_pwhash_str, OPSLIMIT/MEMLIMIT_INTERACTIVE). Slow: never on
 * the event loop. Returns 0, -ENOMEM when the hash cannot be computed. */
int secret_password_hash(const char *pw, size_t len, char ret_hash[SECRET_PWHASH_MAX]);

/* true when pw matches hash. Same cost whether or not it matches. */
bool secret_password_verify(const char *hash, const char *pw, size_t len);

/* Where the calling thread's argon2id work goes instead of this address
 * space (vmmd's hash workers hand it to a helper process, see
 * src/daemon/hasher.c). hash returns 0 or <0; verify 1 (match), 0 (no
 * match) or <0. On <0 the work is done here after all. */
typedef struct SecretOffload {
        int (*hash)(void *userdata, const char *pw, size_t len,
                    char ret_hash[SECRET_PWHASH_MAX]);
        int (*verify)(void *userdata, const char *hash, const char *pw, size_t len);
        void *userdata;
} SecretOffload;

/* For the calling thread only; NULL: here. o must outlive its use. */
void secret_offload_set(const SecretOffload *o);

/* A random password of SECRET_GEN_PASSWORD_LEN characters [A-Za-z0-9]. */
void secret_password_generate(char ret[SECRET_GEN_PASSWORD_LEN + 1]);

/* Overwrite memory that held a secret. */
void secret_wipe(void *p, size_t n);
