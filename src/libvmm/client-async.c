/* SPDX-License-Identifier: MIT */
/* libvmm: non-blocking connections for a caller's event loop (see the
 * "Non-blocking connections" section of include/vmm/client.h).
 *
 * Nothing here waits: connect() is started and finished later, flush sends
 * what the socket takes, read returns one whole message or -EAGAIN. Incoming
 * bytes pass the bounded pre-scanner (src/shared/mpscan.c) before msgpack-c
 * sees them, as in the blocking client. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/address.h"
#include "shared/macro.h"
#include "shared/mpscan.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

#define ASYNC_READ_CHUNK        (64u * 1024u)
#define ASYNC_MAX_MESSAGE       (4u * 1024u * 1024u)

struct VmmAsync {
        int fd;
        bool connecting;            /* connect() started, not known to be done */
        int error;                  /* sticky error, 0 if none */
        uint32_t next_msgid;
        size_t max_request;
        size_t max_message;

        msgpack_sbuffer out;
        msgpack_packer pk;
        size_t out_sent;
        bool open;
        size_t open_start;

        uint8_t *in;
        size_t in_start, in_end, in_alloc;
        bool drained;               /* the last recv() was short: the socket was empty */
        MpScan scan;
};

int vmm_async_new(VmmAsync **ret) {
        if (!ret)
                return -EINVAL;
        VmmAsync *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->fd = -1;
        a->next_msgid = 1;
        a->max_request = VMM_MAX_MSG_TCP;
        a->max_message = ASYNC_MAX_MESSAGE;
        msgpack_sbuffer_init(&a->out);
        msgpack_packer_init(&a->pk, &a->out, msgpack_sbuffer_write);
        mpscan_init(&a->scan, a->max_message, MPSCAN_DEPTH_CAP);
        *ret = a;
        return 0;
}

VmmAsync *vmm_async_free(VmmAsync *a) {
        if (!a)
                return NULL;
        if (a->fd >= 0)
                (void) close(a->fd);
        msgpack_sbuffer_destroy(&a->out);
        free(a->in);
        free(a);
        return NULL;
}

int vmm_async_fd(const VmmAsync *a) {
        return a ? a->fd : -EINVAL;
}

void vmm_async_set_max_request(VmmAsync *a, size_t bytes) {
        if (a)
                a->max_request = bytes;
}

void vmm_async_set_max_message(VmmAsync *a, size_t bytes) {
        if (!a)
                return;
        a->max_message = bytes > 0 ? bytes : ASYNC_MAX_MESSAGE;
        mpscan_init(&a->scan, a->max_message, MPSCAN_DEPTH_CAP);
}

static int start_connect(VmmAsync *a, int family, const struct sockaddr *sa, socklen_t len) {
        _cleanup_close_ int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        if (family != AF_UNIX) {
                int one = 1;
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        bool pending = false;
        if (connect(fd, sa, len) < 0) {
                if (errno != EINPROGRESS && errno != EAGAIN)
                        return negative_errno();
                pending = true;
        }
        a->fd = TAKE_FD(fd);
        a->connecting = pending;
        if (family == AF_UNIX && a->max_request == VMM_MAX_MSG_TCP)
                a->max_request = VMM_MAX_MSG_ADMIN;
        return 0;
}

int vmm_async_connect(VmmAsync *a, const char *address) {
        char port_default[16];
        if (!a || !address || !*address)
                return -EINVAL;
        if (a->fd >= 0)
                return -EISCONN;
        if (strchr(address, '/')) {
                struct sockaddr_un sun = { .sun_family = AF_UNIX };
                size_t n = strlen(address);
                if (n >= sizeof(sun.sun_path))
                        return -ENAMETOOLONG;
                memcpy(sun.sun_path, address, n);
                return start_connect(a, AF_UNIX, (const struct sockaddr *) &sun,
                                     (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1));
        }
        (void) snprintf(port_default, sizeof(port_default), "%d", VMM_DEFAULT_PORT);
        char host[NI_MAXHOST], port[NI_MAXSERV];
        int r = address_split(address, port_default, host, sizeof(host), port, sizeof(port));
        if (r < 0)
                return -EINVAL;
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        int g = getaddrinfo(host, port, &hints, &res);
        if (g != 0)
                return g == EAI_MEMORY ? -ENOMEM : g == EAI_SERVICE ? -EINVAL : -EHOSTUNREACH;
        r = -EHOSTUNREACH;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                r = start_connect(a, ai->ai_family, ai->ai_addr, ai->ai_addrlen);
                if (r >= 0)
                        break;
        }
        freeaddrinfo(res);
        return r;
}

/* Finishes a connect() in progress: 0 done, -EAGAIN not yet, or its error. */
static int finish_connect(VmmAsync *a) {
        if (!a->connecting)
                return 0;
        struct pollfd p = { .fd = a->fd, .events = POLLOUT };
        int n = poll(&p, 1, 0);
        if (n < 0)
                return errno == EINTR ? -EAGAIN : negative_errno();
        if (n == 0)
                return -EAGAIN;
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                return negative_errno();
        if (err != 0)
                return -err;
        a->connecting = false;
        return 0;
}

int vmm_async_begin(VmmAsync *a, const char *method, uint32_t n_params,
                    msgpack_packer **ret_pk, uint32_t *ret_msgid) {
        if (!a || !method)
                return -EINVAL;
        if (a->open)
                return -EBUSY;
        if (a->error < 0)
                return a->error;
        uint32_t id = a->next_msgid;
        size_t start = a->out.size;
        size_t mlen = strlen(method);
        if (msgpack_pack_array(&a->pk, 4) || msgpack_pack_uint8(&a->pk, VMM_MSG_REQUEST) ||
            msgpack_pack_uint32(&a->pk, id) || msgpack_pack_str(&a->pk, mlen) ||
            msgpack_pack_str_body(&a->pk, method, mlen) ||
            msgpack_pack_array(&a->pk, n_params)) {
                a->out.size = start;
                return -ENOMEM;
        }
        a->next_msgid = id == UINT32_MAX ? 1 : id + 1;
        a->open = true;
        a->open_start = start;
        if (ret_pk)
                *ret_pk = &a->pk;
        if (ret_msgid)
                *ret_msgid = id;
        return 0;
}

int vmm_async_begin_map(VmmAsync *a, const char *method, uint32_t map_size,
                        msgpack_packer **ret_pk, uint32_t *ret_msgid) {
        int r = vmm_async_begin(a, method, 1, ret_pk, ret_msgid);
        if (r < 0)
                return r;
        if (msgpack_pack_map(&a->pk, map_size)) {
                vmm_async_cancel(a);
                return -ENOMEM;
        }
        return 0;
}

void vmm_async_cancel(VmmAsync *a) {
        if (!a || !a->open)
                return;
        a->out.size = a->open_start;
        a->open = false;
}

int vmm_async_end(VmmAsync *a) {
        if (!a || !a->open)
                return -EINVAL;
        if (a->out.size - a->open_start > a->max_request) {
                vmm_async_cancel(a);
                return -EMSGSIZE;
        }
        a->open = false;
        return 0;
}

size_t vmm_async_pending(const VmmAsync *a) {
        if (!a)
                return 0;
        size_t end = a->open ? a->open_start : a->out.size;
        return end - a->out_sent;
}

bool vmm_async_want_write(const VmmAsync *a) {
        return a && a->fd >= 0 && (a->connecting || vmm_async_pending(a) > 0);
}

int vmm_async_flush(VmmAsync *a) {
        if (!a)
                return -EINVAL;
        if (a->fd < 0)
                return -ENOTCONN;
        if (a->error < 0)
                return a->error;
        int r = finish_connect(a);
        if (r == -EAGAIN)
                return r;
        if (r < 0)
                return (a->error = r);
        size_t end = a->open ? a->open_start : a->out.size;
        while (a->out_sent < end) {
                ssize_t k = send(a->fd, a->out.data + a->out_sent, end - a->out_sent,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k > 0) {
                        a->out_sent += (size_t) k;
                        continue;
                }
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        return -EAGAIN;
                r = k < 0 && errno != EPIPE ? negative_errno() : -ECONNRESET;
                return (a->error = r);
        }
        /* everything up to the open request went out: drop it */
        memmove(a->out.data, a->out.data + end, a->out.size - end);
        a->out.size -= end;
        if (a->open)
                a->open_start -= end;
        a->out_sent = 0;
        return 0;
}

static char *zone_strndup(msgpack_zone *z, const char *p, size_t n) {
        char *s = msgpack_zone_malloc(z, n + 1);
        if (!s)
                return NULL;
        memcpy(s, p, n);
        s[n] = '\0';
        return s;
}

/* Decodes the len bytes at the front of the input into *ret. */
static int decode_message(VmmAsync *a, size_t len, VmmMessage *ret) {
        msgpack_zone *z = msgpack_zone_new(MIN(len * 2 + 256, (size_t) 64 * 1024));
        if (!z)
                return -ENOMEM;
        char *bytes = msgpack_zone_malloc(z, len);
        if (!bytes) {
                msgpack_zone_free(z);
                return -ENOMEM;
        }
        memcpy(bytes, a->in + a->in_start, len);
        a->in_start += len;

        msgpack_object o;
        size_t off = 0;
        msgpack_unpack_return ur = msgpack_unpack(bytes, len, &off, z, &o);
        if (ur != MSGPACK_UNPACK_SUCCESS) {
                msgpack_zone_free(z);
                return ur == MSGPACK_UNPACK_NOMEM_ERROR ? -ENOMEM : -EBADMSG;
        }
        VmmMessage m = { .zone = z, .error = VMM_OK };
        if (o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 3)
                goto proto;
        const msgpack_object *e = o.via.array.ptr;
        if (e[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                goto proto;
        if (e[0].via.u64 == VMM_MSG_RESPONSE) {
                if (o.via.array.size != 4 || e[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                    e[1].via.u64 > UINT32_MAX)
                        goto proto;
                m.type = VMM_MESSAGE_RESPONSE;
                m.msgid = (uint32_t) e[1].via.u64;
                m.result = e[3];
                if (e[2].type == MSGPACK_OBJECT_MAP) {
                        const msgpack_object *code = vmm_object_get(&e[2], "code");
                        const msgpack_object *msg = vmm_object_get(&e[2], "message");
                        bool code_ok = code && code->type == MSGPACK_OBJECT_STR;
                        bool msg_ok = msg && msg->type == MSGPACK_OBJECT_STR;
                        m.error = code_ok ? vmm_error_from_string(code->via.str.ptr,
                                                                  code->via.str.size)
                                          : _VMM_E_INVALID;
                        m.error_code = code_ok ? zone_strndup(z, code->via.str.ptr,
                                                              code->via.str.size)
                                               : zone_strndup(z, "", 0);
                        m.error_message = msg_ok ? zone_strndup(z, msg->via.str.ptr,
                                                                msg->via.str.size)
                                                 : zone_strndup(z, "", 0);
                        if (!m.error_code || !m.error_message) {
                                msgpack_zone_free(z);
                                return -ENOMEM;
                        }
                } else if (e[2].type != MSGPACK_OBJECT_NIL)
                        goto proto;
        } else if (e[0].via.u64 == VMM_MSG_NOTIFICATION) {
                if (o.via.array.size != 3 || e[1].type != MSGPACK_OBJECT_STR)
                        goto proto;
                m.type = VMM_MESSAGE_NOTIFICATION;
                m.method = zone_strndup(z, e[1].via.str.ptr, e[1].via.str.size);
                if (!m.method) {
                        msgpack_zone_free(z);
                        return -ENOMEM;
                }
                m.result = e[2];
        } else
                goto proto;
        *ret = m;
        return 0;
proto:
        msgpack_zone_free(z);
        return -EPROTO;
}

/* Reads what the socket holds now: bytes read (> 0), 0 when nothing is
 * there, or a negative errno (-ECONNRESET at EOF). */
static int receive_some(VmmAsync *a) {
        if (a->in_start == a->in_end)
                a->in_start = a->in_end = 0;
        if (a->in_alloc - a->in_end < ASYNC_READ_CHUNK) {
                if (a->in_start > 0) {
                        memmove(a->in, a->in + a->in_start, a->in_end - a->in_start);
                        a->in_end -= a->in_start;
                        a->in_start = 0;
                }
                if (a->in_alloc - a->in_end < ASYNC_READ_CHUNK) {
                        size_t n = a->in_end + ASYNC_READ_CHUNK;
                        uint8_t *p = realloc(a->in, n);
                        if (!p)
                                return -ENOMEM;
                        a->in = p;
                        a->in_alloc = n;
                }
        }
        for (;;) {
                ssize_t n = recv(a->fd, a->in + a->in_end, a->in_alloc - a->in_end,
                                 MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        return negative_errno();
                }
                if (n == 0)
                        return -ECONNRESET;
                a->drained = (size_t) n < a->in_alloc - a->in_end;
                a->in_end += (size_t) n;
                return 1;
        }
}

int vmm_async_read(VmmAsync *a, VmmMessage *ret) {
        if (!a || !ret)
                return -EINVAL;
        if (a->fd < 0)
                return -ENOTCONN;
        for (;;) {
                if (a->in_end > a->in_start) {
                        size_t len = 0;
                        switch (mpscan_feed(&a->scan, a->in + a->in_start,
                                            a->in_end - a->in_start, &len)) {
                        case MPSCAN_COMPLETE: {
                                mpscan_reset(&a->scan);
                                int r = decode_message(a, len, ret);
                                if (r < 0 && r != -ENOMEM)
                                        a->error = r;
                                return r;
                        }
                        case MPSCAN_NEED_MORE:
                                break;
                        case MPSCAN_TOO_LARGE:
                                return (a->error = -EMSGSIZE);
                        default:
                                return (a->error = -EBADMSG);
                        }
                }
                /* what was buffered before an error is still handed out */
                if (a->error < 0)
                        return a->error;
                if (a->connecting) {
                        int r = finish_connect(a);
                        if (r == -EAGAIN)
                                return r;
                        if (r < 0)
                                return (a->error = r);
                }
                /* A short read emptied the socket: what came after it makes
                 * the descriptor readable again (and is a new edge for an
                 * edge-triggered watch), so say "not now" without a recv()
                 * that would only fail with EAGAIN, one per read cycle. */
                if (a->drained) {
                        a->drained = false;
                        return -EAGAIN;
                }
                int r = receive_some(a);
                if (r == 0)
                        return -EAGAIN;
                if (r < 0 && r != -ENOMEM)
                        a->error = r;
                if (r < 0)
                        return r;
        }
}
