/* SPDX-License-Identifier: MIT */
/* Layer L1: the loop's in-memory session state. Which connections are
 * attached to which stored session ("connected"), through a SessionLink
 * that the connection's owner embeds; and per-peer-address counters
 * (connections, failed logins, registrations, hashes in flight). Nothing
 * here touches the disk or knows what a connection is. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "shared/secret.h"
#include "store/store.h"
#include "vmm/protocol.h"

typedef struct Sessions Sessions;
typedef struct Peer Peer;

/* Who a session belongs to. */
typedef enum PrincipalKind {
        PRINCIPAL_NONE = 0,     /* anonymous */
        PRINCIPAL_VM,
        PRINCIPAL_USER,
        PRINCIPAL_PEER,         /* an admin-socket peer, by its credentials */
        _PRINCIPAL_KIND_MAX,
        _PRINCIPAL_KIND_INVALID = -1,
} PrincipalKind;

/* One connection's attachment; embedded in the owner's per-connection
 * state, linked into the session it is attached to. */
typedef struct SessionLink {
        struct SessionLink *prev, *next;
        bool attached;
        PrincipalKind kind;             /* PRINCIPAL_VM or PRINCIPAL_USER */
        uint8_t hash[SECRET_HASH_BYTES];
        char name[STORE_NAME_MAX + 1];  /* the vm_id or the user name */
} SessionLink;

int sessions_new(Sessions **ret);
Sessions *sessions_free(Sessions *s);

/* Attach l to the session hash of (kind, name); detaches it from any other
 * session first. */
int sessions_attach(Sessions *s, SessionLink *l, const uint8_t hash[SECRET_HASH_BYTES],
                    PrincipalKind kind, const char *name);
/* Detach l (no-op if not attached). Returns true if it was attached. */
bool sessions_detach(Sessions *s, SessionLink *l);
/* Detach every link attached to the session; f (may be NULL) is called for
 * each after it is detached. Returns how many. */
typedef void (*SessionLinkFunc)(SessionLink *l, void *userdata);
size_t sessions_end(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES], SessionLinkFunc f,
                    void *userdata);
/* The same for every session of (kind, name). */
size_t sessions_end_owner(Sessions *s, PrincipalKind kind, const char *name, SessionLinkFunc f,
                          void *userdata);
bool sessions_is_attached(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES]);
bool sessions_vm_connected(Sessions *s, const char *vm_id);
size_t sessions_connected_count(Sessions *s);
/* Connected VM ids in byte order strictly after `after` (NULL: from the
 * start): calls f until it returns non-zero. */
int sessions_connected_foreach(Sessions *s, const char *after,
                               int (*f)(void *userdata, const char *vm_id), void *userdata);
/* Hashes of all attached sessions, sorted (malloc'ed array of n * 32 bytes):
 * a snapshot for the writer thread. */
int sessions_attached_hashes(Sessions *s, uint8_t **ret, size_t *ret_n);

/* ---- peers, keyed by address (not port) ----
 * IPv4-mapped IPv6 counts as its IPv4 address; IPv6 by its first
 * v6_prefix bits; a Unix socket is one peer. */
Peer *sessions_peer_get(Sessions *s, const struct sockaddr *sa, unsigned v6_prefix); /* NULL: OOM */
/* The same from a textual address (a trusted proxy's "peer"); -EINVAL if it
 * is not an IPv4 or IPv6 address. */
int sessions_peer_get_text(Sessions *s, const char *addr, size_t len, unsigned v6_prefix,
                           Peer **ret);
void sessions_peer_put(Sessions *s, Peer *p);
/* The address as text (the folded form: "127.0.0.1", "2001:db8::/64", "unix"). */
const char *sessions_peer_address(Peer *p);

void sessions_peer_conn_add(Peer *p);
void sessions_peer_conn_remove(Peer *p);
unsigned sessions_peer_conns(Peer *p);

/* Failed logins: true while the peer is rate limited at now (ms). */
bool sessions_peer_limited(Peer *p, int64_t now, unsigned max_per_minute);
void sessions_peer_failed(Peer *p, int64_t now);
/* Registrations: true (and counted) when one more is allowed this minute. */
bool sessions_peer_register(Peer *p, int64_t now, unsigned max_per_minute);
/* Hashes in flight: true (and counted) when one more may start. */
bool sessions_peer_hash_begin(Peer *p, unsigned max);
void sessions_peer_hash_end(Peer *p);
/* Failed-login log lines: at most SESSIONS_LOG_PER_MINUTE per peer a minute. */
#define SESSIONS_LOG_PER_MINUTE 5
bool sessions_peer_log_allowed(Peer *p, int64_t now);
/* Forget peers nobody holds whose windows have passed. */
void sessions_peers_gc(Sessions *s, int64_t now);
