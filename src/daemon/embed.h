/* SPDX-License-Identifier: MIT */
/* Starting a Manager inside another program (fuzz targets, in-process
 * tests): the store, the worker threads and the method tables, but no
 * listeners, signal handlers, timers or sd_notify. Connections are added by
 * the caller with conn_new() and served by running m->event. */
#pragma once

#include "manager.h"

/* m from manager_new() with config.state_dir set. Returns 0 or a negative
 * errno (logged). Free with manager_free() as usual. */
int manager_start_embedded(Manager *m);
