/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "build-config.h"
#include "listen.h"
#include "log.h"
#include "manager.h"
#include "methods.h"
#include "methods-booking.h"
#include "methods-monitor.h"
#include "shared/clock.h"
#include "shared/fs.h"
#include "shared/macro.h"

#define SWEEP_USEC       (250 * 1000ull)
#define SHUTDOWN_TICK_USEC (50 * 1000ull)
#define SHUTDOWN_DEADLINE_MS 8000ull
/* Password checks received before the stop are still run for this long;
 * then the ones waiting are dropped (a flood does not hold up the stop). */
#define SHUTDOWN_HASH_GRACE_MS 3000ull
#define LOCK_FILE "vmmd.lock"

static int status_update(Manager *m, bool force);

/* $STATE_DIRECTORY, /var/lib/vmmd for root, else $XDG_STATE_HOME/vmmd. */
static int default_state_dir(char *buf, size_t len) {
        const char *e = getenv("STATE_DIRECTORY");
        if (e && *e) {
                const char *colon = strchr(e, ':');
                size_t n = colon ? (size_t) (colon - e) : strlen(e);
                if (n >= len)
                        return -ENAMETOOLONG;
                memcpy(buf, e, n);
                buf[n] = '\0';
                return 0;
        }
        if (geteuid() == 0) {
                snprintf(buf, len, "/var/lib/vmmd");
                return 0;
        }
        e = getenv("XDG_STATE_HOME");
        if (e && *e == '/') {
                snprintf(buf, len, "%s/vmmd", e);
                return 0;
        }
        e = getenv("HOME");
        if (!e || *e != '/') {
                struct passwd *pw = getpwuid(geteuid());
                e = pw ? pw->pw_dir : NULL;
        }
        if (!e)
                return -ENOENT;
        snprintf(buf, len, "%s/.local/state/vmmd", e);
        return 0;
}

/* One vmmd per state directory: a lock held while it runs, with its pid
 * inside for the message of a second one. */
static int lock_state_dir(Manager *m) {
        char path[4200], pid[32] = "";
        int fd;

        snprintf(path, sizeof path, "%s/%s", m->state_dir, LOCK_FILE);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return log_error_errno(errno, "Cannot open %s: %s", path, strerror(errno));
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int r = -errno;
                ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
                pid[n > 0 ? n : 0] = '\0';
                pid[strcspn(pid, "\n")] = '\0';
                close(fd);
                if (r == -EWOULDBLOCK || r == -EAGAIN)
                        return log_error_errno(EBUSY, "The state directory %s is in use by "
                                               "vmmd pid %s; not starting a second daemon on it",
                                               m->state_dir, pid[0] ? pid : "(unknown)");
                return log_error_errno(r, "Cannot lock %s: %s", path, strerror(-r));
        }
        snprintf(pid, sizeof pid, "%d\n", (int) getpid());
        if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, strlen(pid), 0) < 0)
                log_warning("Cannot write the pid to %s: %s", path, strerror(errno));
        m->lock_fd = fd;
        return 0;
}

/* Room for every connection: the soft limit up to the hard one. */
static void raise_fd_limit(Manager *m) {
        struct rlimit rl;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return;
        if (rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void) setrlimit(RLIMIT_NOFILE, &rl);
                (void) getrlimit(RLIMIT_NOFILE, &rl);
        }
        /* connections, the listeners, the database, the journal, threads */
        if (rl.rlim_cur != RLIM_INFINITY && m->config.max_connections + 64 > rl.rlim_cur)
                log_warning("max_connections is %" PRIu64 " but only %llu descriptors are "
                            "allowed (RLIMIT_NOFILE): connections past about %llu will be "
                            "refused; raise LimitNOFILE= or lower max_connections",
                            m->config.max_connections, (unsigned long long) rl.rlim_cur,
                            (unsigned long long) (rl.rlim_cur > 64 ? rl.rlim_cur - 64 : 0));
}

static int manager_reload(Manager *m, char *errbuf, size_t errlen);

static void hook_shutdown(Manager *m, const char *why) {
        manager_begin_shutdown(m, why);
}

int manager_new(Manager **ret, Config *config) {
        Manager *m = calloc(1, sizeof *m);
        int r;

        if (!m)
                return -ENOMEM;
        m->config = *config;
        *config = (Config) { 0 };
        m->lock_fd = m->reserve_fd = -1;
        m->started_at_ms = now_ms();
        m->started_mono_ms = mono_ms();
        m->hooks.shutdown = hook_shutdown;
        m->hooks.reload = manager_reload;

        r = sd_event_new(&m->event);
        if (r >= 0)
                r = sessions_new(&m->sessions);
        if (r >= 0)
                r = conn_hub_new(m->event, &m->hub);
        if (r >= 0)
                r = events_new(m, &m->events);
        if (r < 0) {
                manager_free(m);
                return r;
        }
        conn_hub_set_limits(m->hub, m->config.idle_timeout_s * 1000, m->config.max_unsent_total);
        *ret = m;
        return 0;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_listeners; i++)
                listener_stop(&m->listeners[i]);
        free(m->listeners);
        if (m->hub)
                conn_hub_close_all(m->hub, "shutdown");
        /* finish queued writes (their done() may touch sessions and events) */
        m->jobs = jobs_free(m->jobs);
        rpc_release_waiting(m);
        m->bookings = bookings_free(m->bookings);
        m->monitor = monitor_free(m->monitor);
        m->events = events_free(m->events);
        m->hub = conn_hub_free(m->hub);
        m->sweep_timer = sd_event_source_disable_unref(m->sweep_timer);
        m->purge_timer = sd_event_source_disable_unref(m->purge_timer);
        m->shutdown_timer = sd_event_source_disable_unref(m->shutdown_timer);
        m->sigterm_source = sd_event_source_disable_unref(m->sigterm_source);
        m->sigint_source = sd_event_source_disable_unref(m->sigint_source);
        m->sighup_source = sd_event_source_disable_unref(m->sighup_source);
        m->watchdog_timer = sd_event_source_disable_unref(m->watchdog_timer);
        m->sessions = sessions_free(m->sessions);
        m->store = store_close(m->store);
        method_table_done(&m->methods);
        vm_cache_free(m->vm_cache);
        m->event = sd_event_unref(m->event);
        secret_wipe(m->hash_key, sizeof m->hash_key);
        if (m->lock_fd >= 0)
                (void) close(m->lock_fd);
        if (m->reserve_fd >= 0)
                (void) close(m->reserve_fd);
        config_done(&m->config);
        free(m);
        return NULL;
}

/* ---- timers ---- */

static int on_sweep(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now = mono_ms();

        conn_hub_sweep(m->hub, now);
        (void) status_update(m, false);
        if (now - m->last_gc_ms > 60000) {
                m->last_gc_ms = now;
                sessions_peers_gc(m->sessions, now_ms());
        }
        (void) sd_event_source_set_time_relative(s, SWEEP_USEC);
        return 0;
}

static int on_purge(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t ttl_us = m->config.session_ttl_s * 1000000ull;
        uint64_t every = MIN(MAX(ttl_us / 4, 1000000ull), 60000000ull);

        if (!m->shutting_down)
                session_purge(m);
        (void) sd_event_source_set_time_relative(s, every);
        return 0;
}

static int on_shutdown_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        conn_hub_sweep(m->hub, mono_ms());
        if (conn_hub_count(m->hub) == 0 && jobs_pending(m->jobs) == 0) {
                sd_event_exit(m->event, 0);
                return 0;
        }
        (void) sd_event_source_set_time_relative(s, SHUTDOWN_TICK_USEC);
        return 0;
}

static int on_hash_grace_end(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        if (jobs_pending(m->jobs) > 0)
                log_info("Stopping: password checks still waiting after %llu s are answered "
                         "shutting_down", SHUTDOWN_HASH_GRACE_MS / 1000);
        jobs_drop_hashes(m->jobs);
        rpc_abandon_hashing(m);
        return 0;
}

static int on_shutdown_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_warning("Stopping: %zu connections still busy after %llu s; closing them",
                    conn_hub_count(m->hub), SHUTDOWN_DEADLINE_MS / 1000);
        conn_hub_close_all(m->hub, "shutdown");
        sd_event_exit(m->event, 0);
        return 0;
}

void manager_begin_shutdown(Manager *m, const char *why) {
        if (m->shutting_down)
                return;
        m->shutting_down = true;
        log_info("Stopping (%s)", why);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        for (size_t i = 0; i < m->n_listeners; i++)
                listener_stop(&m->listeners[i]);
        conn_hub_begin_shutdown(m->hub);
        (void) sd_event_add_time_relative(m->event, &m->shutdown_timer, CLOCK_MONOTONIC,
                                          SHUTDOWN_TICK_USEC, 0, on_shutdown_tick, m);
        (void) sd_event_source_set_enabled(m->shutdown_timer, SD_EVENT_ON);
        /* requests received before the stop are answered; a flood of logins
         * does not hold it up: after the grace, checks still waiting are
         * dropped, running ones answered at once and left to end alone */
        sd_event_source *t = NULL;
        (void) sd_event_add_time_relative(m->event, &t, CLOCK_MONOTONIC,
                                          SHUTDOWN_HASH_GRACE_MS * 1000, 0, on_hash_grace_end, m);
        (void) sd_event_source_set_floating(t, true);
        sd_event_source_unref(t);
        t = NULL;
        (void) sd_event_add_time_relative(m->event, &t, CLOCK_MONOTONIC,
                                          SHUTDOWN_DEADLINE_MS * 1000, 0, on_shutdown_deadline, m);
        (void) sd_event_source_set_floating(t, true);
        sd_event_source_unref(t);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        manager_begin_shutdown(m, si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        return 0;
}

static int status_update(Manager *m, bool force) {
        StoreStats st = { 0 };
        StoreTxn *t = NULL;
        char buf[256];
        int r;

        uint64_t now = mono_ms();
        if (!force && now - m->status_sent_ms < 1000)
                return 0;
        m->status_sent_ms = now;
        r = store_read_begin(m->store, &t);
        if (r < 0)
                return r;
        r = store_stats(t, &st);
        store_read_end(t);
        if (r < 0)
                return r;
        snprintf(buf, sizeof buf, "STATUS=%" PRIu64 " VMs, %zu connected, %" PRIu64
                 " sessions, %" PRIu64 " requests", st.vms,
                 sessions_connected_count(m->sessions), st.sessions, m->requests);
        if (strcmp(buf, m->status_last) == 0)
                return 0;
        snprintf(m->status_last, sizeof m->status_last, "%s", buf);
        (void) sd_notify(false, buf);
        return 1;
}

/* The watchdog is fed only while the loop runs (this is a timer on it) and
 * a trivial read of the database succeeds. */
static int on_watchdog(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        StoreTxn *t = NULL;
        StoreStats st;
        bool ok = false;

        if (store_read_begin(m->store, &t) >= 0) {
                ok = store_stats(t, &st) >= 0;
                store_read_end(t);
        }
        if (ok)
                (void) sd_notify(false, "WATCHDOG=1");
        else
                log_warning("Database read failed; not feeding the watchdog");
        (void) sd_event_source_set_time_relative(s, m->watchdog_usec / 2);
        return 0;
}

/* ---- reload ---- */

static int manager_reload(Manager *m, char *errbuf, size_t errlen) {
        Config c;
        int r;

        if (m->argc < 1 || !m->argv) {
                /* a Manager made in-process (the fuzz targets) without one */
                snprintf(errbuf, errlen, "%s", "this vmmd has no command line to read again");
                return -EOPNOTSUPP;
        }
        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading",
                          (unsigned long long) mono_us());
        r = config_reload(m->argc, m->argv, &c, errbuf, errlen);
        if (r < 0)
                log_warning("Reloading the configuration failed, the old settings stay: %s",
                            errbuf);
        else {
                /* what applies at once; the rest (sockets, state directory,
                 * workers, map size) needs a restart */
                m->config.log_level = c.log_level;
                m->config.idle_timeout_s = c.idle_timeout_s;
                m->config.max_connections = c.max_connections;
                m->config.max_connections_per_peer = c.max_connections_per_peer;
                m->config.max_unsent_total = c.max_unsent_total;
                m->config.auth_failures_per_minute = c.auth_failures_per_minute;
                m->config.registrations_per_minute = c.registrations_per_minute;
                m->config.hashes_per_peer = c.hashes_per_peer;
                m->config.sessions_per_vm = c.sessions_per_vm;
                m->config.registration = c.registration;
                m->config.vm_visibility = c.vm_visibility;
                m->config.tcp_admin = c.tcp_admin;
                m->config.session_ttl_s = c.session_ttl_s;
                m->config.booking_max_hours = c.booking_max_hours;
                m->config.bookings_per_user = c.bookings_per_user;
                m->config.booking_warn_minutes = c.booking_warn_minutes;
                m->config.heartbeat_timeout_s = c.heartbeat_timeout_s;
                log_set_level(c.log_level);
                conn_hub_set_limits(m->hub, c.idle_timeout_s * 1000, c.max_unsent_total);
                config_done(&c);
                log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_RELOADED,
                                                    .admin_uid = -1 },
                           "Configuration reloaded (registration %s, session TTL %" PRIu64 " s)",
                           registration_to_string(m->config.registration),
                           m->config.session_ttl_s);
                bookings_changed(m);
        }
        m->status_last[0] = '\0';
        (void) sd_notify(false, "READY=1");
        (void) status_update(m, true);
        return r;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        char err[600];
        (void) manager_reload(userdata, err, sizeof err);
        return 0;
}

/* ---- start ---- */

static int build_method_table(Manager *m) {
        const Method *const *lists[] = {
                session_methods, vm_methods, list_methods, admin_methods, user_methods,
                group_methods, booking_methods, catalog_methods, monitor_methods,
        };
        const size_t sizes[] = {
                n_session_methods, n_vm_methods, n_list_methods, n_admin_methods, n_user_methods,
                n_group_methods, n_booking_methods, n_catalog_methods, n_monitor_methods,
        };
        return method_table_build(lists, sizes, ELEMENTSOF(lists), &m->methods);
}

static int open_store(Manager *m, bool no_sync) {
        char err[512] = "";
        unsigned upgraded = 0;
        StoreStats st;
        StoreTxn *t = NULL;
        int r;

        StoreOptions so = {
                .dir = m->state_dir,
                .map_size_max = m->config.map_size_max,
                .event_history = m->config.event_history,
                .no_sync = no_sync,
        };
        r = store_open(&so, &m->store, &upgraded, err, sizeof err);
        if (r < 0)
                return log_error_errno(r, "Cannot open the database in %s: %s", m->state_dir,
                                       err[0] ? err : strerror(-r));
        if (upgraded)
                log_notice("Database %s upgraded from schema version %u to %d",
                           store_path(m->store), upgraded, STORE_SCHEMA_VERSION);
        store_hash_key(m->store, m->hash_key);
        r = store_read_begin(m->store, &t);
        if (r >= 0) {
                r = store_stats(t, &st);
                store_read_end(t);
        }
        if (r < 0)
                return log_error_errno(r, "Cannot read the database: %s", strerror(-r));
        events_set_last(m->events, st.feed_last);

        r = jobs_new(m->event, m->store, (unsigned) m->config.hash_workers,
                     (unsigned) m->config.hash_queue_max, &m->jobs);
        if (r < 0)
                return log_error_errno(r, "Cannot start worker threads: %s", strerror(-r));
        jobs_set_durable_hook(m->jobs, rpc_durable_advanced, m);
        r = build_method_table(m);
        if (r >= 0)
                r = monitor_new(m, &m->monitor);
        if (r >= 0)
                r = bookings_new(m, &m->bookings);
        if (r < 0)
                return log_error_errno(r, "Cannot set up: %s", strerror(-r));
        return 0;
}

int manager_start_embedded(Manager *m, bool no_sync) {
        if (!m->config.state_dir || !m->config.state_dir[0])
                return log_error_errno(EINVAL, "Embedded manager: no state directory");
        if (strlen(m->config.state_dir) >= sizeof m->state_dir)
                return log_error_errno(ENAMETOOLONG, "Embedded manager: state directory too long");
        memcpy(m->state_dir, m->config.state_dir, strlen(m->config.state_dir) + 1);
        m->embedded = true;
        return open_store(m, no_sync);
}

int manager_start(Manager *m) {
        int r;

        /* Block the signals sd-event handles before any thread is created:
         * threads inherit the mask, so none of them takes SIGTERM. */
        sigset_t ss;
        sigemptyset(&ss);
        sigaddset(&ss, SIGTERM);
        sigaddset(&ss, SIGINT);
        sigaddset(&ss, SIGHUP);
        sigaddset(&ss, SIGPIPE);
        if (pthread_sigmask(SIG_BLOCK, &ss, NULL) != 0)
                return log_error_errno(EINVAL, "Cannot block signals");

        if (m->config.state_dir)
                snprintf(m->state_dir, sizeof m->state_dir, "%s", m->config.state_dir);
        else {
                r = default_state_dir(m->state_dir, sizeof m->state_dir);
                if (r < 0)
                        return log_error_errno(r, "Cannot find a state directory; use --state-dir");
        }
        r = mkdir_p(m->state_dir, 0700, 0755);
        if (r < 0)
                return log_error_errno(r, "Cannot create state directory %s: %s", m->state_dir,
                                       strerror(-r));
        r = lock_state_dir(m);
        if (r < 0)
                return r;
        raise_fd_limit(m);
        listen_reserve_fd(m);

        /* the sockets first, while this is the only thread (binding the
         * admin socket sets the umask for a moment) */
        r = listen_setup(m);
        if (r < 0)
                return r;
        r = open_store(m, false);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->n_listeners; i++) {
                r = listener_start(&m->listeners[i]);
                if (r < 0)
                        return r;
        }

        r = sd_event_add_signal(m->event, &m->sigterm_source, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sigint_source, SIGINT, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sighup_source, SIGHUP, on_sighup, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch signals: %s", strerror(-r));
        r = sd_event_add_time_relative(m->event, &m->sweep_timer, CLOCK_MONOTONIC, SWEEP_USEC, 0,
                                       on_sweep, m);
        if (r >= 0)
                r = sd_event_add_time_relative(m->event, &m->purge_timer, CLOCK_MONOTONIC,
                                               1000000, 0, on_purge, m);
        if (r < 0)
                return log_error_errno(r, "Cannot add timers: %s", strerror(-r));
        (void) sd_event_source_set_enabled(m->sweep_timer, SD_EVENT_ON);
        (void) sd_event_source_set_enabled(m->purge_timer, SD_EVENT_ON);

        for (size_t i = 0; i < m->n_listeners; i++)
                log_info("Listening on %s", m->listeners[i].address);
        if (sd_watchdog_enabled(false, &m->watchdog_usec) > 0 && m->watchdog_usec > 0) {
                r = sd_event_add_time_relative(m->event, &m->watchdog_timer, CLOCK_MONOTONIC,
                                               m->watchdog_usec / 2, 0, on_watchdog, m);
                if (r < 0)
                        return log_error_errno(r, "Cannot set up the watchdog: %s", strerror(-r));
                (void) sd_event_source_set_enabled(m->watchdog_timer, SD_EVENT_ON);
        }
        log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_STARTED, .admin_uid = -1 },
                   "vmmd %s started; database %s", VMMD_VERSION, store_path(m->store));
        (void) sd_notify(false, "READY=1");
        (void) status_update(m, true);
        return 0;
}

int manager_run(Manager *m) {
        int r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %s", strerror(-r));
        log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_STOPPED, .admin_uid = -1 },
                   "vmmd stopped");
        return 0;
}
