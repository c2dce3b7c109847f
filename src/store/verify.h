/* SPDX-License-Identifier: MIT */
/* Layer L0 (src/store), private: what the two halves of the consistency
 * walk share (verify.c: meta, VMs, disks, sessions; verify2.c: the tables of
 * part 2). */
#pragma once

#include <stdbool.h>

#include "record.h"
#include "store-internal.h"

/* Room for a key shown escaped: 4 bytes per input byte, shortened. */
#define VERIFY_SHOW_BYTES 64
#define VERIFY_SHOW_MAX (VERIFY_SHOW_BYTES * 4 + 4)

typedef struct Verify {
        MDB_txn *txn;
        StoreDbis dbi;
        char *errbuf;
        size_t errlen;
        size_t used;            /* bytes of errbuf filled (without the NUL) */
        bool full;              /* a problem did not fit: say no more */
        StoreVerifyStats stats;
        uint64_t feed_prev;     /* the feed walk: the position seen last */
        uint64_t chain_sum[2];  /* schema 4: the positions of the user's and the
                                 * VM's heads */
} Verify;

/* A problem in the data: counted, and described while it fits. */
_printf_(2, 3)
void verify_problem(Verify *v, const char *fmt, ...);
/* Bytes as printable text (ASCII graphic as is, others \xNN, shortened). */
const char *show(const void *p, size_t n, char buf[VERIFY_SHOW_MAX]);
/* A session hash, shortened to its first 8 bytes in hex. */
const char *show_hash(const void *p, size_t n, char buf[VERIFY_SHOW_MAX]);
/* A key as a NUL-terminated string of 1..max bytes without NUL. */
bool key_str(const MDB_val *k, char *ret, size_t max);
/* Is (key, data) in the DUPSORT database dbi? 1 yes, 0 no, < 0 error. */
int dup_exists(Verify *v, MDB_dbi dbi, const void *key, size_t key_len, const void *data,
               size_t data_len);

/* verify2.c */
int verify_session_owner(Verify *v, const StoreSession *s);
int verify_vm_group(Verify *v, const StoreVm *vm);
int verify_user_sessions(Verify *v);
int verify_session_expiry(Verify *v);
int verify_users(Verify *v);
int verify_groups(Verify *v);
int verify_group_vms(Verify *v);
int verify_bookings(Verify *v);
int verify_booking_indexes(Verify *v);
int verify_history(Verify *v);
int verify_feed(Verify *v);
int verify_os(Verify *v);
int verify_requests(Verify *v);
