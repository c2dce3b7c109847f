/* SPDX-License-Identifier: MIT */
/* Layer L5: the daemon's one object. The Manager owns the event loop and
 * everything on it: the store, the worker threads, the sessions in memory,
 * the connections (through their hub), the clients, the method table, the
 * event watchers, caches and timers. Lower layers see the struct as the
 * state they work on; they call no function of this layer (callbacks in
 * `hooks` carry what must travel up: a stop, a reload). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "config.h"
#include "conn.h"
#include "events.h"
#include "jobs.h"
#include "rpc.h"
#include "sessions.h"
#include "shared/secret.h"
#include "store/store.h"

typedef struct Listener Listener;
typedef struct VmCache VmCache;
typedef struct Monitor Monitor;
typedef struct Bookings Bookings;

typedef struct ManagerHooks {
        /* begin a clean stop */
        void (*shutdown)(Manager *m, const char *why);
        /* read the configuration again: 0, or < 0 with errbuf "FILE:LINE: message" */
        int (*reload)(Manager *m, char *errbuf, size_t errlen);
} ManagerHooks;

struct Manager {
        Config config;
        int argc;
        char **argv;
        sd_event *event;
        Store *store;
        Jobs *jobs;
        Sessions *sessions;
        ConnHub *hub;
        Events *events;
        MethodTable methods;
        ManagerHooks hooks;
        VmCache *vm_cache;              /* vm.get answers (methods-vm.c) */
        Monitor *monitor;               /* vm.report, in memory (methods-monitor.c) */
        Bookings *bookings;             /* the expiry timer (methods-booking.c) */
        uint8_t hash_key[SECRET_KEY_BYTES];
        char state_dir[4096];
        int lock_fd;                    /* the state directory's lock */
        int reserve_fd;                 /* spent when descriptors run out (listen.c) */
        uint64_t accept_warned_ms;

        Listener *listeners;
        size_t n_listeners;
        Client *clients;                /* every connection's client, newest first */
        Request *durable_wait, *durable_wait_tail;      /* replies waiting (rpc.c) */
        uint64_t n_tcp_clients;
        bool admin_gid_valid, users_gid_valid;
        gid_t admin_gid, users_gid;

        sd_event_source *sweep_timer;
        sd_event_source *purge_timer;
        sd_event_source *shutdown_timer;
        sd_event_source *sigterm_source, *sigint_source, *sighup_source;
        sd_event_source *watchdog_timer;
        uint64_t watchdog_usec;
        uint64_t last_gc_ms;
        bool socket_activated;
        bool embedded;                  /* inside another program (fuzzing, tests) */
        uint64_t status_sent_ms;
        char status_last[256];

        bool shutting_down;
        uint64_t requests;
        int64_t started_at_ms;
        uint64_t started_mono_ms;
};

int manager_new(Manager **ret, Config *config);   /* takes over *config */
Manager *manager_free(Manager *m);
/* The state directory (locked), listeners, the store, worker threads,
 * timers. */
int manager_start(Manager *m);
/* For an embedded manager (fuzzing, in-process tests): state_dir set; the
 * store (no_sync as asked), threads and method table, no listeners, signals
 * or timers. Connections are added with client_new() (listen.h). */
int manager_start_embedded(Manager *m, bool no_sync);
int manager_run(Manager *m);
void manager_begin_shutdown(Manager *m, const char *why);
