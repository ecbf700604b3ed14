/*
 * verify.h — token checks for the push endpoints (verify.c), off the loop.
 */
#ifndef AGORA_NOTIFICATIONS_VERIFY_H
#define AGORA_NOTIFICATIONS_VERIFY_H

#include "notifications.h"

/* On the loop: rc 0 with the caller (borrowed for the call), or a negative
 * AG_E* code (AG_EAUTH, AG_ENOTFOUND: a bad token; AG_EUNAVAIL: keys out of
 * reach) with a short reason (never the token). */
typedef void (*nt_verify_done)(void *ud, int rc, const ag_caller *caller, const char *why);

/* Verifies `token` (copied) on the worker pool; done(ud, ...) runs later on
 * `loop`. AG_EBUSY (the pool is full; done never runs). The caller keeps
 * `ud` alive until done. */
int nt_verify_submit(ag_loop *loop, const char *token, nt_verify_done done, void *ud);

/* The token of an "Authorization: Bearer <token>" value, or NULL. */
const char *nt_bearer(const char *header);
/* True when `t` looks like a token (token68 characters, at most 8 KiB). */
bool nt_token_ok(const char *t);

#endif
