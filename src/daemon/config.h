/* SPDX-License-Identifier: MIT */
/* Layer L0 (daemon): vmmd settings: defaults, then the configuration file,
 * then flags. No I/O but reading the file; no logging (the caller reports). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_FILE "/etc/vmmd/vmmd.conf"
#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_PROXIES 16

typedef enum Registration {
        REGISTRATION_OPEN,
        REGISTRATION_CLOSED,
        REGISTRATION_APPROVAL,
        _REGISTRATION_MAX,
        _REGISTRATION_INVALID = -1,
} Registration;

typedef enum Visibility {
        VISIBILITY_ALL,
        VISIBILITY_SELF,
        _VISIBILITY_MAX,
        _VISIBILITY_INVALID = -1,
} Visibility;

typedef struct Config {
        char *config_file;              /* NULL: none */
        char *state_dir;
        char *listen[CONFIG_MAX_LISTEN];
        size_t n_listen;
        char *admin_socket;
        char *admin_group;
        char *users_group;
        int registration;               /* Registration */
        int vm_visibility;              /* Visibility */
        bool tcp_admin;
        char *trusted_proxies[CONFIG_MAX_PROXIES];
        size_t n_trusted_proxies;
        uint64_t session_ttl_s;
        int log_level;
        uint64_t idle_timeout_s;
        uint64_t max_connections;
        uint64_t max_connections_per_peer;
        uint64_t max_unsent_total;
        uint64_t auth_failures_per_minute;
        uint64_t registrations_per_minute;
        uint64_t hashes_per_peer;
        uint64_t hash_queue_max;
        uint64_t ipv6_prefix;
        uint64_t sessions_per_vm;
        uint64_t max_message_tcp;
        uint64_t max_message_admin;
        uint64_t map_size_max;
        uint64_t hash_workers;
        uint64_t booking_max_hours;
        uint64_t bookings_per_user;
        uint64_t booking_warn_minutes;
        uint64_t heartbeat_timeout_s;
        uint64_t event_history;
} Config;

/* Why config_load failed: main() exits with a status of its own for each
 * (vmmd(8): 2 usage, 6 configuration). */
typedef enum ConfigError {
        CONFIG_ERROR_USAGE,             /* a bad flag or argument */
        CONFIG_ERROR_FILE,              /* the configuration file was refused */
        CONFIG_ERROR_OTHER,             /* out of memory */
} ConfigError;

/* The built-in defaults. */
void config_defaults(Config *c);

/* Fills *ret from defaults, the config file (--config, else the default file
 * if it exists) and argv. Returns 0 to run, 1 when --help/--version was
 * handled (exit 0), or a negative errno after printing the reason on stderr
 * (*ret_error says which kind; may be NULL). */
int config_load(int argc, char *argv[], Config *ret, ConfigError *ret_error);
void config_done(Config *c);

/* For a reload: defaults, the file cur names (again), then the flags of
 * argv; errbuf gets "FILE:LINE: message" when the file is refused. */
int config_reload(int argc, char *argv[], Config *ret, char *errbuf, size_t errlen);

/* Parse the configuration file alone into c (for reload and tests): entries
 * override what c holds. errbuf gets "FILE:LINE: message". */
int config_parse_file(Config *c, const char *path, char *errbuf, size_t errlen);

const char *registration_to_string(int r);
