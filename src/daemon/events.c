/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"
#include "log.h"
#include "manager.h"
#include "shared/clock.h"
#include "shared/macro.h"
#include "shared/mpout.h"
#include "shared/secret.h"

#define REPLAY_CHUNK 1000               /* feed events sent per watcher per turn */
#define REPLAY_FLUSH_BYTES (32u * 1024u) /* a turn sends when this much waits */
#define REPLAY_RETRY_USEC (10 * 1000)   /* every watcher blocked: look again later */

/* What decides who may see an event. */
typedef struct EventMeta {
        char type[64];
        char vm_id[VMM_VM_ID_MAX + 1];
        char user[STORE_NAME_MAX + 1];
        char requester[STORE_NAME_MAX + 1];
        char session[SECRET_SESSION_ID_LEN + 1];
        char name[STORE_NAME_MAX + 1];  /* user.* */
} EventMeta;

struct PendingEvent {
        PendingEvent *next;
        uint64_t pos;
        size_t len;
        uint8_t data[];
};

struct Watch {
        Client *client;
        Watch *prev, *next;
        uint64_t seq;
        bool admin;                     /* sees everything */
        PrincipalKind kind;
        char name[STORE_NAME_MAX + 1];  /* user (or peer login) */
        char vm_id[VMM_VM_ID_MAX + 1];
        bool has_session;
        char session[SECRET_SESSION_ID_LEN + 1];        /* its public id */
        char types[EVENTS_TYPES_MAX][64];
        unsigned n_types;
        bool started;                   /* the reply went out: events may follow */
        bool replaying;
        uint64_t last_feed;             /* feed events up to here are sent or skipped */
};

struct Events {
        Manager *manager;
        Watch *watchers;
        sd_event_source *replay_source;
        sd_event_source *replay_timer;
        uint64_t last;                  /* the last feed position published */
};

int events_new(Manager *m, Events **ret) {
        Events *ev = calloc(1, sizeof *ev);

        if (!ev)
                return -ENOMEM;
        ev->manager = m;
        *ret = ev;
        return 0;
}

Events *events_free(Events *ev) {
        if (!ev)
                return NULL;
        while (ev->watchers)
                events_unwatch(ev, ev->watchers->client);
        ev->replay_source = sd_event_source_disable_unref(ev->replay_source);
        ev->replay_timer = sd_event_source_disable_unref(ev->replay_timer);
        free(ev);
        return NULL;
}

uint64_t events_last(Events *ev) {
        return ev->last;
}

void events_set_last(Events *ev, uint64_t pos) {
        ev->last = pos;
}

/* ---- encoding ---- */

/* The event as a map: type, time, then the fields it has. */
static int event_pack(msgpack_packer *pk, const Event *e, int64_t time) {
        uint32_t n = 2 + (e->vm_id || e->vm_id_nil) + !!e->user + !!e->name + !!e->requester +
                     !!e->session + !!e->peer + !!e->reason + !!e->status + e->has_conn +
                     e->has_id + e->has_expires_at;

        if (msgpack_pack_map(pk, n) || mp_kv_str(pk, "type", e->type) ||
            mp_kv_i64(pk, "time", time))
                return -ENOMEM;
        if (e->vm_id || e->vm_id_nil)
                if (mp_kv_str(pk, "vm_id", e->vm_id))
                        return -ENOMEM;
        if ((e->user && mp_kv_str(pk, "user", e->user)) ||
            (e->name && mp_kv_str(pk, "name", e->name)) ||
            (e->requester && mp_kv_str(pk, "requester", e->requester)) ||
            (e->session && mp_kv_str(pk, "session", e->session)) ||
            (e->peer && mp_kv_str(pk, "peer", e->peer)) ||
            (e->reason && mp_kv_str(pk, "reason", e->reason)) ||
            (e->status && mp_kv_str(pk, "status", e->status)) ||
            (e->has_conn && mp_kv_u64(pk, "conn", e->conn)) ||
            (e->has_id && mp_kv_u64(pk, "id", e->id)))
                return -ENOMEM;
        if (e->has_expires_at && (e->expires_at < 0 ? mp_kv_nil(pk, "expires_at")
                                                    : mp_kv_i64(pk, "expires_at", e->expires_at)))
                return -ENOMEM;
        return 0;
}

static void meta_from_event(const Event *e, EventMeta *m) {
        *m = (EventMeta) { 0 };
        snprintf(m->type, sizeof m->type, "%s", e->type);
        snprintf(m->vm_id, sizeof m->vm_id, "%s", e->vm_id ? e->vm_id : "");
        snprintf(m->user, sizeof m->user, "%s", e->user ? e->user : "");
        snprintf(m->requester, sizeof m->requester, "%s", e->requester ? e->requester : "");
        snprintf(m->session, sizeof m->session, "%s", e->session ? e->session : "");
        snprintf(m->name, sizeof m->name, "%s", e->name ? e->name : "");
}

/* Reads the map header of stored event bytes: entries and header size. */
static int map_header(const uint8_t *p, size_t len, uint32_t *ret_n, size_t *ret_hdr) {
        if (len >= 1 && (p[0] & 0xf0) == 0x80) {
                *ret_n = p[0] & 0x0f;
                *ret_hdr = 1;
        } else if (len >= 3 && p[0] == 0xde) {
                *ret_n = (uint32_t) p[1] << 8 | p[2];
                *ret_hdr = 3;
        } else if (len >= 5 && p[0] == 0xdf) {
                *ret_n = (uint32_t) p[1] << 24 | (uint32_t) p[2] << 16 | (uint32_t) p[3] << 8 | p[4];
                *ret_hdr = 5;
        } else
                return -EBADMSG;
        return 0;
}

static void copy_str(const msgpack_object *o, char *dst, size_t size) {
        if (o->type == MSGPACK_OBJECT_STR && o->via.str.size < size) {
                memcpy(dst, o->via.str.ptr, o->via.str.size);
                dst[o->via.str.size] = '\0';
        }
}

/* The fields of stored event bytes that decide who may see it. */
static int meta_from_bytes(const uint8_t *data, size_t len, EventMeta *m) {
        msgpack_zone *z = msgpack_zone_new(1024);
        msgpack_object o;
        size_t off = 0;
        int r = -EBADMSG;

        *m = (EventMeta) { 0 };
        if (!z)
                return -ENOMEM;
        if (msgpack_unpack((const char *) data, len, &off, z, &o) == MSGPACK_UNPACK_SUCCESS &&
            o.type == MSGPACK_OBJECT_MAP) {
                for (uint32_t i = 0; i < o.via.map.size; i++) {
                        const msgpack_object *k = &o.via.map.ptr[i].key, *v = &o.via.map.ptr[i].val;
                        if (k->type != MSGPACK_OBJECT_STR)
                                continue;
                        if (streq_n(k->via.str.ptr, k->via.str.size, "type"))
                                copy_str(v, m->type, sizeof m->type);
                        else if (streq_n(k->via.str.ptr, k->via.str.size, "vm_id"))
                                copy_str(v, m->vm_id, sizeof m->vm_id);
                        else if (streq_n(k->via.str.ptr, k->via.str.size, "user"))
                                copy_str(v, m->user, sizeof m->user);
                        else if (streq_n(k->via.str.ptr, k->via.str.size, "requester"))
                                copy_str(v, m->requester, sizeof m->requester);
                        else if (streq_n(k->via.str.ptr, k->via.str.size, "session"))
                                copy_str(v, m->session, sizeof m->session);
                        else if (streq_n(k->via.str.ptr, k->via.str.size, "name"))
                                copy_str(v, m->name, sizeof m->name);
                }
                r = m->type[0] ? 0 : -EBADMSG;
        }
        msgpack_zone_free(z);
        return r;
}

/* ---- the feed ---- */

static int append_pending(PendingEvent **list, StoreTxn *t, const uint8_t *data, size_t len,
                          uint64_t *ret_pos) {
        PendingEvent *p, **tail;
        uint64_t pos;
        int r;

        r = store_feed_append(t, data, len, &pos);
        if (r < 0)
                return r;
        p = malloc(sizeof *p + len);
        if (!p)
                return -ENOMEM;
        p->next = NULL;
        p->pos = pos;
        p->len = len;
        memcpy(p->data, data, len);
        for (tail = list; *tail; tail = &(*tail)->next)
                ;
        *tail = p;
        if (ret_pos)
                *ret_pos = pos;
        return 0;
}

int events_append_to(PendingEvent **list, StoreTxn *t, const Event *e, uint64_t *ret_pos) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int r;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        r = event_pack(&pk, e, e->time ? e->time : now_ms());
        if (r >= 0)
                r = append_pending(list, t, (const uint8_t *) sb.data, sb.size, ret_pos);
        msgpack_sbuffer_destroy(&sb);
        return r;
}

int events_append(Request *r, StoreTxn *t, const Event *e) {
        return events_append_to(&r->events, t, e, NULL);
}

void events_list_free(PendingEvent **list) {
        while (*list) {
                PendingEvent *p = *list;
                *list = p->next;
                free(p);
        }
}

/* ---- watchers ---- */

static bool has_prefix(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool may_see(const Watch *w, const EventMeta *e) {
        if (w->n_types > 0) {
                bool match = false;
                for (unsigned i = 0; i < w->n_types && !match; i++)
                        match = has_prefix(e->type, w->types[i]);
                if (!match)
                        return false;
        }
        if (w->admin)
                return true;
        if (w->kind == PRINCIPAL_VM)
                return (has_prefix(e->type, "vm.") || has_prefix(e->type, "booking.") ||
                        has_prefix(e->type, "session.")) && strcmp(e->vm_id, w->vm_id) == 0;
        if (has_prefix(e->type, "vm.") || has_prefix(e->type, "group.") ||
            has_prefix(e->type, "booking.") || has_prefix(e->type, "os."))
                return true;
        if (has_prefix(e->type, "request."))
                return strcmp(e->requester, w->name) == 0;
        if (has_prefix(e->type, "session."))
                return e->user[0] && strcmp(e->user, w->name) == 0;
        return false;
}

static int write_conn(void *data, const char *buf, size_t len) {
        return conn_write(data, buf, len) < 0 ? -1 : 0;
}

/* Sends one event (a map's entries, with or without a feed position); with
 * !now it waits in the connection's buffer for the caller's conn_send_soon
 * (a replay sends a turn's events with one call, not one each). */
static void watch_send(Watch *w, const uint8_t *entries, size_t len, uint32_t n_entries,
                       uint64_t pos, const EventMeta *meta, bool now) {
        Conn *c = w->client->conn;
        msgpack_packer pk;

        if (!c || !conn_is_open(c))
                return;
        if (conn_unsent(c) > EVENTS_WATCHER_MAX_UNSENT) {
                log_notice("Event watcher on connection %" PRIu64 " (%s) does not read; "
                           "disconnecting it", w->client->id, w->client->peer_str);
                conn_close_later(c, "error");
                return;
        }
        msgpack_packer_init(&pk, c, write_conn);
        if (msgpack_pack_array(&pk, 3) || msgpack_pack_uint8(&pk, VMM_MSG_NOTIFICATION) ||
            mp_str(&pk, "event") || msgpack_pack_array(&pk, 1) ||
            msgpack_pack_map(&pk, n_entries + 2) || mp_kv_u64(&pk, "seq", ++w->seq) ||
            (pos ? mp_kv_u64(&pk, "feed", pos) : mp_kv_nil(&pk, "feed")) ||
            conn_write(c, entries, len) < 0) {
                conn_close_later(c, "error");
                return;
        }
        if (now)
                conn_send_soon(c);
}

/* A watch on TCP ends with the session it runs as, after the event that
 * says so: whether or not its types let it see that event. */
static void note_end(Watch *w, const EventMeta *meta) {
        if (w->has_session && strcmp(meta->type, "session.ended") == 0 &&
            strcmp(meta->session, w->session) == 0)
                w->client->watch_ended = true;
}

static void watch_send_bytes(Watch *w, const uint8_t *data, size_t len, uint64_t pos,
                             const EventMeta *meta, bool now) {
        uint32_t n;
        size_t hdr;

        if (map_header(data, len, &n, &hdr) < 0)
                return;
        watch_send(w, data + hdr, len - hdr, n, pos, meta, now);
}

static void reap_ended(Events *ev) {
        for (Watch *w = ev->watchers, *next; w; w = next) {
                next = w->next;
                if (w->client->watch_ended)
                        events_unwatch(ev, w->client);
        }
}

void events_emit(Events *ev, const Event *e) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        EventMeta meta;

        if (!ev->watchers)
                return;
        meta_from_event(e, &meta);
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (event_pack(&pk, e, e->time ? e->time : now_ms()) >= 0)
                for (Watch *w = ev->watchers; w; w = w->next) {
                        if (!w->started)
                                continue;
                        if (may_see(w, &meta))
                                watch_send_bytes(w, (const uint8_t *) sb.data, sb.size, 0,
                                                 &meta, true);
                        note_end(w, &meta);
                }
        msgpack_sbuffer_destroy(&sb);
        reap_ended(ev);
}

/* A user's role changed: its watches see from now on what the new role
 * may see (role changes apply to existing sessions at once). */
static void refresh_role(Events *ev, const char *name) {
        StoreTxn *t = NULL;
        StoreUser u;
        int q;

        if (store_read_begin(ev->manager->store, &t) < 0)
                return;
        q = store_user_get(t, name, &u);
        store_read_end(t);
        if (q < 0)
                return;         /* deleted: its sessions (and watches) end */
        for (Watch *w = ev->watchers; w; w = w->next)
                if (w->kind == PRINCIPAL_USER && strcmp(w->name, name) == 0)
                        w->admin = u.role >= STORE_ROLE_ADMIN;
        secret_wipe(u.pwhash, sizeof u.pwhash);
}

void events_publish_list(Events *ev, PendingEvent **list) {
        for (PendingEvent *p = *list; p; p = p->next) {
                EventMeta meta;

                if (p->pos > ev->last)
                        ev->last = p->pos;
                if (!ev->watchers || meta_from_bytes(p->data, p->len, &meta) < 0)
                        continue;
                if (strcmp(meta.type, "user.changed") == 0)
                        refresh_role(ev, meta.name);
                for (Watch *w = ev->watchers; w; w = w->next) {
                        if (!w->started || w->replaying || p->pos <= w->last_feed)
                                continue;
                        w->last_feed = p->pos;
                        if (may_see(w, &meta))
                                watch_send_bytes(w, p->data, p->len, p->pos, &meta, true);
                        note_end(w, &meta);
                }
        }
        events_list_free(list);
        reap_ended(ev);
}

/* ---- replay ---- */

typedef struct ReplayTurn {
        Watch *watch;
        uint64_t until;
        unsigned sent;
} ReplayTurn;

static int replay_one(void *userdata, uint64_t pos, const void *data, size_t len) {
        ReplayTurn *t = userdata;
        EventMeta meta;

        if (pos > t->until || t->sent >= REPLAY_CHUNK || t->watch->client->watch_ended)
                return 1;
        Conn *c = t->watch->client->conn;
        if (c && conn_unsent(c) >= REPLAY_FLUSH_BYTES) {
                conn_send_soon(c);
                if (conn_unsent(c) > EVENTS_WATCHER_MAX_UNSENT / 2)
                        return 1;       /* the reader is behind: its next turn goes on */
        }
        t->watch->last_feed = pos;
        t->sent++;
        if (meta_from_bytes(data, len, &meta) >= 0) {
                if (may_see(t->watch, &meta))
                        watch_send_bytes(t->watch, data, len, pos, &meta, false);
                note_end(t->watch, &meta);
        }
        return 0;
}

static void send_truncated(Watch *w, uint64_t oldest) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        EventMeta meta = { .type = "events.truncated" };
        Event e = { .type = "events.truncated" };

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (event_pack(&pk, &e, now_ms()) >= 0 && mp_kv_u64(&pk, "oldest", oldest) == 0) {
                /* the map header said two entries; the third follows */
                uint8_t *d = (uint8_t *) sb.data;
                d[0] = 0x83;
                watch_send_bytes(w, d, sb.size, 0, &meta, false);
        }
        msgpack_sbuffer_destroy(&sb);
}

/* One turn of one watcher: true if it moved. */
static bool replay_watch(Events *ev, Watch *w) {
        Manager *m = ev->manager;
        StoreTxn *t = NULL;
        uint64_t last, oldest;
        Conn *c = w->client->conn;

        if (!c || !conn_is_open(c) || conn_unsent(c) > EVENTS_WATCHER_MAX_UNSENT / 2)
                return false;
        if (store_read_begin(m->store, &t) < 0)
                return false;
        if (store_feed_bounds(t, &last, &oldest) >= 0 && oldest > 0 &&
            w->last_feed + 1 < oldest) {
                send_truncated(w, oldest);
                w->last_feed = oldest - 1;
        }
        ReplayTurn turn = { .watch = w, .until = ev->last };
        int r = store_feed_foreach(t, w->last_feed, replay_one, &turn);
        store_read_end(t);
        if (conn_is_open(c))
                conn_send_soon(c);      /* the turn's events, at once */
        if (r < 0) {
                log_warning_errno(r, "Replaying the event feed failed: %s", strerror(-r));
                conn_close_later(c, "error");
                return false;
        }
        if (w->last_feed >= ev->last)
                w->replaying = false;   /* caught up: live from here */
        return true;
}

static int on_replay(sd_event_source *s, void *userdata);

static int on_replay_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        return on_replay(s, userdata);
}

static void replay_schedule(Events *ev, bool soon) {
        Manager *m = ev->manager;

        if (soon) {
                if (!ev->replay_source &&
                    sd_event_add_defer(m->event, &ev->replay_source, on_replay, ev) < 0)
                        return;
                (void) sd_event_source_set_enabled(ev->replay_source, SD_EVENT_ONESHOT);
                return;
        }
        if (!ev->replay_timer) {
                if (sd_event_add_time_relative(m->event, &ev->replay_timer, CLOCK_MONOTONIC,
                                               REPLAY_RETRY_USEC, 0, on_replay_timer, ev) < 0)
                        return;
        } else
                (void) sd_event_source_set_time_relative(ev->replay_timer, REPLAY_RETRY_USEC);
        (void) sd_event_source_set_enabled(ev->replay_timer, SD_EVENT_ONESHOT);
}

static int on_replay(sd_event_source *s, void *userdata) {
        Events *ev = userdata;
        bool moved = false, waiting = false;

        for (Watch *w = ev->watchers; w; w = w->next)
                if (w->started && w->replaying) {
                        moved |= replay_watch(ev, w);
                        waiting |= w->replaying;
                }
        reap_ended(ev);
        if (waiting)
                replay_schedule(ev, moved);
        return 0;
}

/* ---- watch, unwatch ---- */

int events_watch(Events *ev, Client *c, const Caller *who, bool replay, uint64_t since,
                 const msgpack_object *types, uint32_t n_types, uint64_t *ret_last,
                 uint64_t *ret_oldest) {
        StoreTxn *t = NULL;
        uint64_t last = 0, oldest = 0;
        Watch *w;
        int r;

        if (n_types > EVENTS_TYPES_MAX)
                return -E2BIG;
        r = store_read_begin(ev->manager->store, &t);
        if (r < 0)
                return r;
        r = store_feed_bounds(t, &last, &oldest);
        store_read_end(t);
        if (r < 0)
                return r;
        if (c->watch)
                events_unwatch(ev, c);
        w = calloc(1, sizeof *w);
        if (!w)
                return -ENOMEM;
        w->client = c;
        w->kind = who->kind;
        w->admin = who->kind == PRINCIPAL_PEER ? who->role >= STORE_ROLE_ADMIN
                                               : who->kind == PRINCIPAL_USER &&
                                                         who->role >= STORE_ROLE_ADMIN;
        snprintf(w->name, sizeof w->name, "%s", who->name);
        snprintf(w->vm_id, sizeof w->vm_id, "%s", who->vm_id);
        if (who->has_session) {
                w->has_session = true;
                secret_session_id(who->session_hash, w->session);
        }
        for (uint32_t i = 0; i < n_types; i++)
                copy_str(&types[i], w->types[w->n_types++], sizeof w->types[0]);
        /* what is published from now on is live; a replay covers what the
         * store holds up to the last published position */
        w->last_feed = replay ? since : ev->last;
        w->replaying = replay;
        w->next = ev->watchers;
        if (ev->watchers)
                ev->watchers->prev = w;
        ev->watchers = w;
        c->watch = w;
        c->watch_ended = false;
        *ret_last = ev->last;
        *ret_oldest = oldest;
        return 0;
}

void events_watch_go(Events *ev, Client *c) {
        if (!c->watch)
                return;
        c->watch->started = true;
        if (c->watch->replaying)
                replay_schedule(ev, true);
}

void events_unwatch(Events *ev, Client *c) {
        Watch *w = c->watch;

        if (!w)
                return;
        if (w->prev)
                w->prev->next = w->next;
        else
                ev->watchers = w->next;
        if (w->next)
                w->next->prev = w->prev;
        c->watch = NULL;
        c->watch_ended = false;
        free(w);
}
