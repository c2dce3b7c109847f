/* SPDX-License-Identifier: MIT */
/* vmadm watch: the daemon's events as they happen, and with --since those
 * of the durable feed after a position first. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/common/escape.h"
#include "tools/common/json.h"
#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

#define WATCH_POLL_MS 200
#define TYPES_MAX     16

static volatile sig_atomic_t interrupted = 0;

static void on_signal(int sig) {
        interrupted = 1;
}

/* A value as key=value wants it: quoted when it holds blanks, quotes or
 * '='; a time (a key ending in _at) in the tools' convention. */
static void print_value_quoted(const msgpack_object *k, const msgpack_object *v) {
        char buf[512];
        bool quote;

        if (v->type == MSGPACK_OBJECT_MAP || v->type == MSGPACK_OBJECT_ARRAY) {
                (void) json_print(stdout, v, 0);
                return;
        }
        /* escaped already (no control characters, backslashes doubled) */
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size > 3 &&
            memcmp(k->via.str.ptr + k->via.str.size - 3, "_at", 3) == 0 &&
            vmm_object_uint(v, NULL))
                fmt_time(v, buf, sizeof(buf));
        else
                fmt_scalar(v, buf, sizeof(buf));
        quote = buf[0] == '\0';
        for (const char *c = buf; *c && !quote; c++)
                quote = *c == ' ' || *c == '"' || *c == '=';
        if (!quote) {
                fputs(buf, stdout);
                return;
        }
        putchar('"');
        for (const char *c = buf; *c; c++) {
                if (*c == '"')
                        putchar('\\');
                putchar(*c);
        }
        putchar('"');
}

/* "TIME TYPE key=value ... feed=N": the feed position last, and only for
 * events of the durable feed (live-only events have none). */
static void print_event_line(const msgpack_object *ev) {
        const msgpack_object *feed = vmm_object_get(ev, "feed");
        char t[64], type[128], key[128];
        uint64_t oldest;

        fmt_time(vmm_object_get(ev, "time"), t, sizeof(t));
        fmt_scalar(vmm_object_get(ev, "type"), type, sizeof(type));
        printf("%s %s", t, type);
        for (uint32_t i = 0; ev->type == MSGPACK_OBJECT_MAP && i < ev->via.map.size; i++) {
                const msgpack_object *k = &ev->via.map.ptr[i].key;
                if (k->type != MSGPACK_OBJECT_STR ||
                    streq_n(k->via.str.ptr, k->via.str.size, "type") ||
                    streq_n(k->via.str.ptr, k->via.str.size, "time") ||
                    streq_n(k->via.str.ptr, k->via.str.size, "seq") ||
                    streq_n(k->via.str.ptr, k->via.str.size, "feed"))
                        continue;
                (void) text_escape_buf(k->via.str.ptr, k->via.str.size, 0, key, sizeof(key));
                printf(" %s=", key);
                print_value_quoted(k, &ev->via.map.ptr[i].val);
        }
        if (!vmm_object_is_nil(feed)) {
                fputs(" feed=", stdout);
                print_value_quoted(&(msgpack_object) { .type = MSGPACK_OBJECT_NIL }, feed);
        }
        putchar('\n');
        if (vmm_object_streq(vmm_object_get(ev, "type"), "events.truncated") &&
            vmm_object_uint(vmm_object_get(ev, "oldest"), &oldest)) {
                fflush(stdout);
                fprintf(stderr, "vmadm: the events before feed position %llu are no longer "
                        "kept; these follow from there\n", (unsigned long long) oldest);
        }
}

static int watch_loop(Ctx *ctx) {
        vmm_client_set_timeout(ctx->client, WATCH_POLL_MS);
        while (!interrupted) {
                VmmMessage m = { 0 };
                int r = vmm_client_read(ctx->client, &m);

                if (r == -ETIMEDOUT)
                        continue;
                if (r < 0)
                        return interrupted ? 0 : report_lost(ctx, r);
                if (m.type == VMM_MESSAGE_RESPONSE && m.error != VMM_OK) {
                        r = daemon_error(ctx, &m);
                        vmm_message_release(&m);
                        return r;
                }
                if (m.type == VMM_MESSAGE_NOTIFICATION && m.method &&
                    strcmp(m.method, "event") == 0) {
                        const msgpack_object *ev = &m.result;
                        if (ev->type == MSGPACK_OBJECT_ARRAY && ev->via.array.size > 0)
                                ev = &ev->via.array.ptr[0];
                        if (arg_json)
                                print_json(ev);
                        else
                                print_event_line(ev);
                        if (fflush(stdout) != 0 && errno == EPIPE)
                                interrupted = 1;
                }
                vmm_message_release(&m);
        }
        return 0;
}

/* --types booking.,group. into prefixes (split in place in buf). */
static int split_types(char *buf, const char **types, size_t *n) {
        for (char *save = NULL, *w = strtok_r(buf, ",", &save); w;
             w = strtok_r(NULL, ",", &save)) {
                if (*n == TYPES_MAX)
                        return usage_error("watch: --types takes at most %d prefixes",
                                           TYPES_MAX);
                types[(*n)++] = w;
        }
        if (*n == 0)
                return usage_error("watch: --types wants event type prefixes, such as "
                                   "booking.,group.");
        return 0;
}

int cmd_watch(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        struct sigaction sa = { .sa_handler = on_signal }, old_int, old_term;
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        const char *types[TYPES_MAX];
        _cleanup_free_ char *types_buf = NULL;
        size_t n_types = 0;
        uint64_t since = 0;
        int r = parse_command(cmd, TAKES(OPT_SINCE) | TAKES(OPT_TYPES), 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (OPTVAL(&a, OPT_SINCE) && parse_uint(OPTVAL(&a, OPT_SINCE), UINT64_MAX, &since) < 0)
                return usage_error("watch: --since wants a feed position, a number from 0 "
                                   "(0: every event kept): '%s'", OPTVAL(&a, OPT_SINCE));
        if (OPTVAL(&a, OPT_TYPES)) {
                types_buf = strdup(OPTVAL(&a, OPT_TYPES));
                if (!types_buf)
                        return local_error("watch", -ENOMEM);
                r = split_types(types_buf, types, &n_types);
                if (r != 0)
                        return r;
        }
        r = ctx_connect(ctx, default_timeout());
        if (r != 0)
                return r;
        r = vmm_events_watch(ctx->client, OPTVAL(&a, OPT_SINCE) ? &since : NULL,
                             n_types ? types : NULL, n_types, &m);
        r = call_result(ctx, VMM_M_EVENTS_WATCH, r, &m);
        if (r == 0 && !arg_json && isatty(STDOUT_FILENO)) {
                uint64_t feed = 0;
                (void) vmm_object_uint(vmm_object_get(&m.result, "feed"), &feed);
                if (OPTVAL(&a, OPT_SINCE))
                        fprintf(stderr, "Events of %s after feed position %s (the feed is at "
                                "%llu); Ctrl-C stops.\n", ctx->path, OPTVAL(&a, OPT_SINCE),
                                (unsigned long long) feed);
                else
                        fprintf(stderr, "Watching events of %s (the feed is at %llu); Ctrl-C "
                                "stops.\n", ctx->path, (unsigned long long) feed);
        }
        vmm_message_release(&m);
        if (r != 0)
                return r;
        (void) fflush(stdout);

        interrupted = 0;
        sigemptyset(&sa.sa_mask);
        (void) sigaction(SIGINT, &sa, &old_int);
        (void) sigaction(SIGTERM, &sa, &old_term);
        r = watch_loop(ctx);
        (void) sigaction(SIGINT, &old_int, NULL);
        (void) sigaction(SIGTERM, &old_term, NULL);
        interrupted = 0;
        /* this connection now carries events: later commands need a fresh one */
        ctx_drop(ctx);
        return r;
}
