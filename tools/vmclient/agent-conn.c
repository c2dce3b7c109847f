/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "agent-conn.h"
#include "agent-log.h"
#include "shared/macro.h"

#define WAITING_MAX 32

/* ---- name resolution on a thread ---- */

/* Shared by the connection and its resolver thread; the last to let go frees
 * it, so a connection can be dropped while a lookup is still running. */
typedef struct Resolve {
        atomic_int refs;
        char *host, *port;
        int pipe_w;                     /* the thread writes one byte when done */
        int gai;
        struct addrinfo *res;
} Resolve;

static void resolve_unref(Resolve *r) {
        if (!r || atomic_fetch_sub(&r->refs, 1) != 1)
                return;
        if (r->pipe_w >= 0)
                (void) close(r->pipe_w);
        if (r->res)
                freeaddrinfo(r->res);
        free(r->host);
        free(r->port);
        free(r);
}

static void *resolve_thread(void *p) {
        Resolve *r = p;
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_ADDRCONFIG };
        r->gai = getaddrinfo(r->host, r->port, &hints, &r->res);
        /* SIGPIPE is ignored in the agent: a connection that went away just
         * makes this write fail */
        char b = 1;
        if (write(r->pipe_w, &b, 1) < 0) {
                /* the agent is gone or stopping: nobody waits for the answer */
        }
        resolve_unref(r);
        return NULL;
}

/* ---- the connection ---- */

typedef struct Waiting {
        uint32_t msgid;
        ConnReplyFunc f;
        void *userdata;
        uint64_t sent_usec;
} Waiting;

struct AgentConn {
        sd_event *event;
        char *address, *host, *port;
        uint64_t timeout_usec;
        AgentConnCallbacks cb;
        void *userdata;

        Resolve *resolve;
        int resolve_fd;
        sd_event_source *resolve_src;
        struct addrinfo *ai_list, *ai_next;
        int connect_fd;
        int last_error;

        VmmClient *client;
        sd_event_source *io_src, *timer_src;
        bool established, dead;
        unsigned dispatching;
        bool free_requested;

        Waiting waiting[WAITING_MAX];
        size_t n_waiting;
        uint32_t open_msgid;
};

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int agent_address_split(const char *address, char **ret_host, char **ret_port) {
        _cleanup_free_ char *copy = strdup(address);
        if (!copy)
                return -ENOMEM;
        char *host = copy, *port = NULL;
        if (copy[0] == '[') {
                char *end = strchr(copy, ']');
                if (!end || end == copy + 1)
                        return -EINVAL;
                *end = '\0';
                host = copy + 1;
                if (end[1] == ':')
                        port = end + 2;
                else if (end[1] != '\0')
                        return -EINVAL;
        } else {
                char *colon = strchr(copy, ':');
                if (colon && !strchr(colon + 1, ':')) {
                        *colon = '\0';
                        port = colon + 1;
                }
        }
        if (!*host || (port && !*port))
                return -EINVAL;
        char *h = strdup(host), *p = port ? strdup(port) : NULL;
        if (!port && asprintf(&p, "%d", VMM_DEFAULT_PORT) < 0)
                p = NULL;
        if (!h || !p) {
                free(h);
                free(p);
                return -ENOMEM;
        }
        *ret_host = h;
        *ret_port = p;
        return 0;
}

static void conn_close_transport(AgentConn *c) {
        c->io_src = sd_event_source_disable_unref(c->io_src);
        c->timer_src = sd_event_source_disable_unref(c->timer_src);
        c->resolve_src = sd_event_source_disable_unref(c->resolve_src);
        if (c->resolve_fd >= 0)
                (void) close(c->resolve_fd);
        c->resolve_fd = -1;
        resolve_unref(c->resolve);
        c->resolve = NULL;
        c->ai_list = c->ai_next = NULL;
        if (c->connect_fd >= 0)
                (void) close(c->connect_fd);
        c->connect_fd = -1;
        c->client = vmm_client_free(c->client);
}

static void conn_fail(AgentConn *c, int error) {
        if (c->dead)
                return;
        c->dead = true;
        conn_close_transport(c);
        c->n_waiting = 0;
        if (c->cb.failed)
                c->cb.failed(c, error < 0 ? error : -EIO, c->established, c->userdata);
}

static void conn_destroy(AgentConn *c) {
        conn_close_transport(c);
        free(c->address);
        free(c->host);
        free(c->port);
        sd_event_unref(c->event);
        free(c);
}

AgentConn *agent_conn_free(AgentConn *c) {
        if (!c)
                return NULL;
        c->dead = true;
        if (c->dispatching > 0) {
                c->free_requested = true;
                conn_close_transport(c);
                return NULL;
        }
        conn_destroy(c);
        return NULL;
}

/* Enter/leave a callback section: the connection may be freed inside. */
static void conn_enter(AgentConn *c) {
        c->dispatching++;
}

/* Returns false when the connection is gone (and freed). */
static bool conn_leave(AgentConn *c) {
        c->dispatching--;
        if (c->dispatching == 0 && c->free_requested) {
                conn_destroy(c);
                return false;
        }
        return !c->dead;
}

/* The timer: a connect attempt or the oldest request took too long. */
static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        AgentConn *c = userdata;
        conn_enter(c);
        conn_fail(c, -ETIMEDOUT);
        (void) conn_leave(c);
        return 0;
}

static int arm_timer(AgentConn *c, uint64_t deadline) {
        if (!c->timer_src)
                return sd_event_add_time(c->event, &c->timer_src, CLOCK_MONOTONIC, deadline, 0,
                                         on_timer, c);
        int r = sd_event_source_set_time(c->timer_src, deadline);
        if (r >= 0)
                r = sd_event_source_set_enabled(c->timer_src, SD_EVENT_ONESHOT);
        return r;
}

static void rearm_request_timer(AgentConn *c) {
        if (c->n_waiting == 0) {
                if (c->timer_src)
                        (void) sd_event_source_set_enabled(c->timer_src, SD_EVENT_OFF);
                return;
        }
        if (arm_timer(c, c->waiting[0].sent_usec + c->timeout_usec) < 0)
                alog_warning("cannot arm the request timer: out of memory");
}

static int update_io_events(AgentConn *c) {
        uint32_t ev = vmm_client_pending(c->client) > 0 ? EPOLLOUT : EPOLLIN;
        return sd_event_source_set_io_events(c->io_src, ev);
}

static void dispatch(AgentConn *c, VmmMessage *m) {
        if (m->type == VMM_MESSAGE_NOTIFICATION) {
                if (c->cb.notification)
                        c->cb.notification(c, m, c->userdata);
                return;
        }
        if (m->msgid == 0) {
                /* the daemon refused the stream (framing error, a limit) */
                alog(LOG_WARNING, &((AlogFields) { .server = c->address, .code = m->error_code }),
                     "vmmd %s closed the connection: %s: %s", c->address,
                     m->error_code ? m->error_code : "?", m->error_message ? m->error_message : "");
                conn_fail(c, -ECONNRESET);
                return;
        }
        if (c->n_waiting == 0 || c->waiting[0].msgid != m->msgid) {
                alog(LOG_WARNING, &((AlogFields) { .server = c->address }),
                     "vmmd %s answered a request it was not asked (msgid %u)", c->address,
                     m->msgid);
                conn_fail(c, -EPROTO);
                return;
        }
        Waiting w = c->waiting[0];
        memmove(c->waiting, c->waiting + 1, (c->n_waiting - 1) * sizeof(Waiting));
        c->n_waiting--;
        rearm_request_timer(c);
        if (!c->dead && w.f)
                w.f(c, m, w.userdata);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AgentConn *c = userdata;
        int r;

        conn_enter(c);
        if (revents & EPOLLOUT) {
                r = vmm_client_flush(c->client);
                if (r < 0 && r != -ETIMEDOUT) {
                        conn_fail(c, r);
                        goto out;
                }
        }
        /* read only with nothing left to send: vmm_client_read() flushes first */
        while (!c->dead && vmm_client_pending(c->client) == 0 &&
               (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
                VmmMessage m;
                r = vmm_client_read(c->client, &m);
                if (r == -ETIMEDOUT)
                        break;                  /* nothing more for now */
                if (r < 0) {
                        conn_fail(c, r);
                        break;
                }
                dispatch(c, &m);
                vmm_message_release(&m);
        }
        if (!c->dead && update_io_events(c) < 0)
                conn_fail(c, -ENOMEM);
out:
        (void) conn_leave(c);
        return 0;
}

static void try_connect(AgentConn *c);

static void connected(AgentConn *c) {
        int fd = TAKE_FD(c->connect_fd);
        int r = vmm_client_new(&c->client);
        if (r < 0) {
                (void) close(fd);
                conn_fail(c, r);
                return;
        }
        vmm_client_set_timeout(c->client, 0);   /* never wait: the loop does */
        r = vmm_client_adopt_fd(c->client, fd);
        if (r < 0) {
                conn_fail(c, r);
                return;
        }
        if (c->timer_src)
                (void) sd_event_source_set_enabled(c->timer_src, SD_EVENT_OFF);
        c->established = true;
        if (c->cb.connected)
                c->cb.connected(c, c->userdata);
}

static int on_connect(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AgentConn *c = userdata;
        int err = 0;
        socklen_t len = sizeof err;

        conn_enter(c);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                err = errno;
        c->io_src = sd_event_source_disable_unref(c->io_src);
        if (err == 0) {
                int r = sd_event_add_io(c->event, &c->io_src, fd, EPOLLIN, on_io, c);
                if (r < 0)
                        conn_fail(c, r);
                else
                        connected(c);
        } else {
                c->last_error = -err;
                (void) close(c->connect_fd);
                c->connect_fd = -1;
                try_connect(c);
        }
        (void) conn_leave(c);
        return 0;
}

/* Tries the next address of the lookup; fails the connection after the last. */
static void try_connect(AgentConn *c) {
        while (!c->dead && c->ai_next) {
                struct addrinfo *ai = c->ai_next;
                c->ai_next = ai->ai_next;
                int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0) {
                        c->last_error = negative_errno();
                        continue;
                }
                if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
                        c->last_error = negative_errno();
                        (void) close(fd);
                        continue;
                }
                c->connect_fd = fd;
                int r = sd_event_add_io(c->event, &c->io_src, fd, EPOLLOUT, on_connect, c);
                if (r >= 0)
                        r = arm_timer(c, now_usec() + c->timeout_usec);
                if (r < 0)
                        conn_fail(c, r);
                return;
        }
        if (!c->dead)
                conn_fail(c, c->last_error < 0 ? c->last_error : -EHOSTUNREACH);
}

static int gai_errno(int gai) {
        switch (gai) {
        case 0:
                return 0;
        case EAI_MEMORY:
                return -ENOMEM;
        case EAI_SERVICE:
                return -EINVAL;
        case EAI_AGAIN:
                return -EAGAIN;
        default:
                return -EHOSTUNREACH;
        }
}

static int on_resolved(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        AgentConn *c = userdata;
        conn_enter(c);
        c->resolve_src = sd_event_source_disable_unref(c->resolve_src);
        (void) close(c->resolve_fd);
        c->resolve_fd = -1;
        if (c->resolve->gai != 0) {
                alog(LOG_NOTICE, &((AlogFields) { .server = c->address }),
                     "cannot resolve %s: %s", c->host, gai_strerror(c->resolve->gai));
                conn_fail(c, gai_errno(c->resolve->gai));
        } else {
                c->ai_list = c->ai_next = c->resolve->res;
                try_connect(c);
        }
        (void) conn_leave(c);
        return 0;
}

static int start_resolve(AgentConn *c) {
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();
        Resolve *r = calloc(1, sizeof(*r));
        if (!r) {
                (void) close(p[0]);
                (void) close(p[1]);
                return -ENOMEM;
        }
        atomic_init(&r->refs, 2);
        r->pipe_w = p[1];
        r->host = strdup(c->host);
        r->port = strdup(c->port);
        c->resolve = r;
        c->resolve_fd = p[0];
        if (!r->host || !r->port) {
                atomic_store(&r->refs, 1);
                return -ENOMEM;
        }
        int q = sd_event_add_io(c->event, &c->resolve_src, p[0], EPOLLIN, on_resolved, c);
        if (q < 0) {
                atomic_store(&r->refs, 1);
                return q;
        }
        pthread_attr_t attr;
        pthread_t t;
        if (pthread_attr_init(&attr) != 0) {
                atomic_store(&r->refs, 1);
                return -ENOMEM;
        }
        (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        q = pthread_create(&t, &attr, resolve_thread, r);
        (void) pthread_attr_destroy(&attr);
        if (q != 0) {
                atomic_store(&r->refs, 1);
                return -q;
        }
        /* the lookup has the same deadline as a connect attempt */
        return arm_timer(c, now_usec() + c->timeout_usec);
}

/* A defer source starts the connection, so that `failed` never runs inside
 * agent_conn_new(). */
static int on_start(sd_event_source *s, void *userdata) {
        AgentConn *c = userdata;
        conn_enter(c);
        c->io_src = sd_event_source_disable_unref(c->io_src);
        /* numeric addresses need no thread */
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                                  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
        struct addrinfo *res = NULL;
        int gai = getaddrinfo(c->host, c->port, &hints, &res);
        if (gai == 0) {
                Resolve *r = calloc(1, sizeof(*r));
                if (!r) {
                        freeaddrinfo(res);
                        conn_fail(c, -ENOMEM);
                } else {
                        atomic_init(&r->refs, 1);
                        r->pipe_w = -1;
                        r->res = res;
                        c->resolve = r;
                        c->ai_list = c->ai_next = res;
                        try_connect(c);
                }
        } else {
                int q = start_resolve(c);
                if (q < 0)
                        conn_fail(c, q);
        }
        (void) conn_leave(c);
        return 0;
}

int agent_conn_new(sd_event *e, const char *address, uint64_t request_timeout_usec,
                   const AgentConnCallbacks *cb, void *userdata, AgentConn **ret) {
        AgentConn *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->event = sd_event_ref(e);
        c->resolve_fd = c->connect_fd = -1;
        c->timeout_usec = request_timeout_usec;
        c->cb = *cb;
        c->userdata = userdata;
        c->address = strdup(address);
        int r = c->address ? agent_address_split(address, &c->host, &c->port) : -ENOMEM;
        if (r >= 0) {
                /* io_src holds the start-up defer source until it runs */
                r = sd_event_add_defer(e, &c->io_src, on_start, c);
        }
        if (r < 0) {
                conn_destroy(c);
                return r;
        }
        *ret = c;
        return 0;
}

int agent_conn_begin(AgentConn *c, const char *method, uint32_t n_params, msgpack_packer **ret_pk) {
        if (c->dead || !c->client)
                return -ENOTCONN;
        if (c->n_waiting >= WAITING_MAX)
                return -EBUSY;
        if (n_params == 0)
                return vmm_client_begin(c->client, method, 0, ret_pk, &c->open_msgid);
        return vmm_client_begin_map(c->client, method, n_params, ret_pk, &c->open_msgid);
}

void agent_conn_cancel(AgentConn *c) {
        if (c->client)
                vmm_client_cancel(c->client);
}

int agent_conn_end(AgentConn *c, ConnReplyFunc f, void *userdata) {
        if (c->dead || !c->client)
                return -ENOTCONN;
        int r = vmm_client_end(c->client);
        if (r < 0)
                return r;
        c->waiting[c->n_waiting++] = (Waiting) {
                .msgid = c->open_msgid, .f = f, .userdata = userdata, .sent_usec = now_usec(),
        };
        if (c->n_waiting == 1)
                rearm_request_timer(c);
        /* a send error shows up in the loop (the socket reports it), where
         * the connection is failed outside the caller's code */
        (void) vmm_client_flush(c->client);
        (void) update_io_events(c);
        return 0;
}

const char *agent_conn_address(const AgentConn *c) {
        return c->address;
}

size_t agent_conn_waiting(const AgentConn *c) {
        return c->n_waiting;
}
