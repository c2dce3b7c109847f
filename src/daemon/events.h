/* SPDX-License-Identifier: MIT */
/* Layer L3: events. A change made by a method or a timer appends its event
 * to the durable feed in the transaction of the change (events_append, on
 * the writer thread); after the commit the loop publishes it to the
 * watchers (events_publish). Live-only events (connections, failed logins,
 * a VM's status) are published at once with "feed": nil (events_emit).
 *
 * A watcher gets [2, "event", [{"seq", "feed", "type", "time", ...}]]
 * notifications with its own seq, only the events its caller may see
 * (admins everything; users and viewers vm.*, group.*, booking.*, os.* and
 * their own request.* and session.*; a VM session what concerns its VM),
 * filtered by type prefixes. events.watch {since} replays the kept feed
 * events after since from the store, in chunks between other work, then
 * follows live ones: nothing lost or doubled at the seam. A watcher that
 * does not read falls behind a bounded queue and is disconnected. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "rpc.h"

#define EVENTS_WATCHER_MAX_UNSENT (256u * 1024u)
#define EVENTS_TYPES_MAX 16

typedef struct Events Events;

/* An event: its type and the fields it carries (unset ones are left out). */
typedef struct Event {
        const char *type;
        int64_t time;                   /* 0: now */
        const char *vm_id;
        bool vm_id_nil;                 /* "vm_id": nil (conn.closed of an anonymous connection) */
        const char *user;
        const char *name;               /* user.* */
        const char *requester;          /* request.* */
        const char *session;            /* public session id */
        const char *peer;
        const char *reason;
        const char *status;
        bool has_conn;
        uint64_t conn;
        bool has_id;                    /* group, OS or request id */
        uint64_t id;
        bool has_expires_at;
        int64_t expires_at;             /* -1: nil */
} Event;

int events_new(Manager *m, Events **ret);
Events *events_free(Events *e);

/* writer thread: packs e and appends it to the feed in t; the request
 * publishes it after its commit. */
int events_append(Request *r, StoreTxn *t, const Event *e);
/* The same for work that is not a request (a timer's job): *list collects
 * what to publish with events_publish_list() after the commit. ret_pos (may
 * be NULL): the event's feed position. */
int events_append_to(PendingEvent **list, StoreTxn *t, const Event *e, uint64_t *ret_pos);
void events_publish_list(Events *ev, PendingEvent **list);
void events_list_free(PendingEvent **list);

/* loop: a live-only event to every watcher that may see it. */
void events_emit(Events *ev, const Event *e);

/* Start watching: since (0: no replay of the feed; a part-1 watch), type
 * prefixes (n = 0: all). The caller's rights decide what it sees. Fills
 * ret_last/ret_oldest for the reply. The first notification goes out
 * after the reply (the caller replies first, then events_watch_go). */
int events_watch(Events *ev, Client *c, const Caller *who, bool replay, uint64_t since,
                 const msgpack_object *types, uint32_t n_types, uint64_t *ret_last,
                 uint64_t *ret_oldest);
void events_watch_go(Events *ev, Client *c);
void events_unwatch(Events *ev, Client *c);
/* The last feed position published (durable and sent to live watchers). */
uint64_t events_last(Events *ev);
/* At start: the last position in the store. */
void events_set_last(Events *ev, uint64_t pos);
