/* SPDX-License-Identifier: MIT */
/* One sentence for people per event ("alice booked web-01 until 18:00 UTC"),
 * carried as "msg" in the event stream: the page shows it as a toast. Times
 * are in UTC and say so. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "web.h"

#define FIELD_MAX 128

static void field(const msgpack_object *ev, const char *key, char *buf, size_t size) {
        const msgpack_object *v = vmm_object_get(ev, key);
        buf[0] = '\0';
        if (!v)
                return;
        if (v->type == MSGPACK_OBJECT_STR)
                (void) snprintf(buf, size, "%.*s", (int) MIN(v->via.str.size, FIELD_MAX),
                                v->via.str.ptr);
        else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                (void) snprintf(buf, size, "%llu", (unsigned long long) v->via.u64);
}

static void when(const msgpack_object *ev, const char *key, char *buf, size_t size) {
        const msgpack_object *v = vmm_object_get(ev, key);
        if (v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                (void) time_human((int64_t) v->via.u64, buf, size);
        else
                (void) snprintf(buf, size, "an unknown time");
}

static bool type_is(const char *type, const char *t) {
        return strcmp(type, t) == 0;
}

static bool type_has_prefix(const char *type, const char *p) {
        return strncmp(type, p, strlen(p)) == 0;
}

static const char *vm_verb(const char *t) {
        static const struct {
                const char *type, *verb;
        } verbs[] = {
                { "vm.registered", "registered itself" },
                { "vm.created", "was created" },
                { "vm.described", "described itself" },
                { "vm.updated", "was updated" },
                { "vm.deleted", "was deleted" },
                { "vm.password_changed", "has a new password" },
                { "vm.approved", "was approved" },
                { "vm.suspended", "was suspended" },
        };
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(t, verbs[i].type) == 0)
                        return verbs[i].verb;
        return "changed";
}

static const char *ended_how(const char *reason) {
        if (strcmp(reason, "cancel") == 0)
                return "was cancelled";
        if (strcmp(reason, "expire") == 0)
                return "ended: its time is up";
        if (strcmp(reason, "deleted") == 0)
                return "ended: the VM or the user was deleted";
        if (strcmp(reason, "admin") == 0)
                return "was ended by an administrator";
        return "ended";
}

/* A sentence, or NULL when out of memory. */
_printf_(1, 2) static char *sentence(const char *format, ...) {
        va_list ap;
        char *s;

        va_start(ap, format);
        if (vasprintf(&s, format, ap) < 0)
                s = NULL;
        va_end(ap);
        return s;
}

char *event_sentence_mp(const msgpack_object *ev) {
        char type[FIELD_MAX + 1], user[FIELD_MAX + 1], vm[FIELD_MAX + 1], id[FIELD_MAX + 1],
                name[FIELD_MAX + 1], reason[FIELD_MAX + 1], t[48], who[FIELD_MAX + 1];
        char *out = NULL;

        field(ev, "type", type, sizeof type);
        field(ev, "user", user, sizeof user);
        field(ev, "vm_id", vm, sizeof vm);
        field(ev, "id", id, sizeof id);
        field(ev, "name", name, sizeof name);
        field(ev, "reason", reason, sizeof reason);
        when(ev, "expires_at", t, sizeof t);
        (void) snprintf(who, sizeof who, "%s", user[0] ? user : vm[0] ? vm : "someone");

        if (type_is(type, "booking.created"))
                out = sentence("%s booked %s until %s", user, vm, t);
        else if (type_is(type, "booking.renewed"))
                out = sentence("%s renewed %s until %s", user, vm, t);
        else if (type_is(type, "booking.expiring"))
                out = sentence("%s's booking of %s ends at %s", user, vm, t);
        else if (type_is(type, "booking.ended"))
                out = sentence("%s's booking of %s %s", user, vm, ended_how(reason));
        else if (type_has_prefix(type, "group.")) {
                const char *verb = type_is(type, "group.created") ? "was created"
                                   : type_is(type, "group.deleted") ? "was deleted" : "changed";
                if (name[0])
                        out = sentence("Group %s (%s) %s", id, name, verb);
                else
                        out = sentence("Group %s %s", id, verb);
        } else if (type_has_prefix(type, "user."))
                out = sentence("User %s %s", name,
                                type_is(type, "user.created") ? "was created"
                                : type_is(type, "user.deleted") ? "was deleted" : "changed");
        else if (type_is(type, "vm.status")) {
                char status[FIELD_MAX + 1];
                field(ev, "status", status, sizeof status);
                out = sentence("%s is now %s", vm, status);
        } else if (type_has_prefix(type, "vm."))
                out = sentence("%s %s", vm, vm_verb(type));
        else if (type_is(type, "session.started"))
                out = sentence("%s logged in", who);
        else if (type_is(type, "session.ended"))
                out = sentence("%s's session ended (%s)", who, reason[0] ? reason : "ended");
        else if (type_is(type, "auth.failed"))
                out = sentence("A login as %s failed", who);
        else if (type_has_prefix(type, "request.")) {
                char requester[FIELD_MAX + 1];
                field(ev, "requester", requester, sizeof requester);
                if (type_is(type, "request.created"))
                        out = sentence("%s filed VM request %s", requester, id);
                else
                        out = sentence("VM request %s of %s was %s", id, requester,
                                        type + strlen("request."));
        } else if (type_is(type, "os.created"))
                out = sentence("OS %s was added to the catalog", id);
        else if (type_is(type, "os.deleted"))
                out = sentence("OS %s was removed from the catalog", id);
        else if (type_is(type, "events.truncated"))
                out = sentence("Some older events are no longer kept: reload the page to "
                                "see the current state");
        else if (type_has_prefix(type, "conn.")) {
                char conn[FIELD_MAX + 1], peer[FIELD_MAX + 1];
                field(ev, "conn", conn, sizeof conn);
                field(ev, "peer", peer, sizeof peer);
                out = sentence("Connection %s from %s %s", conn, peer,
                                type_is(type, "conn.opened") ? "opened" : "closed");
        } else
                out = sentence("Event %s", type[0] ? type : "(no type)");
        return out;
}
