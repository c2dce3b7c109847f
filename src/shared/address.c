/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "shared/address.h"

static int copy_part(const char *p, size_t n, char *buf, size_t size) {
        if (n == 0)
                return -EINVAL;
        if (n >= size)
                return -ENAMETOOLONG;
        memcpy(buf, p, n);
        buf[n] = '\0';
        return 0;
}

int address_split(const char *s, const char *default_port, char *host, size_t host_size,
                  char *port, size_t port_size) {
        const char *h = s, *p = NULL;
        size_t hlen;
        int r;

        if (!s || !*s)
                return -EINVAL;
        if (s[0] == '[') {
                const char *end = strchr(s, ']');
                if (!end)
                        return -EINVAL;
                h = s + 1;
                hlen = (size_t) (end - h);
                if (end[1] == ':')
                        p = end + 2;
                else if (end[1] != '\0')
                        return -EINVAL;
        } else {
                const char *colon = strchr(s, ':');
                if (colon && !strchr(colon + 1, ':')) {
                        /* exactly one ':' is host:port; more is a bare IPv6 address */
                        hlen = (size_t) (colon - s);
                        p = colon + 1;
                } else
                        hlen = strlen(s);
        }
        r = copy_part(h, hlen, host, host_size);
        if (r < 0)
                return r;
        if (!p) {
                if (!default_port)
                        return -EINVAL;
                p = default_port;
        }
        return copy_part(p, strlen(p), port, port_size);
}
