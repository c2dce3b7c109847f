/* SPDX-License-Identifier: MIT */
/* One client connection: read buffer, bounded pre-scan and decode, in-order
 * execution (one request at a time; pipelined ones wait in the buffer), write
 * buffer with backpressure. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "manager.h"
#include "shared/mpscan.h"
#include "shared/secret.h"

#define CONN_MAX_FDS 4

typedef struct Request Request;
typedef struct Peer Peer;

typedef enum ConnKind {
        CONN_TCP,
        CONN_ADMIN,
        _CONN_KIND_MAX,
        _CONN_KIND_INVALID = -1,
} ConnKind;

struct Conn {
        Manager *manager;
        unsigned n_ref;
        Conn *prev, *next;              /* Manager.conns */
        Conn *att_prev, *att_next;      /* connections attached to one session */

        uint64_t id;
        ConnKind kind;
        int fd;
        Peer *peer;
        char peer_str[64];              /* "address:port" */
        int64_t since_ms;
        uint64_t requests;

        uint8_t *in;                    /* allocated while bytes are pending */
        size_t in_head, in_len, in_cap;
        uint8_t *out;
        size_t out_head, out_len, out_cap;
        MpScan scan;

        Request *busy;                  /* the request being worked on off the loop */
        bool closing;                   /* no more requests; flush, shut down, close */
        bool dead;                      /* fd closed; memory lives until the last ref */
        bool read_eof;
        bool paused;                    /* too much unsent output: not reading */
        /* Edge-triggered epoll (a level-triggered set of 10,000 ready
         * sockets costs every loop iteration): what is registered, and
         * whether the last read/write stopped short of EAGAIN (then the
         * next registration re-arms the edge). */
        uint32_t io_events;
        bool in_undrained;
        bool rdhup;                     /* the last wake-up said: the peer sent its FIN */
        bool out_ready;
        bool shutdown_cutoff_set;
        uint64_t shutdown_cutoff;       /* bytes received before the stop began */
        uint64_t received;              /* bytes received in all */
        uint64_t consumed;              /* bytes of whole messages taken */
        uint64_t last_activity_ms;      /* monotonic */
        uint64_t partial_since_ms;      /* monotonic; 0 = no half-received message */
        uint64_t closing_since_ms;

        /* attached session ("connected"); attached == false: anonymous */
        bool attached;
        uint8_t session_hash[SECRET_HASH_BYTES];
        char vm_id[VMM_VM_ID_MAX + 1];
        const char *close_reason;

        /* admin socket */
        uid_t uid;
        pid_t pid;
        int fds[CONN_MAX_FDS];          /* received with SCM_RIGHTS, oldest first */
        uint64_t fd_at[CONN_MAX_FDS];   /* stream offset of the bytes each came with */
        size_t n_fds;
        uint64_t msg_start, msg_end;    /* stream offsets of the message dispatched */
        bool watching;                  /* events.watch */
        Conn *watch_prev, *watch_next;
        uint64_t event_seq;
        bool close_pending;             /* closed by manager_close_later() */
        bool announced;                 /* conn.opened was emitted */
};

int conn_new(Manager *m, int fd, ConnKind kind, const struct sockaddr *sa, socklen_t salen,
             Conn **ret);
Conn *conn_ref(Conn *c);
Conn *conn_unref(Conn *c);

/* Output */
int conn_reply_result(Conn *c, uint32_t msgid, const char *data, size_t len);
int conn_reply_error(Conn *c, uint32_t msgid, VmmError code, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Append raw bytes to the output */
int conn_write_raw(Conn *c, const void *data, size_t len);

/* The in-flight request finished; go on with the buffered input. */
void conn_request_done(Conn *c);

/* Close at once (reason for logs and events). */
void conn_close(Conn *c, const char *reason);
/* Send what is queued, then shut down the sending side and close. */
void conn_close_after_flush(Conn *c, const char *reason);
/* Called by the sweep timer: idle/half-message timeouts, shutdown. */
void conn_sweep(Conn *c, uint64_t now_mono);
/* Process buffered input (used after shutdown begins). */
void conn_kick(Conn *c);
/* Bytes queued and not sent yet. */
size_t conn_unsent(Conn *c);
/* Try to send queued output now (no input processing); for notifications. */
void conn_send_soon(Conn *c);
/* Take the socket away from c (before conn_close), for a last word. */
int conn_steal_fd(Conn *c);
/* Close the connections' epoll instance (at exit, after the last conn). */
void conn_epoll_done(Manager *m);
/* Free the buffers kept for reuse (at exit). */
void conn_pools_free(void);
/* Take the oldest descriptor sent with the message being dispatched (a
 * descriptor belongs to the request whose bytes it came with; any others
 * are closed once their request is dispatched); -1 if none. */
int conn_take_fd(Conn *c);
