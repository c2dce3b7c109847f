/* SPDX-License-Identifier: MIT */
/* Events for admin watchers (events.watch): each watcher gets notifications
 * [2, "event", [{"seq", "type", "time", ...}]] with its own sequence. A
 * watcher whose unsent output passes a bound is disconnected; the daemon
 * never waits for one. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "shared/secret.h"

typedef struct Manager Manager;
typedef struct Conn Conn;

#define EVENTS_WATCHER_MAX_UNSENT (256u * 1024u)

typedef struct Event {
        const char *type;
        const char *vm_id;
        const char *session;    /* public session id */
        const char *peer;
        const char *reason;
        bool has_conn;
        uint64_t conn;
        bool vm_id_nil;         /* send "vm_id": nil (conn.closed of an anonymous connection) */
} Event;

void events_emit(Manager *m, const Event *e);
void events_watch(Manager *m, Conn *c);
void events_unwatch(Manager *m, Conn *c);
/* The public id of a session hash, for events. */
void events_session_id(const uint8_t hash[SECRET_HASH_BYTES], char ret[SECRET_SESSION_ID_LEN + 1]);
