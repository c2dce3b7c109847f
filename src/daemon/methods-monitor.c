/* SPDX-License-Identifier: MIT */
/* vm.report and vm.monitor, and the VM status announcements (see
 * methods-monitor.h). Reports live in memory only: a restart forgets them. */
#include <errno.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"
#include "methods-monitor.h"
#include "shared/clock.h"
#include "shared/mpout.h"

#define STATUS_TICK_USEC (1000 * 1000ull)
#define REPORT_MIN_MS 1000              /* one report a second per VM */

typedef struct Sample {
        int64_t time;
        float load1;
        uint64_t mem_used, mem_total;
        uint64_t disk_used;             /* GiB, the sum over its disks */
} Sample;

typedef struct DiskUsed {
        char id[VMM_DISK_ID_MAX + 1];
        uint64_t used;
} DiskUsed;

typedef struct Entry {
        char vm_id[VMM_VM_ID_MAX + 1];
        bool on;                        /* the status last announced */
        int64_t last_at;                /* the last report; 0 none */
        /* the last report */
        bool has_uptime, has_load, has_mem_total, has_mem_used;
        uint64_t uptime, mem_total, mem_used;
        double load[3];
        uint32_t n_disks_used;
        DiskUsed *disks_used;
        /* one sample a minute, the newest at hist[(head + n - 1) % N] */
        Sample hist[MONITOR_HISTORY];
        unsigned head, n;
} Entry;

struct Monitor {
        Manager *manager;
        void *entries;                  /* tsearch tree of Entry by vm_id */
        uint64_t n_entries;
        sd_event_source *timer;
};

static int entry_cmp(const void *a, const void *b) {
        return strcmp(((const Entry *) a)->vm_id, ((const Entry *) b)->vm_id);
}

static Entry *entry_find(Monitor *mon, const char *vm_id) {
        Entry key;
        void **p;

        snprintf(key.vm_id, sizeof key.vm_id, "%s", vm_id);
        p = tfind(&key, &mon->entries, entry_cmp);
        return p ? *p : NULL;
}

static Entry *entry_get(Monitor *mon, const char *vm_id) {
        Entry *e = entry_find(mon, vm_id);

        if (e)
                return e;
        e = calloc(1, sizeof *e);
        if (!e)
                return NULL;
        snprintf(e->vm_id, sizeof e->vm_id, "%s", vm_id);
        if (!tsearch(e, &mon->entries, entry_cmp)) {
                free(e);
                return NULL;
        }
        mon->n_entries++;
        return e;
}

static void entry_free(void *p) {
        Entry *e = p;
        free(e->disks_used);
        free(e);
}

static void entry_remove(Monitor *mon, Entry *e) {
        tdelete(e, &mon->entries, entry_cmp);
        mon->n_entries--;
        entry_free(e);
}

int64_t monitor_last_report(Monitor *mon, const char *vm_id) {
        Entry *e = mon ? entry_find(mon, vm_id) : NULL;
        return e ? e->last_at : 0;
}

void monitor_forget(Monitor *mon, const char *vm_id) {
        Entry *e = mon ? entry_find(mon, vm_id) : NULL;
        if (e)
                entry_remove(mon, e);
}

typedef struct Usage {
        uint64_t bytes;
} Usage;

static void usage_one(const void *nodep, VISIT which, void *userdata) {
        const Entry *e = *(const Entry *const *) nodep;
        Usage *u = userdata;

        if (which == postorder || which == leaf)
                u->bytes += sizeof *e + e->n_disks_used * sizeof(DiskUsed) + 4 * sizeof(void *);
}

void monitor_usage(Monitor *mon, uint64_t *ret_bytes, uint64_t *ret_vms) {
        Usage u = { 0 };

        twalk_r(mon->entries, usage_one, &u);
        *ret_bytes = u.bytes;
        *ret_vms = mon->n_entries;
}

/* ---- status ---- */

static void announce(Monitor *mon, Entry *e, bool on) {
        e->on = on;
        events_emit(mon->manager->events, &(Event) { .type = "vm.status", .vm_id = e->vm_id,
                                                     .status = on ? "on" : "off" });
}

static int connected_one(void *userdata, const char *vm_id) {
        Monitor *mon = userdata;
        Entry *e = entry_get(mon, vm_id);

        if (e && !e->on)
                announce(mon, e, true);
        return 0;
}

typedef struct Sweep {
        Monitor *mon;
        int64_t now, timeout;
        Entry **gone;
        size_t n_gone, cap_gone;
} Sweep;

static void sweep_one(const void *nodep, VISIT which, void *userdata) {
        Entry *e = *(Entry *const *) nodep;
        Sweep *s = userdata;
        bool fresh;

        if (which != postorder && which != leaf)
                return;
        fresh = e->last_at > 0 && s->now - e->last_at < s->timeout;
        if (fresh || sessions_vm_connected(s->mon->manager->sessions, e->vm_id))
                return;
        if (e->on)
                announce(s->mon, e, false);
        if (e->last_at == 0 && s->n_gone < s->cap_gone)
                s->gone[s->n_gone++] = e;       /* nothing to keep */
}

static int on_tick(sd_event_source *src, uint64_t usec, void *userdata) {
        Monitor *mon = userdata;
        Manager *m = mon->manager;
        Sweep s = { .mon = mon, .now = now_ms(),
                    .timeout = (int64_t) m->config.heartbeat_timeout_s * 1000, .cap_gone = 1024 };

        (void) sessions_connected_foreach(m->sessions, NULL, connected_one, mon);
        s.gone = malloc(s.cap_gone * sizeof *s.gone);
        if (s.gone) {
                twalk_r(mon->entries, sweep_one, &s);
                for (size_t i = 0; i < s.n_gone; i++)
                        entry_remove(mon, s.gone[i]);
                free(s.gone);
        }
        (void) sd_event_source_set_time_relative(src, STATUS_TICK_USEC);
        return 0;
}

int monitor_new(Manager *m, Monitor **ret) {
        Monitor *mon = calloc(1, sizeof *mon);
        int r;

        if (!mon)
                return -ENOMEM;
        mon->manager = m;
        r = sd_event_add_time_relative(m->event, &mon->timer, CLOCK_MONOTONIC, STATUS_TICK_USEC,
                                       0, on_tick, mon);
        if (r < 0) {
                free(mon);
                return r;
        }
        (void) sd_event_source_set_enabled(mon->timer, SD_EVENT_ON);
        *ret = mon;
        return 0;
}

Monitor *monitor_free(Monitor *mon) {
        if (!mon)
                return NULL;
        mon->timer = sd_event_source_disable_unref(mon->timer);
        tdestroy(mon->entries, entry_free);
        free(mon);
        return NULL;
}

/* ---- vm.report ---- */

bool check_os_param(const msgpack_object *o, char *msg, size_t len) {
        if (o->type == MSGPACK_OBJECT_NIL)
                return true;
        if (o->type != MSGPACK_OBJECT_MAP || o->via.map.size != 2)
                goto bad;
        bool name = false, version = false;
        for (uint32_t i = 0; i < 2; i++) {
                const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
                bool *seen = streq_n(k->via.str.ptr, k->via.str.size, "name") ? &name :
                             streq_n(k->via.str.ptr, k->via.str.size, "version") ? &version : NULL;
                if (!seen || v->type != MSGPACK_OBJECT_STR || v->via.str.size > VMM_OS_NAME_MAX ||
                    !valid_text_line(v->via.str.ptr, v->via.str.size) ||
                    (seen == &name && v->via.str.size == 0))
                        goto bad;
                *seen = true;
        }
        if (name && version)
                return true;
bad:
        snprintf(msg, len, "expected nil or {\"name\": 1..64 bytes, \"version\": 0..64 bytes} "
                 "of text");
        return false;
}

static bool number(const msgpack_object *o, double *ret) {
        switch (o->type) {
        case MSGPACK_OBJECT_POSITIVE_INTEGER:
                *ret = (double) o->via.u64;
                return true;
        case MSGPACK_OBJECT_FLOAT32:
        case MSGPACK_OBJECT_FLOAT64:
                *ret = o->via.f64;
                return *ret >= 0 && *ret < 1e9;
        default:
                return false;
        }
}

static bool check_load(const msgpack_object *o, char *msg, size_t len) {
        double d;

        if (o->type == MSGPACK_OBJECT_ARRAY && o->via.array.size == 3 &&
            number(&o->via.array.ptr[0], &d) && number(&o->via.array.ptr[1], &d) &&
            number(&o->via.array.ptr[2], &d))
                return true;
        snprintf(msg, len, "expected [l1, l5, l15]: three numbers >= 0");
        return false;
}

static bool check_disks_used(const msgpack_object *o, char *msg, size_t len) {
        if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size > VMM_MAX_DISKS)
                goto bad;
        for (uint32_t i = 0; i < o->via.array.size; i++) {
                const msgpack_object *d = &o->via.array.ptr[i];
                bool id = false, used = false;
                if (d->type != MSGPACK_OBJECT_MAP || d->via.map.size != 2)
                        goto bad;
                for (uint32_t j = 0; j < 2; j++) {
                        const msgpack_object *k = &d->via.map.ptr[j].key;
                        const msgpack_object *v = &d->via.map.ptr[j].val;
                        if (streq_n(k->via.str.ptr, k->via.str.size, "id") && !id &&
                            v->type == MSGPACK_OBJECT_STR &&
                            valid_disk_id(v->via.str.ptr, v->via.str.size))
                                id = true;
                        else if (streq_n(k->via.str.ptr, k->via.str.size, "used") && !used &&
                                 v->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
                                 v->via.u64 <= VMM_DISK_SIZE_MAX)
                                used = true;
                        else
                                goto bad;
                }
        }
        return true;
bad:
        snprintf(msg, len, "expected at most %d maps {\"id\": a disk id, \"used\": GiB}",
                 VMM_MAX_DISKS);
        return false;
}

typedef struct ReportParams {
        ParamStr hostname;
        ParamList ip;
        ParamAny os, load, disks_used;
        ParamUint uptime, mem_total, mem_used;
} ReportParams;

static const ParamField report_fields[] = {
        { "hostname", PARAM_STR, offsetof(ReportParams, hostname), false, 1, VMM_HOSTNAME_MAX,
          valid_hostname, NULL, 0, true, NULL },
        { "ip", PARAM_STRS, offsetof(ReportParams, ip), false, 2, STORE_IP_LEN - 1, valid_ip,
          NULL, VMM_IP_MAX, false, NULL },
        { "os", PARAM_ANY, offsetof(ReportParams, os), false, 0, 0, NULL, NULL, 0, false,
          check_os_param },
        { "uptime", PARAM_UINT, offsetof(ReportParams, uptime), false, 0, UINT32_MAX * 1000ull,
          NULL, NULL, 0, false, NULL },
        { "load", PARAM_ANY, offsetof(ReportParams, load), false, 0, 0, NULL, NULL, 0, false,
          check_load },
        { "mem_total", PARAM_UINT, offsetof(ReportParams, mem_total), false, 0, UINT32_MAX,
          NULL, NULL, 0, false, NULL },
        { "mem_used", PARAM_UINT, offsetof(ReportParams, mem_used), false, 0, UINT32_MAX, NULL,
          NULL, 0, false, NULL },
        { "disks_used", PARAM_ANY, offsetof(ReportParams, disks_used), false, 0, 0, NULL, NULL,
          0, false, check_disks_used },
};

typedef struct ReportState {
        StoreVm vm;
        bool changed;                   /* hostname, ip or os differ from the record */
} ReportState;

void vm_apply_meta(StoreVm *vm, const ParamStr *hostname, const ParamList *ip,
                   const ParamAny *os) {
        if (hostname && hostname->set) {
                if (hostname->nil)
                        vm->hostname[0] = '\0';
                else
                        pstr_copy(vm->hostname, sizeof vm->hostname, hostname);
        }
        if (ip && ip->set) {
                vm->n_ip = ip->nil ? 0 : ip->n;
                for (uint32_t i = 0; i < vm->n_ip; i++) {
                        const msgpack_object *o = &ip->items[i];
                        size_t n = MIN(o->via.str.size, sizeof vm->ip[i] - 1);
                        memcpy(vm->ip[i], o->via.str.ptr, n);
                        vm->ip[i][n] = '\0';
                }
        }
        if (os && os->set) {
                vm->has_os = os->o->type == MSGPACK_OBJECT_MAP;
                vm->os_name[0] = vm->os_version[0] = '\0';
                for (uint32_t i = 0; vm->has_os && i < os->o->via.map.size; i++) {
                        const msgpack_object *k = &os->o->via.map.ptr[i].key;
                        const msgpack_object *v = &os->o->via.map.ptr[i].val;
                        char *dst = streq_n(k->via.str.ptr, k->via.str.size, "name") ? vm->os_name
                                                                                      : vm->os_version;
                        memcpy(dst, v->via.str.ptr, v->via.str.size);
                        dst[v->via.str.size] = '\0';
                }
        }
}

static bool vm_meta_equal(const StoreVm *a, const StoreVm *b) {
        if (strcmp(a->hostname, b->hostname) != 0 || a->n_ip != b->n_ip ||
            a->has_os != b->has_os || strcmp(a->os_name, b->os_name) != 0 ||
            strcmp(a->os_version, b->os_version) != 0)
                return false;
        for (uint32_t i = 0; i < a->n_ip; i++)
                if (strcmp(a->ip[i], b->ip[i]) != 0)
                        return false;
        return true;
}

static void keep_report(Monitor *mon, const char *vm_id, const ReportParams *p, int64_t now) {
        Entry *e = entry_get(mon, vm_id);
        Sample s = { .time = now };

        if (!e)
                return;
        e->last_at = now;
        e->has_uptime = p->uptime.set;
        e->uptime = p->uptime.v;
        e->has_mem_total = p->mem_total.set;
        e->mem_total = p->mem_total.v;
        e->has_mem_used = p->mem_used.set;
        e->mem_used = p->mem_used.v;
        e->has_load = p->load.set;
        for (unsigned i = 0; i < 3 && p->load.set; i++)
                (void) number(&p->load.o->via.array.ptr[i], &e->load[i]);
        uint32_t n = p->disks_used.set ? p->disks_used.o->via.array.size : 0;
        DiskUsed *d = n ? calloc(n, sizeof *d) : NULL;
        free(e->disks_used);
        e->disks_used = d;
        e->n_disks_used = d ? n : 0;
        for (uint32_t i = 0; d && i < n; i++) {
                const msgpack_object_map *mp = &p->disks_used.o->via.array.ptr[i].via.map;
                for (uint32_t j = 0; j < mp->size; j++) {
                        const msgpack_object *k = &mp->ptr[j].key, *v = &mp->ptr[j].val;
                        if (streq_n(k->via.str.ptr, k->via.str.size, "id"))
                                memcpy(d[i].id, v->via.str.ptr, v->via.str.size);
                        else
                                d[i].used = v->via.u64;
                }
                s.disk_used += d[i].used;
        }
        s.load1 = (float) e->load[0];
        s.mem_used = e->mem_used;
        s.mem_total = e->mem_total;
        /* one sample a minute: the newest report of each minute */
        Sample *newest = e->n ? &e->hist[(e->head + e->n - 1) % MONITOR_HISTORY] : NULL;
        if (newest && newest->time / 60000 == now / 60000)
                *newest = s;
        else if (e->n < MONITOR_HISTORY)
                e->hist[(e->head + e->n++) % MONITOR_HISTORY] = s;
        else {
                e->hist[e->head] = s;
                e->head = (e->head + 1) % MONITOR_HISTORY;
        }
        if (!e->on)
                announce(mon, e, true);
}

static int report_start(Request *r) {
        ReportParams *p = PARAMS(r, ReportParams);
        ReportState *st = STATE(r, ReportState);
        Monitor *mon = r->manager->monitor;
        int64_t now = now_ms();
        int q;

        Entry *e = entry_find(mon, r->caller.vm_id);
        if (e && e->last_at > 0 && now - e->last_at < REPORT_MIN_MS)
                return rpc_fail(r, VMM_E_RATE_LIMITED,
                                "at most one report a second; this one is dropped");
        q = read_vm(r, r->caller.vm_id, &st->vm);
        if (q == -ENOENT)
                return rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' no longer exists", r->caller.vm_id);
        if (q < 0)
                return q;
        keep_report(mon, r->caller.vm_id, p, now);
        StoreVm *tmp = malloc(sizeof *tmp);
        if (!tmp)
                return -ENOMEM;
        store_vm_copy(tmp, &st->vm);
        vm_apply_meta(tmp, &p->hostname, &p->ip, &p->os);
        st->changed = !vm_meta_equal(tmp, &st->vm);
        free(tmp);
        return RPC_NEXT;
}

static int report_write(Request *r, StoreTxn *t) {
        ReportParams *p = PARAMS(r, ReportParams);
        ReportState *st = STATE(r, ReportState);
        int q;

        if (!st->changed)
                return 0;
        q = store_vm_get(t, r->caller.vm_id, &st->vm);
        if (q < 0)
                return q;
        vm_apply_meta(&st->vm, &p->hostname, &p->ip, &p->os);
        st->vm.updated_at = now_ms();
        q = store_vm_put_same_disks(t, &st->vm);
        if (q < 0)
                return q;
        return events_append(r, t, &(Event) { .type = "vm.updated", .vm_id = r->caller.vm_id });
}

static int report_done(Request *r) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        int q;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        q = pack_booking_result(r->manager, &pk, r->caller.vm_id);
        if (q < 0) {
                msgpack_sbuffer_destroy(&sb);
                return q;
        }
        return reply_packed(r, &sb, false);
}

/* ---- vm.monitor ---- */

typedef struct VmIdParams {
        ParamStr vm_id;
} VmIdParams;

static const ParamField monitor_fields[] = {
        { "vm_id", PARAM_STR, offsetof(VmIdParams, vm_id), true, 1, VMM_VM_ID_MAX, valid_vm_id,
          NULL, 0, false, NULL },
};

static int pack_report(msgpack_packer *pk, const Entry *e) {
        uint32_t n = 1 + e->has_uptime + e->has_load + e->has_mem_total + e->has_mem_used;

        if (msgpack_pack_map(pk, n + 1) || mp_kv_i64(pk, "time", e->last_at) ||
            (e->has_uptime && mp_kv_u64(pk, "uptime", e->uptime)) ||
            (e->has_mem_total && mp_kv_u64(pk, "mem_total", e->mem_total)) ||
            (e->has_mem_used && mp_kv_u64(pk, "mem_used", e->mem_used)))
                return -ENOMEM;
        if (e->has_load && (mp_str(pk, "load") || msgpack_pack_array(pk, 3) ||
                            msgpack_pack_double(pk, e->load[0]) ||
                            msgpack_pack_double(pk, e->load[1]) ||
                            msgpack_pack_double(pk, e->load[2])))
                return -ENOMEM;
        if (mp_str(pk, "disks_used") || msgpack_pack_array(pk, e->n_disks_used))
                return -ENOMEM;
        for (uint32_t i = 0; i < e->n_disks_used; i++)
                if (msgpack_pack_map(pk, 2) || mp_kv_str(pk, "id", e->disks_used[i].id) ||
                    mp_kv_u64(pk, "used", e->disks_used[i].used))
                        return -ENOMEM;
        return 0;
}

static int monitor_start(Request *r) {
        VmIdParams *p = PARAMS(r, VmIdParams);
        Manager *m = r->manager;
        char vm_id[VMM_VM_ID_MAX + 1];
        msgpack_sbuffer sb;
        msgpack_packer pk;
        StoreVm *vm;
        int q;

        pstr_copy(vm_id, sizeof vm_id, &p->vm_id);
        vm = malloc(sizeof *vm);
        if (!vm)
                return -ENOMEM;
        q = read_vm(r, vm_id, vm);
        if (q == -ENOENT) {
                free(vm);
                return rpc_fail(r, VMM_E_NOT_FOUND, "VM '%s' does not exist", vm_id);
        }
        if (q < 0) {
                free(vm);
                return q;
        }
        Entry *e = entry_find(m->monitor, vm_id);
        int64_t horizon = now_ms() - 3600 * 1000;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bool fail = msgpack_pack_map(&pk, 5) || mp_kv_str(&pk, "vm_id", vm_id) ||
                    mp_kv_str(&pk, "status", vm_status(m, vm)) ||
                    (e && e->last_at ? mp_kv_i64(&pk, "reported_at", e->last_at)
                                     : mp_kv_nil(&pk, "reported_at")) ||
                    mp_str(&pk, "report") ||
                    (e && e->last_at ? pack_report(&pk, e) < 0 : msgpack_pack_nil(&pk) != 0);
        free(vm);
        unsigned n = 0;
        for (unsigned i = 0; e && i < e->n; i++)
                n += e->hist[(e->head + i) % MONITOR_HISTORY].time >= horizon;
        fail = fail || mp_str(&pk, "history") || msgpack_pack_array(&pk, n);
        for (unsigned i = 0; !fail && e && i < e->n; i++) {
                const Sample *s = &e->hist[(e->head + i) % MONITOR_HISTORY];
                if (s->time < horizon)
                        continue;
                fail = msgpack_pack_map(&pk, 5) || mp_kv_i64(&pk, "time", s->time) ||
                       mp_str(&pk, "load") || msgpack_pack_double(&pk, s->load1) ||
                       mp_kv_u64(&pk, "mem_used", s->mem_used) ||
                       mp_kv_u64(&pk, "mem_total", s->mem_total) ||
                       mp_kv_u64(&pk, "disk_used", s->disk_used);
        }
        return reply_packed(r, &sb, fail);
}

static const Method m_report = {
        .name = VMM_M_VM_REPORT, .flags = ON_TCP, .callers = CALLER_VM,
        .fields = FIELDS(report_fields), .params_size = sizeof(ReportParams),
        .state_size = sizeof(ReportState),
        .start = report_start, .write = report_write, .done = report_done,
};
static const Method m_monitor = {
        .name = VMM_M_VM_MONITOR, .flags = ON_BOTH, .callers = CALLER_USER | CALLER_PEER,
        .min_role = STORE_ROLE_VIEWER, .fields = FIELDS(monitor_fields),
        .params_size = sizeof(VmIdParams), .start = monitor_start,
};

METHOD_ROWS(monitor, &m_report, &m_monitor);
