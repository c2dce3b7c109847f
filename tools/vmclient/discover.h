/* SPDX-License-Identifier: MIT */
/* What a VM can say about itself without typing: RAM, CPUs, disks, hostname,
 * IP addresses, OS (the description sent with register/vm.add/vm.update),
 * and the figures of vm.report (load, memory, disk usage, uptime).
 *
 * Everything is read below a root directory, "/" normally. Tests point it at
 * a fake tree with VMCLIENT_ROOT; a fake root cannot fake getifaddrs(), so
 * there the addresses come from the file ROOT/ip-addresses (one address per
 * line, filtered like the real ones). */
#pragma once

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "vmm/protocol.h"

#define DISCOVER_OS_FIELD_MAX 64

typedef struct DiskInfo {
        char name[64];                  /* kernel name: vda, sdb, nvme0n1 */
        char id[VMM_DISK_ID_MAX + 1];
        const char *id_source;          /* the sysfs file the id came from, or "name" */
        uint64_t size;                  /* GiB, at least 1 */
} DiskInfo;

typedef struct Description {
        bool has_vm_id;
        char vm_id[VMM_VM_ID_MAX + 1];
        uint64_t ram;                   /* MiB; 0: unknown (a record not described) */
        uint64_t cpu;
        bool has_hostname;
        char hostname[VMM_HOSTNAME_MAX + 1];
        size_t n_disks;
        DiskInfo disks[VMM_MAX_DISKS];
        size_t n_ip;
        char ip[VMM_IP_MAX][INET6_ADDRSTRLEN];
        bool has_os;
        char os_name[DISCOVER_OS_FIELD_MAX + 1];
        char os_version[DISCOVER_OS_FIELD_MAX + 1];
} Description;

typedef struct DiscoverOptions {
        const char *root;               /* NULL: VMCLIENT_ROOT, else "/" */
        const char *vm_id;              /* NULL: the short hostname when it is a valid id */
        bool all_disks;                 /* also loop, ram, zram and dm-* devices */
} DiscoverOptions;

/* The root directory in use: VMCLIENT_ROOT when set and not empty, else "/". */
const char *discover_root(void);

/* Fills ret (which the caller allocates: it is about 12 KiB). -ENOENT when
 * /proc/meminfo or the CPU count cannot be read; missing disks, hostname,
 * addresses or os-release are not errors (they are left out). */
int discover(const DiscoverOptions *o, Description *ret);

/* The fields of a description, for packing and comparing. */
#define DESC_VM_ID    (1u << 0)
#define DESC_RAM      (1u << 1)
#define DESC_CPU      (1u << 2)
#define DESC_DISKS    (1u << 3)
#define DESC_HOSTNAME (1u << 4)
#define DESC_IP       (1u << 5)
#define DESC_OS       (1u << 6)
#define DESC_PART1    (DESC_VM_ID | DESC_RAM | DESC_CPU | DESC_DISKS)
#define DESC_META     (DESC_HOSTNAME | DESC_IP | DESC_OS)
#define DESC_ALL      (DESC_PART1 | DESC_META)

/* Which of the fields in `what` d has a value for (hostname and os may be
 * missing; the rest are always there). */
unsigned description_present(const Description *d, unsigned what);
/* Packs those fields as key/value pairs (the map header is the caller's:
 * __builtin_popcount(description_present(d, what)) pairs). */
int description_pack(msgpack_packer *pk, const Description *d, unsigned what);

/* Reads a VM record as the daemon returns it. *ret_meta tells whether the
 * record carries the part 2 keys (hostname, ip, os): a daemon that sends
 * them also takes them. */
int description_from_record(const msgpack_object *rec, Description *ret, bool *ret_meta);

/* The fields of `what` in which want differs from have: disks and addresses
 * compare as sets; a hostname or os that want lacks is not a difference (it
 * is left out, not cleared). */
unsigned description_diff(const Description *want, const Description *have, unsigned what);

/* ---- vm.report ---- */

typedef struct DiskUsed {
        char id[VMM_DISK_ID_MAX + 1];
        uint64_t used;                  /* GiB */
} DiskUsed;

typedef struct Metrics {
        bool has_load;
        double load[3];
        bool has_mem;
        uint64_t mem_total, mem_used;   /* MiB */
        bool has_uptime;
        uint64_t uptime;                /* seconds */
        size_t n_used;
        DiskUsed used[VMM_MAX_DISKS];
} Metrics;

/* Reads the figures below root for the disks of d; what cannot be read is
 * left out. Never fails. */
void metrics_collect(const char *root, const Description *d, Metrics *ret);
/* Number of key/value pairs metrics_pack() writes. */
uint32_t metrics_count(const Metrics *m);
int metrics_pack(msgpack_packer *pk, const Metrics *m);

/* Helpers shared with the tests of the rules (and describe). */
bool discover_hostname_valid(const char *s);
bool discover_vm_id_valid(const char *s);
