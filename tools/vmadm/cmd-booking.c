/* SPDX-License-Identifier: MIT */
/* vmadm: bookings (book, renew, cancel, bookings, history). A peer of the
 * users group runs these as itself; the daemon decides what it may do. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

static const ErrorText booking_texts[] = {
        { "bad_request", "^hours: ",
          "--hours wants a whole number of hours, from 1 (the daemon's booking_max_hours "
          "caps it)" },
        { "bad_request", "^minutes: ",
          "--minutes wants a whole number of minutes, from 1 (the daemon's booking_max_hours "
          "caps it)" },
        { NULL, NULL, NULL },
};

int duration_params(const Command *cmd, const Parsed *a, Params *p) {
        const char *h = OPTVAL(a, OPT_HOURS), *m = OPTVAL(a, OPT_MINUTES);
        uint64_t v;

        if (!h == !m)
                return usage_error("%s: give how long, as --hours N or --minutes N (one of them)",
                                   cmd->name);
        if (parse_uint(h ? h : m, UINT32_MAX, &v) < 0 || v == 0)
                return usage_error("%s: --%s wants a whole number, at least 1: '%s'", cmd->name,
                                   h ? "hours" : "minutes", h ? h : m);
        params_uint(p, h ? "hours" : "minutes", v);
        return 0;
}

/* "booked VM vm1 for alice until TIME (2h 0m left)" */
static void human_booking(const char *verb, const msgpack_object *o) {
        char vm[256], user[256], until[64], left[64];

        fmt_scalar(vmm_object_get(o, "vm_id"), vm, sizeof(vm));
        fmt_scalar(vmm_object_get(o, "user"), user, sizeof(user));
        fmt_time(vmm_object_get(o, "expires_at"), until, sizeof(until));
        fmt_left_obj(vmm_object_get(o, "expires_at"), output_now_ms(), left, sizeof(left));
        printf("%s VM %s for %s until %s (%s)\n", verb, vm, user, until, left);
}

static void human_booked(const msgpack_object *o, const Params *p) {
        human_booking("booked", o);
}

static void human_renewed(const msgpack_object *o, const Params *p) {
        human_booking("renewed", o);
}

static void human_cancelled(const msgpack_object *o, const Params *p) {
        printf("cancelled the booking of VM %s\n", p->vm_id);
}

int cmd_book(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        uint64_t group;
        int r = parse_command(cmd, TAKES(OPT_GROUP) | TAKES(OPT_HOURS) | TAKES(OPT_MINUTES) |
                              TAKES(OPT_FOR), 0, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if ((a.n_args == 1) == (OPTVAL(&a, OPT_GROUP) != NULL))
                return usage_error("book: give a VM, or --group G for any free VM of a group "
                                   "(one of them)");
        r = duration_params(cmd, &a, &p);
        if (r != 0)
                return r;
        if (a.n_args == 1)
                p.vm_id = a.args[0];
        else {
                r = resolve_group(ctx, OPTVAL(&a, OPT_GROUP), &group);
                if (r != 0)
                        return r;
                params_uint(&p, "group", group);
        }
        if (OPTVAL(&a, OPT_FOR))
                params_str(&p, "user", OPTVAL(&a, OPT_FOR));
        ctx->texts = booking_texts;
        return run_simple(ctx, VMM_M_BOOKING_CREATE, &p, human_booked);
}

int cmd_renew(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES(OPT_HOURS) | TAKES(OPT_MINUTES), 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = duration_params(cmd, &a, &p);
        if (r != 0)
                return r;
        p.vm_id = a.args[0];
        ctx->texts = booking_texts;
        return run_simple(ctx, VMM_M_BOOKING_RENEW, &p, human_renewed);
}

int cmd_cancel(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        return run_simple(ctx, VMM_M_BOOKING_CANCEL, &p, human_cancelled);
}

static int booking_table(const Pages *pg) {
        static const Column cols[] = {
                { "VM_ID", "vm_id", COLUMN_TEXT },
                { "USER", "user", COLUMN_TEXT },
                { "STARTED", "started_at", COLUMN_TIME },
                { "EXPIRES", "expires_at", COLUMN_TIME },
                { "LEFT", "expires_at", COLUMN_LEFT },
        };
        return items_table(cols, ELEMENTSOF(cols), pg->items, pg->n_items, "(no bookings)");
}

int cmd_bookings(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        uint64_t group;
        int r = parse_command(cmd, TAKES_LIMIT | TAKES(OPT_USER) | TAKES(OPT_GROUP), 0, 0, argc,
                              argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        if (OPTVAL(&a, OPT_USER))
                params_str(&p, "user", OPTVAL(&a, OPT_USER));
        if (OPTVAL(&a, OPT_GROUP)) {
                r = resolve_group(ctx, OPTVAL(&a, OPT_GROUP), &group);
                if (r != 0)
                        return r;
                params_uint(&p, "group", group);
        }
        return run_list(ctx, VMM_M_BOOKING_LIST, &p, "bookings", booking_table);
}

static int history_table(const Pages *pg) {
        static const Column cols[] = {
                { "TIME", "time", COLUMN_TIME },
                { "ACTION", "action", COLUMN_TEXT },
                { "VM_ID", "vm_id", COLUMN_TEXT },
                { "USER", "user", COLUMN_TEXT },
                { "EXPIRES", "expires_at", COLUMN_TIME },
                { "BY", "by", COLUMN_TEXT },
        };
        return items_table(cols, ELEMENTSOF(cols), pg->items, pg->n_items, "(no history)");
}

int cmd_history(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT | TAKES(OPT_USER) | TAKES(OPT_VM), 0, 0, argc,
                              argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        if (OPTVAL(&a, OPT_USER))
                params_str(&p, "user", OPTVAL(&a, OPT_USER));
        if (OPTVAL(&a, OPT_VM))
                p.vm_id = OPTVAL(&a, OPT_VM);
        return run_list(ctx, VMM_M_BOOKING_HISTORY, &p, "entries", history_table);
}
