/* SPDX-License-Identifier: MIT */
/* Layer L0 (src/store): record codecs. Every stored record is a small
 * versioned MessagePack map (the same codec as the wire), described by a
 * table of fields (record.c) that serves both directions. Pure functions: no
 * LMDB here.
 *
 * Layout (every record is one map with a "v" key, the record version):
 *   vm:      {"v", "vm_id", "pwhash", "described", "ram", "cpu", "registered_at",
 *             "updated_at", "last_seen_at", "disks": [{"id", "size"}, ...]}
 *            version 2 adds "hostname", "ip", "os_name", "os_version", "owner",
 *            "group", "access", "requested", "free_since"
 *   session: {"v", "vm_id", "created_at", "expires_at"}   (the hash is the key)
 *            version 2 adds "user"; "vm_id" or "user" is nil
 *   disk:    {"v", "vm_id", "size"}                       (the disk id is the key)
 *   user, group, booking, history, os, request: version 2 only (record.c).
 * Decoding is strict: every key of the record's version present exactly
 * once, no other key, each value of its type and within the size of the C
 * field; anything else is -EBADMSG. A "v" greater than RECORD_VERSION is
 * -EPROTO (checked before the other keys). Encoding always writes the
 * newest version and refuses (-EINVAL) a struct that would not decode. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define RECORD_VERSION 2
#define RECORD_MAX_BYTES 32768   /* larger stored values are refused unread */

/* Encode into a malloc'ed buffer. Decode: -EBADMSG on anything malformed or
 * out of range, -EPROTO for a newer record version. Safe on hostile bytes
 * (bounded pre-scan first). On failure *ret is unchanged. */
int record_vm_encode(const StoreVm *vm, uint8_t **ret_buf, size_t *ret_len);
int record_vm_decode(const uint8_t *buf, size_t len, StoreVm *ret);

int record_session_encode(const StoreSession *s, uint8_t **ret_buf, size_t *ret_len);
int record_session_decode(const uint8_t *buf, size_t len, const uint8_t hash[STORE_HASH_BYTES],
                          StoreSession *ret);

/* The value of the disks table: which VM holds the disk, and its size. */
int record_disk_encode(const char *vm_id, uint64_t size, uint8_t **ret_buf, size_t *ret_len);
int record_disk_decode(const uint8_t *buf, size_t len, char ret_vm_id[VMM_VM_ID_MAX + 1],
                       uint64_t *ret_size);

int record_user_encode(const StoreUser *u, uint8_t **ret_buf, size_t *ret_len);
int record_user_decode(const uint8_t *buf, size_t len, StoreUser *ret);
int record_group_encode(const StoreGroup *g, uint8_t **ret_buf, size_t *ret_len);
int record_group_decode(const uint8_t *buf, size_t len, StoreGroup *ret);
int record_booking_encode(const StoreBooking *b, uint8_t **ret_buf, size_t *ret_len);
int record_booking_decode(const uint8_t *buf, size_t len, StoreBooking *ret);
int record_history_encode(const StoreHistory *h, uint8_t **ret_buf, size_t *ret_len);
int record_history_decode(const uint8_t *buf, size_t len, StoreHistory *ret);
int record_os_encode(const StoreOs *os, uint8_t **ret_buf, size_t *ret_len);
int record_os_decode(const uint8_t *buf, size_t len, StoreOs *ret);
int record_request_encode(const StoreRequest *rq, uint8_t **ret_buf, size_t *ret_len);
int record_request_decode(const uint8_t *buf, size_t len, StoreRequest *ret);
