/* SPDX-License-Identifier: MIT */
/* Layer L5: listening sockets, bound from flags (TCP, the admin socket) or
 * received from systemd by name, and the accepting: admission (limits,
 * credentials), a Client for each connection and the wiring of its
 * connection's callbacks. */
#pragma once

#include <systemd/sd-event.h>

#include "manager.h"

struct Listener {
        Manager *manager;
        int fd;
        SocketKind kind;
        char address[128];
        sd_event_source *source;
        sd_event_source *retry;         /* accept paused after EMFILE */
        char unix_path[108];            /* an admin socket we created: unlinked at stop */
};

/* "HOST:PORT", "[v6]:PORT"; binds and listens; fills l (not started). */
int listener_bind_tcp(Manager *m, const char *address, Listener *l);
/* The admin socket: mode 0660, group the admin group; a stale socket file is
 * replaced, a live one (another daemon) refused. */
int listener_bind_unix(Manager *m, const char *path, Listener *l);
/* A socket passed by systemd: checked to be a listening stream socket of the
 * right family for kind (TCP: AF_INET/AF_INET6; admin: AF_UNIX). Never
 * unlinked by us. */
int listener_adopt(Manager *m, int fd, SocketKind kind, const char *name, Listener *l);
int listener_start(Listener *l);
void listener_stop(Listener *l);    /* stops accepting and closes the socket */

/* The listeners: sockets from systemd by name (client, admin), else bound
 * from the flags; the admin group and users group looked up. A socket of
 * systemd's that cannot be used is -ENOTCONN (a configuration error). */
int listen_setup(Manager *m);

/* A connection on fd becomes a Client of the manager (accepted, or made by
 * a test). sa: the peer's address (TCP) or NULL (admin socket: uid, pid). */
int client_new(Manager *m, int fd, SocketKind kind, const struct sockaddr *sa, socklen_t salen,
               uid_t uid, pid_t pid, int peer_role, const char *login, Client **ret);
/* The descriptor kept in reserve, so that running out of descriptors never
 * locks out the admin socket. */
void listen_reserve_fd(Manager *m);
