/* SPDX-License-Identifier: MIT */
/* vmclient: the VM-side tool for vmmd. One-shot subcommands (stateless, with a
 * session token) and an interactive shell with the seeds' text commands
 * (shell.c). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <msgpack.h>

#include "agent.h"
#include "build-config.h"
#include "shared/macro.h"
#include "tools/common/errors.h"
#include "tools/common/escape.h"
#include "tools/common/json.h"
#include "tools/common/output.h"
#include "tools/vmclient/vmclient.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

const char *arg_server = NULL;
bool arg_json = false;
const char *arg_token = NULL;
int arg_timeout_ms = DEFAULT_TIMEOUT_MS;

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

const Reporter *oneshot_reporter(void) {
        static Reporter rep;

        rep = (Reporter) { .prefix = "vmclient: ", .text = stderr, .json = arg_json };
        return &rep;
}

_printf_(1, 2)
static int usage_error(const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        report_errorv(oneshot_reporter(), ERROR_USAGE, false, fmt, ap);
        va_end(ap);
        fputs("Try 'vmclient --help'.\n", stderr);
        return EXIT_USAGE;
}

static int out_of_memory(void) {
        report_error(oneshot_reporter(), ERROR_LOCAL, false, "out of memory");
        return EXIT_DAEMON;
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

const char *server_address(void) {
        if (arg_server)
                return arg_server;
        const char *e = getenv("VMCLIENT_SERVER");
        if (e && *e)
                return e;
        return VMM_DEFAULT_HOST ":7707";
}

const char *session_token(void) {
        if (arg_token)
                return arg_token;
        const char *e = getenv("VMCLIENT_TOKEN");
        return e && *e ? e : NULL;
}

/* What auth prints: 43 characters of base64url. */
static bool token_looks_right(const char *t) {
        size_t n = strlen(t);

        if (n != VMM_TOKEN_LEN)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!isalnum((unsigned char) t[i]) && t[i] != '-' && t[i] != '_')
                        return false;
        return true;
}

/* ---- request parameters ---- */

void params_done(Params *p) {
        erase_and_free(p->password);
        erase_and_free(p->new_password);
        free(p->after);
        for (size_t i = 0; i < p->n_disks; i++)
                free(p->disks[i].id);
        free(p->disks);
        *p = (Params) { 0 };
}

int params_add_disk(Params *p, const char *spec) {
        const char *colon = strrchr(spec, ':');
        const char *size_s = colon ? colon + 1 : spec;
        uint64_t size;
        if (colon == spec)
                return -EINVAL;
        if (parse_uint(size_s, VMM_DISK_SIZE_MIN, VMM_DISK_SIZE_MAX, &size) < 0)
                return -EINVAL;
        if (p->n_disks >= 4 * VMM_MAX_DISKS)
                return -E2BIG;
        Disk *d = realloc(p->disks, (p->n_disks + 1) * sizeof(Disk));
        if (!d)
                return -ENOMEM;
        p->disks = d;
        d[p->n_disks] = (Disk) { .size = size };
        if (colon) {
                d[p->n_disks].id = strndup(spec, (size_t) (colon - spec));
                if (!d[p->n_disks].id)
                        return -ENOMEM;
        }
        p->n_disks++;
        p->has_disks = true;
        return 0;
}

static int pack_params(msgpack_packer *pk, const Params *p) {
        int r = 0;
        if (p->vm_id)
                r |= vmm_pack_kv_str(pk, "vm_id", p->vm_id);
        if (p->password)
                r |= vmm_pack_kv_str(pk, "password", p->password);
        if (p->new_password)
                r |= vmm_pack_kv_str(pk, "new_password", p->new_password);
        if (p->token)
                r |= vmm_pack_kv_str(pk, "token", p->token);
        if (p->filter)
                r |= vmm_pack_kv_str(pk, "filter", p->filter);
        if (p->after)
                r |= vmm_pack_kv_str(pk, "after", p->after);
        if (p->has_ram)
                r |= vmm_pack_kv_uint(pk, "ram", p->ram);
        if (p->has_cpu)
                r |= vmm_pack_kv_uint(pk, "cpu", p->cpu);
        if (p->has_limit)
                r |= vmm_pack_kv_uint(pk, "limit", p->limit);
        if (p->has_disks) {
                r |= vmm_pack_str(pk, "disks");
                r |= msgpack_pack_array(pk, (uint32_t) p->n_disks) ? -ENOMEM : 0;
                for (size_t i = 0; i < p->n_disks; i++) {
                        r |= msgpack_pack_map(pk, p->disks[i].id ? 2 : 1) ? -ENOMEM : 0;
                        if (p->disks[i].id)
                                r |= vmm_pack_kv_str(pk, "id", p->disks[i].id);
                        r |= vmm_pack_kv_uint(pk, "size", p->disks[i].size);
                }
        }
        return r ? -ENOMEM : 0;
}

static uint32_t params_count(const Params *p) {
        return !!p->vm_id + !!p->password + !!p->new_password + !!p->token + !!p->filter +
               !!p->after + p->has_ram + p->has_cpu + p->has_limit + p->has_disks;
}

int call(VmmClient *c, const char *method, const Params *p, VmmMessage *ret) {
        msgpack_packer *pk;
        uint32_t n = params_count(p);
        int r = n > 0 ? vmm_client_begin_map(c, method, n, &pk, NULL)
                      : vmm_client_begin(c, method, 0, &pk, NULL);
        if (r < 0)
                return r;
        r = pack_params(pk, p);
        if (r < 0) {
                vmm_client_cancel(c);
                return r;
        }
        return vmm_call_end(c, ret);
}

/* ---- the connection and its errors ---- */

int client_open(const Reporter *rep, VmmClient **ret) {
        VmmClient *c;
        const char *addr = server_address();
        int r = vmm_client_new(&c);
        if (r < 0) {
                report_error(rep, ERROR_LOCAL, false, "out of memory");
                return EXIT_DAEMON;
        }
        vmm_client_set_timeout(c, arg_timeout_ms);
        r = vmm_client_connect(c, addr);
        if (r >= 0) {
                *ret = c;
                return 0;
        }
        vmm_client_free(c);
        switch (r) {
        case -EINVAL:
                report_error(rep, ERROR_USAGE, false,
                             "'%s' is not an address: give HOST:PORT, [IPv6]:PORT or HOST "
                             "(--server or VMCLIENT_SERVER)", addr);
                return EXIT_USAGE;
        case -ENXIO:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "cannot connect to %s: the host name does not resolve (check "
                             "--server HOST:PORT or VMCLIENT_SERVER)", addr);
                break;
        case -EAGAIN:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "cannot connect to %s: the name server did not answer; try again",
                             addr);
                break;
        case -ECONNREFUSED:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "cannot connect to %s: connection refused. Is vmmd running there? "
                             "Give its address with --server HOST:PORT (or VMCLIENT_SERVER)",
                             addr);
                break;
        case -ETIMEDOUT:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "cannot connect to %s: no answer in time. Is the address right "
                             "(--server HOST:PORT)? See also --timeout", addr);
                break;
        case -EHOSTUNREACH:
        case -ENETUNREACH:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "cannot connect to %s: no route to that host (check --server "
                             "HOST:PORT and the network)", addr);
                break;
        default:
                report_error(rep, ERROR_UNREACHABLE, false, "cannot connect to %s: %s", addr,
                             strerror(-r));
                break;
        }
        return EXIT_UNREACHABLE;
}

void client_freep(VmmClient **c) {
        vmm_client_free(*c);
}

void message_releasep(VmmMessage *m) {
        vmm_message_release(m);
}

int report_exchange_failed(const Reporter *rep, int r) {
        const char *addr = server_address();

        switch (r) {
        case -ECONNRESET:
        case -EPIPE:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "the connection to %s broke: vmmd closed it (stopped, restarted, "
                             "or an administrator closed it); run the command again", addr);
                break;
        case -ETIMEDOUT:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "no answer from %s in time (see --timeout)", addr);
                break;
        case -EBADMSG:
        case -EPROTO:
        case -EMSGSIZE:
                report_error(rep, ERROR_UNREACHABLE, false,
                             "%s answered with something that is not vmmd's protocol (is it "
                             "vmmd's address? see --server)", addr);
                break;
        case -ENOMEM:
                report_error(rep, ERROR_LOCAL, false, "out of memory");
                return EXIT_DAEMON;
        default:
                report_error(rep, ERROR_UNREACHABLE, false, "the connection to %s failed: %s",
                             addr, strerror(-r));
                break;
        }
        return EXIT_UNREACHABLE;
}

/* What the daemon says, in terms of what a person types. */
static const ErrorText oneshot_texts[] = {
        { "unauthenticated", "not logged in",
          "log in first: export VMCLIENT_TOKEN=$(vmclient auth VM_ID) (a person: "
          "vmclient user-login NAME), or pass --token TOKEN" },
        { "unauthenticated", "^log in first",
          "log in first: export VMCLIENT_TOKEN=$(vmclient auth VM_ID) (a person: "
          "vmclient user-login NAME), or pass --token TOKEN" },
        { "forbidden", "is not for VM sessions",
          "a VM's session cannot do that; log in as a person (vmclient user-login NAME)" },
        { "forbidden", "is only for VM sessions",
          "only a VM's own session can do that (vmclient auth VM_ID)" },
        { "forbidden", "a VM sees only its own booking",
          "a VM's session sees only its own booking: leave out the VM" },
        { "bad_request", "missing field 'vm_id'",
          "this is for a VM's own session (vmclient auth VM_ID); a person's session sees VMs "
          "with vmclient list" },
        { "bad_request", "^name: ",
          "a user name is 1 to 64 letters, digits, '.', '_', '@', '+' or '-', starting with "
          "a letter or digit" },
        { "unauthenticated", "token is not valid",
          "the session token is no longer valid (it expired, was revoked, or logged out): "
          "log in again with vmclient auth VM_ID (a person: vmclient user-login NAME)" },
        { "unauthenticated", "unknown name or wrong password",
          "the name or the password is wrong" },
        { "unauthenticated", "wrong password",
          "the current password is wrong" },
        { "bad_request", "^token: ",
          "a session token is the 43 characters that 'vmclient auth VM_ID' prints: check "
          "--token or VMCLIENT_TOKEN" },
        { "exists", "already described",
          "this VM is already described: change it with vmclient update" },
        { "not_found", "never described",
          "this VM is not described yet: describe it first with vmclient add VM_ID --ram MiB "
          "--cpu N" },
        { "forbidden", "VM of this session",
          "you can describe only the VM you logged in as (see vmclient get)" },
        { NULL, NULL, NULL },
};

static const ErrorText shell_texts[] = {
        { "unauthenticated", "not logged in",
          "log in first: AUTH VM_ID PASSWORD" },
        { "unauthenticated", "^log in first",
          "log in first: AUTH VM_ID PASSWORD" },
        { "bad_request", "^token: ",
          "the session token given with --token or VMCLIENT_TOKEN is not one that "
          "'vmclient auth VM_ID' prints (43 characters): log in with AUTH VM_ID PASSWORD" },
        { "unauthenticated", "token is not valid",
          "the session has ended (it expired, was revoked, or logged out): log in again with "
          "AUTH VM_ID PASSWORD" },
        { "unauthenticated", "unknown name or wrong password",
          "the name or the password is wrong" },
        { "unauthenticated", "wrong password",
          "the current password is wrong" },
        { "forbidden", "a VM sees only its own booking",
          "a VM's session sees only its own booking: BOOKING without a VM id" },
        { "exists", "already described",
          "this VM is already described: change it with UPDATE_VM RAM CPU [DISK...]" },
        { "not_found", "never described",
          "this VM is not described yet: describe it first with ADD_VM VM_ID RAM CPU "
          "[DISK...]" },
        { "forbidden", "VM of this session",
          "ADD_VM describes only the VM you logged in as (see GET_VM)" },
        { NULL, NULL, NULL },
};

int report_reply_error(const Reporter *rep, const VmmMessage *m, bool shell) {
        report_daemon_error(rep, shell ? shell_texts : oneshot_texts, m->error_code,
                            m->error_message);
        return EXIT_DAEMON;
}

/* ---- output ---- */

void print_json(const msgpack_object *o) {
        (void) json_print(stdout, o, 0);
        putchar('\n');
}

void human_vm(const msgpack_object *o) {
        print_vm(stdout, o);
}

void human_pong(const msgpack_object *o) {
        char version[64], protocol[16], t[64];
        fmt_scalar(vmm_object_get(o, "version"), version, sizeof(version));
        fmt_scalar(vmm_object_get(o, "protocol"), protocol, sizeof(protocol));
        fmt_time(vmm_object_get(o, "time"), t, sizeof(t));
        printf("pong: vmmd %s, protocol %s, server time %s\n", version, protocol, t);
}

void human_auth(const msgpack_object *o) {
        char vm[256], t[64];
        fmt_scalar(vmm_object_get(o, "vm_id"), vm, sizeof(vm));
        fmt_time(vmm_object_get(o, "expires_at"), t, sizeof(t));
        printf("authenticated as %s (session expires %s)\n", vm, t);
}

static void human_token(const msgpack_object *o) {
        char tok[128];
        fmt_scalar(vmm_object_get(o, "token"), tok, sizeof(tok));
        puts(tok);
}

void human_passwd(const msgpack_object *o) {
        puts("password changed");
}

void human_logout(const msgpack_object *o) {
        puts("logged out");
}

void pages_done(Pages *p) {
        for (size_t i = 0; i < p->n; i++)
                vmm_message_release(&p->msgs[i]);
        free(p->msgs);
        *p = (Pages) { 0 };
}

int fetch_pages(VmmClient *c, const char *method, Params *p, bool all_pages, Pages *pages,
                bool *ret_failed) {
        *ret_failed = false;
        for (;;) {
                VmmMessage *m = realloc(pages->msgs, (pages->n + 1) * sizeof(VmmMessage));
                if (!m)
                        return -ENOMEM;
                pages->msgs = m;
                int r = call(c, method, p, &m[pages->n]);
                if (r < 0)
                        return r;
                VmmMessage *cur = &m[pages->n++];
                if (cur->error != VMM_OK) {
                        *ret_failed = true;
                        return 0;
                }
                const msgpack_object *next = vmm_object_get(&cur->result, "next");
                if (!all_pages || !next || next->type != MSGPACK_OBJECT_STR)
                        return 0;
                char *after = vmm_object_strdup(next);
                if (!after)
                        return -ENOMEM;
                if (p->after && strcmp(p->after, after) == 0) {
                        free(after);           /* no progress: stop rather than loop */
                        return 0;
                }
                free(p->after);
                p->after = after;
        }
}

int print_pages(const Pages *pages, const char *key, bool all_pages) {
        size_t total = 0;
        for (size_t i = 0; i < pages->n; i++) {
                const msgpack_object *a = vmm_object_get(&pages->msgs[i].result, key);
                if (a && a->type == MSGPACK_OBJECT_ARRAY)
                        total += a->via.array.size;
        }
        const msgpack_object *last_next =
                pages->n > 0 ? vmm_object_get(&pages->msgs[pages->n - 1].result, "next") : NULL;

        if (arg_json) {
                if (pages->n == 1) {
                        print_json(&pages->msgs[0].result);
                        return 0;
                }
                printf("{\"%s\":[", key);
                bool first = true;
                for (size_t i = 0; i < pages->n; i++) {
                        const msgpack_object *a = vmm_object_get(&pages->msgs[i].result, key);
                        for (uint32_t j = 0; a && a->type == MSGPACK_OBJECT_ARRAY &&
                                             j < a->via.array.size; j++) {
                                if (!first)
                                        putchar(',');
                                first = false;
                                (void) json_print(stdout, &a->via.array.ptr[j], 0);
                        }
                }
                printf("],\"next\":");
                if (last_next)
                        (void) json_print(stdout, last_next, 0);
                else
                        printf("null");
                printf("}\n");
                return 0;
        }

        _cleanup_free_ const msgpack_object **items = calloc(MAX(total, (size_t) 1),
                                                             sizeof(*items));
        if (!items)
                return -ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < pages->n; i++) {
                const msgpack_object *a = vmm_object_get(&pages->msgs[i].result, key);
                for (uint32_t j = 0; a && a->type == MSGPACK_OBJECT_ARRAY &&
                                     j < a->via.array.size; j++)
                        items[k++] = &a->via.array.ptr[j];
        }
        bool bold = output_color_enabled(stdout, false);
        int r = strcmp(key, "disks") == 0 ? print_disk_table(stdout, items, k, bold, "(no disks)")
                                          : print_vm_table(stdout, items, k, bold, "(no VMs)");
        if (r >= 0 && !all_pages && last_next && last_next->type == MSGPACK_OBJECT_STR) {
                char after[256];
                fmt_scalar(last_next, after, sizeof(after));
                printf("(more: --after %s)\n", after);
        }
        return r;
}

/* ---- passwords ---- */

static int read_line(FILE *f, char **ret) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n = getline(&line, &cap, f);
        if (n < 0) {
                free(line);
                return -ENODATA;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                line[--n] = '\0';
        *ret = line;
        return 0;
}

static int prompt_tty(const char *prompt, char **ret) {
        FILE *tty = fopen("/dev/tty", "r+e");
        if (!tty)
                return negative_errno();
        struct termios old, quiet;
        bool restore = false;
        if (tcgetattr(fileno(tty), &old) == 0) {
                quiet = old;
                quiet.c_lflag &= ~(tcflag_t) ECHO;
                quiet.c_lflag |= ECHONL;
                restore = tcsetattr(fileno(tty), TCSAFLUSH, &quiet) == 0;
        }
        fputs(prompt, tty);
        fflush(tty);
        int r = read_line(tty, ret);
        if (restore)
                (void) tcsetattr(fileno(tty), TCSAFLUSH, &old);
        else
                fputc('\n', tty);
        fclose(tty);
        return r;
}

/* From env (if set), else the next line of stdin when it is not a terminal,
 * else a prompt on the terminal with echo off (twice if confirm). */
static int get_password(const char *env, const char *prompt, bool confirm, char **ret) {
        const char *e = getenv(env);
        if (e) {
                *ret = strdup(e);
                return *ret ? 0 : -ENOMEM;
        }
        if (!isatty(STDIN_FILENO)) {
                int r = read_line(stdin, ret);
                if (r < 0)
                        report_error(oneshot_reporter(), ERROR_USAGE, false,
                                     "no password: set %s or give it on stdin", env);
                return r;
        }
        _cleanup_erase_ char *first = NULL;
        int r = prompt_tty(prompt, &first);
        if (r < 0) {
                report_error(oneshot_reporter(), ERROR_USAGE, false,
                             "cannot read a password: %s (set %s)", strerror(-r), env);
                return r;
        }
        if (confirm) {
                _cleanup_erase_ char *again = NULL;
                r = prompt_tty("Retype password: ", &again);
                if (r < 0)
                        return r;
                if (strcmp(first, again) != 0) {
                        report_error(oneshot_reporter(), ERROR_USAGE, false,
                                     "the passwords do not match");
                        return -EINVAL;
                }
        }
        *ret = first;
        first = NULL;
        return 0;
}

/* ---- one-shot commands ---- */

static int print_command_help(const Command *cmd);

enum {
        OPT_RAM = 0x100,
        OPT_CPU,
        OPT_DISK,
        OPT_NO_DISKS,
        OPT_LIMIT,
        OPT_AFTER,
        OPT_ALL_PAGES,
        OPT_SINGLE_PAGE,
        OPT_TIMEOUT,
};

static const struct option command_options[] = {
        { "help",        no_argument,       NULL, 'h' },
        { "server",      required_argument, NULL, 's' },
        { "json",        no_argument,       NULL, 'j' },
        { "token",       required_argument, NULL, 't' },
        { "timeout",     required_argument, NULL, OPT_TIMEOUT },
        { "ram",         required_argument, NULL, OPT_RAM },
        { "cpu",         required_argument, NULL, OPT_CPU },
        { "disk",        required_argument, NULL, OPT_DISK },
        { "no-disks",    no_argument,       NULL, OPT_NO_DISKS },
        { "limit",       required_argument, NULL, OPT_LIMIT },
        { "after",       required_argument, NULL, OPT_AFTER },
        { "all-pages",   no_argument,       NULL, OPT_ALL_PAGES },
        { "single-page", no_argument,       NULL, OPT_SINGLE_PAGE },
        { 0 }
};

/* Which of the specific options a command takes. */
#define TAKES_VM_SPEC (1u << 0)   /* --ram --cpu --disk */
#define TAKES_NO_DISK (1u << 1)   /* --no-disks */
#define TAKES_PAGING  (1u << 2)   /* --limit --after --all-pages --single-page */

typedef struct Parsed {
        Params p;
        bool all_pages;
        bool no_disks;
        char **args;              /* positional arguments */
        int n_args;
} Parsed;

static int set_timeout(const char *s) {
        uint64_t v;
        if (parse_uint(s, 0, 86400, &v) < 0)
                return usage_error("--timeout wants seconds, 0-86400 (0 waits forever): '%s'",
                                   s);
        arg_timeout_ms = v == 0 ? -1 : (int) (v * 1000);
        return 0;
}

static const char *option_name(int c) {
        for (const struct option *o = command_options; o->name; o++)
                if (o->val == c)
                        return o->name;
        return "?";
}

/* Returns -1 to go on, else an exit status. */
static int parse_command(const Command *cmd, unsigned takes, int argc, char **argv, Parsed *ret) {
        int c;
        ret->all_pages = true;
        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":hs:jt:", command_options, NULL)) >= 0) {
                uint64_t v;
                bool spec = c == OPT_RAM || c == OPT_CPU || c == OPT_DISK;
                bool paging = c == OPT_LIMIT || c == OPT_AFTER || c == OPT_ALL_PAGES ||
                              c == OPT_SINGLE_PAGE;
                if ((spec && !(takes & TAKES_VM_SPEC)) ||
                    (c == OPT_NO_DISKS && !(takes & TAKES_NO_DISK)) ||
                    (paging && !(takes & TAKES_PAGING)))
                        return usage_error("%s: option '--%s' does not apply", cmd->name,
                                           option_name(c));
                switch (c) {
                case 'h':
                        return print_command_help(cmd);
                case 's':
                        arg_server = optarg;
                        break;
                case 'j':
                        arg_json = true;
                        break;
                case 't':
                        arg_token = optarg;
                        break;
                case OPT_TIMEOUT:
                        if (set_timeout(optarg) != 0)
                                return EXIT_USAGE;
                        break;
                case OPT_RAM:
                        if (parse_uint(optarg, VMM_RAM_MIN, VMM_RAM_MAX, &v) < 0)
                                return usage_error("--ram wants MiB, %llu-%llu: '%s'",
                                                   VMM_RAM_MIN, VMM_RAM_MAX, optarg);
                        ret->p.has_ram = true;
                        ret->p.ram = v;
                        break;
                case OPT_CPU:
                        if (parse_uint(optarg, VMM_CPU_MIN, VMM_CPU_MAX, &v) < 0)
                                return usage_error("--cpu wants a count, %llu-%llu: '%s'",
                                                   VMM_CPU_MIN, VMM_CPU_MAX, optarg);
                        ret->p.has_cpu = true;
                        ret->p.cpu = v;
                        break;
                case OPT_DISK: {
                        int r = params_add_disk(&ret->p, optarg);
                        if (r == -ENOMEM)
                                return out_of_memory();
                        if (r < 0)
                                return usage_error("--disk wants [ID:]SIZE (GiB): '%s'", optarg);
                        break;
                }
                case OPT_NO_DISKS:
                        ret->no_disks = true;
                        ret->p.has_disks = true;
                        break;
                case OPT_LIMIT:
                        if (parse_uint(optarg, VMM_PAGE_MIN, VMM_PAGE_MAX, &v) < 0)
                                return usage_error("--limit wants %d-%d: '%s'", VMM_PAGE_MIN,
                                                   VMM_PAGE_MAX, optarg);
                        ret->p.has_limit = true;
                        ret->p.limit = v;
                        break;
                case OPT_AFTER:
                        free(ret->p.after);
                        ret->p.after = strdup(optarg);
                        if (!ret->p.after)
                                return out_of_memory();
                        break;
                case OPT_ALL_PAGES:
                        ret->all_pages = true;
                        break;
                case OPT_SINGLE_PAGE:
                        ret->all_pages = false;
                        break;
                case ':':
                        return usage_error("%s: option '%s' needs a value", cmd->name,
                                           argv[optind - 1]);
                default:
                        return usage_error("%s: unknown option '%s'", cmd->name,
                                           argv[optind - 1]);
                }
        }
        if (ret->no_disks && ret->p.n_disks > 0)
                return usage_error("%s: --disk and --no-disks exclude each other", cmd->name);
        ret->args = argv + optind;
        ret->n_args = argc - optind;
        if (cmd->needs_token) {
                ret->p.token = session_token();
                if (!ret->p.token)
                        return usage_error("%s needs you to log in first: "
                                           "export VMCLIENT_TOKEN=$(vmclient auth VM_ID) (a "
                                           "person: vmclient user-login NAME), or pass "
                                           "--token TOKEN", cmd->name);
                if (!token_looks_right(ret->p.token))
                        return usage_error("%s: a session token is the %d characters that "
                                           "'vmclient auth VM_ID' prints (letters, digits, '-' "
                                           "and '_'): check --token or VMCLIENT_TOKEN",
                                           cmd->name, VMM_TOKEN_LEN);
        }
        return -1;
}

static int want_args(const Command *cmd, const Parsed *a, int min, int max) {
        if (a->n_args < min)
                return usage_error("%s: missing argument; usage: vmclient %s %s", cmd->name,
                                   cmd->name, cmd->synopsis);
        if (a->n_args > max)
                return usage_error("%s: unexpected argument '%s'", cmd->name, a->args[max]);
        return -1;
}

/* Connects, calls, prints the result with human() unless --json. */
static int run_simple(const char *method, const Params *p,
                      void (*human)(const msgpack_object *result)) {
        _cleanup_client_ VmmClient *c = NULL;
        _cleanup_message_ VmmMessage m = { 0 };
        const Reporter *rep = oneshot_reporter();
        int r = client_open(rep, &c);
        if (r != 0)
                return r;
        r = call(c, method, p, &m);
        if (r < 0)
                return report_exchange_failed(rep, r);
        if (m.error != VMM_OK)
                return report_reply_error(rep, &m, false);
        if (arg_json)
                print_json(&m.result);
        else if (human)
                human(&m.result);
        return 0;
}

static void parsed_done(Parsed *a) {
        params_done(&a->p);
}

static int cmd_ping(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        return run_simple(VMM_M_PING, &a.p, human_pong);
}

static int cmd_register(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, TAKES_VM_SPEC, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 1, 1);
        if (r >= 0)
                return r;
        if (!a.p.has_ram || !a.p.has_cpu)
                return usage_error("register needs --ram MiB and --cpu N");
        a.p.vm_id = a.args[0];
        if (get_password("VMCLIENT_PASSWORD", "Password: ", true, &a.p.password) < 0)
                return EXIT_USAGE;
        return run_simple(VMM_M_REGISTER, &a.p, human_vm);
}

static int cmd_auth(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 1, 1);
        if (r >= 0)
                return r;
        a.p.vm_id = a.args[0];
        if (get_password("VMCLIENT_PASSWORD", "Password: ", false, &a.p.password) < 0)
                return EXIT_USAGE;
        return run_simple(VMM_M_AUTH, &a.p, human_token);
}

static int cmd_add(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, TAKES_VM_SPEC, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 1, 1);
        if (r >= 0)
                return r;
        if (!a.p.has_ram || !a.p.has_cpu)
                return usage_error("add needs --ram MiB and --cpu N");
        a.p.vm_id = a.args[0];
        a.p.has_disks = true;     /* vm.add takes the disk set, maybe empty */
        return run_simple(VMM_M_VM_ADD, &a.p, human_vm);
}

static int cmd_get(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        return run_simple(VMM_M_VM_GET, &a.p, human_vm);
}

static int cmd_update(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, TAKES_VM_SPEC | TAKES_NO_DISK, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        if (!a.p.has_ram && !a.p.has_cpu && !a.p.has_disks)
                return usage_error("update needs at least one of --ram, --cpu, --disk, "
                                   "--no-disks");
        return run_simple(VMM_M_VM_UPDATE, &a.p, human_vm);
}

static int run_list(Parsed *a, const char *method, const char *key) {
        _cleanup_client_ VmmClient *c = NULL;
        _cleanup_(pages_done) Pages pages = { 0 };
        const Reporter *rep = oneshot_reporter();
        bool failed;
        int r = client_open(rep, &c);
        if (r != 0)
                return r;
        r = fetch_pages(c, method, &a->p, a->all_pages, &pages, &failed);
        if (r < 0)
                return report_exchange_failed(rep, r);
        if (failed)
                return report_reply_error(rep, &pages.msgs[pages.n - 1], false);
        if (print_pages(&pages, key, a->all_pages) < 0)
                return out_of_memory();
        return 0;
}

static int cmd_list(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, TAKES_PAGING, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 1);
        if (r >= 0)
                return r;
        a.p.filter = "all";
        if (a.n_args == 1) {
                if (strcmp(a.args[0], "connected") != 0 &&
                    strcmp(a.args[0], "authorized") != 0 && strcmp(a.args[0], "all") != 0)
                        return usage_error("list: the filter is connected, authorized or all, "
                                           "not '%s'", a.args[0]);
                a.p.filter = a.args[0];
        }
        return run_list(&a, VMM_M_VM_LIST, "vms");
}

static int cmd_disks(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, TAKES_PAGING, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        return run_list(&a, VMM_M_DISK_LIST, "disks");
}

static int cmd_passwd(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        if (get_password("VMCLIENT_PASSWORD", "Current password: ", false, &a.p.password) < 0 ||
            get_password("VMCLIENT_NEW_PASSWORD", "New password: ", true,
                         &a.p.new_password) < 0)
                return EXIT_USAGE;
        return run_simple(VMM_M_PASSWD, &a.p, human_passwd);
}

static int cmd_logout(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        return run_simple(VMM_M_LOGOUT, &a.p, human_logout);
}

/* One call made with a libvmm function: says what went wrong, else prints
 * the result as JSON or with human(). */
static int finish_call(const Reporter *rep, int r, const VmmMessage *m,
                       void (*human)(const msgpack_object *result)) {
        if (r < 0)
                return report_exchange_failed(rep, r);
        if (m->error != VMM_OK)
                return report_reply_error(rep, m, false);
        if (arg_json)
                print_json(&m->result);
        else
                human(&m->result);
        return 0;
}

void human_whoami(const msgpack_object *o) {
        static const char *const keys[] = { "kind", "vm_id", "name", "role" };
        char buf[256];

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                const msgpack_object *v = vmm_object_get(o, keys[i]);
                if (!v)
                        continue;
                fmt_scalar(v, buf, sizeof(buf));
                print_field(stdout, 0, keys[i], buf);
        }
}

static int cmd_whoami(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        _cleanup_client_ VmmClient *c = NULL;
        _cleanup_message_ VmmMessage m = { 0 };
        const Reporter *rep = oneshot_reporter();
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        r = client_open(rep, &c);
        if (r != 0)
                return r;
        return finish_call(rep, vmm_whoami(c, a.p.token, &m), &m, human_whoami);
}

/* The daemon's clock, for the time left (the VM's own may be off); 0: ours
 * (the shell). */
static int64_t booking_now = 0;

void human_booking(const msgpack_object *o) {
        const msgpack_object *b = vmm_object_get(o, "booking");
        char vm[256], user[256], until[64], left[64];

        if (vmm_object_is_nil(b)) {
                puts("not booked");
                return;
        }
        fmt_scalar(vmm_object_get(b, "vm_id"), vm, sizeof(vm));
        fmt_scalar(vmm_object_get(b, "user"), user, sizeof(user));
        fmt_time(vmm_object_get(b, "expires_at"), until, sizeof(until));
        fmt_left_obj(vmm_object_get(b, "expires_at"), booking_now ? booking_now : output_now_ms(),
                     left, sizeof(left));
        printf("VM %s is booked by %s until %s (%s)\n", vm, user, until, left);
}

static int cmd_booking(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        _cleanup_client_ VmmClient *c = NULL;
        _cleanup_message_ VmmMessage m = { 0 };
        const Reporter *rep = oneshot_reporter();
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 1);
        if (r >= 0)
                return r;
        r = client_open(rep, &c);
        if (r != 0)
                return r;
        booking_now = output_now_ms();
        if (!arg_json) {
                /* "left" by the daemon's clock, which is the one that ends bookings */
                VmmMessage pong = { 0 };
                int64_t t;
                r = vmm_call(c, VMM_M_PING, NULL, &pong);
                if (r >= 0 && pong.error == VMM_OK &&
                    vmm_object_int(vmm_object_get(&pong.result, "time"), &t))
                        booking_now = t;
                vmm_message_release(&pong);
                if (r < 0)
                        return report_exchange_failed(rep, r);
        }
        r = vmm_booking_get(c, a.n_args == 1 ? a.args[0] : NULL, a.p.token, &m);
        if (r >= 0 && m.error == VMM_E_BAD_REQUEST && a.n_args == 0 && m.error_message &&
            strstr(m.error_message, "missing field 'vm_id'")) {
                report_error(rep, m.error_code, true,
                             "a person's session names the VM: vmclient booking VM");
                return EXIT_DAEMON;
        }
        return finish_call(rep, r, &m, human_booking);
}

static int cmd_user_login(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        _cleanup_client_ VmmClient *c = NULL;
        _cleanup_message_ VmmMessage m = { 0 };
        const Reporter *rep = oneshot_reporter();
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 1, 1);
        if (r >= 0)
                return r;
        if (get_password("VMCLIENT_PASSWORD", "Password: ", false, &a.p.password) < 0)
                return EXIT_USAGE;
        r = client_open(rep, &c);
        if (r != 0)
                return r;
        return finish_call(rep, vmm_user_auth(c, a.args[0], a.p.password, &m), &m, human_token);
}

static int cmd_agent(const Command *cmd, int argc, char **argv) {
        return vmclient_agent(argc, argv);
}

static int cmd_describe(const Command *cmd, int argc, char **argv) {
        return vmclient_describe(argc, argv, arg_json);
}

static int cmd_help(const Command *cmd, int argc, char **argv);

static const Command commands[] = {
        { "ping", cmd_ping, "",
          "check that the daemon answers",
          "Check that the daemon answers; prints its version and time.", false },
        { "register", cmd_register, "VM --ram MiB --cpu N [--disk [ID:]SIZE]...",
          "register a new VM (does not log in)",
          "Register a new VM with a password (read from VMCLIENT_PASSWORD, else the\n"
          "first line of stdin, else prompted). Does not log in. A disk without ID\n"
          "gets <VM>-disk<N>. Sizes are in GiB.", false },
        { "auth", cmd_auth, "VM",
          "log in; print the session token",
          "Log in as VM (password as for register) and print the session token, for\n"
          "  export VMCLIENT_TOKEN=$(vmclient auth VM)\n"
          "With --json the whole result (vm_id, token, expires_at) is printed.", false },
        { "add", cmd_add, "VM --ram MiB --cpu N [--disk [ID:]SIZE]...",
          "describe the session's VM",
          "Describe the session's VM (its first description).", true },
        { "get", cmd_get, "",
          "show the session's VM",
          "Show the session's VM.", true },
        { "update", cmd_update, "[--ram MiB] [--cpu N] [--disk [ID:]SIZE]... [--no-disks]",
          "change the session's VM",
          "Change the session's VM. Any --disk replaces the whole disk set with the\n"
          "given ones; --no-disks sets an empty set.", true },
        { "list", cmd_list,
          "[connected|authorized|all] [--limit N] [--after ID] [--all-pages|--single-page]",
          "list VMs",
          "List VMs by id (all of them unless a filter is given): connected ones hold\n"
          "an open connection, authorized ones an unexpired session. Every page is\n"
          "fetched (--all-pages, the default) unless --single-page; --limit is the\n"
          "page size, --after the id to start after.", true },
        { "disks", cmd_disks, "[--limit N] [--after ID] [--all-pages|--single-page]",
          "list all disks",
          "List every disk with its size and VM, by disk id. Paging as for list.", true },
        { "passwd", cmd_passwd, "",
          "change the VM's password",
          "Change the session VM's password. The current password comes from\n"
          "VMCLIENT_PASSWORD, the new one from VMCLIENT_NEW_PASSWORD, else from two\n"
          "lines of stdin (current, then new), else prompts. Ends the VM's other\n"
          "sessions.", true },
        { "logout", cmd_logout, "",
          "end the session",
          "End the session of the token.", true },
        { "whoami", cmd_whoami, "",
          "who the session is",
          "Show who the session of the token is: a VM (vm_id), or a person (name and\n"
          "role).", true },
        { "booking", cmd_booking, "[VM]",
          "the VM's booking",
          "Show the booking of the session's VM: who holds it, until when, and the time\n"
          "left by the daemon's clock; 'not booked' when nobody does. A person's session\n"
          "names the VM. With --json: {\"booking\": {...} or null}.", true },
        { "user-login", cmd_user_login, "NAME",
          "log a person in; print the session token",
          "Log in as the user NAME (a person; password as for auth) and print the\n"
          "session token, for\n"
          "  export VMCLIENT_TOKEN=$(vmclient user-login NAME)\n"
          "which list, disks, whoami, booking VM and logout then use. With --json the\n"
          "whole result (name, role, token, expires_at) is printed.", false },
        { "shell", cmd_shell, "",
          "interactive shell with the seed commands",
          "Interactive shell with the text commands AUTH, REGISTER, ADD_VM,\n"
          "UPDATE_VM, GET_VM, LIST_CONNECTED, LIST_AUTHORIZED, LIST_ALL, LIST_DISKS,\n"
          "PASSWD, LOGOUT, PING, HELP, EXIT (type HELP inside). It connects when a\n"
          "command needs the daemon and keeps its place: when the connection drops\n"
          "(idle, daemon restart, an administrator's kick) it reconnects and resumes\n"
          "the session. On a terminal: line editing, history and TAB completion.",
          false },
        { "describe", cmd_describe, "[--json] [--report] [--vm-id ID] [--all-disks]",
          "print what the agent would send about this VM",
          "Print this VM's description as discovered (RAM, CPUs, disks, hostname,\n"
          "addresses, OS) without connecting; see 'vmclient describe --help'.", false },
        { "agent", cmd_agent, "[--config FILE] [--server HOST:PORT]... [OPTIONS]",
          "run the VM's agent (describe, report, booking hooks)",
          "Run the agent: stay connected, keep the VM's description current, report,\n"
          "and run the booking hooks; see 'vmclient agent --help' and agent.conf(5).", false },
        { "help", cmd_help, "[COMMAND]",
          "show help",
          "Show help for vmclient or for one command.", false },
};

const Command *find_command(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

static int print_command_help(const Command *cmd) {
        printf("Usage: vmclient [OPTIONS] %s%s%s\n\n%s\n", cmd->name, *cmd->synopsis ? " " : "",
               cmd->synopsis, cmd->help);
        if (cmd->needs_token)
                printf("\nNeeds a session token: --token TOKEN or VMCLIENT_TOKEN.\n");
        return 0;
}

static void print_main_help(void) {
        printf("Usage: vmclient [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "The VM-side client of vmmd, the VM inventory daemon.\n"
               "\n"
               "Options (also accepted after COMMAND):\n"
               "  -s, --server HOST:PORT  daemon address (env VMCLIENT_SERVER;\n"
               "                          default 127.0.0.1:7707; [v6]:port works)\n"
               "  -t, --token TOKEN       session token (env VMCLIENT_TOKEN)\n"
               "  -j, --json              print results (and errors) as JSON\n"
               "      --timeout SECONDS   give up waiting after this (default 60, 0 never)\n"
               "  -h, --help              show this help\n"
               "  -V, --version           show the version\n"
               "\n"
               "Commands:\n");
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                printf("  %-9s %s\n", commands[i].name, commands[i].summary);
        printf("\n'vmclient help COMMAND' or 'vmclient COMMAND --help' tells more.\n"
               "Exit status: 0 success, 1 daemon error, 2 usage error, 3 daemon not "
               "reachable.\n");
}

static int cmd_help(const Command *cmd, int argc, char **argv) {
        if (argc < 2) {
                print_main_help();
                return 0;
        }
        if (argc > 2)
                return usage_error("help: one command at a time");
        const Command *c = find_command(argv[1]);
        if (!c)
                return usage_error("unknown command '%s'", argv[1]);
        return print_command_help(c);
}

/* ---- main ---- */

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "help",    no_argument,       NULL, 'h' },
                { "version", no_argument,       NULL, 'V' },
                { "server",  required_argument, NULL, 's' },
                { "json",    no_argument,       NULL, 'j' },
                { "token",   required_argument, NULL, 't' },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { 0 }
        };
        int c;

        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:hVs:jt:", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        print_main_help();
                        return 0;
                case 'V':
                        printf("vmclient (vmmd) %s, protocol %d\n", VMMD_VERSION,
                               VMM_PROTOCOL_VERSION);
                        return 0;
                case 's':
                        arg_server = optarg;
                        break;
                case 'j':
                        arg_json = true;
                        break;
                case 't':
                        arg_token = optarg;
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

        const Command *cmd = find_command(argv[optind]);
        if (!cmd)
                return usage_error("unknown command '%s'", argv[optind]);
        return cmd->run(cmd, argc - optind, argv + optind);
}
