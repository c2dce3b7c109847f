/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "events.h"
#include "listen.h"
#include "log.h"
#include "session-touch.h"
#include "shared/address.h"
#include "shared/clock.h"
#include "shared/fs.h"
#include "shared/macro.h"
#include "shared/mpout.h"

/* The directories above path. */
static int mkdir_parents_of(const char *path) {
        _cleanup_free_ char *p = strdup(path);
        char *slash;

        if (!p)
                return -ENOMEM;
        slash = strrchr(p, '/');
        if (!slash || slash == p)
                return 0;
        *slash = '\0';
        return mkdir_p(p, 0755, 0755);
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

        r = address_split(address, NULL, host, sizeof host, port, sizeof port);
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
        *l = (Listener) { .manager = m, .fd = fd, .kind = SOCKET_TCP };
        snprintf(l->address, sizeof l->address, "%s", address);
        return 0;
}

int listener_bind_unix(Manager *m, const char *path, Listener *l) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct stat st;
        int fd, r;

        if (strlen(path) >= sizeof sa.sun_path)
                return log_error_errno(ENAMETOOLONG, "Admin socket path too long: %s", path);
        strcpy(sa.sun_path, path);
        r = mkdir_parents_of(path);
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
        /* the mode is the first gate, vmmd's own peer check the second; with
         * a users group its members must reach the socket too, and the peer
         * check is then the only gate (it refuses anyone else at once) */
        (void) chmod(path, m->users_gid_valid ? 0666 : 0660);
        if (m->admin_gid_valid && chown(path, (uid_t) -1, m->admin_gid) < 0)
                log_warning("Cannot give %s to the admin group: %s", path, strerror(errno));
        *l = (Listener) { .manager = m, .fd = fd, .kind = SOCKET_ADMIN };
        snprintf(l->address, sizeof l->address, "%s", path);
        snprintf(l->unix_path, sizeof l->unix_path, "%s", path);
        return 0;
}

int listener_adopt(Manager *m, int fd, SocketKind kind, const char *name, Listener *l) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int flags;

        if (kind == SOCKET_TCP) {
                if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0)
                        return log_error_errno(ENOTCONN, "Socket '%s' (fd %d) from systemd is not a "
                                               "listening TCP socket", name, fd);
        } else if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
                return log_error_errno(ENOTCONN, "Socket '%s' (fd %d) from systemd is not a "
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
        struct stat st;
        if (kind == SOCKET_ADMIN && m->users_gid_valid && ss.ss_family == AF_UNIX &&
            stat(l->address, &st) == 0 && (st.st_mode & 0006) != 0006)
                log_warning("Members of the users group cannot reach %s (mode %04o): set "
                            "SocketMode=0666 for the admin socket unit (vmmd checks every peer "
                            "itself)", l->address, (unsigned) (st.st_mode & 07777));
        snprintf(l->address + strlen(l->address), sizeof l->address - strlen(l->address),
                 " (from systemd)");
        return 0;
}

/* The admin socket path: --admin-socket, $RUNTIME_DIRECTORY/admin.sock,
 * /run/vmmd/admin.sock for root, else $XDG_RUNTIME_DIR/vmmd/admin.sock.
 * Returns 1 with a path, 0 when there is none. */
static int default_admin_socket(Manager *m, char *buf, size_t len) {
        const char *e;

        if (m->config.admin_socket) {
                snprintf(buf, len, "%s", m->config.admin_socket);
                return 1;
        }
        e = getenv("RUNTIME_DIRECTORY");
        if (e && *e == '/') {
                const char *colon = strchr(e, ':');
                int n = colon ? (int) (colon - e) : (int) strlen(e);
                snprintf(buf, len, "%.*s/admin.sock", n, e);
                return 1;
        }
        if (geteuid() == 0) {
                snprintf(buf, len, "/run/vmmd/admin.sock");
                return 1;
        }
        e = getenv("XDG_RUNTIME_DIR");
        if (e && *e == '/') {
                snprintf(buf, len, "%s/vmmd/admin.sock", e);
                return 1;
        }
        return 0;
}

/* Sockets from systemd by name (client, admin), else bound from the flags. */
int listen_setup(Manager *m) {
        char **names = NULL;
        int n, r = 0;

        const char *admin_group = m->config.admin_group ? m->config.admin_group : "vmmd";
        const char *users_group = m->config.users_group ? m->config.users_group : "vmmd-users";
        struct group *gr = getgrnam(admin_group);
        if (gr) {
                m->admin_gid = gr->gr_gid;
                m->admin_gid_valid = true;
        } else
                log_warning("The admin group '%s' does not exist: only root and uid %u may use "
                            "the admin socket as admins (create it with groupadd, or set "
                            "admin_group)", admin_group, (unsigned) geteuid());
        gr = getgrnam(users_group);
        if (gr) {
                m->users_gid = gr->gr_gid;
                m->users_gid_valid = true;
        } else if (m->config.users_group)
                log_warning("The users group '%s' does not exist: nobody uses the admin socket "
                            "with the role user", users_group);

        n = sd_listen_fds_with_names(true, &names);
        if (n < 0)
                return log_error_errno(n, "Cannot take sockets from systemd: %s", strerror(-n));
        if (n > 0) {
                bool have_admin = false;
                m->listeners = calloc((size_t) n, sizeof(Listener));
                if (!m->listeners)
                        r = -ENOMEM;
                for (int i = 0; r >= 0 && i < n; i++) {
                        int fd = SD_LISTEN_FDS_START + i;
                        const char *name = names && names[i] ? names[i] : "unknown";
                        SocketKind kind;
                        if (strcmp(name, "client") == 0)
                                kind = SOCKET_TCP;
                        else if (strcmp(name, "admin") == 0) {
                                if (have_admin) {
                                        r = log_error_errno(ENOTCONN, "systemd passed more than one "
                                                            "'admin' socket; refusing to start");
                                        break;
                                }
                                have_admin = true;
                                kind = SOCKET_ADMIN;
                        } else {
                                r = log_error_errno(ENOTCONN, "systemd passed a socket named '%s' "
                                                    "(fd %d); expected 'client' or 'admin' "
                                                    "(FileDescriptorName=); refusing to start",
                                                    name, fd);
                                break;
                        }
                        r = listener_adopt(m, fd, kind, name, &m->listeners[m->n_listeners]);
                        if (r >= 0)
                                m->n_listeners++;
                }
                for (int i = 0; names && i < n; i++)
                        free(names[i]);
                free(names);
                if (r < 0)
                        return r;
                m->socket_activated = true;
                if (m->config.n_listen > 0 || m->config.admin_socket)
                        log_notice("Sockets passed by systemd; --listen/--admin-socket ignored");
                return 0;
        }

        size_t nl = m->config.n_listen ? m->config.n_listen : 1;
        m->listeners = calloc(nl + 1, sizeof(Listener));
        if (!m->listeners)
                return -ENOMEM;
        for (size_t i = 0; i < nl; i++) {
                const char *a = m->config.n_listen ? m->config.listen[i] : "127.0.0.1:7707";
                r = listener_bind_tcp(m, a, &m->listeners[m->n_listeners]);
                if (r < 0)
                        return r;
                m->n_listeners++;
        }
        char admin_path[4096];
        if (default_admin_socket(m, admin_path, sizeof admin_path) > 0) {
                r = listener_bind_unix(m, admin_path, &m->listeners[m->n_listeners]);
                if (r < 0)
                        return r;
                m->n_listeners++;
        } else
                log_warning("No admin socket: set --admin-socket or XDG_RUNTIME_DIR");
        return 0;
}

/* ---- who may use the admin socket ---- */

static bool in_group(int fd, const struct ucred *cred, gid_t gid) {
        gid_t groups[256];
        socklen_t len = sizeof groups;

        if (cred->gid == gid)
                return true;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) == 0) {
                for (size_t i = 0; i < len / sizeof(gid_t); i++)
                        if (groups[i] == gid)
                                return true;
                return false;
        }
        /* no SO_PEERGROUPS: the user database */
        struct passwd *pw = getpwuid(cred->uid);
        int ng = 256;
        if (!pw || getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) < 0)
                return false;
        for (int i = 0; i < ng; i++)
                if (groups[i] == gid)
                        return true;
        return false;
}

/* root, our own uid or the admin group: admin; the users group: user;
 * anyone else: none. */
static int peer_role(Manager *m, int fd, struct ucred *ret) {
        socklen_t len = sizeof *ret;

        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ret, &len) < 0)
                return STORE_ROLE_NONE;
        if (ret->uid == 0 || ret->uid == geteuid())
                return STORE_ROLE_ADMIN;
        if (m->admin_gid_valid && in_group(fd, ret, m->admin_gid))
                return STORE_ROLE_ADMIN;
        if (m->users_gid_valid && in_group(fd, ret, m->users_gid))
                return STORE_ROLE_USER;
        return STORE_ROLE_NONE;
}

static void login_name(uid_t uid, char ret[STORE_NAME_MAX + 1]) {
        struct passwd *pw = getpwuid(uid);

        if (pw && pw->pw_name && strlen(pw->pw_name) <= STORE_NAME_MAX)
                snprintf(ret, STORE_NAME_MAX + 1, "%s", pw->pw_name);
        else
                snprintf(ret, STORE_NAME_MAX + 1, "uid%u", (unsigned) uid);
}

/* One error (msgid 0) and close: a connection refused at accept. */
static void reject(int fd, const char *code, const char *message) {
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

/* ---- trusted proxies ---- */

static bool address_in(const struct sockaddr *sa, const char *entry) {
        char addr[INET6_ADDRSTRLEN + 8];
        const char *slash = strchr(entry, '/');
        size_t n = slash ? (size_t) (slash - entry) : strlen(entry);
        uint8_t want[16], have[16];
        unsigned bits;
        int family;

        if (n >= sizeof addr)
                return false;
        memcpy(addr, entry, n);
        addr[n] = '\0';
        family = strchr(addr, ':') ? AF_INET6 : AF_INET;
        if (inet_pton(family, addr, want) != 1)
                return false;
        if (sa->sa_family == AF_INET && family == AF_INET)
                memcpy(have, &((const struct sockaddr_in *) sa)->sin_addr, 4);
        else if (sa->sa_family == AF_INET6 && family == AF_INET6)
                memcpy(have, &((const struct sockaddr_in6 *) sa)->sin6_addr, 16);
        else if (sa->sa_family == AF_INET6 && family == AF_INET) {
                /* an IPv4 proxy seen through an IPv4-mapped IPv6 address */
                const uint8_t *a = ((const struct sockaddr_in6 *) sa)->sin6_addr.s6_addr;
                static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
                if (memcmp(a, mapped, 12) != 0)
                        return false;
                memcpy(have, a + 12, 4);
        } else
                return false;
        bits = slash ? (unsigned) atoi(slash + 1) : (family == AF_INET ? 32 : 128);
        for (unsigned i = 0; i < bits; i++) {
                uint8_t mask = (uint8_t) (0x80u >> (i % 8));
                if ((want[i / 8] & mask) != (have[i / 8] & mask))
                        return false;
        }
        return true;
}

static bool trusted_proxy(Manager *m, const struct sockaddr *sa) {
        for (size_t i = 0; i < m->config.n_trusted_proxies; i++)
                if (address_in(sa, m->config.trusted_proxies[i]))
                        return true;
        return false;
}

/* ---- clients ---- */

static void format_peer(const struct sockaddr *sa, char *buf, size_t len) {
        char addr[INET6_ADDRSTRLEN];

        if (sa && sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                inet_ntop(AF_INET, &in->sin_addr, addr, sizeof addr);
                snprintf(buf, len, "%s:%u", addr, ntohs(in->sin_port));
        } else if (sa && sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof addr);
                snprintf(buf, len, "[%s]:%u", addr, ntohs(in6->sin6_port));
        } else
                snprintf(buf, len, "unix");
}

static void client_closed(Conn *conn, const char *reason, void *userdata) {
        Client *c = userdata;
        Manager *m = c->manager;

        if (c->announced)
                events_emit(m->events, &(Event) { .type = "conn.closed", .has_conn = true,
                                                  .conn = c->id, .peer = c->peer_str,
                                                  .vm_id = c->link.attached &&
                                                           c->link.kind == PRINCIPAL_VM
                                                                   ? c->link.name : NULL,
                                                  .vm_id_nil = !c->link.attached ||
                                                               c->link.kind != PRINCIPAL_VM,
                                                  .reason = reason });
        events_unwatch(m->events, c);
        /* a password check nobody waits for any more need not run */
        if (c->busy && c->busy->in_hash)
                (void) jobs_cancel_hash(m->jobs, &c->busy->job);
        if (c->link.attached) {
                uint8_t hash[SECRET_HASH_BYTES];
                char name[STORE_NAME_MAX + 1];
                bool vm = c->link.kind == PRINCIPAL_VM;

                memcpy(hash, c->link.hash, sizeof hash);
                snprintf(name, sizeof name, "%s", c->link.name);
                (void) sessions_detach(m->sessions, &c->link);
                session_touch(m, hash, vm ? name : NULL, vm ? NULL : name);
        }
        if (c->peer) {
                sessions_peer_conn_remove(c->peer);
                sessions_peer_put(m->sessions, c->peer);
                c->peer = NULL;
        }
        if (c->prev)
                c->prev->next = c->next;
        else
                m->clients = c->next;
        if (c->next)
                c->next->prev = c->prev;
        c->prev = c->next = NULL;
        if (c->socket == SOCKET_TCP)
                m->n_tcp_clients--;
        c->conn = NULL;
        client_unref(c);
}

static const ConnOps client_ops = {
        .message = rpc_on_message,
        .closed = client_closed,
};

int client_new(Manager *m, int fd, SocketKind kind, const struct sockaddr *sa, socklen_t salen,
               uid_t uid, pid_t pid, int role, const char *login, Client **ret) {
        struct sockaddr_un unix_sa = { .sun_family = AF_UNIX };
        Client *c;
        int r;

        c = calloc(1, sizeof *c);
        if (!c)
                return -ENOMEM;
        c->manager = m;
        c->n_ref = 1;
        c->socket = kind;
        c->methods = &m->methods;
        c->since_ms = now_ms();
        c->uid = uid;
        c->pid = pid;
        c->peer_role = role;
        snprintf(c->login, sizeof c->login, "%s", login ? login : "");
        if (kind == SOCKET_ADMIN)
                snprintf(c->peer_str, sizeof c->peer_str, "uid=%u pid=%d", (unsigned) uid,
                         (int) pid);
        else
                format_peer(sa, c->peer_str, sizeof c->peer_str);
        c->peer = sessions_peer_get(m->sessions, sa ? sa : (struct sockaddr *) &unix_sa,
                                    (unsigned) m->config.ipv6_prefix);
        if (!c->peer) {
                free(c);
                return -ENOMEM;
        }
        sessions_peer_conn_add(c->peer);
        c->trusted_proxy = kind == SOCKET_TCP && sa && trusted_proxy(m, sa);
        ConnOptions o = {
                .tcp = kind == SOCKET_TCP,
                .unix_fds = kind == SOCKET_ADMIN,
                .max_message = kind == SOCKET_ADMIN ? m->config.max_message_admin
                                                    : m->config.max_message_tcp,
                .max_depth = VMM_MAX_DEPTH,
                .peer = c->peer_str,
        };
        r = conn_new(m->hub, fd, &o, &client_ops, c, &c->conn);
        if (r < 0) {
                sessions_peer_conn_remove(c->peer);
                sessions_peer_put(m->sessions, c->peer);
                free(c);
                return r;
        }
        c->id = conn_id(c->conn);
        if (kind == SOCKET_TCP) {
                conn_set_idle_timeout(c->conn, m->config.idle_timeout_s * 1000);
                m->n_tcp_clients++;
        }
        c->next = m->clients;
        if (m->clients)
                m->clients->prev = c;
        m->clients = c;
        (void) salen;
        log_debug("Connection %" PRIu64 " from %s", c->id, c->peer_str);
        *ret = c;
        return 0;
}

/* ---- accepting ---- */

void listen_reserve_fd(Manager *m) {
        if (m->reserve_fd < 0)
                m->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        Listener *l = userdata;
        l->retry = sd_event_source_disable_unref(l->retry);
        (void) sd_event_source_set_enabled(l->source, SD_EVENT_ON);
        return 0;
}

/* Out of descriptors: the reserve lets one more in. On the admin socket
 * that connection is served (an admin can still look); on TCP it is told
 * to come back later. Then accepting pauses 100 ms. */
static void out_of_fds(Listener *l, int error) {
        Manager *m = l->manager;
        uint64_t now_mono;
        int fd;

        if (m->reserve_fd >= 0) {
                (void) close(m->reserve_fd);
                m->reserve_fd = -1;
                fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd >= 0 && l->kind == SOCKET_TCP) {
                        reject(fd, "rate_limited", "the server is out of descriptors; retry later");
                        /* at once: else the next TCP accept takes the freed
                         * slot and the admin socket has none left */
                        listen_reserve_fd(m);
                } else if (fd >= 0) {
                        struct ucred cred = { .uid = (uid_t) -1 };
                        char login[STORE_NAME_MAX + 1];
                        int role = peer_role(m, fd, &cred);
                        Client *c = NULL;
                        login_name(cred.uid, login);
                        if (role == STORE_ROLE_NONE ||
                            client_new(m, fd, SOCKET_ADMIN, NULL, 0, cred.uid, cred.pid, role,
                                       login, &c) < 0)
                                close(fd);
                }
        }
        if (sd_event_now(m->event, CLOCK_MONOTONIC, &now_mono) >= 0 &&
            now_mono / 1000 - m->accept_warned_ms >= 10000) {
                m->accept_warned_ms = now_mono / 1000;
                log_struct(LOG_WARNING, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                        .admin_uid = -1 },
                           "Cannot accept on %s: %s; pausing 100 ms (said once per 10 s)",
                           l->address, strerror(error));
        }
        (void) sd_event_source_set_enabled(l->source, SD_EVENT_OFF);
        (void) sd_event_now(m->event, CLOCK_MONOTONIC, &now_mono);
        (void) sd_event_add_time(m->event, &l->retry, CLOCK_MONOTONIC, now_mono + 100000, 0,
                                 on_retry, l);
}

static void accept_admin(Listener *l, int fd) {
        Manager *m = l->manager;
        struct ucred cred = { .uid = (uid_t) -1 };
        char login[STORE_NAME_MAX + 1], msg[256];
        Client *c = NULL;
        int role, r;

        role = peer_role(m, fd, &cred);
        if (role == STORE_ROLE_NONE) {
                log_notice("Admin socket: refused uid %u pid %d (not root, uid %u or a member "
                           "of '%s' or '%s')", (unsigned) cred.uid, (int) cred.pid,
                           (unsigned) geteuid(), m->config.admin_group ? m->config.admin_group : "vmmd",
                           m->config.users_group ? m->config.users_group : "vmmd-users");
                snprintf(msg, sizeof msg,
                         "not allowed: the admin socket serves root, the daemon's user and the "
                         "members of the group '%s' (admins) or '%s' (users); ask to be added "
                         "(usermod -aG GROUP YOU) and log in again",
                         m->config.admin_group ? m->config.admin_group : "vmmd",
                         m->config.users_group ? m->config.users_group : "vmmd-users");
                reject(fd, "forbidden", msg);
                return;
        }
        login_name(cred.uid, login);
        r = client_new(m, fd, SOCKET_ADMIN, NULL, 0, cred.uid, cred.pid, role, login, &c);
        if (r < 0) {
                log_error_errno(r, "Cannot set up connection: %s", strerror(-r));
                close(fd);
        }
}

static void accept_tcp(Listener *l, int fd, const struct sockaddr *sa, socklen_t sl) {
        Manager *m = l->manager;
        Client *c = NULL;
        int r;

        r = client_new(m, fd, SOCKET_TCP, sa, sl, (uid_t) -1, 0, STORE_ROLE_NONE, NULL, &c);
        if (r < 0) {
                log_error_errno(r, "Cannot set up connection: %s", strerror(-r));
                close(fd);
                return;
        }
        if (sessions_peer_conns(c->peer) > m->config.max_connections_per_peer) {
                if (sessions_peer_log_allowed(c->peer, now_ms()))
                        log_struct(LOG_NOTICE, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                              .peer = c->peer_str,
                                                              .admin_uid = -1 },
                                   "Connection from %s refused: over %" PRIu64
                                   " connections from that address", c->peer_str,
                                   m->config.max_connections_per_peer);
                (void) conn_write_error(c->conn, 0, VMM_E_RATE_LIMITED,
                                        "too many connections from this address; retry later");
                conn_close_after_flush(c->conn, "limit");
                return;
        }
        c->announced = true;
        events_emit(m->events, &(Event) { .type = "conn.opened", .has_conn = true, .conn = c->id,
                                          .peer = c->peer_str });
}

static int on_accept(sd_event_source *s, int lfd, uint32_t revents, void *userdata) {
        Listener *l = userdata;
        Manager *m = l->manager;

        /* the reserve first: a descriptor freed since (a connection closed)
         * goes to it before a new connection can take it */
        listen_reserve_fd(m);
        for (int i = 0; i < 64; i++) {
                struct sockaddr_storage ss;
                socklen_t sl = sizeof ss;
                int fd = accept4(lfd, (struct sockaddr *) &ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
                                break;
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                            errno == ENOMEM) {
                                out_of_fds(l, errno);
                                return 0;
                        }
                        log_warning("accept() on %s failed: %s", l->address, strerror(errno));
                        break;
                }
                if (m->shutting_down) {
                        close(fd);
                        continue;
                }
                if (conn_hub_count(m->hub) >= m->config.max_connections) {
                        log_struct(LOG_WARNING, &(LogFields) { .message_id = LOG_MID_CONN_LIMIT,
                                                                .admin_uid = -1 },
                                   "Connection refused: %zu connections already open",
                                   conn_hub_count(m->hub));
                        reject(fd, "rate_limited", "too many connections; retry later");
                        continue;
                }
                if (l->kind == SOCKET_ADMIN)
                        accept_admin(l, fd);
                else
                        accept_tcp(l, fd, (struct sockaddr *) &ss, sl);
        }
        listen_reserve_fd(m);
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
