/* SPDX-License-Identifier: MIT */
/* Request dispatch: envelope checks, a const method table per socket kind,
 * declarative params, the session a request runs as, error replies. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

#include "conn.h"
#include "jobs.h"
#include "shared/params.h"

typedef enum MethodFlags {
        METHOD_NOAUTH = 1u << 0,        /* callable without a session */
        METHOD_WRITE  = 1u << 1,        /* changes the store (goes through the writer) */
} MethodFlags;

typedef struct Method Method;

struct Request {
        Manager *manager;
        Conn *conn;                     /* holds a reference */
        uint32_t msgid;
        const Method *method;
        uint8_t *bytes;                 /* the message; msgpack objects point into it */
        msgpack_zone *zone;             /* the decoded request lives here */
        msgpack_object obj;
        void *params;                   /* method->params_size bytes */
        ParamStr token;

        /* the session this request runs as (methods without METHOD_NOAUTH) */
        bool has_session;
        bool via_token;
        uint8_t session_hash[SECRET_HASH_BYTES];
        char vm_id[VMM_VM_ID_MAX + 1];

        Job job;
        void *state;                    /* the handler's, freed with state_free */
        void (*state_free)(void *state);
        uint64_t started_us;
};

struct Method {
        const char *name;
        /* Returns 0 when it has replied, 1 when the reply comes later
         * (rpc_finish), negative errno for an error reply by the errno table. */
        int (*handler)(Request *r);
        unsigned flags;
        const ParamField *fields;
        size_t n_fields;
        size_t params_size;
        /* Checks across fields (e.g. "at least one of"), part of the params'
         * shape, so run before the session check; fills msg and returns false. */
        bool (*check)(const void *params, char *msg, size_t msglen);
};

/* methods-client.c, methods-admin.c */
extern const Method client_methods[];
extern const size_t n_client_methods;
extern const Method admin_methods[];
extern const size_t n_admin_methods;

/* Parse and run one whole message (len bytes, copied). after_cutoff: the
 * message arrived after shutdown began (answered with shutting_down). */
void rpc_dispatch(Conn *c, const uint8_t *bytes, size_t len, bool after_cutoff);

/* Replies; the request stays owned by the caller until rpc_finish(). */
void rpc_reply(Request *r, const char *data, size_t len);
void rpc_reply_error(Request *r, VmmError code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* Map a negative errno (-ENOENT not_found, -EEXIST exists, -EBUSY conflict,
 * -ENOSPC unavailable, others internal and logged) to an error reply. */
void rpc_reply_errno(Request *r, int error);
/* The request is done (replied): free it and let the connection go on. */
void rpc_finish(Request *r);

/* Session bookkeeping shared by conn.c and the methods */
void client_session_left(Manager *m, const uint8_t hash[SECRET_HASH_BYTES], const char *vm_id);
/* Periodic: purge expired sessions, refresh attached ones. */
void client_sessions_purge(Manager *m);
