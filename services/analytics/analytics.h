/*
 * analytics.h — what the files of agora-analytics share: main.c declares
 * the service, events.c is the read model (the journal of consumed events
 * and the fold that projects them), routes.c its admin-only queries,
 * openapi.json the description of its routes.
 */
#ifndef AGORA_ANALYTICS_H
#define AGORA_ANALYTICS_H

#include "agora/agora.h"
#include "agora/auth.h"
#include "agora/bus.h"
#include "agora/store.h"

typedef struct an_ctx {
    ag_store *store;
    ag_bus *bus;
} an_ctx;

extern an_ctx g_an;

/* events.c */
int analytics_subscribe(ag_bus *bus);
/* Applies one event to the read model within `db`'s transaction: 0, or a
 * negative AG_E* code with the reason in `why` (an event the projection
 * cannot read: AG_EINVAL). Types the read model does not use change
 * nothing. */
int an_apply(ag_db *db, const char *type, const char *time, const json_t *data, char *why,
             size_t why_len);
/* Drops every projection and folds the journal again, in one transaction:
 * *events gets how many were folded. */
int an_rebuild(ag_store *s, int64_t *events);

/* routes.c */
void analytics_routes(ag_router *r);

extern const char analytics_openapi_json[];

#endif
