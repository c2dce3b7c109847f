/* SPDX-License-Identifier: MIT */
/* vmadm: who is asking (whoami), people (user add, list, show, set, del)
 * and groups of VMs (group add, list, show, rename, put, rm, del). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

static const char *const roles[] = { "viewer", "user", "admin" };

/* What the daemon says about users, in words for these commands. */
static const ErrorText user_texts[] = {
        { "bad_request", "^name: ",
          "a user name is 1 to 64 letters, digits, '.', '_', '@', '+' or '-', starting with a "
          "letter or digit" },
        { "bad_request", "^password: ",
          "a password is 6 to 1024 bytes" },
        { NULL, NULL, NULL },
};

static const ErrorText group_texts[] = {
        { "bad_request", "^name: ",
          "a group name is 1 to 64 bytes of text without control characters" },
        { NULL, NULL, NULL },
};

/* ---- whoami ---- */

int cmd_whoami(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = ctx_connect(ctx, default_timeout());
        if (r != 0)
                return r;
        r = call_result(ctx, VMM_M_WHOAMI, vmm_whoami(ctx->client, NULL, &m), &m);
        if (r == 0) {
                if (arg_json)
                        print_json(&m.result);
                else
                        print_map(&m.result, 0);
        }
        vmm_message_release(&m);
        return r;
}

/* ---- users ---- */

static int check_role(const Command *cmd, const char *role) {
        for (size_t i = 0; i < ELEMENTSOF(roles); i++)
                if (strcmp(role, roles[i]) == 0)
                        return 0;
        return usage_error("%s: a role is viewer, user or admin, not '%s'", cmd->name, role);
}

static void human_user_created(const msgpack_object *o, const Params *p) {
        char name[256], role[32], pw[4 * VMM_PASSWORD_MAX + 1];

        fmt_scalar(vmm_object_get(o, "name"), name, sizeof(name));
        fmt_scalar(vmm_object_get(o, "role"), role, sizeof(role));
        fmt_scalar(vmm_object_get(o, "password"), pw, sizeof(pw));
        printf("created user %s (role %s)\npassword: %s\n", name, role, pw);
        explicit_bzero(pw, sizeof(pw));
}

static void human_user(const msgpack_object *o, const Params *p) {
        print_map(o, 0);
}

static void human_user_changed(const msgpack_object *o, const Params *p) {
        const msgpack_object *pwo = vmm_object_get(o, "password");
        char name[256], role[32], pw[4 * VMM_PASSWORD_MAX + 1];

        fmt_scalar(vmm_object_get(o, "name"), name, sizeof(name));
        fmt_scalar(vmm_object_get(o, "role"), role, sizeof(role));
        printf("changed user %s (role %s)\n", name, role);
        if (!pwo)
                return;
        fmt_scalar(pwo, pw, sizeof(pw));
        printf("new password for user %s (its sessions ended)\npassword: %s\n", name, pw);
        explicit_bzero(pw, sizeof(pw));
}

static void human_user_deleted(const msgpack_object *o, const Params *p) {
        printf("deleted user %s (its bookings and sessions ended)\n", p->kv[0].str);
}

static int user_table(const Pages *pg) {
        static const Column cols[] = {
                { "NAME", "name", COLUMN_TEXT },
                { "ROLE", "role", COLUMN_TEXT },
                { "CREATED", "created_at", COLUMN_TIME },
                { "LAST_LOGIN", "last_login_at", COLUMN_TIME },
        };
        return items_table(cols, ELEMENTSOF(cols), pg->items, pg->n_items, "(no users)");
}

int cmd_user_add(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        _cleanup_erase_ char *pw = NULL;
        int r = parse_command(cmd, TAKES(OPT_ROLE) | TAKES_PASSWORD, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (OPTVAL(&a, OPT_ROLE) && (r = check_role(cmd, OPTVAL(&a, OPT_ROLE))) != 0)
                return r;
        if (a.password_stdin && (r = read_password_stdin(&pw)) != 0)
                return r;
        ctx->texts = user_texts;
        params_str(&p, "name", a.args[0]);
        if (OPTVAL(&a, OPT_ROLE))
                params_str(&p, "role", OPTVAL(&a, OPT_ROLE));
        if (pw)
                params_str(&p, "password", pw);
        return run_simple(ctx, VMM_M_USER_CREATE, &p, human_user_created);
}

int cmd_user_list(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        return run_list(ctx, VMM_M_USER_LIST, &p, "users", user_table);
}

int cmd_user_show(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        ctx->texts = user_texts;
        params_str(&p, "name", a.args[0]);
        return run_simple(ctx, VMM_M_USER_GET, &p, human_user);
}

int cmd_user_set(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        _cleanup_erase_ char *pw = NULL;
        int r = parse_command(cmd, TAKES(OPT_ROLE) | TAKES_PASSWORD | TAKES(OPT_NEW_PASSWORD),
                              1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (a.password_stdin && a.new_password)
                return usage_error("%s: give --password-stdin or --new-password, not both",
                                   cmd->name);
        if (!OPTVAL(&a, OPT_ROLE) && !a.password_stdin && !a.new_password)
                return usage_error("%s: nothing to change; give --role, --password-stdin or "
                                   "--new-password", cmd->name);
        if (OPTVAL(&a, OPT_ROLE) && (r = check_role(cmd, OPTVAL(&a, OPT_ROLE))) != 0)
                return r;
        if (a.password_stdin && (r = read_password_stdin(&pw)) != 0)
                return r;
        ctx->texts = user_texts;
        params_str(&p, "name", a.args[0]);
        if (OPTVAL(&a, OPT_ROLE))
                params_str(&p, "role", OPTVAL(&a, OPT_ROLE));
        if (pw)
                params_str(&p, "password", pw);
        else if (a.new_password)
                params_bool(&p, "password", true);      /* the daemon makes one up */
        return run_simple(ctx, VMM_M_USER_SET, &p, human_user_changed);
}

int cmd_user_del(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        ctx->texts = user_texts;
        params_str(&p, "name", a.args[0]);
        return run_simple(ctx, VMM_M_USER_DELETE, &p, human_user_deleted);
}

/* ---- groups ---- */

static void print_group(const msgpack_object *o) {
        _cleanup_free_ char *vms = fmt_list(vmm_object_get(o, "vm_ids"), NULL);
        char buf[512];

        fmt_scalar(vmm_object_get(o, "id"), buf, sizeof(buf));
        print_field(stdout, 0, "id", buf);
        fmt_scalar(vmm_object_get(o, "name"), buf, sizeof(buf));
        print_field(stdout, 0, "name", buf);
        print_field(stdout, 0, "vms", vms ? vms : "?");
        fmt_time(vmm_object_get(o, "created_at"), buf, sizeof(buf));
        print_field(stdout, 0, "created_at", buf);
}

static void human_group(const msgpack_object *o, const Params *p) {
        print_group(o);
}

static void human_group_left(const msgpack_object *o, const Params *p) {
        char id[32], name[256];

        fmt_scalar(vmm_object_get(o, "id"), id, sizeof(id));
        fmt_scalar(vmm_object_get(o, "name"), name, sizeof(name));
        printf("VM %s left group %s (%s)\n", p->vm_id, id, name);
}

static void human_group_deleted(const msgpack_object *o, const Params *p) {
        printf("deleted group %" PRIu64 " (its VMs stay, in no group)\n", p->id_uint);
}

static int group_table(const Pages *pg) {
        static const Column cols[] = {
                { "ID", "id", COLUMN_TEXT },
                { "NAME", "name", COLUMN_TEXT },
                { "CREATED", "created_at", COLUMN_TIME },
                { "VMS", "vm_ids", COLUMN_LIST },
        };
        return items_table(cols, ELEMENTSOF(cols), pg->items, pg->n_items, "(no groups)");
}

/* The VMs of a group with what a person booking one wants to know. */
static int pool_table(const Pages *pg) {
        static const Column cols[] = {
                { "VM_ID", "vm_id", COLUMN_TEXT },
                { "STATUS", "status", COLUMN_TEXT },
                { "ACCESS", "access", COLUMN_TEXT },
                { "BOOKED_BY", "booking.user", COLUMN_TEXT },
                { "EXPIRES", "booking.expires_at", COLUMN_TIME },
                { "LEFT", "booking.expires_at", COLUMN_LEFT },
        };
        return items_table(cols, ELEMENTSOF(cols), pg->items, pg->n_items, "(no VMs)");
}

int cmd_group_add(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, 0, 1, INT32_MAX, argc, argv, &a);

        if (r != GO_ON)
                return r;
        ctx->texts = group_texts;
        params_str(&p, "name", a.args[0]);
        if (a.n_args > 1)
                params_strv(&p, "vm_ids", (const char *const *) a.args + 1,
                            (size_t) a.n_args - 1);
        return run_simple(ctx, VMM_M_GROUP_CREATE, &p, human_group);
}

int cmd_group_list(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        return run_list(ctx, VMM_M_GROUP_LIST, &p, "groups", group_table);
}

int cmd_group_show(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        Params vms = { .filter = "all" };
        VmmMessage m = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = resolve_group(ctx, a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        r = rpc(ctx, VMM_M_GROUP_GET, &p, -1, default_timeout(), &m);
        if (r == 0 && arg_json)
                print_json(&m.result);
        else if (r == 0) {
                print_group(&m.result);
                putchar('\n');
                params_uint(&vms, "group", p.id_uint);
                r = run_list(ctx, VMM_M_VM_LIST, &vms, "vms", pool_table);
        }
        vmm_message_release(&m);
        return r;
}

int cmd_group_rename(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        int r = parse_command(cmd, 0, 2, 2, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = resolve_group(ctx, a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        ctx->texts = group_texts;
        params_str(&p, "name", a.args[1]);
        return run_simple(ctx, VMM_M_GROUP_RENAME, &p, human_group);
}

int cmd_group_put(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        int r = parse_command(cmd, 0, 2, INT32_MAX, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = resolve_group(ctx, a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        params_strv(&p, "vm_ids", (const char *const *) a.args + 1, (size_t) a.n_args - 1);
        return run_simple(ctx, VMM_M_GROUP_ADD, &p, human_group);
}

int cmd_group_rm(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES(OPT_GROUP), 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.vm_id = a.args[0];
        if (OPTVAL(&a, OPT_GROUP)) {
                r = resolve_group(ctx, OPTVAL(&a, OPT_GROUP), &p.id_uint);
                if (r != 0)
                        return r;
                p.has_id_uint = true;
        }
        return run_simple(ctx, VMM_M_GROUP_REMOVE, &p, human_group_left);
}

int cmd_group_del(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = resolve_group(ctx, a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        return run_simple(ctx, VMM_M_GROUP_DELETE, &p, human_group_deleted);
}
