/* SPDX-License-Identifier: MIT */
/* vmadm console: the commands read from stdin, one per line, on one
 * connection; also the seeds' server-console commands (LIST_CONNECTED,
 * LIST_AUTHORIZED, LIST_ALL, LIST_DISKS, HELP, EXIT). On a terminal, line
 * editing, a history and completion (tools/common/edit.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tools/common/edit.h"
#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

#define WORDS_MAX 128

static const char *const seed_words[] = {
        "LIST_CONNECTED", "LIST_AUTHORIZED", "LIST_ALL", "LIST_DISKS", "HELP", "EXIT",
};

/* "  NAME SYNOPSIS", a long synopsis going on under its start. */
static void help_line(const Command *c) {
        const char *s = c->synopsis;
        int indent = 0;

        do {
                const char *nl = strchr(s, '\n');
                int len = nl ? (int) (nl - s) : (int) strlen(s);
                if (indent == 0) {
                        printf("  %s%s%.*s\n", c->name, len > 0 ? " " : "", len, s);
                        indent = (int) strlen(c->name) + 3;
                } else
                        printf("%*s%.*s\n", indent, "", len, s);
                s = nl ? nl + 1 : NULL;
        } while (s);
}

/* The commands with their synopses (from the table), then the seeds'. */
void console_help(void) {
        size_t n;
        const Command *commands = command_list(&n);

        puts("Commands (case does not matter; quote words with ' or \"):");
        for (size_t i = 0; i < n; i++) {
                const Command *c = &commands[i];
                if (strcmp(c->name, "console") == 0)
                        continue;
                if (c->n_subs == 0)
                        help_line(c);
                for (size_t j = 0; j < c->n_subs; j++)
                        help_line(&c->subs[j]);
        }
        puts("Seed server-console commands:\n"
             "  LIST_CONNECTED  LIST_AUTHORIZED  LIST_ALL  LIST_DISKS\n"
             "  HELP [COMMAND]  EXIT (or end of input)\n"
             "watch returns to the console on Ctrl-C. On a terminal: line editing, history,\n"
             "TAB completes commands and VM ids.");
}

/* Splits line in place into words: blanks separate, '...' keeps everything,
 * "..." and a backslash outside quotes keep the next character; so
 * --owner '' gives an empty word. -EINVAL for an open quote. */
static int split_words(char *line, char **words, int max, int *ret_n) {
        char *in = line, *out = line;
        int n = 0;

        for (;;) {
                while (*in == ' ' || *in == '\t' || *in == '\r' || *in == '\n')
                        in++;
                if (!*in)
                        break;
                if (n == max - 1)
                        return -E2BIG;
                words[n++] = out;
                while (*in && *in != ' ' && *in != '\t' && *in != '\r' && *in != '\n') {
                        if (*in == '\'') {
                                for (in++; *in && *in != '\''; )
                                        *out++ = *in++;
                                if (!*in)
                                        return -EINVAL;
                                in++;
                        } else if (*in == '"') {
                                for (in++; *in && *in != '"'; ) {
                                        if (*in == '\\' && (in[1] == '"' || in[1] == '\\'))
                                                in++;
                                        *out++ = *in++;
                                }
                                if (!*in)
                                        return -EINVAL;
                                in++;
                        } else if (*in == '\\' && in[1]) {
                                in++;
                                *out++ = *in++;
                        } else
                                *out++ = *in++;
                }
                /* the separator (if any) becomes the word's end */
                if (*in)
                        in++;
                *out++ = '\0';
        }
        words[n] = NULL;
        *ret_n = n;
        return 0;
}

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
        char *words[WORDS_MAX];
        char name[32];
        int n = 0, r;

        if (line[strspn(line, " \t")] == '#')
                return 0;
        r = split_words(line, words, WORDS_MAX, &n);
        if (r < 0) {
                report_error(reporter(), ERROR_USAGE, false, "%s",
                             r == -E2BIG ? "too many words" : "a quote is not closed");
                return EXIT_USAGE;
        }
        if (n == 0)
                return 0;

        if (strcasecmp(words[0], "EXIT") == 0 || strcasecmp(words[0], "QUIT") == 0) {
                *ret_exit = true;
                return 0;
        }
        if (strcasecmp(words[0], "HELP") == 0 && n == 1) {
                console_help();
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(seeds); i++) {
                if (strcasecmp(words[0], seeds[i].seed) != 0)
                        continue;
                if (n > 1) {
                        report_error(reporter(), ERROR_USAGE, false, "%s takes no arguments",
                                     seeds[i].seed);
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
                report_error(reporter(), ERROR_USAGE, false, "unknown command '%s' (try HELP)",
                             words[0]);
                return EXIT_USAGE;
        }
        words[0] = (char *) cmd->name;
        return cmd->run(ctx, cmd, n, words);
}

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

static bool word_in(const char *w, const char *const *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (strcasecmp(w, list[i]) == 0)
                        return true;
        return false;
}

static char **console_complete(void *userdata, const char *before, bool *ret_fold_case) {
        /* commands whose first argument is a VM */
        static const char *const takes_vm[] = {
                "show", "delete", "passwd", "sessions", "revoke", "set", "approve", "suspend",
                "monitor", "book", "renew", "cancel",
        };
        Ctx *ctx = userdata;
        char **v = NULL, first[32] = "", second[32] = "";
        size_t n = 0, n_commands, words = line_words(before, first, sizeof(first));
        const Command *commands = command_list(&n_commands);
        const Command *cmd = find_command(first);

        if (words >= 2) {
                /* the second word, for subcommands */
                const char *c = before;
                while (*c == ' ' || *c == '\t')
                        c++;
                c += strlen(first);
                (void) line_words(c, second, sizeof(second));
        }
        if (words == 0 || (words == 1 && strcasecmp(first, "help") == 0)) {
                *ret_fold_case = true;
                for (size_t i = 0; i < n_commands; i++)
                        if (strcmp(commands[i].name, "console") != 0)
                                (void) strv_push(&v, &n, commands[i].name);
                if (words == 0)
                        for (size_t i = 0; i < ELEMENTSOF(seed_words); i++)
                                (void) strv_push(&v, &n, seed_words[i]);
        } else if (words == 1 && cmd && cmd->n_subs > 0) {
                for (size_t i = 0; i < cmd->n_subs; i++)
                        (void) strv_push(&v, &n, cmd->subs[i].name + strlen(cmd->name) + 1);
        } else if (words == 1) {
                if (word_in(first, takes_vm, ELEMENTSOF(takes_vm)))
                        complete_vm_ids(ctx, &v, &n);
                if (strcasecmp(first, "list") == 0) {
                        (void) strv_push(&v, &n, "connected");
                        (void) strv_push(&v, &n, "authorized");
                        (void) strv_push(&v, &n, "all");
                }
        } else if (strcasecmp(first, "group") == 0 &&
                   ((strcmp(second, "add") == 0 && words >= 3) ||
                    (strcmp(second, "put") == 0 && words >= 3) ||
                    (strcmp(second, "rm") == 0 && words == 2)))
                complete_vm_ids(ctx, &v, &n);
        else if (strcasecmp(first, "request") == 0 && strcmp(second, "approve") == 0 &&
                 words >= 3)
                complete_vm_ids(ctx, &v, &n);
        return v;
}

int cmd_console(Ctx *ctx, const Command *cmd, int argc, char **argv) {
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
                ctx->texts = NULL;
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
