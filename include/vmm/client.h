/* SPDX-License-Identifier: MIT */
/* libvmm: a small blocking client for vmmd's MessagePack-RPC sockets
 * (vmmd-protocol(7)), over TCP or the admin Unix socket.
 *
 * One VmmClient is one connection; it is not thread-safe. Every function that
 * can fail returns a negative errno-style value:
 *   -ECONNREFUSED, -EHOSTUNREACH, ... connecting failed (as connect(2) says)
 *   -ENXIO        the host name does not resolve (getaddrinfo(3) found no address)
 *   -EAGAIN       the resolver did not answer (a temporary failure; try again)
 *   -ECONNRESET   the server closed the connection (also mid-message)
 *   -ETIMEDOUT    the timeout set with vmm_client_set_timeout() passed
 *   -EBADMSG      the server sent bytes that are not MessagePack
 *   -EMSGSIZE     a message (sent or received) is over the size or depth limit
 *   -EPROTO       a MessagePack object that is not a response or notification
 *   -ENOMEM, -EINVAL, -EBUSY as usual
 * After a receive error other than -ETIMEDOUT the connection is unusable and
 * every later call returns the same error. A daemon error is not a failure of
 * the call: the function succeeds and VmmMessage.error says what went wrong.
 *
 * Typical use:
 *
 *     VmmClient *c;
 *     VmmMessage m;
 *     msgpack_packer *pk;
 *     r = vmm_client_new(&c);
 *     r = vmm_client_connect(c, "127.0.0.1:7707");
 *     r = vmm_client_begin_map(c, "auth", 2, &pk, NULL);
 *     vmm_pack_kv_str(pk, "vm_id", "vm1");
 *     vmm_pack_kv_str(pk, "password", pw);
 *     r = vmm_call_end(c, &m);
 *     if (r >= 0 && m.error == VMM_OK) use(vmm_object_get(&m.result, "token"));
 *     vmm_message_release(&m);
 *     vmm_client_free(c);
 *
 * Pipelining: begin/end (or vmm_client_queue()) many requests, then
 * vmm_client_flush() and vmm_client_read() the responses; they come back in
 * request order. Flushing also buffers incoming bytes, so a long pipeline
 * does not deadlock against a server that stops reading a client which does
 * not read its replies. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/protocol.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct VmmClient VmmClient;

typedef enum VmmMessageType {
        VMM_MESSAGE_RESPONSE = VMM_MSG_RESPONSE,
        VMM_MESSAGE_NOTIFICATION = VMM_MSG_NOTIFICATION,
        _VMM_MESSAGE_TYPE_MAX,
        _VMM_MESSAGE_TYPE_INVALID = -1,
} VmmMessageType;

/* One message from the server. The strings and result stay valid until
 * vmm_message_release(). */
typedef struct VmmMessage {
        VmmMessageType type;
        /* Response: */
        uint32_t msgid;              /* 0: an error that belongs to no request */
        VmmError error;              /* VMM_OK, a code, or _VMM_E_INVALID (unknown code) */
        const char *error_code;      /* the code as sent; NULL on success */
        const char *error_message;   /* NULL on success */
        /* Notification: */
        const char *method;          /* e.g. "event"; NULL for a response */
        /* Response: the result (a map; nil on error). Notification: its params. */
        msgpack_object result;
        /* private */
        msgpack_zone *zone;
} VmmMessage;

/* A client with no connection yet: set the timeout and limits, then connect. */
int vmm_client_new(VmmClient **ret);
/* Closes the connection and frees everything; returns NULL. Accepts NULL. */
VmmClient *vmm_client_free(VmmClient *c);

/* Connect to "host:port", "[v6addr]:port", "host" or "v6addr" (port 7707) or,
 * when the address contains a '/', a Unix socket path. A host name that does
 * not resolve is -ENXIO (before libvmm 0.2: -EHOSTUNREACH, which now only
 * means what connect(2) means by it); a malformed address is -EINVAL. Only
 * once per client. */
int vmm_client_connect(VmmClient *c, const char *address);
int vmm_client_connect_unix(VmmClient *c, const char *path);
int vmm_client_connect_tcp(VmmClient *c, const char *host, const char *port);
/* Use a connected stream socket instead; the client owns it from then on
 * (also on failure). */
int vmm_client_adopt_fd(VmmClient *c, int fd);

int vmm_client_fd(const VmmClient *c);
/* Per blocking operation (connect, flush, read); -1 (the default) waits forever. */
void vmm_client_set_timeout(VmmClient *c, int timeout_ms);
/* Limits on one outgoing request (default VMM_MAX_MSG_TCP, or VMM_MAX_MSG_ADMIN
 * on a Unix socket) and one incoming message (default 4 MiB). */
void vmm_client_set_max_request(VmmClient *c, size_t bytes);
void vmm_client_set_max_message(VmmClient *c, size_t bytes);

/* Start a request [0, msgid, method, params] with a params array of n_params
 * elements: the returned packer is positioned to write them. Then
 * vmm_client_end() queues it (or vmm_client_cancel() drops it). Only one
 * request can be open at a time. ret_pk and ret_msgid may be NULL. */
int vmm_client_begin(VmmClient *c, const char *method, uint32_t n_params,
                     msgpack_packer **ret_pk, uint32_t *ret_msgid);
/* The same with params [{...}]: write map_size key/value pairs. */
int vmm_client_begin_map(VmmClient *c, const char *method, uint32_t map_size,
                         msgpack_packer **ret_pk, uint32_t *ret_msgid);
/* Attach a descriptor to the open request: it is sent (SCM_RIGHTS) with the
 * request's first bytes, on a Unix socket only. The caller keeps owning fd,
 * and it must stay open until the request is flushed. */
int vmm_client_attach_fd(VmmClient *c, int fd);
/* Queue the open request (-EMSGSIZE and dropped when over the request limit). */
int vmm_client_end(VmmClient *c);
void vmm_client_cancel(VmmClient *c);
/* begin + end for params []. */
int vmm_client_queue(VmmClient *c, const char *method, uint32_t *ret_msgid);

/* Send every queued request. */
int vmm_client_flush(VmmClient *c);
/* Number of bytes queued but not sent yet. */
size_t vmm_client_pending(const VmmClient *c);

/* Flush, then wait for and return the next message (response or
 * notification). Release it with vmm_message_release(). */
int vmm_client_read(VmmClient *c, VmmMessage *ret);
void vmm_message_release(VmmMessage *m);

/* End the open request, flush, and return its response. Notifications and
 * responses to earlier pipelined requests that arrive first are dropped. A
 * msgid 0 error response (the server refused the stream) is returned too. */
int vmm_call_end(VmmClient *c, VmmMessage *ret);
/* One synchronous call; params NULL sends [], else [*params] (params should be
 * a map). */
int vmm_call(VmmClient *c, const char *method, const msgpack_object *params,
             VmmMessage *ret);

/* Calls of part 2 that every client makes the same way (libvmm 0.3). Each is
 * one synchronous call, as vmm_call(): it returns 0 with *ret holding the
 * response (which may carry the daemon's error), or a negative errno.
 * token: NULL on an attached connection (after auth, user.auth or resume)
 * and on the admin socket; else a session token sent with the request, for
 * a stateless client on TCP.
 *
 * vmm_whoami()       whoami: {"kind": "vm"|"user", "vm_id"?, "name"?, "role"?}
 * vmm_user_auth()    user.auth: logs a person in and attaches this
 *                    connection; {"name", "role", "token", "expires_at"}
 * vmm_booking_get()  booking.get: {"booking": {...} | nil}; vm_id NULL for
 *                    a VM session's own booking
 * vmm_events_watch() events.watch: {"feed", "oldest"}, then "event"
 *                    notifications (read them with vmm_client_read()); since
 *                    NULL for live events only, else every kept feed event
 *                    after *since first; types: n_types prefixes such as
 *                    "booking." (NULL and 0 for all). */
int vmm_whoami(VmmClient *c, const char *token, VmmMessage *ret);
int vmm_user_auth(VmmClient *c, const char *name, const char *password, VmmMessage *ret);
int vmm_booking_get(VmmClient *c, const char *vm_id, const char *token, VmmMessage *ret);
int vmm_events_watch(VmmClient *c, const uint64_t *since, const char *const *types,
                     size_t n_types, VmmMessage *ret);

/* Packing helpers; each returns 0 or a negative errno. */
int vmm_pack_str(msgpack_packer *pk, const char *s);
int vmm_pack_strn(msgpack_packer *pk, const char *s, size_t n);
int vmm_pack_kv_str(msgpack_packer *pk, const char *key, const char *value);
int vmm_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t value);
int vmm_pack_kv_bool(msgpack_packer *pk, const char *key, bool value);
/* nil as the value (vm.set clears a field with it). */
int vmm_pack_kv_nil(msgpack_packer *pk, const char *key);
/* An array of n strings or unsigned integers (vm_ids, ip, disk sizes); a
 * NULL among the strings is -EINVAL and nothing is packed. */
int vmm_pack_kv_strv(msgpack_packer *pk, const char *key, const char *const *v, size_t n);
int vmm_pack_kv_uintv(msgpack_packer *pk, const char *key, const uint64_t *v, size_t n);

/* Inspecting results. vmm_object_get() returns the value of key in a map, or
 * NULL when o is not a map or has no such key. */
const msgpack_object *vmm_object_get(const msgpack_object *o, const char *key);
/* Missing (NULL) or nil: a record's key that is not set ("owner", "booking"). */
bool vmm_object_is_nil(const msgpack_object *o);
/* A string value equal to s. */
bool vmm_object_streq(const msgpack_object *o, const char *s);
/* A signed integer value (a time, which may lie before 1970); false if o is
 * NULL, not an integer, or past INT64_MAX. */
bool vmm_object_int(const msgpack_object *o, int64_t *ret);
/* A number: a float, or an integer as a double (a load average). */
bool vmm_object_double(const msgpack_object *o, double *ret);
/* A boolean value ("connected"). */
bool vmm_object_bool(const msgpack_object *o, bool *ret);
/* A string value as a new NUL-terminated copy (NULL if not a string or no memory). */
char *vmm_object_strdup(const msgpack_object *o);
/* An unsigned integer value; false if o is NULL or not a non-negative integer. */
bool vmm_object_uint(const msgpack_object *o, uint64_t *ret);

/* ---- Non-blocking connections (src/libvmm/client-async.c) ----
 *
 * A VmmAsync is one connection driven by the caller's own event loop: watch
 * vmm_async_fd() for reading (and for writing while vmm_async_want_write()),
 * call vmm_async_flush() when it is writable and vmm_async_read() until it
 * returns -EAGAIN when it is readable. Nothing waits, except that a host name
 * in vmm_async_connect() is resolved on the spot (pass a numeric address to
 * avoid that). Requests are written as with VmmClient (begin, pack, end) and
 * may be queued before the connection is established. Errors are those of
 * VmmClient plus -EAGAIN ("not now"); after any other error the connection is
 * unusable, but whole messages received before it are still returned first.
 * Not thread-safe. */
typedef struct VmmAsync VmmAsync;

int vmm_async_new(VmmAsync **ret);
/* Closes the connection and frees everything; returns NULL. Accepts NULL. */
VmmAsync *vmm_async_free(VmmAsync *a);
/* Starts connecting to an address as vmm_client_connect() takes it; 0 when
 * the connection is made or under way. */
int vmm_async_connect(VmmAsync *a, const char *address);
int vmm_async_fd(const VmmAsync *a);
/* Defaults: VMM_MAX_MSG_TCP (VMM_MAX_MSG_ADMIN on a Unix socket) and 4 MiB. */
void vmm_async_set_max_request(VmmAsync *a, size_t bytes);
void vmm_async_set_max_message(VmmAsync *a, size_t bytes);
int vmm_async_begin(VmmAsync *a, const char *method, uint32_t n_params,
                    msgpack_packer **ret_pk, uint32_t *ret_msgid);
int vmm_async_begin_map(VmmAsync *a, const char *method, uint32_t map_size,
                        msgpack_packer **ret_pk, uint32_t *ret_msgid);
/* Queue the open request (-EMSGSIZE and dropped when over the limit). */
int vmm_async_end(VmmAsync *a);
void vmm_async_cancel(VmmAsync *a);
/* Sends what the socket takes now: 0 when everything queued went out,
 * -EAGAIN when more is left (wait until the fd is writable). */
int vmm_async_flush(VmmAsync *a);
bool vmm_async_want_write(const VmmAsync *a);
size_t vmm_async_pending(const VmmAsync *a);
/* One whole message (release it with vmm_message_release()), or -EAGAIN
 * when none is complete yet. */
int vmm_async_read(VmmAsync *a, VmmMessage *ret);

#ifdef __cplusplus
}
#endif
