/* SPDX-License-Identifier: MIT */
/* Discovery of the VM's own description and figures (see discover.h). */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <limits.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "discover.h"
#include "shared/macro.h"
#include "vmm/client.h"

#define GIB_SECTORS (1ull << 21)        /* 512-byte sectors in a GiB */

const char *discover_root(void) {
        const char *e = getenv("VMCLIENT_ROOT");
        return e && *e ? e : "/";
}

static bool root_is_real(const char *root) {
        return strcmp(root, "/") == 0;
}

/* root + path (path starts with '/'). */
static int root_path(const char *root, const char *path, char *buf, size_t size) {
        int n = snprintf(buf, size, "%s%s", root_is_real(root) ? "" : root, path);
        if (n < 0 || (size_t) n >= size)
                return -ENAMETOOLONG;
        return 0;
}

/* Reads at most size-1 bytes of root+path into buf, NUL-terminated; returns
 * the length or a negative errno. */
static ssize_t read_file(const char *root, const char *path, char *buf, size_t size) {
        char p[PATH_MAX];
        int r = root_path(root, path, p, sizeof p);
        if (r < 0)
                return r;
        _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        size_t n = 0;
        while (n + 1 < size) {
                ssize_t k = read(fd, buf + n, size - 1 - n);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                if (k == 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = '\0';
        return (ssize_t) n;
}

static char *strip(char *s) {
        while (isspace((unsigned char) *s))
                s++;
        size_t n = strlen(s);
        while (n > 0 && isspace((unsigned char) s[n - 1]))
                s[--n] = '\0';
        return s;
}

static bool id_char(char c) {
        return isalnum((unsigned char) c) || c == '.' || c == '_' || c == '-';
}

bool discover_vm_id_valid(const char *s) {
        size_t n = strlen(s);
        if (n < 1 || n > VMM_VM_ID_MAX || !isalnum((unsigned char) s[0]))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!id_char(s[i]) || (unsigned char) s[i] >= 0x80)
                        return false;
        return true;
}

/* RFC 1123: labels of 1-63 letters, digits and '-', not starting or ending
 * with '-', joined by '.'; at most 253 bytes in all. */
bool discover_hostname_valid(const char *s) {
        size_t n = strlen(s), label = 0;
        if (n < 1 || n > VMM_HOSTNAME_MAX)
                return false;
        for (size_t i = 0; i <= n; i++) {
                char c = s[i];
                if (c == '.' || c == '\0') {
                        if (label == 0 || label > 63 || s[i - 1] == '-')
                                return false;
                        label = 0;
                        continue;
                }
                if (!(isascii((unsigned char) c) && (isalnum((unsigned char) c) || c == '-')))
                        return false;
                if (label == 0 && c == '-')
                        return false;
                label++;
        }
        return true;
}

/* ---- RAM and CPUs ---- */

static int meminfo_field(const char *text, const char *key, uint64_t *ret_kib) {
        size_t klen = strlen(key);
        for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
                if (strncmp(p, key, klen) != 0 || p[klen] != ':')
                        continue;
                char *end;
                errno = 0;
                unsigned long long v = strtoull(p + klen + 1, &end, 10);
                if (errno != 0 || end == p + klen + 1)
                        return -EINVAL;
                *ret_kib = v;
                return 0;
        }
        return -ENOENT;
}

static int discover_ram(const char *root, uint64_t *ret) {
        char text[8192];
        uint64_t kib;
        ssize_t n = read_file(root, "/proc/meminfo", text, sizeof text);
        if (n < 0)
                return (int) n;
        int r = meminfo_field(text, "MemTotal", &kib);
        if (r < 0)
                return r;
        *ret = MIN(MAX(kib / 1024, (uint64_t) 1), (uint64_t) VMM_RAM_MAX);
        return 0;
}

/* "0-3,5,7-8" -> 7. */
static int cpu_list_count(const char *s, uint64_t *ret) {
        uint64_t count = 0;
        const char *p = s;
        while (*p) {
                char *end;
                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
                unsigned long a = strtoul(p, &end, 10), b = a;
                p = end;
                if (*p == '-') {
                        p++;
                        if (!isdigit((unsigned char) *p))
                                return -EINVAL;
                        b = strtoul(p, &end, 10);
                        p = end;
                        if (b < a)
                                return -EINVAL;
                }
                count += b - a + 1;
                if (*p == ',')
                        p++;
                else if (*p != '\0')
                        return -EINVAL;
        }
        if (count == 0)
                return -EINVAL;
        *ret = count;
        return 0;
}

static int discover_cpu(const char *root, uint64_t *ret) {
        char text[4096];
        uint64_t n;
        ssize_t k = read_file(root, "/sys/devices/system/cpu/online", text, sizeof text);
        if (k >= 0 && cpu_list_count(strip(text), &n) == 0) {
                *ret = MIN(n, (uint64_t) VMM_CPU_MAX);
                return 0;
        }
        if (!root_is_real(root))
                return k < 0 ? (int) k : -EINVAL;
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        if (c < 1)
                return -ENOENT;
        *ret = MIN((uint64_t) c, (uint64_t) VMM_CPU_MAX);
        return 0;
}

/* ---- disks ---- */

static bool disk_skipped(const char *name) {
        static const char *const prefixes[] = { "loop", "ram", "zram", "dm-" };
        for (size_t i = 0; i < ELEMENTSOF(prefixes); i++)
                if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
                        return true;
        return false;
}

/* Serial or WWN text as a disk id: outer blanks trimmed, characters outside
 * [A-Za-z0-9._-] turned into '_', cut to 64 bytes; an id must start with a
 * letter or digit, so anything before the first one is dropped. Returns
 * false when nothing is left. */
static bool id_from_text(const char *text, size_t len, char ret[VMM_DISK_ID_MAX + 1]) {
        while (len > 0 && (isspace((unsigned char) *text) || *text == '\0')) {
                text++;
                len--;
        }
        while (len > 0 && (isspace((unsigned char) text[len - 1]) || text[len - 1] == '\0'))
                len--;
        char buf[4 * VMM_DISK_ID_MAX];
        size_t n = 0;
        for (size_t i = 0; i < len && n < sizeof buf - 1; i++)
                buf[n++] = id_char(text[i]) && (unsigned char) text[i] < 0x80 ? text[i] : '_';
        buf[n] = '\0';
        size_t skip = 0;
        while (skip < n && !isalnum((unsigned char) buf[skip]))
                skip++;
        if (skip == n)
                return false;
        snprintf(ret, VMM_DISK_ID_MAX + 1, "%.*s", VMM_DISK_ID_MAX, buf + skip);
        return true;
}

/* The serial in SCSI VPD page 0x80: a 4-byte header whose last byte is the
 * length of the serial that follows. */
static bool id_from_vpd80(const char *data, size_t len, char ret[VMM_DISK_ID_MAX + 1]) {
        if (len < 4 || (unsigned char) data[1] != 0x80)
                return false;
        size_t n = MIN((size_t) (unsigned char) data[3], len - 4);
        return id_from_text(data + 4, n, ret);
}

static bool id_taken(const Description *d, const char *id) {
        for (size_t i = 0; i < d->n_disks; i++)
                if (strcmp(d->disks[i].id, id) == 0)
                        return true;
        return false;
}

/* The first of the disk's serial and WWN files that gives an id not used by
 * an earlier disk of this VM (NVMe namespaces share their controller's
 * serial), else <vm_id>-<name>. */
static void disk_id(const char *root, const Description *d, DiskInfo *disk) {
        static const char *const sources[] = {
                "serial", "device/serial", "device/vpd_pg80", "device/wwid", "wwid",
        };
        for (size_t i = 0; i < ELEMENTSOF(sources); i++) {
                char path[PATH_MAX], data[1024];
                if (snprintf(path, sizeof path, "/sys/block/%s/%s", disk->name, sources[i]) >=
                    (int) sizeof path)
                        continue;
                ssize_t n = read_file(root, path, data, sizeof data);
                if (n <= 0)
                        continue;
                bool ok = strcmp(sources[i], "device/vpd_pg80") == 0
                                ? id_from_vpd80(data, (size_t) n, disk->id)
                                : id_from_text(data, (size_t) n, disk->id);
                if (ok && !id_taken(d, disk->id)) {
                        disk->id_source = sources[i];
                        return;
                }
        }
        char fallback[128];
        snprintf(fallback, sizeof fallback, "%s%s%s", d->has_vm_id ? d->vm_id : "",
                 d->has_vm_id ? "-" : "", disk->name);
        if (!id_from_text(fallback, strlen(fallback), disk->id))
                snprintf(disk->id, sizeof disk->id, "disk");
        disk->id_source = "name";
}

/* The kernel's order of device names: runs of digits compare as numbers,
 * other runs shorter first, then byte by byte (sdz < sdaa, nvme0n2 < nvme0n10). */
static int name_cmp(const void *x, const void *y) {
        const char *a = *(char *const *) x, *b = *(char *const *) y;
        while (*a && *b) {
                bool da = isdigit((unsigned char) *a), db = isdigit((unsigned char) *b);
                if (da != db)
                        return da ? -1 : 1;
                size_t la = 0, lb = 0;
                while (a[la] && !!isdigit((unsigned char) a[la]) == da)
                        la++;
                while (b[lb] && !!isdigit((unsigned char) b[lb]) == db)
                        lb++;
                if (da) {
                        /* numbers: without leading zeros, the longer is larger */
                        size_t za = 0, zb = 0;
                        while (za + 1 < la && a[za] == '0')
                                za++;
                        while (zb + 1 < lb && b[zb] == '0')
                                zb++;
                        if (la - za != lb - zb)
                                return la - za < lb - zb ? -1 : 1;
                        int c = memcmp(a + za, b + zb, la - za);
                        if (c != 0)
                                return c;
                } else {
                        if (la != lb)
                                return la < lb ? -1 : 1;
                        int c = memcmp(a, b, la);
                        if (c != 0)
                                return c;
                }
                a += la;
                b += lb;
        }
        return (unsigned char) *a - (unsigned char) *b;
}

/* The names under ROOT/sys/block, in version order (sda < sdb < sdaa). */
static int block_names(const char *root, char ***ret, size_t *ret_n) {
        char p[PATH_MAX];
        int r = root_path(root, "/sys/block", p, sizeof p);
        if (r < 0)
                return r;
        DIR *dir = opendir(p);
        if (!dir)
                return negative_errno();
        char **names = NULL;
        size_t n = 0;
        struct dirent *de;
        r = 0;
        while ((de = readdir(dir))) {
                if (de->d_name[0] == '.' || strlen(de->d_name) >= sizeof((DiskInfo) { 0 }.name))
                        continue;
                char **more = realloc(names, (n + 1) * sizeof(char *));
                if (!more) {
                        r = -ENOMEM;
                        break;
                }
                names = more;
                names[n] = strdup(de->d_name);
                if (!names[n]) {
                        r = -ENOMEM;
                        break;
                }
                n++;
        }
        closedir(dir);
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        free(names[i]);
                free(names);
                return r;
        }
        if (n > 0)
                qsort(names, n, sizeof(char *), name_cmp);
        *ret = names;
        *ret_n = n;
        return 0;
}

static void names_free(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

static int read_uint_file(const char *root, const char *path, uint64_t *ret) {
        char text[64];
        ssize_t n = read_file(root, path, text, sizeof text);
        if (n < 0)
                return (int) n;
        char *s = strip(text), *end;
        if (!isdigit((unsigned char) *s))
                return -EINVAL;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

static void discover_disks(const char *root, bool all, Description *d) {
        char **names = NULL;
        size_t n = 0;
        if (block_names(root, &names, &n) < 0)
                return;
        for (size_t i = 0; i < n && d->n_disks < VMM_MAX_DISKS; i++) {
                char path[PATH_MAX];
                uint64_t sectors = 0;
                if (!all && disk_skipped(names[i]))
                        continue;
                snprintf(path, sizeof path, "/sys/block/%s/size", names[i]);
                if (read_uint_file(root, path, &sectors) < 0 || sectors == 0)
                        continue;       /* no medium, or not a block device we know */
                DiskInfo *disk = &d->disks[d->n_disks];
                *disk = (DiskInfo) { 0 };
                snprintf(disk->name, sizeof disk->name, "%s", names[i]);
                uint64_t gib = sectors / GIB_SECTORS + (sectors % GIB_SECTORS >= GIB_SECTORS / 2);
                disk->size = MIN(MAX(gib, (uint64_t) 1), (uint64_t) VMM_DISK_SIZE_MAX);
                disk_id(root, d, disk);
                d->n_disks++;
        }
        names_free(names, n);
}

/* ---- hostname, addresses, OS ---- */

static void discover_hostname(const char *root, Description *d) {
        char text[512];
        if (root_is_real(root)) {
                if (gethostname(text, sizeof text) < 0)
                        return;
                text[sizeof text - 1] = '\0';
        } else if (read_file(root, "/proc/sys/kernel/hostname", text, sizeof text) < 0)
                return;
        char *s = strip(text);
        if (!discover_hostname_valid(s))
                return;
        d->has_hostname = true;
        snprintf(d->hostname, sizeof d->hostname, "%s", s);
}

typedef struct Addr {
        int family;
        uint8_t bytes[16];
} Addr;

/* Neither unspecified, loopback nor link-local. */
static bool addr_wanted(const Addr *a) {
        static const uint8_t zero[16];
        if (a->family == AF_INET) {
                const uint8_t *b = a->bytes;
                return !(b[0] == 0 || b[0] == 127 || (b[0] == 169 && b[1] == 254));
        }
        const uint8_t *b = a->bytes;
        if (memcmp(b, zero, 16) == 0)
                return false;                                   /* :: */
        if (memcmp(b, zero, 15) == 0 && b[15] == 1)
                return false;                                   /* ::1 */
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
                return false;                                   /* fe80::/10 */
        return true;
}

static int addr_cmp(const void *x, const void *y) {
        const Addr *a = x, *b = y;
        if (a->family != b->family)
                return a->family == AF_INET ? -1 : 1;
        return memcmp(a->bytes, b->bytes, a->family == AF_INET ? 4 : 16);
}

static void addr_add(Addr *list, size_t *n, size_t max, const Addr *a) {
        if (!addr_wanted(a) || *n >= max)
                return;
        for (size_t i = 0; i < *n; i++)
                if (addr_cmp(&list[i], a) == 0)
                        return;
        list[(*n)++] = *a;
}

#define ADDR_SCAN_MAX 256

static void addrs_from_file(const char *root, Addr *list, size_t *n) {
        char text[16384];
        if (read_file(root, "/ip-addresses", text, sizeof text) < 0)
                return;
        for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                char *s = strip(line);
                Addr a = { 0 };
                if (inet_pton(AF_INET, s, a.bytes) == 1)
                        a.family = AF_INET;
                else if (inet_pton(AF_INET6, s, a.bytes) == 1)
                        a.family = AF_INET6;
                else
                        continue;
                addr_add(list, n, ADDR_SCAN_MAX, &a);
        }
}

static void addrs_from_system(Addr *list, size_t *n) {
        struct ifaddrs *ifa = NULL;
        if (getifaddrs(&ifa) < 0)
                return;
        for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
                if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) || !(i->ifa_flags & IFF_UP))
                        continue;
                Addr a = { .family = i->ifa_addr->sa_family };
                if (a.family == AF_INET)
                        memcpy(a.bytes, &((struct sockaddr_in *) i->ifa_addr)->sin_addr, 4);
                else if (a.family == AF_INET6)
                        memcpy(a.bytes, &((struct sockaddr_in6 *) i->ifa_addr)->sin6_addr, 16);
                else
                        continue;
                addr_add(list, n, ADDR_SCAN_MAX, &a);
        }
        freeifaddrs(ifa);
}

static void discover_ip(const char *root, Description *d) {
        Addr list[ADDR_SCAN_MAX];
        size_t n = 0;
        if (root_is_real(root))
                addrs_from_system(list, &n);
        else
                addrs_from_file(root, list, &n);
        if (n > 0)
                qsort(list, n, sizeof(Addr), addr_cmp);
        for (size_t i = 0; i < n && d->n_ip < VMM_IP_MAX; i++)
                if (inet_ntop(list[i].family, list[i].bytes, d->ip[d->n_ip], INET6_ADDRSTRLEN))
                        d->n_ip++;
}

/* One os-release value: "double quoted" (with \ escapes), 'single quoted' or
 * bare; control characters dropped, cut to the field size on a UTF-8
 * character boundary. */
static void os_value(const char *v, char *out, size_t size) {
        size_t o = 0;
        char quote = 0;
        if (*v == '"' || *v == '\'')
                quote = *v++;
        for (; *v && o + 1 < size; v++) {
                char c = *v;
                if (quote && c == quote)
                        break;
                if (quote == '"' && c == '\\' && v[1]) {
                        c = *++v;
                } else if (!quote && (c == '#' || isspace((unsigned char) c)))
                        break;
                if ((unsigned char) c < 0x20 || c == 0x7f)
                        continue;
                out[o++] = c;
        }
        /* do not end inside a multi-byte character */
        if (o + 1 >= size) {
                size_t k = o;
                while (k > 0 && ((unsigned char) out[k - 1] & 0xc0) == 0x80)
                        k--;
                if (k > 0 && (unsigned char) out[k - 1] >= 0xc0) {
                        size_t need = (unsigned char) out[k - 1] >= 0xf0 ? 4
                                    : (unsigned char) out[k - 1] >= 0xe0 ? 3 : 2;
                        if (o - (k - 1) < need)
                                o = k - 1;
                }
        }
        out[o] = '\0';
}

static void discover_os(const char *root, Description *d) {
        char text[16384];
        char name[DISCOVER_OS_FIELD_MAX + 1] = "", id[DISCOVER_OS_FIELD_MAX + 1] = "",
             codename[DISCOVER_OS_FIELD_MAX + 1] = "";
        if (read_file(root, "/etc/os-release", text, sizeof text) < 0 &&
            read_file(root, "/usr/lib/os-release", text, sizeof text) < 0)
                return;
        for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save)) {
                char *s = strip(line);
                char *eq = strchr(s, '=');
                if (*s == '#' || !eq)
                        continue;
                *eq = '\0';
                if (strcmp(s, "NAME") == 0)
                        os_value(eq + 1, name, sizeof name);
                else if (strcmp(s, "VERSION_ID") == 0)
                        os_value(eq + 1, id, sizeof id);
                else if (strcmp(s, "VERSION_CODENAME") == 0)
                        os_value(eq + 1, codename, sizeof codename);
        }
        const char *version = *id ? id : codename;
        if (!*version)
                return;
        d->has_os = true;
        snprintf(d->os_name, sizeof d->os_name, "%s", *name ? name : "Linux");
        snprintf(d->os_version, sizeof d->os_version, "%s", version);
}

int discover(const DiscoverOptions *o, Description *ret) {
        const char *root = o->root ? o->root : discover_root();
        _cleanup_free_ Description *d = calloc(1, sizeof(Description));
        int r;

        if (!d)
                return -ENOMEM;
        r = discover_ram(root, &d->ram);
        if (r < 0)
                return r;
        r = discover_cpu(root, &d->cpu);
        if (r < 0)
                return r;
        discover_hostname(root, d);
        if (o->vm_id) {
                d->has_vm_id = true;
                snprintf(d->vm_id, sizeof d->vm_id, "%s", o->vm_id);
        } else if (d->has_hostname) {
                char shortname[VMM_HOSTNAME_MAX + 1];
                snprintf(shortname, sizeof shortname, "%.*s", (int) strcspn(d->hostname, "."),
                         d->hostname);
                if (discover_vm_id_valid(shortname)) {
                        d->has_vm_id = true;
                        memcpy(d->vm_id, shortname, strlen(shortname) + 1);
                }
        }
        discover_disks(root, o->all_disks, d);
        discover_ip(root, d);
        discover_os(root, d);
        memcpy(ret, d, sizeof *d);
        return 0;
}

/* ---- packing and comparing ---- */

unsigned description_present(const Description *d, unsigned what) {
        if (!d->has_vm_id)
                what &= ~DESC_VM_ID;
        if (!d->has_hostname)
                what &= ~DESC_HOSTNAME;
        if (!d->has_os)
                what &= ~DESC_OS;
        return what;
}

int description_pack(msgpack_packer *pk, const Description *d, unsigned what) {
        int r = 0;
        what = description_present(d, what);
        if (what & DESC_VM_ID)
                r |= vmm_pack_kv_str(pk, "vm_id", d->vm_id);
        if (what & DESC_RAM)
                r |= vmm_pack_kv_uint(pk, "ram", d->ram);
        if (what & DESC_CPU)
                r |= vmm_pack_kv_uint(pk, "cpu", d->cpu);
        if (what & DESC_HOSTNAME)
                r |= vmm_pack_kv_str(pk, "hostname", d->hostname);
        if (what & DESC_DISKS) {
                r |= vmm_pack_str(pk, "disks");
                r |= msgpack_pack_array(pk, (uint32_t) d->n_disks) ? -ENOMEM : 0;
                for (size_t i = 0; i < d->n_disks; i++) {
                        r |= msgpack_pack_map(pk, 2) ? -ENOMEM : 0;
                        r |= vmm_pack_kv_str(pk, "id", d->disks[i].id);
                        r |= vmm_pack_kv_uint(pk, "size", d->disks[i].size);
                }
        }
        if (what & DESC_IP) {
                r |= vmm_pack_str(pk, "ip");
                r |= msgpack_pack_array(pk, (uint32_t) d->n_ip) ? -ENOMEM : 0;
                for (size_t i = 0; i < d->n_ip; i++)
                        r |= vmm_pack_str(pk, d->ip[i]);
        }
        if (what & DESC_OS) {
                r |= vmm_pack_str(pk, "os");
                r |= msgpack_pack_map(pk, 2) ? -ENOMEM : 0;
                r |= vmm_pack_kv_str(pk, "name", d->os_name);
                r |= vmm_pack_kv_str(pk, "version", d->os_version);
        }
        return r ? -ENOMEM : 0;
}

static bool obj_str(const msgpack_object *o, char *buf, size_t size) {
        if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= size)
                return false;
        memcpy(buf, o->via.str.ptr, o->via.str.size);
        buf[o->via.str.size] = '\0';
        return true;
}

int description_from_record(const msgpack_object *rec, Description *ret, bool *ret_meta) {
        uint64_t v;

        if (!rec || rec->type != MSGPACK_OBJECT_MAP)
                return -EBADMSG;
        _cleanup_free_ Description *d = calloc(1, sizeof(Description));
        if (!d)
                return -ENOMEM;
        d->has_vm_id = obj_str(vmm_object_get(rec, "vm_id"), d->vm_id, sizeof d->vm_id);
        if (vmm_object_uint(vmm_object_get(rec, "ram"), &v))
                d->ram = v;
        if (vmm_object_uint(vmm_object_get(rec, "cpu"), &v))
                d->cpu = v;
        const msgpack_object *disks = vmm_object_get(rec, "disks");
        if (disks && disks->type == MSGPACK_OBJECT_ARRAY)
                for (uint32_t i = 0; i < disks->via.array.size && d->n_disks < VMM_MAX_DISKS;
                     i++) {
                        DiskInfo *k = &d->disks[d->n_disks];
                        *k = (DiskInfo) { .id_source = "server" };
                        if (!obj_str(vmm_object_get(&disks->via.array.ptr[i], "id"), k->id,
                                     sizeof k->id) ||
                            !vmm_object_uint(vmm_object_get(&disks->via.array.ptr[i], "size"),
                                             &k->size))
                                return -EBADMSG;
                        d->n_disks++;
                }
        const msgpack_object *host = vmm_object_get(rec, "hostname");
        const msgpack_object *ip = vmm_object_get(rec, "ip");
        const msgpack_object *os = vmm_object_get(rec, "os");
        d->has_hostname = obj_str(host, d->hostname, sizeof d->hostname);
        if (ip && ip->type == MSGPACK_OBJECT_ARRAY)
                for (uint32_t i = 0; i < ip->via.array.size && d->n_ip < VMM_IP_MAX; i++)
                        if (obj_str(&ip->via.array.ptr[i], d->ip[d->n_ip], INET6_ADDRSTRLEN))
                                d->n_ip++;
        d->has_os = obj_str(vmm_object_get(os, "name"), d->os_name, sizeof d->os_name) &&
                    obj_str(vmm_object_get(os, "version"), d->os_version, sizeof d->os_version);
        memcpy(ret, d, sizeof *d);
        if (ret_meta)
                *ret_meta = host || ip || os;
        return 0;
}

static int disk_cmp(const void *x, const void *y) {
        const DiskInfo *a = x, *b = y;
        int c = strcmp(a->id, b->id);
        return c != 0 ? c : (a->size > b->size) - (a->size < b->size);
}

static int ip_cmp(const void *x, const void *y) {
        return strcmp(x, y);
}

static bool disks_equal(const Description *a, const Description *b) {
        if (a->n_disks != b->n_disks)
                return false;
        if (a->n_disks == 0)
                return true;
        _cleanup_free_ DiskInfo *x = malloc(a->n_disks * sizeof(DiskInfo));
        _cleanup_free_ DiskInfo *y = malloc(b->n_disks * sizeof(DiskInfo));
        if (!x || !y)
                return false;            /* no memory: send the set again */
        memcpy(x, a->disks, a->n_disks * sizeof(DiskInfo));
        memcpy(y, b->disks, b->n_disks * sizeof(DiskInfo));
        qsort(x, a->n_disks, sizeof(DiskInfo), disk_cmp);
        qsort(y, b->n_disks, sizeof(DiskInfo), disk_cmp);
        for (size_t i = 0; i < a->n_disks; i++)
                if (disk_cmp(&x[i], &y[i]) != 0)
                        return false;
        return true;
}

static bool ips_equal(const Description *a, const Description *b) {
        char x[VMM_IP_MAX][INET6_ADDRSTRLEN], y[VMM_IP_MAX][INET6_ADDRSTRLEN];
        if (a->n_ip != b->n_ip)
                return false;
        memcpy(x, a->ip, sizeof x);
        memcpy(y, b->ip, sizeof y);
        qsort(x, a->n_ip, INET6_ADDRSTRLEN, ip_cmp);
        qsort(y, b->n_ip, INET6_ADDRSTRLEN, ip_cmp);
        for (size_t i = 0; i < a->n_ip; i++)
                if (strcmp(x[i], y[i]) != 0)
                        return false;
        return true;
}

unsigned description_diff(const Description *want, const Description *have, unsigned what) {
        unsigned diff = 0;
        if ((what & DESC_RAM) && want->ram != have->ram)
                diff |= DESC_RAM;
        if ((what & DESC_CPU) && want->cpu != have->cpu)
                diff |= DESC_CPU;
        if ((what & DESC_DISKS) && !disks_equal(want, have))
                diff |= DESC_DISKS;
        if ((what & DESC_HOSTNAME) && want->has_hostname &&
            (!have->has_hostname || strcmp(want->hostname, have->hostname) != 0))
                diff |= DESC_HOSTNAME;
        if ((what & DESC_IP) && !ips_equal(want, have))
                diff |= DESC_IP;
        if ((what & DESC_OS) && want->has_os &&
            (!have->has_os || strcmp(want->os_name, have->os_name) != 0 ||
             strcmp(want->os_version, have->os_version) != 0))
                diff |= DESC_OS;
        return diff;
}

/* ---- vm.report figures ---- */

/* Block device numbers ("8:1") and what they sit on, from ROOT/sys/block:
 * a disk, a partition of a disk, or a holder (dm, md) over other devices. */
typedef struct BlockDev {
        char name[64];
        char dev[24];
        char parent[64];          /* the disk of a partition; "" otherwise */
        char **slaves;            /* names below a holder */
        size_t n_slaves;
} BlockDev;

typedef struct BlockMap {
        BlockDev *devs;
        size_t n;
} BlockMap;

static void block_map_done(BlockMap *m) {
        for (size_t i = 0; i < m->n; i++)
                names_free(m->devs[i].slaves, m->devs[i].n_slaves);
        free(m->devs);
        *m = (BlockMap) { 0 };
}

static BlockDev *block_map_add(BlockMap *m, const char *root, const char *dir, const char *name,
                               const char *parent) {
        char path[PATH_MAX], dev[64];
        if (snprintf(path, sizeof path, "%s/dev", dir) >= (int) sizeof path ||
            read_file(root, path, dev, sizeof dev) <= 0)
                return NULL;
        BlockDev *more = realloc(m->devs, (m->n + 1) * sizeof(BlockDev));
        if (!more)
                return NULL;
        m->devs = more;
        BlockDev *b = &m->devs[m->n++];
        *b = (BlockDev) { 0 };
        snprintf(b->name, sizeof b->name, "%s", name);
        snprintf(b->dev, sizeof b->dev, "%s", strip(dev));
        snprintf(b->parent, sizeof b->parent, "%s", parent ? parent : "");
        return b;
}

static void block_map_build(const char *root, BlockMap *m) {
        char **names = NULL;
        size_t n = 0;
        if (block_names(root, &names, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                char dir[PATH_MAX], path[PATH_MAX], full[PATH_MAX];
                snprintf(dir, sizeof dir, "/sys/block/%s", names[i]);
                BlockDev *b = block_map_add(m, root, dir, names[i], NULL);
                if (!b)
                        continue;
                /* holders (dm, md): what they are built on */
                if (snprintf(path, sizeof path, "%s/slaves", dir) < (int) sizeof path &&
                    root_path(root, path, full, sizeof full) == 0) {
                        DIR *s = opendir(full);
                        struct dirent *de;
                        while (s && (de = readdir(s))) {
                                if (de->d_name[0] == '.')
                                        continue;
                                char **more = realloc(b->slaves,
                                                      (b->n_slaves + 1) * sizeof(char *));
                                if (!more)
                                        break;
                                b->slaves = more;
                                if (!(b->slaves[b->n_slaves] = strdup(de->d_name)))
                                        break;
                                b->n_slaves++;
                        }
                        if (s)
                                closedir(s);
                }
                /* partitions: subdirectories with a "partition" file */
                if (root_path(root, dir, full, sizeof full) < 0)
                        continue;
                DIR *p = opendir(full);
                struct dirent *de;
                char **parts = NULL;
                size_t n_parts = 0;
                while (p && (de = readdir(p))) {
                        char probe[PATH_MAX], buf[16];
                        if (de->d_name[0] == '.' || strncmp(de->d_name, names[i],
                                                            strlen(names[i])) != 0)
                                continue;
                        if (snprintf(probe, sizeof probe, "%s/%s/partition", dir, de->d_name) >=
                                    (int) sizeof probe ||
                            read_file(root, probe, buf, sizeof buf) < 0)
                                continue;
                        char **more = realloc(parts, (n_parts + 1) * sizeof(char *));
                        if (!more)
                                break;
                        parts = more;
                        if (!(parts[n_parts] = strdup(de->d_name)))
                                break;
                        n_parts++;
                }
                if (p)
                        closedir(p);
                /* b may move when partitions are added: keep its name */
                char disk[64];
                snprintf(disk, sizeof disk, "%s", names[i]);
                for (size_t k = 0; k < n_parts; k++) {
                        char pdir[PATH_MAX];
                        if (snprintf(pdir, sizeof pdir, "%s/%s", dir, parts[k]) <
                            (int) sizeof pdir)
                                (void) block_map_add(m, root, pdir, parts[k], disk);
                }
                names_free(parts, n_parts);
        }
        names_free(names, n);
}

static const BlockDev *block_by(const BlockMap *m, const char *dev, const char *name) {
        for (size_t i = 0; i < m->n; i++)
                if ((dev && strcmp(m->devs[i].dev, dev) == 0) ||
                    (name && strcmp(m->devs[i].name, name) == 0))
                        return &m->devs[i];
        return NULL;
}

/* The one disk a device sits on, or NULL when none or several. */
static const char *block_disk(const BlockMap *m, const BlockDev *b, unsigned depth) {
        if (!b || depth > 8)
                return NULL;
        if (b->parent[0])
                return b->parent;
        if (b->n_slaves == 0)
                return b->name;
        const char *disk = NULL;
        for (size_t i = 0; i < b->n_slaves; i++) {
                const char *d = block_disk(m, block_by(m, NULL, b->slaves[i]), depth + 1);
                if (!d || (disk && strcmp(d, disk) != 0))
                        return NULL;
                disk = d;
        }
        return disk;
}

/* mountinfo escapes blanks and backslashes as \ooo. */
static void unescape_octal(char *s) {
        char *o = s;
        for (char *p = s; *p; p++) {
                if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
                    p[3] >= '0' && p[3] <= '7') {
                        *o++ = (char) ((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                        p += 3;
                } else
                        *o++ = *p;
        }
        *o = '\0';
}

static void disks_used(const char *root, const Description *d, Metrics *m) {
        char path[PATH_MAX];
        if (root_path(root, "/proc/self/mountinfo", path, sizeof path) < 0)
                return;
        FILE *f = fopen(path, "re");
        if (!f)
                return;
        BlockMap map = { 0 };
        block_map_build(root, &map);
        uint64_t used_bytes[VMM_MAX_DISKS] = { 0 };
        bool seen_disk[VMM_MAX_DISKS] = { 0 };
        char (*seen_dev)[24] = NULL;
        size_t n_seen = 0;
        char *line = NULL;
        size_t cap = 0;
        while (getline(&line, &cap, f) > 0) {
                /* id parent MAJ:MIN root mountpoint ... */
                char dev[24], mnt[PATH_MAX];
                if (sscanf(line, "%*s %*s %23s %*s %4095s", dev, mnt) != 2)
                        continue;
                if (strncmp(dev, "0:", 2) == 0)
                        continue;               /* no block device (tmpfs, proc ...) */
                bool dup = false;
                for (size_t i = 0; i < n_seen && !dup; i++)
                        dup = strcmp(seen_dev[i], dev) == 0;
                if (dup)
                        continue;               /* the same file system mounted again */
                const char *disk = block_disk(&map, block_by(&map, dev, NULL), 0);
                if (!disk)
                        continue;
                size_t k = 0;
                while (k < d->n_disks && strcmp(d->disks[k].name, disk) != 0)
                        k++;
                if (k == d->n_disks)
                        continue;
                unescape_octal(mnt);
                char full[PATH_MAX];
                struct statvfs sv;
                if (root_path(root, mnt, full, sizeof full) < 0 || statvfs(full, &sv) < 0)
                        continue;
                char (*more)[24] = realloc(seen_dev, (n_seen + 1) * sizeof(*seen_dev));
                if (!more)
                        break;
                seen_dev = more;
                snprintf(seen_dev[n_seen++], sizeof seen_dev[0], "%s", dev);
                used_bytes[k] += (uint64_t) (sv.f_blocks - sv.f_bfree) * sv.f_frsize;
                seen_disk[k] = true;
        }
        free(line);
        free(seen_dev);
        fclose(f);
        block_map_done(&map);
        for (size_t k = 0; k < d->n_disks; k++) {
                if (!seen_disk[k])
                        continue;
                DiskUsed *u = &m->used[m->n_used++];
                snprintf(u->id, sizeof u->id, "%s", d->disks[k].id);
                u->used = (used_bytes[k] + (1ull << 29)) >> 30;
        }
}

void metrics_collect(const char *root, const Description *d, Metrics *ret) {
        char text[8192];
        Metrics *m = ret;
        memset(m, 0, sizeof *m);
        if (!root)
                root = discover_root();
        if (read_file(root, "/proc/loadavg", text, sizeof text) > 0 &&
            sscanf(text, "%lf %lf %lf", &m->load[0], &m->load[1], &m->load[2]) == 3)
                m->has_load = true;
        if (read_file(root, "/proc/meminfo", text, sizeof text) > 0) {
                uint64_t total, avail, free_, buffers = 0, cached = 0;
                if (meminfo_field(text, "MemTotal", &total) == 0) {
                        if (meminfo_field(text, "MemAvailable", &avail) < 0) {
                                /* kernels before 3.14 */
                                avail = meminfo_field(text, "MemFree", &free_) == 0 ? free_ : 0;
                                (void) meminfo_field(text, "Buffers", &buffers);
                                (void) meminfo_field(text, "Cached", &cached);
                                avail += buffers + cached;
                        }
                        m->has_mem = true;
                        m->mem_total = total / 1024;
                        m->mem_used = (total > avail ? total - avail : 0) / 1024;
                }
        }
        double up;
        if (read_file(root, "/proc/uptime", text, sizeof text) > 0 &&
            sscanf(text, "%lf", &up) == 1 && up >= 0) {
                m->has_uptime = true;
                m->uptime = (uint64_t) up;
        }
        disks_used(root, d, m);
}

uint32_t metrics_count(const Metrics *m) {
        return (uint32_t) m->has_load + 2u * m->has_mem + m->has_uptime + (m->n_used > 0);
}

int metrics_pack(msgpack_packer *pk, const Metrics *m) {
        int r = 0;
        if (m->has_load) {
                r |= vmm_pack_str(pk, "load");
                r |= msgpack_pack_array(pk, 3) ? -ENOMEM : 0;
                for (int i = 0; i < 3; i++)
                        r |= msgpack_pack_double(pk, m->load[i]) ? -ENOMEM : 0;
        }
        if (m->has_mem) {
                r |= vmm_pack_kv_uint(pk, "mem_total", m->mem_total);
                r |= vmm_pack_kv_uint(pk, "mem_used", m->mem_used);
        }
        if (m->has_uptime)
                r |= vmm_pack_kv_uint(pk, "uptime", m->uptime);
        if (m->n_used > 0) {
                r |= vmm_pack_str(pk, "disks_used");
                r |= msgpack_pack_array(pk, (uint32_t) m->n_used) ? -ENOMEM : 0;
                for (size_t i = 0; i < m->n_used; i++) {
                        r |= msgpack_pack_map(pk, 2) ? -ENOMEM : 0;
                        r |= vmm_pack_kv_str(pk, "id", m->used[i].id);
                        r |= vmm_pack_kv_uint(pk, "used", m->used[i].used);
                }
        }
        return r ? -ENOMEM : 0;
}
