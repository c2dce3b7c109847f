/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent-log.h"
#include "hooks.h"
#include "shared/macro.h"
#include "tools/common/json.h"
#include "vmm/client.h"

#define HOOKS_MAX       256
#define QUEUE_MAX       4096
#define LINE_MAX_BYTES  1024

extern char **environ;

typedef struct HookEvent HookEvent;
struct HookEvent {
        HookEvent *next;
        char *type, *user, *vm_id, *reason, *json;
        bool has_expires, has_feed;
        int64_t expires, feed;
};

typedef struct Output {
        int fd;
        sd_event_source *src;
        char line[LINE_MAX_BYTES + 1];
        size_t len;
        const char *stream;             /* "stdout" or "stderr" */
} Output;

struct HookRunner {
        sd_event *event;
        char *dir;
        uint64_t timeout_usec;
        HookDoneFunc done;
        void *userdata;

        HookEvent *head, *tail;         /* head is the one running */
        size_t queued;

        char **hooks;                   /* of the running event */
        size_t n_hooks, next_hook;

        pid_t pid;                      /* the running hook, 0 if none */
        char *hook_name;
        uint64_t started_usec;
        bool timed_out;
        sd_event_source *child_src, *timer_src, *defer_src;
        Output out[2];
};

bool hook_name_valid(const char *name) {
        if (!*name)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
                        return false;
        return true;
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

static void event_free(HookEvent *e) {
        if (!e)
                return;
        free(e->type);
        free(e->user);
        free(e->vm_id);
        free(e->reason);
        free(e->json);
        free(e);
}

static void hooks_clear(HookRunner *h) {
        for (size_t i = 0; i < h->n_hooks; i++)
                free(h->hooks[i]);
        free(h->hooks);
        h->hooks = NULL;
        h->n_hooks = h->next_hook = 0;
}

static int str_cmp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* The hooks to run now, in byte order; a missing directory has none. */
static int hooks_scan(HookRunner *h) {
        hooks_clear(h);
        DIR *d = opendir(h->dir);
        if (!d) {
                if (errno == ENOENT)
                        return 0;
                return alog(LOG_WARNING, &((AlogFields) { .error = errno }),
                            "cannot read the hook directory %s: %s", h->dir, strerror(errno));
        }
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d)) && h->n_hooks < HOOKS_MAX) {
                char path[PATH_MAX];
                struct stat st;
                if (!hook_name_valid(de->d_name))
                        continue;
                if (snprintf(path, sizeof path, "%s/%s", h->dir, de->d_name) >= (int) sizeof path)
                        continue;
                if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || access(path, X_OK) < 0)
                        continue;
                char **more = realloc(h->hooks, (h->n_hooks + 1) * sizeof(char *));
                if (!more) {
                        r = -ENOMEM;
                        break;
                }
                h->hooks = more;
                if (!(h->hooks[h->n_hooks] = strdup(de->d_name))) {
                        r = -ENOMEM;
                        break;
                }
                h->n_hooks++;
        }
        closedir(d);
        if (h->n_hooks > 1)
                qsort(h->hooks, h->n_hooks, sizeof(char *), str_cmp);
        return r;
}

static AlogFields event_fields(const HookRunner *h, const char *hook, const char *stream) {
        const HookEvent *e = h->head;
        return (AlogFields) {
                .event = e ? e->type : NULL,
                .user = e && e->user ? e->user : NULL,
                .vm_id = e && e->vm_id ? e->vm_id : NULL,
                .has_feed = e && e->has_feed,
                .feed = e ? e->feed : 0,
                .hook = hook,
                .stream = stream,
        };
}

static void output_line(HookRunner *h, Output *o) {
        if (o->len == 0)
                return;
        o->line[o->len] = '\0';
        for (size_t i = 0; i < o->len; i++)
                if ((unsigned char) o->line[i] < 0x20 && o->line[i] != '\t')
                        o->line[i] = '?';
        AlogFields f = event_fields(h, h->hook_name, o->stream);
        alog(o->stream[3] == 'o' ? LOG_INFO : LOG_NOTICE, &f, "hook %s: %s", h->hook_name,
             o->line);
        o->len = 0;
}

/* Reads what the pipe has; false at EOF or error. */
static bool output_read(HookRunner *h, Output *o) {
        char buf[4096];
        for (;;) {
                ssize_t n = read(o->fd, buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return errno == EAGAIN;
                if (n == 0)
                        return false;
                for (ssize_t i = 0; i < n; i++) {
                        if (buf[i] == '\n') {
                                output_line(h, o);
                                continue;
                        }
                        if (o->len == LINE_MAX_BYTES)
                                output_line(h, o);      /* an overlong line, in pieces */
                        o->line[o->len++] = buf[i];
                }
        }
}

static void output_close(HookRunner *h, Output *o) {
        if (o->fd >= 0) {
                (void) output_read(h, o);       /* what is left in the pipe */
                output_line(h, o);
        }
        o->src = sd_event_source_disable_unref(o->src);
        if (o->fd >= 0)
                (void) close(o->fd);
        o->fd = -1;
        o->len = 0;
}

static int on_output(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        HookRunner *h = userdata;
        Output *o = fd == h->out[0].fd ? &h->out[0] : &h->out[1];
        if (!output_read(h, o))
                output_close(h, o);
        return 0;
}

static void run_next(HookRunner *h);

static int on_defer(sd_event_source *s, void *userdata) {
        HookRunner *h = userdata;
        h->defer_src = sd_event_source_disable_unref(h->defer_src);
        run_next(h);
        return 0;
}

/* Continue on the next loop iteration (keeps the stack flat). */
static void schedule_next(HookRunner *h) {
        if (h->defer_src)
                return;
        if (sd_event_add_defer(h->event, &h->defer_src, on_defer, h) < 0)
                alog_error("cannot schedule the next hook: out of memory");
}

static void hook_finished(HookRunner *h) {
        h->child_src = sd_event_source_disable_unref(h->child_src);
        h->timer_src = sd_event_source_disable_unref(h->timer_src);
        output_close(h, &h->out[0]);
        output_close(h, &h->out[1]);
        free(h->hook_name);
        h->hook_name = NULL;
        h->pid = 0;
        schedule_next(h);
}

static int on_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        HookRunner *h = userdata;
        AlogFields f = event_fields(h, h->hook_name, NULL);
        uint64_t ms = (now_usec() - h->started_usec) / 1000;

        if (si->si_code == CLD_EXITED && si->si_status == 0) {
                f.message_id = ALOG_MID_HOOK;
                alog(LOG_INFO, &f, "hook %s done (%s) in %" PRIu64 " ms", h->hook_name,
                     h->head->type, ms);
        } else if (si->si_code == CLD_EXITED) {
                f.message_id = ALOG_MID_HOOK_FAIL;
                alog(LOG_WARNING, &f, "hook %s failed with status %d (%s); going on",
                     h->hook_name, si->si_status, h->head->type);
        } else {
                f.message_id = ALOG_MID_HOOK_FAIL;
                alog(LOG_WARNING, &f, "hook %s %s by signal %s (%s); going on", h->hook_name,
                     h->timed_out ? "timed out and was killed" : "was killed",
                     sigabbrev_np(si->si_status) ? sigabbrev_np(si->si_status) : "?",
                     h->head->type);
        }
        hook_finished(h);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        HookRunner *h = userdata;
        AlogFields f = event_fields(h, h->hook_name, NULL);
        f.message_id = ALOG_MID_HOOK_FAIL;
        alog(LOG_WARNING, &f, "hook %s still running after %" PRIu64 " s: killing its process "
             "group", h->hook_name, h->timeout_usec / 1000000);
        h->timed_out = true;
        if (h->pid > 0)
                (void) kill(-h->pid, SIGKILL);
        return 0;
}

static bool env_dropped(const char *e) {
        static const char *const prefixes[] = {
                "VMM_", "NOTIFY_SOCKET=", "WATCHDOG_", "LISTEN_", "JOURNAL_STREAM=",
        };
        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (strncmp(e, prefixes[i], strlen(prefixes[i])) == 0)
                        return true;
        return false;
}

/* Our environment without systemd's notify/watchdog/stream variables, plus
 * the event's VMM_* variables. */
static char **hook_env(const HookEvent *e) {
        size_t n = 0;
        for (char **p = environ; p && *p; p++)
                n++;
        char **env = calloc(n + 7, sizeof(char *));
        if (!env)
                return NULL;
        size_t k = 0;
        for (char **p = environ; p && *p; p++)
                if (!env_dropped(*p) && !(env[k++] = strdup(*p)))
                        goto fail;
        char expires[32] = "", feed[32] = "";
        if (e->has_expires)
                snprintf(expires, sizeof expires, "%" PRId64, e->expires);
        if (e->has_feed)
                snprintf(feed, sizeof feed, "%" PRId64, e->feed);
        if (asprintf(&env[k++], "VMM_EVENT=%s", e->type) < 0 ||
            asprintf(&env[k++], "VMM_USER=%s", e->user ? e->user : "") < 0 ||
            asprintf(&env[k++], "VMM_VM_ID=%s", e->vm_id ? e->vm_id : "") < 0 ||
            asprintf(&env[k++], "VMM_EXPIRES_AT=%s", expires) < 0 ||
            asprintf(&env[k++], "VMM_REASON=%s", e->reason ? e->reason : "") < 0 ||
            asprintf(&env[k++], "VMM_FEED=%s", feed) < 0) {
                env[k - 1] = NULL;
                goto fail;
        }
        return env;
fail:
        for (size_t i = 0; i < k; i++)
                free(env[i]);
        free(env);
        return NULL;
}

static void env_free(char **env) {
        for (char **p = env; p && *p; p++)
                free(*p);
        free(env);
}

static void close_pair(int p[2]) {
        for (int i = 0; i < 2; i++)
                if (p[i] >= 0)
                        (void) close(p[i]);
        p[0] = p[1] = -1;
}

/* Starts hook `name` for the head event. */
static int hook_start(HookRunner *h, const char *name) {
        char path[PATH_MAX];
        int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
        int r;

        if (snprintf(path, sizeof path, "%s/%s", h->dir, name) >= (int) sizeof path)
                return -ENAMETOOLONG;
        char **env = hook_env(h->head);
        if (!env)
                return -ENOMEM;
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
                r = negative_errno();
                goto fail;
        }
        char *argv[] = { path, NULL };
        pid_t pid = fork();
        if (pid < 0) {
                r = negative_errno();
                goto fail;
        }
        if (pid == 0) {
                /* the child: its own process group (killed as one), the
                 * signals as a new program expects them, the pipes as 0-2 */
                sigset_t none;
                (void) setpgid(0, 0);
                (void) signal(SIGPIPE, SIG_DFL);
                sigemptyset(&none);
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                if (dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(err[1], 2) < 0)
                        _exit(127);
                if (chdir("/") < 0)
                        _exit(127);
                execve(path, argv, env);
                _exit(127);
        }
        (void) setpgid(pid, pid);       /* also here: no race with the kill */
        env_free(env);
        env = NULL;
        (void) close(in[0]);
        (void) close(out[1]);
        (void) close(err[1]);
        in[0] = out[1] = err[1] = -1;

        h->pid = pid;
        h->timed_out = false;
        h->started_usec = now_usec();
        h->hook_name = strdup(name);
        h->out[0] = (Output) { .fd = out[0], .stream = "stdout" };
        h->out[1] = (Output) { .fd = err[0], .stream = "stderr" };
        out[0] = err[0] = -1;

        /* the event as JSON on stdin: small, so it fits in the pipe at once */
        size_t len = strlen(h->head->json);
        (void) fcntl(in[1], F_SETFL, O_NONBLOCK);
        if (write(in[1], h->head->json, len) != (ssize_t) len)
                alog_debug("hook %s: stdin not written whole", name);
        close_pair(in);

        r = sd_event_add_child(h->event, &h->child_src, pid, WEXITED, on_child, h);
        if (r >= 0)
                r = sd_event_add_time_relative(h->event, &h->timer_src, CLOCK_MONOTONIC,
                                               h->timeout_usec, 0, on_timeout, h);
        for (int i = 0; r >= 0 && i < 2; i++) {
                (void) fcntl(h->out[i].fd, F_SETFL, O_NONBLOCK);
                r = sd_event_add_io(h->event, &h->out[i].src, h->out[i].fd, EPOLLIN, on_output,
                                    h);
        }
        if (r < 0 || !h->hook_name) {
                /* cannot watch it: do not leave it running unwatched */
                (void) kill(-pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                free(h->hook_name);
                h->hook_name = NULL;
                h->pid = 0;
                h->child_src = sd_event_source_disable_unref(h->child_src);
                h->timer_src = sd_event_source_disable_unref(h->timer_src);
                for (int i = 0; i < 2; i++) {
                        h->out[i].src = sd_event_source_disable_unref(h->out[i].src);
                        if (h->out[i].fd >= 0)
                                (void) close(h->out[i].fd);
                        h->out[i].fd = -1;
                }
                return r < 0 ? r : -ENOMEM;
        }
        alog_debug("hook %s started (pid %d) for %s", name, (int) pid, h->head->type);
        return 0;
fail:
        env_free(env);
        close_pair(in);
        close_pair(out);
        close_pair(err);
        return r;
}

/* Runs the next hook of the head event, or finishes the event and starts
 * the next one. */
static void run_next(HookRunner *h) {
        while (h->head && h->pid == 0) {
                if (h->next_hook == 0 && h->n_hooks == 0 && hooks_scan(h) == -ENOMEM)
                        alog_error("cannot list the hooks: out of memory");
                if (h->next_hook < h->n_hooks) {
                        const char *name = h->hooks[h->next_hook++];
                        int r = hook_start(h, name);
                        if (r < 0) {
                                AlogFields f = event_fields(h, name, NULL);
                                f.error = r;
                                f.message_id = ALOG_MID_HOOK_FAIL;
                                alog(LOG_WARNING, &f, "hook %s could not start: %s; going on",
                                     name, strerror(-r));
                        }
                        continue;
                }
                /* every hook of this event ran */
                HookEvent *e = h->head;
                h->head = e->next;
                if (!h->head)
                        h->tail = NULL;
                h->queued--;
                hooks_clear(h);
                if (h->done)
                        h->done(h, e->has_feed, e->feed, h->userdata);
                event_free(e);
        }
}

int hook_runner_new(sd_event *e, const char *dir, uint64_t timeout_usec, HookDoneFunc done,
                    void *userdata, HookRunner **ret) {
        HookRunner *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->dir = strdup(dir);
        if (!h->dir) {
                free(h);
                return -ENOMEM;
        }
        h->event = sd_event_ref(e);
        h->timeout_usec = timeout_usec;
        h->done = done;
        h->userdata = userdata;
        h->out[0].fd = h->out[1].fd = -1;
        *ret = h;
        return 0;
}

HookRunner *hook_runner_free(HookRunner *h) {
        if (!h)
                return NULL;
        if (h->pid > 0) {
                alog_notice("stopping: killing hook %s", h->hook_name ? h->hook_name : "?");
                (void) kill(-h->pid, SIGKILL);
                (void) waitpid(h->pid, NULL, 0);
        }
        h->child_src = sd_event_source_disable_unref(h->child_src);
        h->timer_src = sd_event_source_disable_unref(h->timer_src);
        h->defer_src = sd_event_source_disable_unref(h->defer_src);
        for (int i = 0; i < 2; i++) {
                h->out[i].src = sd_event_source_disable_unref(h->out[i].src);
                if (h->out[i].fd >= 0)
                        (void) close(h->out[i].fd);
        }
        while (h->head) {
                HookEvent *e = h->head;
                h->head = e->next;
                event_free(e);
        }
        hooks_clear(h);
        free(h->hook_name);
        free(h->dir);
        sd_event_unref(h->event);
        free(h);
        return NULL;
}

size_t hook_runner_pending(const HookRunner *h) {
        return h ? h->queued : 0;
}

static char *obj_strdup(const msgpack_object *o) {
        return o && o->type == MSGPACK_OBJECT_STR ? vmm_object_strdup(o) : NULL;
}

static bool obj_int(const msgpack_object *o, int64_t *ret) {
        if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX) {
                *ret = (int64_t) o->via.u64;
                return true;
        }
        if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
                *ret = o->via.i64;
                return true;
        }
        return false;
}

int hook_runner_enqueue(HookRunner *h, const msgpack_object *event) {
        if (h->queued >= QUEUE_MAX)
                return -ENOBUFS;
        HookEvent *e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        e->type = obj_strdup(vmm_object_get(event, "type"));
        e->user = obj_strdup(vmm_object_get(event, "user"));
        e->vm_id = obj_strdup(vmm_object_get(event, "vm_id"));
        e->reason = obj_strdup(vmm_object_get(event, "reason"));
        e->has_expires = obj_int(vmm_object_get(event, "expires_at"), &e->expires);
        e->has_feed = obj_int(vmm_object_get(event, "feed"), &e->feed);
        size_t len = 0;
        FILE *f = open_memstream(&e->json, &len);
        if (f) {
                (void) json_print(f, event, 0);
                fputc('\n', f);
                if (fclose(f) != 0) {
                        free(e->json);
                        e->json = NULL;
                }
        }
        if (!e->type || !e->json) {
                event_free(e);
                return -ENOMEM;
        }
        if (h->tail)
                h->tail->next = e;
        else
                h->head = e;
        h->tail = e;
        h->queued++;
        if (h->queued == 1)
                schedule_next(h);
        return 0;
}
