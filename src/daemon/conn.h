/* SPDX-License-Identifier: MIT */
/* Layer L2: connections as a transport. Bytes in and out, the bounded
 * pre-scan that cuts the stream into messages (framing), limits (message
 * size and depth, half-received messages, idle time, unsent output per
 * connection and in all), backpressure (a connection that does not read its
 * replies is not read), one message at a time in order, and closing (at
 * once, after the output is sent, or later from the loop). What the
 * messages mean is the owner's business: a connection reports each message
 * and its end through the ConnOps its owner gave at creation, and never
 * touches sessions, events or methods.
 *
 * All connections of a ConnHub share one epoll instance that is a single
 * sd-event source: a wake-up serves every ready connection. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "vmm/protocol.h"

#define CONN_MAX_FDS 4

typedef struct ConnHub ConnHub;
typedef struct Conn Conn;

typedef struct ConnOps {
        /* One whole message (len bytes; valid during the call). after_cutoff:
         * it arrived after conn_hub_begin_shutdown(). Returns true when the
         * owner is still working on it: no further message is delivered
         * until conn_resume(). */
        bool (*message)(Conn *c, const uint8_t *bytes, size_t len, bool after_cutoff,
                        void *userdata);
        /* The connection is closed (reason: "eof", "error", "timeout",
         * "killed", "shutdown", ...). Called once; the Conn stays valid for
         * those who hold a reference. */
        void (*closed)(Conn *c, const char *reason, void *userdata);
} ConnOps;

typedef struct ConnOptions {
        bool tcp;               /* TCP_NODELAY; trust short reads */
        bool unix_fds;          /* take descriptors sent with SCM_RIGHTS */
        size_t max_message;     /* bytes of one message */
        unsigned max_depth;     /* nesting of one message */
        const char *peer;       /* "address:port", "uid=N pid=N": for logs */
} ConnOptions;

int conn_hub_new(sd_event *e, ConnHub **ret);
/* Closes every connection ("shutdown") and frees the hub. Accepts NULL. */
ConnHub *conn_hub_free(ConnHub *h);
/* partial_ms: a half-received message is dropped with its connection after
 * this long. max_unsent_total: past this much unsent output in all, the
 * connections that do not read and hold the most are closed. */
void conn_hub_set_limits(ConnHub *h, uint64_t partial_ms, uint64_t max_unsent_total);
size_t conn_hub_count(ConnHub *h);
uint64_t conn_hub_unsent_total(ConnHub *h);
/* Timeouts, and at shutdown the closing of connections with nothing left to
 * answer; every connection is looked at. */
void conn_hub_sweep(ConnHub *h, uint64_t now_mono_ms);
/* Messages that arrive from now on are marked after_cutoff. */
void conn_hub_begin_shutdown(ConnHub *h);
void conn_hub_close_all(ConnHub *h, const char *reason);

int conn_new(ConnHub *h, int fd, const ConnOptions *o, const ConnOps *ops, void *userdata,
             Conn **ret);
Conn *conn_ref(Conn *c);
Conn *conn_unref(Conn *c);

uint64_t conn_id(const Conn *c);
const char *conn_peer(const Conn *c);
int64_t conn_since(const Conn *c);      /* ms since the epoch */
bool conn_is_open(const Conn *c);       /* not closed nor closing */
/* An idle connection (nothing received or sent, no message held) is closed
 * after ms; 0: never (the default). */
void conn_set_idle_timeout(Conn *c, uint64_t ms);

/* Append output. */
int conn_write(Conn *c, const void *data, size_t len);
/* An error response [1, msgid, {"code", "message"}, nil]. */
int conn_write_error(Conn *c, uint32_t msgid, VmmError code, const char *message);
/* Try to send queued output now (for output not caused by a message). */
void conn_send_soon(Conn *c);
size_t conn_unsent(const Conn *c);

/* The message held (ConnOps.message returned true) is done: go on. */
void conn_resume(Conn *c);
/* Take the oldest descriptor sent with the message being delivered (a
 * descriptor belongs to the message whose bytes it came with; others are
 * closed once their message is delivered); -1 if none. */
int conn_take_fd(Conn *c);

/* Close at once. */
void conn_close(Conn *c, const char *reason);
/* Close from the loop soon, not inside the current callback. */
void conn_close_later(Conn *c, const char *reason);
/* Send what is queued, then shut down the sending side and close; nothing
 * more is read as messages. */
void conn_close_after_flush(Conn *c, const char *reason);
