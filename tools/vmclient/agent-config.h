/* SPDX-License-Identifier: MIT */
/* Settings of `vmclient agent` and `vmclient describe`: the file
 * /etc/vmclient/agent.conf (or --config FILE; INI, key = value, agent.conf(5))
 * and the flags of the same names (--vm-id for vm_id ...), which win. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define AGENT_CONFIG_DEFAULT   "/etc/vmclient/agent.conf"
#define AGENT_PASSWORD_DEFAULT "/etc/vmclient/password"
#define AGENT_HOOKS_DEFAULT    "/etc/vmclient/booking.d"
#define AGENT_SERVERS_MAX      16
#define AGENT_INTERVAL_DEFAULT 10
#define AGENT_HOOK_TIMEOUT_DEFAULT 30

typedef struct AgentConfig {
        char *servers[AGENT_SERVERS_MAX];
        size_t n_servers;
        char *vm_id;                    /* NULL: the short hostname */
        char *password_file;
        char *state_dir;
        uint64_t interval_s;
        char *hooks_dir;
        uint64_t hook_timeout_s;
        bool register_vm;
        bool all_disks;
        int log_level;
        char *config_path;              /* the file read, NULL if none */
} AgentConfig;

typedef enum AgentMode {
        AGENT_MODE_AGENT,
        AGENT_MODE_DESCRIBE,
} AgentMode;

/* What the command line asked for besides settings. */
typedef struct AgentArgs {
        bool check_config;              /* agent: print the settings and exit */
        bool json;                      /* describe */
        bool report;                    /* describe: the vm.report figures too */
} AgentArgs;

/* Parses argv (argv[0] is the command name), reads the configuration file
 * and applies the flags over it. Returns -1 to go on, else an exit status
 * (0 after --help; 2 after a usage or configuration error, printed). */
int agent_config_load(AgentMode mode, int argc, char **argv, AgentConfig *ret,
                      AgentArgs *ret_args);
void agent_config_done(AgentConfig *c);
/* "key = value" lines of the settings in effect. */
void agent_config_print(const AgentConfig *c);
