/* SPDX-License-Identifier: MIT */
/* Jobs (L1): hashing on the pool behind its bound, dropping waiting hashes,
 * and the writer's group commit on a real store: a map that must grow, and
 * a batch too big for one transaction (split into several commits); one
 * sync per commit, and no write reported done before it is durable. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/jobs.h"

typedef struct TestJob {
        Job job;
        int done_result;
        bool done;
        size_t bytes;           /* write: a feed event of this size */
        Store *store;           /* write: note the commit and what was durable when done */
        uint64_t seq, durable_at_done;
        int *gate;              /* hash: spin until *gate (the pool stays busy) */
        int started;
} TestJob;

static int hash_fn(Job *j) {
        TestJob *t = (TestJob *) j;
        __atomic_store_n(&t->started, 1, __ATOMIC_RELEASE);
        while (t->gate && !__atomic_load_n(t->gate, __ATOMIC_ACQUIRE))
                usleep(1000);
        return 7;
}

static int write_fn(Job *j, StoreTxn *t) {
        TestJob *tj = (TestJob *) j;
        uint64_t pos;
        uint8_t *data = malloc(tj->bytes);
        int r;

        if (!data)
                return -ENOMEM;
        memset(data, 0x5a, tj->bytes);
        r = store_feed_append(t, data, tj->bytes, &pos);
        free(data);
        tj->seq = store_txn_seq(t);
        return r;
}

static void done_fn(Job *j, int r) {
        TestJob *t = (TestJob *) j;
        if (t->store)
                t->durable_at_done = store_durable_seq(t->store);
        t->done = true;
        t->done_result = r;
}

static int rm_one(const char *p, const struct stat *s, int f, struct FTW *w) {
        return remove(p);
}

typedef struct Fixture {
        char dir[64];
        sd_event *e;
        Store *store;
} Fixture;

static int setup_with(void **state, bool no_sync) {
        Fixture *f = calloc(1, sizeof *f);
        char err[256];
        StoreOptions o = { .map_size_initial = 1 << 20, .no_sync = no_sync,
                           .event_history = 1000000 };

        snprintf(f->dir, sizeof f->dir, "/tmp/test-jobs-XXXXXX");
        assert_non_null(mkdtemp(f->dir));
        o.dir = f->dir;
        assert_int_equal(store_open(&o, &f->store, NULL, err, sizeof err), 0);
        assert_int_equal(sd_event_new(&f->e), 0);
        *state = f;
        return 0;
}

static int setup(void **state) {
        return setup_with(state, true);
}

static int setup_synced(void **state) {
        return setup_with(state, false);
}

static int teardown(void **state) {
        Fixture *f = *state;
        store_close(f->store);
        sd_event_unref(f->e);
        nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
        free(f);
        return 0;
}

static void run_until_done(Fixture *f, TestJob *jobs, size_t n) {
        for (int i = 0; i < 100000; i++) {
                size_t left = 0;
                for (size_t k = 0; k < n; k++)
                        left += !jobs[k].done;
                if (left == 0)
                        return;
                assert_true(sd_event_run(f->e, 100000) >= 0);
        }
        fail_msg("jobs did not finish");
}

static void test_hash_queue_bound_and_drop(void **state) {
        Fixture *f = *state;
        Jobs *js = NULL;
        TestJob t[6] = { 0 };
        int gate = 0;

        assert_int_equal(jobs_new(f->e, f->store, 1, 3, &js), 0);
        for (int i = 0; i < 6; i++) {
                t[i].job.hash = hash_fn;
                t[i].job.done = done_fn;
                t[i].gate = &gate;
        }
        /* the one worker takes the first; three may wait; the fifth is refused */
        assert_int_equal(jobs_submit_hash(js, &t[0].job), 0);
        for (int i = 0; i < 5000 && !__atomic_load_n(&t[0].started, __ATOMIC_ACQUIRE); i++)
                usleep(1000);   /* the worker took it */
        assert_true(__atomic_load_n(&t[0].started, __ATOMIC_ACQUIRE));
        assert_int_equal(jobs_submit_hash(js, &t[1].job), 0);
        assert_int_equal(jobs_submit_hash(js, &t[2].job), 0);
        assert_int_equal(jobs_submit_hash(js, &t[3].job), 0);
        assert_int_equal(jobs_submit_hash(js, &t[4].job), -EAGAIN);
        /* one waiting job is cancelled, then the rest dropped (a stop) */
        assert_true(jobs_cancel_hash(js, &t[3].job));
        assert_false(jobs_cancel_hash(js, &t[3].job));
        jobs_drop_hashes(js);
        __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
        run_until_done(f, t, 4);
        assert_int_equal(t[0].done_result, 7);
        assert_int_equal(t[1].done_result, -ECANCELED);
        assert_int_equal(t[2].done_result, -ECANCELED);
        assert_int_equal(t[3].done_result, -ECANCELED);
        JobsStats st;
        jobs_stats(js, &st);
        assert_int_equal(st.hashes, 1);
        assert_int_equal(st.hashes_refused, 1);
        assert_int_equal(st.hashes_dropped, 3);
        jobs_free(js);
}

static void test_writer_grows_the_map(void **state) {
        Fixture *f = *state;
        Jobs *js = NULL;
        TestJob t[40] = { 0 };
        StoreTxn *txn;
        StoreStats st;

        assert_int_equal(jobs_new(f->e, f->store, 1, 8, &js), 0);
        /* 40 x 128 KiB in a 1 MiB map: it must grow while the batch runs */
        for (int i = 0; i < 40; i++) {
                t[i] = (TestJob) { .job.write = write_fn, .job.done = done_fn, .bytes = 128 << 10 };
                jobs_submit_write(js, &t[i].job);
        }
        run_until_done(f, t, 40);
        for (int i = 0; i < 40; i++)
                assert_int_equal(t[i].done_result, 0);
        assert_int_equal(store_read_begin(f->store, &txn), 0);
        assert_int_equal(store_stats(txn, &st), 0);
        store_read_end(txn);
        assert_int_equal(st.feed_last, 40);     /* no gap, nothing twice */
        assert_true(st.map_size_bytes > (1u << 20));
        jobs_free(js);
}

/* The store says "transaction full" (LMDB's MDB_TXN_FULL, which its page
 * spilling makes rare) as -E2BIG from a write: item 50 does so the first
 * two times it runs, item 80 every time (too big for any transaction). */
static int full_write(void *item, StoreTxn *t) {
        TestJob *tj = item;

        if (tj->gate && *tj->gate > 0) {
                (*tj->gate)--;
                return -E2BIG;
        }
        return write_fn(&tj->job, t);
}

static void test_batch_split_when_the_transaction_is_full(void **state) {
        Fixture *f = *state;
        const size_t n = 100;
        TestJob t[100] = { 0 };
        void *items[100];
        /* once = 2: the batch first runs without child transactions and,
         * on item 50's failure, again with them, where it fails once more */
        int results[100], once = 2, always = 1000;
        StoreTxn *txn;
        StoreStats st;

        for (size_t i = 0; i < n; i++) {
                t[i] = (TestJob) { .bytes = 64 };
                items[i] = &t[i];
        }
        t[50].gate = &once;
        t[80].gate = &always;
        int commits = store_write_batch(f->store, items, n, full_write, results);
        /* 0..49 commit, then 50.. in a new transaction; 80 fails alone */
        assert_true(commits >= 2);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(results[i], i == 80 ? -ENOSPC : 0);
        assert_int_equal(store_read_begin(f->store, &txn), 0);
        assert_int_equal(store_stats(txn, &st), 0);
        store_read_end(txn);
        assert_int_equal(st.feed_last, n - 1);  /* everything but 80, no gap */
}

/* An item that writes and then fails leaves nothing behind, in a batch
 * (the others commit, with no gap in the feed) and alone. */
static int failing_write(void *item, StoreTxn *t) {
        TestJob *tj = item;
        int r = write_fn(&tj->job, t);

        return r < 0 ? r : tj->started ? -EEXIST : 0;   /* started: "fail" */
}

static void test_batch_item_failure_undone(void **state) {
        Fixture *f = *state;
        TestJob t[10] = { 0 };
        void *items[10];
        int results[10];
        StoreTxn *txn;
        StoreStats st;

        for (size_t i = 0; i < 10; i++) {
                t[i] = (TestJob) { .bytes = 32, .started = i == 3 || i == 7 };
                items[i] = &t[i];
        }
        assert_int_equal(store_write_batch(f->store, items, 10, failing_write, results), 1);
        for (size_t i = 0; i < 10; i++)
                assert_int_equal(results[i], i == 3 || i == 7 ? -EEXIST : 0);
        assert_int_equal(store_read_begin(f->store, &txn), 0);
        assert_int_equal(store_stats(txn, &st), 0);
        store_read_end(txn);
        assert_int_equal(st.feed_last, 8);      /* 8 events: 1..8, no gap */

        /* alone */
        assert_int_equal(store_write_batch(f->store, items + 3, 1, failing_write, results), 1);
        assert_int_equal(results[0], -EEXIST);
        assert_int_equal(store_write_batch(f->store, items, 1, failing_write, results), 1);
        assert_int_equal(results[0], 0);
        assert_int_equal(store_read_begin(f->store, &txn), 0);
        assert_int_equal(store_stats(txn, &st), 0);
        store_read_end(txn);
        assert_int_equal(st.feed_last, 9);
}

/* One sync per commit: a commit is durable when the next commit (or an
 * explicit sync) returns, and no write is reported done before then. */
static void test_store_durable_after_next_sync(void **state) {
        Fixture *f = *state;
        TestJob a = { .bytes = 16 }, b = { .bytes = 16 };
        StoreTxn *t;
        uint64_t syncs = store_sync_count(f->store);

        assert_int_equal(store_write_begin(f->store, &t), 0);
        assert_int_equal(write_fn(&a.job, t), 0);
        assert_int_equal(store_commit(t), 0);
        assert_int_equal(store_committed_seq(f->store), a.seq);
        assert_true(store_durable_seq(f->store) < a.seq);
        assert_int_equal(store_write_begin(f->store, &t), 0);
        assert_int_equal(write_fn(&b.job, t), 0);
        assert_int_equal(store_commit(t), 0);
        assert_int_equal(store_durable_seq(f->store), a.seq);
        assert_int_equal(store_sync(f->store), 0);
        assert_int_equal(store_durable_seq(f->store), b.seq);
        assert_int_equal(store_sync_count(f->store), syncs + 3);
        /* a read sees the commit and says which */
        assert_int_equal(store_read_begin(f->store, &t), 0);
        assert_int_equal(store_txn_seq(t), b.seq);
        store_read_end(t);
        assert_int_equal(store_read_seq_take(f->store), b.seq);
        assert_int_equal(store_read_seq_take(f->store), 0);
}

static void test_writes_done_only_when_durable(void **state) {
        Fixture *f = *state;
        Jobs *js = NULL;
        TestJob t[200] = { 0 };
        uint64_t syncs = store_sync_count(f->store);
        JobsStats st;

        assert_int_equal(jobs_new(f->e, f->store, 1, 8, &js), 0);
        for (int round = 0; round < 4; round++) {
                for (int i = round * 50; i < round * 50 + 50; i++) {
                        t[i] = (TestJob) { .job.write = write_fn, .job.done = done_fn,
                                           .bytes = 100, .store = f->store };
                        jobs_submit_write(js, &t[i].job);
                }
                run_until_done(f, t, (size_t) round * 50 + 50);
        }
        for (int i = 0; i < 200; i++) {
                assert_int_equal(t[i].done_result, 0);
                assert_true(t[i].seq > 0);
                assert_true(t[i].durable_at_done >= t[i].seq);
        }
        jobs_stats(js, &st);
        /* group commit: fewer commits than writes; syncs no more than one
         * per commit plus one per idle moment (at most one per round) */
        assert_true(st.commits < 200);
        assert_true(store_sync_count(f->store) - syncs <= st.commits + 4);
        jobs_free(js);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_hash_queue_bound_and_drop, setup, teardown),
                cmocka_unit_test_setup_teardown(test_writer_grows_the_map, setup, teardown),
                cmocka_unit_test_setup_teardown(test_batch_split_when_the_transaction_is_full,
                                                setup, teardown),
                cmocka_unit_test_setup_teardown(test_batch_item_failure_undone, setup, teardown),
                cmocka_unit_test_setup_teardown(test_store_durable_after_next_sync, setup_synced,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_writes_done_only_when_durable, setup_synced,
                                                teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
