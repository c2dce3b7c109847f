/* SPDX-License-Identifier: MIT */
/* vmclient's parts: the one-shot commands and main (vmclient.c), the
 * interactive shell (shell.c), and what both share, declared here. A new
 * command (such as `agent` or `describe`) lives in its own file, declares its
 * cmd_* function below and gets a row in the table in vmclient.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "tools/common/errors.h"
#include "vmm/client.h"

#define EXIT_DAEMON      1
#define EXIT_USAGE       2
#define EXIT_UNREACHABLE 3

#define DEFAULT_TIMEOUT_MS 60000

/* Options (argv globals). */
extern const char *arg_server;
extern bool arg_json;
extern const char *arg_token;
extern int arg_timeout_ms;

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

void params_done(Params *p);
/* "[ID:]SIZE" (GiB): -EINVAL when malformed, -E2BIG past the limit. */
int params_add_disk(Params *p, const char *spec);
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* ---- the daemon ---- */

/* --server, $VMCLIENT_SERVER, or 127.0.0.1:7707. */
const char *server_address(void);
/* --token or $VMCLIENT_TOKEN; NULL when neither. */
const char *session_token(void);

/* A connected client. On failure says why (with the next step to take) and
 * returns the exit status. */
int client_open(const Reporter *rep, VmmClient **ret);
/* One call with p's fields as the params map. 0 with *ret filled (which may
 * carry a daemon error), or a negative errno when the exchange failed. */
int call(VmmClient *c, const char *method, const Params *p, VmmMessage *ret);
/* The exchange failed (r < 0): says so; returns EXIT_UNREACHABLE. */
int report_exchange_failed(const Reporter *rep, int r);
/* A daemon error, in words for what the user typed (one-shot commands or the
 * shell's); returns EXIT_DAEMON. */
int report_reply_error(const Reporter *rep, const VmmMessage *m, bool shell);
/* The one-shot commands' reporter: "vmclient: " on stderr, JSON with --json. */
const Reporter *oneshot_reporter(void);

void client_freep(VmmClient **c);
#define _cleanup_client_ _cleanup_(client_freep)
void message_releasep(VmmMessage *m);
#define _cleanup_message_ _cleanup_(message_releasep)

/* ---- output ---- */

void print_json(const msgpack_object *o);
void human_pong(const msgpack_object *o);
void human_auth(const msgpack_object *o);
void human_vm(const msgpack_object *o);
void human_passwd(const msgpack_object *o);
void human_logout(const msgpack_object *o);
/* whoami's result as "key: value" lines. */
void human_whoami(const msgpack_object *o);
/* booking.get's result: "VM ... is booked by ... until ... (LEFT)" or "not booked". */
void human_booking(const msgpack_object *o);

/* The pages of a list call. */
typedef struct Pages {
        size_t n;
        VmmMessage *msgs;
} Pages;

void pages_done(Pages *p);
/* Runs a paged list call; on a daemon error the failing message is the last
 * page and *ret_failed is set. */
int fetch_pages(VmmClient *c, const char *method, Params *p, bool all_pages, Pages *pages,
                bool *ret_failed);
/* The items under key of every page: one JSON object, or a table. */
int print_pages(const Pages *pages, const char *key, bool all_pages);

/* ---- commands ---- */

typedef struct Command Command;
struct Command {
        const char *name;
        int (*run)(const Command *cmd, int argc, char **argv);
        const char *synopsis;
        const char *summary;
        const char *help;
        bool needs_token;
};

const Command *find_command(const char *name);

int cmd_shell(const Command *cmd, int argc, char **argv);
