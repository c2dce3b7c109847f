/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
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
        KEY_PROXY,      /* repeatable: an address or ADDRESS/PREFIX */
        KEY_UINT,
        KEY_BOOL,       /* yes|no */
        KEY_CHOICE,     /* int: index into choices */
        KEY_LOG_LEVEL,
} KeyType;

typedef struct Key {
        const char *name;       /* file key; the flag is --name with '_' -> '-' */
        KeyType type;
        size_t offset;
        uint64_t min, max;
        const char *help_arg;
        const char *help;
        const char *const *choices;
} Key;

static const char *const registration_choices[] = { "open", "closed", "approval", NULL };
static const char *const visibility_choices[] = { "all", "self", NULL };

const char *registration_to_string(int r) {
        return r >= 0 && r < _REGISTRATION_MAX ? registration_choices[r] : "?";
}

#define OFF(f) offsetof(Config, f)

static const Key keys[] = {
        { "state_dir", KEY_STRING, OFF(state_dir), 0, 0, "DIR",
          "where the database lives (default: $STATE_DIRECTORY, /var/lib/vmmd for root,\n"
          "                          else $XDG_STATE_HOME/vmmd)", NULL },
        { "listen", KEY_LISTEN, 0, 0, 0, "HOST:PORT",
          "TCP address for VM clients, repeatable (default 127.0.0.1:7707;\n"
          "                          IPv6 as [::1]:7707)", NULL },
        { "admin_socket", KEY_STRING, OFF(admin_socket), 0, 0, "PATH",
          "admin Unix socket (default: $RUNTIME_DIRECTORY/admin.sock,\n"
          "                          /run/vmmd/admin.sock for root, else $XDG_RUNTIME_DIR/vmmd/admin.sock)", NULL },
        { "admin_group", KEY_STRING, OFF(admin_group), 0, 0, "GROUP",
          "group whose members may use the admin socket as admins (default vmmd)", NULL },
        { "users_group", KEY_STRING, OFF(users_group), 0, 0, "GROUP",
          "group whose members use the admin socket with role user (default vmmd-users)", NULL },
        { "registration", KEY_CHOICE, OFF(registration), 0, 0, "open|closed|approval",
          "whether VMs may register themselves; approval: they wait for vm.approve\n"
          "                          (default open)", registration_choices },
        { "vm_visibility", KEY_CHOICE, OFF(vm_visibility), 0, 0, "all|self",
          "what a VM session's vm.list and disk.list show (default all)", visibility_choices },
        { "tcp_admin", KEY_BOOL, OFF(tcp_admin), 0, 0, "yes|no",
          "serve vm.create, vm.delete, vm.passwd and session.* to admin users on TCP\n"
          "                          (the HTTP gateway's admins need it; default no)", NULL },
        { "trusted_proxies", KEY_PROXY, 0, 0, 0, "ADDRESS[/PREFIX]",
          "a proxy allowed to name its client's address as peer, repeatable (default none)", NULL },
        { "session_ttl", KEY_UINT, OFF(session_ttl_s), 1, 365ull * 86400, "SECONDS",
          "a session ends this long after its last use (default 86400)", NULL },
        { "log_level", KEY_LOG_LEVEL, 0, 0, 0, "LEVEL",
          "err, warning, notice, info or debug (default info)", NULL },
        { "idle_timeout", KEY_UINT, OFF(idle_timeout_s), 1, 86400, "SECONDS",
          "close anonymous idle connections and half-received messages (default 30)", NULL },
        { "max_connections", KEY_UINT, OFF(max_connections), 1, 1000000, "N",
          "connections in all (default 16384)", NULL },
        { "max_connections_per_peer", KEY_UINT, OFF(max_connections_per_peer), 1, 1000000, "N",
          "connections per peer address (default 1024)", NULL },
        { "max_unsent_total", KEY_UINT, OFF(max_unsent_total), 1u << 20, 1ull << 40, "BYTES",
          "unsent output of all connections; past it the largest non-reading ones\n"
          "                          are closed (default 67108864)", NULL },
        { "auth_failures_per_minute", KEY_UINT, OFF(auth_failures_per_minute), 1, 1000000, "N",
          "failed logins per peer address before rate_limited (default 10)", NULL },
        { "registrations_per_minute", KEY_UINT, OFF(registrations_per_minute), 1, 1000000, "N",
          "register calls per peer address before rate_limited (default 10)", NULL },
        { "hashes_per_peer", KEY_UINT, OFF(hashes_per_peer), 1, 1024, "N",
          "password hashes in flight per peer address (default 4)", NULL },
        { "hash_queue_max", KEY_UINT, OFF(hash_queue_max), 1, 1000000, "N",
          "password hashes waiting in all (default 256)", NULL },
        { "ipv6_prefix", KEY_UINT, OFF(ipv6_prefix), 1, 128, "BITS",
          "IPv6 peers are counted by this prefix (default 64)", NULL },
        { "sessions_per_vm", KEY_UINT, OFF(sessions_per_vm), 1, 1024, "N",
          "sessions a VM or user may hold; a new login past that ends the oldest\n"
          "                          (default 16)", NULL },
        { "max_message_tcp", KEY_UINT, OFF(max_message_tcp), 1024, 16u * 1024 * 1024, "BYTES",
          "largest message on TCP (default 65536)", NULL },
        { "max_message_admin", KEY_UINT, OFF(max_message_admin), 1024, 64u * 1024 * 1024, "BYTES",
          "largest message on the admin socket (default 1048576)", NULL },
        { "map_size_max", KEY_UINT, OFF(map_size_max), 1u << 20, UINT64_MAX / 2, "BYTES",
          "the database may grow to this size (default 17179869184)", NULL },
        { "hash_workers", KEY_UINT, OFF(hash_workers), 1, 64, "N",
          "threads hashing passwords (default: CPUs - 1, at least 1, at most 4)", NULL },
        { "booking_max_hours", KEY_UINT, OFF(booking_max_hours), 1, 24ull * 365, "HOURS",
          "a booking ends at most this long from now (default 168)", NULL },
        { "bookings_per_user", KEY_UINT, OFF(bookings_per_user), 1, 100000, "N",
          "bookings one user may hold (default 16)", NULL },
        { "booking_warn_minutes", KEY_UINT, OFF(booking_warn_minutes), 0, 24ull * 60, "MINUTES",
          "booking.expiring is sent this long before the end (default 15)", NULL },
        { "heartbeat_timeout", KEY_UINT, OFF(heartbeat_timeout_s), 1, 86400, "SECONDS",
          "a VM that neither is connected nor reported for this long is off (default 60)",
          NULL },
        { "event_history", KEY_UINT, OFF(event_history), 1, 100000000, "N",
          "feed events kept for events.watch since (default 100000)", NULL },
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

/* ADDRESS or ADDRESS/PREFIX, IPv4 or IPv6 */
static bool valid_proxy(const char *value) {
        char addr[INET6_ADDRSTRLEN + 8];
        const char *slash = strchr(value, '/');
        size_t n = slash ? (size_t) (slash - value) : strlen(value);
        uint8_t buf[16];
        uint64_t prefix;
        bool v6;

        if (n == 0 || n >= sizeof addr)
                return false;
        memcpy(addr, value, n);
        addr[n] = '\0';
        v6 = strchr(addr, ':') != NULL;
        if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, buf) != 1)
                return false;
        return !slash || parse_uint(slash + 1, 0, v6 ? 128 : 32, &prefix) >= 0;
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
        case KEY_PROXY: {
                if (!valid_proxy(value)) {
                        snprintf(err, errlen, "trusted_proxies: expected an IPv4 or IPv6 address, "
                                 "optionally /PREFIX, got '%s'", value);
                        return -EINVAL;
                }
                if (c->n_trusted_proxies >= CONFIG_MAX_PROXIES) {
                        snprintf(err, errlen, "trusted_proxies: at most %d entries",
                                 CONFIG_MAX_PROXIES);
                        return -E2BIG;
                }
                char *d = strdup(value);
                if (!d)
                        return -ENOMEM;
                c->trusted_proxies[c->n_trusted_proxies++] = d;
                return 0;
        }
        case KEY_BOOL: {
                bool *b = (bool *) ((uint8_t *) c + k->offset);
                if (strcmp(value, "yes") == 0 || strcmp(value, "true") == 0)
                        *b = true;
                else if (strcmp(value, "no") == 0 || strcmp(value, "false") == 0)
                        *b = false;
                else {
                        snprintf(err, errlen, "%s: expected yes or no, got '%s'", k->name, value);
                        return -EINVAL;
                }
                return 0;
        }
        case KEY_CHOICE:
                for (int i = 0; k->choices[i]; i++)
                        if (strcmp(value, k->choices[i]) == 0) {
                                *(int *) ((uint8_t *) c + k->offset) = i;
                                return 0;
                        }
                snprintf(err, errlen, "%s: expected one of %s, got '%s'", k->name, k->help_arg,
                         value);
                return -EINVAL;
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

void config_defaults(Config *c) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

        *c = (Config) {
                .registration = REGISTRATION_OPEN,
                .vm_visibility = VISIBILITY_ALL,
                .max_unsent_total = 64ull << 20,
                .registrations_per_minute = VMM_REGISTRATIONS_PER_MIN,
                .hashes_per_peer = VMM_HASHES_PER_PEER,
                .hash_queue_max = 256,
                .ipv6_prefix = 64,
                .booking_max_hours = VMM_BOOKING_MAX_HOURS,
                .bookings_per_user = VMM_BOOKINGS_PER_USER,
                .booking_warn_minutes = VMM_BOOKING_WARN_MINUTES,
                .heartbeat_timeout_s = VMM_HEARTBEAT_TIMEOUT_S,
                .event_history = VMM_EVENT_HISTORY,
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
                /* the event loop needs a core of its own while hashes run */
                .hash_workers = ncpu <= 2 ? 1 : ncpu > 5 ? 4 : (uint64_t) ncpu - 1,
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
        printf("  %-24s%s\n", "-V, --version", "show the version");
        printf("\nSee vmmd(8) and vmmd.conf(5).\n");
}

typedef struct FlagValue {
        const Key *key;
        const char *value;
} FlagValue;

/* The flag name of a key: --name with '_' as '-'. */
static void flag_name(const Key *k, char ret[64]) {
        size_t j;

        for (j = 0; k->name[j] && j < 63; j++)
                ret[j] = k->name[j] == '_' ? '-' : k->name[j];
        ret[j] = '\0';
}

/* Defaults, the file, the flags. quiet: messages go to errbuf only. */
static int config_build(int argc, char *argv[], bool quiet, Config *ret, ConfigError *ret_error,
                        char *errbuf, size_t errlen) {
        enum { ARG_CONFIG = 0x100, ARG_VERSION, ARG_KEY0 };
        struct option options[ELEMENTSOF(keys) + 5];
        char names[ELEMENTSOF(keys)][64];
        _cleanup_free_ FlagValue *flags = NULL;
        size_t n_flags = 0, n = 0;
        const char *config_file = NULL;
        ConfigError dummy;
        char err[600];
        int c, r;

        if (!ret_error)
                ret_error = &dummy;
        *ret_error = CONFIG_ERROR_OTHER;
        Config cfg;
        config_defaults(&cfg);

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                flag_name(&keys[i], names[i]);
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
        opterr = !quiet;
        while ((c = getopt_long(argc, argv, "hV", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        if (quiet)
                                break;
                        help(argv[0]);
                        return 1;
                case 'V':
                case ARG_VERSION:
                        if (quiet)
                                break;
                        printf("vmmd %s (protocol %d)\n", VMMD_VERSION, VMM_PROTOCOL_VERSION);
                        return 1;
                case ARG_CONFIG:
                        config_file = optarg;
                        break;
                case '?':
                        if (!quiet)
                                fprintf(stderr, "Try '%s --help'.\n", argv[0]);
                        *ret_error = CONFIG_ERROR_USAGE;
                        return -EINVAL;
                default:
                        flags[n_flags++] = (FlagValue) { &keys[c - ARG_KEY0], optarg };
                }
        }
        if (optind < argc) {
                if (!quiet)
                        fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n",
                                argv[0], argv[optind], argv[0]);
                *ret_error = CONFIG_ERROR_USAGE;
                return -EINVAL;
        }

        if (!config_file && access(CONFIG_DEFAULT_FILE, F_OK) == 0)
                config_file = CONFIG_DEFAULT_FILE;
        if (config_file) {
                r = config_parse_file(&cfg, config_file, err, sizeof err);
                if (r < 0) {
                        if (!quiet)
                                fprintf(stderr, "vmmd: %s\n", err);
                        if (errbuf)
                                snprintf(errbuf, errlen, "%s", err);
                        config_done(&cfg);
                        *ret_error = CONFIG_ERROR_FILE;
                        return r;
                }
                cfg.config_file = strdup(config_file);
                if (!cfg.config_file) {
                        config_done(&cfg);
                        return -ENOMEM;
                }
        }

        /* Flags win over the file; a repeated flag of a list replaces the
         * file's list. */
        bool listen_reset = false, proxies_reset = false;
        for (size_t i = 0; i < n_flags; i++) {
                if (flags[i].key->type == KEY_LISTEN && !listen_reset) {
                        for (size_t j = 0; j < cfg.n_listen; j++)
                                free(cfg.listen[j]);
                        cfg.n_listen = 0;
                        listen_reset = true;
                }
                if (flags[i].key->type == KEY_PROXY && !proxies_reset) {
                        for (size_t j = 0; j < cfg.n_trusted_proxies; j++)
                                free(cfg.trusted_proxies[j]);
                        cfg.n_trusted_proxies = 0;
                        proxies_reset = true;
                }
                err[0] = '\0';
                r = key_apply(&cfg, flags[i].key, flags[i].value, err, sizeof err);
                if (r < 0) {
                        if (!quiet)
                                fprintf(stderr, "vmmd: --%s: %s\n", names[flags[i].key - keys],
                                        err[0] ? err : strerror(-r));
                        if (errbuf)
                                snprintf(errbuf, errlen, "--%s: %s", names[flags[i].key - keys],
                                         err[0] ? err : strerror(-r));
                        config_done(&cfg);
                        *ret_error = CONFIG_ERROR_USAGE;
                        return r;
                }
        }
        *ret = cfg;
        return 0;
}

int config_load(int argc, char *argv[], Config *ret, ConfigError *ret_error) {
        return config_build(argc, argv, false, ret, ret_error, NULL, 0);
}

int config_reload(int argc, char *argv[], Config *ret, char *errbuf, size_t errlen) {
        int r;

        if (errbuf && errlen)
                errbuf[0] = '\0';
        r = config_build(argc, argv, true, ret, NULL, errbuf, errlen);
        if (r < 0 && errbuf && errlen && !errbuf[0])
                snprintf(errbuf, errlen, "%s", strerror(-r));
        return r;
}

void config_done(Config *c) {
        free(c->config_file);
        free(c->state_dir);
        for (size_t i = 0; i < c->n_listen; i++)
                free(c->listen[i]);
        for (size_t i = 0; i < c->n_trusted_proxies; i++)
                free(c->trusted_proxies[i]);
        free(c->admin_socket);
        free(c->admin_group);
        free(c->users_group);
        *c = (Config) { 0 };
}
