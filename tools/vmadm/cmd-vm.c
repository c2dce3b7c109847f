/* SPDX-License-Identifier: MIT */
/* vmadm: the commands about VMs: list, show, disks, create, delete, passwd,
 * set, approve, suspend and monitor. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/common/escape.h"
#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

/* ---- human output ---- */

static int vm_table(const Pages *pg) {
        int r = print_vm_table(stdout, pg->items, pg->n_items, use_color(), "(no VMs)");
        return r < 0 ? local_error("output", r) : 0;
}

static int disk_table(const Pages *pg) {
        int r = print_disk_table(stdout, pg->items, pg->n_items, use_color(), "(no disks)");
        return r < 0 ? local_error("output", r) : 0;
}

static void human_vm(const msgpack_object *o, const Params *p) {
        print_vm(stdout, o);
}

static void human_created(const msgpack_object *o, const Params *p) {
        char vm[256], pw[4 * VMM_PASSWORD_MAX + 1];

        fmt_scalar(vmm_object_get(o, "vm_id"), vm, sizeof(vm));
        fmt_scalar(vmm_object_get(o, "password"), pw, sizeof(pw));
        printf("created VM %s\npassword: %s\n", vm, pw);
        explicit_bzero(pw, sizeof(pw));
}

static void human_passwd(const msgpack_object *o, const Params *p) {
        char vm[256], pw[4 * VMM_PASSWORD_MAX + 1];

        fmt_scalar(vmm_object_get(o, "vm_id"), vm, sizeof(vm));
        fmt_scalar(vmm_object_get(o, "password"), pw, sizeof(pw));
        printf("new password for VM %s (its sessions ended)\npassword: %s\n", vm, pw);
        explicit_bzero(pw, sizeof(pw));
}

static void human_deleted(const msgpack_object *o, const Params *p) {
        printf("deleted VM %s\n", p->vm_id);
}

/* ---- list, show, disks, create, delete, passwd ---- */

int cmd_list(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        static const char *const statuses[] = { "on", "off", "requested" };
        Parsed a = { 0 };
        Params p = { .filter = "all" };
        uint64_t group;
        int r = parse_command(cmd, TAKES_LIMIT | TAKES(OPT_GROUP) | TAKES(OPT_OWNER) |
                              TAKES(OPT_BOOKED_BY) | TAKES(OPT_STATUS), 0, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        if (a.n_args == 1) {
                if (strcmp(a.args[0], "connected") != 0 && strcmp(a.args[0], "authorized") != 0 &&
                    strcmp(a.args[0], "all") != 0)
                        return usage_error("list: the filter is connected, authorized or all, "
                                           "not '%s'", a.args[0]);
                p.filter = a.args[0];
        }
        if (OPTVAL(&a, OPT_STATUS)) {
                bool ok = false;
                for (size_t i = 0; i < ELEMENTSOF(statuses); i++)
                        ok = ok || strcmp(OPTVAL(&a, OPT_STATUS), statuses[i]) == 0;
                if (!ok)
                        return usage_error("list: --status is on, off or requested, not '%s'",
                                           OPTVAL(&a, OPT_STATUS));
                params_str(&p, "status", OPTVAL(&a, OPT_STATUS));
        }
        if (OPTVAL(&a, OPT_OWNER))
                params_str(&p, "owner", OPTVAL(&a, OPT_OWNER));
        if (OPTVAL(&a, OPT_BOOKED_BY))
                params_str(&p, "booked_by", OPTVAL(&a, OPT_BOOKED_BY));
        if (OPTVAL(&a, OPT_GROUP)) {
                r = resolve_group(ctx, OPTVAL(&a, OPT_GROUP), &group);
                if (r != 0)
                        return r;
                params_uint(&p, "group", group);
        }
        return run_list(ctx, VMM_M_VM_LIST, &p, "vms", vm_table);
}

int cmd_show(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        return run_simple(ctx, VMM_M_VM_GET, &p, human_vm);
}

int cmd_disks(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        return run_list(ctx, VMM_M_DISK_LIST, &p, "disks", disk_table);
}

int cmd_create(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        _cleanup_erase_ char *pw = NULL;
        int r = parse_command(cmd, TAKES_PASSWORD, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (a.password_stdin) {
                r = read_password_stdin(&pw);
                if (r != 0)
                        return r;
        }
        Params p = { .vm_id = a.args[0], .password = pw };
        return run_simple(ctx, VMM_M_VM_CREATE, &p, human_created);
}

int cmd_delete(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        return run_simple(ctx, VMM_M_VM_DELETE, &p, human_deleted);
}

int cmd_passwd(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        _cleanup_erase_ char *pw = NULL;
        int r = parse_command(cmd, TAKES_PASSWORD, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (a.password_stdin) {
                r = read_password_stdin(&pw);
                if (r != 0)
                        return r;
        }
        Params p = { .vm_id = a.args[0], .password = pw };
        return run_simple(ctx, VMM_M_VM_PASSWD, &p, human_passwd);
}

/* ---- set ---- */

typedef struct SetValues {
        msgpack_sbuffer disks, os;
        char *ip_text;                  /* the --ip values, split at commas in place */
        const char *ips[VMM_IP_MAX + 1];
        size_t n_ips;
} SetValues;

static void set_values_done(SetValues *v) {
        msgpack_sbuffer_destroy(&v->disks);
        msgpack_sbuffer_destroy(&v->os);
        free(v->ip_text);
}

/* "[ID:]SIZE" (GiB) into pk as {"id"?, "size"}. */
static int pack_disk_spec(msgpack_packer *pk, const char *spec) {
        const char *colon = strrchr(spec, ':');
        uint64_t size;

        if (colon == spec || parse_uint(colon ? colon + 1 : spec, VMM_DISK_SIZE_MAX, &size) < 0 ||
            size < VMM_DISK_SIZE_MIN)
                return usage_error("set: --disk wants [ID:]SIZE, SIZE in GiB from 1 to %llu: "
                                   "'%s'", VMM_DISK_SIZE_MAX, spec);
        if (msgpack_pack_map(pk, colon ? 2 : 1) ||
            (colon && (vmm_pack_str(pk, "id") < 0 ||
                       vmm_pack_strn(pk, spec, (size_t) (colon - spec)) < 0)) ||
            vmm_pack_kv_uint(pk, "size", size) < 0)
                return local_error("set", -ENOMEM);
        return 0;
}

static int set_disks(const Parsed *a, SetValues *v, Params *p) {
        msgpack_packer pk;
        size_t n = a->n_disks;
        int r;

        /* --disk '' alone: no disks */
        if (n == 1 && !*a->disks[0])
                n = 0;
        else
                for (size_t i = 0; i < n; i++)
                        if (!*a->disks[i])
                                return usage_error("set: --disk '' (no disks) goes alone");
        if (n > VMM_MAX_DISKS)
                return usage_error("set: a VM has at most %d disks", VMM_MAX_DISKS);
        msgpack_packer_init(&pk, &v->disks, msgpack_sbuffer_write);
        if (msgpack_pack_array(&pk, (uint32_t) n))
                return local_error("set", -ENOMEM);
        for (size_t i = 0; i < n; i++) {
                r = pack_disk_spec(&pk, a->disks[i]);
                if (r != 0)
                        return r;
        }
        params_raw(p, "disks", v->disks.data, v->disks.size);
        return 0;
}

/* --ip ADDR (repeated, or ADDR,ADDR); '' clears. */
static int set_ips(const Parsed *a, SetValues *v, Params *p) {
        size_t len = 0;

        for (size_t i = 0; i < a->n_ips; i++)
                len += strlen(a->ips[i]) + 1;
        v->ip_text = calloc(len + 1, 1);
        if (!v->ip_text)
                return local_error("set", -ENOMEM);
        for (size_t i = 0; i < a->n_ips; i++) {
                if (i > 0)
                        strcat(v->ip_text, ",");
                strcat(v->ip_text, a->ips[i]);
        }
        if (!*v->ip_text) {
                params_nil(p, "ip");
                return 0;
        }
        for (char *save = NULL, *w = strtok_r(v->ip_text, ",", &save); w;
             w = strtok_r(NULL, ",", &save)) {
                if (v->n_ips == VMM_IP_MAX)
                        return usage_error("set: a VM has at most %d addresses", VMM_IP_MAX);
                v->ips[v->n_ips++] = w;
        }
        if (v->n_ips == 0)
                return usage_error("set: --ip wants addresses (ADDR or ADDR,ADDR), or '' to "
                                   "clear them");
        params_strv(p, "ip", v->ips, v->n_ips);
        return 0;
}

/* --os NAME:VERSION (the version may be empty: NAME or NAME:); '' clears. */
static int set_os(const char *spec, SetValues *v, Params *p) {
        const char *colon = strchr(spec, ':');
        size_t name_len = colon ? (size_t) (colon - spec) : strlen(spec);
        msgpack_packer pk;

        if (!*spec) {
                params_nil(p, "os");
                return 0;
        }
        if (name_len == 0)
                return usage_error("set: --os wants NAME:VERSION (e.g. Debian:12), not '%s'",
                                   spec);
        msgpack_packer_init(&pk, &v->os, msgpack_sbuffer_write);
        if (msgpack_pack_map(&pk, 2) || vmm_pack_str(&pk, "name") < 0 ||
            vmm_pack_strn(&pk, spec, name_len) < 0 ||
            vmm_pack_kv_str(&pk, "version", colon ? colon + 1 : "") < 0)
                return local_error("set", -ENOMEM);
        params_raw(p, "os", v->os.data, v->os.size);
        return 0;
}

/* A text value that '' clears. */
static void set_text(Params *p, const char *key, const char *value) {
        if (!value)
                return;
        if (*value)
                params_str(p, key, value);
        else
                params_nil(p, key);
}

int cmd_set(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        _cleanup_(set_values_done) SetValues v = { 0 };
        uint64_t u;
        int r = parse_command(cmd, TAKES(OPT_OWNER) | TAKES(OPT_HOSTNAME) | TAKES(OPT_IP) |
                              TAKES(OPT_OS) | TAKES(OPT_GROUP) | TAKES(OPT_RAM) |
                              TAKES(OPT_CPU) | TAKES(OPT_DISK), 1, 1, argc, argv, &a);

        msgpack_sbuffer_init(&v.disks);
        msgpack_sbuffer_init(&v.os);
        if (r != GO_ON)
                return r;
        p.vm_id = a.args[0];
        set_text(&p, "owner", OPTVAL(&a, OPT_OWNER));
        set_text(&p, "hostname", OPTVAL(&a, OPT_HOSTNAME));
        if (OPTVAL(&a, OPT_RAM)) {
                if (parse_uint(OPTVAL(&a, OPT_RAM), VMM_RAM_MAX, &u) < 0 || u < VMM_RAM_MIN)
                        return usage_error("set: --ram wants MiB, %llu-%llu: '%s'", VMM_RAM_MIN,
                                           VMM_RAM_MAX, OPTVAL(&a, OPT_RAM));
                params_uint(&p, "ram", u);
        }
        if (OPTVAL(&a, OPT_CPU)) {
                if (parse_uint(OPTVAL(&a, OPT_CPU), VMM_CPU_MAX, &u) < 0 || u < VMM_CPU_MIN)
                        return usage_error("set: --cpu wants a count, %llu-%llu: '%s'",
                                           VMM_CPU_MIN, VMM_CPU_MAX, OPTVAL(&a, OPT_CPU));
                params_uint(&p, "cpu", u);
        }
        if (a.n_disks > 0 && (r = set_disks(&a, &v, &p)) != 0)
                return r;
        if (a.n_ips > 0 && (r = set_ips(&a, &v, &p)) != 0)
                return r;
        if (OPTVAL(&a, OPT_OS) && (r = set_os(OPTVAL(&a, OPT_OS), &v, &p)) != 0)
                return r;
        if (OPTVAL(&a, OPT_GROUP)) {
                if (!*OPTVAL(&a, OPT_GROUP))
                        params_nil(&p, "group");
                else {
                        r = resolve_group(ctx, OPTVAL(&a, OPT_GROUP), &u);
                        if (r != 0)
                                return r;
                        params_uint(&p, "group", u);
                }
        }
        if (p.n_kv == 0)
                return usage_error("set: nothing to change; give at least one of --owner, "
                                   "--hostname, --ip, --os, --group, --ram, --cpu, --disk");
        return run_simple(ctx, VMM_M_VM_SET, &p, human_vm);
}

/* ---- approve, suspend ---- */

static void human_approved(const msgpack_object *o, const Params *p) {
        printf("VM %s is active: it may log in and be booked\n", p->vm_id);
}

static void human_suspended(const msgpack_object *o, const Params *p) {
        printf("VM %s is suspended: its sessions ended, and it cannot log in nor be booked "
               "until 'vmadm approve %s'\n", p->vm_id, p->vm_id);
}

int cmd_approve(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        return run_simple(ctx, VMM_M_VM_APPROVE, &p, human_approved);
}

int cmd_suspend(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        return run_simple(ctx, VMM_M_VM_SUSPEND, &p, human_suspended);
}

/* ---- monitor ---- */

static void human_report(const msgpack_object *report, const msgpack_object *reported_at) {
        char buf[512], ago[64], total[48], used[48];
        _cleanup_free_ char *disks = NULL;
        const msgpack_object *load = vmm_object_get(report, "load");
        int64_t t;
        uint64_t u;

        fmt_time(reported_at, buf, sizeof(buf));
        if (vmm_object_int(reported_at, &t)) {
                int64_t since = output_now_ms() - t;   /* once: MAX() reads it twice */
                fmt_duration((uint64_t) MAX(since, (int64_t) 0), ago, sizeof(ago));
                size_t len = strlen(buf);
                (void) snprintf(buf + len, sizeof(buf) - len, " (%s ago)", ago);
        }
        print_field(stdout, 0, "reported_at", buf);
        if (!report || report->type != MSGPACK_OBJECT_MAP) {
                print_field(stdout, 0, "report", "- (no report since vmmd started)");
                return;
        }
        if (vmm_object_uint(vmm_object_get(report, "uptime"), &u)) {
                fmt_duration(u * 1000, buf, sizeof(buf));
                print_field(stdout, 0, "uptime", buf);
        }
        if (load && load->type == MSGPACK_OBJECT_ARRAY && load->via.array.size == 3) {
                double l[3] = { 0 };
                for (unsigned i = 0; i < 3; i++)
                        (void) vmm_object_double(&load->via.array.ptr[i], &l[i]);
                (void) snprintf(buf, sizeof(buf), "%.2f %.2f %.2f (1, 5, 15 min)", l[0], l[1],
                                l[2]);
                print_field(stdout, 0, "load", buf);
        }
        if (vmm_object_get(report, "mem_used") || vmm_object_get(report, "mem_total")) {
                fmt_size(vmm_object_get(report, "mem_used"), "MiB", used, sizeof(used));
                fmt_size(vmm_object_get(report, "mem_total"), "MiB", total, sizeof(total));
                (void) snprintf(buf, sizeof(buf), "%s used of %s", used, total);
                print_field(stdout, 0, "memory", buf);
        }
        /* [{"id", "used"}]: as a disk list, "used" for "size" */
        const msgpack_object *du = vmm_object_get(report, "disks_used");
        if (du && du->type == MSGPACK_OBJECT_ARRAY && du->via.array.size > 0) {
                size_t len = 0;
                FILE *f = open_memstream(&disks, &len);
                for (uint32_t i = 0; f && i < du->via.array.size; i++) {
                        char id[256], size[48];
                        fmt_scalar(vmm_object_get(&du->via.array.ptr[i], "id"), id, sizeof(id));
                        fmt_size(vmm_object_get(&du->via.array.ptr[i], "used"), "GiB", size,
                                 sizeof(size));
                        fprintf(f, "%s%s %s", i > 0 ? ", " : "", id, size);
                }
                if (f && fclose(f) == 0 && disks)
                        print_field(stdout, 0, "disks_used", disks);
        }
}

static int human_monitor(const msgpack_object *o) {
        static const Column cols[] = {
                { "TIME", "time", COLUMN_TIME },
                { "LOAD", "load", COLUMN_TEXT },
                { "MEM_USED", "mem_used", COLUMN_MIB },
                { "MEM_TOTAL", "mem_total", COLUMN_MIB },
                { "DISK_USED", "disk_used", COLUMN_GIB },
        };
        const msgpack_object *hist = vmm_object_get(o, "history");
        uint32_t n = hist && hist->type == MSGPACK_OBJECT_ARRAY ? hist->via.array.size : 0;
        _cleanup_free_ const msgpack_object **items = calloc(MAX(n, 1u), sizeof(*items));
        char buf[256];

        if (!items)
                return local_error("output", -ENOMEM);
        fmt_scalar(vmm_object_get(o, "vm_id"), buf, sizeof(buf));
        print_field(stdout, 0, "vm_id", buf);
        fmt_scalar(vmm_object_get(o, "status"), buf, sizeof(buf));
        print_field(stdout, 0, "status", buf);
        human_report(vmm_object_get(o, "report"), vmm_object_get(o, "reported_at"));
        for (uint32_t i = 0; i < n; i++)
                items[i] = &hist->via.array.ptr[i];
        if (n == 0) {
                puts("\nhistory: (no reports in the last hour)");
                return 0;
        }
        puts("\nhistory (the last hour, one sample a minute):");
        return items_table(cols, ELEMENTSOF(cols), items, n, NULL);
}

int cmd_monitor(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        r = rpc(ctx, VMM_M_VM_MONITOR, &p, -1, default_timeout(), &m);
        if (r == 0) {
                if (arg_json)
                        print_json(&m.result);
                else
                        r = human_monitor(&m.result);
        }
        vmm_message_release(&m);
        return r;
}
