/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <assert.h>
#include <inttypes.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "events.h"
#include "log.h"
#include "rpc.h"
#include "session.h"
#include "shared/macro.h"
#include "shared/mpout.h"

#define READ_CHUNK      (16u * 1024u)
#define OUT_HIGH        (1024u * 1024u)   /* stop reading above this much unsent */
#define OUT_LOW         (256u * 1024u)    /* and start again below this */
#define CLOSING_GRACE_MS 2000u

/* Buffers of the usual sizes, kept for reuse by the next connection that
 * needs one: a connection gives its buffers back as soon as it has nothing
 * pending (an idle connection holds none), and without this each request
 * would cost a malloc/free pair of each. Loop thread only; bounded. */
#define POOL_MAX        64
#define OUT_FIRST       4096u

typedef struct BufPool {
        void *b[POOL_MAX];
        size_t n;
        size_t size;
} BufPool;

static BufPool pool_in = { .size = READ_CHUNK }, pool_out = { .size = OUT_FIRST };

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

void conn_pools_free(void) {
        while (pool_in.n > 0)
                free(pool_in.b[--pool_in.n]);
        while (pool_out.n > 0)
                free(pool_out.b[--pool_out.n]);
}

static size_t conn_max_message(Conn *c) {
        return c->kind == CONN_ADMIN ? c->manager->config.max_message_admin
                                     : c->manager->config.max_message_tcp;
}

static void conn_update_events(Conn *c);
static void conn_process(Conn *c);
static void fds_drop_before(Conn *c, uint64_t offset);

static void format_peer(const struct sockaddr *sa, char *buf, size_t len) {
        char addr[INET6_ADDRSTRLEN];

        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
                snprintf(buf, len, "%s:%u", addr, ntohs(in->sin_port));
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
                snprintf(buf, len, "[%s]:%u", addr, ntohs(in6->sin6_port));
        } else
                snprintf(buf, len, "unix");
}

static void on_io(Conn *c, uint32_t revents);

/* All connections share one epoll instance of their own, which is a single
 * source of the sd-event loop: one wake-up handles every ready connection
 * (up to CONN_BATCH), where a source per connection would cost an
 * epoll_wait and the loop's bookkeeping per ready connection. */
#define CONN_BATCH 256

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

static int conn_epoll_setup(Manager *m) {
        int r;

        if (m->conn_epoll_source)
                return 0;
        int fd = epoll_create1(EPOLL_CLOEXEC);
        if (fd < 0)
                return -errno;
        r = sd_event_add_io(m->event, &m->conn_epoll_source, fd, EPOLLIN, on_conns_ready, m);
        if (r < 0) {
                (void) close(fd);
                return r;
        }
        (void) sd_event_source_set_io_fd_own(m->conn_epoll_source, true);
        return 0;
}

void conn_epoll_done(Manager *m) {
        m->conn_epoll_source = sd_event_source_disable_unref(m->conn_epoll_source);
}

static int conn_epoll_ctl(Conn *c, int op, uint32_t events) {
        struct epoll_event ev = { .events = events, .data.ptr = c };
        int fd = sd_event_source_get_io_fd(c->manager->conn_epoll_source);

        return epoll_ctl(fd, op, c->fd, &ev) < 0 ? -errno : 0;
}

int conn_steal_fd(Conn *c) {
        int fd = c->fd;

        if (fd >= 0)
                (void) conn_epoll_ctl(c, EPOLL_CTL_DEL, 0);
        c->fd = -1;
        return fd;
}

int conn_new(Manager *m, int fd, ConnKind kind, const struct sockaddr *sa, socklen_t salen,
             Conn **ret) {
        Conn *c;
        int r;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->manager = m;
        c->n_ref = 1;
        c->fd = fd;
        c->kind = kind;
        c->id = ++m->next_conn_id;
        c->since_ms = now_ms();
        c->last_activity_ms = mono_ms();
        c->uid = (uid_t) -1;
        c->pid = 0;
        format_peer(sa, c->peer_str, sizeof c->peer_str);
        mpscan_init(&c->scan, conn_max_message(c), VMM_MAX_DEPTH);

        c->peer = sessions_peer_ref(m->sessions, sa);
        if (!c->peer) {
                free(c);
                return -ENOMEM;
        }
        c->io_events = EPOLLIN | EPOLLRDHUP | EPOLLET;
        r = conn_epoll_setup(m);
        if (r >= 0)
                r = conn_epoll_ctl(c, EPOLL_CTL_ADD, c->io_events);
        if (r < 0) {
                sessions_peer_unref(m->sessions, c->peer);
                free(c);
                return r;
        }
        if (kind == CONN_TCP) {
                int one = 1;
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        c->next = m->conns;
        if (m->conns)
                m->conns->prev = c;
        m->conns = c;
        m->n_conns++;
        log_debug("Connection %" PRIu64 " from %s", c->id, c->peer_str);
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
        pool_put(&pool_in, c->in, c->in_cap);
        pool_put(&pool_out, c->out, c->out_cap);
        free(c);
        return NULL;
}

void conn_close(Conn *c, const char *reason) {
        Manager *m = c->manager;

        if (c->dead)
                return;
        c->dead = true;
        c->close_reason = reason;
        log_debug("Connection %" PRIu64 " from %s closed (%s)", c->id, c->peer_str, reason);

        events_unwatch(m, c);
        for (size_t i = 0; i < c->n_fds; i++)
                (void) close(c->fds[i]);
        c->n_fds = 0;
        if (c->announced)
                events_emit(m, &(Event) { .type = "conn.closed", .has_conn = true, .conn = c->id,
                                          .peer = c->peer_str,
                                          .vm_id = c->attached ? c->vm_id : NULL,
                                          .vm_id_nil = !c->attached, .reason = reason });

        if (c->attached) {
                uint8_t hash[SECRET_HASH_BYTES];
                char vm_id[VMM_VM_ID_MAX + 1];
                memcpy(hash, c->session_hash, sizeof hash);
                memcpy(vm_id, c->vm_id, sizeof vm_id);
                (void) sessions_detach(m->sessions, c);
                client_session_left(m, hash, vm_id);
        }
        if (c->fd >= 0)
                (void) conn_epoll_ctl(c, EPOLL_CTL_DEL, 0);
        if (c->fd >= 0)
                (void) close(c->fd);
        c->fd = -1;
        sessions_peer_unref(m->sessions, c->peer);
        c->peer = NULL;

        if (c->prev)
                c->prev->next = c->next;
        else
                m->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        m->n_conns--;

        pool_put(&pool_in, c->in, c->in_cap);
        c->in = NULL;
        c->in_head = c->in_len = c->in_cap = 0;
        pool_put(&pool_out, c->out, c->out_cap);
        c->out = NULL;
        c->out_head = c->out_len = c->out_cap = 0;

        conn_unref(c);
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
        uint8_t *p = c->out ? realloc(c->out, cap) : pool_get(&pool_out, cap);
        if (!p)
                return -ENOMEM;
        c->out = p;
        c->out_cap = cap;
        return 0;
}

int conn_write_raw(Conn *c, const void *data, size_t len) {
        if (c->dead)
                return 0;
        if (out_reserve(c, len) < 0)
                return -ENOMEM;
        memcpy(c->out + c->out_len, data, len);
        c->out_len += len;
        return 0;
}

static int out_packer_write(void *data, const char *buf, size_t len) {
        return conn_write_raw(data, buf, len) < 0 ? -1 : 0;
}

int conn_reply_result(Conn *c, uint32_t msgid, const char *data, size_t len) {
        msgpack_packer pk;

        if (c->dead)
                return 0;
        msgpack_packer_init(&pk, c, out_packer_write);
        if (msgpack_pack_array(&pk, 4) || msgpack_pack_uint8(&pk, VMM_MSG_RESPONSE) ||
            msgpack_pack_uint32(&pk, msgid) || msgpack_pack_nil(&pk))
                return -ENOMEM;
        if (len == 0)
                return msgpack_pack_map(&pk, 0) ? -ENOMEM : 0;
        return conn_write_raw(c, data, len);
}

int conn_reply_error(Conn *c, uint32_t msgid, VmmError code, const char *fmt, ...) {
        msgpack_packer pk;
        char msg[512];
        va_list ap;

        if (c->dead)
                return 0;
        va_start(ap, fmt);
        (void) vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        msgpack_packer_init(&pk, c, out_packer_write);
        if (msgpack_pack_array(&pk, 4) || msgpack_pack_uint8(&pk, VMM_MSG_RESPONSE) ||
            msgpack_pack_uint32(&pk, msgid) || msgpack_pack_map(&pk, 2) ||
            mp_kv_str(&pk, "code", vmm_error_to_string(code)) || mp_kv_str(&pk, "message", msg) ||
            msgpack_pack_nil(&pk))
                return -ENOMEM;
        return 0;
}

static size_t out_pending(Conn *c) {
        return c->out_len - c->out_head;
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
                c->last_activity_ms = mono_ms();
        }
        c->out_ready = true;
        /* everything sent: give the memory back */
        pool_put(&pool_out, c->out, c->out_cap);
        c->out = NULL;
        c->out_head = c->out_len = c->out_cap = 0;
        return 0;
}

void conn_close_after_flush(Conn *c, const char *reason) {
        if (c->dead || c->closing)
                return;
        c->closing = true;
        c->close_reason = reason;
        c->closing_since_ms = mono_ms();
        /* nothing more is read as requests */
        if (!c->busy) {
                pool_put(&pool_in, c->in, c->in_cap);
                c->in = NULL;
                c->in_cap = 0;
        }
        c->in_head = c->in_len = 0;
        conn_update_events(c);
}

static void conn_framing_error(Conn *c, VmmError code, const char *msg) {
        (void) conn_reply_error(c, 0, code, "%s", msg);
        log_debug("Connection %" PRIu64 " from %s: framing error: %s", c->id, c->peer_str, msg);
        conn_close_after_flush(c, "error");
}

static void conn_in_compact(Conn *c) {
        if (c->in_head == c->in_len) {
                c->in_head = c->in_len = 0;
                if (!c->busy) {
                        pool_put(&pool_in, c->in, c->in_cap);
                        c->in = NULL;
                        c->in_cap = 0;
                }
        } else if (c->in_head > 0 && c->in_head >= c->in_cap / 2) {
                memmove(c->in, c->in + c->in_head, c->in_len - c->in_head);
                c->in_len -= c->in_head;
                c->in_head = 0;
        }
}

static void conn_process(Conn *c) {
        Manager *m = c->manager;

        conn_ref(c);
        while (!c->dead && !c->closing && !c->busy && !c->paused) {
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
                                 "message over %zu bytes or nested deeper than %d",
                                 conn_max_message(c), VMM_MAX_DEPTH);
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
                bool after_cutoff = m->shutting_down &&
                        (!c->shutdown_cutoff_set || c->consumed > c->shutdown_cutoff);
                rpc_dispatch(c, msg, len, after_cutoff);
                if (c->n_fds > 0 && !c->dead)
                        fds_drop_before(c, c->msg_end);
                if (out_pending(c) >= OUT_HIGH)
                        c->paused = true;
        }
        if (!c->dead) {
                if (!c->closing)
                        conn_in_compact(c);
                if (!c->closing && !c->busy && !c->paused && c->read_eof) {
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
        conn_unref(c);
}

/* Register ev (edge-triggered). sd-event re-arms an edge-triggered source
 * on every call, so call it only when the set changes or an edge may have
 * been consumed without reaching EAGAIN. */
static void conn_set_events(Conn *c, uint32_t ev) {
        ev |= EPOLLET;
        if (ev & EPOLLIN)
                ev |= EPOLLRDHUP;
        bool rearm = ((ev & EPOLLIN) && c->in_undrained) || ((ev & EPOLLOUT) && c->out_ready);
        if (ev == c->io_events && !rearm)
                return;
        if (conn_epoll_ctl(c, EPOLL_CTL_MOD, ev) >= 0)
                c->io_events = ev;
}

static void conn_update_events(Conn *c) {
        uint32_t ev = 0;

        if (c->dead)
                return;
        if (c->paused && out_pending(c) < OUT_LOW) {
                c->paused = false;
                if (!c->busy && !c->closing) {
                        /* go on with what is buffered */
                        conn_process(c);
                        return;
                }
        }
        if (c->closing) {
                if (out_pending(c) > 0)
                        ev |= EPOLLOUT;
                else if (c->read_eof) {
                        conn_close(c, c->close_reason ? c->close_reason : "eof");
                        return;
                } else {
                        /* all sent: half-close and wait for the peer's EOF
                         * (closing with unread input would reset the
                         * connection and could lose the last answers) */
                        (void) shutdown(c->fd, SHUT_WR);
                        ev |= EPOLLIN;
                }
        } else {
                size_t bound = conn_max_message(c) + READ_CHUNK;
                if (!c->paused && !c->read_eof && c->in_len - c->in_head < bound)
                        ev |= EPOLLIN;
                if (out_pending(c) > 0)
                        ev |= EPOLLOUT;
        }
        conn_set_events(c, ev);
}

/* recv() that also takes descriptors sent with SCM_RIGHTS (admin socket). */
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

/* Close the descriptors that came with messages already dispatched. */
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

size_t conn_unsent(Conn *c) {
        return c->out_len - c->out_head;
}

void conn_send_soon(Conn *c) {
        if (c->dead)
                return;
        if (conn_flush(c) < 0) {
                manager_close_later(c->manager, c, "error");
                return;
        }
        uint32_t ev = 0;
        if (!c->closing) {
                size_t bound = conn_max_message(c) + READ_CHUNK;
                if (!c->paused && !c->read_eof && c->in_len - c->in_head < bound)
                        ev |= EPOLLIN;
        } else if (out_pending(c) == 0)
                ev |= EPOLLIN;
        if (out_pending(c) > 0)
                ev |= EPOLLOUT;
        conn_set_events(c, ev);
}

/* Edge-triggered: read until EAGAIN, end of file, or the input bound. */
static int conn_read(Conn *c) {
        c->in_undrained = true;
        if (c->closing) {
                /* discard what the peer still sends until its EOF; a
                 * bounded amount per wake-up (re-armed if more is left) */
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

        size_t bound = conn_max_message(c) + READ_CHUNK;
        while (c->in_len - c->in_head < bound) {
                if (c->in_cap - c->in_len < READ_CHUNK) {
                        if (c->in_head > 0 && !c->busy) {
                                memmove(c->in, c->in + c->in_head, c->in_len - c->in_head);
                                c->in_len -= c->in_head;
                                c->in_head = 0;
                        }
                        if (c->in_cap - c->in_len < READ_CHUNK) {
                                size_t cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
                                while (cap - c->in_len < READ_CHUNK)
                                        cap *= 2;
                                uint8_t *p = c->in ? realloc(c->in, cap)
                                                   : pool_get(&pool_in, cap);
                                if (!p)
                                        return -ENOMEM;
                                c->in = p;
                                c->in_cap = cap;
                        }
                }
                size_t room = c->in_cap - c->in_len;
                ssize_t n;
                if (c->kind == CONN_ADMIN)
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
                if (c->kind == CONN_TCP && (size_t) n < room && !c->rdhup) {
                        /* TCP hands over all it has: a short read emptied
                         * the queue, and what arrives later raises a new
                         * edge. (Not so on the admin socket: a read stops
                         * early at bytes that carry descriptors; nor when
                         * the peer's FIN came with the data: its edge is
                         * spent, read on to the end of file.) Saves the
                         * EAGAIN call per request. */
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

void conn_request_done(Conn *c) {
        c->busy = NULL;
        if (c->dead)
                return;
        c->last_activity_ms = mono_ms();
        if (out_pending(c) >= OUT_HIGH)
                c->paused = true;
        conn_process(c);
}

void conn_kick(Conn *c) {
        if (!c->dead)
                conn_process(c);
}

void conn_sweep(Conn *c, uint64_t now) {
        Manager *m = c->manager;
        uint64_t idle = m->config.idle_timeout_s * 1000;

        if (c->dead)
                return;
        if (c->closing) {
                if (now - c->closing_since_ms > CLOSING_GRACE_MS)
                        conn_close(c, c->close_reason ? c->close_reason : "error");
                return;
        }
        if (c->partial_since_ms && now - c->partial_since_ms >= idle) {
                log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                    .peer = c->peer_str, .has_conn = true,
                                                    .conn = c->id, .admin_uid = -1 },
                           "Connection %" PRIu64 " from %s: message not completed in %" PRIu64
                           " s, closing", c->id, c->peer_str, m->config.idle_timeout_s);
                conn_close(c, "timeout");
                return;
        }
        if (!c->attached && !c->busy && c->kind == CONN_TCP && c->in_len == c->in_head &&
            out_pending(c) == 0 && now - c->last_activity_ms >= idle) {
                log_struct(LOG_INFO, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                    .peer = c->peer_str, .has_conn = true,
                                                    .conn = c->id, .admin_uid = -1 },
                           "Connection %" PRIu64 " from %s: idle without a session for %" PRIu64
                           " s, closing", c->id, c->peer_str, m->config.idle_timeout_s);
                conn_close(c, "timeout");
                return;
        }
        if (m->shutting_down && !c->busy) {
                /* no whole message left that arrived before the stop */
                if (c->in_len == c->in_head || c->consumed >= c->shutdown_cutoff)
                        conn_close_after_flush(c, "shutdown");
        }
}
