/* SPDX-License-Identifier: MIT */
/* One connection of the agent to vmmd, driven by sd-event: the host name is
 * resolved on a thread, the connect is non-blocking, and requests are
 * libvmm's (packed with its packer, read with its bounded reader) with a
 * callback per response; notifications go to their own callback. The loop
 * never waits for the network. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <msgpack.h>
#include <systemd/sd-event.h>

#include "vmm/client.h"

typedef struct AgentConn AgentConn;

/* A response to one request; m is released after the call. */
typedef void (*ConnReplyFunc)(AgentConn *c, const VmmMessage *m, void *userdata);

typedef struct AgentConnCallbacks {
        /* connected: requests can go now */
        void (*connected)(AgentConn *c, void *userdata);
        /* the connection failed or ended (error < 0; established: it had
         * connected). No callback follows; free the connection. */
        void (*failed)(AgentConn *c, int error, bool established, void *userdata);
        /* a notification ([2, method, params]) */
        void (*notification)(AgentConn *c, const VmmMessage *m, void *userdata);
} AgentConnCallbacks;

/* Starts connecting to address ("host:port", "[v6]:port", "host"; port 7707
 * by default). request_timeout_usec bounds the connect and every response. */
int agent_conn_new(sd_event *e, const char *address, uint64_t request_timeout_usec,
                   const AgentConnCallbacks *cb, void *userdata, AgentConn **ret);
/* Safe inside its own callbacks (freed when they return). Returns NULL. */
AgentConn *agent_conn_free(AgentConn *c);

/* A request with params [{n_params pairs}] (n_params 0: []); write the pairs
 * with the packer, then end it with its reply callback. */
int agent_conn_begin(AgentConn *c, const char *method, uint32_t n_params, msgpack_packer **ret_pk);
int agent_conn_end(AgentConn *c, ConnReplyFunc f, void *userdata);
void agent_conn_cancel(AgentConn *c);

const char *agent_conn_address(const AgentConn *c);
/* Requests sent and not answered yet. */
size_t agent_conn_waiting(const AgentConn *c);

/* "host:port" split into host and port (default 7707); -EINVAL if malformed. */
int agent_address_split(const char *address, char **ret_host, char **ret_port);
