/* SPDX-License-Identifier: MIT */
#include <string.h>

#include "vmm/protocol.h"

static const char *const error_names[_VMM_E_MAX] = {
        [VMM_E_BAD_REQUEST] = "bad_request",
        [VMM_E_UNKNOWN_METHOD] = "unknown_method",
        [VMM_E_TOO_LARGE] = "too_large",
        [VMM_E_UNAUTHENTICATED] = "unauthenticated",
        [VMM_E_RATE_LIMITED] = "rate_limited",
        [VMM_E_FORBIDDEN] = "forbidden",
        [VMM_E_NOT_FOUND] = "not_found",
        [VMM_E_EXISTS] = "exists",
        [VMM_E_CONFLICT] = "conflict",
        [VMM_E_UNAVAILABLE] = "unavailable",
        [VMM_E_SHUTTING_DOWN] = "shutting_down",
        [VMM_E_INTERNAL] = "internal",
};

const char *vmm_error_to_string(VmmError e) {
        if (e <= VMM_OK || e >= _VMM_E_MAX)
                return NULL;
        return error_names[e];
}

VmmError vmm_error_from_string(const char *s, size_t len) {
        for (int e = VMM_OK + 1; e < _VMM_E_MAX; e++)
                if (strlen(error_names[e]) == len && memcmp(error_names[e], s, len) == 0)
                        return (VmmError) e;
        return _VMM_E_INVALID;
}
