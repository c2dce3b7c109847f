/* SPDX-License-Identifier: MIT */
/* Layer L4: monitoring (seed 004). vm.report keeps a VM's last report and
 * a history of the last hour in memory (one sample a minute); vm.monitor
 * shows them; a timer announces each VM's status (on while connected or
 * reporting within heartbeat_timeout, else off) as vm.status events. */
#pragma once

#include <stdint.h>

typedef struct Manager Manager;
typedef struct Monitor Monitor;

#define MONITOR_HISTORY 60              /* samples: one a minute, the last hour */

int monitor_new(Manager *m, Monitor **ret);
Monitor *monitor_free(Monitor *mon);
/* When the VM last reported (ms), 0 if never (since the daemon started). */
int64_t monitor_last_report(Monitor *mon, const char *vm_id);
/* Forget a VM (deleted). */
void monitor_forget(Monitor *mon, const char *vm_id);
/* Bytes held, and VMs tracked. */
void monitor_usage(Monitor *mon, uint64_t *ret_bytes, uint64_t *ret_vms);
