/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <string.h>

#include "embed.h"
#include "log.h"
#include "manager.h"

int manager_start_embedded(Manager *m) {
        if (!m->config.state_dir || !m->config.state_dir[0])
                return log_error_errno(EINVAL, "Embedded manager: no state directory");
        if (strlen(m->config.state_dir) >= sizeof m->state_dir)
                return log_error_errno(ENAMETOOLONG, "Embedded manager: state directory too long");
        memcpy(m->state_dir, m->config.state_dir, strlen(m->config.state_dir) + 1);

        return manager_open_store(m);
}
