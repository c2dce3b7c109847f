/* SPDX-License-Identifier: MIT */
/* Helpers shared by the client (TCP) and admin method tables. */
#pragma once

#include "rpc.h"
#include "store/store.h"

#define REQUEST_OF(j) ((Request *) ((char *) (j) - offsetof(Request, job)))

typedef struct VmState {
        StoreVm vm;
        bool hashed;
} VmState;

typedef struct ListParams {
        ParamStr filter;
        ParamUint limit;
        ParamStr after;
} ListParams;

extern const ParamField vm_list_fields[];
extern const size_t n_vm_list_fields;
extern const ParamField disk_list_fields[];
extern const size_t n_disk_list_fields;

void pstr_copy(char *dst, size_t cap, const ParamStr *s);
void free_state(void *p);
void reply_vm(Request *r, const StoreVm *vm);
/* Free vm.get's answer cache (at exit). */
void client_vm_cache_free(void);
int method_vm_list(Request *r);
int method_disk_list(Request *r);
/* Ends sessions of vm_id beyond `keep` (oldest first), or every session but
 * `except` when keep == 0 (except may be NULL). The ended hashes are
 * appended to *ended for the loop. */
int end_sessions(StoreTxn *t, const char *vm_id, size_t keep, const uint8_t *except,
                 uint8_t (**ended)[SECRET_HASH_BYTES], size_t *n_ended, size_t *cap_ended);
/* After a commit: detach connections of the ended sessions and emit
 * session.ended with reason. */
void sessions_ended(Manager *m, const char *vm_id, uint8_t (*ended)[SECRET_HASH_BYTES], size_t n,
                    const char *reason);
