/* SPDX-License-Identifier: MIT */
/* What vmmbench.c shares with its part 2 workloads (vmmbench-part2.c): the
 * target and the options they use, and the JSON output they join. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* Users vmmbench logs in as are "u%06u" (as vmm-load writes them). */
#define BENCH_USER_FORMAT "u%06u"

typedef struct BenchEnv {
        const struct sockaddr_storage *addr;    /* vmmd's TCP address (loopback) */
        socklen_t addr_len;
        const char *admin_socket;               /* NULL: the users exist already */
        const char *password;                   /* of every user */
        unsigned seconds;                       /* time limit per test */
        unsigned vms;                           /* vm000001..: VMs that exist */
        unsigned replay_events;                 /* replay: events to wait for */
        unsigned watchers;                      /* watchers: connections */
        unsigned watch_users;                   /* watchers: sessions they share */
        unsigned bookings;                      /* watchers: bookings to send */
        long server_pid;                        /* 0: unknown */
        bool json;
} BenchEnv;

/* Creates users [first, first + n) with role user and env->password over the
 * admin socket (one that exists already is taken as it is). */
int part2_users_create(const BenchEnv *env, unsigned first, unsigned n);

/* events.watch {since: 0} on one user session: the time to the last of
 * env->replay_events feed events. */
int part2_run_replay(const BenchEnv *env);

/* env->watchers connections watch booking.created; one more user books
 * env->bookings VMs one after another: the time from each booking's reply
 * to each watcher's receipt. */
int part2_run_watchers(const BenchEnv *env);

/* The admin socket (blocking), and the number of bookings its status shows
 * (one request, one reply: nothing else may be in flight on fd). */
int part2_admin_open(const char *path);
int part2_status_bookings(int fd, uint64_t *ret);

/* vmmbench.c: the JSON array's next element, and a JSON string */
void bench_json_begin(void);
void bench_json_string(const char *s);
/* user + system CPU seconds of a process (-errno) */
int bench_proc_cpu_s(long pid, double *ret);
