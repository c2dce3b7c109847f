/* SPDX-License-Identifier: MIT */
/* Listening sockets: bound from flags (TCP), later also received from
 * systemd by name. Each accepts into a Conn of its kind. */
#pragma once

#include <systemd/sd-event.h>

#include "conn.h"

struct Listener {
        Manager *manager;
        int fd;
        ConnKind kind;
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
int listener_adopt(Manager *m, int fd, ConnKind kind, const char *name, Listener *l);
int listener_start(Listener *l);
void listener_stop(Listener *l);    /* stops accepting and closes the socket */
