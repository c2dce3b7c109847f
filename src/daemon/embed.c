/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "embed.h"
#include "log.h"
#include "store/store.h"

void client_methods_init(Manager *m);

int manager_start_embedded(Manager *m) {
        char err[512] = "";
        int r;

        if (!m->config.state_dir || !m->config.state_dir[0])
                return log_error_errno(EINVAL, "Embedded manager: no state directory");
        if (strlen(m->config.state_dir) >= sizeof m->state_dir)
                return log_error_errno(ENAMETOOLONG, "Embedded manager: state directory too long");
        memcpy(m->state_dir, m->config.state_dir, strlen(m->config.state_dir) + 1);

        StoreOptions so = {
                .dir = m->state_dir,
                .map_size_max = m->config.map_size_max,
        };
        r = store_open(&so, &m->store, err, sizeof err);
        if (r < 0)
                return log_error_errno(r, "Cannot open the database in %s: %s", m->state_dir,
                                       err[0] ? err : strerror(-r));
        store_hash_key(m->store, m->hash_key);

        r = jobs_new(m->event, m->store, (unsigned) m->config.hash_workers, &m->jobs);
        if (r < 0)
                return log_error_errno(r, "Cannot start worker threads: %s", strerror(-r));
        client_methods_init(m);
        return 0;
}
