/* SPDX-License-Identifier: MIT */
/* Layer L1: work that leaves the event loop. Password hashing runs on a
 * small pool of threads behind a bounded queue; durable writes run on one
 * writer thread that gathers the writes of many requests into one commit
 * (group commit, store_write_batch) and answers once the commit is
 * durable (one sync per commit, see writer_thread). Finished jobs come back to the loop
 * through an eventfd and their done() runs there. Knows nothing of
 * connections or requests: a Job is embedded in whatever submits it. */
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
        /* writer thread, inside a savepoint of the batch's transaction; a
         * negative return undoes this job's changes only. May run more than
         * once when the batch is run again (after the store made room): it
         * must start from what the transaction shows, not from its earlier
         * run. */
        int (*write)(Job *j, StoreTxn *t);
        /* loop thread */
        void (*done)(Job *j, int r);
        int result;
};

typedef struct JobsStats {
        uint64_t commits, writes, hashes, hashes_refused, hashes_dropped;
        uint64_t max_batch;
} JobsStats;

/* hash_queue_max: hash jobs waiting at most (over it jobs_submit_hash
 * refuses). */
int jobs_new(sd_event *e, Store *store, unsigned hash_workers, unsigned hash_queue_max,
             Jobs **ret);
/* Drops waiting hash jobs (their done() gets -ECANCELED), lets the writer
 * finish what is queued, stops the threads and runs the remaining done()
 * callbacks. */
Jobs *jobs_free(Jobs *j);

/* -EAGAIN (nothing queued) when hash_queue_max jobs already wait. */
int jobs_submit_hash(Jobs *j, Job *job);
void jobs_submit_write(Jobs *j, Job *job);
/* Run job->hash on a thread of its own (long work such as a backup, which
 * must not hold up logins); done() comes back to the loop as usual. */
int jobs_submit_thread(Jobs *j, Job *job);
/* A hash job that is still waiting ends with -ECANCELED (its requester is
 * gone); true if it was waiting. */
bool jobs_cancel_hash(Jobs *j, Job *job);
/* Waiting hash jobs end with -ECANCELED (a stop must not wait for a flood
 * of logins); the ones being hashed finish. */
void jobs_drop_hashes(Jobs *j);
/* Called on the loop after finished jobs are dispatched: what is durable
 * may have moved (store_durable_seq), for replies that wait for it. */
void jobs_set_durable_hook(Jobs *j, void (*hook)(void *userdata), void *userdata);
/* Becomes true when the jobs are being torn down: a thread job polls it and
 * gives up (the daemon's stop must not wait for a stuck peer). */
const atomic_bool *jobs_cancel_flag(Jobs *js);
/* Jobs submitted and not yet done() */
uint64_t jobs_pending(Jobs *j);
void jobs_stats(Jobs *j, JobsStats *ret);
