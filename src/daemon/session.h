/* SPDX-License-Identifier: MIT */
/* In-memory session state of the loop: which connections are attached to
 * which stored session ("connected"), and per-peer-address counters
 * (connections, failed logins). Nothing here touches the disk. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "shared/secret.h"
#include "vmm/protocol.h"

typedef struct Conn Conn;
typedef struct Sessions Sessions;
typedef struct Peer Peer;

int sessions_new(Sessions **ret);
Sessions *sessions_free(Sessions *s);

/* Attach c to the session hash of vm_id; detaches it from any other first. */
int sessions_attach(Sessions *s, Conn *c, const uint8_t hash[SECRET_HASH_BYTES], const char *vm_id);
/* Detach c (no-op if not attached). Returns true if it was attached. */
bool sessions_detach(Sessions *s, Conn *c);
/* Detach every connection attached to the session; returns how many. */
size_t sessions_end(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES]);
/* Detach every connection attached to a session of vm_id. */
size_t sessions_end_vm(Sessions *s, const char *vm_id);
bool sessions_is_attached(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES]);
bool sessions_vm_connected(Sessions *s, const char *vm_id);
size_t sessions_connected_count(Sessions *s);
/* Connected VM ids in byte order strictly after `after` (NULL: from the
 * start): calls f until it returns non-zero. */
int sessions_connected_foreach(Sessions *s, const char *after,
                               int (*f)(void *userdata, const char *vm_id), void *userdata);
/* Hashes of all attached sessions (malloc'ed array of n * 32 bytes). */
int sessions_attached_hashes(Sessions *s, uint8_t **ret, size_t *ret_n);

/* Peers, keyed by address (not port). */
Peer *sessions_peer_ref(Sessions *s, const struct sockaddr *sa);   /* NULL on OOM */
void sessions_peer_unref(Sessions *s, Peer *p);
unsigned sessions_peer_conns(Peer *p);
/* Failed logins: true while the peer is rate limited at now_ms. */
bool sessions_peer_limited(Peer *p, int64_t now, unsigned max_per_minute);
void sessions_peer_failed(Peer *p, int64_t now);
/* Failed-login log lines: at most SESSIONS_LOG_PER_MINUTE per peer a minute. */
#define SESSIONS_LOG_PER_MINUTE 5
bool sessions_peer_log_allowed(Peer *p, int64_t now);
/* Forget peers with no connection whose failure window has passed. */
void sessions_peers_gc(Sessions *s, int64_t now);
