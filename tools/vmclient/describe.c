/* SPDX-License-Identifier: MIT */
/* `vmclient describe`: what the agent would send, without connecting. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "agent-config.h"
#include "agent.h"
#include "discover.h"
#include "shared/macro.h"
#include "tools/common/json.h"
#include "vmm/client.h"

static int print_json(const Description *d, const Metrics *m) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        unsigned what = description_present(d, DESC_ALL);
        int r = 0;

        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        r |= msgpack_pack_map(&pk, (uint32_t) __builtin_popcount(what) + !!m) ? -ENOMEM : 0;
        r |= description_pack(&pk, d, what);
        if (m) {
                r |= vmm_pack_str(&pk, "report");
                r |= msgpack_pack_map(&pk, metrics_count(m)) ? -ENOMEM : 0;
                r |= metrics_pack(&pk, m);
        }
        if (r == 0) {
                msgpack_zone *z = msgpack_zone_new(4096);
                msgpack_object o;
                if (!z || msgpack_unpack(sb.data, sb.size, NULL, z, &o) != MSGPACK_UNPACK_SUCCESS)
                        r = -ENOMEM;
                else {
                        r = json_print(stdout, &o, 0);
                        putchar('\n');
                }
                if (z)
                        msgpack_zone_free(z);
        }
        msgpack_sbuffer_destroy(&sb);
        return r;
}

static void print_table(const Description *d, const Metrics *m) {
        printf("vm_id:     %s\n", d->has_vm_id ? d->vm_id : "- (set vm_id: the hostname is no "
                                                            "valid id)");
        printf("ram:       %" PRIu64 " MiB\n", d->ram);
        printf("cpu:       %" PRIu64 "\n", d->cpu);
        printf("hostname:  %s\n", d->has_hostname ? d->hostname : "- (not a valid RFC 1123 "
                                                                   "name: left out)");
        if (d->has_os)
                printf("os:        %s %s\n", d->os_name, d->os_version);
        else
                printf("os:        - (no version in os-release: left out)\n");
        printf("ip:       ");
        for (size_t i = 0; i < d->n_ip; i++)
                printf(" %s", d->ip[i]);
        printf("%s\n", d->n_ip == 0 ? " -" : "");
        if (m) {
                if (m->has_load)
                        printf("load:      %.2f %.2f %.2f\n", m->load[0], m->load[1], m->load[2]);
                if (m->has_mem)
                        printf("memory:    %" PRIu64 " of %" PRIu64 " MiB used\n", m->mem_used,
                               m->mem_total);
                if (m->has_uptime)
                        printf("uptime:    %" PRIu64 " s\n", m->uptime);
        }
        if (d->n_disks == 0) {
                printf("disks:     -\n");
                return;
        }
        /* a table: device, id, size, where the id came from (and use) */
        size_t wname = strlen("DEVICE"), wid = strlen("DISK_ID");
        for (size_t i = 0; i < d->n_disks; i++) {
                wname = MAX(wname, strlen(d->disks[i].name));
                wid = MAX(wid, strlen(d->disks[i].id));
        }
        printf("\n%-*s  %-*s  %8s  %s%s\n", (int) wname, "DEVICE", (int) wid, "DISK_ID", "SIZE_GIB",
               m ? "USED_GIB  " : "", "ID_FROM");
        for (size_t i = 0; i < d->n_disks; i++) {
                char used[32] = "-";
                for (size_t k = 0; m && k < m->n_used; k++)
                        if (strcmp(m->used[k].id, d->disks[i].id) == 0)
                                snprintf(used, sizeof used, "%" PRIu64, m->used[k].used);
                printf("%-*s  %-*s  %8" PRIu64 "  ", (int) wname, d->disks[i].name, (int) wid,
                       d->disks[i].id, d->disks[i].size);
                if (m)
                        printf("%8s  ", used);
                printf("%s\n", d->disks[i].id_source);
        }
}

int vmclient_describe(int argc, char **argv, bool json) {
        _cleanup_(agent_config_done) AgentConfig cfg = { 0 };
        AgentArgs args;
        int r = agent_config_load(AGENT_MODE_DESCRIBE, argc, argv, &cfg, &args);
        if (r >= 0)
                return r;
        _cleanup_free_ Description *d = calloc(1, sizeof(Description));
        _cleanup_free_ Metrics *m = calloc(1, sizeof(Metrics));
        if (!d || !m) {
                fprintf(stderr, "vmclient: out of memory\n");
                return 1;
        }
        DiscoverOptions o = { .vm_id = cfg.vm_id, .all_disks = cfg.all_disks };
        r = discover(&o, d);
        if (r < 0) {
                fprintf(stderr, "vmclient: cannot describe this system (%s/proc/meminfo, "
                        "CPUs online): %s\n", strcmp(discover_root(), "/") == 0 ? "" :
                        discover_root(), strerror(-r));
                return 1;
        }
        if (args.report)
                metrics_collect(NULL, d, m);
        if (json || args.json) {
                r = print_json(d, args.report ? m : NULL);
                if (r < 0) {
                        fprintf(stderr, "vmclient: %s\n", strerror(-r));
                        return 1;
                }
        } else
                print_table(d, args.report ? m : NULL);
        return 0;
}
