/* SPDX-License-Identifier: MIT */
/* The page's files, read once at start from one directory (installed under
 * /usr/share/vmm-web, or --www-dir). Only the names read there can be
 * served: a request path is looked up by name, never opened, so no path
 * can leave the directory. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "web.h"

#define ASSETS_MAX       64
#define ASSET_BYTES_MAX  (4u * 1024u * 1024u)

typedef struct Asset {
        char *name;
        char *data;
        size_t size;
        const char *type;
        char etag[24];
} Asset;

struct Assets {
        Asset files[ASSETS_MAX];
        size_t n;
};

static const struct {
        const char *ext;
        const char *type;
} types[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".svg", "image/svg+xml" },
        { ".json", "application/json" },
        { ".webmanifest", "application/manifest+json" },
        { ".png", "image/png" },
        { ".ico", "image/x-icon" },
        { ".txt", "text/plain; charset=utf-8" },
};

static const char *type_of(const char *name) {
        size_t n = strlen(name);
        for (size_t i = 0; i < ELEMENTSOF(types); i++) {
                size_t e = strlen(types[i].ext);
                if (n > e && strcmp(name + n - e, types[i].ext) == 0)
                        return types[i].type;
        }
        return NULL;
}

static bool name_ok(const char *name) {
        if (!name[0] || name[0] == '.')
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
                        return false;
        return true;
}

static int load_one(Assets *a, int dirfd, const char *name) {
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || (size_t) st.st_size > ASSET_BYTES_MAX)
                return 0;
        Asset *f = &a->files[a->n];
        f->data = malloc((size_t) st.st_size + 1);
        f->name = strdup(name);
        if (!f->data || !f->name) {
                free(f->data);
                free(f->name);
                return -ENOMEM;
        }
        size_t got = 0;
        while (got < (size_t) st.st_size) {
                ssize_t k = read(fd, f->data + got, (size_t) st.st_size - got);
                if (k <= 0) {
                        free(f->data);
                        free(f->name);
                        return k < 0 ? -errno : -EIO;
                }
                got += (size_t) k;
        }
        f->size = got;
        f->type = type_of(name);
        uint8_t h[8];
        crypto_generichash(h, sizeof h, (const uint8_t *) f->data, f->size, NULL, 0);
        (void) snprintf(f->etag, sizeof f->etag, "\"%02x%02x%02x%02x%02x%02x%02x%02x\"", h[0],
                        h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
        a->n++;
        return 0;
}

int assets_load(const char *dir, Assets **ret) {
        Assets *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d) {
                int r = -errno;
                free(a);
                return log_error_errno(r, "Cannot open the page's directory %s: %s", dir,
                                       strerror(-r));
        }
        struct dirent *de;
        int r = 0;
        while ((de = readdir(d)) && r >= 0) {
                if (!name_ok(de->d_name) || !type_of(de->d_name))
                        continue;
                if (a->n >= ASSETS_MAX) {
                        log_warning("More than %d files in %s: the rest are not served",
                                    ASSETS_MAX, dir);
                        break;
                }
                r = load_one(a, dirfd(d), de->d_name);
        }
        (void) closedir(d);
        if (r < 0) {
                assets_free(a);
                return log_error_errno(r, "Cannot read the page's files in %s: %s", dir,
                                       strerror(-r));
        }
        if (!assets_has(a, "index.html"))
                log_warning("%s has no index.html: / will answer 404", dir);
        *ret = a;
        return 0;
}

Assets *assets_free(Assets *a) {
        if (!a)
                return NULL;
        for (size_t i = 0; i < a->n; i++) {
                free(a->files[i].name);
                free(a->files[i].data);
        }
        free(a);
        return NULL;
}

static const Asset *asset_find(const Assets *a, const char *name) {
        if (!a)
                return NULL;
        for (size_t i = 0; i < a->n; i++)
                if (strcmp(a->files[i].name, name) == 0)
                        return &a->files[i];
        return NULL;
}

bool assets_has(const Assets *a, const char *name) {
        return asset_find(a, name) != NULL;
}

static void serve(Req *req, const char *name) {
        const Asset *f = asset_find(req->web->assets, name);
        if (req->ready)
                return;
        if (!f) {
                reply_error(req, MHD_HTTP_NOT_FOUND, "not_found",
                            "there is nothing at this address");
                return;
        }
        req->etag = strdup(f->etag);
        req->resp_cache = "no-cache";
        const char *inm = req_header(req, "If-None-Match");
        if (inm && strcmp(inm, f->etag) == 0) {
                reply_static(req, MHD_HTTP_NOT_MODIFIED, NULL, "", 0);
                return;
        }
        reply_static(req, MHD_HTTP_OK, f->type, f->data, f->size);
}

void handle_static(Req *req) {
        const char *path = req->url;
        serve(req, strcmp(path, "/") == 0 ? "index.html" : path + 1);
}

void handle_openapi(Req *req) {
        serve(req, "openapi.json");
}
