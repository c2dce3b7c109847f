/* SPDX-License-Identifier: MIT */
/* vmadm: the commands about the daemon itself: status, sessions, revoke,
 * clients, kick, shutdown, reload, stats and backup. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shared/fs.h"
#include "tools/common/escape.h"
#include "tools/common/json.h"
#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

static int print_session_table(const Pages *pg) {
        static const Column cols[] = {
                { "ID", "id", COLUMN_TEXT },
                { "VM", "vm_id", COLUMN_TEXT },
                { "USER", "user", COLUMN_TEXT },
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
void print_map(const msgpack_object *o, int indent) {
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

static void human_status(const msgpack_object *o, const Params *p) {
        print_map(o, 0);
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

int cmd_status(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        return run_simple(ctx, VMM_M_STATUS, NULL, human_status);
}

int cmd_sessions(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT | TAKES(OPT_USER), 0, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        if (a.n_args == 1 && OPTVAL(&a, OPT_USER))
                return usage_error("sessions: give a VM or --user NAME, not both");
        if (a.n_args == 1)
                p.vm_id = a.args[0];
        if (OPTVAL(&a, OPT_USER))
                params_str(&p, "user", OPTVAL(&a, OPT_USER));
        return run_list(ctx, VMM_M_SESSION_LIST, &p, "sessions", print_session_table);
}

int cmd_revoke(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_SESSION | TAKES(OPT_USER), 0, 1, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if ((a.n_args == 1) + (a.session != NULL) + (OPTVAL(&a, OPT_USER) != NULL) != 1)
                return usage_error("revoke: give either a VM, --user NAME or --session ID");
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
        } else if (OPTVAL(&a, OPT_USER))
                params_str(&p, "user", OPTVAL(&a, OPT_USER));
        else
                p.vm_id = a.args[0];
        return run_simple(ctx, VMM_M_SESSION_REVOKE, &p, human_revoked);
}

int cmd_clients(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        Params p = { 0 };
        int r = parse_command(cmd, TAKES_LIMIT, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        p.limit = a.limit;
        return run_list(ctx, VMM_M_CONN_LIST, &p, "connections", print_conn_table);
}

int cmd_kick(Ctx *ctx, const Command *cmd, int argc, char **argv) {
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

int cmd_shutdown(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 0, 0, argc, argv, &a);

        if (r != GO_ON)
                return r;
        return run_simple(ctx, VMM_M_SHUTDOWN, NULL, human_shutdown);
}

int cmd_reload(Ctx *ctx, const Command *cmd, int argc, char **argv) {
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

int cmd_stats(Ctx *ctx, const Command *cmd, int argc, char **argv) {
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

int cmd_backup(Ctx *ctx, const Command *cmd, int argc, char **argv) {
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

