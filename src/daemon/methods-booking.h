/* SPDX-License-Identifier: MIT */
/* Layer L4: bookings (seed 003). A booking holds one VM for one user until
 * expires_at; a timer ends it within a second of that time (also across a
 * restart: expired bookings end first) and sends booking.expiring once,
 * booking_warn_minutes before. Every change writes a history entry keyed by
 * the feed position of its event. */
#pragma once

#include "rpc.h"

typedef struct Bookings Bookings;

int bookings_new(Manager *m, Bookings **ret);
Bookings *bookings_free(Bookings *b);
/* Bookings changed (a commit): look when the timer must run next. */
void bookings_changed(Manager *m);
/* b was made or renewed (a commit): the timer runs by its due time. */
void bookings_due(Manager *m, const StoreBooking *b);

/* writer: ends vm_id's booking (-ENOENT if none): the booking goes, the VM
 * is free from now, a history entry (action, by) and booking.ended
 * (reason). */
int booking_end_in(Request *r, StoreTxn *t, const char *vm_id, int action, const char *reason,
                   const char *by);
int booking_end_to(PendingEvent **events, StoreTxn *t, const char *vm_id, int action,
                   const char *reason, const char *by, int64_t time);
