/* SPDX-License-Identifier: MIT */
/* Layer L3: bookkeeping writes about a session's use, submitted and
 * forgotten (their failure is logged, never answered): the session's
 * sliding expiry, and the VM's last_seen_at when a VM's connection ends. */
#pragma once

#include "rpc.h"

/* Extends the session to now + session_ttl (if it ends sooner) and, with
 * vm_id, sets the VM's last_seen_at to now. */
void session_touch(Manager *m, const uint8_t hash[SECRET_HASH_BYTES], const char *vm_id,
                   const char *user);
