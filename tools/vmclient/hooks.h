/* SPDX-License-Identifier: MIT */
/* Booking hooks: for each booking event, the executables of the hook
 * directory run one at a time, in C-locale byte order of their names (as
 * run-parts does: regular executable files named [A-Za-z0-9_-]+), each with
 * the event in its environment (VMM_EVENT, VMM_USER, VMM_VM_ID,
 * VMM_EXPIRES_AT, VMM_REASON, VMM_FEED) and as JSON on its stdin, in its own
 * process group, killed when it runs past the timeout. Their output goes to
 * the log line by line; a failing hook is logged and the next one runs. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>
#include <systemd/sd-event.h>

typedef struct HookRunner HookRunner;

/* Called once per event, in order, after its hooks ran (failed or not). */
typedef void (*HookDoneFunc)(HookRunner *h, bool has_feed, int64_t feed, void *userdata);

int hook_runner_new(sd_event *e, const char *dir, uint64_t timeout_usec, HookDoneFunc done,
                    void *userdata, HookRunner **ret);
/* Kills a hook still running (its process group) and frees; returns NULL. */
HookRunner *hook_runner_free(HookRunner *h);

/* Queues one event (a map with "type" and the booking's fields); copies it. */
int hook_runner_enqueue(HookRunner *h, const msgpack_object *event);
/* Events queued or running. */
size_t hook_runner_pending(const HookRunner *h);

/* True for a name run-parts would run: [A-Za-z0-9_-]+ */
bool hook_name_valid(const char *name);
