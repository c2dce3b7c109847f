/* SPDX-License-Identifier: MIT */
/* vmmd: build the Manager, start it, run the loop. Exit status (vmmd(8)):
 * 0 a clean stop, 1 a failure, 2 a usage error, 6 a configuration error
 * (the file, systemd's sockets, a database too new): the last two are not
 * worth restarting for (the unit's RestartPreventExitStatus=). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "hasher.h"
#include "log.h"
#include "manager.h"
#include "shared/secret.h"

#define EXIT_USAGE 2
#define EXIT_NOTCONFIGURED 6

int main(int argc, char *argv[]) {
        ConfigError kind;
        Config config;
        Manager *m = NULL;
        int r;

        if (argc >= 2 && strcmp(argv[1], HASHER_HELPER_ARG) == 0)
                return hasher_helper_main(argc, argv);
        r = config_load(argc, argv, &config, &kind);
        if (r > 0)
                return EXIT_SUCCESS;
        if (r < 0)
                return kind == CONFIG_ERROR_USAGE ? EXIT_USAGE :
                       kind == CONFIG_ERROR_FILE ? EXIT_NOTCONFIGURED : EXIT_FAILURE;
        log_open();
        log_set_level(config.log_level);

        if (secret_init() < 0) {
                log_error("Cannot initialise libsodium");
                config_done(&config);
                return EXIT_FAILURE;
        }
        r = hasher_enable();
        if (r < 0)
                log_warning_errno(r, "Cannot find vmmd's own binary, hashing passwords in its "
                                  "threads: %s", strerror(-r));
        r = manager_new(&m, &config);
        if (r < 0) {
                log_error_errno(r, "Cannot set up: %s", strerror(-r));
                config_done(&config);
                return EXIT_FAILURE;
        }
        m->argc = argc;
        m->argv = argv;
        r = manager_start(m);
        if (r >= 0)
                r = manager_run(m);
        manager_free(m);
        if (r == -ENOTCONN || r == -EPROTO)
                return EXIT_NOTCONFIGURED;
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
