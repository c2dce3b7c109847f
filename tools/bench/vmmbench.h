/* SPDX-License-Identifier: MIT */
/* What vmmbench.c shares with its part 2 workloads (vmmbench-part2.c): the
 * target and the options they use, and the JSON output they join; and with
 * the HTTP side of its http-get workload (vmmbench-http.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

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

/* vmmbench-http.c: the http-get workload's request and response framing */
typedef struct HttpTarget {
        char server[300];       /* "HOST:PORT" of --url, for vmmbench's loopback check */
        char path[2048];        /* the request target: path and query */
        char *request;          /* the whole request, as every client sends it */
        size_t request_len;
} HttpTarget;

typedef struct HttpResponse {
        unsigned status;        /* 100-999 */
        bool close;             /* the server closes the connection after it */
} HttpResponse;

/* Makes t from --url (http://HOST[:PORT][/PATH]) and the --header values
 * ("Name: value"): a GET with Host (unless given) and User-Agent. Says what
 * is wrong on stderr and returns -EINVAL for a URL or header it cannot send. */
int http_target_init(HttpTarget *t, const char *url, char *const *headers, size_t n_headers);
void http_target_done(HttpTarget *t);

/* The first complete response in p[0..n): its length (> 0) with *ret
 * filled, 0 when more bytes are needed, or -1 (why in err) when it cannot be
 * framed: not HTTP/1.x, a chunked or connection-delimited body, a head over
 * 64 KiB, or more than max bytes in all. */
ssize_t http_response_len(const uint8_t *p, size_t n, size_t max, HttpResponse *ret,
                          char *err, size_t err_size);
