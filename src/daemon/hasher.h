/* SPDX-License-Identifier: MIT */
/* Layer L1: argon2id in helper processes. A password hash maps 64 MiB,
 * touches every page and unmaps it again; in vmmd's own address space each
 * of those steps holds the address space's lock, and the event loop stalls
 * on any page fault or mapping of its own meanwhile (measured: a loop that
 * maps and touches 300 KB every 10 ms, p99 16-17 ms beside a hashing thread,
 * 1.6-1.7 ms beside a hashing process). So each hash worker thread hands
 * its work to a helper process of its own: vmmd's binary again, started as
 * "vmmd --hash-helper", speaking over a socket pair. When no helper can be
 * had, the work is done in the thread as before. */
#pragma once

#define HASHER_HELPER_ARG "--hash-helper"

/* Helpers from now on (main() of vmmd only; fuzz targets and unit tests
 * hash in their threads): they run this program, as /proc/self/exe names
 * it now. Returns 0 or -errno. */
int hasher_enable(void);

typedef struct Hasher Hasher;

/* One per hash worker thread; its helper starts at the first use.
 * hasher_thread_begin() also routes the thread's secret_password_* calls
 * to it; NULL when helpers are not enabled (or out of memory). */
Hasher *hasher_thread_begin(void);
void hasher_thread_end(Hasher *h);

/* main() of "vmmd --hash-helper PPID": serves requests on fd 3 until EOF. */
int hasher_helper_main(int argc, char *argv[]);
