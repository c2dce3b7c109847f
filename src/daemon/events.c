/* SPDX-License-Identifier: MIT */
#include <inttypes.h>
#include <string.h>

#include "conn.h"
#include "events.h"
#include "log.h"
#include "shared/mpout.h"

void events_session_id(const uint8_t hash[SECRET_HASH_BYTES], char ret[SECRET_SESSION_ID_LEN + 1]) {
        secret_session_id(hash, ret);
}

void events_watch(Manager *m, Conn *c) {
        if (c->watching)
                return;
        c->watching = true;
        c->event_seq = 0;
        c->watch_prev = NULL;
        c->watch_next = m->watchers;
        if (m->watchers)
                m->watchers->watch_prev = c;
        m->watchers = c;
}

void events_unwatch(Manager *m, Conn *c) {
        if (!c->watching)
                return;
        if (c->watch_prev)
                c->watch_prev->watch_next = c->watch_next;
        else
                m->watchers = c->watch_next;
        if (c->watch_next)
                c->watch_next->watch_prev = c->watch_prev;
        c->watch_prev = c->watch_next = NULL;
        c->watching = false;
}

static int write_conn(void *data, const char *buf, size_t len) {
        return conn_write_raw(data, buf, len) < 0 ? -1 : 0;
}

void events_emit(Manager *m, const Event *e) {
        int64_t now = now_ms();

        for (Conn *c = m->watchers; c; c = c->watch_next) {
                msgpack_packer pk;
                uint32_t n = 3;

                if (c->dead || c->closing || c->close_pending)
                        continue;
                if (conn_unsent(c) > EVENTS_WATCHER_MAX_UNSENT) {
                        log_notice("Event watcher on connection %" PRIu64 " (%s) does not read; "
                                   "disconnecting it", c->id, c->peer_str);
                        manager_close_later(m, c, "error");
                        continue;
                }
                n += (e->vm_id || e->vm_id_nil) + !!e->session + !!e->peer + !!e->reason +
                     e->has_conn;
                msgpack_packer_init(&pk, c, write_conn);
                bool fail = msgpack_pack_array(&pk, 3) ||
                            msgpack_pack_uint8(&pk, VMM_MSG_NOTIFICATION) ||
                            mp_str(&pk, "event") || msgpack_pack_array(&pk, 1) ||
                            msgpack_pack_map(&pk, n) ||
                            mp_kv_u64(&pk, "seq", ++c->event_seq) ||
                            mp_kv_str(&pk, "type", e->type) || mp_kv_i64(&pk, "time", now);
                if (!fail && (e->vm_id || e->vm_id_nil))
                        fail = e->vm_id ? mp_kv_str(&pk, "vm_id", e->vm_id) : mp_kv_nil(&pk, "vm_id");
                if (!fail && e->session)
                        fail = mp_kv_str(&pk, "session", e->session);
                if (!fail && e->peer)
                        fail = mp_kv_str(&pk, "peer", e->peer);
                if (!fail && e->reason)
                        fail = mp_kv_str(&pk, "reason", e->reason);
                if (!fail && e->has_conn)
                        fail = mp_kv_u64(&pk, "conn", e->conn);
                if (fail) {
                        manager_close_later(m, c, "error");
                        continue;
                }
                conn_send_soon(c);
        }
}
