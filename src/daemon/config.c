/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "shared/macro.h"
#include "vmm/protocol.h"

#include "build-config.h"

typedef enum KeyType {
        KEY_STRING,
        KEY_LISTEN,
        KEY_UINT,
        KEY_REGISTRATION,
        KEY_LOG_LEVEL,
} KeyType;

typedef struct Key {
        const char *name;       /* file key; the flag is --name with '_' -> '-' */
        KeyType type;
        size_t offset;
        uint64_t min, max;
        const char *help_arg;
        const char *help;
} Key;

#define OFF(f) offsetof(Config, f)

static const Key keys[] = {
        { "state_dir", KEY_STRING, OFF(state_dir), 0, 0, "DIR",
          "where the database lives (default: $STATE_DIRECTORY, /var/lib/vmmd for root,\n"
          "                          else $XDG_STATE_HOME/vmmd)" },
        { "listen", KEY_LISTEN, 0, 0, 0, "HOST:PORT",
          "TCP address for VM clients, repeatable (default 127.0.0.1:7707;\n"
          "                          IPv6 as [::1]:7707)" },
        { "admin_socket", KEY_STRING, OFF(admin_socket), 0, 0, "PATH",
          "admin Unix socket (default: $RUNTIME_DIRECTORY/admin.sock,\n"
          "                          /run/vmmd/admin.sock for root, else $XDG_RUNTIME_DIR/vmmd/admin.sock)" },
        { "admin_group", KEY_STRING, OFF(admin_group), 0, 0, "GROUP",
          "group whose members may use the admin socket (default vmmd)" },
        { "registration", KEY_REGISTRATION, 0, 0, 0, "open|closed",
          "whether VMs may register themselves (default open)" },
        { "session_ttl", KEY_UINT, OFF(session_ttl_s), 1, 365ull * 86400, "SECONDS",
          "a session ends this long after its last use (default 86400)" },
        { "log_level", KEY_LOG_LEVEL, 0, 0, 0, "LEVEL",
          "err, warning, notice, info or debug (default info)" },
        { "idle_timeout", KEY_UINT, OFF(idle_timeout_s), 1, 86400, "SECONDS",
          "close anonymous idle connections and half-received messages (default 30)" },
        { "max_connections", KEY_UINT, OFF(max_connections), 1, 1000000, "N",
          "connections in all (default 16384)" },
        { "max_connections_per_peer", KEY_UINT, OFF(max_connections_per_peer), 1, 1000000, "N",
          "connections per peer address (default 1024)" },
        { "auth_failures_per_minute", KEY_UINT, OFF(auth_failures_per_minute), 1, 1000000, "N",
          "failed auth/resume per peer address before rate_limited (default 10)" },
        { "sessions_per_vm", KEY_UINT, OFF(sessions_per_vm), 1, 1024, "N",
          "sessions a VM may hold; a new auth past that ends the oldest (default 16)" },
        { "max_message_tcp", KEY_UINT, OFF(max_message_tcp), 1024, 16u * 1024 * 1024, "BYTES",
          "largest message on TCP (default 65536)" },
        { "max_message_admin", KEY_UINT, OFF(max_message_admin), 1024, 64u * 1024 * 1024, "BYTES",
          "largest message on the admin socket (default 1048576)" },
        { "map_size_max", KEY_UINT, OFF(map_size_max), 1u << 20, UINT64_MAX / 2, "BYTES",
          "the database may grow to this size (default 17179869184)" },
        { "hash_workers", KEY_UINT, OFF(hash_workers), 1, 64, "N",
          "threads hashing passwords (default: number of CPUs, at most 4)" },
};

static const Key *key_find(const char *name, size_t len) {
        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if (strlen(keys[i].name) == len && memcmp(keys[i].name, name, len) == 0)
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

/* Apply one key=value; on error writes a message (without location). */
static int key_apply(Config *c, const Key *k, const char *value, char *err, size_t errlen) {
        int r;

        switch (k->type) {
        case KEY_STRING: {
                char **p = (char **) ((uint8_t *) c + k->offset);
                if (value[0] == '\0') {
                        snprintf(err, errlen, "%s: empty value", k->name);
                        return -EINVAL;
                }
                char *d = strdup(value);
                if (!d)
                        return -ENOMEM;
                free(*p);
                *p = d;
                return 0;
        }
        case KEY_LISTEN: {
                if (value[0] == '\0' || !strrchr(value, ':')) {
                        snprintf(err, errlen, "listen: expected HOST:PORT, got '%s'", value);
                        return -EINVAL;
                }
                if (c->n_listen >= CONFIG_MAX_LISTEN) {
                        snprintf(err, errlen, "listen: at most %d addresses", CONFIG_MAX_LISTEN);
                        return -E2BIG;
                }
                char *d = strdup(value);
                if (!d)
                        return -ENOMEM;
                c->listen[c->n_listen++] = d;
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
        case KEY_REGISTRATION:
                if (strcmp(value, "open") == 0)
                        c->registration_open = true;
                else if (strcmp(value, "closed") == 0)
                        c->registration_open = false;
                else {
                        snprintf(err, errlen, "registration: expected 'open' or 'closed', got '%s'",
                                 value);
                        return -EINVAL;
                }
                return 0;
        case KEY_LOG_LEVEL:
                r = log_level_from_string(value);
                if (r < 0) {
                        snprintf(err, errlen, "log_level: unknown level '%s'", value);
                        return r;
                }
                c->log_level = r;
                return 0;
        }
        return -EINVAL;
}

static void config_defaults(Config *c) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        *c = (Config) {
                .registration_open = true,
                .session_ttl_s = VMM_SESSION_TTL_S,
                .log_level = LOG_INFO,
                .idle_timeout_s = VMM_IDLE_TIMEOUT_MS / 1000,
                .max_connections = VMM_CONNS_MAX,
                .max_connections_per_peer = VMM_CONNS_PER_PEER,
                .auth_failures_per_minute = VMM_AUTH_FAILS_PER_MIN,
                .sessions_per_vm = VMM_SESSIONS_PER_VM,
                .max_message_tcp = VMM_MAX_MSG_TCP,
                .max_message_admin = VMM_MAX_MSG_ADMIN,
                .map_size_max = 16ull << 30,
                .hash_workers = ncpu < 1 ? 1 : ncpu > 4 ? 4 : (uint64_t) ncpu,
        };
}

static char *strip(char *s) {
        while (isspace((unsigned char) *s))
                s++;
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char) s[n - 1]))
                s[--n] = '\0';
        return s;
}

int config_parse_file(Config *c, const char *path, char *errbuf, size_t errlen) {
        FILE *f = fopen(path, "re");
        char line[4096], msg[512];
        unsigned lineno = 0;
        bool in_vmmd = true;
        int r;

        if (!f) {
                r = -errno;
                snprintf(errbuf, errlen, "%s: cannot open: %s", path, strerror(errno));
                return r;
        }
        while (fgets(line, sizeof line, f)) {
                lineno++;
                if (!strchr(line, '\n') && !feof(f)) {
                        snprintf(errbuf, errlen, "%s:%u: line too long", path, lineno);
                        fclose(f);
                        return -EINVAL;
                }
                char *s = strip(line);
                if (*s == '\0' || *s == '#' || *s == ';')
                        continue;
                if (*s == '[') {
                        char *e = strchr(s, ']');
                        if (!e || e[1] != '\0') {
                                snprintf(errbuf, errlen, "%s:%u: malformed section header", path,
                                         lineno);
                                fclose(f);
                                return -EINVAL;
                        }
                        *e = '\0';
                        in_vmmd = strcmp(strip(s + 1), "vmmd") == 0;
                        if (!in_vmmd) {
                                snprintf(errbuf, errlen, "%s:%u: unknown section [%s]", path,
                                         lineno, strip(s + 1));
                                fclose(f);
                                return -EINVAL;
                        }
                        continue;
                }
                char *eq = strchr(s, '=');
                if (!eq) {
                        snprintf(errbuf, errlen, "%s:%u: expected key = value", path, lineno);
                        fclose(f);
                        return -EINVAL;
                }
                *eq = '\0';
                char *key = strip(s), *value = strip(eq + 1);
                size_t vlen = strlen(value);
                if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
                        value[vlen - 1] = '\0';
                        value++;
                }
                const Key *k = key_find(key, strlen(key));
                if (!k) {
                        snprintf(errbuf, errlen, "%s:%u: unknown key '%s'", path, lineno, key);
                        fclose(f);
                        return -EINVAL;
                }
                msg[0] = '\0';
                r = key_apply(c, k, value, msg, sizeof msg);
                if (r < 0) {
                        snprintf(errbuf, errlen, "%s:%u: %s", path, lineno,
                                 msg[0] ? msg : strerror(-r));
                        fclose(f);
                        return r;
                }
        }
        fclose(f);
        return 0;
}

static void help(const char *prog) {
        printf("Usage: %s [OPTIONS]\n\n"
               "The VM inventory and session daemon: VM agents connect over TCP\n"
               "(MessagePack-RPC, see vmmd-protocol(7)); state is kept in LMDB.\n\n"
               "Options:\n", prog);
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                char flag[64];
                size_t j;
                for (j = 0; keys[i].name[j] && j < sizeof flag - 1; j++)
                        flag[j] = keys[i].name[j] == '_' ? '-' : keys[i].name[j];
                flag[j] = '\0';
                char left[96];
                snprintf(left, sizeof left, "--%s %s", flag, keys[i].help_arg);
                if (strlen(left) >= 24)
                        printf("  %s\n  %-24s%s\n", left, "", keys[i].help);
                else
                        printf("  %-24s%s\n", left, keys[i].help);
        }
        printf("  %-24s%s\n", "--config FILE",
               "read settings from FILE (INI, keys as above with '_';\n"
               "                          default " CONFIG_DEFAULT_FILE " if it exists); flags win");
        printf("  %-24s%s\n", "-h, --help", "show this help");
        printf("  %-24s%s\n", "--version", "show the version");
        printf("\nSee vmmd(8) and vmmd.conf(5).\n");
}

typedef struct FlagValue {
        const Key *key;
        const char *value;
} FlagValue;

int config_load(int argc, char *argv[], Config *ret) {
        enum { ARG_CONFIG = 0x100, ARG_VERSION, ARG_KEY0 };
        struct option options[ELEMENTSOF(keys) + 4];
        char names[ELEMENTSOF(keys)][64];
        FlagValue *flags = NULL;
        size_t n_flags = 0, n = 0;
        const char *config_file = NULL;
        char err[600];
        int c, r;

        Config cfg;
        config_defaults(&cfg);

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                size_t j;
                for (j = 0; keys[i].name[j]; j++)
                        names[i][j] = keys[i].name[j] == '_' ? '-' : keys[i].name[j];
                names[i][j] = '\0';
                options[n++] = (struct option) { names[i], required_argument, NULL,
                                                 ARG_KEY0 + (int) i };
        }
        options[n++] = (struct option) { "config", required_argument, NULL, ARG_CONFIG };
        options[n++] = (struct option) { "help", no_argument, NULL, 'h' };
        options[n++] = (struct option) { "version", no_argument, NULL, ARG_VERSION };
        options[n] = (struct option) { 0 };

        flags = calloc((size_t) argc + 1, sizeof *flags);
        if (!flags)
                return -ENOMEM;

        optind = 0;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help(argv[0]);
                        free(flags);
                        return 1;
                case ARG_VERSION:
                        printf("vmmd %s (protocol %d)\n", VMMD_VERSION, VMM_PROTOCOL_VERSION);
                        free(flags);
                        return 1;
                case ARG_CONFIG:
                        config_file = optarg;
                        break;
                case '?':
                        fprintf(stderr, "Try '%s --help'.\n", argv[0]);
                        free(flags);
                        return -EINVAL;
                default:
                        flags[n_flags++] = (FlagValue) { &keys[c - ARG_KEY0], optarg };
                }
        }
        if (optind < argc) {
                fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", argv[0],
                        argv[optind], argv[0]);
                free(flags);
                return -EINVAL;
        }

        if (!config_file && access(CONFIG_DEFAULT_FILE, F_OK) == 0)
                config_file = CONFIG_DEFAULT_FILE;
        if (config_file) {
                r = config_parse_file(&cfg, config_file, err, sizeof err);
                if (r < 0) {
                        fprintf(stderr, "vmmd: %s\n", err);
                        config_done(&cfg);
                        free(flags);
                        return r;
                }
                cfg.config_file = strdup(config_file);
                if (!cfg.config_file) {
                        config_done(&cfg);
                        free(flags);
                        return -ENOMEM;
                }
        }

        /* Flags win over the file; repeated --listen flags replace the file's list. */
        bool listen_reset = false;
        for (size_t i = 0; i < n_flags; i++) {
                if (flags[i].key->type == KEY_LISTEN && !listen_reset) {
                        for (size_t j = 0; j < cfg.n_listen; j++)
                                free(cfg.listen[j]);
                        cfg.n_listen = 0;
                        listen_reset = true;
                }
                err[0] = '\0';
                r = key_apply(&cfg, flags[i].key, flags[i].value, err, sizeof err);
                if (r < 0) {
                        fprintf(stderr, "vmmd: --%s: %s\n", names[flags[i].key - keys],
                                err[0] ? err : strerror(-r));
                        config_done(&cfg);
                        free(flags);
                        return r;
                }
        }
        free(flags);
        *ret = cfg;
        return 0;
}

void config_done(Config *c) {
        free(c->config_file);
        free(c->state_dir);
        for (size_t i = 0; i < c->n_listen; i++)
                free(c->listen[i]);
        free(c->admin_socket);
        free(c->admin_group);
        *c = (Config) { 0 };
}
