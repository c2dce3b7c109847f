/* SPDX-License-Identifier: MIT */
/* The commands `vmclient agent` and `vmclient describe` (argv[0] is the
 * command's name). They return an exit status: 0 success, 1 failure, 2 usage
 * or configuration error. */
#pragma once

#include <stdbool.h>

int vmclient_agent(int argc, char **argv);
/* json: the global --json was given before the command */
int vmclient_describe(int argc, char **argv, bool json);
