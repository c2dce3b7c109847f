/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "hasher.h"
#include "jobs.h"
#include "log.h"
#include "shared/macro.h"

#define BATCH_MAX 512

typedef struct Queue {
        Job *head, *tail;
} Queue;

struct Jobs {
        Store *store;
        sd_event_source *done_source;
        int efd;

        pthread_mutex_t lock;
        pthread_cond_t hash_cond, write_cond;
        Queue hash_q, write_q, done_q;
        bool stopping;
        atomic_bool cancel;             /* long jobs (backup) give up */
        unsigned solo_running;
        pthread_cond_t solo_cond;

        pthread_t *hash_threads;
        unsigned n_hash_threads;
        pthread_t writer;
        bool writer_started;

        unsigned hash_waiting, hash_queue_max;      /* under lock */
        uint64_t pending;      /* loop thread only */
        void (*durable_hook)(void *userdata);
        void *durable_userdata;
        JobsStats stats;       /* under lock */
};

static void queue_push(Queue *q, Job *j) {
        j->next = NULL;
        if (q->tail)
                q->tail->next = j;
        else
                q->head = j;
        q->tail = j;
}

static Job *queue_pop(Queue *q) {
        Job *j = q->head;
        if (j) {
                q->head = j->next;
                if (!q->head)
                        q->tail = NULL;
                j->next = NULL;
        }
        return j;
}

static void jobs_complete_locked(Jobs *js, Job *j) {
        bool was_empty = !js->done_q.head;
        queue_push(&js->done_q, j);
        if (was_empty) {
                uint64_t one = 1;
                (void) !write(js->efd, &one, sizeof one);
        }
}

#define HASH_NICE 19

static void *hash_thread(void *userdata) {
        Jobs *js = userdata;

        /* argon2id takes whole cores for tens of milliseconds: a nicer
         * thread lets the event loop (and the writer) preempt it at once,
         * so that a login flood does not delay everyone's answers. Lowering
         * one's own priority needs no privilege; when a sandbox forbids it
         * (EPERM), the hashes run at the daemon's priority. */
        (void) setpriority(PRIO_PROCESS, (id_t) gettid(), HASH_NICE);
        /* the hashes themselves run in a helper process (hasher.h) */
        Hasher *h = hasher_thread_begin();
        pthread_mutex_lock(&js->lock);
        for (;;) {
                Job *j = queue_pop(&js->hash_q);
                if (j)
                        js->hash_waiting--;
                if (!j) {
                        if (js->stopping)
                                break;
                        pthread_cond_wait(&js->hash_cond, &js->lock);
                        continue;
                }
                pthread_mutex_unlock(&js->lock);
                j->result = j->hash(j);
                pthread_mutex_lock(&js->lock);
                js->stats.hashes++;
                jobs_complete_locked(js, j);
        }
        pthread_mutex_unlock(&js->lock);
        hasher_thread_end(h);
        return NULL;
}

static int writer_run_one(void *item, StoreTxn *t) {
        Job *j = item;
        return j->write(j, t);
}

/* The writer. Each batch is one commit with one sync; a commit's answers
 * go out only once it is durable, which the next commit's sync makes it (or
 * an explicit sync when no write waits): under load a batch's answers wait
 * for the next batch, and each commit costs one sync. */
static void *writer_thread(void *userdata) {
        Jobs *js = userdata;
        Job *batch[BATCH_MAX], *pending[BATCH_MAX];
        size_t n_pending = 0;
        uint64_t pending_seq = 0;

        pthread_mutex_lock(&js->lock);
        for (;;) {
                size_t n = 0;
                Job *j;

                /* answers whose commit is durable now */
                if (n_pending > 0 && store_durable_seq(js->store) >= pending_seq) {
                        for (size_t i = 0; i < n_pending; i++)
                                jobs_complete_locked(js, pending[i]);
                        n_pending = 0;
                }
                while (n < BATCH_MAX && (j = queue_pop(&js->write_q)))
                        batch[n++] = j;
                if (n == 0) {
                        if (n_pending > 0) {
                                /* nothing more to commit: sync what waits */
                                pthread_mutex_unlock(&js->lock);
                                int r = store_sync(js->store);
                                pthread_mutex_lock(&js->lock);
                                if (r < 0) {
                                        for (size_t i = 0; i < n_pending; i++)
                                                if (pending[i]->result >= 0)
                                                        pending[i]->result = r;
                                        for (size_t i = 0; i < n_pending; i++)
                                                jobs_complete_locked(js, pending[i]);
                                        n_pending = 0;
                                }
                                continue;
                        }
                        if (js->stopping)
                                break;
                        pthread_cond_wait(&js->write_cond, &js->lock);
                        continue;
                }
                pthread_mutex_unlock(&js->lock);

                int results[BATCH_MAX];
                int commits = store_write_batch(js->store, (void *const *) batch, n,
                                                writer_run_one, results);
                for (size_t i = 0; i < n; i++)
                        batch[i]->result = results[i];

                pthread_mutex_lock(&js->lock);
                js->stats.commits += commits > 0 ? (uint64_t) commits : 0;
                js->stats.writes += n;
                if (n > js->stats.max_batch)
                        js->stats.max_batch = n;
                /* the previous batch is durable with this commit's sync */
                if (n_pending > 0 && store_durable_seq(js->store) >= pending_seq) {
                        for (size_t i = 0; i < n_pending; i++)
                                jobs_complete_locked(js, pending[i]);
                        n_pending = 0;
                }
                if (n_pending > 0) {
                        /* this batch wrote nothing (every item failed), so no
                         * sync made the previous commit durable: one now */
                        pthread_mutex_unlock(&js->lock);
                        int r = store_sync(js->store);
                        pthread_mutex_lock(&js->lock);
                        for (size_t i = 0; i < n_pending; i++) {
                                if (r < 0 && pending[i]->result >= 0)
                                        pending[i]->result = r;
                                jobs_complete_locked(js, pending[i]);
                        }
                        n_pending = 0;
                }
                memcpy(pending, batch, n * sizeof batch[0]);
                n_pending = n;
                pending_seq = store_committed_seq(js->store);
        }
        pthread_mutex_unlock(&js->lock);
        return NULL;
}

static void jobs_dispatch_done(Jobs *js) {
        Queue q;

        pthread_mutex_lock(&js->lock);
        q = js->done_q;
        js->done_q = (Queue) { 0 };
        pthread_mutex_unlock(&js->lock);

        Job *j;
        while ((j = queue_pop(&q))) {
                js->pending--;
                j->done(j, j->result);
        }
        if (js->durable_hook)
                js->durable_hook(js->durable_userdata);
}

void jobs_set_durable_hook(Jobs *js, void (*hook)(void *userdata), void *userdata) {
        js->durable_hook = hook;
        js->durable_userdata = userdata;
}

static int on_done(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Jobs *js = userdata;
        uint64_t v;

        (void) !read(fd, &v, sizeof v);
        jobs_dispatch_done(js);
        return 0;
}

int jobs_new(sd_event *e, Store *store, unsigned hash_workers, unsigned hash_queue_max,
             Jobs **ret) {
        Jobs *js;
        int r;

        js = calloc(1, sizeof *js);
        if (!js)
                return -ENOMEM;
        js->store = store;
        js->efd = -1;
        js->hash_queue_max = hash_queue_max ? hash_queue_max : 1;
        pthread_mutex_init(&js->lock, NULL);
        pthread_cond_init(&js->hash_cond, NULL);
        pthread_cond_init(&js->write_cond, NULL);
        pthread_cond_init(&js->solo_cond, NULL);

        js->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (js->efd < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(e, &js->done_source, js->efd, EPOLLIN, on_done, js);
        if (r < 0)
                goto fail;
        /* Completions before new input: answers go out as soon as possible. */
        (void) sd_event_source_set_priority(js->done_source, SD_EVENT_PRIORITY_IMPORTANT);

        js->hash_threads = calloc(hash_workers, sizeof(pthread_t));
        if (!js->hash_threads) {
                r = -ENOMEM;
                goto fail;
        }
        for (unsigned i = 0; i < hash_workers; i++) {
                r = -pthread_create(&js->hash_threads[i], NULL, hash_thread, js);
                if (r < 0)
                        goto fail;
                js->n_hash_threads++;
        }
        r = -pthread_create(&js->writer, NULL, writer_thread, js);
        if (r < 0)
                goto fail;
        js->writer_started = true;
        *ret = js;
        return 0;
fail:
        jobs_free(js);
        return r;
}

Jobs *jobs_free(Jobs *js) {
        if (!js)
                return NULL;
        jobs_drop_hashes(js);
        /* a backup whose reader never drains would keep us here */
        atomic_store(&js->cancel, true);
        pthread_mutex_lock(&js->lock);
        js->stopping = true;
        pthread_cond_broadcast(&js->hash_cond);
        pthread_cond_broadcast(&js->write_cond);
        while (js->solo_running > 0)
                pthread_cond_wait(&js->solo_cond, &js->lock);
        pthread_mutex_unlock(&js->lock);
        /* a password hash that is still running (a starved nice 19 thread
         * can take seconds) does not hold up the stop: after a while its
         * thread is left to finish alone, and the Jobs it uses is kept */
        bool abandoned = false;
        for (unsigned i = 0; i < js->n_hash_threads; i++) {
                struct timespec deadline;
                clock_gettime(CLOCK_REALTIME, &deadline);
                deadline.tv_sec += 1;
                if (pthread_timedjoin_np(js->hash_threads[i], NULL, &deadline) != 0) {
                        (void) pthread_detach(js->hash_threads[i]);
                        abandoned = true;
                }
        }
        if (js->writer_started)
                pthread_join(js->writer, NULL);
        jobs_dispatch_done(js);
        if (abandoned) {
                log_warning("A password check was still running at the stop; not waiting "
                            "for it");
                js->done_source = sd_event_source_disable_unref(js->done_source);
                return NULL;    /* the detached thread still uses js (and efd) */
        }
        free(js->hash_threads);
        sd_event_source_disable_unref(js->done_source);
        if (js->efd >= 0)
                close(js->efd);
        pthread_cond_destroy(&js->hash_cond);
        pthread_cond_destroy(&js->write_cond);
        pthread_cond_destroy(&js->solo_cond);
        pthread_mutex_destroy(&js->lock);
        free(js);
        return NULL;
}

int jobs_submit_hash(Jobs *js, Job *j) {
        pthread_mutex_lock(&js->lock);
        if (js->hash_waiting >= js->hash_queue_max) {
                js->stats.hashes_refused++;
                pthread_mutex_unlock(&js->lock);
                return -EAGAIN;
        }
        js->hash_waiting++;
        queue_push(&js->hash_q, j);
        pthread_cond_signal(&js->hash_cond);
        pthread_mutex_unlock(&js->lock);
        js->pending++;
        return 0;
}

bool jobs_cancel_hash(Jobs *js, Job *job) {
        bool found = false;

        pthread_mutex_lock(&js->lock);
        for (Job **p = &js->hash_q.head, *prev = NULL; *p; prev = *p, p = &(*p)->next)
                if (*p == job) {
                        *p = job->next;
                        if (js->hash_q.tail == job)
                                js->hash_q.tail = prev;
                        js->hash_waiting--;
                        js->stats.hashes_dropped++;
                        job->result = -ECANCELED;
                        jobs_complete_locked(js, job);
                        found = true;
                        break;
                }
        pthread_mutex_unlock(&js->lock);
        return found;
}

void jobs_drop_hashes(Jobs *js) {
        Job *j;

        pthread_mutex_lock(&js->lock);
        while ((j = queue_pop(&js->hash_q))) {
                js->hash_waiting--;
                js->stats.hashes_dropped++;
                j->result = -ECANCELED;
                jobs_complete_locked(js, j);
        }
        pthread_mutex_unlock(&js->lock);
}

void jobs_submit_write(Jobs *js, Job *j) {
        js->pending++;
        pthread_mutex_lock(&js->lock);
        queue_push(&js->write_q, j);
        pthread_cond_signal(&js->write_cond);
        pthread_mutex_unlock(&js->lock);
}

typedef struct ThreadArg {
        Jobs *jobs;
        Job *job;
} ThreadArg;

static void *solo_thread(void *userdata) {
        ThreadArg *a = userdata;
        Jobs *js = a->jobs;
        Job *j = a->job;

        free(a);
        j->result = j->hash(j);
        pthread_mutex_lock(&js->lock);
        jobs_complete_locked(js, j);
        js->solo_running--;
        pthread_cond_broadcast(&js->solo_cond);
        pthread_mutex_unlock(&js->lock);
        return NULL;
}

int jobs_submit_thread(Jobs *js, Job *j) {
        pthread_attr_t attr;
        pthread_t t;
        ThreadArg *a = malloc(sizeof *a);
        int r;

        if (!a)
                return -ENOMEM;
        a->jobs = js;
        a->job = j;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_mutex_lock(&js->lock);
        js->solo_running++;
        pthread_mutex_unlock(&js->lock);
        js->pending++;
        r = -pthread_create(&t, &attr, solo_thread, a);
        pthread_attr_destroy(&attr);
        if (r < 0) {
                js->pending--;
                pthread_mutex_lock(&js->lock);
                js->solo_running--;
                pthread_mutex_unlock(&js->lock);
                free(a);
        }
        return r;
}

const atomic_bool *jobs_cancel_flag(Jobs *js) {
        return &js->cancel;
}

uint64_t jobs_pending(Jobs *js) {
        return js->pending;
}

void jobs_stats(Jobs *js, JobsStats *ret) {
        pthread_mutex_lock(&js->lock);
        *ret = js->stats;
        pthread_mutex_unlock(&js->lock);
}
