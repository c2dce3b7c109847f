/* SPDX-License-Identifier: MIT */
/* Record codecs: StoreVm and StoreSession as small versioned MessagePack maps
 * (the same codec as the wire). Pure functions: no LMDB here.
 *
 * Layout (every record is one map with a "v" key, the record version):
 *   vm:      {"v", "vm_id", "pwhash", "described", "ram", "cpu", "registered_at",
 *             "updated_at", "last_seen_at", "disks": [{"id", "size"}, ...]}
 *   session: {"v", "vm_id", "created_at", "expires_at"}   (the hash is the key)
 *   disk:    {"v", "vm_id", "size"}                       (the disk id is the key)
 * Decoding is strict: every key above present exactly once, no other key, each
 * value of its type and within the size of the C field; anything else is
 * -EBADMSG. A "v" greater than RECORD_VERSION is -EPROTO (checked before the
 * other keys). Encoding refuses (-EINVAL) a struct that would not decode. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define RECORD_VERSION 1
#define RECORD_MAX_BYTES 16384   /* larger stored values are refused unread */

/* Encode into a malloc'ed buffer. */
int record_vm_encode(const StoreVm *vm, uint8_t **ret_buf, size_t *ret_len);
/* Decode; -EBADMSG on anything malformed or out of range, -EPROTO for a newer
 * record version. Safe on hostile bytes (bounded pre-scan first). */
int record_vm_decode(const uint8_t *buf, size_t len, StoreVm *ret);

int record_session_encode(const StoreSession *s, uint8_t **ret_buf, size_t *ret_len);
int record_session_decode(const uint8_t *buf, size_t len, const uint8_t hash[STORE_HASH_BYTES],
                          StoreSession *ret);

/* The value of the disks table: which VM holds the disk, and its size. */
int record_disk_encode(const char *vm_id, uint64_t size, uint8_t **ret_buf, size_t *ret_len);
int record_disk_decode(const uint8_t *buf, size_t len, char ret_vm_id[VMM_VM_ID_MAX + 1],
                       uint64_t *ret_size);
