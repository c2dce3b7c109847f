/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "hasher.h"
#include "log.h"
#include "shared/clock.h"
#include "shared/secret.h"

extern char **environ;

#define HELPER_FD 3
/* the child's descriptor HELPER_FD + 1 is exe_fd */
#define EXEC_PATH "/proc/self/fd/4"
#define FD_HIGH 10
#define HELPER_NICE 19
#define SPAWN_TRIES 2
#define RETRY_S 60              /* after a helper could not be had */

/* A request: op, the password's length (4 bytes, host order: both ends are
 * this binary), the password, and for a check the stored hash with its NUL.
 * The answer of a hash: status (0 done) and the hash; of a check: 0 no
 * match, 1 match. */
enum { OP_HASH = 'H', OP_VERIFY = 'V' };
#define REQUEST_MAX (1 + 4 + VMM_PASSWORD_MAX + SECRET_PWHASH_MAX)
#define ANSWER_MAX (1 + SECRET_PWHASH_MAX)

static char helper_exe[PATH_MAX];         /* for messages */
static int exe_fd = -1;                 /* >= 0: helpers are enabled */

struct Hasher {
        pid_t pid;
        int fd;
        uint64_t retry_at;      /* could not start one: hash in the thread
                                   until then (mono_ms; 0: no wait) */
        SecretOffload offload;
        uint8_t buf[REQUEST_MAX];
};

int hasher_enable(void) {
        /* the binary that runs now, also once an upgrade has replaced the
         * file under its name: the helper must be this vmmd, not the next */
        int fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        /* above the helper's descriptors (3, 4), so that placing one there
         * in the child never overwrites the other */
        exe_fd = fcntl(fd, F_DUPFD_CLOEXEC, FD_HIGH);
        close(fd);
        if (exe_fd < 0)
                return -errno;
        ssize_t n = readlink("/proc/self/exe", helper_exe, sizeof helper_exe - 1);
        helper_exe[n > 0 ? n : 0] = '\0';
        return 0;
}

static void helper_stop(Hasher *h) {
        if (h->fd >= 0)
                close(h->fd);
        h->fd = -1;
        if (h->pid > 0) {
                /* it holds nothing that needs a clean end */
                (void) kill(h->pid, SIGKILL);
                while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        }
        h->pid = 0;
}

static int helper_start(Hasher *h) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, dfl;
        char ppid[32];
        int sv[2], r;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        int high = fcntl(sv[1], F_DUPFD_CLOEXEC, FD_HIGH);       /* as exe_fd */
        close(sv[1]);
        if (high < 0) {
                r = -errno;
                close(sv[0]);
                return r;
        }
        sv[1] = high;
        snprintf(ppid, sizeof ppid, "%d", (int) getpid());
        char *argv[] = { (char *) "vmmd", (char *) HASHER_HELPER_ARG, ppid, NULL };
        sigemptyset(&none);
        sigfillset(&dfl);
        r = -posix_spawn_file_actions_init(&fa);
        if (r == 0) {
                r = -posix_spawn_file_actions_adddup2(&fa, sv[1], HELPER_FD);
                if (r == 0)
                        r = -posix_spawn_file_actions_adddup2(&fa, exe_fd, HELPER_FD + 1);
                if (r == 0)
                        r = -posix_spawnattr_init(&attr);
                if (r == 0) {
                        /* the loop blocks the signals it handles: the helper
                         * starts with none blocked and every one at default */
                        (void) posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK |
                                                        POSIX_SPAWN_SETSIGDEF);
                        (void) posix_spawnattr_setsigmask(&attr, &none);
                        (void) posix_spawnattr_setsigdefault(&attr, &dfl);
                        r = -posix_spawn(&h->pid, EXEC_PATH, &fa, &attr, argv, environ);
                        posix_spawnattr_destroy(&attr);
                }
                posix_spawn_file_actions_destroy(&fa);
        }
        close(sv[1]);
        if (r < 0) {
                close(sv[0]);
                h->pid = 0;
                return r;
        }
        h->fd = sv[0];
        return 0;
}

/* One request, one answer; a helper that fails is replaced once. */
static int helper_call(Hasher *h, size_t len, uint8_t *ans, size_t *ans_len) {
        if (h->retry_at > 0 && mono_ms() < h->retry_at)
                return -ENOTCONN;
        for (unsigned attempt = 0; attempt < SPAWN_TRIES; attempt++) {
                if (h->fd < 0) {
                        int r = helper_start(h);
                        if (r < 0) {
                                log_warning_errno(r, "Cannot start a password hash helper (%s), "
                                                  "hashing in vmmd's own threads for %d s: %s",
                                                  helper_exe, RETRY_S, strerror(-r));
                                h->retry_at = mono_ms() + RETRY_S * 1000u;
                                return r;
                        }
                }
                ssize_t n = send(h->fd, h->buf, len, MSG_NOSIGNAL);
                if (n == (ssize_t) len) {
                        do
                                n = recv(h->fd, ans, ANSWER_MAX, 0);
                        while (n < 0 && errno == EINTR);
                        if (n > 0) {
                                *ans_len = (size_t) n;
                                return 0;
                        }
                }
                log_warning("A password hash helper (pid %d) stopped answering; starting "
                            "another", (int) h->pid);
                helper_stop(h);
        }
        h->retry_at = mono_ms() + RETRY_S * 1000u;
        log_warning("Password hash helpers keep failing: hashing in vmmd's own threads for "
                    "%d s", RETRY_S);
        return -EIO;
}

static size_t request_pack(Hasher *h, int op, const char *pw, size_t len, const char *hash) {
        uint32_t l = (uint32_t) len;
        size_t n = 0;

        h->buf[n++] = (uint8_t) op;
        memcpy(h->buf + n, &l, sizeof l);
        n += sizeof l;
        memcpy(h->buf + n, pw, len);
        n += len;
        if (hash) {
                size_t hl = strlen(hash) + 1;
                memcpy(h->buf + n, hash, hl);
                n += hl;
        }
        return n;
}

/* One request to the helper; the password leaves no copy behind. */
static int ask(Hasher *h, int op, const char *pw, size_t len, const char *hash,
               uint8_t ans[ANSWER_MAX], size_t *ans_len) {
        if (len > VMM_PASSWORD_MAX)
                return -E2BIG;
        int r = helper_call(h, request_pack(h, op, pw, len, hash), ans, ans_len);
        secret_wipe(h->buf, sizeof h->buf);
        return r;
}

static int offload_hash(void *userdata, const char *pw, size_t len,
                        char ret_hash[SECRET_PWHASH_MAX]) {
        uint8_t ans[ANSWER_MAX];
        size_t ans_len = 0;
        int r = ask(userdata, OP_HASH, pw, len, NULL, ans, &ans_len);

        if (r < 0)
                return r;
        if (ans_len != ANSWER_MAX || ans[0] != 0 || ans[ANSWER_MAX - 1] != '\0' ||
            strncmp((const char *) ans + 1, "$argon2id$", 10) != 0)
                return -EIO;
        memcpy(ret_hash, ans + 1, SECRET_PWHASH_MAX);
        return 0;
}

static int offload_verify(void *userdata, const char *hash, const char *pw, size_t len) {
        uint8_t ans[ANSWER_MAX];
        size_t ans_len = 0;
        int r = ask(userdata, OP_VERIFY, pw, len, hash, ans, &ans_len);

        if (r < 0)
                return r;
        if (ans_len != 1 || ans[0] > 1)
                return -EIO;
        return ans[0];
}

Hasher *hasher_thread_begin(void) {
        if (exe_fd < 0)
                return NULL;
        Hasher *h = calloc(1, sizeof *h);
        if (!h)
                return NULL;
        h->fd = -1;
        h->offload = (SecretOffload) { offload_hash, offload_verify, h };
        secret_offload_set(&h->offload);
        return h;
}

void hasher_thread_end(Hasher *h) {
        if (!h)
                return;
        secret_offload_set(NULL);
        helper_stop(h);
        free(h);
}

/* ---- the helper process ---- */

int hasher_helper_main(int argc, char *argv[]) {
        static uint8_t req[REQUEST_MAX + 1];
        int type = 0;
        socklen_t tl = sizeof type;

        if (argc != 3 || getsockopt(HELPER_FD, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 ||
            type != SOCK_SEQPACKET) {
                fprintf(stderr, "vmmd: %s is for vmmd's own use (its password hash helpers)\n",
                        HASHER_HELPER_ARG);
                return 2;
        }
        /* ends with the thread that started it, and with vmmd */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != (pid_t) atoi(argv[2]))
                return 0;
        (void) setpriority(PRIO_PROCESS, 0, HELPER_NICE);
        /* nothing of vmmd's but the socket (every other descriptor of vmmd
         * is close-on-exec; this is for whatever was not) */
        if (syscall(SYS_close_range, HELPER_FD + 1, ~0U, 0) < 0)
                for (int fd = HELPER_FD + 1, max = (int) sysconf(_SC_OPEN_MAX);
                     fd < max && fd < 65536; fd++)
                        (void) close(fd);
        if (secret_init() < 0)
                return 1;
        for (;;) {
                uint8_t ans[ANSWER_MAX];
                size_t ans_len;
                uint32_t len;
                const size_t head = 1 + sizeof len;        /* op, length */
                ssize_t n;

                do
                        n = recv(HELPER_FD, req, sizeof req, 0);
                while (n < 0 && errno == EINTR);
                if (n <= 0)
                        return 0;               /* vmmd closed its end */
                if ((size_t) n < head || (size_t) n > REQUEST_MAX)
                        return 1;
                memcpy(&len, req + 1, sizeof len);
                if (len > VMM_PASSWORD_MAX || head + len > (size_t) n)
                        return 1;
                const char *pw = (const char *) req + head;
                memset(ans, 0, sizeof ans);
                if (req[0] == OP_HASH && (size_t) n == head + len) {
                        ans[0] = secret_password_hash(pw, len, (char *) ans + 1) < 0 ? 1 : 0;
                        ans_len = ANSWER_MAX;
                } else if (req[0] == OP_VERIFY && (size_t) n > head + len &&
                           req[n - 1] == '\0') {
                        const char *hash = pw + len;
                        ans[0] = secret_password_verify(hash, pw, len) ? 1 : 0;
                        ans_len = 1;
                } else
                        return 1;
                secret_wipe(req, sizeof req);
                n = send(HELPER_FD, ans, ans_len, MSG_NOSIGNAL);
                secret_wipe(ans, sizeof ans);
                if (n != (ssize_t) ans_len)
                        return 0;
        }
}
