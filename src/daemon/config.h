/* SPDX-License-Identifier: MIT */
/* vmmd settings: defaults, then the configuration file, then flags. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_FILE "/etc/vmmd/vmmd.conf"
#define CONFIG_MAX_LISTEN 16

typedef struct Config {
        char *config_file;              /* NULL: none */
        char *state_dir;
        char *listen[CONFIG_MAX_LISTEN];
        size_t n_listen;
        char *admin_socket;
        char *admin_group;
        bool registration_open;
        uint64_t session_ttl_s;
        int log_level;
        uint64_t idle_timeout_s;
        uint64_t max_connections;
        uint64_t max_connections_per_peer;
        uint64_t auth_failures_per_minute;
        uint64_t sessions_per_vm;
        uint64_t max_message_tcp;
        uint64_t max_message_admin;
        uint64_t map_size_max;
        uint64_t hash_workers;
} Config;

/* Fills *ret from defaults, the config file (--config, else the default file
 * if it exists) and argv. Returns 0 to run, 1 when --help/--version was
 * handled (exit 0), or a negative errno after printing the reason on stderr
 * (exit 1). */
int config_load(int argc, char *argv[], Config *ret);
void config_done(Config *c);

/* Parse the configuration file alone into c (for reload and tests): entries
 * override what c holds. errbuf gets "FILE:LINE: message". */
int config_parse_file(Config *c, const char *path, char *errbuf, size_t errlen);
