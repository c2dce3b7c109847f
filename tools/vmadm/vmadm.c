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
#include "shared/fs.h"
#include "shared/macro.h"
#include "tools/common/edit.h"
#include "tools/common/errors.h"
#include "tools/common/escape.h"
#include "tools/common/json.h"
#include "tools/common/output.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

#define EXIT_DAEMON      1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3
#define EXIT_LOCAL       4

#define DEFAULT_TIMEOUT_MS 60000
#define SYSTEM_SOCKET      "/run/vmmd/admin.sock"
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

static const Reporter *reporter(void) {
        static Reporter rep;

        rep = (Reporter) { .prefix = "vmadm: ", .text = stderr, .json = arg_json };
        return &rep;
}

_printf_(1, 2)
static int usage_error(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        report_errorv(reporter(), ERROR_USAGE, false, fmt, ap);
        va_end(ap);
        fputs("Try 'vmadm --help'.\n", stderr);
        return EXIT_USAGE;
}

static int local_error(const char *what, int r) {
        report_error(reporter(), ERROR_LOCAL, false, "%s: %s", what, strerror(-r));
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
        (void) json_print(stdout, o, 0);
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

/* The socket: --socket, $VMADM_SOCKET, /run/vmmd/admin.sock for root; for
 * anyone else (an admin group member) /run/vmmd/admin.sock when it exists
 * (the system's vmmd), else $XDG_RUNTIME_DIR/vmmd/admin.sock (a vmmd of
 * their own). */
static int ctx_resolve_path(Ctx *ctx) {
        const char *e;
        struct stat st;

        if (arg_socket && *arg_socket)
                e = arg_socket;
        else if ((e = getenv("VMADM_SOCKET")) && *e)
                ;
        else if (geteuid() == 0)
                e = SYSTEM_SOCKET;
        else if (stat(SYSTEM_SOCKET, &st) == 0 || errno == EACCES)
                e = SYSTEM_SOCKET;      /* there, even if its directory hides it from us */
        else if ((e = getenv("XDG_RUNTIME_DIR")) && *e == '/') {
                if ((size_t) snprintf(ctx->path, sizeof(ctx->path), "%s/vmmd/admin.sock", e) >=
                    sizeof(ctx->path))
                        return usage_error("XDG_RUNTIME_DIR is too long");
                return 0;
        } else {
                report_error(reporter(), ERROR_UNREACHABLE, false,
                             "no admin socket: %s does not exist and XDG_RUNTIME_DIR is not "
                             "set; is vmmd running? Give its socket with --socket PATH or "
                             "VMADM_SOCKET", SYSTEM_SOCKET);
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
                      "its admin group: join it, e.g. usermod -aG vmmd USER, and log in "
                      "again)";
                break;
        case ENOTSOCK:
                why = "not a socket";
                break;
        default:
                why = strerror(-r);
                break;
        }
        report_error(reporter(), ERROR_UNREACHABLE, false, "cannot connect to %s: %s", path,
                     why);
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
                report_error(reporter(), ERROR_UNREACHABLE, false,
                             "%s: the daemon closed the connection (stopped or restarted?)",
                             ctx->path);
        else if (r == -ETIMEDOUT)
                report_error(reporter(), ERROR_UNREACHABLE, false,
                             "%s: no answer from the daemon (see --timeout)", ctx->path);
        else
                report_error(reporter(), ERROR_UNREACHABLE, false, "%s: connection failed: %s",
                             ctx->path, strerror(-r));
        ctx_drop(ctx);
        return EXIT_UNREACHABLE;
}

/* What the daemon says, in terms of what an administrator types. */
static const ErrorText vmadm_texts[] = {
        { "bad_request", "^id: ",
          "a session id is 12 hex digits, as 'vmadm sessions' shows" },
        { "conflict", "backup",
          "a backup is already running; try again when it has finished" },
        { "unknown_method", NULL,
          "this vmmd does not know that command (it is older than vmadm)" },
        { NULL, NULL, NULL },
};

static int daemon_error(Ctx *ctx, const VmmMessage *m) {
        report_daemon_error(reporter(), vmadm_texts, m->error_code, m->error_message);
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
                return daemon_error(ctx, ret);
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
                (void) json_print(stdout, pg->items[i], 0);
        }
        printf("]}\n");
}

/* ---- human output ---- */

static int vm_table(const Pages *pg) {
        int r = print_vm_table(stdout, pg->items, pg->n_items, use_color(), "(no VMs)");
        return r < 0 ? local_error("output", r) : 0;
}

static int disk_table(const Pages *pg) {
        int r = print_disk_table(stdout, pg->items, pg->n_items, use_color(), "(no disks)");
        return r < 0 ? local_error("output", r) : 0;
}

static int print_session_table(const Pages *pg) {
        static const Column cols[] = {
                { "ID", "id", COLUMN_TEXT },
                { "VM", "vm_id", COLUMN_TEXT },
                { "CREATED", "created_at", COLUMN_TIME },
                { "EXPIRES", "expires_at", COLUMN_TIME },
                { "CONNECTED", "connected", COLUMN_TEXT },
        };
        int r = print_items(stdout, cols, ELEMENTSOF(cols), pg->items, pg->n_items, use_color(),
                            "(no sessions)");
        return r < 0 ? local_error("output", r) : 0;
}

static int print_conn_table(const Pages *pg) {
        static const Column cols[] = {
                { "ID", "id", COLUMN_TEXT },
                { "PEER", "peer", COLUMN_TEXT },
                { "VM", "vm_id", COLUMN_TEXT },
                { "SINCE", "since", COLUMN_TIME },
                { "REQUESTS", "requests", COLUMN_TEXT },
        };
        int r = print_items(stdout, cols, ELEMENTSOF(cols), pg->items, pg->n_items, use_color(),
                            "(no connections)");
        return r < 0 ? local_error("output", r) : 0;
}

static bool key_is_time(const char *k, size_t n) {
        return (n > 3 && memcmp(k + n - 3, "_at", 3) == 0) || streq_n(k, n, "time") ||
               streq_n(k, n, "since");
}

/* A map as "key: value" lines: times in UTC, uptime as a duration, sizes in
 * bytes with their unit, maps nested, anything else that is not a scalar as
 * JSON; the per-method figures are left to `vmadm stats`. */
static void print_map(const msgpack_object *o, int indent) {
        if (!o || o->type != MSGPACK_OBJECT_MAP)
                return;
        for (uint32_t i = 0; i < o->via.map.size; i++) {
                const msgpack_object *k = &o->via.map.ptr[i].key;
                const msgpack_object *v = &o->via.map.ptr[i].val;
                char buf[512], key[128];
                uint64_t u;

                if (k->type != MSGPACK_OBJECT_STR)
                        continue;
                size_t n = k->via.str.size;
                (void) text_escape_buf(k->via.str.ptr, n, 0, key, sizeof(key));
                if (indent == 0 && streq_n(k->via.str.ptr, n, "methods"))
                        continue;
                if (v->type == MSGPACK_OBJECT_MAP) {
                        printf("%*s%s:\n", indent, "", key);
                        print_map(v, indent + 2);
                        continue;
                }
                if (streq_n(k->via.str.ptr, n, "uptime_ms") && vmm_object_uint(v, &u)) {
                        fmt_duration(u, buf, sizeof(buf));
                        print_field(stdout, indent, "uptime", buf);
                        continue;
                }
                if (v->type == MSGPACK_OBJECT_ARRAY) {
                        char *text = NULL;
                        size_t len = 0;
                        FILE *f = open_memstream(&text, &len);
                        if (!f)
                                continue;
                        (void) json_print(f, v, 0);
                        if (fclose(f) == 0)
                                print_field(stdout, indent, key, text);
                        free(text);
                        continue;
                }
                if (key_is_time(k->via.str.ptr, n))
                        fmt_time(v, buf, sizeof(buf));
                else if (n > 6 && memcmp(k->via.str.ptr + n - 6, "_bytes", 6) == 0)
                        fmt_size(v, "bytes", buf, sizeof(buf));
                else
                        fmt_scalar(v, buf, sizeof(buf));
                print_field(stdout, indent, key, buf);
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
        OPT_FORCE,
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
        { "force",          no_argument,       NULL, OPT_FORCE },
        { 0 }
};

#define TAKES_PASSWORD (1u << 0)
#define TAKES_SESSION  (1u << 1)
#define TAKES_LIMIT    (1u << 2)
#define TAKES_FORCE    (1u << 3)

typedef struct Parsed {
        bool password_stdin;
        bool force;
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
                case OPT_FORCE:
                        if (!(takes & TAKES_FORCE))
                                return usage_error("%s: option '--force' does not apply",
                                                   cmd->name);
                        ret->force = true;
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
                report_error(reporter(), ERROR_LOCAL, false,
                             "--password-stdin: no password on stdin");
                return EXIT_LOCAL;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
        if (n == 0) {
                erase_and_free(line);
                report_error(reporter(), ERROR_USAGE, false,
                             "--password-stdin: the password line is empty");
                return EXIT_USAGE;
        }
        *ret = line;
        return 0;
}

static void human_status(const msgpack_object *o, const Params *p) {
        print_map(o, 0);
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
        return run_list(ctx, VMM_M_VM_LIST, &p, "vms", vm_table);
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
        return run_list(ctx, VMM_M_DISK_LIST, &p, "disks", disk_table);
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
        char sid[16];
        if (a.session) {
                size_t n = strlen(a.session);
                bool ok = n == 12;
                for (size_t i = 0; ok && i < n; i++)
                        ok = isxdigit((unsigned char) a.session[i]);
                if (!ok)
                        return usage_error("revoke: a session id is 12 hex digits, as 'vmadm "
                                           "sessions' shows, not '%s'", a.session);
                for (size_t i = 0; i <= n; i++)
                        sid[i] = (char) tolower((unsigned char) a.session[i]);
                p.id_str = sid;
        } else
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

static int cmd_reload(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = ctx_connect(ctx, default_timeout());
        if (r != 0)
                return r;
        /* rpc() would report a refusal as a daemon error; this one has its own words */
        r = vmm_client_begin(ctx->client, VMM_M_RELOAD, 0, NULL, NULL);
        if (r >= 0)
                r = vmm_call_end(ctx->client, &m);
        if (r < 0)
                return r == -ENOMEM ? local_error("reload", r) : report_lost(ctx, r);
        if (m.error == VMM_E_BAD_REQUEST && m.msgid != 0) {
                /* "FILE:LINE: message": the file was refused, the old settings stay */
                report_error(reporter(), m.error_code, false,
                             "vmmd kept its settings: %s", m.error_message);
                r = EXIT_DAEMON;
        } else if (m.error != VMM_OK)
                r = daemon_error(ctx, &m);
        else if (arg_json)
                print_json(&m.result);
        else
                puts("vmmd reloaded its configuration");
        vmm_message_release(&m);
        return r;
}

/* METHOD CALLS ERRORS P50 P99 from status' "methods", busiest first. */
static int stats_table(const msgpack_object *methods) {
        static const char *const header[] = { "METHOD", "CALLS", "ERRORS", "P50", "P99" };
        const uint32_t n = methods->via.map.size;
        _cleanup_free_ uint32_t *order = calloc(MAX(n, 1u), sizeof(uint32_t));
        Table t = { .n_cols = ELEMENTSOF(header) };
        int r;

        if (!order)
                return local_error("output", -ENOMEM);
        for (uint32_t i = 0; i < n; i++)
                order[i] = i;
        /* a few dozen methods at most: insertion sort by calls, descending */
        for (uint32_t i = 1; i < n; i++) {
                uint32_t k = order[i], j = i;
                uint64_t ck = 0, cj = 0;
                (void) vmm_object_uint(vmm_object_get(&methods->via.map.ptr[k].val, "calls"),
                                       &ck);
                for (; j > 0; j--) {
                        cj = 0;
                        (void) vmm_object_uint(vmm_object_get(
                                &methods->via.map.ptr[order[j - 1]].val, "calls"), &cj);
                        if (cj >= ck)
                                break;
                        order[j] = order[j - 1];
                }
                order[j] = k;
        }
        r = table_add_row(&t, header);
        for (uint32_t i = 0; r >= 0 && i < n; i++) {
                const msgpack_object *k = &methods->via.map.ptr[order[i]].key;
                const msgpack_object *v = &methods->via.map.ptr[order[i]].val;
                char name[128], calls[32], errs[32], p50[48], p99[48];
                fmt_scalar(k, name, sizeof(name));
                fmt_scalar(vmm_object_get(v, "calls"), calls, sizeof(calls));
                fmt_scalar(vmm_object_get(v, "errors"), errs, sizeof(errs));
                fmt_size(vmm_object_get(v, "p50_us"), "\xc2\xb5s", p50, sizeof(p50));
                fmt_size(vmm_object_get(v, "p99_us"), "\xc2\xb5s", p99, sizeof(p99));
                const char *row[] = { name, calls, errs, p50, p99 };
                r = table_add_row(&t, row);
        }
        if (r >= 0)
                r = table_print(&t, stdout, use_color());
        table_done(&t);
        return r < 0 ? local_error("output", r) : 0;
}

static int cmd_stats(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        r = rpc(ctx, VMM_M_STATUS, NULL, -1, default_timeout(), &m);
        if (r == 0) {
                const msgpack_object *methods = vmm_object_get(&m.result, "methods");
                if (!methods || methods->type != MSGPACK_OBJECT_MAP) {
                        report_error(reporter(), ERROR_LOCAL, false,
                                     "this vmmd does not count its requests by method (it is "
                                     "older than vmadm)");
                        r = EXIT_DAEMON;
                } else if (arg_json) {
                        fputs("{\"methods\":", stdout);
                        (void) json_print(stdout, methods, 0);
                        fputs("}\n", stdout);
                } else
                        r = stats_table(methods);
        }
        vmm_message_release(&m);
        return r;
}

/* ---- backup ---- */

/* The backup's file, made by vmadm with the caller's rights: never through a
 * symbolic link, never readable by others (it holds every password hash and
 * the token key). Without --force FILE must not exist; with it, the copy is
 * written to a new file beside FILE and renamed over it when complete, so an
 * existing regular file is replaced whole, and anything else is refused. */
typedef struct BackupFile {
        const char *path;
        char *tmp;              /* --force: the new file, renamed to path at the end */
        int fd;
} BackupFile;

static int backup_open(BackupFile *b, bool force) {
        struct stat st;

        if (!force) {
                b->fd = open(b->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
                             O_NOCTTY, 0600);
                if (b->fd >= 0)
                        return 0;
                if (errno == EEXIST)
                        report_error(reporter(), ERROR_LOCAL, false,
                                     "%s exists; give --force to replace it", b->path);
                else
                        report_error(reporter(), ERROR_LOCAL, false, "cannot create %s: %s",
                                     b->path, strerror(errno));
                return EXIT_LOCAL;
        }
        if (lstat(b->path, &st) == 0 && !S_ISREG(st.st_mode)) {
                report_error(reporter(), ERROR_LOCAL, false,
                             "%s is %s, not a regular file: not replacing it", b->path,
                             S_ISLNK(st.st_mode) ? "a symbolic link" : "something else");
                return EXIT_LOCAL;
        }
        if (asprintf(&b->tmp, "%s.XXXXXX", b->path) < 0) {
                b->tmp = NULL;
                return local_error("backup", -ENOMEM);
        }
        b->fd = mkostemp(b->tmp, O_CLOEXEC);        /* O_EXCL, mode 0600 */
        if (b->fd < 0) {
                report_error(reporter(), ERROR_LOCAL, false, "cannot create a file beside %s: %s",
                             b->path, strerror(errno));
                free(b->tmp);
                b->tmp = NULL;
                return EXIT_LOCAL;
        }
        return 0;
}

/* ok: keep the copy (sync it, rename it into place); else remove it. */
static int backup_close(BackupFile *b, bool ok) {
        int r = 0;

        if (b->fd < 0)
                return 0;
        if (ok && fsync(b->fd) < 0 && errno != EINVAL) {
                report_error(reporter(), ERROR_LOCAL, false, "cannot sync %s: %s", b->path,
                             strerror(errno));
                ok = false;
                r = EXIT_LOCAL;
        }
        (void) close(b->fd);
        b->fd = -1;
        if (ok && b->tmp && rename(b->tmp, b->path) < 0) {
                report_error(reporter(), ERROR_LOCAL, false, "cannot replace %s: %s", b->path,
                             strerror(errno));
                ok = false;
                r = EXIT_LOCAL;
        }
        /* a new name (a new file, or the rename over the old one) lasts a
         * power cut only once its directory is synced */
        if (ok) {
                int q = fsync_parent(b->path);
                if (q < 0 && q != -EINVAL && q != -EROFS) {
                        report_error(reporter(), ERROR_LOCAL, false,
                                     "cannot sync the directory of %s: %s", b->path,
                                     strerror(-q));
                        r = EXIT_LOCAL;
                }
        }
        if (!ok)
                (void) unlink(b->tmp ? b->tmp : b->path);
        free(b->tmp);
        b->tmp = NULL;
        return r;
}

static int cmd_backup(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        VmmMessage m = { 0 };
        uint64_t bytes = 0;
        int r = parse_command(cmd, TAKES_FORCE, 1, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        /* connect first: no file is created when the daemon is away */
        r = ctx_connect(ctx, arg_timeout_ms != 0 ? arg_timeout_ms : -1);
        if (r != 0)
                return r;
        BackupFile b = { .path = a.args[0], .fd = -1 };
        r = backup_open(&b, a.force);
        if (r != 0)
                return r;
        r = rpc(ctx, VMM_M_BACKUP, NULL, b.fd, arg_timeout_ms != 0 ? arg_timeout_ms : -1, &m);
        int q = backup_close(&b, r == 0);
        if (r == 0 && q != 0)
                r = q;
        if (r == 0) {
                (void) vmm_object_uint(vmm_object_get(&m.result, "bytes"), &bytes);
                if (arg_json)
                        print_json(&m.result);
                else {
                        printf("wrote %" PRIu64 " bytes to ", bytes);
                        fputs_escaped(stdout, a.args[0], strlen(a.args[0]), 0);
                        putchar('\n');
                }
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
                (void) json_print(stdout, v, 0);
                return;
        }
        /* escaped already (no control characters, backslashes doubled) */
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

/* "TIME TYPE key=value ..." */
static void print_event_line(const msgpack_object *ev) {
        char t[64], type[128], key[128];

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
                (void) text_escape_buf(k->via.str.ptr, k->via.str.size, 0, key, sizeof(key));
                printf(" %s=", key);
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
        "  backup FILE [--force]\n"
        "  shutdown\n"
        "  reload                       re-read the configuration file\n"
        "  stats                        requests per method\n"
        "Seed server-console commands:\n"
        "  LIST_CONNECTED  LIST_AUTHORIZED  LIST_ALL  LIST_DISKS\n"
        "  HELP [COMMAND]  EXIT (or end of input)\n"
        "On a terminal: line editing, history, TAB completes commands and VM ids.\n";

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

static const Command *command_list(size_t *ret_n);

/* One page of VM ids, when the console is connected; silent on failure. */
static void complete_vm_ids(Ctx *ctx, char ***v, size_t *n) {
        VmmMessage m = { 0 };
        Params p = { .filter = "all" };
        msgpack_packer *pk;

        if (!ctx->client)
                return;
        vmm_client_set_timeout(ctx->client, default_timeout());
        int r = vmm_client_begin_map(ctx->client, VMM_M_VM_LIST, params_count(&p), &pk, NULL);
        if (r >= 0 && params_pack(pk, &p) < 0) {
                vmm_client_cancel(ctx->client);
                r = -ENOMEM;
        }
        if (r >= 0)
                r = vmm_call_end(ctx->client, &m);
        if (r < 0) {
                if (r != -ENOMEM)
                        ctx_drop(ctx);
                return;
        }
        (void) strv_push_keys(v, n, vmm_object_get(&m.result, "vms"), "vm_id");
        vmm_message_release(&m);
}

static char **console_complete(void *userdata, const char *before, bool *ret_fold_case) {
        static const char *const seed_words[] = {
                "LIST_CONNECTED", "LIST_AUTHORIZED", "LIST_ALL", "LIST_DISKS", "HELP", "EXIT",
        };
        static const char *const takes_vm[] = { "show", "delete", "passwd", "sessions",
                                                 "revoke" };
        Ctx *ctx = userdata;
        char **v = NULL, first[32] = "";
        size_t n = 0, words = line_words(before, first, sizeof(first));

        if (words == 0 || (words == 1 && strcasecmp(first, "help") == 0)) {
                size_t n_commands;
                const Command *commands = command_list(&n_commands);
                *ret_fold_case = true;
                for (size_t i = 0; i < n_commands; i++)
                        if (strcmp(commands[i].name, "console") != 0)
                                (void) strv_push(&v, &n, commands[i].name);
                if (words == 0)
                        for (size_t i = 0; i < ELEMENTSOF(seed_words); i++)
                                (void) strv_push(&v, &n, seed_words[i]);
        } else if (words == 1) {
                for (size_t i = 0; i < ELEMENTSOF(takes_vm); i++)
                        if (strcasecmp(first, takes_vm[i]) == 0)
                                complete_vm_ids(ctx, &v, &n);
                if (strcasecmp(first, "list") == 0) {
                        (void) strv_push(&v, &n, "connected");
                        (void) strv_push(&v, &n, "authorized");
                        (void) strv_push(&v, &n, "all");
                }
        }
        return v;
}

static int cmd_console(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        LineEditor *le = NULL;
        bool done = false;
        char *line;
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        /* fail early when the daemon is not there */
        r = ctx_connect(ctx, default_timeout());
        if (r != 0)
                return r;
        ctx->console = true;
        r = line_editor_new("vmadm", "vmadm> ", "vmadm_history", &le);
        if (r < 0)
                return local_error("console", r);
        line_editor_set_completion(le, console_complete, ctx);

        const char *saved_socket = arg_socket;
        bool saved_json = arg_json, saved_no_color = arg_no_color;
        int saved_timeout = arg_timeout_ms;
        while (!done && (line = line_editor_read(le))) {
                line_editor_remember(le, line);
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
        line_editor_free(le);
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
        { "backup", cmd_backup, "FILE [--force]",
          "write a backup of the database",
          "Write a consistent, compacted copy of the database to FILE while the daemon\n"
          "keeps serving. vmadm creates FILE (mode 0600, never through a symbolic link)\n"
          "with the caller's permissions and hands it to the daemon; an existing FILE\n"
          "is replaced only with --force, and only when it is a regular file. Restore\n"
          "by starting vmmd on a state directory holding the copy as vmmd.mdb." },
        { "shutdown", cmd_shutdown, "",
          "stop the daemon",
          "Stop the daemon cleanly: requests already received are answered." },
        { "reload", cmd_reload, "",
          "re-read the configuration file",
          "Ask the daemon to read its configuration file again. Exit status 0 when the\n"
          "new settings apply; 1, with FILE:LINE and the reason, when the daemon refused\n"
          "the file and kept its settings. The unit's ExecReload= runs this." },
        { "stats", cmd_stats, "",
          "requests per method",
          "Show the daemon's figures per method since it started: calls, errors, and\n"
          "the median (P50) and 99th percentile (P99) time to answer, busiest first." },
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

static const Command *command_list(size_t *ret_n) {
        *ret_n = ELEMENTSOF(commands);
        return commands;
}

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
               "  -j, --json           print results (and errors) as JSON\n"
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
                report_error(reporter(), ERROR_LOCAL, false, "cannot write output: %s",
                             strerror(errno));
                r = EXIT_LOCAL;
        }
        return r;
}
