/* SPDX-License-Identifier: MIT */
/* The group commit (L0, store): a batch of writes in one LMDB transaction,
 * each write all-or-nothing, committed once (store_write_batch). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "shared/macro.h"
#include "store-internal.h"

/* One transaction over items[from..n). Flat (children false, the usual
 * case): every item in the transaction itself; when an item fails or the
 * transaction fills up, nothing is written and -EAGAIN says to run the part
 * again with children, each item in a child txn so that its failure undoes
 * only its own changes (LMDB allocates about 2.5 MiB per child, hence the
 * flat try first). An item alone that fails is its own answer either way.
 * Returns 1 with *ret_end where it stopped: n when all ran, or (children)
 * the item that did not fit in one transaction (-E2BIG, and it was not the
 * first). *ret_grow: the map must grow and the whole part run again. */
static int batch_part(Store *s, void *const *items, size_t from, size_t n, StoreBatchFunc f,
                      bool children, int *results, bool *failed, size_t *ret_end,
                      bool *ret_grow) {
        StoreTxn *top = NULL;
        size_t i, live = 0;
        int r;

        *ret_grow = false;
        for (i = from; i < n; i++)
                live += !failed[i];
        r = store_write_begin(s, &top);
        if (r < 0)
                return r;
        for (i = from; i < n; i++) {
                StoreTxn *child = NULL;

                if (failed[i])
                        continue;
                if (!children)
                        r = f(items[i], top);
                else {
                        r = store_child_begin(top, &child);
                        if (r >= 0) {
                                r = f(items[i], child);
                                if (r >= 0) {
                                        int q = store_commit(child);
                                        if (q < 0)
                                                r = q;
                                } else
                                        store_abort(child);
                        }
                }
                if (r == -ENOSPC) {
                        store_abort(top);
                        if (store_grow(s) < 0) {
                                if (!children)
                                        return -EAGAIN; /* the children find who does not fit */
                                /* at the maximum: this item alone fails */
                                failed[i] = true;
                                results[i] = -ENOSPC;
                        }
                        *ret_grow = true;
                        return 0;
                }
                if (r < 0 && live == 1 && r != -E2BIG) {
                        /* alone: its changes go with the transaction */
                        store_abort(top);
                        results[i] = r;
                        *ret_end = n;
                        return 1;
                }
                if (r < 0 && !children) {
                        store_abort(top);
                        return -EAGAIN;
                }
                if (r == -E2BIG && i > from) {
                        /* the transaction is full: commit what came before,
                         * and go on from this item in a new one */
                        break;
                }
                if (r == -E2BIG) {
                        /* alone it is too large for one transaction */
                        failed[i] = true;
                        r = -ENOSPC;
                }
                results[i] = r;
        }
        r = store_commit(top);
        if (r == -ENOSPC && store_grow(s) >= 0) {
                *ret_grow = true;
                return 0;
        }
        if (r < 0)
                for (size_t j = from; j < i; j++)
                        if (!failed[j] && results[j] >= 0)
                                results[j] = r;
        *ret_end = i;
        return r < 0 ? r : 1;
}

int store_write_batch(Store *s, void *const *items, size_t n, StoreBatchFunc f, int *results) {
        _cleanup_free_ bool *failed = calloc(MAX(n, (size_t) 1), sizeof(bool));
        size_t from = 0;
        int commits = 0, r = 0;

        if (!failed) {
                for (size_t i = 0; i < n; i++)
                        results[i] = -ENOMEM;
                return -ENOMEM;
        }
        while (from < n) {
                size_t end = n;
                bool grow;

                r = batch_part(s, items, from, n, f, false, results, failed, &end, &grow);
                if (r == -EAGAIN)
                        r = batch_part(s, items, from, n, f, true, results, failed, &end, &grow);
                if (r < 0 && !grow) {
                        for (size_t i = from; i < n; i++)
                                if (!failed[i] && (i >= end || results[i] >= 0))
                                        results[i] = r;
                        return commits > 0 ? commits : r;
                }
                if (grow)
                        continue;       /* the same part again, in a bigger map */
                commits++;
                from = end;
        }
        return commits;
}

