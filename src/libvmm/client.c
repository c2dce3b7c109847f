/* SPDX-License-Identifier: MIT */
/* libvmm: blocking MessagePack-RPC client for vmmd (see include/vmm/client.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#include "shared/address.h"
#include "shared/macro.h"
#include "shared/mpscan.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

#define READ_CHUNK           (64u * 1024u)
#define MAX_MESSAGE_DEFAULT  (4u * 1024u * 1024u)
/* While flushing, incoming bytes are buffered up to this much (then we only
 * wait for the socket to take more). */
#define FLUSH_INBUF_MAX      (16u * 1024u * 1024u)

struct VmmClient {
        int fd;
        bool is_unix;
        int timeout_ms;
        int error;                  /* sticky receive error, 0 if none */
        uint32_t next_msgid;
        size_t max_request;
        bool max_request_set;
        size_t max_message;

        msgpack_sbuffer out;
        msgpack_packer pk;
        size_t out_sent;
        bool open;                  /* a request is being written */
        size_t open_start;
        uint32_t open_msgid;
        int pass_fd;                /* descriptor to send with the byte at pass_off */
        size_t pass_off;

        uint8_t *in;
        size_t in_start, in_end, in_alloc;
        MpScan scan;                /* the message at in_start, bounded before decoding */
};

/* ---- time and waiting ---- */

static int64_t now_ms(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t deadline_from(const VmmClient *c) {
        return c->timeout_ms < 0 ? -1 : now_ms() + c->timeout_ms;
}

/* Returns revents (> 0), or -ETIMEDOUT, or another negative errno. */
static int wait_fd(int fd, short events, int64_t deadline) {
        for (;;) {
                int t = -1;
                if (deadline >= 0) {
                        int64_t left = deadline - now_ms();
                        t = left <= 0 ? 0 : (int) MIN(left, (int64_t) INT32_MAX);
                }
                struct pollfd p = { .fd = fd, .events = events };
                int r = poll(&p, 1, t);
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (r == 0)
                        return -ETIMEDOUT;
                return p.revents;
        }
}

/* ---- lifecycle ---- */

int vmm_client_new(VmmClient **ret) {
        if (!ret)
                return -EINVAL;
        VmmClient *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->fd = -1;
        c->pass_fd = -1;
        c->timeout_ms = -1;
        c->next_msgid = 1;
        c->max_request = VMM_MAX_MSG_TCP;
        c->max_message = MAX_MESSAGE_DEFAULT;
        mpscan_init(&c->scan, c->max_message, MPSCAN_DEPTH_CAP);
        msgpack_sbuffer_init(&c->out);
        msgpack_packer_init(&c->pk, &c->out, msgpack_sbuffer_write);
        *ret = c;
        return 0;
}

VmmClient *vmm_client_free(VmmClient *c) {
        if (!c)
                return NULL;
        if (c->fd >= 0)
                (void) close(c->fd);
        msgpack_sbuffer_destroy(&c->out);
        free(c->in);
        free(c);
        return NULL;
}

int vmm_client_fd(const VmmClient *c) {
        return c ? c->fd : -EINVAL;
}

void vmm_client_set_timeout(VmmClient *c, int timeout_ms) {
        c->timeout_ms = timeout_ms < 0 ? -1 : timeout_ms;
}

void vmm_client_set_max_request(VmmClient *c, size_t bytes) {
        c->max_request = bytes;
        c->max_request_set = true;
}

void vmm_client_set_max_message(VmmClient *c, size_t bytes) {
        c->max_message = bytes > 0 ? bytes : MAX_MESSAGE_DEFAULT;
        mpscan_init(&c->scan, c->max_message, MPSCAN_DEPTH_CAP);
}

static int adopt(VmmClient *c, int fd) {
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return negative_errno();
        struct sockaddr_storage sa;
        socklen_t salen = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *) &sa, &salen) < 0)
                return negative_errno();
        c->is_unix = sa.ss_family == AF_UNIX;
        if (!c->max_request_set)
                c->max_request = c->is_unix ? VMM_MAX_MSG_ADMIN : VMM_MAX_MSG_TCP;
        if (!c->is_unix) {
                int one = 1;
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        c->fd = fd;
        return 0;
}

int vmm_client_adopt_fd(VmmClient *c, int fd) {
        _cleanup_close_ int owned = fd;
        if (!c || fd < 0)
                return -EINVAL;
        if (c->fd >= 0)
                return -EISCONN;
        int r = adopt(c, owned);
        if (r < 0)
                return r;
        owned = -1;
        return 0;
}

/* Non-blocking connect bounded by the client's timeout. */
static int connect_one(VmmClient *c, int family, const struct sockaddr *sa, socklen_t salen) {
        _cleanup_close_ int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        if (connect(fd, sa, salen) < 0) {
                if (errno != EINPROGRESS && errno != EAGAIN)
                        return negative_errno();
                int r = wait_fd(fd, POLLOUT, deadline_from(c));
                if (r < 0)
                        return r;
                int err = 0;
                socklen_t len = sizeof(err);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
                        return negative_errno();
                if (err != 0)
                        return -err;
        }
        int r = adopt(c, fd);
        if (r < 0)
                return r;
        fd = -1;
        return 0;
}

int vmm_client_connect_unix(VmmClient *c, const char *path) {
        if (!c || !path || !*path)
                return -EINVAL;
        if (c->fd >= 0)
                return -EISCONN;
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        size_t n = strlen(path);
        if (n >= sizeof(sun.sun_path))
                return -ENAMETOOLONG;
        memcpy(sun.sun_path, path, n);
        return connect_one(c, AF_UNIX, (const struct sockaddr *) &sun,
                           (socklen_t) (offsetof(struct sockaddr_un, sun_path) + n + 1));
}

int vmm_client_connect_tcp(VmmClient *c, const char *host, const char *port) {
        if (!c || !host || !port || !*host || !*port)
                return -EINVAL;
        if (c->fd >= 0)
                return -EISCONN;
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        int g = getaddrinfo(host, port, &hints, &res);
        switch (g) {
        case 0:
                break;
        case EAI_MEMORY:
                return -ENOMEM;
        case EAI_SYSTEM:
                return negative_errno();
        case EAI_SERVICE:
                return -EINVAL;
        case EAI_AGAIN:
                return -EAGAIN;         /* the resolver did not answer: try again */
        default:
                return -ENXIO;          /* the name does not resolve (EAI_NONAME, ...) */
        }
        int r = -ENXIO;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                r = connect_one(c, ai->ai_family, ai->ai_addr, ai->ai_addrlen);
                if (r >= 0 || r == -ETIMEDOUT)
                        break;
        }
        freeaddrinfo(res);
        return r;
}

int vmm_client_connect(VmmClient *c, const char *address) {
        char port_default[16], host[NI_MAXHOST], port[NI_MAXSERV];
        if (!c || !address || !*address)
                return -EINVAL;
        if (strchr(address, '/'))
                return vmm_client_connect_unix(c, address);

        (void) snprintf(port_default, sizeof(port_default), "%d", VMM_DEFAULT_PORT);
        int r = address_split(address, port_default, host, sizeof(host), port, sizeof(port));
        if (r < 0)
                return -EINVAL;
        return vmm_client_connect_tcp(c, host, port);
}

/* ---- requests ---- */

static int pack_result(int r) {
        return r == 0 ? 0 : -ENOMEM;
}

int vmm_client_begin(VmmClient *c, const char *method, uint32_t n_params,
                     msgpack_packer **ret_pk, uint32_t *ret_msgid) {
        if (!c || !method)
                return -EINVAL;
        if (c->open)
                return -EBUSY;
        uint32_t id = c->next_msgid;
        size_t start = c->out.size;
        size_t mlen = strlen(method);
        if (msgpack_pack_array(&c->pk, 4) || msgpack_pack_uint8(&c->pk, VMM_MSG_REQUEST) ||
            msgpack_pack_uint32(&c->pk, id) || msgpack_pack_str(&c->pk, mlen) ||
            msgpack_pack_str_body(&c->pk, method, mlen) ||
            msgpack_pack_array(&c->pk, n_params)) {
                c->out.size = start;
                return -ENOMEM;
        }
        c->next_msgid = id == UINT32_MAX ? 1 : id + 1;
        c->open = true;
        c->open_start = start;
        c->open_msgid = id;
        if (ret_pk)
                *ret_pk = &c->pk;
        if (ret_msgid)
                *ret_msgid = id;
        return 0;
}

int vmm_client_begin_map(VmmClient *c, const char *method, uint32_t map_size,
                         msgpack_packer **ret_pk, uint32_t *ret_msgid) {
        uint32_t id;
        int r = vmm_client_begin(c, method, 1, NULL, &id);
        if (r < 0)
                return r;
        if (msgpack_pack_map(&c->pk, map_size)) {
                vmm_client_cancel(c);
                return -ENOMEM;
        }
        if (ret_pk)
                *ret_pk = &c->pk;
        if (ret_msgid)
                *ret_msgid = id;
        return 0;
}

int vmm_client_attach_fd(VmmClient *c, int fd) {
        if (!c || fd < 0)
                return -EINVAL;
        if (!c->open)
                return -EINVAL;
        if (!c->is_unix)
                return -EOPNOTSUPP;
        if (c->pass_fd >= 0)
                return -EBUSY;
        c->pass_fd = fd;
        c->pass_off = c->open_start;
        return 0;
}

void vmm_client_cancel(VmmClient *c) {
        if (!c || !c->open)
                return;
        if (c->pass_fd >= 0 && c->pass_off == c->open_start)
                c->pass_fd = -1;
        c->out.size = c->open_start;
        c->open = false;
}

int vmm_client_end(VmmClient *c) {
        if (!c || !c->open)
                return -EINVAL;
        if (c->out.size - c->open_start > c->max_request) {
                vmm_client_cancel(c);
                return -EMSGSIZE;
        }
        c->open = false;
        return 0;
}

int vmm_client_queue(VmmClient *c, const char *method, uint32_t *ret_msgid) {
        int r = vmm_client_begin(c, method, 0, NULL, ret_msgid);
        if (r < 0)
                return r;
        return vmm_client_end(c);
}

size_t vmm_client_pending(const VmmClient *c) {
        if (!c)
                return 0;
        size_t end = c->open ? c->open_start : c->out.size;
        return end - c->out_sent;
}

/* ---- I/O ---- */

/* Reads what the socket has into the input buffer. Returns bytes read, 0 if
 * nothing was there (EAGAIN), or a negative errno (-ECONNRESET on EOF). */
static int read_some(VmmClient *c) {
        if (c->in_start == c->in_end)
                c->in_start = c->in_end = 0;
        if (c->in_alloc - c->in_end < READ_CHUNK) {
                if (c->in_start > 0) {
                        memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
                        c->in_end -= c->in_start;
                        c->in_start = 0;
                }
                if (c->in_alloc - c->in_end < READ_CHUNK) {
                        size_t n = c->in_end + READ_CHUNK;
                        uint8_t *p = realloc(c->in, n);
                        if (!p)
                                return -ENOMEM;
                        c->in = p;
                        c->in_alloc = n;
                }
        }
        for (;;) {
                ssize_t n = recv(c->fd, c->in + c->in_end, c->in_alloc - c->in_end, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN || errno == EWOULDBLOCK)
                                return 0;
                        return errno == EPIPE ? -ECONNRESET : negative_errno();
                }
                if (n == 0)
                        return -ECONNRESET;
                c->in_end += (size_t) n;
                return (int) MIN(n, (ssize_t) INT32_MAX);
        }
}

static ssize_t send_chunk(VmmClient *c, const char *p, size_t n, int fd) {
        struct iovec iov = { .iov_base = (void *) p, .iov_len = n };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        union {
                struct cmsghdr align;
                char buf[CMSG_SPACE(sizeof(int))];
        } control;

        if (fd >= 0) {
                memset(&control, 0, sizeof(control));
                mh.msg_control = control.buf;
                mh.msg_controllen = sizeof(control.buf);
                struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        }
        return sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
}

int vmm_client_flush(VmmClient *c) {
        if (!c)
                return -EINVAL;
        if (c->fd < 0)
                return -ENOTCONN;
        int64_t deadline = deadline_from(c);
        size_t end = c->open ? c->open_start : c->out.size;

        while (c->out_sent < end) {
                size_t n = end - c->out_sent;
                int fd = -1;
                if (c->pass_fd >= 0) {
                        if (c->pass_off == c->out_sent)
                                fd = c->pass_fd;
                        else if (c->pass_off > c->out_sent)
                                n = MIN(n, c->pass_off - c->out_sent);
                }
                ssize_t k = send_chunk(c, c->out.data + c->out_sent, n, fd);
                if (k > 0) {
                        c->out_sent += (size_t) k;
                        if (fd >= 0)
                                c->pass_fd = -1;
                        continue;
                }
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                        return errno == EPIPE ? -ECONNRESET : negative_errno();

                /* Wait for room; keep reading replies meanwhile, so a server
                 * that stops reading us until we read it cannot deadlock us. */
                bool room = c->in_end - c->in_start < FLUSH_INBUF_MAX && c->error == 0;
                int r = wait_fd(c->fd, POLLOUT | (room ? POLLIN : 0), deadline);
                if (r < 0)
                        return r;
                if (room && (r & (POLLIN | POLLHUP))) {
                        int q = read_some(c);
                        if (q < 0)
                                c->error = q;
                }
        }
        if (!c->open) {
                c->out.size = 0;
                c->out_sent = 0;
        } else if (c->out_sent > 0 && c->pass_fd < 0) {
                /* keep the open request at the front of the buffer */
                memmove(c->out.data, c->out.data + c->out_sent, c->out.size - c->out_sent);
                c->out.size -= c->out_sent;
                c->open_start -= c->out_sent;
                c->out_sent = 0;
        }
        return 0;
}

/* ---- decoding ---- */

static char *zone_strdup(msgpack_zone *z, const char *p, size_t n) {
        char *s = msgpack_zone_malloc(z, n + 1);
        if (!s)
                return NULL;
        memcpy(s, p, n);
        s[n] = '\0';
        return s;
}

static int decode(VmmClient *c, size_t len, VmmMessage *ret) {
        msgpack_zone *z = msgpack_zone_new(MIN(len * 2 + 256, (size_t) 64 * 1024));
        if (!z)
                return -ENOMEM;
        char *bytes = msgpack_zone_malloc(z, len);
        if (!bytes) {
                msgpack_zone_free(z);
                return -ENOMEM;
        }
        memcpy(bytes, c->in + c->in_start, len);
        c->in_start += len;

        msgpack_object o;
        size_t off = 0;
        msgpack_unpack_return ur = msgpack_unpack(bytes, len, &off, z, &o);
        if (ur == MSGPACK_UNPACK_NOMEM_ERROR) {
                msgpack_zone_free(z);
                return -ENOMEM;
        }
        if (ur != MSGPACK_UNPACK_SUCCESS) {
                msgpack_zone_free(z);
                return -EBADMSG;
        }

        VmmMessage m = { .zone = z, .error = VMM_OK };
        const msgpack_object *a = o.via.array.ptr;
        if (o.type != MSGPACK_OBJECT_ARRAY || o.via.array.size < 3 ||
            a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                goto proto;

        if (a[0].via.u64 == VMM_MSG_RESPONSE) {
                if (o.via.array.size != 4 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                    a[1].via.u64 > UINT32_MAX)
                        goto proto;
                m.type = VMM_MESSAGE_RESPONSE;
                m.msgid = (uint32_t) a[1].via.u64;
                m.result = a[3];
                if (a[2].type == MSGPACK_OBJECT_MAP) {
                        const msgpack_object *code = vmm_object_get(&a[2], "code");
                        const msgpack_object *msg = vmm_object_get(&a[2], "message");
                        if (code && code->type == MSGPACK_OBJECT_STR) {
                                m.error = vmm_error_from_string(code->via.str.ptr,
                                                                code->via.str.size);
                                m.error_code = zone_strdup(z, code->via.str.ptr,
                                                           code->via.str.size);
                        } else {
                                m.error = _VMM_E_INVALID;
                                m.error_code = zone_strdup(z, "", 0);
                        }
                        if (msg && msg->type == MSGPACK_OBJECT_STR)
                                m.error_message = zone_strdup(z, msg->via.str.ptr,
                                                              msg->via.str.size);
                        else
                                m.error_message = zone_strdup(z, "", 0);
                        if (!m.error_code || !m.error_message) {
                                msgpack_zone_free(z);
                                return -ENOMEM;
                        }
                } else if (a[2].type != MSGPACK_OBJECT_NIL)
                        goto proto;
        } else if (a[0].via.u64 == VMM_MSG_NOTIFICATION) {
                if (o.via.array.size != 3 || a[1].type != MSGPACK_OBJECT_STR)
                        goto proto;
                m.type = VMM_MESSAGE_NOTIFICATION;
                m.method = zone_strdup(z, a[1].via.str.ptr, a[1].via.str.size);
                if (!m.method) {
                        msgpack_zone_free(z);
                        return -ENOMEM;
                }
                m.result = a[2];
        } else
                goto proto;

        *ret = m;
        return 0;
proto:
        msgpack_zone_free(z);
        return -EPROTO;
}

static int read_message(VmmClient *c, VmmMessage *ret) {
        int64_t deadline = deadline_from(c);
        for (;;) {
                if (c->in_end > c->in_start) {
                        size_t len = 0;
                        /* resumable: bytes already walked are not walked again */
                        switch (mpscan_feed(&c->scan, c->in + c->in_start,
                                            c->in_end - c->in_start, &len)) {
                        case MPSCAN_COMPLETE: {
                                mpscan_reset(&c->scan);
                                int r = decode(c, len, ret);
                                if (r < 0 && r != -ENOMEM)
                                        c->error = r;
                                return r;
                        }
                        case MPSCAN_BAD:
                                return (c->error = -EBADMSG);
                        case MPSCAN_TOO_LARGE:
                                return (c->error = -EMSGSIZE);
                        default:
                                break;
                        }
                }
                if (c->error < 0)
                        return c->error;
                int r = wait_fd(c->fd, POLLIN, deadline);
                if (r < 0)
                        return r;
                r = read_some(c);
                if (r < 0)
                        c->error = r;
        }
}

int vmm_client_read(VmmClient *c, VmmMessage *ret) {
        if (!c || !ret)
                return -EINVAL;
        if (c->fd < 0)
                return -ENOTCONN;
        int r = vmm_client_flush(c);
        if (r == -ECONNRESET) {
                /* the server hung up: what it said before is still readable */
                c->out.size = c->out_sent = 0;
                c->pass_fd = -1;
        } else if (r < 0)
                return r;
        return read_message(c, ret);
}

void vmm_message_release(VmmMessage *m) {
        if (!m)
                return;
        if (m->zone)
                msgpack_zone_free(m->zone);
        memset(m, 0, sizeof(*m));
}

int vmm_call_end(VmmClient *c, VmmMessage *ret) {
        if (!c || !ret)
                return -EINVAL;
        if (!c->open)
                return -EINVAL;
        uint32_t id = c->open_msgid;
        int r = vmm_client_end(c);
        if (r < 0)
                return r;
        for (;;) {
                VmmMessage m;
                r = vmm_client_read(c, &m);
                if (r < 0)
                        return r;
                if (m.type == VMM_MESSAGE_RESPONSE && (m.msgid == id || m.msgid == 0)) {
                        *ret = m;
                        return 0;
                }
                vmm_message_release(&m);
        }
}

int vmm_call(VmmClient *c, const char *method, const msgpack_object *params, VmmMessage *ret) {
        msgpack_packer *pk;
        int r = vmm_client_begin(c, method, params ? 1 : 0, &pk, NULL);
        if (r < 0)
                return r;
        if (params && msgpack_pack_object(pk, *params)) {
                vmm_client_cancel(c);
                return -ENOMEM;
        }
        return vmm_call_end(c, ret);
}

/* ---- packing and inspecting ---- */

int vmm_pack_strn(msgpack_packer *pk, const char *s, size_t n) {
        return pack_result(msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n));
}

int vmm_pack_str(msgpack_packer *pk, const char *s) {
        return vmm_pack_strn(pk, s, strlen(s));
}

int vmm_pack_kv_str(msgpack_packer *pk, const char *key, const char *value) {
        if (vmm_pack_str(pk, key) < 0)
                return -ENOMEM;
        if (!value)
                return pack_result(msgpack_pack_nil(pk));
        return vmm_pack_str(pk, value);
}

int vmm_pack_kv_uint(msgpack_packer *pk, const char *key, uint64_t value) {
        if (vmm_pack_str(pk, key) < 0)
                return -ENOMEM;
        return pack_result(msgpack_pack_uint64(pk, value));
}

int vmm_pack_kv_bool(msgpack_packer *pk, const char *key, bool value) {
        if (vmm_pack_str(pk, key) < 0)
                return -ENOMEM;
        return pack_result(value ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
}

int vmm_pack_kv_nil(msgpack_packer *pk, const char *key) {
        if (vmm_pack_str(pk, key) < 0)
                return -ENOMEM;
        return pack_result(msgpack_pack_nil(pk));
}

int vmm_pack_kv_strv(msgpack_packer *pk, const char *key, const char *const *v, size_t n) {
        if (n > UINT32_MAX || (n > 0 && !v))
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!v[i])
                        return -EINVAL;
        if (vmm_pack_str(pk, key) < 0 || msgpack_pack_array(pk, (uint32_t) n))
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (vmm_pack_str(pk, v[i]) < 0)
                        return -ENOMEM;
        return 0;
}

int vmm_pack_kv_uintv(msgpack_packer *pk, const char *key, const uint64_t *v, size_t n) {
        if (n > UINT32_MAX || (n > 0 && !v))
                return -EINVAL;
        if (vmm_pack_str(pk, key) < 0 || msgpack_pack_array(pk, (uint32_t) n))
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (msgpack_pack_uint64(pk, v[i]))
                        return -ENOMEM;
        return 0;
}

const msgpack_object *vmm_object_get(const msgpack_object *o, const char *key) {
        if (!o || !key || o->type != MSGPACK_OBJECT_MAP)
                return NULL;
        size_t n = strlen(key);
        for (uint32_t i = 0; i < o->via.map.size; i++) {
                const msgpack_object *k = &o->via.map.ptr[i].key;
                if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
                    memcmp(k->via.str.ptr, key, n) == 0)
                        return &o->via.map.ptr[i].val;
        }
        return NULL;
}

bool vmm_object_is_nil(const msgpack_object *o) {
        return !o || o->type == MSGPACK_OBJECT_NIL;
}

bool vmm_object_streq(const msgpack_object *o, const char *s) {
        return o && s && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
               memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

bool vmm_object_int(const msgpack_object *o, int64_t *ret) {
        if (!o)
                return false;
        if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                if (ret)
                        *ret = o->via.i64;
                return true;
        }
        if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > INT64_MAX)
                return false;
        if (ret)
                *ret = (int64_t) o->via.u64;
        return true;
}

bool vmm_object_double(const msgpack_object *o, double *ret) {
        double d;

        if (!o)
                return false;
        switch (o->type) {
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                d = o->via.f64;
                break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                d = (double) o->via.u64;
                break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                d = (double) o->via.i64;
                break;
        default:
                return false;
        }
        if (ret)
                *ret = d;
        return true;
}

bool vmm_object_bool(const msgpack_object *o, bool *ret) {
        if (!o || o->type != MSGPACK_OBJECT_BOOLEAN)
                return false;
        if (ret)
                *ret = o->via.boolean;
        return true;
}

char *vmm_object_strdup(const msgpack_object *o) {
        if (!o || o->type != MSGPACK_OBJECT_STR)
                return NULL;
        return strndup(o->via.str.ptr, o->via.str.size);
}

bool vmm_object_uint(const msgpack_object *o, uint64_t *ret) {
        if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
                return false;
        if (ret)
                *ret = o->via.u64;
        return true;
}

/* ---- calls of part 2 ---- */

int vmm_whoami(VmmClient *c, const char *token, VmmMessage *ret) {
        msgpack_packer *pk;
        int r;

        if (!token)
                return vmm_call(c, VMM_M_WHOAMI, NULL, ret);
        r = vmm_client_begin_map(c, VMM_M_WHOAMI, 1, &pk, NULL);
        if (r < 0)
                return r;
        if (vmm_pack_kv_str(pk, "token", token) < 0) {
                vmm_client_cancel(c);
                return -ENOMEM;
        }
        return vmm_call_end(c, ret);
}

int vmm_user_auth(VmmClient *c, const char *name, const char *password, VmmMessage *ret) {
        msgpack_packer *pk;
        int r;

        if (!name || !password)
                return -EINVAL;
        r = vmm_client_begin_map(c, VMM_M_USER_AUTH, 2, &pk, NULL);
        if (r < 0)
                return r;
        if (vmm_pack_kv_str(pk, "name", name) < 0 ||
            vmm_pack_kv_str(pk, "password", password) < 0) {
                vmm_client_cancel(c);
                return -ENOMEM;
        }
        return vmm_call_end(c, ret);
}

int vmm_booking_get(VmmClient *c, const char *vm_id, const char *token, VmmMessage *ret) {
        msgpack_packer *pk;
        uint32_t n = !!vm_id + !!token;
        int r;

        if (n == 0)
                return vmm_call(c, VMM_M_BOOKING_GET, NULL, ret);
        r = vmm_client_begin_map(c, VMM_M_BOOKING_GET, n, &pk, NULL);
        if (r < 0)
                return r;
        if ((vm_id && vmm_pack_kv_str(pk, "vm_id", vm_id) < 0) ||
            (token && vmm_pack_kv_str(pk, "token", token) < 0)) {
                vmm_client_cancel(c);
                return -ENOMEM;
        }
        return vmm_call_end(c, ret);
}

int vmm_events_watch(VmmClient *c, const uint64_t *since, const char *const *types,
                     size_t n_types, VmmMessage *ret) {
        msgpack_packer *pk;
        uint32_t n = !!since + (n_types > 0);
        int r;

        if (n_types > 0 && !types)
                return -EINVAL;
        if (n == 0)
                return vmm_call(c, VMM_M_EVENTS_WATCH, NULL, ret);
        r = vmm_client_begin_map(c, VMM_M_EVENTS_WATCH, n, &pk, NULL);
        if (r < 0)
                return r;
        r = since ? vmm_pack_kv_uint(pk, "since", *since) : 0;
        if (r >= 0 && n_types > 0)
                r = vmm_pack_kv_strv(pk, "types", types, n_types);
        if (r < 0) {
                vmm_client_cancel(c);
                return r;
        }
        return vmm_call_end(c, ret);
}
