/* SPDX-License-Identifier: MIT */
/* Connections to vmmd on the event loop (libvmm's non-blocking VmmAsync),
 * with the calls in flight in request order, and the pool of persistent
 * connections that every request shares (each call carries its caller's
 * token, so no pool connection is ever attached to a session). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "web.h"

#define POOL_IDLE_CLOSE_MS   (20u * 1000u)   /* under vmmd's 30 s for anonymous connections */
#define POOL_SWEEP_USEC      (5u * 1000u * 1000u)
#define POOL_MAX             64

struct Call {
        Call *next;
        uint32_t msgid;
        CallDone done;
        void *userdata;
};

struct Vconn {
        Web *web;
        VmmAsync *a;
        sd_event_source *io;
        Call *head, *tail;
        size_t n_calls;
        VconnNotify notify;
        VconnClosed closed;
        void *userdata;
        uint64_t last_used;
        unsigned busy;          /* inside our own callbacks: free later */
        bool dead, free_later;
        bool dirty;             /* requests queued, to be sent by vconn_flush_all() */
        Vconn *dirty_next;
};

struct Pool {
        Web *web;
        Vconn *conns[POOL_MAX];
        size_t size;
        sd_event_source *sweep;
};

static void vconn_undirty(Vconn *v);

static void vconn_update_events(Vconn *v) {
        if (!v->io || v->dead)
                return;
        uint32_t ev = EPOLLIN | (vmm_async_want_write(v->a) ? EPOLLOUT : 0);
        (void) sd_event_source_set_io_events(v->io, ev);
}

/* Fails every call in flight and reports the end once. */
static void vconn_fail(Vconn *v, int error, const VmmMessage *m) {
        if (v->dead)
                return;
        v->dead = true;
        if (v->io)
                (void) sd_event_source_set_enabled(v->io, SD_EVENT_OFF);
        while (v->head) {
                Call *c = v->head;
                v->head = c->next;
                v->n_calls--;
                if (c->done)
                        c->done(c->userdata, m, error);
                free(c);
        }
        v->tail = NULL;
        if (v->closed)
                v->closed(v->userdata, error);
}

static void vconn_handle_message(Vconn *v, const VmmMessage *m) {
        if (m->type == VMM_MESSAGE_NOTIFICATION) {
                if (v->notify)
                        v->notify(v->userdata, m);
                return;
        }
        if (m->msgid == 0) {
                /* the stream was refused (framing, limits): it ends here */
                vconn_fail(v, -ECONNRESET, m);
                return;
        }
        Call *c = v->head;
        if (!c || c->msgid != m->msgid) {
                log_warning("vmmd answered msgid %u, expected %u: dropping the connection",
                            m->msgid, c ? c->msgid : 0);
                vconn_fail(v, -EPROTO, NULL);
                return;
        }
        v->head = c->next;
        if (!v->head)
                v->tail = NULL;
        v->n_calls--;
        v->last_used = now_ms();
        if (c->done)
                c->done(c->userdata, m, 0);
        free(c);
}

static int vconn_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Vconn *v = userdata;
        Web *w = v->web;
        int r = 0;

        v->busy++;
        if (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                r = vmm_async_flush(v->a);
                if (r < 0 && r != -EAGAIN)
                        goto fail;
        }
        while (!v->dead) {
                VmmMessage m;
                r = vmm_async_read(v->a, &m);
                if (r == -EAGAIN)
                        break;
                if (r < 0)
                        goto fail;
                vconn_handle_message(v, &m);
                vmm_message_release(&m);
        }
        vconn_update_events(v);
        goto out;
fail:
        if (r != -ECONNRESET)
                log_debug("Connection to vmmd lost: %s", strerror(-r));
        vconn_fail(v, r, NULL);
out:
        v->busy--;
        if (v->free_later && v->busy == 0) {
                v->free_later = false;
                vconn_free(v);
        }
        /* the requests this answered go out now, and what they queued */
        web_settle(w);
        return 0;
}

int vconn_new(Web *w, const char *address, VconnNotify notify, VconnClosed closed,
              void *userdata, Vconn **ret) {
        Vconn *v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        v->web = w;
        v->notify = notify;
        v->closed = closed;
        v->userdata = userdata;
        v->last_used = now_ms();
        int r = vmm_async_new(&v->a);
        if (r >= 0)
                r = vmm_async_connect(v->a, address);
        if (r >= 0)
                r = sd_event_add_io(w->event, &v->io, vmm_async_fd(v->a), EPOLLIN | EPOLLOUT,
                                    vconn_io, v);
        if (r < 0) {
                v->closed = NULL;
                vconn_free(v);
                return r;
        }
        *ret = v;
        return 0;
}

Vconn *vconn_free(Vconn *v) {
        if (!v)
                return NULL;
        if (v->busy > 0) {
                /* freed when our callback returns; nothing more is reported */
                v->closed = NULL;
                v->notify = NULL;
                vconn_fail(v, -ECANCELED, NULL);
                v->free_later = true;
                return NULL;
        }
        v->closed = NULL;
        vconn_fail(v, -ECANCELED, NULL);
        vconn_undirty(v);
        sd_event_source_disable_unref(v->io);
        vmm_async_free(v->a);
        free(v);
        return NULL;
}

int vconn_call(Vconn *v, const char *method, const json_t *params, const char *token,
               CallDone done, void *userdata, Call **ret_call) {
        msgpack_packer *pk;
        uint32_t msgid;
        int r;

        if (v->dead)
                return -ECONNRESET;
        size_t n = (params ? json_object_size(params) : 0) + (token ? 1 : 0);
        if (params || token) {
                r = vmm_async_begin_map(v->a, method, (uint32_t) n, &pk, &msgid);
                if (r < 0)
                        return r;
                const char *k;
                json_t *val;
                json_object_foreach((json_t *) params, k, val) {
                        size_t kl = strlen(k);
                        if (msgpack_pack_str(pk, kl) || msgpack_pack_str_body(pk, k, kl) ||
                            json_to_msgpack(pk, val) < 0) {
                                vmm_async_cancel(v->a);
                                return -ENOMEM;
                        }
                }
                if (token && (msgpack_pack_str(pk, 5) || msgpack_pack_str_body(pk, "token", 5) ||
                              msgpack_pack_str(pk, strlen(token)) ||
                              msgpack_pack_str_body(pk, token, strlen(token)))) {
                        vmm_async_cancel(v->a);
                        return -ENOMEM;
                }
        } else {
                r = vmm_async_begin(v->a, method, 0, &pk, &msgid);
                if (r < 0)
                        return r;
        }
        Call *c = calloc(1, sizeof(*c));
        if (!c) {
                vmm_async_cancel(v->a);
                return -ENOMEM;
        }
        r = vmm_async_end(v->a);
        if (r < 0) {
                free(c);
                return r;
        }
        c->msgid = msgid;
        c->done = done;
        c->userdata = userdata;
        if (v->tail)
                v->tail->next = c;
        else
                v->head = c;
        v->tail = c;
        v->n_calls++;
        v->last_used = now_ms();
        /* sent once per loop iteration with whatever else was queued */
        if (!v->dirty) {
                v->dirty = true;
                v->dirty_next = v->web->dirty;
                v->web->dirty = v;
                web_schedule_flush(v->web);
        }
        if (ret_call)
                *ret_call = c;
        return 0;
}

static void vconn_undirty(Vconn *v) {
        if (!v->dirty)
                return;
        for (Vconn **p = &v->web->dirty; *p; p = &(*p)->dirty_next)
                if (*p == v) {
                        *p = v->dirty_next;
                        break;
                }
        v->dirty = false;
        v->dirty_next = NULL;
}

void vconn_flush_all(Web *w) {
        while (w->dirty) {
                Vconn *v = w->dirty;
                w->dirty = v->dirty_next;
                v->dirty = false;
                v->dirty_next = NULL;
                if (v->dead)
                        continue;
                int r = vmm_async_flush(v->a);
                if (r < 0 && r != -EAGAIN)
                        /* reported through the callbacks, from the loop */
                        (void) sd_event_source_set_io_events(v->io, EPOLLIN | EPOLLOUT);
                else
                        vconn_update_events(v);
        }
        if (w->flush)
                (void) sd_event_source_set_enabled(w->flush, SD_EVENT_OFF);
}

void call_forget(Call *c) {
        if (c) {
                c->done = NULL;
                c->userdata = NULL;
        }
}

size_t vconn_in_flight(const Vconn *v) {
        return v->n_calls;
}

bool vconn_usable(const Vconn *v) {
        return v && !v->dead;
}

uint64_t vconn_last_used(const Vconn *v) {
        return v->last_used;
}

/* ---- the pool ---- */

static void pool_conn_closed(void *userdata, int error) {
        Vconn **slot = userdata;
        Vconn *v = *slot;
        *slot = NULL;
        /* called from inside v's callback: freed when it returns */
        vconn_free(v);
}

static int pool_sweep(sd_event_source *s, uint64_t usec, void *userdata) {
        Pool *p = userdata;
        uint64_t now = now_ms();
        for (size_t i = 0; i < p->size; i++) {
                Vconn *v = p->conns[i];
                if (v && vconn_in_flight(v) == 0 &&
                    now - vconn_last_used(v) >= POOL_IDLE_CLOSE_MS) {
                        p->conns[i] = NULL;
                        vconn_free(v);
                }
        }
        (void) sd_event_source_set_time_relative(s, POOL_SWEEP_USEC);
        return 0;
}

int pool_new(Web *w, Pool **ret) {
        Pool *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->web = w;
        p->size = MIN(MAX(w->config.pool_size, 1u), (unsigned) POOL_MAX);
        int r = sd_event_add_time_relative(w->event, &p->sweep, CLOCK_MONOTONIC,
                                           POOL_SWEEP_USEC, 0, pool_sweep, p);
        if (r >= 0)
                r = sd_event_source_set_enabled(p->sweep, SD_EVENT_ON);
        if (r < 0) {
                pool_free(p);
                return r;
        }
        *ret = p;
        return 0;
}

Pool *pool_free(Pool *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; i < p->size; i++)
                p->conns[i] = vconn_free(p->conns[i]);
        sd_event_source_disable_unref(p->sweep);
        free(p);
        return NULL;
}

int pool_call(Pool *p, const char *method, const json_t *params, const char *token,
              CallDone done, void *userdata, Call **ret_call) {
        Vconn *best = NULL;
        ssize_t free_slot = -1;
        for (size_t i = 0; i < p->size; i++) {
                Vconn *v = p->conns[i];
                if (!v || !vconn_usable(v)) {
                        if (free_slot < 0 && !v)
                                free_slot = (ssize_t) i;
                        continue;
                }
                if (!best || vconn_in_flight(v) < vconn_in_flight(best))
                        best = v;
        }
        if ((!best || vconn_in_flight(best) > 0) && free_slot >= 0) {
                Vconn **slot = &p->conns[free_slot];
                int r = vconn_new(p->web, p->web->config.vmmd, NULL, pool_conn_closed, slot, slot);
                if (r < 0) {
                        if (!best)
                                return r;
                } else
                        best = *slot;
        }
        if (!best)
                return -EAGAIN;
        return vconn_call(best, method, params, token, done, userdata, ret_call);
}
