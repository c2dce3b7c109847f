/* SPDX-License-Identifier: MIT */
/* Work that leaves the event loop: password hashing on a small pool of
 * threads, and durable writes on one writer thread that gathers the writes
 * of many connections into one LMDB commit (group commit). Finished jobs come
 * back to the loop through an eventfd and their done() runs there. */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "store/store.h"

typedef struct Job Job;
typedef struct Jobs Jobs;

struct Job {
        Job *next;
        /* pool thread: returns the result passed to done() */
        int (*hash)(Job *j);
        /* writer thread, inside a nested transaction of the batch; a negative
         * return aborts this job's changes only. May run more than once if the
         * batch is retried (after the map grew): it must start from what the
         * transaction shows, not from its own earlier run. */
        int (*write)(Job *j, StoreTxn *t);
        /* loop thread */
        void (*done)(Job *j, int r);
        int result;
        bool failed_final;      /* writer: excluded from a retried batch */
};

typedef struct JobsStats {
        uint64_t commits, writes, hashes;
        uint64_t max_batch;
} JobsStats;

int jobs_new(sd_event *e, Store *store, unsigned hash_workers, Jobs **ret);
/* Stops the threads after the queued work is done and runs the remaining done()
 * callbacks. */
Jobs *jobs_free(Jobs *j);

void jobs_submit_hash(Jobs *j, Job *job);
void jobs_submit_write(Jobs *j, Job *job);
/* Run job->hash on a thread of its own (long work such as a backup, which
 * must not hold up logins); done() comes back to the loop as usual. */
int jobs_submit_thread(Jobs *j, Job *job);
/* Becomes true when the jobs are being torn down: a thread job polls it and
 * gives up (the daemon's stop must not wait for a stuck peer). */
const atomic_bool *jobs_cancel_flag(Jobs *js);
/* Jobs submitted and not yet done() */
uint64_t jobs_pending(Jobs *j);
void jobs_stats(Jobs *j, JobsStats *ret);
