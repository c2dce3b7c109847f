/* SPDX-License-Identifier: MIT */
/* vmmd wire protocol 1: method names, error codes and limits.
 * This header is installed and is the C view of vmmd-protocol(7). */
#pragma once

#include <stdint.h>

#define VMM_PROTOCOL_VERSION 1

/* MessagePack-RPC message types */
#define VMM_MSG_REQUEST      0
#define VMM_MSG_RESPONSE     1
#define VMM_MSG_NOTIFICATION 2

#define VMM_DEFAULT_PORT  7707
#define VMM_DEFAULT_HOST  "127.0.0.1"

/* Limits (defaults of the daemon; the wire contract) */
#define VMM_MAX_MSG_TCP        (64u * 1024u)
#define VMM_MAX_MSG_ADMIN      (1024u * 1024u)
#define VMM_MAX_DEPTH          8
#define VMM_MAX_DISKS          64
#define VMM_VM_ID_MAX          48
#define VMM_DISK_ID_MAX        64
#define VMM_PASSWORD_MIN       6
#define VMM_PASSWORD_MAX       1024
#define VMM_RAM_MIN            1ull
#define VMM_RAM_MAX            4294967295ull
#define VMM_CPU_MIN            1ull
#define VMM_CPU_MAX            1024ull
#define VMM_DISK_SIZE_MIN      1ull
#define VMM_DISK_SIZE_MAX      (1ull << 40)
#define VMM_PAGE_MIN           1
#define VMM_PAGE_MAX           10000
#define VMM_PAGE_DEFAULT       1000
#define VMM_PAGE_BYTES_MAX     (1024u * 1024u)
#define VMM_SESSIONS_PER_VM    16
#define VMM_AUTH_FAILS_PER_MIN 10
#define VMM_CONNS_MAX          16384
#define VMM_CONNS_PER_PEER     1024
#define VMM_IDLE_TIMEOUT_MS    30000
#define VMM_SESSION_TTL_S      86400
#define VMM_TOKEN_LEN          43   /* base64url of 32 bytes, no padding */
#define VMM_TOKEN_BYTES        32

/* Error codes, in precedence order (lower value wins when several apply). */
typedef enum VmmError {
        VMM_OK = 0,
        VMM_E_BAD_REQUEST,
        VMM_E_UNKNOWN_METHOD,
        VMM_E_TOO_LARGE,
        VMM_E_UNAUTHENTICATED,
        VMM_E_RATE_LIMITED,
        VMM_E_FORBIDDEN,
        VMM_E_NOT_FOUND,
        VMM_E_EXISTS,
        VMM_E_CONFLICT,
        VMM_E_UNAVAILABLE,
        VMM_E_SHUTTING_DOWN,
        VMM_E_INTERNAL,
        _VMM_E_MAX,
        _VMM_E_INVALID = -1,
} VmmError;

/* "bad_request", ...; NULL for VMM_OK or out of range. */
const char *vmm_error_to_string(VmmError e);
/* Inverse; _VMM_E_INVALID when unknown. */
VmmError vmm_error_from_string(const char *s, size_t len);

/* Client methods (TCP) */
#define VMM_M_PING        "ping"
#define VMM_M_REGISTER    "register"
#define VMM_M_AUTH        "auth"
#define VMM_M_RESUME      "resume"
#define VMM_M_VM_ADD      "vm.add"
#define VMM_M_VM_GET      "vm.get"
#define VMM_M_VM_UPDATE   "vm.update"
#define VMM_M_VM_LIST     "vm.list"
#define VMM_M_DISK_LIST   "disk.list"
#define VMM_M_PASSWD      "passwd"
#define VMM_M_LOGOUT      "logout"

/* Admin methods (Unix socket) */
#define VMM_M_STATUS         "status"
#define VMM_M_VM_CREATE      "vm.create"
#define VMM_M_VM_DELETE      "vm.delete"
#define VMM_M_VM_PASSWD      "vm.passwd"
#define VMM_M_SESSION_LIST   "session.list"
#define VMM_M_SESSION_REVOKE "session.revoke"
#define VMM_M_CONN_LIST      "conn.list"
#define VMM_M_CONN_KILL      "conn.kill"
#define VMM_M_EVENTS_WATCH   "events.watch"
#define VMM_M_BACKUP         "backup"
#define VMM_M_SHUTDOWN       "shutdown"
/* Asks the daemon to read its configuration file again (vmadm reload, the
 * unit's ExecReload=): {} when the new settings apply, bad_request with
 * "FILE:LINE: message" when the file is refused and the old settings stay. */
#define VMM_M_RELOAD         "reload"

/* Part 2: people, groups, bookings, requests, monitoring (both sockets
 * unless the contract says otherwise). */
#define VMM_M_USER_AUTH       "user.auth"
#define VMM_M_WHOAMI          "whoami"
#define VMM_M_USER_CREATE     "user.create"
#define VMM_M_USER_GET        "user.get"
#define VMM_M_USER_LIST       "user.list"
#define VMM_M_USER_SET        "user.set"
#define VMM_M_USER_DELETE     "user.delete"
#define VMM_M_VM_SET          "vm.set"
#define VMM_M_VM_APPROVE      "vm.approve"
#define VMM_M_VM_SUSPEND      "vm.suspend"
#define VMM_M_VM_REPORT       "vm.report"
#define VMM_M_VM_MONITOR      "vm.monitor"
#define VMM_M_GROUP_CREATE    "group.create"
#define VMM_M_GROUP_GET       "group.get"
#define VMM_M_GROUP_LIST      "group.list"
#define VMM_M_GROUP_RENAME    "group.rename"
#define VMM_M_GROUP_ADD       "group.add"
#define VMM_M_GROUP_REMOVE    "group.remove"
#define VMM_M_GROUP_DELETE    "group.delete"
#define VMM_M_BOOKING_CREATE  "booking.create"
#define VMM_M_BOOKING_RENEW   "booking.renew"
#define VMM_M_BOOKING_CANCEL  "booking.cancel"
#define VMM_M_BOOKING_GET     "booking.get"
#define VMM_M_BOOKING_LIST    "booking.list"
#define VMM_M_BOOKING_HISTORY "booking.history"
#define VMM_M_OS_CREATE       "os.create"
#define VMM_M_OS_LIST         "os.list"
#define VMM_M_OS_DELETE       "os.delete"
#define VMM_M_REQUEST_CREATE  "request.create"
#define VMM_M_REQUEST_LIST    "request.list"
#define VMM_M_REQUEST_APPROVE "request.approve"
#define VMM_M_REQUEST_REJECT  "request.reject"
#define VMM_M_REQUEST_CANCEL  "request.cancel"

/* Part 2 limits (defaults; the wire contract) */
#define VMM_USER_NAME_MAX          64
#define VMM_GROUP_NAME_MAX         64
#define VMM_OS_NAME_MAX            64
#define VMM_HOSTNAME_MAX           253
#define VMM_IP_MAX                 16
#define VMM_DESCRIPTION_MAX        4096
#define VMM_VM_IDS_MAX             1000
#define VMM_REQUEST_COUNT_MAX      16
#define VMM_BOOKING_MAX_HOURS      168
#define VMM_BOOKINGS_PER_USER      16
#define VMM_BOOKING_WARN_MINUTES   15
#define VMM_HEARTBEAT_TIMEOUT_S    60
#define VMM_EVENT_HISTORY          100000
#define VMM_REGISTRATIONS_PER_MIN  10
#define VMM_HASHES_PER_PEER        4
