/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "conn.h"
#include "log.h"
#include "shared/clock.h"
#include "shared/macro.h"
#include "shared/mpout.h"
#include "shared/mpscan.h"

#define READ_CHUNK      (16u * 1024u)
#define OUT_HIGH        (1024u * 1024u)   /* stop reading above this much unsent */
#define OUT_LOW         (256u * 1024u)    /* and start again below this */
#define CLOSING_GRACE_MS 2000u
#define CONN_BATCH      256               /* ready connections served per wake-up */

/* Buffers of the usual sizes, kept for reuse by the next connection that
 * needs one: a connection gives its buffers back as soon as it has nothing
 * pending (an idle connection holds none), and without this each request
 * would cost a malloc/free pair of each. Bounded. */
#define POOL_MAX        64
#define OUT_FIRST       4096u

typedef struct BufPool {
        void *b[POOL_MAX];
        size_t n;
        size_t size;
} BufPool;

struct ConnHub {
        sd_event *event;
        sd_event_source *epoll_source;
        sd_event_source *close_later_source;
        Conn *conns;                    /* newest first */
        size_t n_conns;
        uint64_t next_id;
        BufPool pool_in, pool_out;
        uint64_t partial_ms;
        uint64_t max_unsent_total;
        uint64_t unsent_total;
        bool shutting_down;
};

struct Conn {
        ConnHub *hub;
        unsigned n_ref;
        Conn *prev, *next;
        const ConnOps *ops;
        void *userdata;

        uint64_t id;
        int fd;
        bool tcp, unix_fds;
        size_t max_message;
        char peer[64];
        int64_t since_ms;

        uint8_t *in;                    /* allocated while bytes are pending */
        size_t in_head, in_len, in_cap;
        uint8_t *out;
        size_t out_head, out_len, out_cap;
        MpScan scan;

        bool held;                      /* the owner is working on a message */
        bool closing;                   /* no more messages; flush, shut down, close */
        bool dead;                      /* fd closed; memory lives until the last ref */
        bool close_pending;             /* conn_close_later() */
        bool read_eof;
        bool paused;                    /* too much unsent output: not reading */
        /* Edge-triggered epoll: what is registered, and whether the last
         * read/write stopped short of EAGAIN (then the next registration
         * re-arms the edge). */
        uint32_t io_events;
        bool in_undrained;
        bool rdhup;                     /* the last wake-up said: the peer sent its FIN */
        bool out_ready;
        bool cutoff_set;
        bool dispatching;               /* inside ops->message: no re-entry */
        uint64_t cutoff;                /* bytes received before the stop began */
        uint64_t received;              /* bytes received in all */
        uint64_t consumed;              /* bytes of whole messages taken */
        uint64_t idle_ms;               /* 0: no idle timeout */
        uint64_t last_activity_ms;      /* monotonic: last byte in or out */
        uint64_t partial_since_ms;      /* monotonic; 0 = no half-received message */
        uint64_t closing_since_ms;
        const char *close_reason;

        int fds[CONN_MAX_FDS];          /* received with SCM_RIGHTS, oldest first */
        uint64_t fd_at[CONN_MAX_FDS];   /* stream offset of the bytes each came with */
        size_t n_fds;
        uint64_t msg_start, msg_end;    /* stream offsets of the message delivered */
};

static void *pool_get(BufPool *p, size_t size) {
        if (size == p->size && p->n > 0)
                return p->b[--p->n];
        return malloc(size);
}

static void pool_put(BufPool *p, void *b, size_t cap) {
        if (!b)
                return;
        if (cap == p->size && p->n < POOL_MAX)
                p->b[p->n++] = b;
        else
                free(b);
}

static void conn_update_events(Conn *c);
static void conn_process(Conn *c);
static void fds_drop_before(Conn *c, uint64_t offset);
static void on_io(Conn *c, uint32_t revents);

static int on_conns_ready(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct epoll_event ev[CONN_BATCH];
        int n;

        n = epoll_wait(fd, ev, CONN_BATCH, 0);
        if (n <= 0)
                return 0;
        /* handling one may close another that is later in this batch */
        for (int i = 0; i < n; i++)
                conn_ref(ev[i].data.ptr);
        for (int i = 0; i < n; i++) {
                Conn *c = ev[i].data.ptr;
                if (!c->dead)
                        on_io(c, ev[i].events);
        }
        for (int i = 0; i < n; i++)
                conn_unref(ev[i].data.ptr);
        return 0;
}

static int on_close_later(sd_event_source *s, void *userdata) {
        ConnHub *h = userdata;

        for (bool again = true; again;) {
                again = false;
                for (Conn *c = h->conns; c; c = c->next)
                        if (c->close_pending) {
                                conn_close(c, c->close_reason ? c->close_reason : "killed");
                                again = true;
                                break;
                        }
        }
        return 0;
}

int conn_hub_new(sd_event *e, ConnHub **ret) {
        _cleanup_close_ int fd = -1;
        ConnHub *h;
        int r;

        h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->event = sd_event_ref(e);
        h->pool_in.size = READ_CHUNK;
        h->pool_out.size = OUT_FIRST;
        h->partial_ms = VMM_IDLE_TIMEOUT_MS;
        h->max_unsent_total = UINT64_MAX;
        fd = epoll_create1(EPOLL_CLOEXEC);
        if (fd < 0) {
                r = -errno;
                goto fail;
        }
        r = sd_event_add_io(e, &h->epoll_source, fd, EPOLLIN, on_conns_ready, h);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_io_fd_own(h->epoll_source, true);
        fd = -1;
        r = sd_event_add_defer(e, &h->close_later_source, on_close_later, h);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_enabled(h->close_later_source, SD_EVENT_OFF);
        *ret = h;
        return 0;
fail:
        conn_hub_free(h);
        return r;
}

ConnHub *conn_hub_free(ConnHub *h) {
        if (!h)
                return NULL;
        conn_hub_close_all(h, "shutdown");
        h->close_later_source = sd_event_source_disable_unref(h->close_later_source);
        h->epoll_source = sd_event_source_disable_unref(h->epoll_source);
        while (h->pool_in.n > 0)
                free(h->pool_in.b[--h->pool_in.n]);
        while (h->pool_out.n > 0)
                free(h->pool_out.b[--h->pool_out.n]);
        sd_event_unref(h->event);
        free(h);
        return NULL;
}

void conn_hub_set_limits(ConnHub *h, uint64_t partial_ms, uint64_t max_unsent_total) {
        h->partial_ms = partial_ms;
        h->max_unsent_total = max_unsent_total;
}

size_t conn_hub_count(ConnHub *h) {
        return h->n_conns;
}

uint64_t conn_hub_unsent_total(ConnHub *h) {
        return h->unsent_total;
}

void conn_hub_close_all(ConnHub *h, const char *reason) {
        while (h->conns)
                conn_close(h->conns, reason);
}

static int hub_epoll_ctl(Conn *c, int op, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = c };
        int fd = sd_event_source_get_io_fd(c->hub->epoll_source);

        return epoll_ctl(fd, op, c->fd, &ev) < 0 ? -errno : 0;
}

int conn_new(ConnHub *h, int fd, const ConnOptions *o, const ConnOps *ops, void *userdata,
             Conn **ret) {
        Conn *c;
        int r;

        assert(h && o && ops && ops->message && ops->closed);
        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->hub = h;
        c->n_ref = 1;
        c->ops = ops;
        c->userdata = userdata;
        c->fd = fd;
        c->tcp = o->tcp;
        c->unix_fds = o->unix_fds;
        c->max_message = o->max_message;
        c->id = ++h->next_id;
        c->since_ms = now_ms();
        c->last_activity_ms = mono_ms();
        snprintf(c->peer, sizeof c->peer, "%s", o->peer ? o->peer : "?");
        mpscan_init(&c->scan, o->max_message, o->max_depth);

        c->io_events = EPOLLIN | EPOLLRDHUP | EPOLLET;
        r = hub_epoll_ctl(c, EPOLL_CTL_ADD, c->io_events);
        if (r < 0) {
                free(c);
                return r;
        }
        if (o->tcp) {
                int one = 1;
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c->next = h->conns;
        if (h->conns)
                h->conns->prev = c;
        h->conns = c;
        h->n_conns++;
        *ret = c;
        return 0;
}

Conn *conn_ref(Conn *c) {
        c->n_ref++;
        return c;
}

Conn *conn_unref(Conn *c) {
        if (!c)
                return NULL;
        assert(c->n_ref > 0);
        if (--c->n_ref > 0)
                return NULL;
        assert(c->dead);
        free(c);
        return NULL;
}

uint64_t conn_id(const Conn *c) {
        return c->id;
}

const char *conn_peer(const Conn *c) {
        return c->peer;
}

int64_t conn_since(const Conn *c) {
        return c->since_ms;
}

bool conn_is_open(const Conn *c) {
        return !c->dead && !c->closing && !c->close_pending;
}

void conn_set_idle_timeout(Conn *c, uint64_t ms) {
        if (c->idle_ms == 0 && ms > 0)
                c->last_activity_ms = mono_ms();  /* the clock starts now */
        c->idle_ms = ms;
}

static size_t out_pending(const Conn *c) {
        return c->out_len - c->out_head;
}

size_t conn_unsent(const Conn *c) {
        return out_pending(c);
}

static void out_release(Conn *c) {
        c->hub->unsent_total -= out_pending(c);
        pool_put(&c->hub->pool_out, c->out, c->out_cap);
        c->out = NULL;
        c->out_head = c->out_len = c->out_cap = 0;
}

void conn_close(Conn *c, const char *reason) {
        ConnHub *h = c->hub;

        if (c->dead)
                return;
        c->dead = true;
        c->close_reason = reason;
        log_debug("Connection %" PRIu64 " from %s closed (%s)", c->id, c->peer, reason);

        for (size_t i = 0; i < c->n_fds; i++)
                (void) close(c->fds[i]);
        c->n_fds = 0;
        if (c->fd >= 0) {
                (void) hub_epoll_ctl(c, EPOLL_CTL_DEL, 0);
                (void) close(c->fd);
        }
        c->fd = -1;

        if (c->prev)
                c->prev->next = c->next;
        else
                h->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        h->n_conns--;

        pool_put(&h->pool_in, c->in, c->in_cap);
        c->in = NULL;
        c->in_head = c->in_len = c->in_cap = 0;
        out_release(c);

        conn_ref(c);
        c->ops->closed(c, reason, c->userdata);
        conn_unref(c);
        conn_unref(c);          /* the hub's reference */
}

void conn_close_later(Conn *c, const char *reason) {
        if (c->dead || c->close_pending)
                return;
        c->close_pending = true;
        c->close_reason = reason;
        (void) sd_event_source_set_enabled(c->hub->close_later_source, SD_EVENT_ONESHOT);
}

static int out_reserve(Conn *c, size_t n) {
        if (c->out_cap - c->out_len >= n)
                return 0;
        if (c->out_head > 0) {
                memmove(c->out, c->out + c->out_head, c->out_len - c->out_head);
                c->out_len -= c->out_head;
                c->out_head = 0;
                if (c->out_cap - c->out_len >= n)
                        return 0;
        }
        size_t cap = c->out_cap ? c->out_cap : OUT_FIRST;
        while (cap - c->out_len < n)
                cap *= 2;
        uint8_t *p = c->out ? realloc(c->out, cap) : pool_get(&c->hub->pool_out, cap);
        if (!p)
                return -ENOMEM;
        c->out = p;
        c->out_cap = cap;
        return 0;
}

int conn_write(Conn *c, const void *data, size_t len) {
        if (c->dead)
                return 0;
        if (out_reserve(c, len) < 0)
                return -ENOMEM;
        memcpy(c->out + c->out_len, data, len);
        c->out_len += len;
        c->hub->unsent_total += len;
        return 0;
}

static int out_packer_write(void *data, const char *buf, size_t len) {
        return conn_write(data, buf, len) < 0 ? -1 : 0;
}

int conn_write_error(Conn *c, uint32_t msgid, VmmError code, const char *message) {
        msgpack_packer pk;

        if (c->dead)
                return 0;
        msgpack_packer_init(&pk, c, out_packer_write);
        if (msgpack_pack_array(&pk, 4) || msgpack_pack_uint8(&pk, VMM_MSG_RESPONSE) ||
            msgpack_pack_uint32(&pk, msgid) || msgpack_pack_map(&pk, 2) ||
            mp_kv_str(&pk, "code", vmm_error_to_string(code)) ||
            mp_kv_str(&pk, "message", message) || msgpack_pack_nil(&pk))
                return -ENOMEM;
        return 0;
}

/* Write what we can; negative when the peer is gone. */
static int conn_flush(Conn *c) {
        while (c->out_head < c->out_len) {
                ssize_t n = send(c->fd, c->out + c->out_head, c->out_len - c->out_head,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                c->out_ready = false;   /* an edge comes when there is room */
                                return 0;
                        }
                        return -errno;
                }
                c->out_head += (size_t) n;
                c->hub->unsent_total -= (size_t) n;
                c->last_activity_ms = mono_ms();
        }
        c->out_ready = true;
        /* everything sent: give the memory back */
        out_release(c);
        return 0;
}

void conn_close_after_flush(Conn *c, const char *reason) {
        if (c->dead || c->closing)
                return;
        c->closing = true;
        c->close_reason = reason;
        c->closing_since_ms = mono_ms();
        /* nothing more is read as messages */
        if (!c->held) {
                pool_put(&c->hub->pool_in, c->in, c->in_cap);
                c->in = NULL;
                c->in_cap = 0;
        }
        c->in_head = c->in_len = 0;
        conn_update_events(c);
}

static void conn_framing_error(Conn *c, VmmError code, const char *msg) {
        (void) conn_write_error(c, 0, code, msg);
        log_debug("Connection %" PRIu64 " from %s: framing error: %s", c->id, c->peer, msg);
        conn_close_after_flush(c, "error");
}

static void conn_in_compact(Conn *c) {
        if (c->in_head == c->in_len) {
                c->in_head = c->in_len = 0;
                if (!c->held) {
                        pool_put(&c->hub->pool_in, c->in, c->in_cap);
                        c->in = NULL;
                        c->in_cap = 0;
                }
        } else if (c->in_head > 0 && c->in_head >= c->in_cap / 2) {
                memmove(c->in, c->in + c->in_head, c->in_len - c->in_head);
                c->in_len -= c->in_head;
                c->in_head = 0;
        }
}

/* Past the total bound: close the connections that do not read and hold
 * the most unsent output, largest first, until under it. */
static void hub_enforce_unsent(ConnHub *h) {
        while (h->unsent_total > h->max_unsent_total) {
                Conn *worst = NULL;
                for (Conn *c = h->conns; c; c = c->next)
                        if (c->paused && !c->close_pending &&
                            (!worst || out_pending(c) > out_pending(worst)))
                                worst = c;
                if (!worst)
                        return;
                log_struct(LOG_NOTICE, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                      .peer = worst->peer, .has_conn = true,
                                                      .conn = worst->id, .admin_uid = -1 },
                           "Connection %" PRIu64 " from %s does not read its replies (%zu bytes "
                           "unsent, %" PRIu64 " in all); closing it", worst->id, worst->peer,
                           out_pending(worst), h->unsent_total);
                /* its output will not be sent: its memory goes back now, not
                 * when the close runs after this batch of events */
                out_release(worst);
                conn_close_later(worst, "error");
        }
}

static void conn_process(Conn *c) {
        /* a method that kicks every connection (shutdown) reaches its own:
         * the loop below goes on with the next message when it returns */
        if (c->dispatching)
                return;
        conn_ref(c);
        while (!c->dead && !c->closing && !c->held && !c->paused && !c->close_pending) {
                size_t avail = c->in_len - c->in_head, len = 0;
                if (avail == 0)
                        break;
                MpScanResult s = mpscan_feed(&c->scan, c->in + c->in_head, avail, &len);
                if (s == MPSCAN_NEED_MORE) {
                        if (c->partial_since_ms == 0)
                                c->partial_since_ms = mono_ms();
                        break;
                }
                if (s == MPSCAN_BAD) {
                        conn_framing_error(c, VMM_E_BAD_REQUEST, "malformed MessagePack");
                        break;
                }
                if (s == MPSCAN_TOO_LARGE) {
                        char msg[128];
                        snprintf(msg, sizeof msg,
                                 "message over %zu bytes or nested deeper than %u",
                                 c->max_message, c->scan.max_depth);
                        conn_framing_error(c, VMM_E_TOO_LARGE, msg);
                        break;
                }
                c->partial_since_ms = 0;
                mpscan_reset(&c->scan);
                const uint8_t *msg = c->in + c->in_head;
                c->in_head += len;
                c->msg_start = c->consumed;
                c->consumed += len;
                c->msg_end = c->consumed;
                bool after_cutoff = c->hub->shutting_down &&
                        (!c->cutoff_set || c->consumed > c->cutoff);
                c->dispatching = true;
                c->held = c->ops->message(c, msg, len, after_cutoff, c->userdata);
                c->dispatching = false;
                if (c->n_fds > 0 && !c->dead)
                        fds_drop_before(c, c->msg_end);
                if (out_pending(c) >= OUT_HIGH)
                        c->paused = true;
        }
        if (!c->dead) {
                if (!c->closing)
                        conn_in_compact(c);
                if (!c->closing && !c->held && !c->paused && c->read_eof) {
                        /* the peer is done sending; anything half received is dropped */
                        conn_close_after_flush(c, "eof");
                }
                if (!c->dead) {
                        int r = conn_flush(c);
                        if (r < 0)
                                conn_close(c, "error");
                        else
                                conn_update_events(c);
                }
        }
        if (c->hub->unsent_total > c->hub->max_unsent_total)
                hub_enforce_unsent(c->hub);
        conn_unref(c);
}

/* Register ev (edge-triggered). Re-register only when the set changes or an
 * edge may have been consumed without reaching EAGAIN. */
static void conn_set_events(Conn *c, uint32_t ev) {
        ev |= EPOLLET;
        if (ev & EPOLLIN)
                ev |= EPOLLRDHUP;
        bool rearm = ((ev & EPOLLIN) && c->in_undrained) || ((ev & EPOLLOUT) && c->out_ready);
        if (ev == c->io_events && !rearm)
                return;
        if (hub_epoll_ctl(c, EPOLL_CTL_MOD, ev) >= 0)
                c->io_events = ev;
}

static uint32_t wanted_events(Conn *c) {
        uint32_t ev = 0;

        if (c->closing) {
                if (out_pending(c) > 0)
                        ev |= EPOLLOUT;
                else
                        ev |= EPOLLIN;
                return ev;
        }
        size_t bound = c->max_message + READ_CHUNK;
        if (!c->paused && !c->read_eof && c->in_len - c->in_head < bound)
                ev |= EPOLLIN;
        if (out_pending(c) > 0)
                ev |= EPOLLOUT;
        return ev;
}

static void conn_update_events(Conn *c) {
        if (c->dead)
                return;
        if (c->paused && out_pending(c) < OUT_LOW) {
                c->paused = false;
                if (!c->held && !c->closing) {
                        /* go on with what is buffered */
                        conn_process(c);
                        return;
                }
        }
        if (c->closing && out_pending(c) == 0) {
                if (c->read_eof) {
                        conn_close(c, c->close_reason ? c->close_reason : "eof");
                        return;
                }
                /* all sent: half-close and wait for the peer's EOF (closing
                 * with unread input would reset the connection and could
                 * lose the last answers) */
                (void) shutdown(c->fd, SHUT_WR);
        }
        conn_set_events(c, wanted_events(c));
}

/* recv() that also takes descriptors sent with SCM_RIGHTS. */
static ssize_t recv_with_fds(Conn *c, uint8_t *buf, size_t len) {
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int) * CONN_MAX_FDS)];
        } control;
        struct iovec iov = { .iov_base = buf, .iov_len = len };
        struct msghdr mh = {
                .msg_iov = &iov,
                .msg_iovlen = 1,
                .msg_control = &control,
                .msg_controllen = sizeof control,
        };
        ssize_t n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0)
                return n;
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
                if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
                        continue;
                size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                int *fds = (int *) CMSG_DATA(cm);
                for (size_t i = 0; i < nfd; i++) {
                        int fd;
                        memcpy(&fd, fds + i, sizeof fd);
                        if (c->n_fds < CONN_MAX_FDS) {
                                c->fd_at[c->n_fds] = c->received;
                                c->fds[c->n_fds++] = fd;
                        } else
                                (void) close(fd);
                }
        }
        return n;
}

static void fds_remove(Conn *c, size_t i) {
        memmove(c->fds + i, c->fds + i + 1, (c->n_fds - i - 1) * sizeof c->fds[0]);
        memmove(c->fd_at + i, c->fd_at + i + 1, (c->n_fds - i - 1) * sizeof c->fd_at[0]);
        c->n_fds--;
}

int conn_take_fd(Conn *c) {
        for (size_t i = 0; i < c->n_fds; i++)
                if (c->fd_at[i] >= c->msg_start && c->fd_at[i] < c->msg_end) {
                        int fd = c->fds[i];
                        fds_remove(c, i);
                        return fd;
                }
        return -1;
}

/* Close the descriptors that came with messages already delivered. */
static void fds_drop_before(Conn *c, uint64_t offset) {
        size_t i = 0;
        while (i < c->n_fds) {
                if (c->fd_at[i] < offset) {
                        (void) close(c->fds[i]);
                        fds_remove(c, i);
                } else
                        i++;
        }
}

void conn_send_soon(Conn *c) {
        if (c->dead)
                return;
        if (conn_flush(c) < 0) {
                conn_close_later(c, "error");
                return;
        }
        conn_set_events(c, wanted_events(c));
}

/* Edge-triggered: read until EAGAIN, end of file, or the input bound. */
static int conn_read(Conn *c) {
        c->in_undrained = true;
        if (c->closing) {
                /* discard what the peer still sends until its EOF; a bounded
                 * amount per wake-up (re-armed if more is left) */
                uint8_t sink[4096];
                for (int i = 0; i < 16; i++) {
                        ssize_t n = recv(c->fd, sink, sizeof sink, MSG_DONTWAIT);
                        if (n == 0) {
                                c->read_eof = true;
                                c->in_undrained = false;
                                return 0;
                        }
                        if (n < 0) {
                                if (errno == EINTR)
                                        continue;
                                if (errno != EAGAIN)
                                        return -errno;
                                c->in_undrained = false;
                                return 0;
                        }
                }
                return 0;
        }

        size_t bound = c->max_message + READ_CHUNK;
        while (c->in_len - c->in_head < bound) {
                if (c->in_cap - c->in_len < READ_CHUNK) {
                        if (c->in_head > 0 && !c->held) {
                                memmove(c->in, c->in + c->in_head, c->in_len - c->in_head);
                                c->in_len -= c->in_head;
                                c->in_head = 0;
                        }
                        if (c->in_cap - c->in_len < READ_CHUNK) {
                                size_t cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
                                while (cap - c->in_len < READ_CHUNK)
                                        cap *= 2;
                                uint8_t *p = c->in ? realloc(c->in, cap)
                                                   : pool_get(&c->hub->pool_in, cap);
                                if (!p)
                                        return -ENOMEM;
                                c->in = p;
                                c->in_cap = cap;
                        }
                }
                size_t room = c->in_cap - c->in_len;
                ssize_t n;
                if (c->unix_fds)
                        n = recv_with_fds(c, c->in + c->in_len, room);
                else
                        n = recv(c->fd, c->in + c->in_len, room, MSG_DONTWAIT);
                if (n == 0) {
                        c->read_eof = true;
                        c->in_undrained = false;
                        return 0;
                }
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno != EAGAIN)
                                return -errno;
                        c->in_undrained = false;
                        return 0;
                }
                c->in_len += (size_t) n;
                c->received += (uint64_t) n;
                c->last_activity_ms = mono_ms();
                if (c->tcp && (size_t) n < room && !c->rdhup) {
                        /* TCP hands over all it has: a short read emptied the
                         * queue, and what arrives later raises a new edge. (Not
                         * so on a Unix socket with descriptors: a read stops
                         * early at bytes that carry them; nor when the peer's
                         * FIN came with the data: its edge is spent, read on to
                         * the end of file.) Saves the EAGAIN call per request. */
                        c->in_undrained = false;
                        return 0;
                }
        }
        return 0;
}

static void on_io(Conn *c, uint32_t revents) {
        int r;

        conn_ref(c);
        if (revents & EPOLLOUT) {
                r = conn_flush(c);
                if (r < 0) {
                        conn_close(c, "error");
                        goto out;
                }
        }
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
                c->rdhup = revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR);
                r = conn_read(c);
                if (r < 0) {
                        conn_close(c, "error");
                        goto out;
                }
        }
        if (c->closing) {
                if (c->read_eof && out_pending(c) == 0)
                        conn_close(c, c->close_reason ? c->close_reason : "eof");
                else
                        conn_update_events(c);
                goto out;
        }
        conn_process(c);
out:
        conn_unref(c);
}

void conn_resume(Conn *c) {
        c->held = false;
        if (c->dead)
                return;
        c->last_activity_ms = mono_ms();
        if (out_pending(c) >= OUT_HIGH)
                c->paused = true;
        conn_process(c);
}

/* f on every connection: closing one (or another) does not end the walk. */
static void hub_foreach(ConnHub *h, void (*f)(Conn *c, uint64_t arg), uint64_t arg) {
        Conn **all;
        size_t n = 0;

        if (h->n_conns == 0)
                return;
        all = malloc(h->n_conns * sizeof *all);
        if (!all)
                return;
        for (Conn *c = h->conns; c && n < h->n_conns; c = c->next)
                all[n++] = conn_ref(c);
        for (size_t i = 0; i < n; i++) {
                if (!all[i]->dead)
                        f(all[i], arg);
                conn_unref(all[i]);
        }
        free(all);
}

static void conn_kick(Conn *c, uint64_t unused) {
        conn_process(c);
}

static void conn_sweep(Conn *c, uint64_t now);

void conn_hub_begin_shutdown(ConnHub *h) {
        h->shutting_down = true;
        for (Conn *c = h->conns; c; c = c->next) {
                c->cutoff_set = true;
                c->cutoff = c->received;
        }
        /* what is buffered and arrived before the stop is answered now */
        hub_foreach(h, conn_kick, 0);
}

static void conn_sweep(Conn *c, uint64_t now) {
        ConnHub *h = c->hub;

        if (c->dead)
                return;
        if (c->closing) {
                if (now - c->closing_since_ms > CLOSING_GRACE_MS)
                        conn_close(c, c->close_reason ? c->close_reason : "error");
                return;
        }
        if (c->partial_since_ms && now - c->partial_since_ms >= h->partial_ms) {
                log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                    .peer = c->peer, .has_conn = true,
                                                    .conn = c->id, .admin_uid = -1 },
                           "Connection %" PRIu64 " from %s: message not completed in %" PRIu64
                           " s, closing", c->id, c->peer, h->partial_ms / 1000);
                conn_close(c, "timeout");
                return;
        }
        /* idle: no byte in or out for the timeout, and no message being
         * worked on (a client that pipelines and never reads its replies is
         * idle too: nothing moves either way) */
        if (c->idle_ms && !c->held && now - c->last_activity_ms >= c->idle_ms) {
                log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                    .peer = c->peer, .has_conn = true,
                                                    .conn = c->id, .admin_uid = -1 },
                           "Connection %" PRIu64 " from %s: idle without a session for %" PRIu64
                           " s, closing", c->id, c->peer, c->idle_ms / 1000);
                conn_close(c, "timeout");
                return;
        }
        if (h->shutting_down && !c->held) {
                /* no whole message left that arrived before the stop */
                if (c->in_len == c->in_head || c->consumed >= c->cutoff)
                        conn_close_after_flush(c, "shutdown");
        }
}

void conn_hub_sweep(ConnHub *h, uint64_t now) {
        hub_foreach(h, conn_sweep, now);
}
