/* SPDX-License-Identifier: MIT */
/* vmadm: the administrators' tool for vmmd, over the admin Unix socket
 * (vmadm(8), vmmd-protocol(7) "Admin methods"). One-shot subcommands, an event
 * watcher, backups, and an interactive console that also takes the seeds'
 * server-console commands. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <msgpack.h>

#include "build-config.h"
#include "shared/macro.h"
#include "tools/common/output.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

#define EXIT_DAEMON      1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3
#define EXIT_LOCAL       4

#define DEFAULT_TIMEOUT_MS 60000
#define WATCH_POLL_MS      200

/* -1 in go-on results: "no exit status yet, carry on". */
#define GO_ON (-1)

static const char *arg_socket = NULL;
static bool arg_json = false;
static bool arg_no_color = false;
static int arg_timeout_ms = 0;          /* 0: the default of the command */

static volatile sig_atomic_t interrupted = 0;

/* ---- small helpers ---- */

static void erase_and_free(char *s) {
        if (!s)
                return;
        explicit_bzero(s, strlen(s));
        free(s);
}

static void erase_and_freep(char **s) {
        erase_and_free(*s);
}
#define _cleanup_erase_ _cleanup_(erase_and_freep)

_printf_(1, 2)
static int usage_error(const char *fmt, ...) {
        va_list ap;

        fputs("vmadm: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'vmadm --help'.\n", stderr);
        return EXIT_USAGE;
}

static int local_error(const char *what, int r) {
        fprintf(stderr, "vmadm: %s: %s\n", what, strerror(-r));
        return EXIT_LOCAL;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

static bool use_color(void) {
        return output_color_enabled(stdout, arg_no_color);
}

static void print_json(const msgpack_object *o) {
        (void) vmm_json_print(stdout, o, 0);
        putchar('\n');
}

/* ---- the connection ---- */

typedef struct Ctx {
        VmmClient *client;
        char path[PATH_MAX];
        bool console;
} Ctx;

static void ctx_drop(Ctx *ctx) {
        ctx->client = vmm_client_free(ctx->client);
}

/* The socket: --socket, $VMADM_SOCKET, /run/vmmd/admin.sock for root, else
 * $XDG_RUNTIME_DIR/vmmd/admin.sock (the daemon's defaults). */
static int ctx_resolve_path(Ctx *ctx) {
        const char *e;

        if (arg_socket && *arg_socket)
                e = arg_socket;
        else if ((e = getenv("VMADM_SOCKET")) && *e)
                ;
        else if (geteuid() == 0)
                e = "/run/vmmd/admin.sock";
        else if ((e = getenv("XDG_RUNTIME_DIR")) && *e == '/') {
                if ((size_t) snprintf(ctx->path, sizeof(ctx->path), "%s/vmmd/admin.sock", e) >=
                    sizeof(ctx->path))
                        return usage_error("XDG_RUNTIME_DIR is too long");
                return 0;
        } else {
                fprintf(stderr, "vmadm: no admin socket: XDG_RUNTIME_DIR is not set; "
                        "use --socket PATH or VMADM_SOCKET\n");
                return EXIT_UNREACHABLE;
        }
        if ((size_t) snprintf(ctx->path, sizeof(ctx->path), "%s", e) >= sizeof(ctx->path))
                return usage_error("socket path too long: '%s'", e);
        return 0;
}

static int report_connect_failure(const char *path, int r) {
        const char *why;

        switch (-r) {
        case ENOENT:
                why = "no such socket (is vmmd running? see --socket)";
                break;
        case ECONNREFUSED:
                why = "connection refused (vmmd is not running?)";
                break;
        case EACCES:
        case EPERM:
                why = "permission denied (the admin socket serves root, vmmd's user and "
                      "its admin group)";
                break;
        case ENOTSOCK:
                why = "not a socket";
                break;
        default:
                why = strerror(-r);
                break;
        }
        fprintf(stderr, "vmadm: cannot connect to %s: %s\n", path, why);
        return EXIT_UNREACHABLE;
}

static int ctx_connect(Ctx *ctx, int timeout_ms) {
        int r;

        if (!ctx->client) {
                if (!ctx->path[0]) {
                        r = ctx_resolve_path(ctx);
                        if (r != 0)
                                return r;
                }
                r = vmm_client_new(&ctx->client);
                if (r < 0)
                        return local_error("cannot set up a client", r);
                vmm_client_set_timeout(ctx->client, timeout_ms);
                r = vmm_client_connect_unix(ctx->client, ctx->path);
                if (r < 0) {
                        ctx_drop(ctx);
                        return report_connect_failure(ctx->path, r);
                }
        }
        vmm_client_set_timeout(ctx->client, timeout_ms);
        return 0;
}

static int report_lost(Ctx *ctx, int r) {
        if (r == -ECONNRESET)
                fprintf(stderr, "vmadm: %s: the daemon closed the connection\n", ctx->path);
        else if (r == -ETIMEDOUT)
                fprintf(stderr, "vmadm: %s: no answer from the daemon (see --timeout)\n",
                        ctx->path);
        else
                fprintf(stderr, "vmadm: %s: connection failed: %s\n", ctx->path, strerror(-r));
        ctx_drop(ctx);
        return EXIT_UNREACHABLE;
}

static int report_daemon_error(Ctx *ctx, const VmmMessage *m) {
        const char *code = m->error_code && *m->error_code ? m->error_code : "unknown";

        fprintf(stderr, "vmadm: %s: %s\n", code, m->error_message ? m->error_message : "");
        if (m->msgid == 0)
                ctx_drop(ctx);         /* the daemon refused the whole connection */
        return EXIT_DAEMON;
}

/* ---- requests ---- */

typedef struct Params {
        const char *vm_id;
        const char *password;
        const char *filter;
        const char *id_str;             /* session.revoke */
        bool has_id_uint;               /* conn.kill */
        uint64_t id_uint;
        char *after_str;                /* paging: vm.list, disk.list, session.list */
        bool has_after_uint;            /* paging: conn.list */
        uint64_t after_uint;
        uint64_t limit;                 /* page size; 0: the daemon's default */
} Params;

static uint32_t params_count(const Params *p) {
        return !!p->vm_id + !!p->password + !!p->filter + !!p->id_str + p->has_id_uint +
               !!p->after_str + p->has_after_uint + !!p->limit;
}

static int params_pack(msgpack_packer *pk, const Params *p) {
        int r = 0;

        if (p->vm_id)
                r |= vmm_pack_kv_str(pk, "vm_id", p->vm_id);
        if (p->password)
                r |= vmm_pack_kv_str(pk, "password", p->password);
        if (p->filter)
                r |= vmm_pack_kv_str(pk, "filter", p->filter);
        if (p->id_str)
                r |= vmm_pack_kv_str(pk, "id", p->id_str);
        if (p->has_id_uint)
                r |= vmm_pack_kv_uint(pk, "id", p->id_uint);
        if (p->after_str)
                r |= vmm_pack_kv_str(pk, "after", p->after_str);
        if (p->has_after_uint)
                r |= vmm_pack_kv_uint(pk, "after", p->after_uint);
        if (p->limit)
                r |= vmm_pack_kv_uint(pk, "limit", p->limit);
        return r ? -ENOMEM : 0;
}

/* One call. Returns 0 with *ret a successful response, else an exit status
 * after saying why (*ret may then hold the error response: release it). */
static int rpc(Ctx *ctx, const char *method, const Params *p, int pass_fd, int timeout_ms,
               VmmMessage *ret) {
        static const Params none = { 0 };
        msgpack_packer *pk;
        uint32_t n;
        int r;

        r = ctx_connect(ctx, timeout_ms);
        if (r != 0)
                return r;
        p = p ? p : &none;
        n = params_count(p);
        r = n > 0 ? vmm_client_begin_map(ctx->client, method, n, &pk, NULL)
                  : vmm_client_begin(ctx->client, method, 0, &pk, NULL);
        if (r < 0)
                return r == -ENOMEM ? local_error(method, r) : report_lost(ctx, r);
        r = params_pack(pk, p);
        if (r >= 0 && pass_fd >= 0)
                r = vmm_client_attach_fd(ctx->client, pass_fd);
        if (r < 0) {
                vmm_client_cancel(ctx->client);
                return local_error(method, r);
        }
        r = vmm_call_end(ctx->client, ret);
        if (r == -ENOMEM || r == -EMSGSIZE)
                return local_error(method, r);
        if (r < 0)
                return report_lost(ctx, r);
        if (ret->error != VMM_OK)
                return report_daemon_error(ctx, ret);
        return 0;
}

static int default_timeout(void) {
        if (arg_timeout_ms != 0)
                return arg_timeout_ms;
        return DEFAULT_TIMEOUT_MS;
}

/* ---- paged lists ---- */

typedef struct Pages {
        size_t n_msgs;
        VmmMessage *msgs;
        size_t n_items;
        const msgpack_object **items;
} Pages;

static void pages_done(Pages *pg) {
        for (size_t i = 0; i < pg->n_msgs; i++)
                vmm_message_release(&pg->msgs[i]);
        free(pg->msgs);
        free(pg->items);
        *pg = (Pages) { 0 };
}

static int pages_collect(Pages *pg, const msgpack_object *a) {
        const msgpack_object **items;

        if (!a || a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size == 0)
                return 0;
        items = realloc(pg->items, (pg->n_items + a->via.array.size) * sizeof(*items));
        if (!items)
                return -ENOMEM;
        pg->items = items;
        for (uint32_t i = 0; i < a->via.array.size; i++)
                items[pg->n_items++] = &a->via.array.ptr[i];
        return 0;
}

/* Fetches every page of a list method (following "next") and gathers the
 * items under key. */
static int fetch_all(Ctx *ctx, const char *method, Params *p, const char *key, Pages *pg) {
        for (;;) {
                VmmMessage *msgs = realloc(pg->msgs, (pg->n_msgs + 1) * sizeof(VmmMessage));
                const msgpack_object *next;
                uint64_t u;
                int r;

                if (!msgs)
                        return local_error(method, -ENOMEM);
                pg->msgs = msgs;
                msgs[pg->n_msgs] = (VmmMessage) { 0 };
                r = rpc(ctx, method, p, -1, default_timeout(), &msgs[pg->n_msgs]);
                pg->n_msgs++;
                if (r != 0)
                        return r;
                const msgpack_object *result = &msgs[pg->n_msgs - 1].result;
                if (pages_collect(pg, vmm_object_get(result, key)) < 0)
                        return local_error(method, -ENOMEM);

                next = vmm_object_get(result, "next");
                if (next && next->type == MSGPACK_OBJECT_STR) {
                        char *after = vmm_object_strdup(next);
                        if (!after)
                                return local_error(method, -ENOMEM);
                        if (p->after_str && strcmp(p->after_str, after) == 0) {
                                free(after);    /* no progress: stop rather than loop */
                                return 0;
                        }
                        free(p->after_str);
                        p->after_str = after;
                } else if (vmm_object_uint(next, &u)) {
                        if (p->has_after_uint && p->after_uint == u)
                                return 0;
                        p->has_after_uint = true;
                        p->after_uint = u;
                } else
                        return 0;
        }
}

static void print_json_list(const char *key, const Pages *pg) {
        printf("{\"%s\":[", key);
        for (size_t i = 0; i < pg->n_items; i++) {
                if (i > 0)
                        putchar(',');
                (void) vmm_json_print(stdout, pg->items[i], 0);
        }
        printf("]}\n");
}

/* ---- human output ---- */

static int table_finish(Table *t) {
        int r = table_print(t, stdout, use_color());
        table_done(t);
        return r < 0 ? local_error("output", r) : 0;
}

static int print_vm_table(const Pages *pg) {
        static const char *const header[] = {
                "VM_ID", "RAM", "CPU", "DISKS", "CONNECTED", "AUTHORIZED", "LAST_SEEN",
        };
        Table t = { .n_cols = ELEMENTSOF(header) };
        int r = table_add_row(&t, header);

        for (size_t i = 0; r >= 0 && i < pg->n_items; i++) {
                const msgpack_object *vm = pg->items[i];
                char id[128], ram[32], cpu[32], conn[8], authz[8], seen[64];
                _cleanup_free_ char *disks = fmt_disks(vmm_object_get(vm, "disks"), ",");
                fmt_scalar(vmm_object_get(vm, "vm_id"), id, sizeof(id));
                fmt_scalar(vmm_object_get(vm, "ram"), ram, sizeof(ram));
                fmt_scalar(vmm_object_get(vm, "cpu"), cpu, sizeof(cpu));
                fmt_scalar(vmm_object_get(vm, "connected"), conn, sizeof(conn));
                fmt_scalar(vmm_object_get(vm, "authorized"), authz, sizeof(authz));
                fmt_time(vmm_object_get(vm, "last_seen_at"), seen, sizeof(seen));
                const char *row[] = { id, ram, cpu, disks ? disks : "?", conn, authz, seen };
                r = table_add_row(&t, row);
        }
        if (r < 0) {
                table_done(&t);
                return local_error("output", r);
        }
        return table_finish(&t);
}

static int print_disk_table(const Pages *pg) {
        static const char *const header[] = { "DISK", "SIZE", "VM" };
        Table t = { .n_cols = ELEMENTSOF(header) };
        int r = table_add_row(&t, header);

        for (size_t i = 0; r >= 0 && i < pg->n_items; i++) {
                char id[128], size[32], vm[128];
                fmt_scalar(vmm_object_get(pg->items[i], "id"), id, sizeof(id));
                fmt_scalar(vmm_object_get(pg->items[i], "size"), size, sizeof(size));
                fmt_scalar(vmm_object_get(pg->items[i], "vm_id"), vm, sizeof(vm));
                const char *row[] = { id, size, vm };
                r = table_add_row(&t, row);
        }
        if (r < 0) {
                table_done(&t);
                return local_error("output", r);
        }
        return table_finish(&t);
}

static int print_session_table(const Pages *pg) {
        static const char *const header[] = { "ID", "VM", "CREATED", "EXPIRES", "CONNECTED" };
        Table t = { .n_cols = ELEMENTSOF(header) };
        int r = table_add_row(&t, header);

        for (size_t i = 0; r >= 0 && i < pg->n_items; i++) {
                const msgpack_object *s = pg->items[i];
                char id[128], vm[128], created[64], expires[64], conn[8];
                fmt_scalar(vmm_object_get(s, "id"), id, sizeof(id));
                fmt_scalar(vmm_object_get(s, "vm_id"), vm, sizeof(vm));
                fmt_time(vmm_object_get(s, "created_at"), created, sizeof(created));
                fmt_time(vmm_object_get(s, "expires_at"), expires, sizeof(expires));
                fmt_scalar(vmm_object_get(s, "connected"), conn, sizeof(conn));
                const char *row[] = { id, vm, created, expires, conn };
                r = table_add_row(&t, row);
        }
        if (r < 0) {
                table_done(&t);
                return local_error("output", r);
        }
        return table_finish(&t);
}

static int print_conn_table(const Pages *pg) {
        static const char *const header[] = { "ID", "PEER", "VM", "SINCE", "REQUESTS" };
        Table t = { .n_cols = ELEMENTSOF(header) };
        int r = table_add_row(&t, header);

        for (size_t i = 0; r >= 0 && i < pg->n_items; i++) {
                const msgpack_object *c = pg->items[i];
                char id[32], peer[160], vm[128], since[64], reqs[32];
                fmt_scalar(vmm_object_get(c, "id"), id, sizeof(id));
                fmt_scalar(vmm_object_get(c, "peer"), peer, sizeof(peer));
                fmt_scalar(vmm_object_get(c, "vm_id"), vm, sizeof(vm));
                fmt_time(vmm_object_get(c, "since"), since, sizeof(since));
                fmt_scalar(vmm_object_get(c, "requests"), reqs, sizeof(reqs));
                const char *row[] = { id, peer, vm, since, reqs };
                r = table_add_row(&t, row);
        }
        if (r < 0) {
                table_done(&t);
                return local_error("output", r);
        }
        return table_finish(&t);
}

/* "label:" padded to width, then the value. */
static void print_field(int indent, const char *label, size_t label_len, const char *value) {
        int pad = 16 - indent - (int) MIN(label_len, (size_t) 64);

        printf("%*s%.*s:%*s %s\n", indent, "", (int) MIN(label_len, (size_t) 64), label,
               MAX(pad, 0), "", value);
}

static bool key_is_time(const char *k, size_t n) {
        return (n > 3 && memcmp(k + n - 3, "_at", 3) == 0) || streq_n(k, n, "time") ||
               streq_n(k, n, "since");
}

/* A map as "key: value" lines: times in local time, uptime as a duration,
 * maps nested, anything else that is not a scalar as JSON. */
static void print_map(const msgpack_object *o, int indent) {
        if (!o || o->type != MSGPACK_OBJECT_MAP)
                return;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
                const msgpack_object *k = &o->via.map.ptr[i].key;
                const msgpack_object *v = &o->via.map.ptr[i].val;
                char buf[512];
                uint64_t u;

                if (k->type != MSGPACK_OBJECT_STR)
                        continue;
                const char *key = k->via.str.ptr;
                size_t n = k->via.str.size;
                if (v->type == MSGPACK_OBJECT_MAP) {
                        printf("%*s%.*s:\n", indent, "", (int) MIN(n, (size_t) 64), key);
                        print_map(v, indent + 2);
                        continue;
                }
                if (streq_n(key, n, "uptime_ms") && vmm_object_uint(v, &u)) {
                        fmt_duration(u, buf, sizeof(buf));
                        print_field(indent, "uptime", 6, buf);
                        continue;
                }
                if (v->type == MSGPACK_OBJECT_ARRAY) {
                        char *text = NULL;
                        size_t len = 0;
                        FILE *f = open_memstream(&text, &len);
                        if (!f)
                                continue;
                        (void) vmm_json_print(f, v, 0);
                        if (fclose(f) == 0)
                                print_field(indent, key, n, text);
                        free(text);
                        continue;
                }
                if (key_is_time(key, n))
                        fmt_time(v, buf, sizeof(buf));
                else
                        fmt_scalar(v, buf, sizeof(buf));
                print_field(indent, key, n, buf);
        }
}

/* "disk1 100 GiB, disk2 200 GiB"; "-" when none. */
static char *format_vm_disks(const msgpack_object *disks) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        uint32_t n = disks && disks->type == MSGPACK_OBJECT_ARRAY ? disks->via.array.size : 0;

        if (!f)
                return NULL;
        for (uint32_t i = 0; i < n; i++) {
                char id[256], size[32];
                fmt_scalar(vmm_object_get(&disks->via.array.ptr[i], "id"), id, sizeof(id));
                fmt_scalar(vmm_object_get(&disks->via.array.ptr[i], "size"), size, sizeof(size));
                fprintf(f, "%s%s %s GiB", i > 0 ? ", " : "", id, size);
        }
        if (n == 0)
                fputs("-", f);
        if (fclose(f) != 0) {
                free(text);
                return NULL;
        }
        return text;
}

static void print_vm(const msgpack_object *vm) {
        static const char *const fields[] = {
                "vm_id", "ram", "cpu", "disks", "registered_at", "updated_at",
                "last_seen_at", "connected", "authorized",
        };
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                const msgpack_object *v = vmm_object_get(vm, fields[i]);
                _cleanup_free_ char *disks = NULL;
                char buf[512];
                const char *text = buf;

                if (strcmp(fields[i], "disks") == 0)
                        text = disks = format_vm_disks(v);
                else if (strstr(fields[i], "_at"))
                        fmt_time(v, buf, sizeof(buf));
                else if (strcmp(fields[i], "ram") == 0 && v && v->type != MSGPACK_OBJECT_NIL) {
                        char n[32];
                        fmt_scalar(v, n, sizeof(n));
                        (void) snprintf(buf, sizeof(buf), "%s MiB", n);
                } else
                        fmt_scalar(v, buf, sizeof(buf));
                print_field(0, fields[i], strlen(fields[i]), text ? text : "?");
        }
}

/* ---- commands ---- */

typedef struct Command Command;
struct Command {
        const char *name;
        int (*run)(Ctx *ctx, const Command *cmd, int argc, char **argv);
        const char *synopsis;
        const char *summary;
        const char *help;
};

static const Command *find_command(const char *name);
static int print_command_help(const Command *cmd);
static void print_main_help(void);

enum {
        OPT_NO_COLOR = 0x100,
        OPT_TIMEOUT,
        OPT_PASSWORD_STDIN,
        OPT_SESSION,
        OPT_LIMIT,
};

static const struct option command_options[] = {
        { "help",           no_argument,       NULL, 'h' },
        { "json",           no_argument,       NULL, 'j' },
        { "socket",         required_argument, NULL, 's' },
        { "no-color",       no_argument,       NULL, OPT_NO_COLOR },
        { "timeout",        required_argument, NULL, OPT_TIMEOUT },
        { "password-stdin", no_argument,       NULL, OPT_PASSWORD_STDIN },
        { "session",        required_argument, NULL, OPT_SESSION },
        { "limit",          required_argument, NULL, OPT_LIMIT },
        { 0 }
};

#define TAKES_PASSWORD (1u << 0)
#define TAKES_SESSION  (1u << 1)
#define TAKES_LIMIT    (1u << 2)

typedef struct Parsed {
        bool password_stdin;
        uint64_t limit;
        const char *session;
        char **args;
        int n_args;
} Parsed;

static int set_timeout(const char *s) {
        uint64_t v;

        if (parse_uint(s, 86400, &v) < 0)
                return usage_error("--timeout wants seconds, 0-86400 (0 waits forever): '%s'",
                                   s);
        arg_timeout_ms = v == 0 ? -1 : (int) (v * 1000);
        return 0;
}

/* Returns GO_ON, or an exit status (also 0 after --help). */
static int parse_command(const Command *cmd, unsigned takes, int min_args, int max_args,
                         int argc, char **argv, Parsed *ret) {
        int c;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":hjs:", command_options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        return print_command_help(cmd);
                case 'j':
                        arg_json = true;
                        break;
                case 's':
                        arg_socket = optarg;
                        break;
                case OPT_NO_COLOR:
                        arg_no_color = true;
                        break;
                case OPT_TIMEOUT:
                        if (set_timeout(optarg) != 0)
                                return EXIT_USAGE;
                        break;
                case OPT_PASSWORD_STDIN:
                        if (!(takes & TAKES_PASSWORD))
                                return usage_error("%s: option '--password-stdin' does not "
                                                   "apply", cmd->name);
                        ret->password_stdin = true;
                        break;
                case OPT_SESSION:
                        if (!(takes & TAKES_SESSION))
                                return usage_error("%s: option '--session' does not apply",
                                                   cmd->name);
                        ret->session = optarg;
                        break;
                case OPT_LIMIT:
                        if (!(takes & TAKES_LIMIT))
                                return usage_error("%s: option '--limit' does not apply",
                                                   cmd->name);
                        if (parse_uint(optarg, VMM_PAGE_MAX, &ret->limit) < 0 ||
                            ret->limit < VMM_PAGE_MIN)
                                return usage_error("%s: --limit wants a page size, %d-%d: '%s'",
                                                   cmd->name, VMM_PAGE_MIN, VMM_PAGE_MAX,
                                                   optarg);
                        break;
                case ':':
                        return usage_error("%s: option '%s' needs a value", cmd->name,
                                           argv[optind - 1]);
                default:
                        return usage_error("%s: unknown option '%s'", cmd->name,
                                           argv[optind - 1]);
                }
        }
        ret->args = argv + optind;
        ret->n_args = argc - optind;
        if (ret->n_args < min_args)
                return usage_error("%s: missing argument; usage: vmadm %s %s", cmd->name,
                                   cmd->name, cmd->synopsis);
        if (ret->n_args > max_args)
                return usage_error("%s: unexpected argument '%s'", cmd->name,
                                   ret->args[max_args]);
        return GO_ON;
}

/* Calls method and prints the result as JSON or with human(). */
static int run_simple(Ctx *ctx, const char *method, const Params *p,
                      void (*human)(const msgpack_object *result, const Params *p)) {
        VmmMessage m = { 0 };
        int r = rpc(ctx, method, p, -1, default_timeout(), &m);

        if (r == 0) {
                if (arg_json)
                        print_json(&m.result);
                else if (human)
                        human(&m.result, p);
        }
        vmm_message_release(&m);
        return r;
}

static int run_list(Ctx *ctx, const char *method, Params *p, const char *key,
                    int (*table)(const Pages *pg)) {
        _cleanup_(pages_done) Pages pg = { 0 };
        int r = fetch_all(ctx, method, p, key, &pg);

        free(p->after_str);
        p->after_str = NULL;
        if (r != 0)
                return r;
        if (arg_json) {
                print_json_list(key, &pg);
                return 0;
        }
        return table(&pg);
}

static int read_password_stdin(char **ret) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, stdin);

        if (n < 0) {
                free(line);
                fprintf(stderr, "vmadm: --password-stdin: no password on stdin\n");
                return EXIT_LOCAL;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
        if (n == 0) {
                erase_and_free(line);
                fprintf(stderr, "vmadm: --password-stdin: the password line is empty\n");
                return EXIT_USAGE;
        }
        *ret = line;
        return 0;
}

static void human_status(const msgpack_object *o, const Params *p) {
        print_map(o, 0);
}

static void human_vm(const msgpack_object *o, const Params *p) {
        print_vm(o);
}

static void human_created(const msgpack_object *o, const Params *p) {
        char vm[128], pw[VMM_PASSWORD_MAX + 1];

        fmt_scalar(vmm_object_get(o, "vm_id"), vm, sizeof(vm));
        fmt_scalar(vmm_object_get(o, "password"), pw, sizeof(pw));
        printf("created VM %s\npassword: %s\n", vm, pw);
        explicit_bzero(pw, sizeof(pw));
}

static void human_passwd(const msgpack_object *o, const Params *p) {
        char vm[128], pw[VMM_PASSWORD_MAX + 1];

        fmt_scalar(vmm_object_get(o, "vm_id"), vm, sizeof(vm));
        fmt_scalar(vmm_object_get(o, "password"), pw, sizeof(pw));
        printf("new password for VM %s (its sessions ended)\npassword: %s\n", vm, pw);
        explicit_bzero(pw, sizeof(pw));
}

static void human_deleted(const msgpack_object *o, const Params *p) {
        printf("deleted VM %s\n", p->vm_id);
}

static void human_revoked(const msgpack_object *o, const Params *p) {
        uint64_t n = 0;

        (void) vmm_object_uint(vmm_object_get(o, "revoked"), &n);
        printf("revoked %" PRIu64 " session%s\n", n, n == 1 ? "" : "s");
}

static void human_kicked(const msgpack_object *o, const Params *p) {
        printf("closed connection %" PRIu64 "\n", p->id_uint);
}

static void human_shutdown(const msgpack_object *o, const Params *p) {
        puts("vmmd is shutting down");
}

static int cmd_status(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        return run_simple(ctx, VMM_M_STATUS, NULL, human_status);
}

static int cmd_list(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .filter = "all" };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 1, argc, argv, &a);

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
        return run_list(ctx, VMM_M_VM_LIST, &p, "vms", print_vm_table);
}

static int cmd_show(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        return run_simple(ctx, VMM_M_VM_GET, &p, human_vm);
}

static int cmd_disks(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        return run_list(ctx, VMM_M_DISK_LIST, &p, "disks", print_disk_table);
}

static int cmd_create(Ctx *ctx, const Command *cmd, int argc, char **argv) {
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

static int cmd_delete(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        Params p = { .vm_id = a.args[0] };
        return run_simple(ctx, VMM_M_VM_DELETE, &p, human_deleted);
}

static int cmd_passwd(Ctx *ctx, const Command *cmd, int argc, char **argv) {
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

static int cmd_sessions(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        if (a.n_args == 1)
                p.vm_id = a.args[0];
        return run_list(ctx, VMM_M_SESSION_LIST, &p, "sessions", print_session_table);
}

static int cmd_revoke(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_SESSION, 0, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if ((a.n_args == 1) == (a.session != NULL))
                return usage_error("revoke: give either a VM or --session ID");
        if (a.session)
                p.id_str = a.session;
        else
                p.vm_id = a.args[0];
        return run_simple(ctx, VMM_M_SESSION_REVOKE, &p, human_revoked);
}

static int cmd_clients(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        return run_list(ctx, VMM_M_CONN_LIST, &p, "connections", print_conn_table);
}

static int cmd_kick(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { .has_id_uint = true };
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (parse_uint(a.args[0], UINT64_MAX, &p.id_uint) < 0)
                return usage_error("kick: a connection id is a number (see 'vmadm clients'), "
                                   "not '%s'", a.args[0]);
        return run_simple(ctx, VMM_M_CONN_KILL, &p, human_kicked);
}

static int cmd_shutdown(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        return run_simple(ctx, VMM_M_SHUTDOWN, NULL, human_shutdown);
}

/* ---- backup ---- */

/* The daemon made the copy's bytes durable before answering; a file created
 * here also needs its name to be, which only an fsync of the directory that
 * holds it gives (POSIX). Anything but a regular file has nothing to sync. */
static int sync_parent(const char *path, int fd) {
        _cleanup_free_ char *copy = strdup(path);
        _cleanup_close_ int dfd = -1;
        struct stat st;
        char *slash;

        if (!copy)
                return -ENOMEM;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return 0;
        slash = strrchr(copy, '/');
        if (!slash)
                dfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        else {
                slash[slash == copy ? 1 : 0] = '\0';
                dfd = open(copy, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        }
        if (dfd < 0)
                return -errno;
        if (fsync(dfd) < 0 && errno != EINVAL && errno != EROFS)
                return -errno;
        return 0;
}

static int cmd_backup(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        _cleanup_close_ int fd = -1;
        uint64_t bytes = 0;
        int r = parse_command(cmd, 0, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        /* connect first: no file is created or truncated when the daemon is away */
        r = ctx_connect(ctx, arg_timeout_ms != 0 ? arg_timeout_ms : -1);
        if (r != 0)
                return r;
        fd = open(a.args[0], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0) {
                fprintf(stderr, "vmadm: cannot open %s: %s\n", a.args[0], strerror(errno));
                return EXIT_LOCAL;
        }
        r = rpc(ctx, VMM_M_BACKUP, NULL, fd, arg_timeout_ms != 0 ? arg_timeout_ms : -1, &m);
        if (r == 0) {
                int q = fsync(fd) < 0 && errno != EINVAL ? -errno : sync_parent(a.args[0], fd);

                (void) vmm_object_uint(vmm_object_get(&m.result, "bytes"), &bytes);
                if (q < 0) {
                        fprintf(stderr, "vmadm: cannot sync %s: %s\n", a.args[0], strerror(-q));
                        r = EXIT_LOCAL;
                } else if (arg_json)
                        print_json(&m.result);
                else
                        printf("wrote %" PRIu64 " bytes to %s\n", bytes, a.args[0]);
        }
        vmm_message_release(&m);
        return r;
}

/* ---- watch ---- */

static void on_signal(int sig) {
        interrupted = 1;
}

static void print_value_quoted(const msgpack_object *v) {
        char buf[512];
        bool quote;

        if (v->type == MSGPACK_OBJECT_MAP || v->type == MSGPACK_OBJECT_ARRAY) {
                (void) vmm_json_print(stdout, v, 0);
                return;
        }
        fmt_scalar(v, buf, sizeof(buf));
        quote = buf[0] == '\0';
        for (const char *c = buf; *c && !quote; c++)
                quote = *c == ' ' || *c == '"' || *c == '=' || (unsigned char) *c < 0x20;
        if (!quote) {
                fputs(buf, stdout);
                return;
        }
        putchar('"');
        for (const char *c = buf; *c; c++) {
                if (*c == '"' || *c == '\\')
                        printf("\\%c", *c);
                else if ((unsigned char) *c < 0x20)
                        printf("\\x%02x", (unsigned) (unsigned char) *c);
                else
                        putchar(*c);
        }
        putchar('"');
}

/* "TIME TYPE key=value ..." */
static void print_event_line(const msgpack_object *ev) {
        char t[64], type[64];

        fmt_time(vmm_object_get(ev, "time"), t, sizeof(t));
        fmt_scalar(vmm_object_get(ev, "type"), type, sizeof(type));
        printf("%s %s", t, type);
        for (uint32_t i = 0; ev->type == MSGPACK_OBJECT_MAP && i < ev->via.map.size; i++) {
                const msgpack_object *k = &ev->via.map.ptr[i].key;
                if (k->type != MSGPACK_OBJECT_STR ||
                    streq_n(k->via.str.ptr, k->via.str.size, "type") ||
                    streq_n(k->via.str.ptr, k->via.str.size, "time") ||
                    streq_n(k->via.str.ptr, k->via.str.size, "seq"))
                        continue;
                printf(" %.*s=", (int) MIN(k->via.str.size, 64u), k->via.str.ptr);
                print_value_quoted(&ev->via.map.ptr[i].val);
        }
        putchar('\n');
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
                        r = report_daemon_error(ctx, &m);
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

static int cmd_watch(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        struct sigaction sa = { .sa_handler = on_signal }, old_int, old_term;
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = rpc(ctx, VMM_M_EVENTS_WATCH, NULL, -1, default_timeout(), &m);
        vmm_message_release(&m);
        if (r != 0)
                return r;
        if (!arg_json && isatty(STDOUT_FILENO))
                fprintf(stderr, "Watching events of %s; Ctrl-C stops.\n", ctx->path);
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

/* ---- console ---- */

static const char console_help[] =
        "Commands (case does not matter):\n"
        "  status                       daemon status\n"
        "  list [connected|authorized|all]\n"
        "  show VM\n"
        "  disks\n"
        "  create VM [--password-stdin] (prints the password)\n"
        "  delete VM\n"
        "  passwd VM [--password-stdin]\n"
        "  sessions [VM]\n"
        "  revoke VM | revoke --session ID\n"
        "  clients\n"
        "  kick CONN\n"
        "  watch                        (Ctrl-C returns to the console)\n"
        "  backup FILE\n"
        "  shutdown\n"
        "Seed server-console commands:\n"
        "  LIST_CONNECTED  LIST_AUTHORIZED  LIST_ALL  LIST_DISKS\n"
        "  HELP [COMMAND]  EXIT (or end of input)\n";

static int console_line(Ctx *ctx, char *line, bool *ret_exit) {
        static const struct {
                const char *seed;
                const char *command;
                const char *arg;
        } seeds[] = {
                { "LIST_CONNECTED",  "list",  "connected" },
                { "LIST_AUTHORIZED", "list",  "authorized" },
                { "LIST_ALL",        "list",  "all" },
                { "LIST_DISKS",      "disks", NULL },
        };
        char *words[64];
        char name[32];
        int n = 0;

        for (char *save = NULL, *w = strtok_r(line, " \t\r\n", &save); w;
             w = strtok_r(NULL, " \t\r\n", &save)) {
                if (n == (int) ELEMENTSOF(words) - 1) {
                        fprintf(stderr, "vmadm: too many words\n");
                        return EXIT_USAGE;
                }
                words[n++] = w;
        }
        words[n] = NULL;
        if (n == 0 || words[0][0] == '#')
                return 0;

        if (strcasecmp(words[0], "EXIT") == 0 || strcasecmp(words[0], "QUIT") == 0) {
                *ret_exit = true;
                return 0;
        }
        if (strcasecmp(words[0], "HELP") == 0 && n == 1) {
                fputs(console_help, stdout);
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(seeds); i++) {
                if (strcasecmp(words[0], seeds[i].seed) != 0)
                        continue;
                if (n > 1) {
                        fprintf(stderr, "vmadm: %s takes no arguments\n", seeds[i].seed);
                        return EXIT_USAGE;
                }
                char cmd_name[16], arg[16];
                char *argv[] = { cmd_name, seeds[i].arg ? arg : NULL, NULL };
                (void) snprintf(cmd_name, sizeof(cmd_name), "%s", seeds[i].command);
                (void) snprintf(arg, sizeof(arg), "%s", seeds[i].arg ? seeds[i].arg : "");
                const Command *cmd = find_command(cmd_name);
                return cmd->run(ctx, cmd, seeds[i].arg ? 2 : 1, argv);
        }

        (void) snprintf(name, sizeof(name), "%s", words[0]);
        for (char *c = name; *c; c++)
                *c = (char) tolower((unsigned char) *c);
        const Command *cmd = find_command(name);
        if (!cmd || strcmp(cmd->name, "console") == 0) {
                fprintf(stderr, "vmadm: unknown command '%s' (try HELP)\n", words[0]);
                return EXIT_USAGE;
        }
        words[0] = (char *) cmd->name;
        return cmd->run(ctx, cmd, n, words);
}

static int cmd_console(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        bool tty = isatty(STDIN_FILENO), done = false;
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        /* fail early when the daemon is not there */
        r = ctx_connect(ctx, default_timeout());
        if (r != 0)
                return r;
        ctx->console = true;

        const char *saved_socket = arg_socket;
        bool saved_json = arg_json, saved_no_color = arg_no_color;
        int saved_timeout = arg_timeout_ms;
        while (!done) {
                if (tty) {
                        fputs("vmadm> ", stdout);
                        fflush(stdout);
                }
                if (getline(&line, &cap, stdin) < 0) {
                        if (tty)
                                putchar('\n');
                        break;
                }
                (void) console_line(ctx, line, &done);
                /* options given on one line apply to that line only */
                if (arg_socket != saved_socket) {
                        ctx_drop(ctx);
                        ctx->path[0] = '\0';
                }
                arg_socket = saved_socket;
                arg_json = saved_json;
                arg_no_color = saved_no_color;
                arg_timeout_ms = saved_timeout;
                fflush(stdout);
        }
        return 0;
}

static int cmd_help(Ctx *ctx, const Command *cmd, int argc, char **argv);

static const Command commands[] = {
        { "status", cmd_status, "",
          "show the daemon's status",
          "Show the daemon's version, uptime, counts of VMs, disks, sessions and\n"
          "connections, requests served, and the database's path and size." },
        { "list", cmd_list, "[connected|authorized|all] [--limit N]",
          "list VMs",
          "List VMs by id (all of them unless a filter is given): connected ones hold\n"
          "an open connection, authorized ones an unexpired session. RAM is in MiB,\n"
          "disk sizes in GiB. Every page is fetched; --limit sets the page size\n"
          "(lists only)." },
        { "show", cmd_show, "VM",
          "show one VM",
          "Show one VM's record." },
        { "disks", cmd_disks, "[--limit N]",
          "list all disks",
          "List every disk (size in GiB) with its VM, by disk id." },
        { "create", cmd_create, "VM [--password-stdin]",
          "provision a VM's credentials",
          "Create credentials for VM, which then logs in and describes itself. The\n"
          "password is generated unless --password-stdin reads it from the first line\n"
          "of stdin; it is printed once, as 'password: PASSWORD'." },
        { "delete", cmd_delete, "VM",
          "delete a VM",
          "Delete VM, its disks and its sessions; its connections become anonymous\n"
          "at once." },
        { "passwd", cmd_passwd, "VM [--password-stdin]",
          "set a new password for a VM",
          "Set VM's password (generated unless --password-stdin gives one) and end its\n"
          "sessions. The password is printed once, as 'password: PASSWORD'." },
        { "sessions", cmd_sessions, "[VM] [--limit N]",
          "list sessions",
          "List the sessions (of one VM, or all), by id. The id is a public name of\n"
          "the session for 'revoke --session', never its token." },
        { "revoke", cmd_revoke, "VM | --session ID",
          "end sessions",
          "End every session of VM, or the one session ID. Their connections become\n"
          "anonymous at once." },
        { "clients", cmd_clients, "[--limit N]",
          "list client connections",
          "List the open TCP connections: id, peer address, the VM they are attached\n"
          "to, since when, and how many requests they sent." },
        { "kick", cmd_kick, "CONN",
          "close a client connection",
          "Close the connection with id CONN (see 'vmadm clients')." },
        { "watch", cmd_watch, "",
          "print events as they happen",
          "Print the daemon's events until interrupted: one line per event,\n"
          "'TIME TYPE key=value ...', or with --json one JSON object per line." },
        { "backup", cmd_backup, "FILE",
          "write a backup of the database",
          "Write a consistent, compacted copy of the database to FILE while the daemon\n"
          "keeps serving. FILE is created (mode 0600) or truncated by vmadm with the\n"
          "caller's permissions and handed to the daemon. Restore by starting vmmd on\n"
          "a state directory holding the copy as vmmd.mdb." },
        { "shutdown", cmd_shutdown, "",
          "stop the daemon",
          "Stop the daemon cleanly: requests already received are answered." },
        { "console", cmd_console, "",
          "interactive console",
          "Read commands from stdin, one per line, on one connection (prompt 'vmadm> '\n"
          "on a terminal). Takes the commands above and the seeds' server-console\n"
          "commands LIST_CONNECTED, LIST_AUTHORIZED, LIST_ALL, LIST_DISKS, HELP and\n"
          "EXIT, in any case. End of input ends it too." },
        { "help", cmd_help, "[COMMAND]",
          "show help",
          "Show help for vmadm or for one command." },
};

static const Command *find_command(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

static int print_command_help(const Command *cmd) {
        printf("Usage: vmadm [OPTIONS] %s%s%s\n\n%s\n", cmd->name, *cmd->synopsis ? " " : "",
               cmd->synopsis, cmd->help);
        return 0;
}

static void print_main_help(void) {
        printf("Usage: vmadm [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "The administrators' tool for vmmd, the VM inventory daemon, over its admin\n"
               "socket.\n"
               "\n"
               "Options (also accepted after COMMAND):\n"
               "  -s, --socket PATH    admin socket (env VMADM_SOCKET; default\n"
               "                       /run/vmmd/admin.sock for root, else\n"
               "                       $XDG_RUNTIME_DIR/vmmd/admin.sock)\n"
               "  -j, --json           print results as JSON\n"
               "      --no-color       no colour (also NO_COLOR, or not a terminal)\n"
               "      --timeout SECS   give up waiting after this (default 60; 0 never)\n"
               "  -h, --help           show this help\n"
               "  -V, --version        show the version\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                printf("  %-9s %s\n", commands[i].name, commands[i].summary);
        printf("\n'vmadm help COMMAND' or 'vmadm COMMAND --help' tells more.\n"
               "Exit status: 0 success, 1 daemon error, 2 usage error, 3 daemon not "
               "reachable,\n4 local error.\n");
}

static int cmd_help(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        const Command *c;
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 0, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (a.n_args == 0) {
                if (ctx->console)
                        fputs(console_help, stdout);
                else
                        print_main_help();
                return 0;
        }
        c = find_command(a.args[0]);
        if (!c) {
                char name[32];
                (void) snprintf(name, sizeof(name), "%s", a.args[0]);
                for (char *p = name; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
                c = find_command(name);
        }
        if (!c)
                return usage_error("unknown command '%s'", a.args[0]);
        return print_command_help(c);
}

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "help",     no_argument,       NULL, 'h' },
                { "version",  no_argument,       NULL, 'V' },
                { "socket",   required_argument, NULL, 's' },
                { "json",     no_argument,       NULL, 'j' },
                { "no-color", no_argument,       NULL, OPT_NO_COLOR },
                { "timeout",  required_argument, NULL, OPT_TIMEOUT },
                { 0 }
        };
        Ctx ctx = { 0 };
        const Command *cmd;
        int c, r;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:hVs:j", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        print_main_help();
                        return 0;
                case 'V':
                        printf("vmadm (vmmd) %s, protocol %d\n", VMMD_VERSION,
                               VMM_PROTOCOL_VERSION);
                        return 0;
                case 's':
                        arg_socket = optarg;
                        break;
                case 'j':
                        arg_json = true;
                        break;
                case OPT_NO_COLOR:
                        arg_no_color = true;
                        break;
                case OPT_TIMEOUT:
                        if (set_timeout(optarg) != 0)
                                return EXIT_USAGE;
                        break;
                case ':':
                        return usage_error("option '%s' needs a value", argv[optind - 1]);
                default:
                        return usage_error("unknown option '%s'", argv[optind - 1]);
                }
        }
        if (optind >= argc)
                return usage_error("no command given");
        cmd = find_command(argv[optind]);
        if (!cmd)
                return usage_error("unknown command '%s'", argv[optind]);
        r = cmd->run(&ctx, cmd, argc - optind, argv + optind);
        ctx_drop(&ctx);
        if (fflush(stdout) != 0 && r == 0) {
                fprintf(stderr, "vmadm: cannot write output: %s\n", strerror(errno));
                r = EXIT_LOCAL;
        }
        return r;
}
