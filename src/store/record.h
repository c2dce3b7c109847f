/* SPDX-License-Identifier: MIT */
/* Record codecs: StoreVm and StoreSession as small versioned MessagePack maps
 * (the same codec as the wire). Pure functions: no LMDB here. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define RECORD_VERSION 1

/* Encode into a malloc'ed buffer. */
int record_vm_encode(const StoreVm *vm, uint8_t **ret_buf, size_t *ret_len);
/* Decode; -EBADMSG on anything malformed or out of range, -EPROTO for a newer
 * record version. Safe on hostile bytes (bounded pre-scan first). */
int record_vm_decode(const uint8_t *buf, size_t len, StoreVm *ret);

int record_session_encode(const StoreSession *s, uint8_t **ret_buf, size_t *ret_len);
int record_session_decode(const uint8_t *buf, size_t len, const uint8_t hash[STORE_HASH_BYTES],
                          StoreSession *ret);
