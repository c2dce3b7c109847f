/* SPDX-License-Identifier: MIT */
#include <stdlib.h>

#include "config.h"
#include "log.h"
#include "manager.h"
#include "shared/secret.h"

int main(int argc, char *argv[]) {
        Config config;
        Manager *m = NULL;
        int r;

        r = config_load(argc, argv, &config);
        if (r != 0)
                return r > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
        log_open();
        log_set_level(config.log_level);

        if (secret_init() < 0) {
                log_error("Cannot initialise libsodium");
                config_done(&config);
                return EXIT_FAILURE;
        }
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
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
