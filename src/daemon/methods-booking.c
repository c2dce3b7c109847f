/* SPDX-License-Identifier: MIT */
/* booking.create, renew, cancel, get, list, history, and the timer that
 * ends bookings and warns before the end (see methods-booking.h). */
#include <errno.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"
#include "methods-booking.h"
#include "shared/clock.h"
#include "shared/mpout.h"

#define TIMER_BATCH 512                 /* bookings ended or warned per timer job */

struct Bookings {
        Manager *manager;
        sd_event_source *timer;
        int64_t armed;          /* the wall time (ms) the timer is set for;
                                 * INT64_MAX: off */
        bool job_running, again;
};

static const char *const action_names[] = { "book", "renew", "cancel", "expire", "end" };

int pack_booking(msgpack_packer *pk, const StoreBooking *b) {
        if (msgpack_pack_map(pk, 4) || mp_kv_str(pk, "vm_id", b->vm_id) ||
            mp_kv_str(pk, "user", b->user) || mp_kv_i64(pk, "started_at", b->started_at) ||
            mp_kv_i64(pk, "expires_at", b->expires_at))
                return -ENOMEM;
        return 0;
}

int pack_booking_result(Manager *m, msgpack_packer *pk, const char *vm_id) {
        StoreTxn *t = NULL;
        StoreBooking b;
        int q;

        q = store_read_begin(m->store, &t);
        if (q < 0)
                return q;
        q = store_booking_get(t, vm_id, &b);
        store_read_end(t);
        if (q == -ENOENT)
                return msgpack_pack_map(pk, 1) || mp_kv_nil(pk, "booking") ? -ENOMEM : 0;
        if (q < 0)
                return q;
        if (msgpack_pack_map(pk, 1) || mp_str(pk, "booking"))
                return -ENOMEM;
        return pack_booking(pk, &b);
}

/* ---- writes shared by the methods and the timer ---- */

static int history_add(StoreTxn *t, uint64_t feed, int64_t time, const StoreBooking *b,
                       int action, int64_t expires_at, const char *by) {
        StoreHistory h = { .feed = feed, .time = time, .action = (uint8_t) action,
                           .expires_at = expires_at };

        snprintf(h.vm_id, sizeof h.vm_id, "%s", b->vm_id);
        snprintf(h.user, sizeof h.user, "%s", b->user);
        snprintf(h.by, sizeof h.by, "%s", by ? by : "");
        return store_history_add(t, &h);
}

int booking_end_to(PendingEvent **events, StoreTxn *t, const char *vm_id, int action,
                   const char *reason, const char *by, int64_t time) {
        StoreBooking b;
        uint64_t pos;
        int q;

        q = store_booking_get(t, vm_id, &b);
        if (q < 0)
                return q;
        q = store_booking_delete(t, vm_id);
        if (q < 0)
                return q;
        /* the VM record stays as it is: the history entry below says since
         * when the VM is free (pick_one) */
        q = events_append_to(events, t, &(Event) { .type = "booking.ended", .vm_id = vm_id,
                                                   .user = b.user, .reason = reason,
                                                   .has_expires_at = true,
                                                   .expires_at = b.expires_at, .time = time },
                             &pos);
        if (q < 0)
                return q;
        return history_add(t, pos, time, &b, action, b.expires_at, by);
}

int booking_end_in(Request *r, StoreTxn *t, const char *vm_id, int action, const char *reason,
                   const char *by) {
        return booking_end_to(&r->events, t, vm_id, action, reason, by, now_ms());
}

/* ---- the timer ---- */

static int64_t warn_ms_of(const Manager *m) {
        return (int64_t) m->config.booking_warn_minutes * 60000;
}

typedef struct TimerJob {
        Job job;
        Manager *manager;
        int64_t now, warn_ms;
        PendingEvent *events;
        StoreBooking *due;
        size_t n_due, cap_due;
        size_t ended, warned;
        bool more;
} TimerJob;

static int due_collect(void *userdata, const StoreBooking *b) {
        TimerJob *tj = userdata;

        if (b->warned && b->expires_at > tj->now)
                return 0;       /* warned already, not over yet */
        if (tj->n_due == TIMER_BATCH) {
                tj->more = true;
                return 1;
        }
        if (tj->n_due == tj->cap_due) {
                size_t cap = tj->cap_due ? tj->cap_due * 2 : 16;
                void *p = realloc(tj->due, cap * sizeof *tj->due);
                if (!p)
                        return -ENOMEM;
                tj->due = p;
                tj->cap_due = cap;
        }
        tj->due[tj->n_due++] = *b;
        return 0;
}

static int timer_write(Job *j, StoreTxn *t) {
        TimerJob *tj = (TimerJob *) j;
        int q;

        events_list_free(&tj->events);
        tj->n_due = tj->ended = tj->warned = 0;
        tj->more = false;
        q = store_booking_expiry_foreach(t, tj->now + tj->warn_ms, due_collect, tj);
        if (q < 0)
                return q;
        for (size_t i = 0; i < tj->n_due; i++) {
                StoreBooking *b = &tj->due[i];
                if (b->expires_at <= tj->now) {
                        /* the history keeps the time it was due */
                        q = booking_end_to(&tj->events, t, b->vm_id, STORE_HISTORY_EXPIRE,
                                           "expire", NULL, b->expires_at);
                        tj->ended++;
                } else {
                        b->warned = true;
                        q = store_booking_put(t, b);
                        if (q >= 0)
                                q = events_append_to(&tj->events, t, &(Event) {
                                                .type = "booking.expiring", .vm_id = b->vm_id,
                                                .user = b->user, .has_expires_at = true,
                                                .expires_at = b->expires_at }, NULL);
                        tj->warned++;
                }
                if (q < 0 && q != -ENOENT)
                        return q;
        }
        return 0;
}

static void timer_arm(Bookings *bk);
static void timer_set(Bookings *bk, int64_t due);

static void timer_done(Job *j, int q) {
        TimerJob *tj = (TimerJob *) j;
        Bookings *bk = tj->manager->bookings;

        if (q < 0)
                log_warning_errno(q, "Ending bookings failed: %s", strerror(-q));
        else {
                if (tj->ended || tj->warned)
                        log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_BOOKING,
                                                            .admin_uid = -1 },
                                   "Bookings: %zu ended at their time, %zu warned", tj->ended,
                                   tj->warned);
                events_publish_list(tj->manager->events, &tj->events);
        }
        events_list_free(&tj->events);
        if (bk) {
                bk->job_running = false;
                if (tj->more || q < 0)
                        bk->again = true;
                timer_arm(bk);
        }
        free(tj->due);
        free(tj);
}

static void timer_run(Bookings *bk) {
        Manager *m = bk->manager;
        TimerJob *tj;

        if (bk->job_running) {
                bk->again = true;
                return;
        }
        tj = calloc(1, sizeof *tj);
        if (!tj) {
                timer_set(bk, now_ms() + 1000);         /* again in a second */
                return;
        }
        tj->manager = m;
        tj->now = now_ms();
        tj->warn_ms = warn_ms_of(m);
        tj->job.write = timer_write;
        tj->job.done = timer_done;
        bk->job_running = true;
        bk->again = false;
        jobs_submit_write(m->jobs, &tj->job);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        timer_run(userdata);
        return 0;
}

typedef struct NextDue {
        int64_t warn_ms, due;
} NextDue;

/* When the timer must look at b: at its warning, then at its end. */
static int64_t due_at(const StoreBooking *b, int64_t warn_ms) {
        return b->warned ? b->expires_at : b->expires_at - warn_ms;
}

static int next_due(void *userdata, const StoreBooking *b) {
        NextDue *n = userdata;
        int64_t due = due_at(b, n->warn_ms);

        if (due < n->due)
                n->due = due;
        /* the index is by expires_at: nothing later can be due sooner than
         * its own expiry minus the warning */
        return b->expires_at - n->warn_ms > n->due ? 1 : 0;
}

/* The timer runs at due (wall ms); INT64_MAX: not at all. */
static void timer_set(Bookings *bk, int64_t due) {
        uint64_t now_mono;

        bk->armed = due;
        if (due == INT64_MAX) {
                (void) sd_event_source_set_enabled(bk->timer, SD_EVENT_OFF);
                return;
        }
        int64_t wait_ms = due - now_ms();
        if (wait_ms < 0)
                wait_ms = 0;
        (void) sd_event_now(bk->manager->event, CLOCK_MONOTONIC, &now_mono);
        (void) sd_event_source_set_time(bk->timer, now_mono + (uint64_t) wait_ms * 1000);
        (void) sd_event_source_set_enabled(bk->timer, SD_EVENT_ONESHOT);
}

/* Arm the timer for the next booking that ends or is to be warned. */
static void timer_arm(Bookings *bk) {
        Manager *m = bk->manager;
        NextDue n = { .warn_ms = warn_ms_of(m), .due = INT64_MAX };
        StoreTxn *t = NULL;

        if (bk->job_running)
                return;
        if (bk->again) {
                timer_run(bk);
                return;
        }
        int q = store_read_begin(m->store, &t);
        if (q >= 0) {
                q = store_booking_expiry_foreach(t, INT64_MAX, next_due, &n);
                store_read_end(t);
        }
        /* a scan that failed looks again in a second: a later booking only
         * brings the timer forward, so nothing else would */
        timer_set(bk, q < 0 ? now_ms() + 1000 : n.due);
}

/* A booking was made or renewed: the timer must run by its due time. No
 * other booking's due time moved, so the timer is only ever brought
 * forward, without a scan (one per answer cost a third of the loop's time
 * under a booking load); a cancel leaves it be, and a run that finds
 * nothing due looks again. */
void bookings_due(Manager *m, const StoreBooking *b) {
        Bookings *bk = m->bookings;

        if (!bk || bk->job_running)
                return;         /* the job's end looks again, after this commit */
        if (bk->again) {
                timer_run(bk);
                return;
        }
        int64_t due = due_at(b, warn_ms_of(m));
        if (due < bk->armed)
                timer_set(bk, due);
}

int bookings_new(Manager *m, Bookings **ret) {
        Bookings *bk = calloc(1, sizeof *bk);
        int r;

        if (!bk)
                return -ENOMEM;
        bk->manager = m;
        r = sd_event_add_time_relative(m->event, &bk->timer, CLOCK_MONOTONIC, 0, 1000,
                                       on_timer, bk);
        if (r < 0) {
                free(bk);
                return r;
        }
        /* at start: bookings that ended while the daemon was down end first */
        bk->armed = INT64_MIN;
        (void) sd_event_source_set_enabled(bk->timer, SD_EVENT_ONESHOT);
        *ret = bk;
        return 0;
}

Bookings *bookings_free(Bookings *bk) {
        if (!bk)
                return NULL;
        bk->timer = sd_event_source_disable_unref(bk->timer);
        free(bk);
        return NULL;
}

void bookings_changed(Manager *m) {
        if (m->bookings)
                timer_arm(m->bookings);
}

/* ---- methods ---- */

typedef struct BookParams {
        ParamStr vm_id, user;
        ParamUint group, hours, minutes;
        ParamUint limit, after;
        ParamStr after_str;
} BookParams;

typedef struct BookState {
        StoreBooking booking;
        char vm_id[VMM_VM_ID_MAX + 1];
        char by[STORE_NAME_MAX + 1];    /* an admin acting for someone */
        int64_t duration_ms, max_ms, now;
        uint64_t per_user;
        bool admin;
} BookState;

static bool duration_check(const void *params, char *msg, size_t len) {
        const BookParams *p = params;
        if (p->hours.set != p->minutes.set)
                return true;
        snprintf(msg, len, "give the duration as hours or as minutes (one of them)");
        return false;
}

static bool create_check(const void *params, char *msg, size_t len) {
        const BookParams *p = params;
        if (p->vm_id.set == p->group.set) {
                snprintf(msg, len, "give vm_id or group (one of them)");
                return false;
        }
        return duration_check(params, msg, len);
}

/* Common start: who books, for how long, within the limits. */
/* 1 if name is a user record or a login name (one namespace), 0 if
 * neither, or a negative errno. */
static int person_exists(Manager *m, const char *name) {
        StoreTxn *t = NULL;
        StoreUser *u = malloc(sizeof *u);
        int q = u ? store_read_begin(m->store, &t) : -ENOMEM;

        if (q >= 0) {
                q = store_user_get(t, name, u);
                store_read_end(t);
        }
        free(u);
        if (q >= 0)
                return 1;
        if (q != -ENOENT)
                return q;
        struct passwd pw, *found = NULL;
        char buf[4096];
        q = getpwnam_r(name, &pw, buf, sizeof buf, &found);
        if (q != 0 && q != ENOENT && q != ESRCH)
                return -q;
        return found != NULL;
}

static int book_start(Request *r) {
        BookParams *p = PARAMS(r, BookParams);
        BookState *st = STATE(r, BookState);
        Manager *m = r->manager;

        st->admin = r->caller.role >= STORE_ROLE_ADMIN;
        st->now = now_ms();
        st->per_user = m->config.bookings_per_user;
        st->max_ms = (int64_t) m->config.booking_max_hours * 3600000;
        st->duration_ms = p->hours.set ? (int64_t) p->hours.v * 3600000
                                       : (int64_t) p->minutes.v * 60000;
        if (st->duration_ms > st->max_ms)
                return rpc_fail(r, VMM_E_BAD_REQUEST,
                                "a booking ends at most %" PRIu64 " hours from now",
                                m->config.booking_max_hours);
        snprintf(st->booking.user, sizeof st->booking.user, "%s", r->caller.name);
        if (p->user.set) {
                if (!st->admin && !pstr_eq(&p->user, r->caller.name))
                        return rpc_fail(r, VMM_E_FORBIDDEN,
                                        "only an admin books for someone else");
                pstr_copy(st->booking.user, sizeof st->booking.user, &p->user);
                if (strcmp(st->booking.user, r->caller.name) != 0) {
                        snprintf(st->by, sizeof st->by, "%s", r->caller.name);
                        int q = person_exists(m, st->booking.user);
                        if (q == 0)
                                return rpc_fail(r, VMM_E_NOT_FOUND, "no user or login named "
                                                "'%s'", st->booking.user);
                        if (q < 0)
                                return q;
                }
        }
        if (p->vm_id.set)
                pstr_copy(st->vm_id, sizeof st->vm_id, &p->vm_id);
        return RPC_NEXT;
}

typedef struct Pick {
        StoreTxn *t;
        char vm_id[VMM_VM_ID_MAX + 1];
        int64_t free_since;
        bool found;
        int error;
        StoreVm *vm;
} Pick;

/* A free, active VM of the group: the one free for longest. */
static int pick_one(void *userdata, const char *vm_id) {
        Pick *pk = userdata;
        StoreBooking b;
        int q;

        q = store_booking_get(pk->t, vm_id, &b);
        if (q >= 0)
                return 0;
        if (q != -ENOENT)
                return q;
        q = store_vm_get(pk->t, vm_id, pk->vm);
        if (q < 0)
                return q == -ENOENT ? 0 : q;
        if (pk->vm->access != STORE_ACCESS_ACTIVE)
                return 0;
        /* free since the end of its last booking, the newest entry of its
         * history; never booked: since its creation */
        StoreHistory h;
        int64_t since = pk->vm->free_since;
        q = store_history_newest(pk->t, vm_id, &h);
        if (q >= 0)
                since = h.time;
        else if (q != -ENOENT)
                return q;
        if (!pk->found || since < pk->free_since) {
                pk->found = true;
                pk->free_since = since;
                snprintf(pk->vm_id, sizeof pk->vm_id, "%s", vm_id);
        }
        return 0;
}

static int create_write(Request *r, StoreTxn *t) {
        BookParams *p = PARAMS(r, BookParams);
        BookState *st = STATE(r, BookState);
        StoreBooking held;
        uint64_t pos;
        int q;

        /* forbidden (too many bookings) wins over not_found and conflict:
         * the errors table's order */
        if (store_user_booking_count(t, st->booking.user) >= st->per_user)
                return rpc_fail(r, VMM_E_FORBIDDEN, "%s holds %" PRIu64 " bookings already (the "
                                "most one may hold)", st->booking.user, st->per_user);
        if (p->group.set) {
                StoreGroup g;
                Pick pk = { .t = t, .vm = malloc(sizeof(StoreVm)) };
                if (!pk.vm)
                        return -ENOMEM;
                q = store_group_get(t, p->group.v, &g);
                if (q >= 0)
                        q = store_group_vm_foreach(t, p->group.v, pick_one, &pk);
                free(pk.vm);
                if (q == -ENOENT)
                        return rpc_fail(r, VMM_E_NOT_FOUND, "group %" PRIu64 " does not exist",
                                        p->group.v);
                if (q < 0)
                        return q;
                if (!pk.found)
                        return rpc_fail(r, VMM_E_CONFLICT, "no VM of group '%s' is free", g.name);
                snprintf(st->vm_id, sizeof st->vm_id, "%s", pk.vm_id);
        } else {
                StoreVm *vm = malloc(sizeof *vm);
                q = vm ? store_vm_get(t, st->vm_id, vm) : -ENOMEM;
                int access = q >= 0 ? vm->access : 0;
                free(vm);
                if (q == -ENOENT)
                        return rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", st->vm_id);
                if (q < 0)
                        return q;
                if (access != STORE_ACCESS_ACTIVE)
                        return rpc_fail(r, VMM_E_CONFLICT, "VM '%s' is %s", st->vm_id,
                                        access == STORE_ACCESS_PENDING ? "awaiting approval"
                                                                       : "suspended");
                q = store_booking_get(t, st->vm_id, &held);
                if (q >= 0)
                        return rpc_fail(r, VMM_E_CONFLICT, "VM '%s' is booked by %s", st->vm_id,
                                        held.user);
                if (q != -ENOENT)
                        return q;
        }
        snprintf(st->booking.vm_id, sizeof st->booking.vm_id, "%s", st->vm_id);
        st->booking.started_at = st->now;
        st->booking.expires_at = st->now + st->duration_ms;
        st->booking.warned = false;
        q = store_booking_put(t, &st->booking);
        if (q >= 0)
                q = events_append_to(&r->events, t, &(Event) {
                                .type = "booking.created", .vm_id = st->vm_id,
                                .user = st->booking.user, .has_expires_at = true,
                                .expires_at = st->booking.expires_at }, &pos);
        if (q < 0)
                return q;
        return history_add(t, pos, st->now, &st->booking, STORE_HISTORY_BOOK,
                           st->booking.expires_at, st->by);
}

/* An admin acting on someone else's booking is an admin change. */
static void log_for_someone(Request *r, const char *what) {
        BookState *st = STATE(r, BookState);

        if (strcmp(st->booking.user, r->caller.name) != 0)
                LOG_CHANGE(r, LOG_MID_ADMIN_CHANGE, st->booking.vm_id, "%s %s's booking of '%s'",
                           what, st->booking.user, st->booking.vm_id);
}

static int booking_reply(Request *r) {
        BookState *st = STATE(r, BookState);
        msgpack_sbuffer sb;
        msgpack_packer pk;

        log_for_someone(r, strcmp(r->method->name, VMM_M_BOOKING_CREATE) == 0 ? "made"
                                                                              : "renewed");

        bookings_due(r->manager, &st->booking);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        return reply_packed(r, &sb, pack_booking(&pk, &st->booking) < 0);
}

/* The holder or an admin; the booking in st->booking. */
static int held_by_caller(Request *r, StoreTxn *t) {
        BookState *st = STATE(r, BookState);
        int q = store_booking_get(t, st->vm_id, &st->booking);

        if (q == -ENOENT)
                return rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' is not booked", st->vm_id);
        if (q < 0)
                return q;
        if (!st->admin && strcmp(st->booking.user, r->caller.name) != 0)
                return rpc_fail(r, VMM_E_FORBIDDEN, "VM '%s' is booked by %s, not by you",
                                st->vm_id, st->booking.user);
        return 0;
}

static int renew_write(Request *r, StoreTxn *t) {
        BookState *st = STATE(r, BookState);
        uint64_t pos;
        int q;

        q = store_booking_get(t, st->vm_id, &st->booking);
        if (q == -ENOENT)
                return rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' is not booked", st->vm_id);
        if (q < 0)
                return q;
        /* past the cap is bad_request, which wins over forbidden (not the
         * holder): the errors table's order */
        int64_t from = MAX(st->now, st->booking.expires_at);
        if (from + st->duration_ms > st->now + st->max_ms)
                return rpc_fail(r, VMM_E_BAD_REQUEST, "a booking ends at most %" PRIu64
                                " hours from now", (uint64_t) (st->max_ms / 3600000));
        q = held_by_caller(r, t);
        if (q < 0)
                return q;
        st->booking.expires_at = from + st->duration_ms;
        st->booking.warned = false;     /* a renewal re-arms the warning */
        q = store_booking_put(t, &st->booking);
        if (q >= 0)
                q = events_append_to(&r->events, t, &(Event) {
                                .type = "booking.renewed", .vm_id = st->vm_id,
                                .user = st->booking.user, .has_expires_at = true,
                                .expires_at = st->booking.expires_at }, &pos);
        if (q < 0)
                return q;
        return history_add(t, pos, st->now, &st->booking, STORE_HISTORY_RENEW,
                           st->booking.expires_at,
                           strcmp(st->booking.user, r->caller.name) ? r->caller.name : NULL);
}

static int cancel_write(Request *r, StoreTxn *t) {
        BookState *st = STATE(r, BookState);
        bool own;
        int q;

        q = held_by_caller(r, t);
        if (q < 0)
                return q;
        own = strcmp(st->booking.user, r->caller.name) == 0;
        return booking_end_in(r, t, st->vm_id, own ? STORE_HISTORY_CANCEL : STORE_HISTORY_END,
                              own ? "cancel" : "admin", own ? NULL : r->caller.name);
}

static int cancel_done(Request *r) {
        log_for_someone(r, "cancelled");
        rpc_reply(r, NULL, 0);
        return RPC_REPLIED;
}

static int get_start(Request *r) {
        BookParams *p = PARAMS(r, BookParams);
        char vm_id[VMM_VM_ID_MAX + 1];
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int q;

        if (r->caller.kind == PRINCIPAL_VM) {
                if (p->vm_id.set && !pstr_eq(&p->vm_id, r->caller.vm_id))
                        return rpc_fail(r, VMM_E_FORBIDDEN, "a VM sees only its own booking");
                snprintf(vm_id, sizeof vm_id, "%s", r->caller.vm_id);
        } else if (!p->vm_id.set)
                return rpc_fail(r, VMM_E_BAD_REQUEST, "missing field 'vm_id'");
        else {
                StoreVm *vm = malloc(sizeof *vm);

                pstr_copy(vm_id, sizeof vm_id, &p->vm_id);
                q = vm ? read_vm(r, vm_id, vm) : -ENOMEM;
                free(vm);
                if (q == -ENOENT)
                        return rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", vm_id);
                if (q < 0)
                        return q;
        }
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        q = pack_booking_result(r->manager, &pk, vm_id);
        if (q < 0) {
                msgpack_sbuffer_destroy(&sb);
                return q;
        }
        return reply_packed(r, &sb, false);
}

typedef struct ListWalk {
        Page pg;
        StoreTxn *t;
        uint64_t group;
        int error;
} ListWalk;

static int list_one(void *userdata, const StoreBooking *b) {
        ListWalk *w = userdata;

        if (w->group) {
                StoreVm *vm = malloc(sizeof *vm);
                int q = vm ? store_vm_get(w->t, b->vm_id, vm) : -ENOMEM;
                bool in = q >= 0 && vm->group == w->group;
                free(vm);
                if (q < 0 && q != -ENOENT)
                        return q;
                if (!in)
                        return 0;
        }
        if (!page_room(&w->pg))
                return 1;
        size_t before = w->pg.items.size;
        if (pack_booking(&w->pg.pk, b) < 0)
                return -ENOMEM;
        return page_added(&w->pg, before, b->vm_id) ? 0 : 1;
}

static int list_start(Request *r) {
        BookParams *p = PARAMS(r, BookParams);
        char user[STORE_NAME_MAX + 1], after[VMM_VM_ID_MAX + 1] = "";
        ListWalk w = { .group = p->group.v };
        int q;

        page_init(&w.pg, &p->limit);
        if (p->after_str.set)
                pstr_copy(after, sizeof after, &p->after_str);
        q = store_read_begin(r->manager->store, &w.t);
        if (q >= 0) {
                if (p->user.set) {
                        pstr_copy(user, sizeof user, &p->user);
                        q = store_user_booking_foreach(w.t, user, after[0] ? after : NULL,
                                                       list_one, &w);
                } else
                        q = store_booking_foreach(w.t, after[0] ? after : NULL, list_one, &w);
                store_read_end(w.t);
        }
        if (q >= 0)
                q = page_reply(r, &w.pg, "bookings");
        page_done(&w.pg);
        return q;
}

static int history_one(void *userdata, const StoreHistory *h) {
        Page *pg = userdata;
        char key[32];

        if (!page_room(pg))
                return 1;
        size_t before = pg->items.size;
        if (msgpack_pack_map(&pg->pk, 7) || mp_kv_u64(&pg->pk, "feed", h->feed) ||
            mp_kv_i64(&pg->pk, "time", h->time) || mp_kv_str(&pg->pk, "vm_id", h->vm_id) ||
            mp_kv_str(&pg->pk, "user", h->user) ||
            mp_kv_str(&pg->pk, "action", action_names[h->action % _STORE_HISTORY_MAX]) ||
            (h->expires_at < 0 ? mp_kv_nil(&pg->pk, "expires_at")
                               : mp_kv_i64(&pg->pk, "expires_at", h->expires_at)) ||
            mp_kv_str(&pg->pk, "by", h->by[0] ? h->by : NULL))
                return -ENOMEM;
        snprintf(key, sizeof key, "%" PRIu64, h->feed);
        return page_added(pg, before, key) ? 0 : 1;
}

static int history_start(Request *r) {
        BookParams *p = PARAMS(r, BookParams);
        char user[STORE_NAME_MAX + 1] = "", vm_id[VMM_VM_ID_MAX + 1] = "";
        StoreTxn *t = NULL;
        Page pg;
        int q;

        if (p->user.set)
                pstr_copy(user, sizeof user, &p->user);
        if (r->caller.role < STORE_ROLE_ADMIN) {
                /* a user sees only its own */
                if (user[0] && strcmp(user, r->caller.name) != 0)
                        return rpc_fail(r, VMM_E_FORBIDDEN, "a user sees only its own history");
                snprintf(user, sizeof user, "%s", r->caller.name);
        }
        if (p->vm_id.set)
                pstr_copy(vm_id, sizeof vm_id, &p->vm_id);
        page_init(&pg, &p->limit);
        q = store_read_begin(r->manager->store, &t);
        if (q >= 0) {
                q = store_history_foreach(t, user[0] ? user : NULL, vm_id[0] ? vm_id : NULL,
                                          p->after.set ? p->after.v : 0, history_one, &pg);
                store_read_end(t);
        }
        if (q >= 0)
                q = page_reply_uint(r, &pg, "entries");
        page_done(&pg);
        return q;
}

#define DURATION_FIELDS \
        { "hours", PARAM_UINT, offsetof(BookParams, hours), false, 1, 24 * 365, NULL, NULL }, \
        { "minutes", PARAM_UINT, offsetof(BookParams, minutes), false, 1, 60 * 24 * 365, NULL, NULL }
#define VM_FIELD(mandatory) \
        { "vm_id", PARAM_STR, offsetof(BookParams, vm_id), mandatory, 1, VMM_VM_ID_MAX, valid_vm_id, NULL }
#define USER_FIELD \
        { "user", PARAM_STR, offsetof(BookParams, user), false, 1, VMM_USER_NAME_MAX, \
          valid_user_name, NULL }
#define LIMIT_FIELD \
        { "limit", PARAM_UINT, offsetof(BookParams, limit), false, VMM_PAGE_MIN, VMM_PAGE_MAX, NULL, NULL }

static const ParamField create_fields[] = {
        VM_FIELD(false),
        { "group", PARAM_UINT, offsetof(BookParams, group), false, 1, UINT64_MAX, NULL, NULL },
        DURATION_FIELDS,
        USER_FIELD,
};
static const ParamField renew_fields[] = { VM_FIELD(true), DURATION_FIELDS };
static const ParamField cancel_fields[] = { VM_FIELD(true) };
static const ParamField get_fields[] = { VM_FIELD(false) };
static const ParamField list_fields[] = {
        USER_FIELD,
        { "group", PARAM_UINT, offsetof(BookParams, group), false, 1, UINT64_MAX, NULL, NULL },
        LIMIT_FIELD,
        { "after", PARAM_STR, offsetof(BookParams, after_str), false, 0, 1024, NULL, NULL },
};
static const ParamField history_fields[] = {
        USER_FIELD,
        VM_FIELD(false),
        LIMIT_FIELD,
        { "after", PARAM_UINT, offsetof(BookParams, after), false, 0, UINT64_MAX, NULL, NULL },
};

#define BOOK_ROW .params_size = sizeof(BookParams), .state_size = sizeof(BookState)
#define PEOPLE .callers = CALLER_USER | CALLER_PEER

static const Method m_create = {
        .name = VMM_M_BOOKING_CREATE, .flags = ON_BOTH, PEOPLE, .min_role = STORE_ROLE_USER,
        .fields = FIELDS(create_fields), .check = create_check, BOOK_ROW,
        .start = book_start, .write = create_write, .done = booking_reply,
};
static const Method m_renew = {
        .name = VMM_M_BOOKING_RENEW, .flags = ON_BOTH, PEOPLE, .min_role = STORE_ROLE_USER,
        .fields = FIELDS(renew_fields), .check = duration_check, BOOK_ROW,
        .start = book_start, .write = renew_write, .done = booking_reply,
};
static const Method m_cancel = {
        .name = VMM_M_BOOKING_CANCEL, .flags = ON_BOTH, PEOPLE, .min_role = STORE_ROLE_USER,
        .fields = FIELDS(cancel_fields), BOOK_ROW,
        .start = book_start, .write = cancel_write, .done = cancel_done,
};
static const Method m_get = {
        .name = VMM_M_BOOKING_GET, .flags = ON_BOTH, .callers = CALLER_SESSION,
        .min_role = STORE_ROLE_VIEWER, .fields = FIELDS(get_fields), BOOK_ROW,
        .start = get_start,
};
static const Method m_list = {
        .name = VMM_M_BOOKING_LIST, .flags = ON_BOTH, PEOPLE, .min_role = STORE_ROLE_VIEWER,
        .fields = FIELDS(list_fields), BOOK_ROW, .start = list_start,
};
static const Method m_history = {
        .name = VMM_M_BOOKING_HISTORY, .flags = ON_BOTH, PEOPLE, .min_role = STORE_ROLE_USER,
        .fields = FIELDS(history_fields), BOOK_ROW, .start = history_start,
};

METHOD_ROWS(booking, &m_create, &m_renew, &m_cancel, &m_get, &m_list, &m_history);
