/* SPDX-License-Identifier: MIT */
/* Layer L3: requests. A Client is one connection's application state (who
 * it is, the session it is attached to, its method table); a Request is one
 * message on its way through one pipeline:
 *
 *   envelope -> shape -> method (the client's table) -> params -> caller
 *   (session, kind, role: the table's columns) -> start (loop) -> hash
 *   (pool) -> hashed (loop) -> write (writer thread, group commit, with the
 *   feed events it appends) -> done (loop: reply) -> finish (stats, next)
 *
 * A method holds only what is its own: each phase it has is a function of
 * its row; the pipeline owns error replies, the phases' order, the limits
 * on hashing, the counting of calls, errors and time, and rpc_finish(). */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "conn.h"
#include "jobs.h"
#include "sessions.h"
#include "shared/macro.h"
#include "shared/params.h"

typedef struct Manager Manager;
typedef struct Method Method;
typedef struct Request Request;
typedef struct Watch Watch;
typedef struct PendingEvent PendingEvent;

typedef enum SocketKind {
        SOCKET_TCP,
        SOCKET_ADMIN,
        _SOCKET_KIND_MAX,
        _SOCKET_KIND_INVALID = -1,
} SocketKind;

/* Who a request runs as. */
typedef struct Caller {
        PrincipalKind kind;
        int role;                       /* StoreRole: users and admin-socket peers */
        char name[STORE_NAME_MAX + 1];  /* user name, or the peer's login name */
        char vm_id[VMM_VM_ID_MAX + 1];  /* PRINCIPAL_VM */
        bool has_session;               /* a session of the store (VM or user) */
        bool via_token;                 /* named by a token in the params */
        uint8_t session_hash[SECRET_HASH_BYTES];
} Caller;

typedef struct MethodStats {
        uint64_t calls, errors;
        uint32_t hist[64];              /* time per call, log2 buckets of quarter steps */
} MethodStats;

/* The methods of one daemon: name -> the row serving each socket. */
typedef struct MethodEntry {
        const char *name;
        const Method *row[_SOCKET_KIND_MAX];
        MethodStats stats;
} MethodEntry;

typedef struct MethodTable {
        MethodEntry *entries;           /* sorted by name */
        size_t n;
} MethodTable;

typedef struct Client {
        Manager *manager;
        unsigned n_ref;
        Conn *conn;                     /* NULL once closed */
        SocketKind socket;
        const MethodTable *methods;
        uint64_t id;                    /* = the connection's id */
        Peer *peer;                     /* the address's counters */
        char peer_str[64];              /* "address:port" or "uid=N pid=N" */
        int64_t since_ms;
        uint64_t requests;
        /* admin socket: who the peer is */
        uid_t uid;
        pid_t pid;
        int peer_role;                  /* StoreRole */
        char login[STORE_NAME_MAX + 1];
        /* TCP: the session it is attached to ("connected") */
        SessionLink link;
        Watch *watch;                   /* events.watch; NULL when not watching */
        Request *busy;                  /* the request being worked on */
        bool busy_held;                 /* ... while the connection waits for it */
        bool trusted_proxy;             /* its address is in trusted_proxies */
        bool watch_ended;               /* its watch saw its session end */
        struct Client *prev, *next;     /* Manager.clients */
        bool announced;                 /* conn.opened was emitted */
} Client;

typedef enum MethodFlags {
        METHOD_TCP       = 1u << 0,     /* served on TCP */
        METHOD_ADMIN     = 1u << 1,     /* served on the admin socket */
        METHOD_TCP_ADMIN = 1u << 2,     /* on TCP only with tcp_admin = yes */
        METHOD_PEER      = 1u << 3,     /* takes "peer" from a trusted proxy */
        METHOD_LOGIN     = 1u << 4,     /* refused while the peer is over its failed logins */
} MethodFlags;

/* Which callers a method serves: bits of PrincipalKind. */
#define CALLER_ANON (1u << PRINCIPAL_NONE)
#define CALLER_VM   (1u << PRINCIPAL_VM)
#define CALLER_USER (1u << PRINCIPAL_USER)
#define CALLER_PEER (1u << PRINCIPAL_PEER)
#define CALLER_ANY  (CALLER_ANON | CALLER_VM | CALLER_USER | CALLER_PEER)
#define CALLER_SESSION (CALLER_VM | CALLER_USER | CALLER_PEER)

/* Phase results. */
#define RPC_REPLIED 0           /* the phase replied: the request is done */
#define RPC_NEXT    1           /* go on with the next phase the method has */
#define RPC_FAILED  (-10000)    /* rpc_fail() recorded the error to reply */

struct Method {
        const char *name;
        unsigned flags;                 /* MethodFlags */
        unsigned callers;               /* CALLER_* */
        int min_role;                   /* StoreRole, for users and peers */
        const ParamField *fields;
        size_t n_fields;
        size_t params_size;
        /* across fields (e.g. "at least one of"): part of the shape */
        bool (*check)(const void *params, char *msg, size_t msglen);
        size_t state_size;              /* zeroed, freed with the request */
        void (*state_done)(void *state);/* frees what the state holds (may be NULL) */
        int (*start)(Request *r);                       /* loop */
        int (*hash)(Request *r);                        /* hash pool */
        int (*hashed)(Request *r, int result);          /* loop */
        int (*write)(Request *r, StoreTxn *t);          /* writer thread */
        int (*done)(Request *r);                        /* loop, after the commit */
        /* loop: the write failed for lack of room (-ENOSPC); a way on
         * without it (may be NULL: the request fails with unavailable) */
        int (*unavailable)(Request *r);
        /* hash is long work (a backup): a thread of its own, not the pool */
        bool long_hash;
};

#define REQUEST_INLINE_BYTES 512

struct Request {
        Manager *manager;
        Client *client;                 /* holds a reference */
        uint32_t msgid;
        const Method *method;
        MethodEntry *entry;
        uint8_t *bytes;                 /* the message (after the struct, in its
                                           allocation); msgpack objects point into it */
        msgpack_zone *zone;             /* &zone_s once initialized */
        msgpack_zone zone_s;
        msgpack_object obj;
        void *params;
        void *state;
        ParamStr token, peer_param;
        Caller caller;
        Peer *peer;                     /* whose limits this request counts against */
        bool peer_ref;                  /* peer is this request's own reference */
        bool hashing;                   /* counted in the peer's hashes in flight */
        bool in_hash;                   /* its hash job is queued or running */
        bool abandoned;                 /* answered shutting_down while hashing */
        Job job;
        int hash_result;
        PendingEvent *events;           /* feed events appended by the write */
        VmmError error;                 /* rpc_fail() */
        char error_message[512];
        uint64_t started_us;
        msgpack_sbuffer out;            /* the reply, written when it finishes */
        bool has_params;                /* [{...}], not [] */
        uint64_t seen_seq;              /* the newest commit its reads saw */
        Request *wait_next;             /* waiting until that is durable */
        /* after the reply is written (e.g. a watch's events start) */
        void (*delivered)(Request *r);
        /* params and state, when both fit (most methods): no allocation */
        bool inline_used;
        _Alignas(max_align_t) unsigned char inline_mem[REQUEST_INLINE_BYTES];
};

/* ---- clients ---- */

Client *client_ref(Client *c);
Client *client_unref(Client *c);
/* A connection's messages go here (its ConnOps.message). */
bool rpc_on_message(Conn *conn, const uint8_t *bytes, size_t len, bool after_cutoff,
                    void *userdata);

/* Attach the request's connection to a session (auth, user.auth, resume):
 * it is "connected" and no longer idles out; a session it was attached to
 * before counts as used. */
int rpc_attach(Request *r, const uint8_t hash[SECRET_HASH_BYTES], PrincipalKind kind,
               const char *name);
/* For sessions_end(): the link's connection is anonymous again (userdata:
 * the Manager). */
void rpc_detached(SessionLink *l, void *userdata);

/* ---- method tables ---- */

/* Builds the table from rows (each NULL-terminated list of arrays). */
int method_table_build(const Method *const *lists[], const size_t *sizes, size_t n_lists,
                       MethodTable *ret);
void method_table_done(MethodTable *t);
/* p50 and p99 of a method's times in µs (0 when never called). */
void method_stats_percentiles(const MethodStats *s, uint64_t *ret_p50, uint64_t *ret_p99);

/* "viewer", "user", "admin"; and back (-EINVAL if none). */
const char *role_to_string(int role);
int role_from_string(const char *s, size_t len);

/* ---- for the phases ---- */

/* Record an error for the pipeline to reply; returns RPC_FAILED. Any
 * thread (it touches only the request). */
int rpc_fail(Request *r, VmmError code, const char *fmt, ...) _printf_(3, 4);
/* Reply a result (a packed map; len 0: {}). */
void rpc_reply(Request *r, const char *data, size_t len);
/* Reply an error now (the phase then returns RPC_REPLIED). */
void rpc_reply_error(Request *r, VmmError code, const char *fmt, ...) _printf_(3, 4);
/* The request's parameter struct of the method. */
#define PARAMS(r, type) ((type *) (r)->params)
#define STATE(r, type) ((type *) (r)->state)

/* jobs' durable hook: replies waiting for a commit to be durable go out. */
void rpc_durable_advanced(void *userdata);
/* At a stop, after the writer has finished: replies still waiting are dropped. */
void rpc_release_waiting(Manager *m);

/* At a stop: requests whose password check is still running are answered
 * shutting_down now and their connections closed, so the stop does not
 * wait for the hash (it is dropped when it ends). */
void rpc_abandon_hashing(Manager *m);

/* A peer's failed login: counted, logged (rate-limited) and an auth.failed
 * event. who: the VM id or user name tried. */
void rpc_login_failed(Request *r, const char *who, bool user);
/* Who sent the request, for logs and events: the address a trusted proxy
 * named (peer), else the connection's own peer. */
const char *rpc_peer_text(Request *r);
/* The peer is over its failed logins now. */
bool rpc_peer_limited(Request *r);
