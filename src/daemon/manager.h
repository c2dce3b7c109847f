/* SPDX-License-Identifier: MIT */
/* The daemon's one object: the event loop and everything it owns. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "jobs.h"
#include "session.h"
#include "shared/secret.h"
#include "store/store.h"

typedef struct Conn Conn;
typedef struct Listener Listener;

typedef struct Manager {
        Config config;
        sd_event *event;
        Store *store;
        Jobs *jobs;
        Sessions *sessions;
        uint8_t hash_key[SECRET_KEY_BYTES];
        char state_dir[4096];

        Listener *listeners;
        size_t n_listeners;

        Conn *conns;            /* all connections, newest first */
        sd_event_source *conn_epoll_source;     /* their epoll instance (conn.c) */
        Conn *watchers;         /* events.watch connections */
        sd_event_source *close_later_source;
        bool admin_gid_valid;
        gid_t admin_gid;
        uint64_t n_conns;
        uint64_t next_conn_id;

        sd_event_source *sweep_timer;
        sd_event_source *purge_timer;
        sd_event_source *shutdown_timer;
        sd_event_source *sigterm_source, *sigint_source, *sighup_source;
        sd_event_source *watchdog_timer;
        uint64_t watchdog_usec;
        bool socket_activated;
        uint64_t status_sent_ms;
        char status_last[256];
        int argc;
        char **argv;

        bool shutting_down;
        uint64_t requests;
        int64_t started_at_ms;
        uint64_t started_mono_ms;
} Manager;

int manager_new(Manager **ret, Config *config);   /* takes over *config */
Manager *manager_free(Manager *m);
int manager_start(Manager *m);                    /* store, listeners, timers */
/* The database (state_dir set), the worker threads, the method tables. */
int manager_open_store(Manager *m);
int manager_run(Manager *m);
/* Begin a clean stop: no new connections, answer what was received. */
void manager_begin_shutdown(Manager *m, const char *why);

/* Close c from the event loop soon, not from inside the current callback
 * (closing another connection is deferred). */
void manager_close_later(Manager *m, Conn *c, const char *reason);

/* Realtime, in ms since the epoch; monotonic ms. */
int64_t now_ms(void);
uint64_t mono_ms(void);
