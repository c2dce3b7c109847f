/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <netinet/in.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "session.h"
#include "shared/macro.h"

/* An attached session: the connections attached to it. */
typedef struct Attached {
        uint8_t hash[SECRET_HASH_BYTES];
        char vm_id[VMM_VM_ID_MAX + 1];
        Conn *conns;
        size_t n;
} Attached;

/* A connected VM: sorted array entry. */
typedef struct Connected {
        char vm_id[VMM_VM_ID_MAX + 1];
        unsigned n;
} Connected;

struct Peer {
        uint8_t family;
        uint8_t addr[16];
        unsigned conns;
        unsigned n_ref;
        int64_t fail_window_start;
        unsigned fails;
        int64_t log_window_start;
        unsigned logged;
};

struct Sessions {
        void *attached;         /* tsearch tree of Attached, by hash */
        size_t n_attached;
        Connected *connected;   /* sorted by vm_id */
        size_t n_connected, cap_connected;
        void *peers;            /* tsearch tree of Peer, by address */
};

static int attached_cmp(const void *a, const void *b) {
        return memcmp(((const Attached *) a)->hash, ((const Attached *) b)->hash, SECRET_HASH_BYTES);
}

static int peer_cmp(const void *a, const void *b) {
        const Peer *x = a, *y = b;
        if (x->family != y->family)
                return x->family < y->family ? -1 : 1;
        return memcmp(x->addr, y->addr, sizeof x->addr);
}

int sessions_new(Sessions **ret) {
        Sessions *s = calloc(1, sizeof *s);
        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

static void free_node(void *p) {
        free(p);
}

Sessions *sessions_free(Sessions *s) {
        if (!s)
                return NULL;
        tdestroy(s->attached, free_node);
        tdestroy(s->peers, free_node);
        free(s->connected);
        free(s);
        return NULL;
}

/* Binary search: index of vm_id, or where it would go (*found false). */
static size_t connected_find(Sessions *s, const char *vm_id, bool *found) {
        size_t lo = 0, hi = s->n_connected;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(s->connected[mid].vm_id, vm_id);
                if (c == 0) {
                        *found = true;
                        return mid;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        *found = false;
        return lo;
}

static int connected_inc(Sessions *s, const char *vm_id) {
        bool found;
        size_t i = connected_find(s, vm_id, &found);

        if (found) {
                s->connected[i].n++;
                return 0;
        }
        if (s->n_connected == s->cap_connected) {
                size_t cap = s->cap_connected ? s->cap_connected * 2 : 16;
                Connected *n = realloc(s->connected, cap * sizeof *n);
                if (!n)
                        return -ENOMEM;
                s->connected = n;
                s->cap_connected = cap;
        }
        memmove(s->connected + i + 1, s->connected + i, (s->n_connected - i) * sizeof(Connected));
        memset(&s->connected[i], 0, sizeof(Connected));
        strncpy(s->connected[i].vm_id, vm_id, VMM_VM_ID_MAX);
        s->connected[i].n = 1;
        s->n_connected++;
        return 0;
}

static void connected_dec(Sessions *s, const char *vm_id) {
        bool found;
        size_t i = connected_find(s, vm_id, &found);

        if (!found)
                return;
        if (--s->connected[i].n > 0)
                return;
        memmove(s->connected + i, s->connected + i + 1,
                (s->n_connected - i - 1) * sizeof(Connected));
        s->n_connected--;
}

static Attached *attached_lookup(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES]) {
        Attached key;
        memcpy(key.hash, hash, SECRET_HASH_BYTES);
        void **p = tfind(&key, &s->attached, attached_cmp);
        return p ? *p : NULL;
}

int sessions_attach(Sessions *s, Conn *c, const uint8_t hash[SECRET_HASH_BYTES], const char *vm_id) {
        Attached *a;

        if (c->attached && memcmp(c->session_hash, hash, SECRET_HASH_BYTES) == 0)
                return 0;
        (void) sessions_detach(s, c);

        a = attached_lookup(s, hash);
        if (!a) {
                a = calloc(1, sizeof *a);
                if (!a)
                        return -ENOMEM;
                memcpy(a->hash, hash, SECRET_HASH_BYTES);
                strncpy(a->vm_id, vm_id, VMM_VM_ID_MAX);
                void **p = tsearch(a, &s->attached, attached_cmp);
                if (!p) {
                        free(a);
                        return -ENOMEM;
                }
                s->n_attached++;
        }
        if (connected_inc(s, vm_id) < 0) {
                if (!a->conns) {
                        tdelete(a, &s->attached, attached_cmp);
                        s->n_attached--;
                        free(a);
                }
                return -ENOMEM;
        }
        c->att_prev = NULL;
        c->att_next = a->conns;
        if (a->conns)
                a->conns->att_prev = c;
        a->conns = c;
        a->n++;
        c->attached = true;
        memcpy(c->session_hash, hash, SECRET_HASH_BYTES);
        memset(c->vm_id, 0, sizeof c->vm_id);
        strncpy(c->vm_id, vm_id, VMM_VM_ID_MAX);
        return 0;
}

bool sessions_detach(Sessions *s, Conn *c) {
        if (!c->attached)
                return false;
        Attached *a = attached_lookup(s, c->session_hash);
        if (a) {
                if (c->att_prev)
                        c->att_prev->att_next = c->att_next;
                else
                        a->conns = c->att_next;
                if (c->att_next)
                        c->att_next->att_prev = c->att_prev;
                a->n--;
                if (!a->conns) {
                        tdelete(a, &s->attached, attached_cmp);
                        s->n_attached--;
                        free(a);
                }
        }
        connected_dec(s, c->vm_id);
        c->att_prev = c->att_next = NULL;
        c->attached = false;
        return true;
}

size_t sessions_end(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES]) {
        size_t n = 0;
        Attached *a;

        while ((a = attached_lookup(s, hash))) {
                Conn *c = a->conns;
                if (!c)
                        break;
                (void) sessions_detach(s, c);
                n++;
        }
        return n;
}

typedef struct VmCollect {
        const char *vm_id;
        uint8_t (*hashes)[SECRET_HASH_BYTES];
        size_t n, cap;
        bool oom;
} VmCollect;

static VmCollect *walk_collect;

static void collect_vm_action(const void *nodep, VISIT which, int depth) {
        const Attached *a = *(const Attached *const *) nodep;
        VmCollect *vc = walk_collect;
        if (which != postorder && which != leaf)
                return;
        if (strcmp(a->vm_id, vc->vm_id) != 0)
                return;
        if (vc->n == vc->cap) {
                size_t cap = vc->cap ? vc->cap * 2 : 8;
                void *n = realloc(vc->hashes, cap * SECRET_HASH_BYTES);
                if (!n) {
                        vc->oom = true;
                        return;
                }
                vc->hashes = n;
                vc->cap = cap;
        }
        memcpy(vc->hashes[vc->n++], a->hash, SECRET_HASH_BYTES);
}

size_t sessions_end_vm(Sessions *s, const char *vm_id) {
        VmCollect vc = { .vm_id = vm_id };
        size_t n = 0;

        walk_collect = &vc;
        twalk(s->attached, collect_vm_action);
        walk_collect = NULL;
        for (size_t i = 0; i < vc.n; i++)
                n += sessions_end(s, vc.hashes[i]);
        free(vc.hashes);
        return n;
}

bool sessions_is_attached(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES]) {
        return attached_lookup(s, hash) != NULL;
}

bool sessions_vm_connected(Sessions *s, const char *vm_id) {
        bool found;
        (void) connected_find(s, vm_id, &found);
        return found;
}

size_t sessions_connected_count(Sessions *s) {
        return s->n_connected;
}

int sessions_connected_foreach(Sessions *s, const char *after,
                               int (*f)(void *userdata, const char *vm_id), void *userdata) {
        size_t i = 0;
        bool found;

        if (after) {
                i = connected_find(s, after, &found);
                if (found)
                        i++;
        }
        for (; i < s->n_connected; i++) {
                /* f may not change the set: it only reads */
                int r = f(userdata, s->connected[i].vm_id);
                if (r != 0)
                        return r;
        }
        return 0;
}

typedef struct HashCollect {
        uint8_t *buf;
        size_t n, cap;
} HashCollect;

static HashCollect *walk_hashes;

static void collect_hash_action(const void *nodep, VISIT which, int depth) {
        const Attached *a = *(const Attached *const *) nodep;
        HashCollect *hc = walk_hashes;
        if (which != postorder && which != leaf)
                return;
        if (hc->n < hc->cap)
                memcpy(hc->buf + hc->n++ * SECRET_HASH_BYTES, a->hash, SECRET_HASH_BYTES);
}

int sessions_attached_hashes(Sessions *s, uint8_t **ret, size_t *ret_n) {
        HashCollect hc = { .cap = s->n_attached };

        hc.buf = malloc(MAX(hc.cap, (size_t) 1) * SECRET_HASH_BYTES);
        if (!hc.buf)
                return -ENOMEM;
        walk_hashes = &hc;
        twalk(s->attached, collect_hash_action);
        walk_hashes = NULL;
        *ret = hc.buf;
        *ret_n = hc.n;
        return 0;
}

Peer *sessions_peer_ref(Sessions *s, const struct sockaddr *sa) {
        Peer key = { 0 }, *p;

        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                key.family = AF_INET;
                memcpy(key.addr, &in->sin_addr, 4);
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                key.family = AF_INET6;
                memcpy(key.addr, &in6->sin6_addr, 16);
        } else
                key.family = (uint8_t) sa->sa_family;   /* AF_UNIX: one peer */

        void **f = tfind(&key, &s->peers, peer_cmp);
        if (f)
                p = *f;
        else {
                p = calloc(1, sizeof *p);
                if (!p)
                        return NULL;
                *p = key;
                if (!tsearch(p, &s->peers, peer_cmp)) {
                        free(p);
                        return NULL;
                }
        }
        p->n_ref++;
        p->conns++;
        return p;
}

void sessions_peer_unref(Sessions *s, Peer *p) {
        if (!p)
                return;
        p->conns--;
        if (--p->n_ref > 0)
                return;
        /* keep the failure window alive while it matters */
        if (p->fails > 0)
                return;
        tdelete(p, &s->peers, peer_cmp);
        free(p);
}

unsigned sessions_peer_conns(Peer *p) {
        return p->conns;
}

bool sessions_peer_limited(Peer *p, int64_t now, unsigned max_per_minute) {
        if (p->fails == 0)
                return false;
        if (now - p->fail_window_start >= 60000) {
                p->fails = 0;
                return false;
        }
        return p->fails >= max_per_minute;
}

void sessions_peer_failed(Peer *p, int64_t now) {
        if (p->fails == 0 || now - p->fail_window_start >= 60000) {
                p->fail_window_start = now;
                p->fails = 0;
        }
        p->fails++;
}

typedef struct PeerGc {
        Peer **dead;
        size_t n, cap;
        int64_t now;
} PeerGc;

static PeerGc *walk_gc;

static void gc_action(const void *nodep, VISIT which, int depth) {
        Peer *p = *(Peer *const *) nodep;
        PeerGc *gc = walk_gc;
        if (which != postorder && which != leaf)
                return;
        if (p->n_ref > 0 || (p->fails > 0 && gc->now - p->fail_window_start < 60000))
                return;
        if (gc->n < gc->cap)
                gc->dead[gc->n++] = p;
}

void sessions_peers_gc(Sessions *s, int64_t now) {
        PeerGc gc = { .cap = 4096, .now = now };

        gc.dead = malloc(gc.cap * sizeof(Peer *));
        if (!gc.dead)
                return;
        walk_gc = &gc;
        twalk(s->peers, gc_action);
        walk_gc = NULL;
        for (size_t i = 0; i < gc.n; i++) {
                tdelete(gc.dead[i], &s->peers, peer_cmp);
                free(gc.dead[i]);
        }
        free(gc.dead);
}

bool sessions_peer_log_allowed(Peer *p, int64_t now) {
        if (now - p->log_window_start >= 60000) {
                p->log_window_start = now;
                p->logged = 0;
        }
        if (p->logged == SESSIONS_LOG_PER_MINUTE)
                p->logged++;    /* say once that the rest is suppressed */
        else if (p->logged < SESSIONS_LOG_PER_MINUTE)
                return ++p->logged, true;
        return false;
}
