/* SPDX-License-Identifier: MIT */
/* Layer L4: the methods, one file per domain; this header is their common
 * part (methods-common.c: packing a VM, paging, ending sessions) and the
 * rows each domain file exports for the manager's method table. A method
 * file calls layers L0-L3 and methods-common; never listen or manager. */
#pragma once

#include "events.h"
#include "manager.h"
#include "rpc.h"
#include "store/store.h"

/* The rows of each domain (arrays of pointers, for method_table_build). */
#define METHOD_LIST(name) \
        extern const Method *const name##_methods[]; extern const size_t n_##name##_methods
METHOD_LIST(session);
METHOD_LIST(vm);
METHOD_LIST(list);
METHOD_LIST(admin);
METHOD_LIST(user);
METHOD_LIST(group);
METHOD_LIST(booking);
METHOD_LIST(catalog);
METHOD_LIST(monitor);
#define METHOD_ROWS(name, ...) \
        const Method *const name##_methods[] = { __VA_ARGS__ }; \
        const size_t n_##name##_methods = ELEMENTSOF(name##_methods)
#define FIELDS(f) f, ELEMENTSOF(f)

/* Shorthands for the columns of a row. */
#define ON_TCP   METHOD_TCP
#define ON_ADMIN METHOD_ADMIN
#define ON_BOTH  (METHOD_TCP | METHOD_ADMIN)

void pstr_copy(char *dst, size_t cap, const ParamStr *s);
bool pstr_eq(const ParamStr *s, const char *str);

/* ---- VMs as answered ---- */

/* The record's own fields of a VM (what depends only on its stored bytes):
 * a map header for the whole answer and its first entries. */
int pack_vm_fields(msgpack_packer *pk, const StoreVm *vm);
/* The rest: connected, authorized (1/0 when the caller knows, -1 to look
 * it up), status, booking. It reads only vm->vm_id and vm->requested of the
 * record (vm.get's cache gives it no more). */
int pack_vm_state(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm,
                  int authorized);
/* Its two parts: what lives in memory or depends on the caller (connected,
 * authorized, status), and what is stored (booking: a function of the
 * database alone, so of the read transaction's snapshot). */
int pack_vm_live(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm,
                 int authorized);
int pack_vm_booking(StoreTxn *t, msgpack_packer *pk, const char *vm_id);
int pack_vm(Manager *m, StoreTxn *t, msgpack_packer *pk, const StoreVm *vm);
/* Reply the VM record (reads what it needs in a read transaction). */
int reply_vm(Request *r, const StoreVm *vm);
/* "on", "off" or "requested". */
const char *vm_status(Manager *m, const StoreVm *vm);
/* Holds at least one unexpired session. */
bool vm_authorized(Manager *m, StoreTxn *t, const char *vm_id);
/* Reply a packed map from sb (or -ENOMEM) and free sb. */
int reply_packed(Request *r, msgpack_sbuffer *sb, bool failed);
/* A VM read for a request (a read transaction of its own). */
int read_vm(Request *r, const char *vm_id, StoreVm *ret);

/* The hostname, ip and os given (each may be absent) into a VM record. */
void vm_apply_meta(StoreVm *vm, const ParamStr *hostname, const ParamList *ip,
                   const ParamAny *os);
/* {"booking": {...} | nil} of a VM, as a whole result map. */
int pack_booking_result(Manager *m, msgpack_packer *pk, const char *vm_id);
/* The booking map of b. */
int pack_booking(msgpack_packer *pk, const StoreBooking *b);

/* ---- pages of lists ---- */

typedef struct Page {
        msgpack_sbuffer items;
        msgpack_packer pk;
        size_t count, limit;
        bool more;
        char last[128];                 /* the key of the last item: "next" */
} Page;

void page_init(Page *pg, const ParamUint *limit);
void page_done(Page *pg);
/* Before adding an item: false (and more set) when the page is full. */
bool page_room(Page *pg);
/* After packing an item whose key is `key`: false (item dropped, more set)
 * when it made the page too big. before: items.size before packing it. */
bool page_added(Page *pg, size_t before, const char *key);
/* Reply {key: [items], "next": last or nil}. */
int page_reply(Request *r, Page *pg, const char *key);
/* The same with an unsigned "next". */
int page_reply_uint(Request *r, Page *pg, const char *key);

/* ---- sessions ending in a write ---- */

typedef struct Ended {
        uint8_t (*hashes)[SECRET_HASH_BYTES];
        size_t n, cap;
} Ended;

/* writer: ends the sessions of a VM (vm_id) or a user (user) beyond keep
 * (oldest first), or all but except when keep == 0 (except may be NULL);
 * each gets a session.ended event with reason; their hashes go to *ended
 * for the loop (ended_detach after the commit). */
int end_sessions(Request *r, StoreTxn *t, const char *vm_id, const char *user, size_t keep,
                 const uint8_t *except, const char *reason, Ended *ended);
/* The same for a job that is no request. */
int end_sessions_to(PendingEvent **events, StoreTxn *t, const char *vm_id, const char *user,
                    size_t keep, const uint8_t *except, const char *reason, Ended *ended);
/* One session (as read in t). */
int end_session(Request *r, StoreTxn *t, const StoreSession *s, const char *reason,
                Ended *ended);
int end_session_to(PendingEvent **events, StoreTxn *t, const StoreSession *s, const char *reason,
                   Ended *ended);
/* loop, after the commit: the connections of the ended sessions become
 * anonymous. */
void ended_detach(Manager *m, Ended *ended);
void ended_free(Ended *ended);
/* Detach every connection of a VM or a user (its sessions were removed). */
void detach_owner(Manager *m, PrincipalKind kind, const char *name);

/* Ends expired sessions and renews the ones in use (a write job; the
 * manager's timer calls it). */
void session_purge(Manager *m);

/* The public id of a session hash; the first hash such an id could name;
 * whether a string is one. */
void session_id_prefix(const char *id, uint8_t ret[SECRET_HASH_BYTES]);
bool valid_session_id(const char *s, size_t len);
/* vm.report's and vm.set's "os": nil or {"name", "version"}. */
bool check_os_param(const msgpack_object *o, char *msg, size_t len);
/* Free vm.get's answer cache. */
void vm_cache_free(VmCache *c);
/* The public id of a session hash. */
void session_public_id(const uint8_t hash[SECRET_HASH_BYTES], char ret[SECRET_SESSION_ID_LEN + 1]);

/* Log an admin's (or a user peer's) change: the caller and what. */
#define LOG_CHANGE(r, mid, vm, fmt, ...) \
        log_struct(LOG_INFO, &(LogFields) { .message_id = (mid), .vm_id = (vm), \
                                           .admin_uid = (r)->client->socket == SOCKET_ADMIN ? \
                                                        (long) (r)->client->uid : -1, \
                                           .user = (r)->caller.name[0] ? (r)->caller.name : NULL, \
                                           .peer = (r)->client->peer_str }, \
                   "%s: " fmt, (r)->client->peer_str, __VA_ARGS__)
