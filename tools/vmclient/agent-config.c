/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "agent-config.h"
#include "agent-log.h"
#include "discover.h"
#include "shared/macro.h"

typedef enum KeyType {
        KEY_STRING,
        KEY_SERVER,
        KEY_VM_ID,
        KEY_UINT,
        KEY_BOOL,
        KEY_LOG_LEVEL,
} KeyType;

typedef struct Key {
        const char *name;               /* file key; the flag is --name with '_' -> '-' */
        KeyType type;
        size_t offset;
        uint64_t min, max;
        bool describe;                  /* also a flag of describe */
        const char *arg;
        const char *help;
} Key;

#define OFF(f) offsetof(AgentConfig, f)

static const Key keys[] = {
        { "server", KEY_SERVER, 0, 0, 0, false, "HOST:PORT",
          "vmmd's address, repeatable: the next is tried when one is down\n"
          "                          (default 127.0.0.1:7707; [v6]:port works)" },
        { "vm_id", KEY_VM_ID, OFF(vm_id), 0, 0, true, "ID",
          "this VM's id (default: the short hostname)" },
        { "password_file", KEY_STRING, OFF(password_file), 0, 0, false, "FILE",
          "the VM's password, first line (default " AGENT_PASSWORD_DEFAULT ")" },
        { "state_dir", KEY_STRING, OFF(state_dir), 0, 0, false, "DIR",
          "where the token and the feed position live (default: $STATE_DIRECTORY,\n"
          "                          /var/lib/vmclient for root, else $XDG_STATE_HOME/vmclient)" },
        { "interval", KEY_UINT, OFF(interval_s), 1, 3600, false, "SECONDS",
          "report every this many seconds (default 10)" },
        { "hooks", KEY_STRING, OFF(hooks_dir), 0, 0, false, "DIR",
          "booking hooks (default " AGENT_HOOKS_DEFAULT ")" },
        { "hook_timeout", KEY_UINT, OFF(hook_timeout_s), 1, 86400, false, "SECONDS",
          "a hook still running after this is killed (default 30)" },
        { "register", KEY_BOOL, OFF(register_vm), 0, 0, false, NULL,
          "register the VM when vmmd does not know it" },
        { "all_disks", KEY_BOOL, OFF(all_disks), 0, 0, true, NULL,
          "also describe loop, ram, zram and dm-* devices" },
        { "log_level", KEY_LOG_LEVEL, 0, 0, 0, false, "LEVEL",
          "err, warning, notice, info or debug (default info)" },
};

static const Key *key_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (strcmp(keys[i].name, name) == 0)
                        return &keys[i];
        return NULL;
}

static int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        if (!isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

static int parse_bool(const char *s) {
        if (!strcasecmp(s, "yes") || !strcasecmp(s, "true") || !strcasecmp(s, "on") ||
            !strcmp(s, "1"))
                return 1;
        if (!strcasecmp(s, "no") || !strcasecmp(s, "false") || !strcasecmp(s, "off") ||
            !strcmp(s, "0"))
                return 0;
        return -EINVAL;
}

/* Applies one key = value; on error writes why into err. */
static int key_apply(AgentConfig *c, const Key *k, const char *value, char *err, size_t errlen) {
        int r;
        switch (k->type) {
        case KEY_STRING:
        case KEY_VM_ID: {
                char **p = (char **) ((uint8_t *) c + k->offset);
                if (value[0] == '\0') {
                        snprintf(err, errlen, "%s: empty value", k->name);
                        return -EINVAL;
                }
                if (k->type == KEY_VM_ID && !discover_vm_id_valid(value)) {
                        snprintf(err, errlen, "vm_id: 1-48 of A-Z a-z 0-9 . _ -, first a letter "
                                 "or digit: '%s'", value);
                        return -EINVAL;
                }
                char *d = strdup(value);
                if (!d)
                        return -ENOMEM;
                free(*p);
                *p = d;
                return 0;
        }
        case KEY_SERVER: {
                if (value[0] == '\0' || strchr(value, '/') || isspace((unsigned char) value[0])) {
                        snprintf(err, errlen, "server: expected HOST:PORT, got '%s'", value);
                        return -EINVAL;
                }
                if (c->n_servers >= AGENT_SERVERS_MAX) {
                        snprintf(err, errlen, "server: at most %d addresses", AGENT_SERVERS_MAX);
                        return -E2BIG;
                }
                char *d = strdup(value);
                if (!d)
                        return -ENOMEM;
                c->servers[c->n_servers++] = d;
                return 0;
        }
        case KEY_UINT: {
                uint64_t v;
                r = parse_uint(value, k->min, k->max, &v);
                if (r < 0) {
                        snprintf(err, errlen, "%s: expected an integer in %" PRIu64 "..%" PRIu64
                                 ", got '%s'", k->name, k->min, k->max, value);
                        return r;
                }
                *(uint64_t *) ((uint8_t *) c + k->offset) = v;
                return 0;
        }
        case KEY_BOOL:
                r = parse_bool(value);
                if (r < 0) {
                        snprintf(err, errlen, "%s: expected yes or no, got '%s'", k->name, value);
                        return r;
                }
                *(bool *) ((uint8_t *) c + k->offset) = r;
                return 0;
        case KEY_LOG_LEVEL:
                r = alog_level_from_string(value);
                if (r < 0) {
                        snprintf(err, errlen, "log_level: unknown level '%s'", value);
                        return r;
                }
                c->log_level = r;
                return 0;
        }
        return -EINVAL;
}

static char *strip(char *s) {
        while (isspace((unsigned char) *s))
                s++;
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char) s[n - 1]))
                s[--n] = '\0';
        return s;
}

/* Reads path into c. A missing file is -ENOENT (and no message). */
static int parse_file(AgentConfig *c, const char *path, char *errbuf, size_t errlen) {
        FILE *f = fopen(path, "re");
        char line[4096], msg[512];
        unsigned lineno = 0;
        int r = 0;

        if (!f) {
                r = -errno;
                snprintf(errbuf, errlen, "%s: cannot open: %s", path, strerror(errno));
                return r;
        }
        while (fgets(line, sizeof line, f)) {
                lineno++;
                if (!strchr(line, '\n') && !feof(f)) {
                        snprintf(errbuf, errlen, "%s:%u: line too long", path, lineno);
                        r = -EINVAL;
                        break;
                }
                char *s = strip(line);
                if (*s == '\0' || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        char *e = strchr(s, ']');
                        if (!e || e[1] != '\0' || (*e = '\0', strcmp(strip(s + 1), "agent") != 0)) {
                                snprintf(errbuf, errlen, "%s:%u: only an [agent] section is "
                                         "known", path, lineno);
                                r = -EINVAL;
                                break;
                        }
                        continue;
                }
                char *eq = strchr(s, '=');
                if (!eq) {
                        snprintf(errbuf, errlen, "%s:%u: expected key = value", path, lineno);
                        r = -EINVAL;
                        break;
                }
                *eq = '\0';
                char *key = strip(s), *value = strip(eq + 1);
                size_t vlen = strlen(value);
                if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
                        value[vlen - 1] = '\0';
                        value++;
                }
                const Key *k = key_find(key);
                if (!k) {
                        snprintf(errbuf, errlen, "%s:%u: unknown key '%s'", path, lineno, key);
                        r = -EINVAL;
                        break;
                }
                r = key_apply(c, k, value, msg, sizeof msg);
                if (r < 0) {
                        snprintf(errbuf, errlen, "%s:%u: %s", path, lineno,
                                 r == -ENOMEM ? "out of memory" : msg);
                        break;
                }
        }
        fclose(f);
        return r;
}

void agent_config_done(AgentConfig *c) {
        for (size_t i = 0; i < c->n_servers; i++)
                free(c->servers[i]);
        free(c->vm_id);
        free(c->password_file);
        free(c->state_dir);
        free(c->hooks_dir);
        free(c->config_path);
        *c = (AgentConfig) { 0 };
}

static int set_default(char **p, const char *value) {
        if (*p)
                return 0;
        *p = strdup(value);
        return *p ? 0 : -ENOMEM;
}

static int default_state_dir(char **ret) {
        const char *e = getenv("STATE_DIRECTORY");
        if (e && *e) {
                /* systemd joins several with ':'; ours is the first */
                *ret = strndup(e, strcspn(e, ":"));
                return *ret ? 0 : -ENOMEM;
        }
        if (geteuid() == 0)
                return set_default(ret, "/var/lib/vmclient");
        const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        int n;
        if (xdg && *xdg == '/')
                n = asprintf(ret, "%s/vmclient", xdg);
        else if (home && *home == '/')
                n = asprintf(ret, "%s/.local/state/vmclient", home);
        else
                return -ENOENT;
        return n < 0 ? -ENOMEM : 0;
}

static void print_help(AgentMode mode) {
        if (mode == AGENT_MODE_DESCRIBE)
                printf("Usage: vmclient describe [--json] [--report] [--vm-id ID] [--all-disks]\n"
                       "                         [--config FILE]\n\n"
                       "Print what 'vmclient agent' would send about this VM, without\n"
                       "connecting: RAM (MiB), CPUs, disks (id from the serial or WWN, size in\n"
                       "GiB), hostname, IP addresses and OS. --json prints one object with the\n"
                       "keys sent; --report adds the figures of a report (load, memory, disk\n"
                       "usage, uptime).\n\n");
        else
                printf("Usage: vmclient agent [OPTIONS]\n\n"
                       "Describe this VM to vmmd and stay connected: log in once and keep the\n"
                       "token, resume it on every reconnect, send the description when it\n"
                       "changes, report every interval, and run the booking hooks when the VM\n"
                       "is booked, renewed, about to expire or released (vmclient(1), AGENT;\n"
                       "agent.conf(5)).\n\n");
        printf("Options (each also a key of the configuration file; flags win):\n"
               "  --config FILE           configuration file (default " AGENT_CONFIG_DEFAULT ")\n");
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (mode == AGENT_MODE_DESCRIBE && !keys[i].describe)
                        continue;
                char flag[64];
                snprintf(flag, sizeof flag, "--%s%s%s", keys[i].name, keys[i].arg ? " " : "",
                         keys[i].arg ? keys[i].arg : "");
                for (char *p = flag + 2; *p && *p != ' '; p++)
                        if (*p == '_')
                                *p = '-';
                printf("  %-23s %s\n", flag, keys[i].help);
        }
        if (mode == AGENT_MODE_DESCRIBE)
                printf("  -j, --json              one JSON object\n"
                       "      --report            also the figures of vm.report\n");
        else
                printf("  --check-config          print the settings in effect and exit\n");
        printf("  -h, --help              show this help\n");
}

_printf_(1, 2)
static int usage_error(const char *fmt, ...) {
        va_list ap;
        fputs("vmclient: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs("\n", stderr);
        return 2;
}

enum {
        OPT_CONFIG = 0x100,
        OPT_CHECK_CONFIG,
        OPT_REPORT,
        OPT_KEY,                        /* + index into keys[] */
};

int agent_config_load(AgentMode mode, int argc, char **argv, AgentConfig *ret,
                      AgentArgs *ret_args) {
        struct option options[ELEMENTSOF(keys) + 6];
        char names[ELEMENTSOF(keys)][32];
        size_t n = 0;
        AgentConfig flags = { .log_level = -1 };
        bool flag_set[ELEMENTSOF(keys)] = { 0 };
        const char *config_path = NULL;
        AgentArgs args = { 0 };
        int c, r;
        char err[1024];

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (mode == AGENT_MODE_DESCRIBE && !keys[i].describe)
                        continue;
                snprintf(names[i], sizeof names[i], "%s", keys[i].name);
                for (char *p = names[i]; *p; p++)
                        if (*p == '_')
                                *p = '-';
                options[n++] = (struct option) { names[i],
                                                 keys[i].type == KEY_BOOL ? no_argument
                                                                          : required_argument,
                                                 NULL, OPT_KEY + (int) i };
        }
        options[n++] = (struct option) { "config", required_argument, NULL, OPT_CONFIG };
        options[n++] = (struct option) { "help", no_argument, NULL, 'h' };
        if (mode == AGENT_MODE_DESCRIBE) {
                options[n++] = (struct option) { "json", no_argument, NULL, 'j' };
                options[n++] = (struct option) { "report", no_argument, NULL, OPT_REPORT };
        } else
                options[n++] = (struct option) { "check-config", no_argument, NULL,
                                                 OPT_CHECK_CONFIG };
        options[n] = (struct option) { 0 };

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, mode == AGENT_MODE_DESCRIBE ? ":hj" : ":h", options,
                                NULL)) >= 0) {
                switch (c) {
                case 'h':
                        print_help(mode);
                        agent_config_done(&flags);
                        return 0;
                case 'j':
                        args.json = true;
                        break;
                case OPT_REPORT:
                        args.report = true;
                        break;
                case OPT_CHECK_CONFIG:
                        args.check_config = true;
                        break;
                case OPT_CONFIG:
                        config_path = optarg;
                        break;
                case ':':
                        agent_config_done(&flags);
                        return usage_error("option '%s' needs a value", argv[optind - 1]);
                case '?':
                        agent_config_done(&flags);
                        return usage_error("unknown option '%s'; try 'vmclient %s --help'",
                                           argv[optind - 1], argv[0]);
                default: {
                        size_t i = (size_t) (c - OPT_KEY);
                        r = key_apply(&flags, &keys[i], keys[i].type == KEY_BOOL ? "yes" : optarg,
                                      err, sizeof err);
                        if (r < 0) {
                                agent_config_done(&flags);
                                return usage_error("--%s: %s", names[i],
                                                   r == -ENOMEM ? "out of memory" : err);
                        }
                        flag_set[i] = true;
                        break;
                }
                }
        }
        if (optind < argc) {
                agent_config_done(&flags);
                return usage_error("%s: unexpected argument '%s'", argv[0], argv[optind]);
        }

        AgentConfig cfg = {
                .interval_s = AGENT_INTERVAL_DEFAULT,
                .hook_timeout_s = AGENT_HOOK_TIMEOUT_DEFAULT,
                .log_level = LOG_INFO,
        };
        const char *path = config_path ? config_path : AGENT_CONFIG_DEFAULT;
        r = parse_file(&cfg, path, err, sizeof err);
        if (r == -ENOENT && !config_path)
                r = 0;                  /* no file: the defaults and the flags */
        else if (r >= 0 && !(cfg.config_path = strdup(path)))
                r = -ENOMEM;
        if (r < 0) {
                agent_config_done(&cfg);
                agent_config_done(&flags);
                return usage_error("%s", r == -ENOMEM ? "out of memory" : err);
        }

        /* the flags win, key by key; --server replaces the file's list */
        if (flags.n_servers > 0) {
                for (size_t i = 0; i < cfg.n_servers; i++)
                        free(cfg.servers[i]);
                memcpy(cfg.servers, flags.servers, sizeof cfg.servers);
                cfg.n_servers = flags.n_servers;
                flags.n_servers = 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (!flag_set[i] || keys[i].type == KEY_SERVER)
                        continue;
                if (keys[i].type == KEY_STRING || keys[i].type == KEY_VM_ID) {
                        char **dst = (char **) ((uint8_t *) &cfg + keys[i].offset);
                        char **src = (char **) ((uint8_t *) &flags + keys[i].offset);
                        free(*dst);
                        *dst = TAKE_PTR(*src);
                } else if (keys[i].type == KEY_UINT)
                        *(uint64_t *) ((uint8_t *) &cfg + keys[i].offset) =
                                *(uint64_t *) ((uint8_t *) &flags + keys[i].offset);
                else if (keys[i].type == KEY_BOOL)
                        *(bool *) ((uint8_t *) &cfg + keys[i].offset) =
                                *(bool *) ((uint8_t *) &flags + keys[i].offset);
                else if (keys[i].type == KEY_LOG_LEVEL)
                        cfg.log_level = flags.log_level;
        }
        agent_config_done(&flags);

        r = 0;
        if (cfg.n_servers == 0) {
                cfg.servers[0] = strdup(VMM_DEFAULT_HOST ":7707");
                cfg.n_servers = cfg.servers[0] ? 1 : 0;
                r = cfg.servers[0] ? 0 : -ENOMEM;
        }
        if (r >= 0)
                r = set_default(&cfg.password_file, AGENT_PASSWORD_DEFAULT);
        if (r >= 0)
                r = set_default(&cfg.hooks_dir, AGENT_HOOKS_DEFAULT);
        if (r >= 0 && !cfg.state_dir) {
                r = default_state_dir(&cfg.state_dir);
                if (r == -ENOENT) {
                        agent_config_done(&cfg);
                        return usage_error("no state directory: set state_dir (or HOME)");
                }
        }
        if (r < 0) {
                agent_config_done(&cfg);
                return usage_error("out of memory");
        }
        *ret = cfg;
        *ret_args = args;
        return -1;
}

void agent_config_print(const AgentConfig *c) {
        static const char *const levels[] = {
                "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
        };
        printf("config = %s\n", c->config_path ? c->config_path : "(none)");
        for (size_t i = 0; i < c->n_servers; i++)
                printf("server = %s\n", c->servers[i]);
        printf("vm_id = %s\n", c->vm_id ? c->vm_id : "(the short hostname)");
        printf("password_file = %s\n", c->password_file);
        printf("state_dir = %s\n", c->state_dir);
        printf("interval = %" PRIu64 "\n", c->interval_s);
        printf("hooks = %s\n", c->hooks_dir);
        printf("hook_timeout = %" PRIu64 "\n", c->hook_timeout_s);
        printf("register = %s\n", c->register_vm ? "yes" : "no");
        printf("all_disks = %s\n", c->all_disks ? "yes" : "no");
        printf("log_level = %s\n", c->log_level >= 0 && c->log_level < 8 ? levels[c->log_level]
                                                                         : "?");
}
