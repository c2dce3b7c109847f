/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "events.h"
#include "listen.h"
#include "log.h"
#include "shared/macro.h"
#include "shared/mpout.h"

static int split_host_port(const char *address, char *host, size_t hostlen, char *port,
                           size_t portlen) {
        const char *colon;

        if (address[0] == '[') {
                const char *end = strchr(address, ']');
                if (!end || end[1] != ':')
                        return -EINVAL;
                if ((size_t) (end - address - 1) >= hostlen)
                        return -EINVAL;
                memcpy(host, address + 1, (size_t) (end - address - 1));
                host[end - address - 1] = '\0';
                colon = end + 1;
        } else {
                colon = strrchr(address, ':');
                if (!colon || (size_t) (colon - address) >= hostlen)
                        return -EINVAL;
                memcpy(host, address, (size_t) (colon - address));
                host[colon - address] = '\0';
        }
        if (strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen)
                return -EINVAL;
        strcpy(port, colon + 1);
        for (const char *p = port; *p; p++)
                if (*p < '0' || *p > '9')
                        return -EINVAL;
        return 0;
}

int listener_bind_tcp(Manager *m, const char *address, Listener *l) {
        struct addrinfo hints = {
                .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
                .ai_family = AF_UNSPEC,
                .ai_socktype = SOCK_STREAM,
        };
        struct addrinfo *res = NULL;
        char host[256], port[16];
        int fd, r, one = 1;

        r = split_host_port(address, host, sizeof host, port, sizeof port);
        if (r < 0)
                return log_error_errno(r, "Invalid listen address '%s': expected HOST:PORT", address);
        r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
        if (r != 0)
                return log_error_errno(EINVAL, "Cannot resolve listen address '%s': %s", address,
                                       gai_strerror(r));

        fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                r = -errno;
                freeaddrinfo(res);
                return log_error_errno(r, "Cannot create socket for %s: %s", address, strerror(-r));
        }
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (res->ai_family == AF_INET6)
                (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
                r = -errno;
                freeaddrinfo(res);
                close(fd);
                return log_error_errno(r, "Cannot listen on %s: %s", address, strerror(-r));
        }
        freeaddrinfo(res);
        *l = (Listener) { .manager = m, .fd = fd, .kind = CONN_TCP };
        snprintf(l->address, sizeof l->address, "%s", address);
        return 0;
}

static int mkdir_parents(const char *path) {
        char buf[4096];
        size_t n = strlen(path);

        if (n >= sizeof buf)
                return -ENAMETOOLONG;
        memcpy(buf, path, n + 1);
        for (size_t i = 1; i < n; i++) {
                if (buf[i] != '/')
                        continue;
                buf[i] = '\0';
                if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                        return -errno;
                buf[i] = '/';
        }
        return 0;
}

int listener_bind_unix(Manager *m, const char *path, Listener *l) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        int fd, r;

        if (strlen(path) >= sizeof sa.sun_path)
                return log_error_errno(ENAMETOOLONG, "Admin socket path too long: %s", path);
        strcpy(sa.sun_path, path);
        r = mkdir_parents(path);
        if (r < 0)
                return log_error_errno(r, "Cannot create the directory of %s: %s", path,
                                       strerror(-r));
        if (lstat(path, &st) == 0) {
                if (!S_ISSOCK(st.st_mode))
                        return log_error_errno(EEXIST, "%s exists and is not a socket; not "
                                               "replacing it", path);
                int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (probe >= 0) {
                        bool live = connect(probe, (struct sockaddr *) &sa, sizeof sa) == 0 ||
                                    errno != ECONNREFUSED;
                        int saved = errno;
                        close(probe);
                        if (live && saved != ENOENT)
                                return log_error_errno(EADDRINUSE, "Another daemon serves %s; "
                                                       "not starting", path);
                }
                if (unlink(path) < 0 && errno != ENOENT)
                        return log_error_errno(errno, "Cannot remove stale socket %s: %s", path,
                                               strerror(errno));
                log_info("Replaced stale socket %s", path);
        }
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return log_error_errno(errno, "Cannot create admin socket: %s", strerror(errno));
        mode_t old = umask(0117);
        r = bind(fd, (struct sockaddr *) &sa, sizeof sa);
        umask(old);
        if (r < 0 || listen(fd, 128) < 0) {
                r = -errno;
                close(fd);
                return log_error_errno(r, "Cannot listen on %s: %s", path, strerror(-r));
        }
        (void) chmod(path, 0660);
        if (m->admin_gid_valid && chown(path, (uid_t) -1, m->admin_gid) < 0)
                log_warning("Cannot give %s to the admin group: %s", path, strerror(errno));
        *l = (Listener) { .manager = m, .fd = fd, .kind = CONN_ADMIN };
        snprintf(l->address, sizeof l->address, "%s", path);
        snprintf(l->unix_path, sizeof l->unix_path, "%s", path);
        return 0;
}

int listener_adopt(Manager *m, int fd, ConnKind kind, const char *name, Listener *l) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int flags;

        if (kind == CONN_TCP) {
                if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0)
                        return log_error_errno(EINVAL, "Socket '%s' (fd %d) from systemd is not a "
                                               "listening TCP socket", name, fd);
        } else if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
                return log_error_errno(EINVAL, "Socket '%s' (fd %d) from systemd is not a "
                                       "listening Unix stream socket", name, fd);
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
            fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return log_error_errno(errno, "Cannot set up fd %d: %s", fd, strerror(errno));
        *l = (Listener) { .manager = m, .fd = fd, .kind = kind };
        if (getsockname(fd, (struct sockaddr *) &ss, &sl) == 0) {
                if (ss.ss_family == AF_UNIX)
                        snprintf(l->address, sizeof l->address, "%s",
                                 ((struct sockaddr_un *) &ss)->sun_path);
                else {
                        char host[INET6_ADDRSTRLEN] = "?";
                        unsigned port = 0;
                        if (ss.ss_family == AF_INET) {
                                struct sockaddr_in *in = (struct sockaddr_in *) &ss;
                                inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
                                port = ntohs(in->sin_port);
                                snprintf(l->address, sizeof l->address, "%s:%u", host, port);
                        } else {
                                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
                                inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
                                port = ntohs(in6->sin6_port);
                                snprintf(l->address, sizeof l->address, "[%s]:%u", host, port);
                        }
                }
        }
        snprintf(l->address + strlen(l->address), sizeof l->address - strlen(l->address),
                 " (from systemd)");
        return 0;
}

/* root, our own uid, or a member of the admin group */
static bool admin_allowed(Manager *m, int fd, struct ucred *ret) {
        struct ucred cred;
        socklen_t len = sizeof cred;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
                return false;
        *ret = cred;
        if (cred.uid == 0 || cred.uid == geteuid())
                return true;
        if (!m->admin_gid_valid)
                return false;
        if (cred.gid == m->admin_gid)
                return true;
        gid_t groups[256];
        len = sizeof groups;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
                for (size_t i = 0; i < len / sizeof(gid_t); i++)
                        if (groups[i] == m->admin_gid)
                                return true;
                return false;
        }
        /* no SO_PEERGROUPS: the user database */
        struct passwd *pw = getpwuid(cred.uid);
        if (!pw)
                return false;
        int ng = 256;
        if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) < 0)
                return false;
        for (int i = 0; i < ng; i++)
                if (groups[i] == m->admin_gid)
                        return true;
        return false;
}

static void reject_code(int fd, const char *code, const char *message);

static void reject(int fd, const char *message) {
        reject_code(fd, "rate_limited", message);
}

static void reject_code(int fd, const char *code, const char *message) {
        char buf[256];
        msgpack_sbuffer sb;
        msgpack_packer pk;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        if (!(msgpack_pack_array(&pk, 4) || msgpack_pack_uint8(&pk, VMM_MSG_RESPONSE) ||
              msgpack_pack_uint32(&pk, 0) || msgpack_pack_map(&pk, 2) ||
              mp_kv_str(&pk, "code", code) || mp_kv_str(&pk, "message", message) ||
              msgpack_pack_nil(&pk)))
                (void) !send(fd, sb.data, sb.size, MSG_NOSIGNAL | MSG_DONTWAIT);
        msgpack_sbuffer_destroy(&sb);
        (void) shutdown(fd, SHUT_WR);
        /* read what is already there so that close() does not reset */
        (void) !recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        close(fd);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Listener *l = userdata;
        l->retry = sd_event_source_disable_unref(l->retry);
        (void) sd_event_source_set_enabled(l->source, SD_EVENT_ON);
        return 0;
}

static int on_accept(sd_event_source *s, int lfd, uint32_t revents, void *userdata) {
        Listener *l = userdata;
        Manager *m = l->manager;

        for (int i = 0; i < 64; i++) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof ss;
                int fd = accept4(lfd, (struct sockaddr *) &ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                return 0;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM) {
                                log_warning("Cannot accept on %s: %s; pausing 100 ms", l->address,
                                            strerror(errno));
                                (void) sd_event_source_set_enabled(l->source, SD_EVENT_OFF);
                                uint64_t now;
                                (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now);
                                (void) sd_event_add_time(m->event, &l->retry, CLOCK_MONOTONIC,
                                                         now + 100000, 0, on_retry, l);
                                return 0;
                        }
                        log_warning("accept() on %s failed: %s", l->address, strerror(errno));
                        return 0;
                }
                if (m->shutting_down) {
                        close(fd);
                        continue;
                }
                if (m->n_conns >= m->config.max_connections) {
                        log_struct(LOG_WARNING, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                                .admin_uid = -1 },
                                   "Connection refused: %" PRIu64 " connections already open",
                                   m->n_conns);
                        reject(fd, "too many connections; retry later");
                        continue;
                }
                struct ucred cred = { .uid = (uid_t) -1 };
                if (l->kind == CONN_ADMIN && !admin_allowed(m, fd, &cred)) {
                        log_notice("Admin socket: refused uid %u pid %d (not root, uid %u or "
                                   "the admin group)", (unsigned) cred.uid, (int) cred.pid,
                                   (unsigned) geteuid());
                        reject_code(fd, "forbidden",
                                    "not allowed: the admin socket serves root, the daemon's "
                                    "user and the admin group");
                        continue;
                }
                Conn *c = NULL;
                int r = conn_new(m, fd, l->kind, (struct sockaddr *) &ss, sl, &c);
                if (r < 0) {
                        log_error_errno(r, "Cannot set up connection: %s", strerror(-r));
                        close(fd);
                        continue;
                }
                if (l->kind == CONN_ADMIN) {
                        c->uid = cred.uid;
                        c->pid = cred.pid;
                        snprintf(c->peer_str, sizeof c->peer_str, "uid=%u pid=%d",
                                 (unsigned) cred.uid, (int) cred.pid);
                        continue;
                }
                if (sessions_peer_conns(c->peer) > m->config.max_connections_per_peer) {
                        if (sessions_peer_log_allowed(c->peer, now_ms()))
                                log_struct(LOG_NOTICE,
                                           &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                          .peer = c->peer_str, .admin_uid = -1 },
                                           "Connection from %s refused: over %" PRIu64
                                           " connections from that address", c->peer_str,
                                           m->config.max_connections_per_peer);
                        int cfd = conn_steal_fd(c);
                        conn_close(c, "limit");
                        reject(cfd, "too many connections from this address; retry later");
                        continue;
                }
                c->announced = true;
                events_emit(m, &(Event) { .type = "conn.opened", .has_conn = true,
                                          .conn = c->id, .peer = c->peer_str });
        }
        return 0;
}

int listener_start(Listener *l) {
        int r = sd_event_add_io(l->manager->event, &l->source, l->fd, EPOLLIN, on_accept, l);
        if (r < 0)
                return log_error_errno(r, "Cannot watch %s: %s", l->address, strerror(-r));
        return 0;
}

void listener_stop(Listener *l) {
        l->source = sd_event_source_disable_unref(l->source);
        l->retry = sd_event_source_disable_unref(l->retry);
        if (l->fd >= 0)
                close(l->fd);
        l->fd = -1;
        if (l->unix_path[0]) {
                (void) unlink(l->unix_path);
                l->unix_path[0] = '\0';
        }
}
