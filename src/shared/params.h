/* SPDX-License-Identifier: MIT */
/* Declarative request parameters: one function fills a struct from the params
 * array of a request and rejects anything the contract does not allow, naming
 * the field. One module serves both sockets. */
#pragma once

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmm/protocol.h"

/* A string inside the decoded message (not NUL-terminated; lives as long as the
 * msgpack zone of the request). */
typedef struct ParamStr {
        bool set;
        bool nil;         /* given as nil (fields with .nullable) */
        const char *ptr;
        size_t len;
} ParamStr;

typedef struct ParamUint {
        bool set;
        bool nil;         /* given as nil (fields with .nullable) */
        uint64_t v;
} ParamUint;

typedef struct ParamBool {
        bool set;
        bool v;
} ParamBool;

/* A list whose items were each checked (PARAM_STRS: strings as the field's
 * min/max/check say; PARAM_UINTS: integers in min..max); the items stay in
 * the request's decoded message. */
typedef struct ParamList {
        bool set;
        bool nil;
        uint32_t n;
        const msgpack_object *items;
} ParamList;

/* Any value that the field's check_obj accepted. */
typedef struct ParamAny {
        bool set;
        const msgpack_object *o;
} ParamAny;

typedef struct ParamDisk {
        ParamStr id;      /* id.set false: the daemon assigns <vm_id>-disk<N> */
        uint64_t size;
} ParamDisk;

typedef struct ParamDisks {
        bool set;
        size_t n;
        ParamDisk d[VMM_MAX_DISKS];
} ParamDisks;

typedef enum ParamType {
        PARAM_STR,        /* ParamStr; min/max are byte lengths; check() if given */
        PARAM_UINT,       /* ParamUint; min/max are the value range */
        PARAM_DISKS,      /* ParamDisks: array of {"id"?, "size"} maps, 0..VMM_MAX_DISKS */
        PARAM_FD_MARKER,  /* reserved for the admin socket (backup); never filled here */
        PARAM_BOOL,       /* ParamBool */
        PARAM_STRS,       /* ParamList of strings; item lengths min..max, max_items */
        PARAM_UINTS,      /* ParamList of integers in min..max, max_items */
        PARAM_ANY,        /* ParamAny; check_obj decides */
        _PARAM_TYPE_MAX,
        _PARAM_TYPE_INVALID = -1,
} ParamType;

/* At most this many fields per method. */
#define PARAMS_FIELDS_MAX 32

/* For PARAM_STR, max == 0 means no upper length bound; for PARAM_UINT,
 * min == max == 0 means any unsigned 64-bit value. */
typedef struct ParamField {
        const char *name;
        ParamType type;
        size_t offset;            /* of the ParamStr/ParamUint/ParamDisks in the output struct */
        bool mandatory;
        uint64_t min, max;
        /* For PARAM_STR: extra check of the value; returns false if invalid.
         * For PARAM_STR with a fixed set of values, see choices. */
        bool (*check)(const char *s, size_t len);
        const char *const *choices;   /* NULL-terminated; the value must be one of these */
        /* (part 2) lists: at most this many items, more is too_large */
        uint32_t max_items;
        /* nil is accepted (PARAM_STR, PARAM_UINT, PARAM_STRS): .nil set */
        bool nullable;
        /* PARAM_ANY: returns false with msg filled when o is not acceptable */
        bool (*check_obj)(const msgpack_object *o, char *msg, size_t msglen);
} ParamField;

typedef struct ParamError {
        VmmError code;            /* VMM_E_BAD_REQUEST or VMM_E_TOO_LARGE */
        char message[200];        /* e.g. "ram: expected an integer in 1..4294967295" */
} ParamError;

/* params: the 4th element of a request. Accepts [] and [map]; anything else is
 * bad_request. fields[0..n_fields) describe the allowed keys. If ret_token is
 * not NULL, the key "token" is also allowed (a 43-character token string;
 * other shapes are bad_request) and stored there; otherwise "token" is an
 * unknown key. Unknown keys, duplicate keys, non-string keys, invalid UTF-8,
 * bin where a string is expected, float/bool/negative where an unsigned integer
 * is expected, out-of-range values and missing mandatory fields are
 * bad_request naming the field; more than VMM_MAX_DISKS disks is too_large;
 * a duplicate disk id within the request is bad_request.
 * When several problems exist, bad_request wins over too_large.
 * out is zeroed first (each field's ParamStr/ParamUint/ParamDisks; *ret_token too).
 * Returns 0, or -EINVAL with *err filled (or -ENOMEM with err->code
 * VMM_E_INTERNAL when a large disk list could not be checked). */
int params_parse(const msgpack_object *params, const ParamField *fields, size_t n_fields,
                 void *out, ParamStr *ret_token, ParamError *err);
/* The same; ret_peer (may be NULL) also allows the key "peer" (a trusted
 * proxy's client address: 1..45 bytes of an IP address's characters). */
int params_parse_ex(const msgpack_object *params, const ParamField *fields, size_t n_fields,
                    void *out, ParamStr *ret_token, ParamStr *ret_peer, ParamError *err);

/* The shape errors that need no schema, for any request before its method
 * is looked up: params [] or [{...}]; in every map, at any depth, keys that
 * are valid UTF-8 strings and none twice; every string valid UTF-8; no bin
 * (nothing in the protocol is binary). 0 or -EINVAL with *err (bad_request). */
int params_shape_check(const msgpack_object *params, ParamError *err);

/* Validators (also used by tools) */
bool valid_utf8(const char *s, size_t len);
/* 1..max bytes of [A-Za-z0-9._-], first a letter or digit */
bool valid_id(const char *s, size_t len, size_t max);
bool valid_vm_id(const char *s, size_t len);     /* valid_id(.., VMM_VM_ID_MAX) */
bool valid_disk_id(const char *s, size_t len);   /* valid_id(.., VMM_DISK_ID_MAX) */
bool valid_token(const char *s, size_t len);     /* 43 chars [A-Za-z0-9_-] */
/* 1..64 bytes of [A-Za-z0-9._@+-], first a letter or digit */
bool valid_user_name(const char *s, size_t len);
/* UTF-8 without control characters (C0, DEL, C1) */
bool valid_text_line(const char *s, size_t len);
/* text without control characters but tab and newline */
bool valid_text(const char *s, size_t len);
/* an RFC 1123 host name: labels of 1..63 [A-Za-z0-9-], not starting or
 * ending with '-', separated by '.', at most 253 bytes */
bool valid_hostname(const char *s, size_t len);
/* a textual IPv4 or IPv6 address */
bool valid_ip(const char *s, size_t len);
