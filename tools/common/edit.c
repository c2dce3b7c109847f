/* SPDX-License-Identifier: MIT */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <histedit.h>

#include "shared/fs.h"
#include "shared/macro.h"
#include "tools/common/edit.h"

#define HISTORY_SIZE 1000

struct LineEditor {
        EditLine *el;           /* NULL: plain lines from stdin */
        History *hist;
        char *prompt;
        char *history_path;
        LineCompleteFn complete;
        void *userdata;
        char *line;             /* the caller's copy of the last line */
        size_t cap;
};

char *line_editor_history_path(const char *name) {
        const char *state = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
        char *path = NULL;

        /* the XDG base directory rules: a relative XDG_STATE_HOME is ignored */
        if (state && state[0] == '/')
                return asprintf(&path, "%s/vmmd/%s", state, name) < 0 ? NULL : path;
        if (home && home[0] == '/')
                return asprintf(&path, "%s/.local/state/vmmd/%s", home, name) < 0 ? NULL : path;
        return NULL;
}

size_t line_words(const char *before, char *first, size_t first_size) {
        size_t words = 0;

        if (first_size > 0)
                first[0] = '\0';
        for (const char *c = before; *c;) {
                while (*c == ' ' || *c == '\t')
                        c++;
                if (!*c)
                        break;
                const char *start = c;
                while (*c && *c != ' ' && *c != '\t')
                        c++;
                if (words++ == 0 && first_size > 0)
                        (void) snprintf(first, first_size, "%.*s", (int) (c - start), start);
        }
        return words;
}

int strv_push(char ***v, size_t *n, const char *s) {
        char **nv = realloc(*v, (*n + 2) * sizeof(char *));

        if (!nv)
                return -ENOMEM;
        *v = nv;
        nv[*n] = strdup(s);
        if (!nv[*n])
                return -ENOMEM;
        nv[++*n] = NULL;
        return 0;
}

static char *prompt_of(EditLine *el) {
        LineEditor *le = NULL;

        (void) el_get(el, EL_CLIENTDATA, &le);
        return le ? le->prompt : (char *) "> ";
}

static void strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

static size_t common_prefix(const char *a, const char *b, bool fold) {
        size_t i = 0;

        while (a[i] && b[i] && (fold ? tolower((unsigned char) a[i]) ==
                                        tolower((unsigned char) b[i]) : a[i] == b[i]))
                i++;
        return i;
}

/* TAB: complete the word before the cursor, or list the candidates. */
static unsigned char on_complete(EditLine *el, int ch) {
        LineEditor *le = NULL;
        const LineInfo *li = el_line(el);
        bool fold = false;

        (void) el_get(el, EL_CLIENTDATA, &le);
        if (!le || !le->complete || !li)
                return CC_ERROR;
        const char *start = li->cursor;
        while (start > li->buffer && !isspace((unsigned char) start[-1]))
                start--;
        size_t wlen = (size_t) (li->cursor - start);
        _cleanup_free_ char *before = strndup(li->buffer, (size_t) (start - li->buffer));
        _cleanup_free_ char *word = strndup(start, wlen);
        if (!before || !word)
                return CC_ERROR;

        char **cands = le->complete(le->userdata, before, &fold);
        size_t n = 0, first = 0, lcp = 0;
        for (size_t i = 0; cands && cands[i]; i++) {
                bool match = fold ? strncasecmp(cands[i], word, wlen) == 0
                                  : strncmp(cands[i], word, wlen) == 0;
                if (!match) {
                        free(cands[i]);
                        cands[i] = strdup("");    /* keep the array dense; skipped below */
                        continue;
                }
                if (n == 0) {
                        first = i;
                        lcp = strlen(cands[i]);
                } else
                        lcp = MIN(lcp, common_prefix(cands[first], cands[i], fold));
                n++;
        }
        unsigned char ret = CC_REFRESH_BEEP;
        if (n == 1 || (n > 1 && lcp > wlen)) {
                char *text = strndup(cands[first], n == 1 ? strlen(cands[first]) : lcp);
                if (text) {
                        el_deletestr(el, (int) wlen);
                        (void) el_insertstr(el, text);
                        if (n == 1)
                                (void) el_insertstr(el, " ");
                        free(text);
                        ret = CC_REFRESH;
                }
        } else if (n > 1) {
                fputc('\n', stdout);
                for (size_t i = 0, k = 0; cands[i]; i++)
                        if (cands[i][0])
                                printf("%s%s", k++ > 0 ? "  " : "", cands[i]);
                fputc('\n', stdout);
                fflush(stdout);
                ret = CC_REDISPLAY;
        }
        strv_free(cands);
        return ret;
}

static void history_setup(LineEditor *le, const char *name) {
        HistEvent ev;
        _cleanup_free_ char *dir = NULL;

        le->hist = history_init();
        if (!le->hist)
                return;
        (void) history(le->hist, &ev, H_SETSIZE, HISTORY_SIZE);
        (void) history(le->hist, &ev, H_SETUNIQUE, 1);
        el_set(le->el, EL_HIST, history, le->hist);
        le->history_path = line_editor_history_path(name);
        if (!le->history_path)
                return;
        dir = strdup(le->history_path);
        if (dir && strrchr(dir, '/'))
                *strrchr(dir, '/') = '\0';
        if (!dir || mkdir_p(dir, 0700, 0700) < 0) {
                free(le->history_path);
                le->history_path = NULL;
                return;
        }
        (void) history(le->hist, &ev, H_LOAD, le->history_path);
}

int line_editor_new(const char *prog, const char *prompt, const char *history_name,
                    LineEditor **ret) {
        LineEditor *le = calloc(1, sizeof(*le));

        if (!le)
                return -ENOMEM;
        le->prompt = strdup(prompt);
        if (!le->prompt) {
                free(le);
                return -ENOMEM;
        }
        if (isatty(STDIN_FILENO)) {
                le->el = el_init(prog, stdin, stdout, stderr);
                if (le->el) {
                        el_set(le->el, EL_CLIENTDATA, le);
                        el_set(le->el, EL_EDITOR, "emacs");
                        el_set(le->el, EL_SIGNAL, 1);
                        el_set(le->el, EL_PROMPT, prompt_of);
                        /* the wide call: the narrow one copies the two strings
                         * and never frees them (a leak LeakSanitizer reports) */
                        el_wset(le->el, EL_ADDFN, L"vmm-complete",
                                L"complete a command or VM id", on_complete);
                        el_set(le->el, EL_BIND, "^I", "vmm-complete", NULL);
                        history_setup(le, history_name);
                        (void) el_source(le->el, NULL);     /* ~/.editrc */
                }
        }
        *ret = le;
        return 0;
}

LineEditor *line_editor_free(LineEditor *le) {
        if (!le)
                return NULL;
        if (le->el)
                el_end(le->el);
        if (le->hist)
                history_end(le->hist);
        if (le->line)
                explicit_bzero(le->line, le->cap);
        free(le->line);
        free(le->prompt);
        free(le->history_path);
        free(le);
        return NULL;
}

bool line_editor_interactive(const LineEditor *le) {
        return le->el != NULL;
}

void line_editor_set_completion(LineEditor *le, LineCompleteFn fn, void *userdata) {
        le->complete = fn;
        le->userdata = userdata;
}

char *line_editor_read(LineEditor *le) {
        ssize_t n;

        if (le->el) {
                int count = 0;
                const char *s = el_gets(le->el, &count);
                if (!s || count <= 0) {
                        fputc('\n', stdout);    /* end the prompt's line */
                        return NULL;
                }
                n = (ssize_t) strlen(s);
                if ((size_t) n + 1 > le->cap) {
                        char *p = realloc(le->line, (size_t) n + 1);
                        if (!p)
                                return NULL;
                        le->line = p;
                        le->cap = (size_t) n + 1;
                }
                memcpy(le->line, s, (size_t) n + 1);
        } else {
                n = getline(&le->line, &le->cap, stdin);
                if (n < 0)
                        return NULL;
        }
        while (n > 0 && (le->line[n - 1] == '\n' || le->line[n - 1] == '\r'))
                le->line[--n] = '\0';
        return le->line;
}

void line_editor_remember(LineEditor *le, const char *line) {
        _cleanup_free_ char *copy = NULL;
        HistEvent ev;
        size_t n;

        if (!le->el || !le->hist || !line)
                return;
        /* without the blank a completion leaves at the end */
        n = strlen(line);
        while (n > 0 && isspace((unsigned char) line[n - 1]))
                n--;
        if (n == 0 || !(copy = strndup(line, n)))
                return;
        (void) history(le->hist, &ev, H_ENTER, copy);
        if (!le->history_path)
                return;
        /* the file is the user's alone, and never reached through a link */
        int fd = open(le->history_path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd < 0)
                return;
        (void) fchmod(fd, 0600);
        (void) close(fd);
        (void) history(le->hist, &ev, H_SAVE, le->history_path);
}
