/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sessions.h"
#include "shared/macro.h"

/* An attached session: the links attached to it. */
typedef struct Attached {
        uint8_t hash[SECRET_HASH_BYTES];
        PrincipalKind kind;
        char name[STORE_NAME_MAX + 1];
        SessionLink *links;
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
        uint8_t prefix;         /* IPv6: the bits that count */
        unsigned conns;
        unsigned n_ref;
        unsigned hashes;
        int64_t fail_window_start;
        unsigned fails;
        int64_t reg_window_start;
        unsigned regs;
        int64_t log_window_start;
        unsigned logged;
        char text[INET6_ADDRSTRLEN + 8];
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

/* ---- connected VMs ---- */

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
        snprintf(s->connected[i].vm_id, sizeof s->connected[i].vm_id, "%s", vm_id);
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

/* ---- attachments ---- */

static Attached *attached_lookup(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES]) {
        Attached key;
        memcpy(key.hash, hash, SECRET_HASH_BYTES);
        void **p = tfind(&key, &s->attached, attached_cmp);
        return p ? *p : NULL;
}

int sessions_attach(Sessions *s, SessionLink *l, const uint8_t hash[SECRET_HASH_BYTES],
                    PrincipalKind kind, const char *name) {
        Attached *a;

        if (l->attached && memcmp(l->hash, hash, SECRET_HASH_BYTES) == 0)
                return 0;
        (void) sessions_detach(s, l);

        a = attached_lookup(s, hash);
        if (!a) {
                a = calloc(1, sizeof *a);
                if (!a)
                        return -ENOMEM;
                memcpy(a->hash, hash, SECRET_HASH_BYTES);
                a->kind = kind;
                snprintf(a->name, sizeof a->name, "%s", name);
                if (!tsearch(a, &s->attached, attached_cmp)) {
                        free(a);
                        return -ENOMEM;
                }
                s->n_attached++;
        }
        if (kind == PRINCIPAL_VM && connected_inc(s, name) < 0) {
                if (!a->links) {
                        tdelete(a, &s->attached, attached_cmp);
                        s->n_attached--;
                        free(a);
                }
                return -ENOMEM;
        }
        l->prev = NULL;
        l->next = a->links;
        if (a->links)
                a->links->prev = l;
        a->links = l;
        a->n++;
        l->attached = true;
        l->kind = kind;
        memcpy(l->hash, hash, SECRET_HASH_BYTES);
        snprintf(l->name, sizeof l->name, "%s", name);
        return 0;
}

bool sessions_detach(Sessions *s, SessionLink *l) {
        if (!l->attached)
                return false;
        Attached *a = attached_lookup(s, l->hash);
        if (a) {
                if (l->prev)
                        l->prev->next = l->next;
                else
                        a->links = l->next;
                if (l->next)
                        l->next->prev = l->prev;
                a->n--;
                if (!a->links) {
                        tdelete(a, &s->attached, attached_cmp);
                        s->n_attached--;
                        free(a);
                }
        }
        if (l->kind == PRINCIPAL_VM)
                connected_dec(s, l->name);
        l->prev = l->next = NULL;
        l->attached = false;
        return true;
}

size_t sessions_end(Sessions *s, const uint8_t hash[SECRET_HASH_BYTES], SessionLinkFunc f,
                    void *userdata) {
        size_t n = 0;
        Attached *a;

        while ((a = attached_lookup(s, hash)) && a->links) {
                SessionLink *l = a->links;
                (void) sessions_detach(s, l);
                if (f)
                        f(l, userdata);
                n++;
        }
        return n;
}

typedef struct Collect {
        PrincipalKind kind;
        const char *name;
        uint8_t *hashes;        /* n * SECRET_HASH_BYTES */
        size_t n, cap;
        bool oom;
} Collect;

static void collect_action(const void *nodep, VISIT which, void *userdata) {
        const Attached *a = *(const Attached *const *) nodep;
        Collect *c = userdata;

        if (which != postorder && which != leaf)
                return;
        if (c->name && (a->kind != c->kind || strcmp(a->name, c->name) != 0))
                return;
        if (c->n == c->cap) {
                size_t cap = c->cap ? c->cap * 2 : 8;
                void *p = realloc(c->hashes, cap * SECRET_HASH_BYTES);
                if (!p) {
                        c->oom = true;
                        return;
                }
                c->hashes = p;
                c->cap = cap;
        }
        memcpy(c->hashes + c->n++ * SECRET_HASH_BYTES, a->hash, SECRET_HASH_BYTES);
}

size_t sessions_end_owner(Sessions *s, PrincipalKind kind, const char *name, SessionLinkFunc f,
                          void *userdata) {
        Collect c = { .kind = kind, .name = name };
        size_t n = 0;

        twalk_r(s->attached, collect_action, &c);
        for (size_t i = 0; i < c.n; i++)
                n += sessions_end(s, c.hashes + i * SECRET_HASH_BYTES, f, userdata);
        free(c.hashes);
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

static int hash_cmp(const void *a, const void *b) {
        return memcmp(a, b, SECRET_HASH_BYTES);
}

int sessions_attached_hashes(Sessions *s, uint8_t **ret, size_t *ret_n) {
        Collect c = { 0 };

        twalk_r(s->attached, collect_action, &c);
        if (c.oom) {
                free(c.hashes);
                return -ENOMEM;
        }
        if (c.n > 1)
                qsort(c.hashes, c.n, SECRET_HASH_BYTES, hash_cmp);
        *ret = c.hashes;
        *ret_n = c.n;
        return 0;
}

/* ---- peers ---- */

/* The key of an address: IPv4 (also when mapped into IPv6), IPv6 cut to
 * its prefix, or one key per other family. */
static void peer_key(const struct sockaddr *sa, unsigned v6_prefix, Peer *key) {
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

        *key = (Peer) { 0 };
        if (sa->sa_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) sa;
                key->family = AF_INET;
                memcpy(key->addr, &in->sin_addr, 4);
        } else if (sa->sa_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) sa;
                const uint8_t *a = in6->sin6_addr.s6_addr;
                if (memcmp(a, mapped, sizeof mapped) == 0) {
                        key->family = AF_INET;
                        memcpy(key->addr, a + 12, 4);
                        return;
                }
                key->family = AF_INET6;
                v6_prefix = MIN(MAX(v6_prefix, 1u), 128u);
                for (unsigned i = 0; i < 16; i++) {
                        unsigned bits = v6_prefix > i * 8 ? MIN(v6_prefix - i * 8, 8u) : 0;
                        key->addr[i] = a[i] & (uint8_t) (0xff00u >> bits);
                }
                key->prefix = (uint8_t) v6_prefix;
        } else
                key->family = (uint8_t) sa->sa_family;   /* AF_UNIX: one peer */
}

static void peer_text(Peer *p) {
        if (p->family == AF_INET)
                (void) inet_ntop(AF_INET, p->addr, p->text, sizeof p->text);
        else if (p->family == AF_INET6) {
                char a[INET6_ADDRSTRLEN];
                (void) inet_ntop(AF_INET6, p->addr, a, sizeof a);
                snprintf(p->text, sizeof p->text, "%s/%u", a, p->prefix);
        } else
                snprintf(p->text, sizeof p->text, "unix");
}

Peer *sessions_peer_get(Sessions *s, const struct sockaddr *sa, unsigned v6_prefix) {
        Peer key, *p;

        peer_key(sa, v6_prefix, &key);
        void **f = tfind(&key, &s->peers, peer_cmp);
        if (f)
                p = *f;
        else {
                p = calloc(1, sizeof *p);
                if (!p)
                        return NULL;
                p->family = key.family;
                memcpy(p->addr, key.addr, sizeof p->addr);
                p->prefix = key.prefix;
                peer_text(p);
                if (!tsearch(p, &s->peers, peer_cmp)) {
                        free(p);
                        return NULL;
                }
        }
        p->n_ref++;
        return p;
}

int sessions_peer_get_text(Sessions *s, const char *addr, size_t len, unsigned v6_prefix,
                           Peer **ret) {
        char buf[INET6_ADDRSTRLEN + 1];
        struct sockaddr_storage ss = { 0 };

        if (len == 0 || len >= sizeof buf)
                return -EINVAL;
        memcpy(buf, addr, len);
        buf[len] = '\0';
        if (memchr(buf, ':', len)) {
                struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &ss;
                in6->sin6_family = AF_INET6;
                if (inet_pton(AF_INET6, buf, &in6->sin6_addr) != 1)
                        return -EINVAL;
        } else {
                struct sockaddr_in *in = (struct sockaddr_in *) &ss;
                in->sin_family = AF_INET;
                if (inet_pton(AF_INET, buf, &in->sin_addr) != 1)
                        return -EINVAL;
        }
        *ret = sessions_peer_get(s, (struct sockaddr *) &ss, v6_prefix);
        return *ret ? 0 : -ENOMEM;
}

static bool peer_idle(Peer *p, int64_t now) {
        return p->n_ref == 0 && p->hashes == 0 &&
               (p->fails == 0 || now - p->fail_window_start >= 60000) &&
               (p->regs == 0 || now - p->reg_window_start >= 60000);
}

void sessions_peer_put(Sessions *s, Peer *p) {
        if (!p)
                return;
        p->n_ref--;
        /* keep the windows alive while they matter (peers_gc forgets them) */
        if (p->n_ref > 0 || p->fails > 0 || p->regs > 0 || p->hashes > 0)
                return;
        tdelete(p, &s->peers, peer_cmp);
        free(p);
}

const char *sessions_peer_address(Peer *p) {
        return p->text;
}

void sessions_peer_conn_add(Peer *p) {
        p->conns++;
}

void sessions_peer_conn_remove(Peer *p) {
        if (p->conns > 0)
                p->conns--;
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

bool sessions_peer_register(Peer *p, int64_t now, unsigned max_per_minute) {
        if (p->regs == 0 || now - p->reg_window_start >= 60000) {
                p->reg_window_start = now;
                p->regs = 0;
        }
        if (p->regs >= max_per_minute)
                return false;
        p->regs++;
        return true;
}

bool sessions_peer_hash_begin(Peer *p, unsigned max) {
        if (p->hashes >= max)
                return false;
        p->hashes++;
        return true;
}

void sessions_peer_hash_end(Peer *p) {
        if (p->hashes > 0)
                p->hashes--;
}

typedef struct PeerGc {
        Peer **dead;
        size_t n, cap;
        int64_t now;
} PeerGc;

static void gc_action(const void *nodep, VISIT which, void *userdata) {
        Peer *p = *(Peer *const *) nodep;
        PeerGc *gc = userdata;

        if (which != postorder && which != leaf)
                return;
        if (peer_idle(p, gc->now) && gc->n < gc->cap)
                gc->dead[gc->n++] = p;
}

void sessions_peers_gc(Sessions *s, int64_t now) {
        PeerGc gc = { .cap = 4096, .now = now };

        gc.dead = malloc(gc.cap * sizeof(Peer *));
        if (!gc.dead)
                return;
        twalk_r(s->peers, gc_action, &gc);
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
