/* SPDX-License-Identifier: MIT */
/* GET /api/v1/events: Server-Sent Events.
 *
 * Each watch is a vmmd connection of its own that `resume`s the session's
 * token and calls `events.watch {since}`; what a watch shows depends on
 * whose session it is and it ends with that session, so a watch is shared
 * only among streams of the same session. A stream joins a watch of its
 * session when the watch can give it everything after its Last-Event-ID
 * (from the few recent events the watch keeps); otherwise it gets a watch of
 * its own. The 200 goes out only once vmmd has accepted the watch.
 *
 * A stream with nothing to send suspends its connection from the content
 * reader and is resumed when an event or the 15 s keep-alive comment comes. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "web.h"

typedef struct Watch Watch;

#define KEEPALIVE_USEC   (15ull * 1000 * 1000)
#define STREAM_BUF_MAX   (1024u * 1024u)   /* a reader further behind is dropped */
#define RING_SIZE        256               /* recent events kept per watch for joiners */
#define STREAM_BLOCK     (16u * 1024u)

typedef struct Stream Stream;

struct Stream {
        Req *req;
        Watch *watch;
        Stream *next;
        Stream *all_next, *all_prev;
        Sse *sse;
        char *buf;
        size_t len, off;
        uint64_t min_feed;      /* events at or below this feed were sent already */
        bool paused, ended, response_alive;
};

typedef struct RingItem {
        uint64_t feed;
        char *text;
        size_t len;
} RingItem;

struct Watch {
        Sse *sse;
        Watch *next;
        char token[VMM_TOKEN_LEN + 1];
        Vconn *v;
        bool accepted, dead;
        uint64_t start_feed;    /* it delivers every event with feed > start_feed */
        uint64_t dropped_max;   /* the largest feed dropped from the ring */
        RingItem ring[RING_SIZE];
        size_t ring_head, ring_n;
        Stream *streams;
        char error_code[32];
        char error_message[256];
};

struct Sse {
        Web *web;
        Watch *watches;
        Stream *all;
        sd_event_source *keepalive;
};

/* ---- streams ---- */

static void stream_wake(Stream *s) {
        if (s->paused && s->req) {
                s->paused = false;
                MHD_resume_connection(s->req->conn);
                web_schedule(s->req->web);
        }
}

static void stream_push(Stream *s, const char *text, size_t n) {
        if (s->ended)
                return;
        if (s->len - s->off + n > STREAM_BUF_MAX) {
                log_info("Event stream of %s is too far behind: ending it",
                         s->req ? s->req->peer : "?");
                s->ended = true;
                stream_wake(s);
                return;
        }
        if (s->off > 0 && s->off == s->len)
                s->off = s->len = 0;
        char *b = realloc(s->buf, s->len + n);
        if (!b) {
                s->ended = true;
                stream_wake(s);
                return;
        }
        s->buf = b;
        memcpy(s->buf + s->len, text, n);
        s->len += n;
        stream_wake(s);
}

static void watch_unlink(Stream *s) {
        Watch *w = s->watch;
        if (!w)
                return;
        for (Stream **p = &w->streams; *p; p = &(*p)->next)
                if (*p == s) {
                        *p = s->next;
                        break;
                }
        s->watch = NULL;
        s->next = NULL;
}

static void watch_free(Watch *w);

static void stream_maybe_free(Stream *s) {
        if (s->req || s->response_alive)
                return;
        Watch *w = s->watch;
        watch_unlink(s);
        if (s->all_prev)
                s->all_prev->all_next = s->all_next;
        else if (s->sse && s->sse->all == s)
                s->sse->all = s->all_next;
        if (s->all_next)
                s->all_next->all_prev = s->all_prev;
        free(s->buf);
        free(s);
        if (w && !w->streams)
                watch_free(w);
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
        Stream *s = cls;
        if (s->len > s->off) {
                size_t n = MIN(max, s->len - s->off);
                memcpy(buf, s->buf + s->off, n);
                s->off += n;
                return (ssize_t) n;
        }
        if (s->ended || !s->req)
                return MHD_CONTENT_READER_END_OF_STREAM;
        s->paused = true;
        MHD_suspend_connection(s->req->conn);
        return 0;
}

static void stream_response_gone(void *cls) {
        Stream *s = cls;
        s->response_alive = false;
        stream_maybe_free(s);
}

void req_stream_gone(Req *req) {
        Stream *s = req->stream;
        if (!s)
                return;
        req->stream = NULL;
        s->req = NULL;
        s->paused = false;
        Watch *w = s->watch;
        watch_unlink(s);
        /* the watch is kept by its response until that is gone */
        if (!s->response_alive) {
                s->watch = NULL;
                stream_maybe_free(s);
        }
        if (w && !w->streams)
                watch_free(w);
}

/* The 200: the response reads from the stream's buffer. */
static void stream_accept(Stream *s, uint64_t after) {
        Req *req = s->req;
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK,
                                                                   stream_read, s,
                                                                   stream_response_gone);
        if (!r) {
                reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        s->response_alive = true;
        s->min_feed = after;
        static const char hello[] = "retry: 2000\n: vmm-web event stream\n\n";
        stream_push(s, hello, sizeof hello - 1);
        /* what this watch already has after the stream's Last-Event-ID */
        Watch *w = s->watch;
        for (size_t i = 0; w && i < w->ring_n; i++) {
                RingItem *it = &w->ring[(w->ring_head + i) % RING_SIZE];
                if (it->feed > s->min_feed) {
                        stream_push(s, it->text, it->len);
                        s->min_feed = it->feed;
                }
        }
        req->stream_response = r;
        req_wake(req);
}

/* ---- watches ---- */

static void watch_free(Watch *w) {
        if (!w)
                return;
        Sse *sse = w->sse;
        for (Watch **p = &sse->watches; *p; p = &(*p)->next)
                if (*p == w) {
                        *p = w->next;
                        break;
                }
        for (Stream *s = w->streams; s; s = s->next)
                s->watch = NULL;
        for (size_t i = 0; i < RING_SIZE; i++)
                free(w->ring[i].text);
        vconn_free(w->v);
        sodium_memzero(w->token, sizeof w->token);
        free(w);
}

/* The watch is over: streams end (browsers reconnect with Last-Event-ID);
 * streams still waiting for the 200 get the error. */
static void watch_end(Watch *w, const char *code, const char *message, unsigned status) {
        w->dead = true;
        Stream *s = w->streams;
        w->streams = NULL;
        while (s) {
                Stream *next = s->next;
                s->watch = NULL;
                s->next = NULL;
                if (s->response_alive) {
                        s->ended = true;
                        stream_wake(s);
                } else if (s->req) {
                        Req *req = s->req;
                        req->rpc = "events.watch";
                        if (status == MHD_HTTP_NOT_IMPLEMENTED)
                                reply_error(req, status, code,
                                            "vmmd does not offer events.watch to the gateway "
                                            "(this vmmd is older than the gateway)");
                        else
                                reply_error(req, status, code, "%s", message);
                }
                s = next;
        }
}

static void ring_add(Watch *w, uint64_t feed, const char *text, size_t len) {
        char *copy = malloc(len);
        if (!copy)
                return;
        memcpy(copy, text, len);
        if (w->ring_n == RING_SIZE) {
                RingItem *old = &w->ring[w->ring_head];
                w->dropped_max = MAX(w->dropped_max, old->feed);
                free(old->text);
                old->text = NULL;
                w->ring_head = (w->ring_head + 1) % RING_SIZE;
                w->ring_n--;
        }
        RingItem *it = &w->ring[(w->ring_head + w->ring_n) % RING_SIZE];
        *it = (RingItem) { .feed = feed, .text = copy, .len = len };
        w->ring_n++;
}

/* One event as SSE lines: id (its feed position), event (truncated only), data. */
static char *event_text(const msgpack_object *ev, uint64_t *ret_feed, size_t *ret_len) {
        json_t *j = json_from_msgpack(ev);
        if (!j)
                return NULL;
        _cleanup_free_ char *msg = event_sentence_mp(ev);
        if (msg)
                (void) json_object_set_new(j, "msg", json_string(msg));
        const msgpack_object *feed = vmm_object_get(ev, "feed");
        const char *type = json_str(j, "type");
        bool truncated = type && strcmp(type, "events.truncated") == 0;
        _cleanup_free_ char *data = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        if (!data)
                return NULL;
        char *out = NULL;
        *ret_feed = 0;
        int n;
        if (feed && feed->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                *ret_feed = feed->via.u64;
                n = asprintf(&out, "id: %" PRIu64 "\n%sdata: %s\n\n", feed->via.u64,
                             truncated ? "event: truncated\n" : "", data);
        } else
                n = asprintf(&out, "%sdata: %s\n\n", truncated ? "event: truncated\n" : "", data);
        if (n < 0)
                return NULL;
        *ret_len = (size_t) n;
        return out;
}

static void watch_notify(void *userdata, const VmmMessage *m) {
        Watch *w = userdata;
        if (!m->method || strcmp(m->method, "event") != 0 || !w->accepted)
                return;
        const msgpack_object *params = &m->result;
        const msgpack_object *ev = params;
        if (params->type == MSGPACK_OBJECT_ARRAY && params->via.array.size > 0)
                ev = &params->via.array.ptr[0];
        if (ev->type != MSGPACK_OBJECT_MAP)
                return;
        uint64_t feed;
        size_t len;
        _cleanup_free_ char *text = event_text(ev, &feed, &len);
        if (!text)
                return;
        if (feed > 0)
                ring_add(w, feed, text, len);
        for (Stream *s = w->streams; s; s = s->next) {
                if (!s->response_alive || (feed > 0 && feed <= s->min_feed))
                        continue;
                stream_push(s, text, len);
                if (feed > 0)
                        s->min_feed = feed;
        }
}

static void watch_closed(void *userdata, int error) {
        Watch *w = userdata;
        if (!w->dead)
                watch_end(w, "unavailable", "vmmd closed the event stream", MHD_HTTP_BAD_GATEWAY);
        /* freed once its last stream is gone */
}

static void watch_failed(Watch *w, const VmmMessage *m, int error) {
        if (!m) {
                char text[256];
                (void) snprintf(text, sizeof text, "cannot reach vmmd at %s (%s)",
                                w->sse->web->config.vmmd, strerror(error < 0 ? -error : error));
                watch_end(w, "unavailable", text, MHD_HTTP_BAD_GATEWAY);
                return;
        }
        const char *code = m->error_code && *m->error_code ? m->error_code : "internal";
        watch_end(w, code, m->error_message ? m->error_message : "", http_status_of(code));
}

static void watch_resumed(void *userdata, const VmmMessage *m, int error) {
        Watch *w = userdata;
        if (w->dead)
                return;
        if (!m || m->error != VMM_OK)
                watch_failed(w, m, error);
}

static void watch_started(void *userdata, const VmmMessage *m, int error) {
        Watch *w = userdata;
        if (w->dead)
                return;
        if (!m || m->error != VMM_OK) {
                watch_failed(w, m, error);
                return;
        }
        uint64_t feed = 0;
        if (!w->start_feed && vmm_object_uint(vmm_object_get(&m->result, "feed"), &feed))
                w->start_feed = feed;
        w->accepted = true;
        for (Stream *s = w->streams; s; s = s->next)
                if (s->req && !s->response_alive)
                        stream_accept(s, s->min_feed);
}

static int watch_new(Sse *sse, Req *req, bool has_since, uint64_t since, Watch **ret) {
        Watch *w = calloc(1, sizeof(*w));
        if (!w)
                return -ENOMEM;
        w->sse = sse;
        memcpy(w->token, req->token, sizeof w->token);
        w->start_feed = has_since ? since : 0;
        int r = vconn_new(sse->web, sse->web->config.vmmd, watch_notify, watch_closed, w, &w->v);
        if (r < 0) {
                free(w);
                return r;
        }
        json_t *rp = json_pack("{s:s}", "token", req->token);
        if (rp && sse->web->config.pass_peer)
                (void) json_object_set_new(rp, "peer", json_string(req->peer));
        /* always a params map: vmmd then answers the feed position the
         * watch starts from (params [] is part 1's call, which answers {}) */
        json_t *wp = has_since ? json_pack("{s:I}", "since", (json_int_t) since) : json_object();
        r = rp ? vconn_call(w->v, "resume", rp, NULL, watch_resumed, w, NULL) : -ENOMEM;
        if (r >= 0)
                r = vconn_call(w->v, "events.watch", wp, NULL, watch_started, w, NULL);
        json_decref(rp);
        json_decref(wp);
        if (r < 0) {
                vconn_free(w->v);
                free(w);
                return r;
        }
        w->next = sse->watches;
        sse->watches = w;
        *ret = w;
        return 0;
}

/* A watch of this session that can serve a stream starting after `since`. */
static Watch *watch_find(Sse *sse, const char *token, bool has_since, uint64_t since) {
        for (Watch *w = sse->watches; w; w = w->next) {
                if (w->dead || strcmp(w->token, token) != 0)
                        continue;
                if (!has_since)
                        return w;
                if (w->accepted && w->start_feed <= since && w->dropped_max <= since)
                        return w;
        }
        return NULL;
}

static void events_checked(Req *req, const VmmMessage *m);

/* The token is checked first with a plain call (whoami): a stale cookie
 * then never makes the watch's `resume` fail, which vmmd would count as a
 * failed login of the client's address. */
void handle_events(Req *req) {
        (void) req_call(req, "whoami", NULL, 0, events_checked);
}

static void events_checked(Req *req, const VmmMessage *m) {
        Sse *sse = req->web->sse;
        req->rpc = "events.watch";
        const char *last = req_header(req, "Last-Event-ID");
        uint64_t since = 0;
        bool has_since = false;
        if (last && *last) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(last, &end, 10);
                if (errno || *end || last[0] == '-') {
                        reply_error(req, MHD_HTTP_BAD_REQUEST, "bad_request",
                                    "Last-Event-ID must be an event id from this stream");
                        return;
                }
                since = v;
                has_since = true;
        }
        Stream *s = calloc(1, sizeof(*s));
        if (!s) {
                reply_error(req, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
                return;
        }
        s->sse = sse;
        s->req = req;
        s->min_feed = since;
        Watch *w = watch_find(sse, req->token, has_since, since);
        if (!w) {
                int r = watch_new(sse, req, has_since, since, &w);
                if (r < 0) {
                        free(s);
                        req->rpc = "events.watch";
                        reply_unreachable(req, r);
                        return;
                }
        }
        s->watch = w;
        s->next = w->streams;
        w->streams = s;
        s->all_next = sse->all;
        if (sse->all)
                sse->all->all_prev = s;
        sse->all = s;
        req->stream = s;
        req->is_stream = true;
        if (w->accepted)
                stream_accept(s, since);
}

static int keepalive(sd_event_source *src, uint64_t usec, void *userdata) {
        Sse *sse = userdata;
        static const char ping[] = ": keep-alive\n\n";
        for (Stream *s = sse->all; s; s = s->all_next)
                if (s->response_alive && s->req)
                        stream_push(s, ping, sizeof ping - 1);
        (void) sd_event_source_set_time_relative(src, KEEPALIVE_USEC);
        return 0;
}

int sse_new(Web *web, Sse **ret) {
        Sse *sse = calloc(1, sizeof(*sse));
        if (!sse)
                return -ENOMEM;
        sse->web = web;
        int r = sd_event_add_time_relative(web->event, &sse->keepalive, CLOCK_MONOTONIC,
                                           KEEPALIVE_USEC, 0, keepalive, sse);
        if (r >= 0)
                r = sd_event_source_set_enabled(sse->keepalive, SD_EVENT_ON);
        if (r < 0) {
                sse_free(sse);
                return r;
        }
        *ret = sse;
        return 0;
}

void sse_stop(Sse *sse) {
        for (Watch *w = sse->watches; w; w = w->next)
                if (!w->dead)
                        watch_end(w, "shutting_down", "the gateway is stopping",
                                  MHD_HTTP_SERVICE_UNAVAILABLE);
        for (Stream *s = sse->all; s; s = s->all_next) {
                s->ended = true;
                stream_wake(s);
        }
}

Sse *sse_free(Sse *sse) {
        if (!sse)
                return NULL;
        while (sse->watches) {
                Watch *w = sse->watches;
                for (Stream *s = w->streams; s; s = s->next)
                        s->watch = NULL;
                w->streams = NULL;
                watch_free(w);
        }
        for (Stream *s = sse->all; s; s = s->all_next)
                s->sse = NULL;
        sd_event_source_disable_unref(sse->keepalive);
        free(sse);
        return NULL;
}
