/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "manager.h"
#include "session-touch.h"
#include "shared/clock.h"

typedef struct TouchJob {
        Job job;
        uint8_t hash[SECRET_HASH_BYTES];
        char vm_id[VMM_VM_ID_MAX + 1];
        int64_t now;
        uint64_t ttl_ms;
} TouchJob;

static int touch_write(Job *j, StoreTxn *t) {
        TouchJob *tj = (TouchJob *) j;
        StoreSession s;
        int r;

        r = store_session_get(t, tj->hash, &s);
        if (r >= 0 && s.expires_at < tj->now + (int64_t) tj->ttl_ms) {
                s.expires_at = tj->now + (int64_t) tj->ttl_ms;
                r = store_session_put(t, &s);
                if (r < 0)
                        return r;
        }
        if (tj->vm_id[0]) {
                StoreVm *vm = malloc(sizeof *vm);
                if (!vm)
                        return -ENOMEM;
                r = store_vm_get(t, tj->vm_id, vm);
                if (r >= 0) {
                        vm->last_seen_at = tj->now;
                        r = store_vm_put_same_disks(t, vm);
                }
                free(vm);
                if (r < 0 && r != -ENOENT)
                        return r;
        }
        return 0;
}

static void touch_done(Job *j, int r) {
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Could not record a session's use: %s", strerror(-r));
        free(j);
}

void session_touch(Manager *m, const uint8_t hash[SECRET_HASH_BYTES], const char *vm_id,
                   const char *user) {
        TouchJob *tj = calloc(1, sizeof *tj);

        (void) user;    /* a user's record keeps no last-seen time */
        if (!tj)
                return;
        memcpy(tj->hash, hash, SECRET_HASH_BYTES);
        if (vm_id)
                strncpy(tj->vm_id, vm_id, VMM_VM_ID_MAX);
        tj->now = now_ms();
        tj->ttl_ms = m->config.session_ttl_s * 1000;
        tj->job.write = touch_write;
        tj->job.done = touch_done;
        jobs_submit_write(m->jobs, &tj->job);
}
