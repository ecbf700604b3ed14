/*
 * bus.h — events between services: a transactional outbox, a relay, an
 * idempotent inbox, retries and dead letters, over NATS JetStream or RabbitMQ.
 *
 * Publishing (DESIGN.md §6): ag_bus_publish writes the CloudEvents envelope
 * into the service's agora_outbox table inside the caller's transaction, so
 * the event exists if and only if the state change committed. A relay thread
 * publishes outbox rows in order and marks a row sent only after the broker
 * confirmed it (JetStream PubAck with Nats-Msg-Id = event id; RabbitMQ
 * publisher confirm without a return). It wakes right after a commit and
 * also sweeps every AGORA_BUS_SWEEP (default 1s), so after a crash it
 * resumes from the rows still unsent. Order is kept per aggregate: rows are
 * published one at a time in commit order, and a failure stops the relay
 * before any later row.
 *
 * Consuming: ag_bus_subscribe registers a handler for a type pattern
 * ("order.*" matches one word, "#" or ">" everything). The service has one
 * durable consumer (instances of a service compete for its events). Each
 * event is handled in a store transaction that first inserts the event id
 * into agora_inbox: a duplicate delivery finds it there, is acknowledged and
 * skipped. The broker is acknowledged only after the commit.
 *
 * Failures: a handler that fails is run again at once up to
 * AGORA_BUS_IMMEDIATE_RETRIES (default 2) times, then the event is handed
 * back to the broker for delayed redelivery with exponential backoff
 * (AGORA_BUS_BACKOFF, default 1s, doubling), and after
 * AGORA_BUS_MAX_DELIVERIES (default 5) deliveries it goes to the dead-letter
 * destination with the reason. An event that cannot be parsed goes to dead
 * letters at once. Nothing is dropped silently.
 */
#ifndef AGORA_BUS_H
#define AGORA_BUS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/metrics.h"
#include "agora/store.h"

typedef struct ag_bus ag_bus;

typedef struct ag_event {
    const char *id;
    const char *type;
    const char *source;
    const char *subject; /* the aggregate id; may be NULL */
    const char *time;
    const char *traceparent; /* may be NULL */
    json_t *data;            /* borrowed for the handler's call */
    int delivery;            /* 1 on the first delivery */
} ag_event;

/* A handler: 0 when done (its writes commit with the inbox row), or a
 * negative AG_E* code with a reason in `why` (the transaction rolls back). */
typedef int (*ag_event_handler)(ag_db *db, const ag_event *ev, void *ud, char *why,
                                size_t why_len);

typedef struct ag_bus_opts {
    const char *url;      /* "nats://127.0.0.1:4222" or "amqp://guest:guest@127.0.0.1:5672" */
    const char *service;  /* the service's name: source agora/<service>, consumer name */
    ag_store *store;      /* the service's store; holds agora_outbox and agora_inbox */
    ag_metrics *metrics;  /* NULL: ag_metrics_default() */
} ag_bus_opts;

/* Creates the outbox and inbox tables when missing and connects to the
 * broker (declaring its streams, exchanges and queues). Configuration:
 * AGORA_BUS_IMMEDIATE_RETRIES, AGORA_BUS_MAX_DELIVERIES, AGORA_BUS_BACKOFF,
 * AGORA_BUS_SWEEP. The caller owns the bus. */
int ag_bus_open(const ag_bus_opts *o, ag_bus **out);

/* Writes an event into the outbox within `db`'s current transaction
 * (AG_ESTATE outside one). Steals `data`. `subject` (the aggregate id) may be
 * NULL. `id_out` (may be NULL, AG_ID_LEN + 1 bytes) gets the event id. */
int ag_bus_publish(ag_bus *bus, ag_db *db, const char *type, const char *subject, json_t *data,
                   char *id_out);

/* Registers `h` for types matching `pattern`. Call before ag_bus_start. */
int ag_bus_subscribe(ag_bus *bus, const char *pattern, ag_event_handler h, void *ud);
/* The patterns subscribed so far, in order: how many, and the i-th. */
int ag_bus_subscription_count(const ag_bus *bus);
const char *ag_bus_subscription(const ag_bus *bus, int i);

/* Declares the only event types this service publishes (`types`, NULL-
 * terminated, borrowed for the bus's life; ag_service_main does it from
 * the service's declaration). From then on ag_bus_publish of any other
 * type is refused with AG_EINVAL and logged, so what a service says it
 * publishes (docs/events.md is checked against it) is all it can publish.
 * Not calling it leaves every type allowed. */
void ag_bus_declare(ag_bus *bus, const char *const *types);

/* Starts the relay and, when there are subscriptions, the consumer. */
int ag_bus_start(ag_bus *bus);
/* Stops consuming, gives the relay up to `flush_ms` to publish what the
 * outbox holds, and stops it. */
void ag_bus_stop(ag_bus *bus, uint64_t flush_ms);
void ag_bus_free(ag_bus *bus);

/* A readiness check (the shape of ag_ready_check): the broker is reachable. */
int ag_bus_ping(void *bus, char *why, size_t why_len);

/* What this service dead-lettered, newest first, at most `limit` (the
 * store keeps the newest 1000), appended to `arr` as {id, type, reason,
 * event (the envelope), delivery, deadAt}. Recorded when the event goes to
 * the broker's dead-letter destination; served at /admin/dead-letters. */
int ag_bus_dead_letters(ag_bus *b, int limit, json_t *arr);

/* Rows of the outbox not yet confirmed, and the age in ms of the oldest. */
int ag_bus_outbox_depth(ag_bus *bus, int64_t *rows, int64_t *oldest_ms);

/* True when `type` matches `pattern` ("a.*" one word, "#"/">" the rest). */
bool ag_bus_pattern_match(const char *pattern, const char *type);

#endif
