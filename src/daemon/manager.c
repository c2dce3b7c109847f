/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "build-config.h"
#include "conn.h"
#include "listen.h"
#include "log.h"
#include "methods.h"
#include "manager.h"
#include "rpc.h"
#include "shared/macro.h"

#define SWEEP_USEC       (250 * 1000ull)
#define SHUTDOWN_TICK_USEC (50 * 1000ull)
#define SHUTDOWN_DEADLINE_MS 8000ull

void client_methods_init(Manager *m);
static int status_update(Manager *m, bool force);

int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t mono_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

static int mkdir_p(const char *path, mode_t mode) {
        char buf[4096];
        size_t n = strlen(path);

        if (n == 0 || n >= sizeof buf)
                return -EINVAL;
        memcpy(buf, path, n + 1);
        for (size_t i = 1; i <= n; i++) {
                if (buf[i] != '/' && buf[i] != '\0')
                        continue;
                char saved = buf[i];
                buf[i] = '\0';
                if (mkdir(buf, i == n ? mode : 0755) < 0 && errno != EEXIST)
                        return -errno;
                buf[i] = saved;
        }
        return 0;
}

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

/* The admin socket path: --admin-socket, $RUNTIME_DIRECTORY/admin.sock,
 * /run/vmmd/admin.sock for root, else $XDG_RUNTIME_DIR/vmmd/admin.sock.
 * Returns 1 with a path, 0 when there is none. */
static int default_admin_socket(Manager *m, char *buf, size_t len) {
        const char *e;

        if (m->config.admin_socket) {
                snprintf(buf, len, "%s", m->config.admin_socket);
                return 1;
        }
        e = getenv("RUNTIME_DIRECTORY");
        if (e && *e == '/') {
                const char *colon = strchr(e, ':');
                int n = colon ? (int) (colon - e) : (int) strlen(e);
                snprintf(buf, len, "%.*s/admin.sock", n, e);
                return 1;
        }
        if (geteuid() == 0) {
                snprintf(buf, len, "/run/vmmd/admin.sock");
                return 1;
        }
        e = getenv("XDG_RUNTIME_DIR");
        if (e && *e == '/') {
                snprintf(buf, len, "%s/vmmd/admin.sock", e);
                return 1;
        }
        return 0;
}

int manager_new(Manager **ret, Config *config) {
        Manager *m = calloc(1, sizeof *m);
        int r;

        if (!m)
                return -ENOMEM;
        m->config = *config;
        *config = (Config) { 0 };
        m->started_at_ms = now_ms();
        m->started_mono_ms = mono_ms();

        r = sd_event_default(&m->event);
        if (r < 0)
                goto fail;
        r = sessions_new(&m->sessions);
        if (r < 0)
                goto fail;
        *ret = m;
        return 0;
fail:
        manager_free(m);
        return r;
}

Manager *manager_free(Manager *m) {
        if (!m)
                return NULL;
        for (size_t i = 0; i < m->n_listeners; i++)
                listener_stop(&m->listeners[i]);
        free(m->listeners);
        while (m->conns)
                conn_close(m->conns, "shutdown");
        conn_epoll_done(m);
        /* finish queued writes (their done() may touch sessions) */
        m->jobs = jobs_free(m->jobs);
        m->sweep_timer = sd_event_source_disable_unref(m->sweep_timer);
        m->purge_timer = sd_event_source_disable_unref(m->purge_timer);
        m->shutdown_timer = sd_event_source_disable_unref(m->shutdown_timer);
        m->close_later_source = sd_event_source_disable_unref(m->close_later_source);
        m->sigterm_source = sd_event_source_disable_unref(m->sigterm_source);
        m->sigint_source = sd_event_source_disable_unref(m->sigint_source);
        m->sighup_source = sd_event_source_disable_unref(m->sighup_source);
        m->watchdog_timer = sd_event_source_disable_unref(m->watchdog_timer);
        m->sessions = sessions_free(m->sessions);
        m->store = store_close(m->store);
        m->event = sd_event_unref(m->event);
        secret_wipe(m->hash_key, sizeof m->hash_key);
        config_done(&m->config);
        free(m);
        conn_pools_free();
        client_vm_cache_free();
        return NULL;
}

static int on_sweep(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now = mono_ms();
        static uint64_t last_gc;

        for (Conn *c = m->conns, *next; c; c = next) {
                next = c->next;
                conn_ref(c);
                conn_sweep(c, now);
                next = c->dead ? NULL : c->next;
                conn_unref(c);
                if (!next)
                        break;
        }
        (void) status_update(m, false);
        if (now - last_gc > 60000) {
                last_gc = now;
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
                client_sessions_purge(m);
        (void) sd_event_source_set_time_relative(s, every);
        return 0;
}

static int on_shutdown_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;
        uint64_t now = mono_ms();

        for (Conn *c = m->conns, *next; c; c = next) {
                conn_ref(c);
                conn_sweep(c, now);
                next = c->dead ? NULL : c->next;
                conn_unref(c);
                if (!next)
                        break;
        }
        if (m->n_conns == 0 && jobs_pending(m->jobs) == 0) {
                sd_event_exit(m->event, 0);
                return 0;
        }
        (void) sd_event_source_set_time_relative(s, SHUTDOWN_TICK_USEC);
        return 0;
}

static int on_shutdown_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Manager *m = userdata;

        log_warning("Stopping: %" PRIu64 " connections still busy after %llu s; closing them",
                    m->n_conns, SHUTDOWN_DEADLINE_MS / 1000);
        while (m->conns)
                conn_close(m->conns, "shutdown");
        sd_event_exit(m->event, 0);
        return 0;
}

static int on_close_later(sd_event_source *s, void *userdata) {
        Manager *m = userdata;

        for (bool again = true; again;) {
                again = false;
                for (Conn *c = m->conns; c; c = c->next)
                        if (c->close_pending) {
                                conn_close(c, c->close_reason ? c->close_reason : "killed");
                                again = true;
                                break;
                        }
        }
        return 0;
}

void manager_close_later(Manager *m, Conn *c, const char *reason) {
        if (c->dead || c->close_pending)
                return;
        c->close_pending = true;
        c->close_reason = reason;
        if (!m->close_later_source) {
                if (sd_event_add_defer(m->event, &m->close_later_source, on_close_later, m) < 0)
                        return;
        }
        (void) sd_event_source_set_enabled(m->close_later_source, SD_EVENT_ONESHOT);
}

void manager_begin_shutdown(Manager *m, const char *why) {
        if (m->shutting_down)
                return;
        m->shutting_down = true;
        log_info("Stopping (%s)", why);
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        for (size_t i = 0; i < m->n_listeners; i++)
                listener_stop(&m->listeners[i]);
        for (Conn *c = m->conns; c; c = c->next) {
                c->shutdown_cutoff_set = true;
                c->shutdown_cutoff = c->received;
        }
        (void) sd_event_add_time_relative(m->event, &m->shutdown_timer, CLOCK_MONOTONIC,
                                          SHUTDOWN_TICK_USEC, 0, on_shutdown_tick, m);
        (void) sd_event_source_set_enabled(m->shutdown_timer, SD_EVENT_ON);
        sd_event_source *deadline = NULL;
        (void) sd_event_add_time_relative(m->event, &deadline, CLOCK_MONOTONIC,
                                          SHUTDOWN_DEADLINE_MS * 1000, 0, on_shutdown_deadline, m);
        (void) sd_event_source_set_floating(deadline, true);
        sd_event_source_unref(deadline);
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        manager_begin_shutdown(m, si->ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
        return 0;
}

static bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

/* Sockets from systemd by name (client, admin), else bound from the flags. */
static int manager_listen(Manager *m) {
        char **names = NULL;
        int n, r = 0;

        struct group *gr = getgrnam(m->config.admin_group ? m->config.admin_group : "vmmd");
        if (gr) {
                m->admin_gid = gr->gr_gid;
                m->admin_gid_valid = true;
        } else if (m->config.admin_group)
                log_warning("Admin group '%s' does not exist; only root and uid %u may use the "
                            "admin socket", m->config.admin_group, (unsigned) geteuid());

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Cannot take sockets from systemd: %s", strerror(-n));
        if (n > 0) {
                bool have_admin = false;
                m->listeners = calloc((size_t) n, sizeof(Listener));
                if (!m->listeners)
                        r = -ENOMEM;
                for (int i = 0; r >= 0 && i < n; i++) {
                        int fd = SD_LISTEN_FDS_START + i;
                        const char *name = names && names[i] ? names[i] : "unknown";
                        ConnKind kind;
                        if (streq(name, "client"))
                                kind = CONN_TCP;
                        else if (streq(name, "admin")) {
                                if (have_admin) {
                                        r = log_error_errno(EINVAL, "systemd passed more than one "
                                                            "'admin' socket; refusing to start");
                                        break;
                                }
                                have_admin = true;
                                kind = CONN_ADMIN;
                        } else {
                                r = log_error_errno(EINVAL, "systemd passed a socket named '%s' "
                                                    "(fd %d); expected 'client' or 'admin' "
                                                    "(FileDescriptorName=); refusing to start",
                                                    name, fd);
                                break;
                        }
                        r = listener_adopt(m, fd, kind, name, &m->listeners[m->n_listeners]);
                        if (r >= 0)
                                m->n_listeners++;
                }
                for (int i = 0; names && i < n; i++)
                        free(names[i]);
                free(names);
                if (r < 0)
                        return r;
                m->socket_activated = true;
                if (m->config.n_listen > 0 || m->config.admin_socket)
                        log_notice("Sockets passed by systemd; --listen/--admin-socket ignored");
                return 0;
        }

        size_t nl = m->config.n_listen ? m->config.n_listen : 1;
        m->listeners = calloc(nl + 1, sizeof(Listener));
        if (!m->listeners)
                return -ENOMEM;
        for (size_t i = 0; i < nl; i++) {
                const char *a = m->config.n_listen ? m->config.listen[i] : "127.0.0.1:7707";
                r = listener_bind_tcp(m, a, &m->listeners[m->n_listeners]);
                if (r < 0)
                        return r;
                m->n_listeners++;
        }
        char admin_path[4096];
        if (default_admin_socket(m, admin_path, sizeof admin_path) > 0) {
                r = listener_bind_unix(m, admin_path, &m->listeners[m->n_listeners]);
                if (r < 0)
                        return r;
                m->n_listeners++;
        } else
                log_warning("No admin socket: set --admin-socket or XDG_RUNTIME_DIR");
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
 * a trivial LMDB read succeeds. */
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

static int on_reload(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Manager *m = userdata;
        Config c;
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        (void) sd_notifyf(false, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=Reloading",
                          (unsigned long long) ts.tv_sec * 1000000ull +
                                  (unsigned long long) ts.tv_nsec / 1000);
        int r = config_load(m->argc, m->argv, &c);
        if (r != 0)
                log_warning("Reloading the configuration failed; keeping the old settings");
        else {
                m->config.log_level = c.log_level;
                m->config.idle_timeout_s = c.idle_timeout_s;
                m->config.max_connections = c.max_connections;
                m->config.max_connections_per_peer = c.max_connections_per_peer;
                m->config.auth_failures_per_minute = c.auth_failures_per_minute;
                m->config.sessions_per_vm = c.sessions_per_vm;
                m->config.registration_open = c.registration_open;
                m->config.session_ttl_s = c.session_ttl_s;
                log_set_level(c.log_level);
                config_done(&c);
                log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_RELOADED, .admin_uid = -1 },
                           "Configuration reloaded (registration %s, session TTL %" PRIu64 " s)",
                           m->config.registration_open ? "open" : "closed",
                           m->config.session_ttl_s);
        }
        m->status_last[0] = '\0';
        (void) sd_notify(false, "READY=1");
        (void) status_update(m, true);
        return 0;
}

int manager_open_store(Manager *m) {
        char err[512] = "";
        int r;

        StoreOptions so = {
                .dir = m->state_dir,
                .map_size_max = m->config.map_size_max,
        };
        r = store_open(&so, &m->store, err, sizeof err);
        if (r < 0)
                return log_error_errno(r, "Cannot open the database in %s: %s", m->state_dir,
                                       err[0] ? err : strerror(-r));
        store_hash_key(m->store, m->hash_key);

        r = jobs_new(m->event, m->store, (unsigned) m->config.hash_workers, &m->jobs);
        if (r < 0)
                return log_error_errno(r, "Cannot start worker threads: %s", strerror(-r));
        client_methods_init(m);
        return 0;
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

        /* state directory */
        if (m->config.state_dir)
                snprintf(m->state_dir, sizeof m->state_dir, "%s", m->config.state_dir);
        else {
                r = default_state_dir(m->state_dir, sizeof m->state_dir);
                if (r < 0)
                        return log_error_errno(r, "Cannot find a state directory; use --state-dir");
        }
        r = mkdir_p(m->state_dir, 0700);
        if (r < 0)
                return log_error_errno(r, "Cannot create state directory %s: %s", m->state_dir,
                                       strerror(-r));

        r = manager_open_store(m);
        if (r < 0)
                return r;

        r = manager_listen(m);
        if (r < 0)
                return r;

        for (size_t i = 0; i < m->n_listeners; i++) {
                r = listener_start(&m->listeners[i]);
                if (r < 0)
                        return r;
        }

        /* signals (blocked before any thread starts) and timers */
        r = sd_event_add_signal(m->event, &m->sigterm_source, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sigint_source, SIGINT, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, &m->sighup_source, SIGHUP, on_reload, m);
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
