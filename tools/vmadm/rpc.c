/* SPDX-License-Identifier: MIT */
/* vmadm: the connection to the admin socket, calls and their parameters,
 * paged lists, and how errors are told (see vmadm.h). */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tools/common/json.h"
#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

/* ---- small helpers ---- */

void erase_and_free(char *s) {
        if (!s)
                return;
        explicit_bzero(s, strlen(s));
        free(s);
}

void erase_and_freep(char **s) {
        erase_and_free(*s);
}

const Reporter *reporter(void) {
        static Reporter rep;

        rep = (Reporter) { .prefix = "vmadm: ", .text = stderr, .json = arg_json };
        return &rep;
}

int usage_error(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        report_errorv(reporter(), ERROR_USAGE, false, fmt, ap);
        va_end(ap);
        fputs("Try 'vmadm --help'.\n", stderr);
        return EXIT_USAGE;
}

int local_error(const char *what, int r) {
        report_error(reporter(), ERROR_LOCAL, false, "%s: %s", what, strerror(-r));
        return EXIT_LOCAL;
}

int parse_uint(const char *s, uint64_t max, uint64_t *ret) {
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

bool use_color(void) {
        return output_color_enabled(stdout, arg_no_color);
}

void print_json(const msgpack_object *o) {
        (void) json_print(stdout, o, 0);
        putchar('\n');
}

int default_timeout(void) {
        if (arg_timeout_ms != 0)
                return arg_timeout_ms;
        return DEFAULT_TIMEOUT_MS;
}

int items_table(const Column *cols, size_t n_cols, const msgpack_object *const *items, size_t n,
                const char *empty_note) {
        int r = print_items(stdout, cols, n_cols, items, n, use_color(), empty_note);
        return r < 0 ? local_error("output", r) : 0;
}

/* ---- the connection ---- */

void ctx_drop(Ctx *ctx) {
        ctx->client = vmm_client_free(ctx->client);
}

/* The socket: --socket, $VMADM_SOCKET, /run/vmmd/admin.sock for root; for
 * anyone else (an admin or users group member) /run/vmmd/admin.sock when it
 * exists (the system's vmmd), else $XDG_RUNTIME_DIR/vmmd/admin.sock (a vmmd
 * of their own). */
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
                why = "permission denied (the admin socket serves root, vmmd's user, its admin "
                      "group and its users group: join one, e.g. usermod -aG vmmd USER, and "
                      "log in again)";
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

int ctx_connect(Ctx *ctx, int timeout_ms) {
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

int report_lost(Ctx *ctx, int r) {
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
        { "bad_request", "^vm_ids[",
          "a VM id is 1 to 48 letters, digits, '.', '_' or '-', starting with a letter or "
          "digit" },
        { "bad_request", "^user: ",
          "a user name is 1 to 64 letters, digits, '.', '_', '@', '+' or '-', starting with a "
          "letter or digit" },
        { "bad_request", "^owner: ",
          "an owner is a user name: 1 to 64 letters, digits, '.', '_', '@', '+' or '-', "
          "starting with a letter or digit" },
        { "bad_request", "^role: ",
          "a role is viewer, user or admin" },
        { "bad_request", "^hostname: ",
          "a host name is at most 253 bytes: labels of letters, digits and '-' joined by '.'" },
        { "bad_request", "^ip[",
          "an address is an IPv4 or IPv6 address as text (10.0.0.5, fd00::5)" },
        { "bad_request", "^os: ",
          "--os is NAME:VERSION, the name 1 to 64 bytes and the version at most 64, as text" },
        { "bad_request", "^description: ",
          "a description is at most 4096 bytes of text" },
        { "bad_request", "^reason: ",
          "a reason is 1 to 1024 bytes of text" },
        { "bad_request", "^types",
          "--types takes event type prefixes such as booking.,group. (text, at most 63 bytes "
          "each)" },
        { "too_large", "^types: at most",
          "--types takes at most 16 prefixes" },
        { "too_large", "^vm_ids: at most",
          "too many VMs in one command (at most 1000)" },
        { "too_large", "^ip: at most",
          "a VM has at most 16 addresses" },
        { "bad_request", "is not described yet: give ram and cpu together",
          "this VM has not described itself yet: give --ram and --cpu too" },
        { "forbidden", "needs the role admin",
          "only an administrator may do that" },
        { "forbidden", "needs the role user",
          "a viewer may only look; that needs the role user" },
        { "conflict", "backup",
          "a backup is already running; try again when it has finished" },
        { "unknown_method", NULL,
          "this vmmd does not know that command (it is older than vmadm)" },
        { NULL, NULL, NULL },
};

int daemon_error(Ctx *ctx, const VmmMessage *m) {
        const char *code = m->error_code && *m->error_code ? m->error_code : "unknown";
        const char *msg = m->error_message ? m->error_message : "";
        const char *text = ctx->texts ? error_text(ctx->texts, code, msg) : NULL;

        if (text)
                report_error(reporter(), code, true, "%s", text);
        else
                report_daemon_error(reporter(), vmadm_texts, code, msg);
        if (m->msgid == 0)
                ctx_drop(ctx);         /* the daemon refused the whole connection */
        return EXIT_DAEMON;
}

int call_result(Ctx *ctx, const char *method, int r, VmmMessage *m) {
        if (r == -ENOMEM || r == -EMSGSIZE || r == -EINVAL)
                return local_error(method, r);
        if (r < 0)
                return report_lost(ctx, r);
        if (m->error != VMM_OK)
                return daemon_error(ctx, m);
        return 0;
}

/* ---- request parameters ---- */

static Kv *params_add(Params *p, const char *key, KvKind kind) {
        assert(p->n_kv < PARAMS_KV_MAX);
        Kv *kv = &p->kv[p->n_kv++];
        *kv = (Kv) { .key = key, .kind = kind };
        return kv;
}

void params_str(Params *p, const char *key, const char *s) {
        params_add(p, key, KV_STR)->str = s;
}

void params_uint(Params *p, const char *key, uint64_t u) {
        params_add(p, key, KV_UINT)->uint = u;
}

void params_nil(Params *p, const char *key) {
        params_add(p, key, KV_NIL);
}

void params_bool(Params *p, const char *key, bool b) {
        params_add(p, key, KV_BOOL)->boolean = b;
}

void params_strv(Params *p, const char *key, const char *const *v, size_t n) {
        Kv *kv = params_add(p, key, KV_STRV);
        kv->strv = v;
        kv->n = n;
}

void params_uintv(Params *p, const char *key, const uint64_t *v, size_t n) {
        Kv *kv = params_add(p, key, KV_UINTV);
        kv->uintv = v;
        kv->n = n;
}

void params_raw(Params *p, const char *key, const char *raw, size_t n) {
        Kv *kv = params_add(p, key, KV_RAW);
        kv->raw = raw;
        kv->n = n;
}

uint32_t params_count(const Params *p) {
        return !!p->vm_id + !!p->password + !!p->filter + !!p->id_str + p->has_id_uint +
               !!p->after_str + p->has_after_uint + !!p->limit + (uint32_t) p->n_kv;
}

int params_pack(msgpack_packer *pk, const Params *p) {
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
        for (size_t i = 0; i < p->n_kv; i++) {
                const Kv *kv = &p->kv[i];
                switch (kv->kind) {
                case KV_STR:
                        r |= vmm_pack_kv_str(pk, kv->key, kv->str);
                        break;
                case KV_UINT:
                        r |= vmm_pack_kv_uint(pk, kv->key, kv->uint);
                        break;
                case KV_NIL:
                        r |= vmm_pack_kv_nil(pk, kv->key);
                        break;
                case KV_BOOL:
                        r |= vmm_pack_kv_bool(pk, kv->key, kv->boolean);
                        break;
                case KV_STRV:
                        r |= vmm_pack_kv_strv(pk, kv->key, kv->strv, kv->n);
                        break;
                case KV_UINTV:
                        r |= vmm_pack_kv_uintv(pk, kv->key, kv->uintv, kv->n);
                        break;
                case KV_RAW:
                        r |= vmm_pack_str(pk, kv->key);
                        r |= pk->callback(pk->data, kv->raw, kv->n) ? -ENOMEM : 0;
                        break;
                default:
                        r |= -EINVAL;
                        break;
                }
        }
        return r ? -ENOMEM : 0;
}

int rpc(Ctx *ctx, const char *method, const Params *p, int pass_fd, int timeout_ms,
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

int run_simple(Ctx *ctx, const char *method, const Params *p,
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

/* ---- paged lists ---- */

void pages_done(Pages *pg) {
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

int fetch_all(Ctx *ctx, const char *method, Params *p, const char *key, Pages *pg) {
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

int run_list(Ctx *ctx, const char *method, Params *p, const char *key,
             int (*table)(const Pages *pg)) {
        _cleanup_(pages_done) Pages pg = { 0 };
        int r = fetch_all(ctx, method, p, key, &pg);

        free(p->after_str);
        p->after_str = NULL;
        p->has_after_uint = false;
        if (r != 0)
                return r;
        if (arg_json) {
                print_json_list(key, &pg);
                return 0;
        }
        return table(&pg);
}

int resolve_group(Ctx *ctx, const char *arg, uint64_t *ret) {
        _cleanup_(pages_done) Pages pg = { 0 };
        Params p = { 0 };
        uint64_t id;
        int r;

        if (parse_uint(arg, UINT64_MAX, &id) == 0) {
                if (id == 0)
                        return usage_error("group ids count from 1, not '%s'", arg);
                *ret = id;
                return 0;
        }
        if (!*arg)
                return usage_error("a group is named by its id or its name, not ''");
        r = fetch_all(ctx, VMM_M_GROUP_LIST, &p, "groups", &pg);
        free(p.after_str);
        if (r != 0)
                return r;
        for (size_t i = 0; i < pg.n_items; i++)
                if (vmm_object_streq(vmm_object_get(pg.items[i], "name"), arg) &&
                    vmm_object_uint(vmm_object_get(pg.items[i], "id"), ret))
                        return 0;
        report_error(reporter(), "not_found", true,
                     "no group is named '%s' (see 'vmadm group list')", arg);
        return EXIT_DAEMON;
}
