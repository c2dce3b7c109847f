/* SPDX-License-Identifier: MIT */
/* libvmm: blocking MessagePack-RPC client for vmmd (see include/vmm/client.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
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

#include "shared/macro.h"
#include "vmm/client.h"
#include "vmm/protocol.h"

#define READ_CHUNK           (64u * 1024u)
#define MAX_MESSAGE_DEFAULT  (4u * 1024u * 1024u)
#define SCAN_DEPTH_MAX       32u
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
};

/* ---- bounded scan of one MessagePack object ---- */

typedef enum ScanResult {
        SCAN_COMPLETE,
        SCAN_NEED_MORE,
        SCAN_BAD,
        SCAN_TOO_LARGE,
} ScanResult;

static uint64_t load_be(const uint8_t *p, unsigned n) {
        uint64_t v = 0;
        for (unsigned i = 0; i < n; i++)
                v = (v << 8) | p[i];
        return v;
}

/* Walks buf[0..len) without allocating; every declared length or count is
 * checked against max_bytes before anything relies on it. */
static ScanResult scan_object(const uint8_t *buf, size_t len, size_t max_bytes,
                              unsigned max_depth, size_t *ret_len) {
        uint64_t remaining[SCAN_DEPTH_MAX + 1];
        unsigned depth = 0;
        size_t pos = 0;

        if (max_depth > SCAN_DEPTH_MAX)
                max_depth = SCAN_DEPTH_MAX;
        remaining[0] = 1;

        for (;;) {
                while (depth > 0 && remaining[depth] == 0)
                        depth--;
                if (depth == 0 && remaining[0] == 0) {
                        *ret_len = pos;
                        return SCAN_COMPLETE;
                }
                if (pos >= len)
                        return SCAN_NEED_MORE;

                uint8_t b = buf[pos];
                unsigned hdr = 1, lenbytes = 0, extra = 0;
                uint64_t payload = 0, count = 0;
                bool container = false, is_map = false;

                if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
                        /* fixint, nil, bool */
                } else if (b <= 0x8f) {
                        container = is_map = true;
                        count = b & 0x0f;
                } else if (b <= 0x9f) {
                        container = true;
                        count = b & 0x0f;
                } else if (b <= 0xbf) {
                        payload = b & 0x1f;
                } else {
                        switch (b) {
                        case 0xc4: case 0xc5: case 0xc6:      /* bin 8/16/32 */
                                lenbytes = 1u << (b - 0xc4);
                                break;
                        case 0xc7: case 0xc8: case 0xc9:      /* ext 8/16/32 */
                                lenbytes = 1u << (b - 0xc7);
                                extra = 1;
                                break;
                        case 0xca: payload = 4; break;
                        case 0xcb: payload = 8; break;
                        case 0xcc: case 0xcd: case 0xce: case 0xcf:
                                payload = 1u << (b - 0xcc);
                                break;
                        case 0xd0: case 0xd1: case 0xd2: case 0xd3:
                                payload = 1u << (b - 0xd0);
                                break;
                        case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
                                payload = 1 + (1u << (b - 0xd4));   /* fixext */
                                break;
                        case 0xd9: case 0xda: case 0xdb:      /* str 8/16/32 */
                                lenbytes = 1u << (b - 0xd9);
                                break;
                        case 0xdc: case 0xdd:                 /* array 16/32 */
                                container = true;
                                lenbytes = 2u << (b - 0xdc);
                                break;
                        case 0xde: case 0xdf:                 /* map 16/32 */
                                container = is_map = true;
                                lenbytes = 2u << (b - 0xde);
                                break;
                        default:                              /* 0xc1 */
                                return SCAN_BAD;
                        }
                }

                hdr += lenbytes;
                if (pos + hdr > max_bytes)
                        return SCAN_TOO_LARGE;
                if (pos + hdr > len)
                        return SCAN_NEED_MORE;
                if (lenbytes > 0) {
                        uint64_t v = load_be(buf + pos + 1, lenbytes);
                        if (container)
                                count = v;
                        else
                                payload = v + extra;
                }
                remaining[depth]--;

                if (container) {
                        size_t left = max_bytes - (pos + hdr);
                        if (count > left || (is_map && count * 2 > left))
                                return SCAN_TOO_LARGE;
                        if (depth + 1 > max_depth)
                                return SCAN_TOO_LARGE;
                        pos += hdr;
                        if (count > 0) {
                                depth++;
                                remaining[depth] = is_map ? count * 2 : count;
                        }
                } else {
                        if (payload > max_bytes - (pos + hdr))
                                return SCAN_TOO_LARGE;
                        if (pos + hdr + payload > len)
                                return SCAN_NEED_MORE;
                        pos += hdr + (size_t) payload;
                }
        }
}

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
        if (g != 0) {
                if (g == EAI_MEMORY)
                        return -ENOMEM;
                if (g == EAI_SYSTEM)
                        return negative_errno();
                if (g == EAI_SERVICE)
                        return -EINVAL;
                return -EHOSTUNREACH;
        }
        int r = -EHOSTUNREACH;
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
                r = connect_one(c, ai->ai_family, ai->ai_addr, ai->ai_addrlen);
                if (r >= 0 || r == -ETIMEDOUT)
                        break;
        }
        freeaddrinfo(res);
        return r;
}

int vmm_client_connect(VmmClient *c, const char *address) {
        char port_default[16];
        if (!c || !address || !*address)
                return -EINVAL;
        if (strchr(address, '/'))
                return vmm_client_connect_unix(c, address);

        (void) snprintf(port_default, sizeof(port_default), "%d", VMM_DEFAULT_PORT);
        _cleanup_free_ char *copy = strdup(address);
        if (!copy)
                return -ENOMEM;
        char *host = copy, *port = port_default;
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
                        /* exactly one ':': host:port; more is a bare IPv6 address */
                        *colon = '\0';
                        port = colon + 1;
                }
        }
        if (!*host || !*port)
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
                        switch (scan_object(c->in + c->in_start, c->in_end - c->in_start,
                                            c->max_message, SCAN_DEPTH_MAX, &len)) {
                        case SCAN_COMPLETE: {
                                int r = decode(c, len, ret);
                                if (r < 0 && r != -ENOMEM)
                                        c->error = r;
                                return r;
                        }
                        case SCAN_BAD:
                                return (c->error = -EBADMSG);
                        case SCAN_TOO_LARGE:
                                return (c->error = -EMSGSIZE);
                        case SCAN_NEED_MORE:
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

/* ---- JSON ---- */

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_seq(const uint8_t *p, size_t n) {
        uint8_t b = p[0];
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf;
        if (b < 0x80)
                return 1;
        if (b >= 0xc2 && b <= 0xdf)
                len = 2;
        else if (b >= 0xe0 && b <= 0xef) {
                len = 3;
                if (b == 0xe0)
                        lo = 0xa0;
                else if (b == 0xed)
                        hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
                len = 4;
                if (b == 0xf0)
                        lo = 0x90;
                else if (b == 0xf4)
                        hi = 0x8f;
        } else
                return 0;
        if (len > n)
                return 0;
        if (p[1] < lo || p[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (p[i] < 0x80 || p[i] > 0xbf)
                        return 0;
        return len;
}

static void json_string(FILE *f, const char *s, size_t n) {
        const uint8_t *p = (const uint8_t *) s;
        fputc('"', f);
        for (size_t i = 0; i < n;) {
                uint8_t b = p[i];
                if (b == '"' || b == '\\') {
                        fputc('\\', f);
                        fputc(b, f);
                        i++;
                } else if (b < 0x20) {
                        switch (b) {
                        case '\n': fputs("\\n", f); break;
                        case '\r': fputs("\\r", f); break;
                        case '\t': fputs("\\t", f); break;
                        case '\b': fputs("\\b", f); break;
                        case '\f': fputs("\\f", f); break;
                        default: fprintf(f, "\\u%04x", b); break;
                        }
                        i++;
                } else {
                        size_t k = utf8_seq(p + i, n - i);
                        if (k == 0) {
                                fputs("\\ufffd", f);
                                i++;
                        } else {
                                fwrite(p + i, 1, k, f);
                                i += k;
                        }
                }
        }
        fputc('"', f);
}

static void json_indent(FILE *f, unsigned flags, unsigned level) {
        if (!(flags & VMM_JSON_PRETTY))
                return;
        fputc('\n', f);
        for (unsigned i = 0; i < level; i++)
                fputs("  ", f);
}

static void json_value(FILE *f, const msgpack_object *o, unsigned flags, unsigned level);

static void json_key(FILE *f, const msgpack_object *k, unsigned flags, unsigned level) {
        char buf[32];
        switch (k->type) {
        case MSGPACK_OBJECT_STR:
                json_string(f, k->via.str.ptr, k->via.str.size);
                return;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                (void) snprintf(buf, sizeof(buf), "%" PRIu64, k->via.u64);
                json_string(f, buf, strlen(buf));
                return;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                (void) snprintf(buf, sizeof(buf), "%" PRId64, k->via.i64);
                json_string(f, buf, strlen(buf));
                return;
        default: {
                /* any other key: its JSON text, as a string */
                char *text = NULL;
                size_t len = 0;
                FILE *m = open_memstream(&text, &len);
                if (!m) {
                        fputs("\"\"", f);
                        return;
                }
                json_value(m, k, 0, 0);
                if (fclose(m) == 0 && text)
                        json_string(f, text, len);
                else
                        fputs("\"\"", f);
                free(text);
                return;
        }
        }
        (void) flags;
        (void) level;
}

static void json_value(FILE *f, const msgpack_object *o, unsigned flags, unsigned level) {
        switch (o->type) {
        case MSGPACK_OBJECT_NIL:
                fputs("null", f);
                break;
        case MSGPACK_OBJECT_BOOLEAN:
                fputs(o->via.boolean ? "true" : "false", f);
                break;
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                fprintf(f, "%" PRIu64, o->via.u64);
                break;
        case MSGPACK_OBJECT_NEGATIVE_INTEGER:
                fprintf(f, "%" PRId64, o->via.i64);
                break;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                if (!isfinite(o->via.f64))
                        fputs("null", f);
                else
                        fprintf(f, o->type == MSGPACK_OBJECT_FLOAT32 ? "%.9g" : "%.17g",
                                o->via.f64);
                break;
        case MSGPACK_OBJECT_STR:
                json_string(f, o->via.str.ptr, o->via.str.size);
                break;
        case MSGPACK_OBJECT_BIN:
                fputc('"', f);
                for (uint32_t i = 0; i < o->via.bin.size; i++)
                        fprintf(f, "%02x", (unsigned) (uint8_t) o->via.bin.ptr[i]);
                fputc('"', f);
                break;
        case MSGPACK_OBJECT_ARRAY:
                fputc('[', f);
                for (uint32_t i = 0; i < o->via.array.size; i++) {
                        if (i > 0)
                                fputc(',', f);
                        json_indent(f, flags, level + 1);
                        json_value(f, &o->via.array.ptr[i], flags, level + 1);
                }
                if (o->via.array.size > 0)
                        json_indent(f, flags, level);
                fputc(']', f);
                break;
        case MSGPACK_OBJECT_MAP:
                fputc('{', f);
                for (uint32_t i = 0; i < o->via.map.size; i++) {
                        if (i > 0)
                                fputc(',', f);
                        json_indent(f, flags, level + 1);
                        json_key(f, &o->via.map.ptr[i].key, flags, level + 1);
                        fputs((flags & VMM_JSON_PRETTY) ? ": " : ":", f);
                        json_value(f, &o->via.map.ptr[i].val, flags, level + 1);
                }
                if (o->via.map.size > 0)
                        json_indent(f, flags, level);
                fputc('}', f);
                break;
        default:
                fputs("null", f);
                break;
        }
}

int vmm_json_print(FILE *f, const msgpack_object *o, unsigned flags) {
        if (!f || !o)
                return -EINVAL;
        json_value(f, o, flags, 0);
        return ferror(f) ? -EIO : 0;
}
