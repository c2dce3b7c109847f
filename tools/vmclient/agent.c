/* SPDX-License-Identifier: MIT */
/* `vmclient agent`: the VM's self-describing agent (vmclient(1), AGENT).
 *
 * One process, one sd-event loop. The life of a connection:
 *   connect (next server when one is down) -> resume the stored token, or
 *   auth with the password (with --register: register when vmmd does not
 *   know the VM) -> vm.get, and vm.add/vm.update when the discovered
 *   description differs -> events.watch {since, types: ["booking."]} ->
 *   booking.get -> vm.report every interval (vm.get where vmmd has no
 *   vm.report), and vm.update whenever the description changes.
 * A lost connection is retried with exponential backoff and full jitter,
 * capped at 30 s. Booking events of this VM run the hooks (hooks.c). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>

#include "agent-config.h"
#include "agent-conn.h"
#include "agent-log.h"
#include "agent.h"
#include "discover.h"
#include "hooks.h"
#include "shared/macro.h"
#include "state.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

#define USEC_PER_SEC        UINT64_C(1000000)
#define BACKOFF_BASE_USEC   (1 * USEC_PER_SEC)
#define BACKOFF_CAP_USEC    (30 * USEC_PER_SEC)
#define BACKOFF_MIN_USEC    UINT64_C(100000)
/* An answer later than this ends the connection; a login waits for a
 * password hash in vmmd's bounded queue, which may take a while. */
#define REQUEST_TIMEOUT_MIN (60 * USEC_PER_SEC)
#define TOKEN_FILE          "token"
#define FEED_FILE           "feed"

typedef enum Phase {
        PHASE_WAIT,                     /* backing off before the next connect */
        PHASE_CONNECTING,
        PHASE_LOGIN,                    /* resume, auth, register */
        PHASE_SETUP,                    /* vm.get, describe, watch, first report */
        PHASE_RUNNING,
} Phase;

typedef struct Agent {
        AgentConfig cfg;
        sd_event *event;
        sd_event_source *backoff_src, *tick_src;
        AgentConn *conn;
        HookRunner *hooks;
        Phase phase;

        /* servers and backoff */
        size_t server;                  /* index of the one in use or next */
        size_t failed_in_round;         /* servers down in a row */
        unsigned attempt;               /* backoff exponent */
        uint64_t retry_at;              /* CLOCK_MONOTONIC, for the status line */
        uint64_t session_lost_at;       /* when vmmd last ended our session */

        /* the session */
        char token[VMM_TOKEN_LEN + 1];
        bool has_token;
        bool registered_now;            /* one register per connection */
        bool register_without_disks;

        /* what we know of the VM and the server */
        Description *want;              /* discovered */
        Description *have;              /* the server's record */
        bool have_known;
        bool server_meta;               /* takes hostname/ip/os */
        bool server_report;             /* has vm.report */
        bool server_watch;              /* sends booking events on TCP */
        bool server_part1_logged;       /* said once: no booking events */
        bool report_missing_logged;     /* said once: no vm.report */
        bool describing, reporting;
        uint8_t refused[32];            /* the last update vmmd refused, to not repeat it */
        size_t refused_len;

        /* the feed */
        bool has_feed;
        int64_t feed;                   /* the last position handled */
        int64_t feed_queued;            /* the last position given to the hooks */

        /* booking, for the status line */
        bool booking_known, booked;
        char booked_by[VMM_USER_NAME_MAX + 1];
        int64_t booked_until;

        bool ready;
        uint64_t reports;
        char report_error[32];          /* the last failure logged, said once */
        int setup_step;                 /* SetupStep */
} Agent;

/* ---- small helpers ---- */

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000u;
}

static uint64_t random_u64(void) {
        uint64_t v;
        if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t) sizeof v)
                v = ((uint64_t) random() << 32) ^ (uint64_t) random() ^ now_usec();
        return v;
}

static const char *server_name(const Agent *a) {
        return a->cfg.servers[a->server];
}

static AlogFields fields(const Agent *a) {
        return (AlogFields) { .server = server_name(a), .vm_id = a->want->vm_id };
}

static AlogFields fields_err(const Agent *a, const VmmMessage *m) {
        AlogFields f = fields(a);
        f.code = m->error_code;
        return f;
}

static const char *msg_text(const VmmMessage *m) {
        return m->error_message && *m->error_message ? m->error_message : "(no message)";
}

static bool obj_str(const msgpack_object *o, char *buf, size_t size) {
        if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size)
                return false;
        memcpy(buf, o->via.str.ptr, o->via.str.size);
        buf[o->via.str.size] = '\0';
        return true;
}

static bool obj_int(const msgpack_object *o, int64_t *ret) {
        if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
                *ret = (int64_t) o->via.u64;
                return true;
        }
        return false;
}

/* ---- status line (systemctl status) ---- */

static void format_until(int64_t ms, char *buf, size_t size) {
        time_t t = (time_t) (ms / 1000), now = time(NULL);
        struct tm tm, today;
        if (!gmtime_r(&t, &tm) || !gmtime_r(&now, &today)) {
                snprintf(buf, size, "?");
                return;
        }
        if (tm.tm_year == today.tm_year && tm.tm_yday == today.tm_yday)
                strftime(buf, size, "%H:%M UTC", &tm);
        else
                strftime(buf, size, "%Y-%m-%d %H:%M UTC", &tm);
}

static void status_update(Agent *a) {
        char text[512], until[64];
        switch (a->phase) {
        case PHASE_WAIT: {
                uint64_t now = now_usec();
                uint64_t left = a->retry_at > now ? a->retry_at - now : 0;
                snprintf(text, sizeof text, "reconnecting in %" PRIu64 " s",
                         (left + USEC_PER_SEC / 2) / USEC_PER_SEC);
                break;
        }
        case PHASE_CONNECTING:
                snprintf(text, sizeof text, "connecting to %s", server_name(a));
                break;
        case PHASE_LOGIN:
        case PHASE_SETUP:
                snprintf(text, sizeof text, "logging in to %s", server_name(a));
                break;
        case PHASE_RUNNING:
                if (!a->booking_known)
                        snprintf(text, sizeof text, "connected to %s", server_name(a));
                else if (!a->booked)
                        snprintf(text, sizeof text, "connected to %s, not booked",
                                 server_name(a));
                else {
                        format_until(a->booked_until, until, sizeof until);
                        snprintf(text, sizeof text, "connected to %s, booked by %s until %s",
                                 server_name(a), a->booked_by, until);
                }
                break;
        default:
                return;
        }
        (void) sd_notifyf(false, "STATUS=%s", text);
}

/* From a booking map ({"user", "started_at", "expires_at"}) or nil. */
static void booking_set(Agent *a, const msgpack_object *b) {
        a->booking_known = true;
        a->booked = b && b->type == MSGPACK_OBJECT_MAP &&
                    obj_str(vmm_object_get(b, "user"), a->booked_by, sizeof a->booked_by) &&
                    obj_int(vmm_object_get(b, "expires_at"), &a->booked_until);
        status_update(a);
}

/* ---- state files ---- */

static void token_forget(Agent *a) {
        a->has_token = false;
        explicit_bzero(a->token, sizeof a->token);
        int r = state_remove(a->cfg.state_dir, TOKEN_FILE);
        if (r < 0)
                alog(LOG_WARNING, &((AlogFields) { .error = r }),
                     "cannot remove %s/" TOKEN_FILE ": %s", a->cfg.state_dir, strerror(-r));
}

static void token_store(Agent *a, const msgpack_object *tok) {
        char t[VMM_TOKEN_LEN + 1];
        if (!obj_str(tok, t, sizeof t) || strlen(t) != VMM_TOKEN_LEN) {
                alog(LOG_WARNING, NULL, "vmmd sent no usable token: the next connection logs "
                     "in with the password again");
                return;
        }
        memcpy(a->token, t, sizeof t);
        a->has_token = true;
        int r = state_write(a->cfg.state_dir, TOKEN_FILE, a->token);
        if (r < 0)
                alog(LOG_ERR, &((AlogFields) { .error = r }), "cannot store the session token in "
                     "%s/" TOKEN_FILE ": %s", a->cfg.state_dir, strerror(-r));
        explicit_bzero(t, sizeof t);
}

static void token_load(Agent *a) {
        char t[256];
        if (state_read(a->cfg.state_dir, TOKEN_FILE, t, sizeof t) < 0)
                return;
        bool ok = strlen(t) == VMM_TOKEN_LEN;
        for (size_t i = 0; ok && i < VMM_TOKEN_LEN; i++)
                ok = (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z') ||
                     (t[i] >= '0' && t[i] <= '9') || t[i] == '-' || t[i] == '_';
        if (!ok) {
                alog_warning("%s/" TOKEN_FILE " holds no token: ignored", a->cfg.state_dir);
                explicit_bzero(t, sizeof t);
                return;
        }
        memcpy(a->token, t, VMM_TOKEN_LEN + 1);
        a->has_token = true;
        explicit_bzero(t, sizeof t);
}

static void feed_load(Agent *a) {
        char t[64], *end;
        if (state_read(a->cfg.state_dir, FEED_FILE, t, sizeof t) < 0)
                return;
        errno = 0;
        long long v = strtoll(t, &end, 10);
        if (errno != 0 || *end != '\0' || v < 0) {
                alog_warning("%s/" FEED_FILE " holds no feed position: ignored", a->cfg.state_dir);
                return;
        }
        a->has_feed = true;
        a->feed = a->feed_queued = v;
}

static void feed_store(Agent *a, int64_t feed) {
        char t[32];
        if (a->has_feed && feed <= a->feed)
                return;
        a->has_feed = true;
        a->feed = feed;
        if (a->feed_queued < feed)
                a->feed_queued = feed;
        snprintf(t, sizeof t, "%" PRId64, feed);
        int r = state_write(a->cfg.state_dir, FEED_FILE, t);
        if (r < 0)
                alog(LOG_ERR, &((AlogFields) { .error = r }), "cannot store the feed position "
                     "in %s/" FEED_FILE ": %s", a->cfg.state_dir, strerror(-r));
}

/* ---- connecting and backing off ---- */

static void connect_start(Agent *a);
static void conn_drop(Agent *a);

static int on_backoff(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;
        connect_start(a);
        return 0;
}

/* Waits before the next connection: exponential backoff with full jitter
 * (a random time up to min(cap, base * 2^attempt)), so that many agents do
 * not come back at the same moment after a restart of vmmd. */
static void retry_later(Agent *a, const char *why) {
        uint64_t ceiling = BACKOFF_BASE_USEC << MIN(a->attempt, 20u);
        ceiling = MIN(ceiling, BACKOFF_CAP_USEC);
        /* drawn once: MAX() evaluates its arguments twice, and a second draw
         * could fall under the minimum (an agent logged "reconnecting in
         * 0.0 s" in a CI rehearsal) */
        uint64_t drawn = random_u64() % (ceiling + 1);
        uint64_t delay = MAX(drawn, BACKOFF_MIN_USEC);
        a->attempt++;
        conn_drop(a);
        a->phase = PHASE_WAIT;
        a->retry_at = now_usec() + delay;
        AlogFields f = fields(a);
        alog(LOG_NOTICE, &f, "%s; reconnecting in %.1f s (attempt %u, at most %.0f s)", why,
             (double) delay / USEC_PER_SEC, a->attempt, (double) ceiling / USEC_PER_SEC);
        int r = a->backoff_src ? sd_event_source_set_time(a->backoff_src, a->retry_at) :
                sd_event_add_time(a->event, &a->backoff_src, CLOCK_MONOTONIC, a->retry_at, 0,
                                  on_backoff, a);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->backoff_src, SD_EVENT_ONESHOT);
        if (r < 0) {
                alog_error("cannot arm the reconnect timer: %s", strerror(-r));
                (void) sd_event_exit(a->event, 1);
        }
        status_update(a);
}

/* Reconnects at once (a session that ended: log in again). */
static void reconnect_now(Agent *a) {
        conn_drop(a);
        a->phase = PHASE_WAIT;
        a->retry_at = now_usec();
        int r = a->backoff_src ? sd_event_source_set_time(a->backoff_src, a->retry_at) :
                sd_event_add_time(a->event, &a->backoff_src, CLOCK_MONOTONIC, a->retry_at, 0,
                                  on_backoff, a);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->backoff_src, SD_EVENT_ONESHOT);
        if (r < 0)
                (void) sd_event_exit(a->event, 1);
}

static void conn_drop(Agent *a) {
        a->conn = agent_conn_free(a->conn);
        if (a->tick_src)
                (void) sd_event_source_set_enabled(a->tick_src, SD_EVENT_OFF);
        a->describing = a->reporting = false;
        a->registered_now = false;
        a->refused_len = 0;
}

static void on_failed(AgentConn *c, int error, bool established, void *userdata) {
        Agent *a = userdata;
        char why[256];
        if (!established) {
                snprintf(why, sizeof why, "cannot connect to %s: %s", server_name(a),
                         strerror(-error));
                /* down: the next server, at once while some are left untried */
                a->failed_in_round++;
                if (a->cfg.n_servers > 1) {
                        a->server = (a->server + 1) % a->cfg.n_servers;
                        if (a->failed_in_round < a->cfg.n_servers) {
                                AlogFields f = fields(a);
                                alog(LOG_NOTICE, &f, "%s; trying %s", why, server_name(a));
                                reconnect_now(a);
                                return;
                        }
                }
                a->failed_in_round = 0;
        } else
                snprintf(why, sizeof why, "connection to %s lost: %s", server_name(a),
                         error == -ECONNRESET ? "closed by vmmd" : strerror(-error));
        retry_later(a, why);
}

/* ---- requests ---- */

/* Ends a request; a failure here means the connection is unusable. */
static bool send_request(Agent *a, ConnReplyFunc f) {
        int r = agent_conn_end(a->conn, f, a);
        if (r < 0) {
                agent_conn_cancel(a->conn);
                char why[128];
                snprintf(why, sizeof why, "cannot send a request: %s", strerror(-r));
                retry_later(a, why);
                return false;
        }
        return true;
}

static bool begin_request(Agent *a, const char *method, uint32_t n, msgpack_packer **pk) {
        int r = agent_conn_begin(a->conn, method, n, pk);
        if (r < 0) {
                char why[128];
                snprintf(why, sizeof why, "cannot send %s: %s", method, strerror(-r));
                retry_later(a, why);
                return false;
        }
        return true;
}

/* The session is gone (revoked, expired, the VM deleted): log in again on a
 * new connection with the password. */
static void session_lost(Agent *a, const VmmMessage *m, const char *method) {
        AlogFields f = fields_err(a, m);
        uint64_t now = now_usec();
        token_forget(a);
        /* at once, unless the last session also ended within a minute: then
         * with backoff, so that a password hash is not asked for in a loop */
        if (a->session_lost_at && now - a->session_lost_at < 60 * USEC_PER_SEC) {
                char why[256];
                a->session_lost_at = now;
                snprintf(why, sizeof why, "vmmd ended the session again (%s: %s)", method,
                         msg_text(m));
                retry_later(a, why);
                return;
        }
        a->session_lost_at = now;
        alog(LOG_NOTICE, &f, "vmmd ended the session (%s: %s): logging in again with the "
             "password", method, msg_text(m));
        reconnect_now(a);
}

static void setup_next(Agent *a);
static void report_send(Agent *a);
static void describe_sync(Agent *a);

/* ---- login ---- */

static void auth_send(Agent *a);

/* The first line of the password file. */
static int password_read(const Agent *a, char *buf, size_t size) {
        _cleanup_close_ int fd = open(a->cfg.password_file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        ssize_t k = read(fd, buf, size - 1);
        if (k < 0)
                return negative_errno();
        buf[k] = '\0';
        buf[strcspn(buf, "\r\n")] = '\0';
        size_t n = strlen(buf);
        if (n < VMM_PASSWORD_MIN || n > VMM_PASSWORD_MAX) {
                explicit_bzero(buf, size);
                return -EINVAL;
        }
        return 0;
}

static void on_register(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        AlogFields f = fields_err(a, m);
        char why[512];

        if (m->error == VMM_OK) {
                f.message_id = ALOG_MID_LOGIN;
                alog(LOG_NOTICE, &f, "registered %s on %s", a->want->vm_id, server_name(a));
                auth_send(a);
                return;
        }
        switch (m->error) {
        case VMM_E_EXISTS:
                f.message_id = ALOG_MID_LOGIN_FAIL;
                alog(LOG_ERR, &f, "vmmd knows %s but refused its password: the password in %s is "
                     "wrong", a->want->vm_id, a->cfg.password_file);
                retry_later(a, "wrong password");
                return;
        case VMM_E_CONFLICT:
                if (!a->register_without_disks) {
                        alog(LOG_WARNING, &f, "register: %s; registering without disks (the "
                             "disks follow with vm.update)", msg_text(m));
                        a->register_without_disks = true;
                        a->registered_now = false;
                        auth_send(a);   /* auth fails again, then registers */
                        return;
                }
                break;
        case VMM_E_FORBIDDEN:
                alog(LOG_ERR, &f, "vmmd does not let %s register (%s): ask an administrator to "
                     "create it (vmadm create %s)", a->want->vm_id, msg_text(m), a->want->vm_id);
                retry_later(a, "registration refused");
                return;
        default:
                break;
        }
        snprintf(why, sizeof why, "register failed: %s: %s", m->error_code, msg_text(m));
        retry_later(a, why);
}

static void register_send(Agent *a) {
        char pw[VMM_PASSWORD_MAX + 2];
        msgpack_packer *pk;
        int r = password_read(a, pw, sizeof pw);
        if (r < 0) {
                retry_later(a, "no usable password");
                return;
        }
        a->registered_now = true;
        unsigned what = DESC_PART1 & ~(a->register_without_disks ? DESC_DISKS : 0u);
        what = description_present(a->want, what);
        if (!begin_request(a, VMM_M_REGISTER, (uint32_t) __builtin_popcount(what) + 1, &pk)) {
                explicit_bzero(pw, sizeof pw);
                return;
        }
        r = vmm_pack_kv_str(pk, "password", pw);
        explicit_bzero(pw, sizeof pw);
        if (r >= 0)
                r = description_pack(pk, a->want, what);
        if (r < 0) {
                agent_conn_cancel(a->conn);
                retry_later(a, "out of memory");
                return;
        }
        (void) send_request(a, on_register);
}

static void on_auth(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        AlogFields f = fields_err(a, m);
        char why[512];

        if (m->error == VMM_OK) {
                token_store(a, vmm_object_get(&m->result, "token"));
                f.message_id = ALOG_MID_LOGIN;
                alog(LOG_NOTICE, &f, "logged in to %s as %s with the password (new session)",
                     server_name(a), a->want->vm_id);
                setup_next(a);
                return;
        }
        if (m->error == VMM_E_UNAUTHENTICATED && a->cfg.register_vm && !a->registered_now) {
                alog(LOG_INFO, &f, "vmmd refused the login of %s: registering it",
                     a->want->vm_id);
                register_send(a);
                return;
        }
        f.message_id = ALOG_MID_LOGIN_FAIL;
        switch (m->error) {
        case VMM_E_UNAUTHENTICATED:
                alog(LOG_ERR, &f, "vmmd refused the login of %s: unknown VM or wrong password "
                     "(%s)%s", a->want->vm_id, a->cfg.password_file,
                     a->cfg.register_vm ? "" : "; --register registers an unknown VM");
                retry_later(a, "login refused");
                return;
        case VMM_E_FORBIDDEN:
                alog(LOG_ERR, &f, "vmmd refuses %s: %s", a->want->vm_id, msg_text(m));
                retry_later(a, "login refused");
                return;
        default:
                snprintf(why, sizeof why, "auth failed: %s: %s", m->error_code, msg_text(m));
                alog(LOG_WARNING, &f, "%s", why);
                retry_later(a, why);
                return;
        }
}

static void auth_send(Agent *a) {
        char pw[VMM_PASSWORD_MAX + 2];
        msgpack_packer *pk;
        int r = password_read(a, pw, sizeof pw);
        if (r < 0) {
                AlogFields f = fields(a);
                f.error = r;
                alog(LOG_ERR, &f, "cannot log in: %s %s", a->cfg.password_file,
                     r == -EINVAL ? "does not hold a password of 6-1024 bytes on its first line"
                                  : strerror(-r));
                retry_later(a, "no usable password");
                return;
        }
        if (!begin_request(a, VMM_M_AUTH, 2, &pk)) {
                explicit_bzero(pw, sizeof pw);
                return;
        }
        r = vmm_pack_kv_str(pk, "vm_id", a->want->vm_id);
        if (r >= 0)
                r = vmm_pack_kv_str(pk, "password", pw);
        explicit_bzero(pw, sizeof pw);
        if (r < 0) {
                agent_conn_cancel(a->conn);
                retry_later(a, "out of memory");
                return;
        }
        (void) send_request(a, on_auth);
}

static void on_resume(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        AlogFields f = fields_err(a, m);
        char vm[VMM_VM_ID_MAX + 1], why[512];

        if (m->error == VMM_OK) {
                if (!obj_str(vmm_object_get(&m->result, "vm_id"), vm, sizeof vm) ||
                    strcmp(vm, a->want->vm_id) != 0) {
                        alog(LOG_NOTICE, &f, "the stored session is not %s's: logging in with the "
                             "password", a->want->vm_id);
                        token_forget(a);
                        auth_send(a);
                        return;
                }
                f.message_id = ALOG_MID_LOGIN;
                alog(LOG_INFO, &f, "resumed the session of %s on %s", a->want->vm_id,
                     server_name(a));
                setup_next(a);
                return;
        }
        if (m->error == VMM_E_UNAUTHENTICATED) {
                alog(LOG_NOTICE, &f, "vmmd refused the stored session (%s): logging in with the "
                     "password", msg_text(m));
                token_forget(a);
                auth_send(a);
                return;
        }
        snprintf(why, sizeof why, "resume failed: %s: %s", m->error_code, msg_text(m));
        retry_later(a, why);
}

static void on_connected(AgentConn *c, void *userdata) {
        Agent *a = userdata;
        msgpack_packer *pk;
        AlogFields f = fields(a);

        f.message_id = ALOG_MID_CONNECTED;
        alog(LOG_INFO, &f, "connected to %s", server_name(a));
        a->failed_in_round = 0;
        a->phase = PHASE_LOGIN;
        a->have_known = false;
        a->register_without_disks = false;
        status_update(a);
        if (!a->has_token) {
                auth_send(a);
                return;
        }
        if (!begin_request(a, VMM_M_RESUME, 1, &pk))
                return;
        if (vmm_pack_kv_str(pk, "token", a->token) < 0) {
                agent_conn_cancel(a->conn);
                retry_later(a, "out of memory");
                return;
        }
        (void) send_request(a, on_resume);
}

static void on_notification(AgentConn *c, const VmmMessage *m, void *userdata);

static void connect_start(Agent *a) {
        static const AgentConnCallbacks cb = {
                .connected = on_connected,
                .failed = on_failed,
                .notification = on_notification,
        };
        uint64_t timeout = MAX(REQUEST_TIMEOUT_MIN, 3 * a->cfg.interval_s * USEC_PER_SEC);
        conn_drop(a);
        a->phase = PHASE_CONNECTING;
        status_update(a);
        int r = agent_conn_new(a->event, server_name(a), timeout, &cb, a, &a->conn);
        if (r < 0) {
                char why[256];
                snprintf(why, sizeof why, "cannot connect to %s: %s", server_name(a),
                         r == -EINVAL ? "not a HOST:PORT address" : strerror(-r));
                retry_later(a, why);
        }
}

/* ---- setup after login: describe, watch, booking, report ---- */

typedef enum SetupStep {
        STEP_GET,
        STEP_DESCRIBE,
        STEP_WATCH,
        STEP_BOOKING,
        STEP_REPORT,
        STEP_DONE,
} SetupStep;

static void on_setup_get(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        if (m->error == VMM_E_UNAUTHENTICATED) {
                session_lost(a, m, VMM_M_VM_GET);
                return;
        }
        if (m->error == VMM_OK) {
                bool meta = false;
                if (description_from_record(&m->result, a->have, &meta) == 0) {
                        a->have_known = true;
                        a->server_meta = meta;
                        if (vmm_object_get(&m->result, "booking"))
                                booking_set(a, vmm_object_get(&m->result, "booking"));
                }
        } else if (m->error != VMM_E_NOT_FOUND) {
                AlogFields f = fields_err(a, m);
                alog(LOG_WARNING, &f, "vm.get failed: %s: %s", m->error_code, msg_text(m));
        }
        if (a->phase == PHASE_SETUP) {
                a->setup_step = STEP_DESCRIBE;
                setup_next(a);
        } else
                describe_sync(a);
}

static void on_watch(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        AlogFields f = fields_err(a, m);
        int64_t feed;

        if (m->error == VMM_OK) {
                a->server_watch = true;
                bool has = obj_int(vmm_object_get(&m->result, "feed"), &feed);
                if (has && a->has_feed && feed < a->feed_queued) {
                        /* the feed went back: vmmd restored from a backup, or a new
                         * database; what we handled is not what it holds */
                        alog(LOG_WARNING, &f, "vmmd's event feed ends at %" PRId64 ", before the "
                             "position %" PRId64 " handled here (a restored or new database): "
                             "going on from %" PRId64, feed, a->feed_queued, feed);
                        a->has_feed = false;
                }
                if (has && !a->has_feed) {
                        /* first start: from now on (older bookings are history) */
                        a->feed = a->feed_queued = -1;
                        feed_store(a, feed);
                }
                f.has_feed = a->has_feed;
                f.feed = a->feed;
                alog(LOG_INFO, &f, "watching booking events after feed position %" PRId64,
                     a->has_feed ? a->feed : 0);
        } else if (m->error == VMM_E_UNAUTHENTICATED) {
                session_lost(a, m, VMM_M_EVENTS_WATCH);
                return;
        } else {
                a->server_watch = false;
                if (!a->server_part1_logged) {
                        alog(LOG_NOTICE, &f, "vmmd does not send booking events to VMs (%s: %s): "
                             "the booking hooks will not run", m->error_code, msg_text(m));
                        a->server_part1_logged = true;
                }
        }
        a->setup_step = STEP_BOOKING;
        setup_next(a);
}

static void on_booking(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        if (m->error == VMM_OK)
                booking_set(a, vmm_object_get(&m->result, "booking"));
        else if (m->error == VMM_E_UNAUTHENTICATED) {
                session_lost(a, m, VMM_M_BOOKING_GET);
                return;
        }
        if (a->setup_step == STEP_BOOKING) {
                a->setup_step = STEP_REPORT;
                setup_next(a);
        }
}

static void booking_get(Agent *a) {
        msgpack_packer *pk;
        /* its own vm_id: what a VM session may ask for */
        if (!begin_request(a, VMM_M_BOOKING_GET, 1, &pk))
                return;
        if (vmm_pack_kv_str(pk, "vm_id", a->want->vm_id) < 0) {
                agent_conn_cancel(a->conn);
                retry_later(a, "out of memory");
                return;
        }
        (void) send_request(a, on_booking);
}

static void tick_start(Agent *a);

/* Runs the next step of the setup of a new session. */
static void setup_next(Agent *a) {
        msgpack_packer *pk;

        if (a->phase == PHASE_LOGIN) {
                a->phase = PHASE_SETUP;
                a->setup_step = STEP_GET;
                a->server_report = true;
        }
        switch ((SetupStep) a->setup_step) {
        case STEP_GET:
                if (begin_request(a, VMM_M_VM_GET, 0, NULL))
                        (void) send_request(a, on_setup_get);
                return;
        case STEP_DESCRIBE:
                a->setup_step = STEP_WATCH;
                describe_sync(a);       /* goes on with setup_next() when answered */
                return;
        case STEP_WATCH: {
                /* since: what this process already has (queued for the hooks
                 * or handled), so that nothing runs twice */
                if (!begin_request(a, VMM_M_EVENTS_WATCH, a->has_feed ? 2 : 1, &pk))
                        return;
                int r = 0;
                if (a->has_feed) {
                        r |= vmm_pack_str(pk, "since");
                        r |= msgpack_pack_int64(pk, a->feed_queued) ? -ENOMEM : 0;
                }
                r |= vmm_pack_str(pk, "types");
                r |= msgpack_pack_array(pk, 1) ? -ENOMEM : 0;
                r |= vmm_pack_str(pk, "booking.");
                if (r < 0) {
                        agent_conn_cancel(a->conn);
                        retry_later(a, "out of memory");
                        return;
                }
                (void) send_request(a, on_watch);
                return;
        }
        case STEP_BOOKING:
                if (!a->server_meta) {
                        a->setup_step = STEP_REPORT;
                        setup_next(a);
                        return;
                }
                booking_get(a);
                return;
        case STEP_REPORT:
                a->setup_step = STEP_DONE;
                a->phase = PHASE_RUNNING;
                status_update(a);
                tick_start(a);
                report_send(a);
                return;
        case STEP_DONE:
                return;
        }
}

/* ---- describing ---- */

static int rediscover(Agent *a) {
        _cleanup_free_ Description *d = calloc(1, sizeof(Description));
        if (!d)
                return -ENOMEM;
        DiscoverOptions o = { .vm_id = a->want->vm_id, .all_disks = a->cfg.all_disks };
        int r = discover(&o, d);
        if (r < 0)
                return alog(LOG_WARNING, &((AlogFields) { .error = r }),
                            "cannot describe this system: %s", strerror(-r));
        memcpy(a->want, d, sizeof *d);
        return 0;
}

static void describe_text(unsigned diff, char *buf, size_t size) {
        static const struct { unsigned bit; const char *name; } names[] = {
                { DESC_RAM, "ram" }, { DESC_CPU, "cpu" }, { DESC_DISKS, "disks" },
                { DESC_HOSTNAME, "hostname" }, { DESC_IP, "ip" }, { DESC_OS, "os" },
        };
        size_t o = 0;
        buf[0] = '\0';
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (diff & names[i].bit)
                        o += (size_t) snprintf(buf + o, o < size ? size - o : 0, "%s%s",
                                               o ? ", " : "", names[i].name);
}

static void on_described(AgentConn *c, const VmmMessage *m, void *userdata);

/* Sends vm.add (a VM never described) or vm.update with the fields that
 * differ; returns false when there is nothing to send. */
static bool describe_send(Agent *a, bool add, unsigned diff) {
        msgpack_packer *pk;
        msgpack_sbuffer sb;
        msgpack_packer spk;

        unsigned what = add ? (DESC_PART1 | (a->server_meta ? DESC_META : 0)) : diff;
        what = description_present(a->want, what);
        if (what == 0)
                return false;
        /* the same update refused before (a disk id of another VM ...) is not
         * sent again until something changes */
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&spk, &sb, msgpack_sbuffer_write);
        (void) description_pack(&spk, a->want, what);
        uint8_t sig[32] = { 0 };
        for (size_t i = 0; i < sb.size; i++)
                sig[i % 32] = (uint8_t) (sig[i % 32] * 31 + (uint8_t) sb.data[i] + i / 32);
        msgpack_sbuffer_destroy(&sb);
        if (a->refused_len && memcmp(sig, a->refused, sizeof sig) == 0)
                return false;

        if (!begin_request(a, add ? VMM_M_VM_ADD : VMM_M_VM_UPDATE,
                           (uint32_t) __builtin_popcount(what), &pk))
                return true;
        if (description_pack(pk, a->want, what) < 0) {
                agent_conn_cancel(a->conn);
                retry_later(a, "out of memory");
                return true;
        }
        memcpy(a->refused, sig, sizeof sig);    /* kept only if refused */
        a->describing = true;
        char text[128];
        describe_text(add ? what & ~DESC_VM_ID : what, text, sizeof text);
        alog_debug("sending %s (%s)", add ? VMM_M_VM_ADD : VMM_M_VM_UPDATE, text);
        (void) send_request(a, on_described);
        return true;
}

/* Sends what changed, if anything; during setup, setup goes on afterwards. */
static void describe_sync(Agent *a) {
        if (a->describing) {
                if (a->phase == PHASE_SETUP)
                        setup_next(a);
                return;
        }
        bool sent;
        if (!a->have_known || a->have->ram == 0 || a->have->cpu == 0)
                sent = describe_send(a, true, 0);
        else {
                unsigned what = DESC_RAM | DESC_CPU | DESC_DISKS | (a->server_meta ? DESC_META : 0);
                unsigned diff = description_diff(a->want, a->have, what);
                sent = diff != 0 && describe_send(a, false, diff);
        }
        if (!sent && a->phase == PHASE_SETUP)
                setup_next(a);
}

static void on_described(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        AlogFields f = fields_err(a, m);

        a->describing = false;
        if (m->error == VMM_OK) {
                char text[128];
                _cleanup_free_ Description *prev = malloc(sizeof(Description));
                if (prev)
                        memcpy(prev, a->have, sizeof *prev);
                bool meta = a->server_meta;
                if (description_from_record(&m->result, a->have, &meta) == 0) {
                        a->have_known = true;
                        a->server_meta = meta;
                }
                unsigned what = DESC_RAM | DESC_CPU | DESC_DISKS | DESC_META;
                describe_text(prev ? description_diff(a->have, prev, what) : what, text,
                              sizeof text);
                f.message_id = ALOG_MID_DESCRIBED;
                alog(LOG_NOTICE, &f, "described %s to vmmd: %s", a->want->vm_id,
                     *text ? text : "no change");
                a->refused_len = 0;
        } else {
                switch (m->error) {
                case VMM_E_UNAUTHENTICATED:
                        session_lost(a, m, "vm.update");
                        return;
                case VMM_E_EXISTS:
                case VMM_E_NOT_FOUND:
                        /* described meanwhile, or not: ask again */
                        a->have_known = false;
                        if (begin_request(a, VMM_M_VM_GET, 0, NULL))
                                (void) send_request(a, on_setup_get);
                        if (a->phase == PHASE_SETUP)
                                a->setup_step = STEP_GET;
                        return;
                case VMM_E_BAD_REQUEST:
                        if (a->server_meta && m->error_message &&
                            (strstr(m->error_message, "hostname") ||
                             strstr(m->error_message, "ip") || strstr(m->error_message, "os"))) {
                                /* an older vmmd: describe without the part 2 keys */
                                a->server_meta = false;
                                alog(LOG_NOTICE, &f, "vmmd does not take hostname, ip, os (%s): "
                                     "describing without them", msg_text(m));
                                describe_sync(a);
                                return;
                        }
                        __attribute__((fallthrough));
                default:
                        a->refused_len = sizeof a->refused;
                        alog(LOG_WARNING, &f, "vmmd refused the description of %s (%s: %s); sent "
                             "again when it changes", a->want->vm_id, m->error_code, msg_text(m));
                        break;
                }
        }
        if (a->phase == PHASE_SETUP)
                setup_next(a);
}

/* ---- reporting ---- */

static void on_report(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        AlogFields f = fields_err(a, m);

        a->reporting = false;
        switch (m->error) {
        case VMM_OK:
                a->reports++;
                if (a->server_report)
                        booking_set(a, vmm_object_get(&m->result, "booking"));
                else {
                        /* the heartbeat's vm.get: the record, to notice changes made
                         * by others */
                        bool meta = a->server_meta;
                        if (description_from_record(&m->result, a->have, &meta) == 0)
                                a->have_known = true;
                }
                a->attempt = 0;
                a->report_error[0] = '\0';
                if (!a->ready) {
                        a->ready = true;
                        status_update(a);
                        (void) sd_notify(false, "READY=1");
                        alog(LOG_INFO, &f, "first %s to %s done: ready",
                             a->server_report ? "report" : "heartbeat", server_name(a));
                }
                return;
        case VMM_E_RATE_LIMITED:
                alog(LOG_DEBUG, &f, "report skipped: %s", msg_text(m));
                return;
        case VMM_E_UNAUTHENTICATED:
                session_lost(a, m, a->server_report ? VMM_M_VM_REPORT : VMM_M_VM_GET);
                return;
        case VMM_E_UNKNOWN_METHOD:
                if (a->server_report) {
                        if (!a->report_missing_logged)
                                alog(LOG_NOTICE, &f, "vmmd has no vm.report (protocol part 1): a "
                                     "vm.get every interval keeps the session instead");
                        a->report_missing_logged = true;
                        a->server_report = false;
                        report_send(a);
                        return;
                }
                __attribute__((fallthrough));
        default:
                /* said once until it changes or a report succeeds */
                if (strcmp(a->report_error, m->error_code ? m->error_code : "") != 0)
                        alog(LOG_WARNING, &f, "%s failed: %s: %s",
                             a->server_report ? VMM_M_VM_REPORT : VMM_M_VM_GET, m->error_code,
                             msg_text(m));
                snprintf(a->report_error, sizeof a->report_error, "%s",
                         m->error_code ? m->error_code : "");
                return;
        }
}

static void report_send(Agent *a) {
        msgpack_packer *pk;
        if (a->reporting || !a->conn)
                return;
        if (!a->server_report) {
                if (!begin_request(a, VMM_M_VM_GET, 0, NULL))
                        return;
        } else {
                _cleanup_free_ Metrics *m = calloc(1, sizeof(Metrics));
                if (!m)
                        return;
                metrics_collect(NULL, a->want, m);
                if (!begin_request(a, VMM_M_VM_REPORT, metrics_count(m), &pk))
                        return;
                if (metrics_pack(pk, m) < 0) {
                        agent_conn_cancel(a->conn);
                        return;
                }
        }
        a->reporting = true;
        (void) send_request(a, on_report);
}

static int on_tick(sd_event_source *s, uint64_t usec, void *userdata) {
        Agent *a = userdata;
        (void) sd_event_source_set_time(s, usec + a->cfg.interval_s * USEC_PER_SEC);
        if (a->phase != PHASE_RUNNING || !a->conn)
                return 0;
        if (rediscover(a) >= 0)
                describe_sync(a);
        if (a->conn && a->phase == PHASE_RUNNING)
                report_send(a);
        return 0;
}

static void tick_start(Agent *a) {
        uint64_t next = now_usec() + a->cfg.interval_s * USEC_PER_SEC;
        int r = a->tick_src ? sd_event_source_set_time(a->tick_src, next) :
                sd_event_add_time(a->event, &a->tick_src, CLOCK_MONOTONIC, next, 0, on_tick, a);
        if (r >= 0)
                r = sd_event_source_set_enabled(a->tick_src, SD_EVENT_ON);
        if (r < 0)
                retry_later(a, "cannot arm the report timer");
}

/* ---- booking events and hooks ---- */

static bool is_hook_event(const char *type) {
        return !strcmp(type, "booking.created") || !strcmp(type, "booking.renewed") ||
               !strcmp(type, "booking.expiring") || !strcmp(type, "booking.ended");
}

static void on_hooks_done(HookRunner *h, bool has_feed, int64_t feed, void *userdata) {
        Agent *a = userdata;
        if (has_feed)
                feed_store(a, feed);
}

static void on_notification(AgentConn *c, const VmmMessage *m, void *userdata) {
        Agent *a = userdata;
        const msgpack_object *p = &m->result;
        char type[64], vm[VMM_VM_ID_MAX + 1];
        int64_t feed = -1;

        if (!m->method || strcmp(m->method, "event") != 0)
                return;
        if (p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size > 0)
                p = &p->via.array.ptr[0];
        if (p->type != MSGPACK_OBJECT_MAP || !obj_str(vmm_object_get(p, "type"), type, sizeof type))
                return;
        bool has_feed = obj_int(vmm_object_get(p, "feed"), &feed);
        AlogFields f = fields(a);
        f.event = type;
        f.has_feed = has_feed;
        f.feed = feed;

        if (strcmp(type, "events.truncated") == 0) {
                alog(LOG_WARNING, &f, "vmmd no longer keeps the booking events since feed "
                     "position %" PRId64 ": their hooks will not run", a->feed);
                booking_get(a);
                return;
        }
        if (strncmp(type, "booking.", 8) != 0)
                return;
        if (!obj_str(vmm_object_get(p, "vm_id"), vm, sizeof vm) || strcmp(vm, a->want->vm_id) != 0)
                return;
        /* replayed after a reconnect, already run or queued: once only */
        if (has_feed && a->has_feed && feed <= a->feed_queued) {
                alog(LOG_DEBUG, &f, "%s at feed position %" PRId64 " already handled", type, feed);
                return;
        }
        if (has_feed)
                a->feed_queued = feed;

        char user[VMM_USER_NAME_MAX + 1] = "";
        int64_t until = 0;
        (void) obj_str(vmm_object_get(p, "user"), user, sizeof user);
        bool has_until = obj_int(vmm_object_get(p, "expires_at"), &until);
        f.user = user;
        if (!strcmp(type, "booking.ended")) {
                a->booking_known = true;
                a->booked = false;
        } else if (!strcmp(type, "booking.created") || !strcmp(type, "booking.renewed")) {
                a->booking_known = a->booked = true;
                snprintf(a->booked_by, sizeof a->booked_by, "%s", user);
                if (has_until)
                        a->booked_until = until;
        }
        status_update(a);
        if (!is_hook_event(type)) {
                if (has_feed && hook_runner_pending(a->hooks) == 0)
                        feed_store(a, feed);
                return;
        }
        alog(LOG_INFO, &f, "%s (%s): running the hooks", type, *user ? user : "-");
        int r = hook_runner_enqueue(a->hooks, p);
        if (r < 0) {
                f.error = r;
                alog(LOG_ERR, &f, "cannot queue the hooks of %s: %s", type, strerror(-r));
        }
}

/* ---- main ---- */

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Agent *a = userdata;
        const char *name = sigabbrev_np((int) si->ssi_signo);
        alog_info("SIG%s: stopping", name ? name : "?");
        (void) sd_notify(false, "STOPPING=1");
        (void) sd_event_exit(a->event, 0);
        return 0;
}

int vmclient_agent(int argc, char **argv) {
        Agent agent = { 0 };
        Agent *a = &agent;
        AgentArgs args;
        int r = agent_config_load(AGENT_MODE_AGENT, argc, argv, &a->cfg, &args);
        if (r >= 0)
                return r;
        if (args.check_config) {
                agent_config_print(&a->cfg);
                agent_config_done(&a->cfg);
                return 0;
        }
        alog_open();
        alog_set_level(a->cfg.log_level);
        int ret = 1;

        a->want = calloc(1, sizeof(Description));
        a->have = calloc(1, sizeof(Description));
        if (!a->want || !a->have) {
                alog_error("out of memory");
                goto out;
        }
        DiscoverOptions o = { .vm_id = a->cfg.vm_id, .all_disks = a->cfg.all_disks };
        r = discover(&o, a->want);
        if (r < 0) {
                alog_error("cannot describe this system (%s): %s", discover_root(), strerror(-r));
                goto out;
        }
        if (!a->want->has_vm_id) {
                alog_error("no vm_id: the hostname is not a valid VM id; set vm_id in %s or "
                           "--vm-id", AGENT_CONFIG_DEFAULT);
                ret = 2;
                goto out;
        }
        r = state_dir_ensure(a->cfg.state_dir);
        if (r < 0) {
                alog_error("cannot use the state directory %s: %s", a->cfg.state_dir,
                           strerror(-r));
                goto out;
        }
        token_load(a);
        feed_load(a);

        /* signals through the loop; SIGCHLD for the hooks; no SIGPIPE (a hook
         * that closes its stdin early, a resolver finishing late) */
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
                alog_error("sigprocmask: %s", strerror(errno));
                goto out;
        }
        (void) signal(SIGPIPE, SIG_IGN);

        r = sd_event_default(&a->event);
        if (r >= 0)
                r = sd_event_add_signal(a->event, NULL, SIGTERM, on_signal, a);
        if (r >= 0)
                r = sd_event_add_signal(a->event, NULL, SIGINT, on_signal, a);
        if (r >= 0)
                r = sd_event_set_watchdog(a->event, true);     /* fed while the loop runs */
        if (r >= 0)
                r = hook_runner_new(a->event, a->cfg.hooks_dir,
                                    a->cfg.hook_timeout_s * USEC_PER_SEC, on_hooks_done, a,
                                    &a->hooks);
        if (r < 0) {
                alog_error("cannot set up the event loop: %s", strerror(-r));
                goto out;
        }
        alog(LOG_INFO, &((AlogFields) { .vm_id = a->want->vm_id }),
             "vmclient agent for %s: %zu server(s), report every %" PRIu64 " s, hooks in %s%s",
             a->want->vm_id, a->cfg.n_servers, a->cfg.interval_s, a->cfg.hooks_dir,
             a->has_token ? ", resuming the stored session" : "");
        connect_start(a);
        r = sd_event_loop(a->event);
        ret = r < 0 ? 1 : r;
out:
        conn_drop(a);
        a->hooks = hook_runner_free(a->hooks);
        a->backoff_src = sd_event_source_disable_unref(a->backoff_src);
        a->tick_src = sd_event_source_disable_unref(a->tick_src);
        a->event = sd_event_unref(a->event);
        free(a->want);
        free(a->have);
        explicit_bzero(a->token, sizeof a->token);
        agent_config_done(&a->cfg);
        return ret;
}
