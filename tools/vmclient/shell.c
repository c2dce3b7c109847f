/* SPDX-License-Identifier: MIT */
/* vmclient shell: the seeds' text commands (AUTH, LIST_ALL, ...) on one
 * connection that keeps its place.
 *
 * The connection is opened when a command first needs the daemon. Before each
 * command the shell checks that the daemon has not closed it meanwhile (an
 * anonymous connection is closed after 30 s idle; a restart or `vmadm kick`
 * closes any); if it has, or if it breaks during the command, the shell
 * connects again, resumes the session it logged into (resume with the token
 * AUTH returned) and runs the command once more. On a terminal, lines are
 * read with libedit: editing, history and TAB completion of command words
 * and VM ids. */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/macro.h"
#include "tools/common/edit.h"
#include "tools/common/errors.h"
#include "tools/common/output.h"
#include "tools/vmclient/vmclient.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

typedef struct Shell {
        VmmClient *client;      /* NULL until a command needs the daemon */
        char *token;            /* the session to resume (AUTH's, or --token) */
        char *vm_id;            /* the VM logged in as, when known */
        Reporter rep;
        bool interactive;
        int fatal;              /* not interactive: the daemon is unreachable, stop */
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
        "  WHOAMI                              (who the session is)\n"
        "  BOOKING [vm_id]                     (the VM's booking)\n"
        "  LOGOUT\n"
        "  HELP\n"
        "  EXIT\n";

static const char *const shell_words[] = {
        "PING", "REGISTER", "AUTH", "ADD_VM", "UPDATE_VM", "GET_VM", "LIST_CONNECTED",
        "LIST_AUTHORIZED", "LIST_ALL", "LIST_DISKS", "PASSWD", "WHOAMI", "BOOKING", "LOGOUT",
        "HELP", "EXIT",
};

static char *mfree_str(char *s) {
        free(s);
        return NULL;
}

static void shell_drop(Shell *sh) {
        sh->client = vmm_client_free(sh->client);
}

static void shell_done(Shell *sh) {
        shell_drop(sh);
        if (sh->token)
                explicit_bzero(sh->token, strlen(sh->token));
        free(sh->token);
        free(sh->vm_id);
}

/* The daemon closed the connection while we were not looking (nothing is
 * in flight between commands, so readable means EOF or an error message). */
static bool peer_closed(VmmClient *c) {
        struct pollfd p = { .fd = vmm_client_fd(c), .events = POLLIN | POLLRDHUP };
        char b;

        if (poll(&p, 1, 0) <= 0)
                return false;
        if (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL))
                return true;
        return recv(p.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static bool retryable(int r) {
        return r == -ECONNRESET || r == -EPIPE || r == -ENOTCONN;
}

static int shell_unreachable(Shell *sh, int status) {
        if (!sh->interactive)
                sh->fatal = status;
        return status;
}

/* resume the session on a new connection; the session may have ended. */
static int shell_resume(Shell *sh) {
        _cleanup_message_ VmmMessage m = { 0 };
        Params p = { .token = sh->token };
        int r = call(sh->client, VMM_M_RESUME, &p, &m);

        if (r < 0)
                return r;
        if (m.error == VMM_OK)
                return 0;
        (void) report_reply_error(&sh->rep, &m, true);
        if (m.msgid == 0)
                return -ECONNRESET;
        if (m.error == VMM_E_UNAUTHENTICATED || m.error == VMM_E_BAD_REQUEST) {
                /* the session ended (expired, revoked, logged out): go on anonymous */
                explicit_bzero(sh->token, strlen(sh->token));
                sh->token = mfree_str(sh->token);
                sh->vm_id = mfree_str(sh->vm_id);
        }
        return 0;
}

/* A live connection, resumed into the session; 0, or an exit status after
 * saying why not. */
static int shell_connect(Shell *sh) {
        int r;

        if (sh->client && peer_closed(sh->client))
                shell_drop(sh);
        if (sh->client)
                return 0;
        r = client_open(&sh->rep, &sh->client);
        if (r != 0)
                return shell_unreachable(sh, r);
        if (sh->token) {
                r = shell_resume(sh);
                if (r < 0) {
                        shell_drop(sh);
                        return shell_unreachable(sh, report_exchange_failed(&sh->rep, r));
                }
        }
        return 0;
}

/* One request with one retry on a fresh connection when the old one broke. */
static int shell_exchange(Shell *sh, const char *method, const Params *p, VmmMessage *ret) {
        for (int attempt = 0;; attempt++) {
                int r = shell_connect(sh);
                if (r != 0)
                        return r;
                r = call(sh->client, method, p, ret);
                if (r >= 0) {
                        if (ret->error != VMM_OK && ret->msgid == 0)
                                shell_drop(sh);        /* the daemon refused the stream */
                        return 0;
                }
                vmm_message_release(ret);
                shell_drop(sh);
                if (!retryable(r) || attempt > 0)
                        return shell_unreachable(sh, report_exchange_failed(&sh->rep, r));
        }
}

/* After a successful AUTH or LOGOUT: the session to resume. */
static void shell_remember_session(Shell *sh, const char *method, const msgpack_object *res) {
        if (strcmp(method, VMM_M_AUTH) == 0) {
                char *t = vmm_object_strdup(vmm_object_get(res, "token"));
                if (!t)
                        return;
                if (sh->token)
                        explicit_bzero(sh->token, strlen(sh->token));
                free(sh->token);
                sh->token = t;
                free(sh->vm_id);
                sh->vm_id = vmm_object_strdup(vmm_object_get(res, "vm_id"));
        } else if (strcmp(method, VMM_M_LOGOUT) == 0) {
                explicit_bzero(sh->token, sh->token ? strlen(sh->token) : 0);
                sh->token = mfree_str(sh->token);
                sh->vm_id = mfree_str(sh->vm_id);
        }
}

/* Runs method; prints the result with human() (or JSON), or the error. */
static void shell_call(Shell *sh, const char *method, const Params *p,
                       void (*human)(const msgpack_object *result)) {
        _cleanup_message_ VmmMessage m = { 0 };

        if (shell_exchange(sh, method, p, &m) != 0)
                return;
        if (m.error != VMM_OK) {
                (void) report_reply_error(&sh->rep, &m, true);
                return;
        }
        shell_remember_session(sh, method, &m.result);
        if (arg_json)
                print_json(&m.result);
        else if (human)
                human(&m.result);
}

static void shell_list(Shell *sh, const char *method, const char *filter, const char *key) {
        for (int attempt = 0;; attempt++) {
                _cleanup_(pages_done) Pages pages = { 0 };
                Params p = { .filter = filter };
                bool failed;

                if (shell_connect(sh) != 0)
                        return;
                int r = fetch_pages(sh->client, method, &p, true, &pages, &failed);
                free(p.after);
                if (r < 0 && retryable(r) && attempt == 0) {
                        shell_drop(sh);
                        continue;
                }
                if (r < 0) {
                        shell_drop(sh);
                        (void) shell_unreachable(sh, report_exchange_failed(&sh->rep, r));
                        return;
                }
                if (failed) {
                        (void) report_reply_error(&sh->rep, &pages.msgs[pages.n - 1], true);
                        return;
                }
                if (print_pages(&pages, key, true) < 0)
                        report_error(&sh->rep, ERROR_LOCAL, false, "out of memory");
                return;
        }
}

_printf_(2, 3)
static void shell_usage(Shell *sh, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        report_errorv(&sh->rep, ERROR_USAGE, true, fmt, ap);
        va_end(ap);
}

/* Parses "<ram> <cpu> [disk...]" from words; returns false after saying why. */
static bool shell_vm_spec(Shell *sh, char **w, size_t n, Params *p) {
        if (n < 2 || parse_uint(w[0], VMM_RAM_MIN, VMM_RAM_MAX, &p->ram) < 0 ||
            parse_uint(w[1], VMM_CPU_MIN, VMM_CPU_MAX, &p->cpu) < 0) {
                shell_usage(sh, "<ram MiB> <cpu count> [[ID:]SIZE...] expected");
                return false;
        }
        p->has_ram = p->has_cpu = p->has_disks = true;
        for (size_t i = 2; i < n; i++) {
                int r = params_add_disk(p, w[i]);
                if (r < 0) {
                        shell_usage(sh, "bad disk '%s': [ID:]SIZE in GiB expected", w[i]);
                        return false;
                }
        }
        return true;
}

static bool shell_arity(Shell *sh, const char *cmd, size_t n, size_t min, size_t max,
                        const char *usage) {
        if (n >= min && n <= max)
                return true;
        report_error(&sh->rep, ERROR_USAGE, true, "%s %s", cmd, usage);
        return false;
}

static bool shell_password_copy(Shell *sh, char **dst, const char *src) {
        *dst = strdup(src);
        if (!*dst)
                report_error(&sh->rep, ERROR_LOCAL, false, "out of memory");
        return *dst != NULL;
}

/* Lines that carry a password stay out of the history file. */
static bool line_has_secret(const char *cmd) {
        return strcasecmp(cmd, "AUTH") == 0 || strcasecmp(cmd, "REGISTER") == 0 ||
               strcasecmp(cmd, "PASSWD") == 0;
}

/* Returns false when the shell should end. */
static bool shell_line(Shell *sh, char *line, LineEditor *le) {
        char *words[4 + 4 * VMM_MAX_DISKS];
        size_t n = 0;
        _cleanup_free_ char *copy = strdup(line);

        for (char *save = NULL, *w = strtok_r(line, " \t\r\n", &save); w;
             w = strtok_r(NULL, " \t\r\n", &save)) {
                if (n == ELEMENTSOF(words)) {
                        shell_usage(sh, "too many words");
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

        if (copy && !line_has_secret(cmd))
                line_editor_remember(le, copy);
        if (strcasecmp(cmd, "EXIT") == 0 || strcasecmp(cmd, "QUIT") == 0)
                return false;
        if (strcasecmp(cmd, "HELP") == 0) {
                fputs(shell_help, stdout);
        } else if (strcasecmp(cmd, "PING") == 0) {
                if (shell_arity(sh, "PING", nargs, 0, 0, ""))
                        shell_call(sh, VMM_M_PING, &p, human_pong);
        } else if (strcasecmp(cmd, "REGISTER") == 0) {
                if (!shell_arity(sh, "REGISTER", nargs, 4, SIZE_MAX,
                                 "<vm_id> <password> <ram> <cpu> [disk...]"))
                        return true;
                p.vm_id = args[0];
                if (shell_password_copy(sh, &p.password, args[1]) &&
                    shell_vm_spec(sh, args + 2, nargs - 2, &p))
                        shell_call(sh, VMM_M_REGISTER, &p, human_vm);
        } else if (strcasecmp(cmd, "AUTH") == 0) {
                if (!shell_arity(sh, "AUTH", nargs, 2, 2, "<vm_id> <password>"))
                        return true;
                p.vm_id = args[0];
                if (shell_password_copy(sh, &p.password, args[1]))
                        shell_call(sh, VMM_M_AUTH, &p, human_auth);
        } else if (strcasecmp(cmd, "ADD_VM") == 0) {
                if (!shell_arity(sh, "ADD_VM", nargs, 3, SIZE_MAX,
                                 "<vm_id> <ram> <cpu> [disk...]"))
                        return true;
                p.vm_id = args[0];
                if (shell_vm_spec(sh, args + 1, nargs - 1, &p))
                        shell_call(sh, VMM_M_VM_ADD, &p, human_vm);
        } else if (strcasecmp(cmd, "UPDATE_VM") == 0) {
                if (!shell_arity(sh, "UPDATE_VM", nargs, 2, SIZE_MAX, "<ram> <cpu> [disk...]"))
                        return true;
                if (shell_vm_spec(sh, args, nargs, &p))
                        shell_call(sh, VMM_M_VM_UPDATE, &p, human_vm);
        } else if (strcasecmp(cmd, "GET_VM") == 0) {
                if (shell_arity(sh, "GET_VM", nargs, 0, 0, ""))
                        shell_call(sh, VMM_M_VM_GET, &p, human_vm);
        } else if (strcasecmp(cmd, "LIST_CONNECTED") == 0) {
                if (shell_arity(sh, "LIST_CONNECTED", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_VM_LIST, "connected", "vms");
        } else if (strcasecmp(cmd, "LIST_AUTHORIZED") == 0) {
                if (shell_arity(sh, "LIST_AUTHORIZED", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_VM_LIST, "authorized", "vms");
        } else if (strcasecmp(cmd, "LIST_ALL") == 0) {
                if (shell_arity(sh, "LIST_ALL", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_VM_LIST, "all", "vms");
        } else if (strcasecmp(cmd, "LIST_DISKS") == 0) {
                if (shell_arity(sh, "LIST_DISKS", nargs, 0, 0, ""))
                        shell_list(sh, VMM_M_DISK_LIST, NULL, "disks");
        } else if (strcasecmp(cmd, "PASSWD") == 0) {
                if (!shell_arity(sh, "PASSWD", nargs, 2, 2, "<current> <new>"))
                        return true;
                if (shell_password_copy(sh, &p.password, args[0]) &&
                    shell_password_copy(sh, &p.new_password, args[1]))
                        shell_call(sh, VMM_M_PASSWD, &p, human_passwd);
        } else if (strcasecmp(cmd, "WHOAMI") == 0) {
                if (shell_arity(sh, "WHOAMI", nargs, 0, 0, ""))
                        shell_call(sh, VMM_M_WHOAMI, &p, human_whoami);
        } else if (strcasecmp(cmd, "BOOKING") == 0) {
                if (!shell_arity(sh, "BOOKING", nargs, 0, 1, "[vm_id]"))
                        return true;
                p.vm_id = nargs == 1 ? args[0] : NULL;
                shell_call(sh, VMM_M_BOOKING_GET, &p, human_booking);
        } else if (strcasecmp(cmd, "LOGOUT") == 0) {
                if (shell_arity(sh, "LOGOUT", nargs, 0, 0, ""))
                        shell_call(sh, VMM_M_LOGOUT, &p, human_logout);
        } else {
                shell_usage(sh, "unknown command '%s' (try HELP)", cmd);
        }
        return true;
}

/* ---- completion ---- */

/* The VM ids the daemon lists to this session (one page), when the shell is
 * connected and logged in; nothing is said when that fails. */
static void complete_vm_ids(Shell *sh, char ***v, size_t *n) {
        _cleanup_message_ VmmMessage m = { 0 };
        Params p = { .filter = "all", .has_limit = true, .limit = VMM_PAGE_DEFAULT };

        if (!sh->client || !sh->token || peer_closed(sh->client))
                return;
        if (call(sh->client, VMM_M_VM_LIST, &p, &m) < 0) {
                shell_drop(sh);
                return;
        }
        (void) strv_push_keys(v, n, vmm_object_get(&m.result, "vms"), "vm_id");
}

static char **shell_complete(void *userdata, const char *before, bool *ret_fold_case) {
        Shell *sh = userdata;
        char **v = NULL, first[32] = "";
        size_t n = 0, words = line_words(before, first, sizeof(first));

        if (words == 0 || (words == 1 && strcasecmp(first, "HELP") == 0)) {
                *ret_fold_case = true;
                for (size_t i = 0; i < ELEMENTSOF(shell_words); i++)
                        if (strv_push(&v, &n, shell_words[i]) < 0)
                                break;
        } else if (words == 1 && strcasecmp(first, "ADD_VM") == 0 && sh->vm_id) {
                (void) strv_push(&v, &n, sh->vm_id);
        } else if (words == 1 && strcasecmp(first, "AUTH") == 0) {
                complete_vm_ids(sh, &v, &n);
                if (n == 0 && sh->vm_id)
                        (void) strv_push(&v, &n, sh->vm_id);
        }
        return v;
}

int cmd_shell(const Command *cmd, int argc, char **argv) {
        _cleanup_(shell_done) Shell sh = { 0 };
        LineEditor *le = NULL;
        char *line;

        if (argc > 1) {
                if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
                        printf("Usage: vmclient [OPTIONS] shell\n\n%s\n", cmd->help);
                        return 0;
                }
                report_error(oneshot_reporter(), ERROR_USAGE, false,
                             "shell: unexpected argument '%s' (options go before 'shell')",
                             argv[1]);
                return EXIT_USAGE;
        }
        const char *token = session_token();
        if (token) {
                /* continue the session of a one-shot auth */
                sh.token = strdup(token);
                if (!sh.token)
                        return EXIT_DAEMON;
        }
        if (line_editor_new("vmclient", "vmm> ", "vmclient_history", &le) < 0)
                return EXIT_DAEMON;
        sh.interactive = line_editor_interactive(le);
        /* errors are a line of the conversation; with --json the document is
         * on stdout and the sentence on stderr */
        sh.rep = (Reporter) { .prefix = arg_json ? "vmclient: " : "error: ",
                              .text = arg_json ? stderr : stdout, .json = arg_json };
        line_editor_set_completion(le, shell_complete, &sh);

        while (!sh.fatal && (line = line_editor_read(le))) {
                bool go_on = shell_line(&sh, line, le);
                fflush(stdout);
                if (!go_on)
                        break;
        }
        line_editor_free(le);
        return sh.fatal;
}
