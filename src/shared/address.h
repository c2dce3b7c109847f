/* SPDX-License-Identifier: MIT */
/* The one parser of "HOST:PORT" addresses that the clients accept
 * (libvmm, vmmbench): "host:port", "[v6addr]:port", "host", "v6addr". */
#pragma once

#include <stddef.h>

/* Splits s into host and port (copied, NUL-terminated). A missing port is
 * default_port; with default_port NULL a port is required. -EINVAL for a
 * malformed address, -ENAMETOOLONG when a part does not fit. */
int address_split(const char *s, const char *default_port, char *host, size_t host_size,
                  char *port, size_t port_size);
