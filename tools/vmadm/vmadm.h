/* SPDX-License-Identifier: MIT */
/* vmadm's parts: main, options and the command table (vmadm.c); the
 * connection, calls, pages and errors (rpc.c); the commands by domain
 * (cmd-admin.c, cmd-vm.c, cmd-people.c, cmd-booking.c, cmd-catalog.c,
 * watch.c) and the console (console.c). What they share is declared here. A
 * new command is a cmd_* function in the file of its domain and a row in
 * the table in vmadm.c. */
#pragma once

#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "shared/macro.h"
#include "tools/common/errors.h"
#include "tools/common/output.h"
#include "vmm/client.h"

#define EXIT_DAEMON      1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3
#define EXIT_LOCAL       4

#define DEFAULT_TIMEOUT_MS 60000
#define SYSTEM_SOCKET      "/run/vmmd/admin.sock"

/* -1 in go-on results: "no exit status yet, carry on". */
#define GO_ON (-1)

/* Options (argv globals). */
extern const char *arg_socket;
extern bool arg_json;
extern bool arg_no_color;
extern int arg_timeout_ms;      /* 0: the default of the command */

/* ---- small helpers ---- */

void erase_and_free(char *s);
void erase_and_freep(char **s);
#define _cleanup_erase_ _cleanup_(erase_and_freep)

const Reporter *reporter(void);
_printf_(1, 2) int usage_error(const char *fmt, ...);
int local_error(const char *what, int r);
/* A decimal number 0..max: -EINVAL when it is not one, -ERANGE past max. */
int parse_uint(const char *s, uint64_t max, uint64_t *ret);
bool use_color(void);
void print_json(const msgpack_object *o);
int default_timeout(void);
/* Prints a table, or says why it could not: 0 or EXIT_LOCAL. */
int items_table(const Column *cols, size_t n_cols, const msgpack_object *const *items, size_t n,
                const char *empty_note);
/* A map as "key: value" lines: times in UTC, durations, sizes with their
 * unit, maps nested (status, whoami). */
void print_map(const msgpack_object *o, int indent);

/* ---- the connection ---- */

typedef struct Ctx {
        VmmClient *client;
        char path[PATH_MAX];
        bool console;
        /* the running command's own words for the daemon's errors, checked
         * before vmadm's (NULL: none) */
        const ErrorText *texts;
} Ctx;

void ctx_drop(Ctx *ctx);
int ctx_connect(Ctx *ctx, int timeout_ms);
/* The exchange failed (r < 0): says so, drops the connection; EXIT_UNREACHABLE. */
int report_lost(Ctx *ctx, int r);
/* A daemon error, in words for what the administrator typed; EXIT_DAEMON. */
int daemon_error(Ctx *ctx, const VmmMessage *m);
/* After a call made with libvmm directly: r < 0 (lost, or out of memory),
 * a daemon error, or 0. */
int call_result(Ctx *ctx, const char *method, int r, VmmMessage *m);

/* ---- request parameters ---- */

typedef enum KvKind {
        KV_STR,
        KV_UINT,
        KV_NIL,
        KV_STRV,
        KV_UINTV,
        KV_BOOL,
        KV_RAW,                 /* a value packed already (disk maps, an OS map) */
        _KV_KIND_MAX,
        _KV_KIND_INVALID = -1,
} KvKind;

/* One named parameter beyond the common ones of Params. */
typedef struct Kv {
        const char *key;
        KvKind kind;
        const char *str;
        uint64_t uint;
        bool boolean;
        const char *const *strv;
        const uint64_t *uintv;
        const char *raw;
        size_t n;               /* items of strv/uintv, bytes of raw */
} Kv;

#define PARAMS_KV_MAX 24

typedef struct Params {
        const char *vm_id;
        const char *password;
        const char *filter;
        const char *id_str;             /* session.revoke */
        bool has_id_uint;               /* conn.kill, group, os and request ids */
        uint64_t id_uint;
        char *after_str;                /* paging by a string key */
        bool has_after_uint;            /* paging by a number */
        uint64_t after_uint;
        uint64_t limit;                 /* page size; 0: the daemon's default */
        Kv kv[PARAMS_KV_MAX];
        size_t n_kv;
} Params;

void params_str(Params *p, const char *key, const char *s);
void params_uint(Params *p, const char *key, uint64_t u);
void params_nil(Params *p, const char *key);
void params_bool(Params *p, const char *key, bool b);
void params_strv(Params *p, const char *key, const char *const *v, size_t n);
void params_uintv(Params *p, const char *key, const uint64_t *v, size_t n);
/* raw[0..n) is one MessagePack value; it must outlive the call. */
void params_raw(Params *p, const char *key, const char *raw, size_t n);
int params_pack(msgpack_packer *pk, const Params *p);
uint32_t params_count(const Params *p);

/* One call. Returns 0 with *ret a successful response, else an exit status
 * after saying why (*ret may then hold the error response: release it). */
int rpc(Ctx *ctx, const char *method, const Params *p, int pass_fd, int timeout_ms,
        VmmMessage *ret);
/* Calls method and prints the result as JSON or with human(). */
int run_simple(Ctx *ctx, const char *method, const Params *p,
               void (*human)(const msgpack_object *result, const Params *p));

/* ---- paged lists ---- */

typedef struct Pages {
        size_t n_msgs;
        VmmMessage *msgs;
        size_t n_items;
        const msgpack_object **items;
} Pages;

void pages_done(Pages *pg);
/* Fetches every page of a list method (following "next") and gathers the
 * items under key. */
int fetch_all(Ctx *ctx, const char *method, Params *p, const char *key, Pages *pg);
/* Fetches every page, then prints {"key": [...]} or table(&pg). */
int run_list(Ctx *ctx, const char *method, Params *p, const char *key,
             int (*table)(const Pages *pg));

/* A group named by its id or its name: its id, or an exit status after
 * saying why (a name no group has is not_found, status 1). */
int resolve_group(Ctx *ctx, const char *arg, uint64_t *ret);

/* ---- commands ---- */

typedef struct Command Command;
typedef int (*CommandFn)(Ctx *ctx, const Command *cmd, int argc, char **argv);

struct Command {
        const char *name;               /* "status", or "user add" for a subcommand */
        CommandFn run;
        const char *synopsis;
        const char *summary;
        const char *help;
        const Command *subs;            /* a word with subcommands (user, group, ...) */
        size_t n_subs;
};

const Command *command_list(size_t *ret_n);
const Command *find_command(const char *name);
int print_command_help(const Command *cmd);
void print_main_help(void);
/* Runs a command word with subcommands: argv[0] is the word. */
int run_subcommand(Ctx *ctx, const Command *cmd, int argc, char **argv);

/* Options that commands take (besides --json, --socket, --no-color,
 * --timeout and --help, which all take). */
enum {
        OPT_NO_COLOR = 0x100,
        OPT_TIMEOUT,
        OPT_PASSWORD_STDIN,
        OPT_SESSION,
        OPT_LIMIT,
        OPT_FORCE,
        OPT_ROLE,
        OPT_NEW_PASSWORD,
        OPT_GROUP,
        OPT_HOURS,
        OPT_MINUTES,
        OPT_FOR,
        OPT_USER,
        OPT_VM,
        OPT_OWNER,
        OPT_HOSTNAME,
        OPT_IP,
        OPT_OS,
        OPT_RAM,
        OPT_CPU,
        OPT_DISK,
        OPT_ISO,
        OPT_QCOW2,
        OPT_DESCRIPTION,
        OPT_STATE,
        OPT_SINCE,
        OPT_TYPES,
        OPT_BOOKED_BY,
        OPT_STATUS,
        OPT_COUNT,
        _OPT_MAX,
};

/* Which of those a command takes: a bit per option, 1 << (OPT_X - OPT_PASSWORD_STDIN). */
#define TAKES(o) (1ull << ((o) - OPT_PASSWORD_STDIN))
#define TAKES_PASSWORD TAKES(OPT_PASSWORD_STDIN)
#define TAKES_SESSION  TAKES(OPT_SESSION)
#define TAKES_LIMIT    TAKES(OPT_LIMIT)
#define TAKES_FORCE    TAKES(OPT_FORCE)

#define PARSED_MULTI_MAX 64

typedef struct Parsed {
        bool password_stdin;
        bool new_password;
        bool force;
        uint64_t limit;
        const char *session;
        /* the options with a value, by OPT_X - OPT_PASSWORD_STDIN (the last one given) */
        const char *value[_OPT_MAX - OPT_PASSWORD_STDIN];
        /* --ip and --disk may be repeated */
        const char *ips[PARSED_MULTI_MAX];
        size_t n_ips;
        const char *disks[PARSED_MULTI_MAX];
        size_t n_disks;
        char **args;
        int n_args;
} Parsed;

#define OPTVAL(a, o) ((a)->value[(o) - OPT_PASSWORD_STDIN])

int set_timeout(const char *s);
/* Returns GO_ON, or an exit status (also 0 after --help). */
int parse_command(const Command *cmd, uint64_t takes, int min_args, int max_args, int argc,
                  char **argv, Parsed *ret);
int read_password_stdin(char **ret);
/* --hours N or --minutes N (exactly one) into p as "hours"/"minutes". */
int duration_params(const Command *cmd, const Parsed *a, Params *p);

/* The commands, by file. */
int cmd_status(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_sessions(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_revoke(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_clients(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_kick(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_shutdown(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_reload(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_stats(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_backup(Ctx *ctx, const Command *cmd, int argc, char **argv);

int cmd_list(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_show(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_disks(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_create(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_delete(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_passwd(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_set(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_approve(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_suspend(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_monitor(Ctx *ctx, const Command *cmd, int argc, char **argv);

int cmd_whoami(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_user_add(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_user_list(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_user_show(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_user_set(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_user_del(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_group_add(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_group_list(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_group_show(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_group_rename(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_group_put(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_group_rm(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_group_del(Ctx *ctx, const Command *cmd, int argc, char **argv);

int cmd_book(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_renew(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_cancel(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_bookings(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_history(Ctx *ctx, const Command *cmd, int argc, char **argv);

int cmd_os_add(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_os_list(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_os_del(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_request_add(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_request_list(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_request_approve(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_request_reject(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_request_cancel(Ctx *ctx, const Command *cmd, int argc, char **argv);

int cmd_watch(Ctx *ctx, const Command *cmd, int argc, char **argv);
int cmd_console(Ctx *ctx, const Command *cmd, int argc, char **argv);
/* The console's HELP: every command with its synopsis, and the seeds' words. */
void console_help(void);
int cmd_help(Ctx *ctx, const Command *cmd, int argc, char **argv);
