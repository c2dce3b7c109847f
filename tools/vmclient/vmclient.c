/* SPDX-License-Identifier: MIT */
/* vmclient: the VM-side tool for vmmd. One-shot subcommands (stateless, with a
 * session token) and an interactive shell with the seeds' text commands. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "agent.h"
#include "build-config.h"
#include "shared/macro.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

#define EXIT_DAEMON      1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3

#define DEFAULT_TIMEOUT_MS 60000

static const char *arg_server = NULL;
static bool arg_json = false;
static const char *arg_token = NULL;
static int arg_timeout_ms = DEFAULT_TIMEOUT_MS;

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
        fputs("vmclient: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\nTry 'vmclient --help'.\n", stderr);
        return EXIT_USAGE;
}

static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
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

static const char *server_address(void) {
        if (arg_server)
                return arg_server;
        const char *e = getenv("VMCLIENT_SERVER");
        if (e && *e)
                return e;
        return VMM_DEFAULT_HOST ":7707";
}

static const char *token(void) {
        if (arg_token)
                return arg_token;
        const char *e = getenv("VMCLIENT_TOKEN");
        return e && *e ? e : NULL;
}

/* ---- request parameters ---- */

typedef struct Disk {
        char *id;               /* NULL: the daemon picks <vm_id>-disk<N> */
        uint64_t size;
} Disk;

typedef struct Params {
        const char *vm_id;
        char *password;
        char *new_password;
        const char *token;
        const char *filter;
        char *after;
        bool has_ram, has_cpu, has_limit, has_disks;
        uint64_t ram, cpu, limit;
        size_t n_disks;
        Disk *disks;
} Params;

static void params_done(Params *p) {
        erase_and_free(p->password);
        erase_and_free(p->new_password);
        free(p->after);
        for (size_t i = 0; i < p->n_disks; i++)
                free(p->disks[i].id);
        free(p->disks);
        *p = (Params) { 0 };
}

/* "[ID:]SIZE" (GiB). */
static int params_add_disk(Params *p, const char *spec) {
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

/* Returns 0 with *ret filled (which may carry a daemon error), or a negative
 * errno when the exchange itself failed. */
static int call(VmmClient *c, const char *method, const Params *p, VmmMessage *ret) {
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

static int open_client(VmmClient **ret) {
        VmmClient *c;
        const char *addr = server_address();
        int r = vmm_client_new(&c);
        if (r < 0) {
                fprintf(stderr, "vmclient: %s\n", strerror(-r));
                return EXIT_DAEMON;
        }
        vmm_client_set_timeout(c, arg_timeout_ms);
        r = vmm_client_connect(c, addr);
        if (r < 0) {
                fprintf(stderr, "vmclient: cannot connect to %s: %s\n", addr, strerror(-r));
                vmm_client_free(c);
                return r == -EINVAL ? EXIT_USAGE : EXIT_UNREACHABLE;
        }
        *ret = c;
        return 0;
}

static void client_freep(VmmClient **c) {
        vmm_client_free(*c);
}
#define _cleanup_client_ _cleanup_(client_freep)

static void message_releasep(VmmMessage *m) {
        vmm_message_release(m);
}
#define _cleanup_message_ _cleanup_(message_releasep)

static int exchange_failed(int r, bool shell) {
        if (shell)
                printf("error: connection: %s\n", strerror(-r));
        else
                fprintf(stderr, "vmclient: connection to %s failed: %s\n", server_address(),
                        strerror(-r));
        return EXIT_UNREACHABLE;
}

static int daemon_error(const VmmMessage *m, bool shell) {
        const char *code = m->error_code && *m->error_code ? m->error_code : "unknown";
        if (shell)
                printf("error: %s: %s\n", code, m->error_message ? m->error_message : "");
        else
                fprintf(stderr, "vmclient: %s: %s\n", code,
                        m->error_message ? m->error_message : "");
        return EXIT_DAEMON;
}

static void print_json(const msgpack_object *o) {
        (void) vmm_json_print(stdout, o, 0);
        putchar('\n');
}

/* ---- human output ---- */

static void format_time(const msgpack_object *o, char *buf, size_t n) {
        uint64_t ms;
        if (!vmm_object_uint(o, &ms)) {
                (void) snprintf(buf, n, "-");
                return;
        }
        time_t t = (time_t) (ms / 1000);
        struct tm tm;
        if (!localtime_r(&t, &tm) || strftime(buf, n, "%Y-%m-%d %H:%M:%S %Z", &tm) == 0)
                (void) snprintf(buf, n, "%" PRIu64, ms);
}

/* A scalar as text: strings as they are, numbers, yes/no, "-" for nil or missing. */
static void format_scalar(const msgpack_object *o, char *buf, size_t n) {
        if (!o || o->type == MSGPACK_OBJECT_NIL)
                (void) snprintf(buf, n, "-");
        else if (o->type == MSGPACK_OBJECT_STR)
                (void) snprintf(buf, n, "%.*s", (int) MIN(o->via.str.size, (uint32_t) INT32_MAX),
                                o->via.str.ptr);
        else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
                (void) snprintf(buf, n, "%" PRIu64, o->via.u64);
        else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
                (void) snprintf(buf, n, "%" PRId64, o->via.i64);
        else if (o->type == MSGPACK_OBJECT_BOOLEAN)
                (void) snprintf(buf, n, "%s", o->via.boolean ? "yes" : "no");
        else
                (void) snprintf(buf, n, "?");
}

/* "disk1:100 disk2:200" (sizes in GiB); "-" when none. */
static char *format_disks(const msgpack_object *disks, const char *sep) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                return NULL;
        uint32_t n = disks && disks->type == MSGPACK_OBJECT_ARRAY ? disks->via.array.size : 0;
        for (uint32_t i = 0; i < n; i++) {
                char id[256], size[32];
                format_scalar(vmm_object_get(&disks->via.array.ptr[i], "id"), id, sizeof(id));
                format_scalar(vmm_object_get(&disks->via.array.ptr[i], "size"), size,
                              sizeof(size));
                fprintf(f, "%s%s:%s", i > 0 ? sep : "", id, size);
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
                char buf[512];
                _cleanup_free_ char *disks = NULL;
                const char *text = buf;
                if (!v && strcmp(fields[i], "vm_id") != 0)
                        continue;
                if (strcmp(fields[i], "disks") == 0)
                        text = disks = format_disks(v, " ");
                else if (strstr(fields[i], "_at"))
                        format_time(v, buf, sizeof(buf));
                else
                        format_scalar(v, buf, sizeof(buf));
                printf("%s:%*s %s\n", fields[i], (int) (13 - strlen(fields[i])), "",
                       text ? text : "?");
        }
}

/* A table of text cells; columns aligned, the last one not padded. */
typedef struct Table {
        size_t n_cols, n_rows;
        char **cells;           /* n_rows * n_cols, row 0 is the header */
} Table;

static void table_done(Table *t) {
        for (size_t i = 0; i < t->n_rows * t->n_cols; i++)
                free(t->cells[i]);
        free(t->cells);
        *t = (Table) { 0 };
}

static int table_add_row(Table *t, const char *const *row) {
        char **cells = realloc(t->cells, (t->n_rows + 1) * t->n_cols * sizeof(char *));
        if (!cells)
                return -ENOMEM;
        t->cells = cells;
        for (size_t i = 0; i < t->n_cols; i++) {
                cells[t->n_rows * t->n_cols + i] = strdup(row[i] ? row[i] : "?");
                if (!cells[t->n_rows * t->n_cols + i]) {
                        for (size_t j = 0; j < i; j++)
                                free(cells[t->n_rows * t->n_cols + j]);
                        return -ENOMEM;
                }
        }
        t->n_rows++;
        return 0;
}

static void table_print(const Table *t) {
        size_t width[16] = { 0 };
        for (size_t r = 0; r < t->n_rows; r++)
                for (size_t i = 0; i < t->n_cols && i < ELEMENTSOF(width); i++)
                        width[i] = MAX(width[i], strlen(t->cells[r * t->n_cols + i]));
        for (size_t r = 0; r < t->n_rows; r++) {
                for (size_t i = 0; i < t->n_cols; i++) {
                        const char *s = t->cells[r * t->n_cols + i];
                        if (i + 1 < t->n_cols)
                                printf("%-*s  ", (int) width[i], s);
                        else
                                printf("%s\n", s);
                }
        }
}

static int print_vm_table(const msgpack_object *const *vms, size_t n) {
        static const char *const header[] = {
                "VM_ID", "RAM", "CPU", "DISKS", "CONNECTED", "AUTHORIZED", "LAST_SEEN",
                "REGISTERED",
        };
        Table t = { .n_cols = ELEMENTSOF(header) };
        int r = table_add_row(&t, header);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                char id[128], ram[32], cpu[32], conn[8], authz[8], seen[64], reg[64];
                format_scalar(vmm_object_get(vms[i], "vm_id"), id, sizeof(id));
                format_scalar(vmm_object_get(vms[i], "ram"), ram, sizeof(ram));
                format_scalar(vmm_object_get(vms[i], "cpu"), cpu, sizeof(cpu));
                format_scalar(vmm_object_get(vms[i], "connected"), conn, sizeof(conn));
                format_scalar(vmm_object_get(vms[i], "authorized"), authz, sizeof(authz));
                format_time(vmm_object_get(vms[i], "last_seen_at"), seen, sizeof(seen));
                format_time(vmm_object_get(vms[i], "registered_at"), reg, sizeof(reg));
                _cleanup_free_ char *disks = format_disks(vmm_object_get(vms[i], "disks"), ",");
                const char *row[] = { id, ram, cpu, disks, conn, authz, seen, reg };
                r = table_add_row(&t, row);
        }
        if (r >= 0) {
                if (n == 0)
                        puts("(no VMs)");
                else
                        table_print(&t);
        }
        table_done(&t);
        return r;
}

static int print_disk_table(const msgpack_object *const *disks, size_t n) {
        static const char *const header[] = { "DISK", "VM", "SIZE" };
        Table t = { .n_cols = ELEMENTSOF(header) };
        int r = table_add_row(&t, header);
        for (size_t i = 0; r >= 0 && i < n; i++) {
                char id[128], vm[128], size[32];
                format_scalar(vmm_object_get(disks[i], "id"), id, sizeof(id));
                format_scalar(vmm_object_get(disks[i], "vm_id"), vm, sizeof(vm));
                format_scalar(vmm_object_get(disks[i], "size"), size, sizeof(size));
                const char *row[] = { id, vm, size };
                r = table_add_row(&t, row);
        }
        if (r >= 0) {
                if (n == 0)
                        puts("(no disks)");
                else
                        table_print(&t);
        }
        table_done(&t);
        return r;
}

/* ---- paged lists ---- */

typedef struct Pages {
        size_t n;
        VmmMessage *msgs;
} Pages;

static void pages_done(Pages *p) {
        for (size_t i = 0; i < p->n; i++)
                vmm_message_release(&p->msgs[i]);
        free(p->msgs);
        *p = (Pages) { 0 };
}

/* Runs a paged list call; on a daemon error the failing message is the last
 * page and *ret_failed is set. */
static int fetch_pages(VmmClient *c, const char *method, Params *p, bool all_pages,
                       Pages *pages, bool *ret_failed) {
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

/* Prints the items under key of every page: one JSON object, or a table. */
static int print_pages(const Pages *pages, const char *key, bool all_pages) {
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
                                (void) vmm_json_print(stdout, &a->via.array.ptr[j], 0);
                        }
                }
                printf("],\"next\":");
                if (last_next)
                        (void) vmm_json_print(stdout, last_next, 0);
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
        int r = strcmp(key, "disks") == 0 ? print_disk_table(items, k) : print_vm_table(items, k);
        if (r >= 0 && !all_pages && last_next && last_next->type == MSGPACK_OBJECT_STR)
                printf("(more: --after %.*s)\n", (int) last_next->via.str.size,
                       last_next->via.str.ptr);
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
                        fprintf(stderr, "vmclient: no password: set %s or give it on stdin\n",
                                env);
                return r;
        }
        _cleanup_erase_ char *first = NULL;
        int r = prompt_tty(prompt, &first);
        if (r < 0) {
                fprintf(stderr, "vmclient: cannot read a password: %s\n", strerror(-r));
                return r;
        }
        if (confirm) {
                _cleanup_erase_ char *again = NULL;
                r = prompt_tty("Retype password: ", &again);
                if (r < 0)
                        return r;
                if (strcmp(first, again) != 0) {
                        fprintf(stderr, "vmclient: passwords do not match\n");
                        return -EINVAL;
                }
        }
        *ret = first;
        first = NULL;
        return 0;
}

/* ---- one-shot commands ---- */

typedef struct Command Command;
struct Command {
        const char *name;
        int (*run)(const Command *cmd, int argc, char **argv);
        const char *synopsis;
        const char *summary;
        const char *help;
        bool needs_token;
};

static const Command *find_command(const char *name);
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
                return usage_error("--timeout wants seconds (0 waits forever): '%s'", s);
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
                        if (r == -ENOMEM) {
                                fprintf(stderr, "vmclient: out of memory\n");
                                return EXIT_DAEMON;
                        }
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
                        if (!ret->p.after) {
                                fprintf(stderr, "vmclient: out of memory\n");
                                return EXIT_DAEMON;
                        }
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
                ret->p.token = token();
                if (!ret->p.token)
                        return usage_error("%s needs a session token: --token TOKEN or "
                                           "VMCLIENT_TOKEN (from 'vmclient auth VM')",
                                           cmd->name);
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
        int r = open_client(&c);
        if (r != 0)
                return r;
        r = call(c, method, p, &m);
        if (r < 0)
                return exchange_failed(r, false);
        if (m.error != VMM_OK)
                return daemon_error(&m, false);
        if (arg_json)
                print_json(&m.result);
        else if (human)
                human(&m.result);
        return 0;
}

static void human_pong(const msgpack_object *o) {
        char version[64], protocol[16], t[64];
        format_scalar(vmm_object_get(o, "version"), version, sizeof(version));
        format_scalar(vmm_object_get(o, "protocol"), protocol, sizeof(protocol));
        format_time(vmm_object_get(o, "time"), t, sizeof(t));
        printf("pong: vmmd %s, protocol %s, server time %s\n", version, protocol, t);
}

static void human_token(const msgpack_object *o) {
        char tok[128];
        format_scalar(vmm_object_get(o, "token"), tok, sizeof(tok));
        puts(tok);
}

static void human_passwd(const msgpack_object *o) {
        puts("password changed");
}

static void human_logout(const msgpack_object *o) {
        puts("logged out");
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
                return usage_error("register needs --ram and --cpu");
        a.p.vm_id = a.args[0];
        if (get_password("VMCLIENT_PASSWORD", "Password: ", true, &a.p.password) < 0)
                return EXIT_USAGE;
        return run_simple(VMM_M_REGISTER, &a.p, print_vm);
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
                return usage_error("add needs --ram and --cpu");
        a.p.vm_id = a.args[0];
        a.p.has_disks = true;     /* vm.add takes the disk set, maybe empty */
        return run_simple(VMM_M_VM_ADD, &a.p, print_vm);
}

static int cmd_get(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        return run_simple(VMM_M_VM_GET, &a.p, print_vm);
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
        return run_simple(VMM_M_VM_UPDATE, &a.p, print_vm);
}

static int run_list(const Command *cmd, Parsed *a, const char *method, const char *key) {
        _cleanup_client_ VmmClient *c = NULL;
        _cleanup_(pages_done) Pages pages = { 0 };
        bool failed;
        int r = open_client(&c);
        if (r != 0)
                return r;
        r = fetch_pages(c, method, &a->p, a->all_pages, &pages, &failed);
        if (r < 0)
                return exchange_failed(r, false);
        if (failed)
                return daemon_error(&pages.msgs[pages.n - 1], false);
        if (print_pages(&pages, key, a->all_pages) < 0) {
                fprintf(stderr, "vmclient: out of memory\n");
                return EXIT_DAEMON;
        }
        return 0;
}

static int cmd_list(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, TAKES_PAGING, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 1, 1);
        if (r >= 0)
                return r;
        if (strcmp(a.args[0], "connected") != 0 && strcmp(a.args[0], "authorized") != 0 &&
            strcmp(a.args[0], "all") != 0)
                return usage_error("list: filter must be connected, authorized or all, "
                                   "not '%s'", a.args[0]);
        a.p.filter = a.args[0];
        return run_list(cmd, &a, VMM_M_VM_LIST, "vms");
}

static int cmd_disks(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, TAKES_PAGING, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;
        return run_list(cmd, &a, VMM_M_DISK_LIST, "disks");
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

static int cmd_shell(const Command *cmd, int argc, char **argv);

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
          "connected|authorized|all [--limit N] [--after ID] [--all-pages|--single-page]",
          "list VMs",
          "List VMs by id. Every page is fetched (--all-pages, the default) unless\n"
          "--single-page; --limit is the page size, --after the id to start after.", true },
        { "disks", cmd_disks, "[--limit N] [--after ID] [--all-pages|--single-page]",
          "list all disks",
          "List every disk with its VM, by disk id. Paging as for list.", true },
        { "passwd", cmd_passwd, "",
          "change the VM's password",
          "Change the session VM's password. The current password comes from\n"
          "VMCLIENT_PASSWORD, the new one from VMCLIENT_NEW_PASSWORD, else from two\n"
          "lines of stdin (current, then new), else prompts. Ends the VM's other\n"
          "sessions.", true },
        { "logout", cmd_logout, "",
          "end the session",
          "End the session of the token.", true },
        { "shell", cmd_shell, "",
          "interactive shell with the seed commands",
          "Interactive shell on one connection with the text commands AUTH, REGISTER,\n"
          "ADD_VM, UPDATE_VM, GET_VM, LIST_CONNECTED, LIST_AUTHORIZED, LIST_ALL,\n"
          "LIST_DISKS, PASSWD, LOGOUT, PING, HELP, EXIT (type HELP inside).", false },
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

static const Command *find_command(const char *name) {
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
               "  -j, --json              print results as JSON\n"
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

/* ---- the shell ---- */

typedef struct Shell {
        VmmClient *client;
        bool lost;                /* the connection is gone */
} Shell;

static const char shell_help[] =
        "Commands (case does not matter; a disk is [ID:]SIZE in GiB):\n"
        "  PING\n"
        "  REGISTER <vm_id> <password> <ram> <cpu> [disk...]\n"
        "  AUTH <vm_id> <password>\n"
        "  ADD_VM <vm_id> <ram> <cpu> [disk...]\n"
        "  UPDATE_VM <ram> <cpu> [disk...]     (the disks replace the whole set)\n"
        "  GET_VM\n"
        "  LIST_CONNECTED | LIST_AUTHORIZED | LIST_ALL | LIST_DISKS\n"
        "  PASSWD <current> <new>\n"
        "  LOGOUT\n"
        "  HELP\n"
        "  EXIT\n";

/* Runs method; prints the result with human() (or JSON), or the error line. */
static void shell_call(Shell *sh, const char *method, const Params *p,
                       void (*human)(const msgpack_object *result)) {
        _cleanup_message_ VmmMessage m = { 0 };
        int r = call(sh->client, method, p, &m);
        if (r < 0) {
                (void) exchange_failed(r, true);
                sh->lost = true;
                return;
        }
        if (m.error != VMM_OK) {
                (void) daemon_error(&m, true);
                if (m.msgid == 0)
                        sh->lost = true;     /* the daemon refused the stream */
                return;
        }
        if (arg_json)
                print_json(&m.result);
        else if (human)
                human(&m.result);
}

static void shell_list(Shell *sh, const char *method, const char *filter, const char *key) {
        _cleanup_(pages_done) Pages pages = { 0 };
        Params p = { .filter = filter };
        bool failed;
        int r = fetch_pages(sh->client, method, &p, true, &pages, &failed);
        free(p.after);
        if (r < 0) {
                if (r == -ENOMEM) {
                        puts("error: out of memory");
                        return;
                }
                (void) exchange_failed(r, true);
                sh->lost = true;
                return;
        }
        if (failed) {
                (void) daemon_error(&pages.msgs[pages.n - 1], true);
                return;
        }
        if (print_pages(&pages, key, true) < 0)
                puts("error: out of memory");
}

static void human_auth(const msgpack_object *o) {
        char vm[128], t[64];
        format_scalar(vmm_object_get(o, "vm_id"), vm, sizeof(vm));
        format_time(vmm_object_get(o, "expires_at"), t, sizeof(t));
        printf("authenticated as %s (session expires %s)\n", vm, t);
}

/* Parses "<ram> <cpu> [disk...]" from words; returns false after printing why. */
static bool shell_vm_spec(char **w, size_t n, Params *p) {
        if (n < 2 || parse_uint(w[0], VMM_RAM_MIN, VMM_RAM_MAX, &p->ram) < 0 ||
            parse_uint(w[1], VMM_CPU_MIN, VMM_CPU_MAX, &p->cpu) < 0) {
                puts("error: usage: <ram MiB> <cpu count> [[ID:]SIZE...] expected");
                return false;
        }
        p->has_ram = p->has_cpu = p->has_disks = true;
        for (size_t i = 2; i < n; i++) {
                int r = params_add_disk(p, w[i]);
                if (r < 0) {
                        printf("error: usage: bad disk '%s': [ID:]SIZE in GiB expected\n",
                               w[i]);
                        return false;
                }
        }
        return true;
}

static bool shell_arity(const char *cmd, size_t n, size_t min, size_t max, const char *usage) {
        if (n >= min && n <= max)
                return true;
        printf("error: usage: %s %s\n", cmd, usage);
        return false;
}

/* Returns false when the shell should end. */
static bool shell_line(Shell *sh, char *line) {
        char *words[4 + 4 * VMM_MAX_DISKS];
        size_t n = 0;
        for (char *save = NULL, *w = strtok_r(line, " \t\r\n", &save); w;
             w = strtok_r(NULL, " \t\r\n", &save)) {
                if (n == ELEMENTSOF(words)) {
                        puts("error: usage: too many words");
                        return true;
                }
                words[n++] = w;
        }
        if (n == 0 || words[0][0] == '#')
                return true;

        const char *cmd = words[0];
        char **args = words + 1;
        size_t nargs = n - 1;
        _cleanup_(params_done) Params p = { 0 };

        if (strcasecmp(cmd, "EXIT") == 0 || strcasecmp(cmd, "QUIT") == 0)
                return false;
        if (strcasecmp(cmd, "HELP") == 0) {
                fputs(shell_help, stdout);
        } else if (strcasecmp(cmd, "PING") == 0) {
                if (shell_arity("PING", nargs, 0, 0, ""))
                        shell_call(sh, VMM_M_PING, &p, human_pong);
        } else if (strcasecmp(cmd, "REGISTER") == 0) {
                if (!shell_arity("REGISTER", nargs, 4, SIZE_MAX,
                                 "<vm_id> <password> <ram> <cpu> [disk...]"))
                        return true;
                p.vm_id = args[0];
                p.password = strdup(args[1]);
                if (!p.password) {
                        puts("error: out of memory");
                        return true;
                }
                if (shell_vm_spec(args + 2, nargs - 2, &p))
                        shell_call(sh, VMM_M_REGISTER, &p, print_vm);
        } else if (strcasecmp(cmd, "AUTH") == 0) {
                if (!shell_arity("AUTH", nargs, 2, 2, "<vm_id> <password>"))
                        return true;
                p.vm_id = args[0];
                p.password = strdup(args[1]);
                if (!p.password) {
                        puts("error: out of memory");
                        return true;
                }
                shell_call(sh, VMM_M_AUTH, &p, human_auth);
        } else if (strcasecmp(cmd, "ADD_VM") == 0) {
                if (!shell_arity("ADD_VM", nargs, 3, SIZE_MAX, "<vm_id> <ram> <cpu> [disk...]"))
                        return true;
                p.vm_id = args[0];
                if (shell_vm_spec(args + 1, nargs - 1, &p))
                        shell_call(sh, VMM_M_VM_ADD, &p, print_vm);
        } else if (strcasecmp(cmd, "UPDATE_VM") == 0) {
                if (!shell_arity("UPDATE_VM", nargs, 2, SIZE_MAX, "<ram> <cpu> [disk...]"))
                        return true;
                if (shell_vm_spec(args, nargs, &p))
                        shell_call(sh, VMM_M_VM_UPDATE, &p, print_vm);
        } else if (strcasecmp(cmd, "GET_VM") == 0) {
                if (shell_arity("GET_VM", nargs, 0, 0, ""))
                        shell_call(sh, VMM_M_VM_GET, &p, print_vm);
        } else if (strcasecmp(cmd, "LIST_CONNECTED") == 0) {
                if (shell_arity("LIST_CONNECTED", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_VM_LIST, "connected", "vms");
        } else if (strcasecmp(cmd, "LIST_AUTHORIZED") == 0) {
                if (shell_arity("LIST_AUTHORIZED", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_VM_LIST, "authorized", "vms");
        } else if (strcasecmp(cmd, "LIST_ALL") == 0) {
                if (shell_arity("LIST_ALL", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_VM_LIST, "all", "vms");
        } else if (strcasecmp(cmd, "LIST_DISKS") == 0) {
                if (shell_arity("LIST_DISKS", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_DISK_LIST, NULL, "disks");
        } else if (strcasecmp(cmd, "PASSWD") == 0) {
                if (!shell_arity("PASSWD", nargs, 2, 2, "<current> <new>"))
                        return true;
                p.password = strdup(args[0]);
                p.new_password = strdup(args[1]);
                if (!p.password || !p.new_password) {
                        puts("error: out of memory");
                        return true;
                }
                shell_call(sh, VMM_M_PASSWD, &p, human_passwd);
        } else if (strcasecmp(cmd, "LOGOUT") == 0) {
                if (shell_arity("LOGOUT", nargs, 0, 0, ""))
                        shell_call(sh, VMM_M_LOGOUT, &p, human_logout);
        } else {
                printf("error: usage: unknown command '%s' (try HELP)\n", cmd);
        }
        return true;
}

static int cmd_shell(const Command *cmd, int argc, char **argv) {
        _cleanup_(parsed_done) Parsed a = { 0 };
        int r = parse_command(cmd, 0, argc, argv, &a);
        if (r < 0)
                r = want_args(cmd, &a, 0, 0);
        if (r >= 0)
                return r;

        _cleanup_client_ VmmClient *c = NULL;
        r = open_client(&c);
        if (r != 0)
                return r;
        Shell sh = { .client = c };
        bool tty = isatty(STDIN_FILENO);

        if (arg_token) {
                /* continue a session from a one-shot auth */
                _cleanup_message_ VmmMessage m = { 0 };
                msgpack_packer *pk;
                r = vmm_client_begin_map(c, VMM_M_RESUME, 1, &pk, NULL);
                if (r >= 0)
                        r = vmm_pack_kv_str(pk, "token", arg_token);
                if (r >= 0)
                        r = vmm_call_end(c, &m);
                if (r < 0)
                        return exchange_failed(r, false);
                if (m.error != VMM_OK)
                        (void) daemon_error(&m, false);
        }

        _cleanup_free_ char *line = NULL;
        size_t cap = 0;
        for (;;) {
                if (tty) {
                        fputs("vmm> ", stdout);
                        fflush(stdout);
                }
                if (getline(&line, &cap, stdin) < 0) {
                        if (tty)
                                putchar('\n');
                        break;
                }
                bool go_on = shell_line(&sh, line);
                fflush(stdout);
                if (!go_on)
                        break;
                if (sh.lost)
                        return EXIT_UNREACHABLE;
        }
        if (line)
                explicit_bzero(line, cap);
        return 0;
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
