/* SPDX-License-Identifier: MIT */
/* vmadm: the OS catalog (os add, list, del) and VM requests (request add,
 * list, approve, reject, cancel). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

static const ErrorText os_texts[] = {
        { "bad_request", "^name: ",
          "an OS name is 1 to 64 bytes of text without control characters" },
        { "bad_request", "^version: ",
          "an OS version is at most 64 bytes of text without control characters" },
        { "bad_request", "^iso: ",
          "--iso is at most 1024 bytes of text without control characters" },
        { "bad_request", "^qcow2: ",
          "--qcow2 is at most 1024 bytes of text without control characters" },
        { NULL, NULL, NULL },
};

/* An id of the catalog or of a request: a number from 1. */
static int parse_id(const Command *cmd, const char *what, const char *s, uint64_t *ret) {
        if (parse_uint(s, UINT64_MAX, ret) < 0 || *ret == 0)
                return usage_error("%s: %s id is a number (see '%s'), not '%s'", cmd->name,
                                   what, strcmp(what, "an OS") == 0 ? "vmadm os list"
                                                                      : "vmadm request list",
                                   s);
        return 0;
}

/* The words from args[0] on, joined by spaces (a description, a reason). */
static char *join_words(char **args, int n) {
        size_t len = 1;
        char *s;

        for (int i = 0; i < n; i++)
                len += strlen(args[i]) + 1;
        s = calloc(len, 1);
        for (int i = 0; s && i < n; i++) {
                if (i > 0)
                        strcat(s, " ");
                strcat(s, args[i]);
        }
        return s;
}

/* ---- the OS catalog ---- */

static void human_os_added(const msgpack_object *o, const Params *p) {
        char id[32], os[512];

        fmt_scalar(vmm_object_get(o, "id"), id, sizeof(id));
        fmt_os(o, os, sizeof(os));
        printf("added OS %s: %s\n", id, os);
}

static void human_os_deleted(const msgpack_object *o, const Params *p) {
        printf("deleted OS %" PRIu64 " from the catalog\n", p->id_uint);
}

static int os_table(const Pages *pg) {
        static const Column cols[] = {
                { "ID", "id", COLUMN_TEXT },
                { "NAME", "name", COLUMN_TEXT },
                { "VERSION", "version", COLUMN_TEXT },
                { "ISO", "iso", COLUMN_TEXT },
                { "QCOW2", "qcow2", COLUMN_TEXT },
                { "DESCRIPTION", "description", COLUMN_TEXT },
        };
        return items_table(cols, ELEMENTSOF(cols), pg->items, pg->n_items,
                           "(no OS in the catalog)");
}

int cmd_os_add(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES(OPT_ISO) | TAKES(OPT_QCOW2) | TAKES(OPT_DESCRIPTION),
                              2, 2, argc, argv, &a);

        if (r != GO_ON)
                return r;
        params_str(&p, "name", a.args[0]);
        params_str(&p, "version", a.args[1]);
        if (OPTVAL(&a, OPT_ISO))
                params_str(&p, "iso", OPTVAL(&a, OPT_ISO));
        if (OPTVAL(&a, OPT_QCOW2))
                params_str(&p, "qcow2", OPTVAL(&a, OPT_QCOW2));
        if (OPTVAL(&a, OPT_DESCRIPTION))
                params_str(&p, "description", OPTVAL(&a, OPT_DESCRIPTION));
        ctx->texts = os_texts;
        return run_simple(ctx, VMM_M_OS_CREATE, &p, human_os_added);
}

int cmd_os_list(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        return run_list(ctx, VMM_M_OS_LIST, &p, "os", os_table);
}

int cmd_os_del(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = parse_id(cmd, "an OS", a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        return run_simple(ctx, VMM_M_OS_DELETE, &p, human_os_deleted);
}

/* ---- requests ---- */

static void human_request(const char *verb, const msgpack_object *o) {
        char id[32];

        fmt_scalar(vmm_object_get(o, "id"), id, sizeof(id));
        printf("%s request %s\n", verb, id);
}

static void human_request_added(const msgpack_object *o, const Params *p) {
        human_request("filed", o);
        puts("an administrator approves or rejects it (see 'vmadm request list')");
}

static void human_request_rejected(const msgpack_object *o, const Params *p) {
        human_request("rejected", o);
}

static void human_request_cancelled(const msgpack_object *o, const Params *p) {
        human_request("cancelled", o);
}

/* The request, then each new VM with its password (shown once), as create
 * prints them. */
static void human_request_approved(const msgpack_object *o, const Params *p) {
        const msgpack_object *vms = vmm_object_get(o, "vms");

        human_request("approved", vmm_object_get(o, "request"));
        for (uint32_t i = 0; vms && vms->type == MSGPACK_OBJECT_ARRAY && i < vms->via.array.size;
             i++) {
                char vm[256], pw[4 * VMM_PASSWORD_MAX + 1];
                fmt_scalar(vmm_object_get(&vms->via.array.ptr[i], "vm_id"), vm, sizeof(vm));
                fmt_scalar(vmm_object_get(&vms->via.array.ptr[i], "password"), pw, sizeof(pw));
                printf("created VM %s\npassword: %s\n", vm, pw);
                explicit_bzero(pw, sizeof(pw));
        }
}

static int request_table(const Pages *pg) {
        static const Column cols[] = {
                { "ID", "id", COLUMN_TEXT },
                { "STATE", "state", COLUMN_TEXT },
                { "REQUESTER", "requester", COLUMN_TEXT },
                { "CREATED", "created_at", COLUMN_TIME },
                { "COUNT", "count", COLUMN_TEXT },
                { "RAM", "ram", COLUMN_MIB },
                { "CPU", "cpu", COLUMN_TEXT },
                { "DISKS", "disks", COLUMN_GIB_LIST },
                { "OS", "os_id", COLUMN_TEXT },
                { "VMS", "vm_ids", COLUMN_LIST },
                { "REASON", "reason", COLUMN_TEXT },
                { "DESCRIPTION", "description", COLUMN_TEXT },
        };
        return items_table(cols, ELEMENTSOF(cols), pg->items, pg->n_items, "(no requests)");
}

int cmd_request_add(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        uint64_t ram, cpu, os = 0, count = 0, sizes[VMM_MAX_DISKS];
        _cleanup_free_ char *description = NULL;
        int r = parse_command(cmd, TAKES(OPT_RAM) | TAKES(OPT_CPU) | TAKES(OPT_DISK) |
                              TAKES(OPT_OS) | TAKES(OPT_COUNT), 1, INT32_MAX, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (!OPTVAL(&a, OPT_RAM) || !OPTVAL(&a, OPT_CPU))
                return usage_error("%s: give --ram MiB and --cpu N", cmd->name);
        if (parse_uint(OPTVAL(&a, OPT_RAM), VMM_RAM_MAX, &ram) < 0 || ram < VMM_RAM_MIN)
                return usage_error("%s: --ram wants MiB, %llu-%llu: '%s'", cmd->name,
                                   VMM_RAM_MIN, VMM_RAM_MAX, OPTVAL(&a, OPT_RAM));
        if (parse_uint(OPTVAL(&a, OPT_CPU), VMM_CPU_MAX, &cpu) < 0 || cpu < VMM_CPU_MIN)
                return usage_error("%s: --cpu wants a count, %llu-%llu: '%s'", cmd->name,
                                   VMM_CPU_MIN, VMM_CPU_MAX, OPTVAL(&a, OPT_CPU));
        if (a.n_disks > VMM_MAX_DISKS)
                return usage_error("%s: at most %d disks", cmd->name, VMM_MAX_DISKS);
        for (size_t i = 0; i < a.n_disks; i++)
                if (parse_uint(a.disks[i], VMM_DISK_SIZE_MAX, &sizes[i]) < 0 ||
                    sizes[i] < VMM_DISK_SIZE_MIN)
                        return usage_error("%s: --disk wants a size in GiB, 1-%llu: '%s'",
                                           cmd->name, VMM_DISK_SIZE_MAX, a.disks[i]);
        if (OPTVAL(&a, OPT_OS) && (r = parse_id(cmd, "an OS", OPTVAL(&a, OPT_OS), &os)) != 0)
                return r;
        if (OPTVAL(&a, OPT_COUNT) &&
            (parse_uint(OPTVAL(&a, OPT_COUNT), VMM_REQUEST_COUNT_MAX, &count) < 0 || count == 0))
                return usage_error("%s: --count wants 1-%d VMs: '%s'", cmd->name,
                                   VMM_REQUEST_COUNT_MAX, OPTVAL(&a, OPT_COUNT));
        description = join_words(a.args, a.n_args);
        if (!description)
                return local_error(cmd->name, -ENOMEM);
        params_str(&p, "description", description);
        params_uint(&p, "ram", ram);
        params_uint(&p, "cpu", cpu);
        if (a.n_disks > 0)
                params_uintv(&p, "disks", sizes, a.n_disks);
        if (os)
                params_uint(&p, "os_id", os);
        if (count)
                params_uint(&p, "count", count);
        return run_simple(ctx, VMM_M_REQUEST_CREATE, &p, human_request_added);
}

int cmd_request_list(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        static const char *const states[] = { "pending", "approved", "rejected", "cancelled" };
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT | TAKES(OPT_STATE), 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        if (OPTVAL(&a, OPT_STATE)) {
                bool ok = false;
                for (size_t i = 0; i < ELEMENTSOF(states); i++)
                        ok = ok || strcmp(OPTVAL(&a, OPT_STATE), states[i]) == 0;
                if (!ok)
                        return usage_error("%s: --state is pending, approved, rejected or "
                                           "cancelled, not '%s'", cmd->name,
                                           OPTVAL(&a, OPT_STATE));
                params_str(&p, "state", OPTVAL(&a, OPT_STATE));
        }
        return run_list(ctx, VMM_M_REQUEST_LIST, &p, "requests", request_table);
}

int cmd_request_approve(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        int r = parse_command(cmd, 0, 2, INT32_MAX, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = parse_id(cmd, "a request", a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        params_strv(&p, "vm_ids", (const char *const *) a.args + 1, (size_t) a.n_args - 1);
        return run_simple(ctx, VMM_M_REQUEST_APPROVE, &p, human_request_approved);
}

int cmd_request_reject(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        _cleanup_free_ char *reason = NULL;
        int r = parse_command(cmd, 0, 2, INT32_MAX, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = parse_id(cmd, "a request", a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        reason = join_words(a.args + 1, a.n_args - 1);
        if (!reason)
                return local_error(cmd->name, -ENOMEM);
        params_str(&p, "reason", reason);
        return run_simple(ctx, VMM_M_REQUEST_REJECT, &p, human_request_rejected);
}

int cmd_request_cancel(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = parse_id(cmd, "a request", a.args[0], &p.id_uint);
        if (r != 0)
                return r;
        return run_simple(ctx, VMM_M_REQUEST_CANCEL, &p, human_request_cancelled);
}
