/* SPDX-License-Identifier: MIT */
/* The program: its sockets (socket activation by the name `http`, or
 * --listen), the parts it is made of, readiness and a clean stop. */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "build-config.h"
#include "web.h"

#define STOP_WAIT_USEC (50u * 1000u)
#define STOP_MAX_MS    (5u * 1000u)    /* then the requests still waiting get 503 */

uint64_t now_ms(void) {
        struct timespec ts;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000u + (uint64_t) ts.tv_nsec / 1000000u;
}

static int bind_listen(const char *address) {
        char host[256], port[16];
        const char *colon;
        if (address[0] == '[') {
                const char *end = strchr(address, ']');
                if (!end || end[1] != ':' || (size_t) (end - address - 1) >= sizeof host)
                        return -EINVAL;
                memcpy(host, address + 1, (size_t) (end - address - 1));
                host[end - address - 1] = '\0';
                colon = end + 1;
        } else {
                colon = strrchr(address, ':');
                if (!colon || (size_t) (colon - address) >= sizeof host)
                        return -EINVAL;
                memcpy(host, address, (size_t) (colon - address));
                host[colon - address] = '\0';
        }
        if (!colon[1] || strlen(colon + 1) >= sizeof port ||
            strspn(colon + 1, "0123456789") != strlen(colon + 1))
                return -EINVAL;
        strcpy(port, colon + 1);

        struct addrinfo hints = { .ai_flags = AI_PASSIVE | AI_NUMERICSERV,
                                  .ai_socktype = SOCK_STREAM };
        struct addrinfo *res = NULL;
        if (getaddrinfo(host[0] ? host : NULL, port, &hints, &res) != 0)
                return -EADDRNOTAVAIL;
        int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1, r = 0;
        if (fd < 0)
                r = -errno;
        else {
                (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
                if (res->ai_family == AF_INET6)
                        (void) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
                if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
                        r = -errno;
                        (void) close(fd);
                }
        }
        freeaddrinfo(res);
        return r < 0 ? r : fd;
}

/* Sockets from systemd, by name; each must be a listening TCP socket. */
static int take_activated(Web *w, int *fds, size_t max, size_t *ret_n) {
        char **names = NULL;
        int n = sd_listen_fds_with_names(true, &names);
        size_t got = 0;
        int r = 0;
        if (n < 0)
                return log_error_errno(n, "Cannot take the sockets from systemd: %s", strerror(-n));
        for (int i = 0; i < n; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                const char *name = names && names[i] ? names[i] : "";
                if (strcmp(name, "http") != 0) {
                        r = log_error_errno(EINVAL, "Socket %d is named '%s'; vmm-web takes only "
                                            "sockets named 'http' (FileDescriptorName=http)", fd,
                                            name);
                        continue;
                }
                if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
                        r = log_error_errno(EINVAL, "Socket %d is not a listening stream socket",
                                            fd);
                        continue;
                }
                if (got >= max) {
                        r = log_error_errno(EINVAL, "More than %zu sockets named 'http'", max);
                        continue;
                }
                fds[got++] = fd;
        }
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        *ret_n = got;
        return r;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata);

static int on_flush(sd_event_source *s, void *userdata) {
        web_settle(userdata);
        return 0;
}

void web_schedule_flush(Web *w) {
        if (w->flush)
                (void) sd_event_source_set_enabled(w->flush, SD_EVENT_ONESHOT);
}

int web_new(Web **ret, WebConfig *config) {
        Web *w = calloc(1, sizeof(*w));
        int fds[ELEMENTSOF(w->daemons)];
        size_t n = 0;
        int r;

        if (!w)
                return -ENOMEM;
        w->config = *config;
        r = sd_event_default(&w->event);
        if (r < 0)
                goto fail;
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGPIPE);
        (void) sigprocmask(SIG_BLOCK, &mask, NULL);
        r = sd_event_add_signal(w->event, NULL, SIGTERM, on_signal, w);
        if (r >= 0)
                r = sd_event_add_signal(w->event, NULL, SIGINT, on_signal, w);
        if (r < 0)
                goto fail;

        r = sd_event_add_defer(w->event, &w->flush, on_flush, w);
        if (r < 0)
                goto fail;
        /* sd-event dispatches one source per iteration, by priority then
         * age: at the same priority as the sockets, the flush waits behind
         * what was already pending (libmicrohttpd's run that queues the
         * requests) and is never starved by a steady stream of them */
        (void) sd_event_source_set_enabled(w->flush, SD_EVENT_OFF);

        r = assets_load(w->config.www_dir, &w->assets);
        if (r < 0)
                goto fail;
        r = pool_new(w, &w->pool);
        if (r >= 0)
                r = auth_new(w, &w->auth);
        if (r >= 0)
                r = sse_new(w, &w->sse);
        if (r < 0)
                goto fail;

        r = take_activated(w, fds, ELEMENTSOF(fds), &n);
        if (r < 0)
                goto fail;
        if (n == 0) {
                for (size_t i = 0; i < w->config.n_listen && n < ELEMENTSOF(fds); i++) {
                        int fd = bind_listen(w->config.listen[i]);
                        if (fd < 0) {
                                r = log_error_errno(fd, "Cannot listen on %s: %s",
                                                    w->config.listen[i], strerror(-fd));
                                goto fail;
                        }
                        fds[n++] = fd;
                }
        }
        for (size_t i = 0; i < n; i++) {
                r = http_start(w, fds[i], i);
                if (r < 0)
                        goto fail;
        }
        *ret = w;
        return 0;
fail:
        web_free(w);
        return r;
}

Web *web_free(Web *w) {
        if (!w)
                return NULL;
        if (w->sse)
                sse_stop(w->sse);
        if (w->n_daemons > 0)
                http_fail_waiting(w);
        http_stop_all(w);
        w->sse = sse_free(w->sse);
        w->auth = auth_free(w->auth);
        w->pool = pool_free(w->pool);
        w->flush = sd_event_source_disable_unref(w->flush);
        w->assets = assets_free(w->assets);
        sd_event_unref(w->event);
        free(w);
        return NULL;
}

static int stop_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        Web *w = userdata;
        if (w->suspended == 0 || now_ms() - w->stop_started > STOP_MAX_MS + 500)
                return sd_event_exit(w->event, 0);
        if (now_ms() - w->stop_started > STOP_MAX_MS)
                /* answered now; the loop sends the answers before the exit */
                http_fail_waiting(w);
        /* a time source fires once: arm it again */
        int r = sd_event_source_set_time_relative(s, STOP_WAIT_USEC);
        if (r >= 0)
                r = sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
        return r < 0 ? sd_event_exit(w->event, 0) : 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Web *w = userdata;
        if (w->stopping)
                return 0;
        w->stopping = true;
        w->stop_started = now_ms();
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Stopping");
        log_info("Stopping: finishing the requests under way");
        for (size_t i = 0; i < w->n_daemons; i++) {
                int fd = MHD_quiesce_daemon(w->daemons[i]);
                if (fd >= 0)
                        (void) close(fd);
        }
        sse_stop(w->sse);
        int r = sd_event_add_time_relative(w->event, NULL, CLOCK_MONOTONIC, 0, 1, stop_poll, w);
        if (r < 0)
                return sd_event_exit(w->event, 0);
        return 0;
}

int web_run(Web *w) {
        char status[256];
        (void) snprintf(status, sizeof status, "READY=1\nSTATUS=Serving HTTP; vmmd at %s",
                        w->config.vmmd);
        (void) sd_notify(false, status);
        log_info("vmm-web %s ready: vmmd at %s, page from %s%s", VMMD_VERSION, w->config.vmmd,
                 w->config.www_dir, w->tls ? ", TLS on" : "");
        return sd_event_loop(w->event);
}
