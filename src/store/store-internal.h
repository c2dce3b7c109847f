/* SPDX-License-Identifier: MIT */
/* What other files of src/store (verify.c) may see of store.c: the LMDB
 * handles behind a StoreTxn. Not for code outside src/store. */
#pragma once

#include <lmdb.h>

#include "store.h"

typedef struct StoreDbis {
        MDB_dbi meta, vms, disks, vm_disks, sessions, vm_sessions;
} StoreDbis;

/* The LMDB transaction of t, and the handles of the named databases. */
MDB_txn *store_txn_mdb(StoreTxn *t);
void store_txn_dbis(StoreTxn *t, StoreDbis *ret);
