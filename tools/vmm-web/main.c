/* SPDX-License-Identifier: MIT */
/* vmm-web: the HTTP/JSON gateway and web page in front of vmmd (vmm-web(8)). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "build-config.h"
#include "web.h"

static void help(void) {
        printf("vmm-web [OPTIONS]\n\n"
               "The HTTP/JSON gateway and web page of vmmd (see vmm-web(8)).\n\n"
               "  --listen HOST:PORT          listen here when not socket-activated\n"
               "                              (repeatable; default 127.0.0.1:8080)\n"
               "  --vmmd HOST:PORT            vmmd's TCP address (default 127.0.0.1:7707)\n"
               "  --www-dir DIR               the page's files (default %s)\n"
               "  --tls-cert FILE             PEM certificate: serve HTTPS (with --tls-key)\n"
               "  --tls-key FILE              PEM private key\n"
               "  --pool N                    persistent connections to vmmd (default 4)\n"
               "  --max-connections N         HTTP connections in all (default 4096)\n"
               "  --max-connections-per-ip N  HTTP connections per client address (default 256)\n"
               "  --idle-timeout SECONDS      close idle HTTP connections (default 30)\n"
               "  --no-peer                   do not tell vmmd the client's address at logins\n"
               "  --log-level LEVEL           err, warning, notice, info, debug (default info)\n"
               "  --list-routes               print the route table and exit\n"
               "  --help, --version\n",
               VMM_WEB_WWW_DIR);
}

static int parse_uint(const char *s, unsigned min, unsigned max, unsigned *ret) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (!*s || *end || v < min || v > max)
                return -EINVAL;
        *ret = (unsigned) v;
        return 0;
}

/* 1: exit 0 (help, version, routes); 0: run; < 0: usage error. */
static int parse_args(int argc, char *argv[], WebConfig *c) {
        enum {
                ARG_LISTEN = 0x100, ARG_VMMD, ARG_WWW, ARG_CERT, ARG_KEY, ARG_POOL, ARG_MAXC,
                ARG_MAXIP, ARG_IDLE, ARG_NOPEER, ARG_LOG, ARG_ROUTES, ARG_VERSION,
        };
        static const struct option opts[] = {
                { "listen", required_argument, NULL, ARG_LISTEN },
                { "vmmd", required_argument, NULL, ARG_VMMD },
                { "www-dir", required_argument, NULL, ARG_WWW },
                { "tls-cert", required_argument, NULL, ARG_CERT },
                { "tls-key", required_argument, NULL, ARG_KEY },
                { "pool", required_argument, NULL, ARG_POOL },
                { "max-connections", required_argument, NULL, ARG_MAXC },
                { "max-connections-per-ip", required_argument, NULL, ARG_MAXIP },
                { "idle-timeout", required_argument, NULL, ARG_IDLE },
                { "no-peer", no_argument, NULL, ARG_NOPEER },
                { "log-level", required_argument, NULL, ARG_LOG },
                { "list-routes", no_argument, NULL, ARG_ROUTES },
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { NULL, 0, NULL, 0 }
        };
        int o, lvl;

        *c = (WebConfig) {
                .vmmd = (char *) "127.0.0.1:7707",
                .www_dir = (char *) VMM_WEB_WWW_DIR,
                .pool_size = 4,
                .max_connections = 4096,
                .max_connections_per_ip = 256,
                .idle_timeout_s = 30,
                .pass_peer = true,
        };
        while ((o = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                switch (o) {
                case ARG_LISTEN: {
                        char **l = realloc(c->listen, (c->n_listen + 1) * sizeof(char *));
                        if (!l)
                                return -ENOMEM;
                        c->listen = l;
                        c->listen[c->n_listen++] = optarg;
                        break;
                }
                case ARG_VMMD: c->vmmd = optarg; break;
                case ARG_WWW: c->www_dir = optarg; break;
                case ARG_CERT: c->tls_cert = optarg; break;
                case ARG_KEY: c->tls_key = optarg; break;
                case ARG_POOL:
                        if (parse_uint(optarg, 1, 64, &c->pool_size) < 0)
                                return log_error_errno(EINVAL, "--pool takes 1..64");
                        break;
                case ARG_MAXC:
                        if (parse_uint(optarg, 1, 1000000, &c->max_connections) < 0)
                                return log_error_errno(EINVAL,
                                                       "--max-connections takes 1..1000000");
                        break;
                case ARG_MAXIP:
                        if (parse_uint(optarg, 1, 1000000, &c->max_connections_per_ip) < 0)
                                return log_error_errno(EINVAL,
                                                       "--max-connections-per-ip takes 1..1000000");
                        break;
                case ARG_IDLE:
                        if (parse_uint(optarg, 1, 86400, &c->idle_timeout_s) < 0)
                                return log_error_errno(EINVAL,
                                                       "--idle-timeout takes 1..86400 seconds");
                        break;
                case ARG_NOPEER: c->pass_peer = false; break;
                case ARG_LOG:
                        lvl = log_level_parse(optarg);
                        if (lvl < 0)
                                return log_error_errno(EINVAL, "Unknown log level '%s'", optarg);
                        log_set_max(lvl);
                        break;
                case ARG_ROUTES:
                        routes_print();
                        return 1;
                case 'h':
                        help();
                        return 1;
                case ARG_VERSION:
                        printf("vmm-web %s\n", VMMD_VERSION);
                        return 1;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc)
                return log_error_errno(EINVAL, "Unexpected argument '%s' (see --help)",
                                       argv[optind]);
        if (!c->tls_cert != !c->tls_key)
                return log_error_errno(EINVAL, "--tls-cert and --tls-key go together");
        if (c->n_listen == 0) {
                static char *def[] = { (char *) "127.0.0.1:8080" };
                c->listen = NULL;
                c->n_listen = 0;
                c->listen = malloc(sizeof(char *));
                if (!c->listen)
                        return -ENOMEM;
                c->listen[0] = def[0];
                c->n_listen = 1;
        }
        return 0;
}

int main(int argc, char *argv[]) {
        WebConfig config;
        Web *w = NULL;

        int r = parse_args(argc, argv, &config);
        if (r != 0) {
                free(config.listen);
                return r > 0 ? EXIT_SUCCESS : 2;
        }
        if (sodium_init() < 0) {
                log_error("Cannot initialise libsodium");
                free(config.listen);
                return EXIT_FAILURE;
        }
        r = web_new(&w, &config);
        if (r >= 0)
                r = web_run(w);
        web_free(w);
        free(config.listen);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
