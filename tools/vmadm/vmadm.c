/* SPDX-License-Identifier: MIT */
/* vmadm: the administrators' tool for vmmd, over the admin Unix socket
 * (vmadm(8), vmmd-protocol(7) "Admin methods"). One-shot subcommands, an event
 * watcher, backups, and an interactive console that also takes the seeds'
 * server-console commands. This file holds main, the options and the command
 * table; the commands live in the files of their domain (vmadm.h). */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "build-config.h"
#include "tools/vmadm/vmadm.h"
#include "vmm/protocol.h"

const char *arg_socket = NULL;
bool arg_json = false;
bool arg_no_color = false;
int arg_timeout_ms = 0;

/* ---- options ---- */

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
        { "role",           required_argument, NULL, OPT_ROLE },
        { "new-password",   no_argument,       NULL, OPT_NEW_PASSWORD },
        { "group",          required_argument, NULL, OPT_GROUP },
        { "hours",          required_argument, NULL, OPT_HOURS },
        { "minutes",        required_argument, NULL, OPT_MINUTES },
        { "for",            required_argument, NULL, OPT_FOR },
        { "user",           required_argument, NULL, OPT_USER },
        { "vm",             required_argument, NULL, OPT_VM },
        { "owner",          required_argument, NULL, OPT_OWNER },
        { "hostname",       required_argument, NULL, OPT_HOSTNAME },
        { "ip",             required_argument, NULL, OPT_IP },
        { "os",             required_argument, NULL, OPT_OS },
        { "ram",            required_argument, NULL, OPT_RAM },
        { "cpu",            required_argument, NULL, OPT_CPU },
        { "disk",           required_argument, NULL, OPT_DISK },
        { "iso",            required_argument, NULL, OPT_ISO },
        { "qcow2",          required_argument, NULL, OPT_QCOW2 },
        { "description",    required_argument, NULL, OPT_DESCRIPTION },
        { "state",          required_argument, NULL, OPT_STATE },
        { "since",          required_argument, NULL, OPT_SINCE },
        { "types",          required_argument, NULL, OPT_TYPES },
        { "booked-by",      required_argument, NULL, OPT_BOOKED_BY },
        { "status",         required_argument, NULL, OPT_STATUS },
        { "count",          required_argument, NULL, OPT_COUNT },
        { 0 }
};

static const char *option_name(int c) {
        for (const struct option *o = command_options; o->name; o++)
                if (o->val == c)
                        return o->name;
        return "?";
}

int set_timeout(const char *s) {
        uint64_t v;

        if (parse_uint(s, 86400, &v) < 0)
                return usage_error("--timeout wants seconds, 0-86400 (0 waits forever): '%s'",
                                   s);
        arg_timeout_ms = v == 0 ? -1 : (int) (v * 1000);
        return 0;
}

int parse_command(const Command *cmd, uint64_t takes, int min_args, int max_args, int argc,
                  char **argv, Parsed *ret) {
        int c;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":hjs:", command_options, NULL)) >= 0) {
                if (c >= OPT_PASSWORD_STDIN && c < _OPT_MAX && !(takes & TAKES(c)))
                        return usage_error("%s: option '--%s' does not apply", cmd->name,
                                           option_name(c));
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
                        ret->password_stdin = true;
                        break;
                case OPT_NEW_PASSWORD:
                        ret->new_password = true;
                        break;
                case OPT_FORCE:
                        ret->force = true;
                        break;
                case OPT_SESSION:
                        ret->session = optarg;
                        break;
                case OPT_LIMIT:
                        if (parse_uint(optarg, VMM_PAGE_MAX, &ret->limit) < 0 ||
                            ret->limit < VMM_PAGE_MIN)
                                return usage_error("%s: --limit wants a page size, %d-%d: '%s'",
                                                   cmd->name, VMM_PAGE_MIN, VMM_PAGE_MAX,
                                                   optarg);
                        break;
                case OPT_IP:
                case OPT_DISK: {
                        const char **list = c == OPT_IP ? ret->ips : ret->disks;
                        size_t *n = c == OPT_IP ? &ret->n_ips : &ret->n_disks;
                        if (*n == PARSED_MULTI_MAX)
                                return usage_error("%s: too many --%s options", cmd->name,
                                                   option_name(c));
                        list[(*n)++] = optarg;
                        break;
                }
                case ':':
                        return usage_error("%s: option '%s' needs a value", cmd->name,
                                           argv[optind - 1]);
                case '?':
                        return usage_error("%s: unknown option '%s'", cmd->name,
                                           argv[optind - 1]);
                default:
                        /* the other options with a value: the last one given counts */
                        if (c >= OPT_PASSWORD_STDIN && c < _OPT_MAX)
                                OPTVAL(ret, c) = optarg;
                        break;
                }
        }
        ret->args = argv + optind;
        ret->n_args = argc - optind;
        if (ret->n_args < min_args)
                return usage_error("%s: missing argument; usage: vmadm %s %.*s", cmd->name,
                                   cmd->name, (int) strcspn(cmd->synopsis, "\n"),
                                   cmd->synopsis);
        if (ret->n_args > max_args)
                return usage_error("%s: unexpected argument '%s'", cmd->name,
                                   ret->args[max_args]);
        return GO_ON;
}

int read_password_stdin(char **ret) {
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

/* ---- subcommands ---- */

static const Command *find_sub(const Command *cmd, const char *word) {
        size_t len = strlen(cmd->name);

        for (size_t i = 0; i < cmd->n_subs; i++)
                if (strcmp(cmd->subs[i].name + len + 1, word) == 0)
                        return &cmd->subs[i];
        return NULL;
}

static void sub_words(const Command *cmd, char *buf, size_t size) {
        size_t len = strlen(cmd->name), off = 0;

        buf[0] = '\0';
        for (size_t i = 0; i < cmd->n_subs && off < size; i++)
                off += (size_t) snprintf(buf + off, size - off, "%s%s", i > 0 ? ", " : "",
                                         cmd->subs[i].name + len + 1);
}

int run_subcommand(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        char words[256];
        int i;

        /* the subcommand is the first word that is not an option (or its value) */
        for (i = 1; i < argc; i++) {
                const char *w = argv[i];
                if (strcmp(w, "-h") == 0 || strcmp(w, "--help") == 0)
                        return print_command_help(cmd);
                if (strcmp(w, "-s") == 0 || strcmp(w, "--socket") == 0 ||
                    strcmp(w, "--timeout") == 0)
                        i++;
                else if (w[0] != '-')
                        break;
        }
        sub_words(cmd, words, sizeof(words));
        if (i >= argc)
                return usage_error("%s: give a subcommand: %s", cmd->name, words);
        const Command *sub = find_sub(cmd, argv[i]);
        if (!sub)
                return usage_error("%s: unknown subcommand '%s'; the subcommands are %s",
                                   cmd->name, argv[i], words);

        /* argv without the command word: the subcommand first, then the rest */
        _cleanup_free_ char **sargv = calloc((size_t) argc + 1, sizeof(char *));
        int n = 0;
        if (!sargv)
                return local_error(cmd->name, -ENOMEM);
        sargv[n++] = (char *) sub->name;
        for (int j = 1; j < argc; j++)
                if (j != i)
                        sargv[n++] = argv[j];
        sargv[n] = NULL;
        return sub->run(ctx, sub, n, sargv);
}

/* ---- the commands ---- */

static const Command user_subs[] = {
        { "user add", cmd_user_add, "NAME [--role viewer|user|admin] [--password-stdin]",
          "create a user",
          "Create a user (role user unless --role says otherwise). The password is\n"
          "generated unless --password-stdin reads it from the first line of stdin;\n"
          "it is printed once, as 'password: PASSWORD'. A user logs in over TCP\n"
          "(vmclient user-login); a Unix login of the same name is the same person." },
        { "user list", cmd_user_list, "[--limit N]",
          "list users",
          "List the users: NAME ROLE CREATED LAST_LOGIN." },
        { "user show", cmd_user_show, "NAME",
          "show one user",
          "Show one user's record (never a password)." },
        { "user set", cmd_user_set, "NAME [--role ROLE] [--password-stdin|--new-password]",
          "change a user's role or password",
          "Change a user's role, or its password: --password-stdin reads it from the\n"
          "first line of stdin, --new-password has one generated and printed once.\n"
          "A new password ends the user's sessions." },
        { "user del", cmd_user_del, "NAME",
          "delete a user",
          "Delete a user; its bookings and its sessions end." },
};

static const Command group_subs[] = {
        { "group add", cmd_group_add, "NAME [VM...]",
          "create a group",
          "Create a group of VMs, with the VMs given (a VM is in one group at most:\n"
          "they leave the group they were in)." },
        { "group list", cmd_group_list, "[--limit N]",
          "list groups",
          "List the groups: ID NAME CREATED VMS." },
        { "group show", cmd_group_show, "GROUP",
          "show a group and its VMs",
          "Show a group, then its VMs: VM_ID STATUS ACCESS BOOKED_BY EXPIRES LEFT,\n"
          "which shows who holds each and which are free. With --json, the group's\n"
          "record only ('vmadm list --group GROUP --json' gives its VMs)." },
        { "group rename", cmd_group_rename, "GROUP NAME",
          "rename a group",
          "Give a group a new name (group names are unique)." },
        { "group put", cmd_group_put, "GROUP VM...",
          "move VMs into a group",
          "Move VMs into a group, all or none (each leaves the group it was in)." },
        { "group rm", cmd_group_rm, "VM [--group GROUP]",
          "take a VM out of its group",
          "Take a VM out of its group (with --group, only if it is in that one)." },
        { "group del", cmd_group_del, "GROUP",
          "delete a group",
          "Delete a group; its VMs stay, in no group." },
};

static const Command os_subs[] = {
        { "os add", cmd_os_add,
          "NAME VERSION [--iso URL] [--qcow2 URL] [--description TEXT]",
          "add an OS to the catalog",
          "Add an operating system to the catalog, with where its installer image\n"
          "(--iso) and disk image (--qcow2) are, and a description. Prints its id." },
        { "os list", cmd_os_list, "",
          "list the OS catalog",
          "List the catalog: ID NAME VERSION ISO QCOW2 DESCRIPTION." },
        { "os del", cmd_os_del, "ID",
          "delete an OS from the catalog",
          "Delete an OS from the catalog by its id." },
};

static const Command request_subs[] = {
        { "request add", cmd_request_add,
          "DESCRIPTION... --ram MiB --cpu N [--disk SIZE]... [--os ID] [--count N]",
          "ask for new VMs",
          "Ask for --count (default 1, at most 16) VMs of --ram MiB and --cpu CPUs,\n"
          "with a disk of SIZE GiB per --disk and an OS of the catalog, for the\n"
          "reason the DESCRIPTION words give. An administrator approves or rejects it." },
        { "request list", cmd_request_list,
          "[--state pending|approved|rejected|cancelled] [--limit N]",
          "list requests",
          "List requests (a user sees its own): ID STATE REQUESTER CREATED COUNT RAM\n"
          "CPU DISKS OS VMS REASON DESCRIPTION." },
        { "request approve", cmd_request_approve, "ID VM...",
          "approve a request, creating its VMs",
          "Approve a pending request: create as many VMs as it asks for, with these\n"
          "ids, described from the request, owned by its requester. Each VM's password\n"
          "is printed once, as for create." },
        { "request reject", cmd_request_reject, "ID REASON...",
          "reject a request",
          "Reject a pending request; the REASON words are kept with it." },
        { "request cancel", cmd_request_cancel, "ID",
          "withdraw one's own request",
          "Withdraw a pending request (its requester only)." },
};

#define SUBS(s) .subs = (s), .n_subs = ELEMENTSOF(s)

static const Command commands[] = {
        { "status", cmd_status, "",
          "show the daemon's status",
          "Show the daemon's version, uptime, counts of VMs, disks, sessions and\n"
          "connections, requests served, and the database's path and size." },
        { "list", cmd_list,
          "[connected|authorized|all] [--group GROUP] [--owner USER]\n"
          "[--booked-by USER] [--status on|off|requested] [--limit N]",
          "list VMs",
          "List VMs by id (all of them unless a filter is given): connected ones hold\n"
          "an open connection, authorized ones an unexpired session; --group, --owner,\n"
          "--booked-by and --status narrow the list further. RAM is in MiB, disk sizes\n"
          "in GiB. Every page is fetched; --limit sets the page size (lists only)." },
        { "show", cmd_show, "VM",
          "show one VM",
          "Show one VM's record: its description, its host name, addresses, OS, owner,\n"
          "group, access, status and booking (with the time left)." },
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
          "at once and its booking ends." },
        { "passwd", cmd_passwd, "VM [--password-stdin]",
          "set a new password for a VM",
          "Set VM's password (generated unless --password-stdin gives one) and end its\n"
          "sessions. The password is printed once, as 'password: PASSWORD'." },
        { "set", cmd_set,
          "VM [--owner USER] [--hostname NAME] [--ip ADDR[,ADDR]]...\n"
          "[--os NAME:VERSION] [--group GROUP]\n"
          "[--ram MiB] [--cpu N] [--disk [ID:]SIZE]...",
          "change a VM's record",
          "Change what an administrator keeps about a VM. An empty value clears a\n"
          "field: --owner '', --hostname '', --ip '', --os '', --group ''; --disk ''\n"
          "sets no disks. --ip and --disk may be repeated: the addresses, or the disks,\n"
          "given replace the VM's. --ram and --cpu come together for a VM that never\n"
          "described itself." },
        { "approve", cmd_approve, "VM",
          "let a VM log in",
          "Make a VM active: one registered while registration needs approval, or one\n"
          "suspended, may log in and be booked again." },
        { "suspend", cmd_suspend, "VM",
          "stop a VM from logging in",
          "Suspend a VM: its sessions end, and it can neither log in nor be booked until\n"
          "'vmadm approve VM'. A booking it holds stays." },
        { "monitor", cmd_monitor, "VM",
          "a VM's last report and the last hour",
          "Show a VM's status, its last report (uptime, load, memory, disk use) and a\n"
          "sample a minute of the last hour. Reports are kept in vmmd's memory only." },
        { "sessions", cmd_sessions, "[VM | --user USER] [--limit N]",
          "list sessions",
          "List the sessions (of one VM or user, or all), by id. The id is a public\n"
          "name of the session for 'revoke --session', never its token." },
        { "revoke", cmd_revoke, "VM | --user USER | --session ID",
          "end sessions",
          "End every session of VM or of a user, or the one session ID. Their\n"
          "connections become anonymous at once." },
        { "clients", cmd_clients, "[--limit N]",
          "list client connections",
          "List the open TCP connections: id, peer address, the VM they are attached\n"
          "to, since when, and how many requests they sent." },
        { "kick", cmd_kick, "CONN",
          "close a client connection",
          "Close the connection with id CONN (see 'vmadm clients')." },
        { "whoami", cmd_whoami, "",
          "who vmmd takes you for",
          "Show who the daemon takes the caller for: its name (the login name) and its\n"
          "role: admin for root, the daemon's user and its admin group, user for its\n"
          "users group." },
        { "user", run_subcommand,
          "add NAME [--role ROLE] [--password-stdin]\nlist\nshow NAME\n"
          "set NAME [--role ROLE] [--password-stdin|--new-password]\ndel NAME",
          "manage users (people)",
          "Manage the people who log in: viewers look, users also book and ask for\n"
          "VMs, admins do everything. 'vmadm help user SUBCOMMAND' tells more.",
          SUBS(user_subs) },
        { "group", run_subcommand,
          "add NAME [VM...]\nlist\nshow GROUP\nrename GROUP NAME\nput GROUP VM...\n"
          "rm VM [--group GROUP]\ndel GROUP",
          "manage groups of VMs",
          "Manage groups of VMs (pools booked by group). A GROUP is its id or its name\n"
          "(a number is taken as an id).\n"
          "'vmadm help group SUBCOMMAND' tells more.",
          SUBS(group_subs) },
        { "book", cmd_book, "VM|--group GROUP --hours N|--minutes N [--for USER]",
          "book a VM",
          "Book a VM, or with --group the VM of that group that has been free longest,\n"
          "for --hours or --minutes from now (the daemon's booking_max_hours is the\n"
          "most). It is booked for the caller; an administrator may book --for a user\n"
          "or a login name. Prints the VM, its holder and when it ends." },
        { "renew", cmd_renew, "VM --hours N|--minutes N",
          "make a booking longer",
          "Add --hours or --minutes to a booking (counted from its end, or from now\n"
          "when that has passed). The holder or an administrator." },
        { "cancel", cmd_cancel, "VM",
          "end a booking",
          "End a booking now. The holder or an administrator." },
        { "bookings", cmd_bookings, "[--user USER] [--group GROUP] [--limit N]",
          "list bookings",
          "List the bookings in force: VM_ID USER STARTED EXPIRES LEFT." },
        { "history", cmd_history, "[--user USER] [--vm VM] [--limit N]",
          "past bookings",
          "List what happened to bookings, newest first: TIME ACTION VM_ID USER EXPIRES\n"
          "BY; ACTION is book, renew, cancel, expire or end (a VM or user deleted, or\n"
          "an administrator's cancel: BY says who). A user sees only its own." },
        { "os", run_subcommand,
          "add NAME VERSION [--iso URL] [--qcow2 URL] [--description TEXT]\nlist\ndel ID",
          "manage the OS catalog",
          "Manage the catalog of operating systems that VM requests may name.\n"
          "'vmadm help os SUBCOMMAND' tells more.",
          SUBS(os_subs) },
        { "request", run_subcommand,
          "add DESCRIPTION... --ram MiB --cpu N [--disk SIZE]... [--os ID] [--count N]\n"
          "list [--state STATE]\napprove ID VM...\nreject ID REASON...\ncancel ID",
          "VM requests",
          "File, list and decide requests for new VMs. 'vmadm help request\n"
          "SUBCOMMAND' tells more.",
          SUBS(request_subs) },
        { "watch", cmd_watch, "[--since N] [--types PREFIX,...]",
          "print events as they happen",
          "Print the daemon's events until interrupted: one line per event,\n"
          "'TIME TYPE key=value ... feed=N', or with --json one JSON object per line.\n"
          "--since N first replays every kept event of the durable feed after position N\n"
          "(0: all that are kept), then follows live ones, with none lost or doubled.\n"
          "--types keeps the events whose type starts with one of the prefixes\n"
          "(booking.,group.). Each caller sees what its role may see." },
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
          "EXIT, in any case. Words may be quoted ('' is an empty word). End of input\n"
          "ends it too." },
        { "help", cmd_help, "[COMMAND [SUBCOMMAND]]",
          "show help",
          "Show help for vmadm or for one command." },
};

const Command *command_list(size_t *ret_n) {
        *ret_n = ELEMENTSOF(commands);
        return commands;
}

const Command *find_command(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (strcmp(commands[i].name, name) == 0)
                        return &commands[i];
        return NULL;
}

/* Each line of the synopsis after "vmadm [OPTIONS] NAME"; a command with
 * subcommands has one line each. */
int print_command_help(const Command *cmd) {
        const char *lead = "Usage:";
        const char *s = cmd->synopsis;

        do {
                const char *nl = strchr(s, '\n');
                int len = nl ? (int) (nl - s) : (int) strlen(s);
                /* a long synopsis goes on on the next line, under its start */
                if (cmd->n_subs == 0 && lead[0] == ' ')
                        printf("%*s%.*s\n", (int) strlen(cmd->name) + 24, "", len, s);
                else
                        printf("%s vmadm [OPTIONS] %s%s%.*s\n", lead, cmd->name,
                               len > 0 ? " " : "", len, s);
                lead = "      ";
                s = nl ? nl + 1 : NULL;
        } while (s);
        printf("\n%s\n", cmd->help);
        if (cmd->n_subs > 0) {
                printf("\nSubcommands:\n");
                for (size_t i = 0; i < cmd->n_subs; i++)
                        printf("  %-8s %s\n", cmd->subs[i].name + strlen(cmd->name) + 1,
                               cmd->subs[i].summary);
        }
        return 0;
}

void print_main_help(void) {
        printf("Usage: vmadm [OPTIONS] COMMAND [ARGS...]\n"
               "\n"
               "The administrators' tool for vmmd, the VM inventory daemon, over its admin\n"
               "socket. Members of vmmd's users group use it too, with the role user.\n"
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

static const Command *find_command_folded(const char *word) {
        char name[32];

        (void) snprintf(name, sizeof(name), "%s", word);
        for (char *p = name; *p; p++)
                *p = (char) tolower((unsigned char) *p);
        return find_command(name);
}

int cmd_help(Ctx *ctx, const Command *cmd, int argc, char **argv) {
        const Command *c;
        Parsed a = { 0 };
        int r = parse_command(cmd, 0, 0, 2, argc, argv, &a);

        if (r != GO_ON)
                return r;
        if (a.n_args == 0) {
                if (ctx->console)
                        console_help();
                else
                        print_main_help();
                return 0;
        }
        c = find_command_folded(a.args[0]);
        if (!c)
                return usage_error("unknown command '%s'", a.args[0]);
        if (a.n_args == 2) {
                const Command *sub = c->n_subs > 0 ? find_sub(c, a.args[1]) : NULL;
                if (!sub)
                        return usage_error("'%s' has no subcommand '%s'", c->name, a.args[1]);
                c = sub;
        }
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
