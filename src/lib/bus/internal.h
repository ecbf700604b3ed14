/*
 * internal.h — the bus core (bus.c) and its broker adapters (nats.c,
 * rabbitmq.c). An adapter moves bytes and keeps the broker's promises; the
 * core owns envelopes, the outbox, the inbox, retries and dead-letter
 * decisions, so both brokers behave the same.
 */
#ifndef AGORA_BUS_INTERNAL_H
#define AGORA_BUS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agora/bus.h"

/* One delivered message. The adapter allocates it; msg_free releases it. */
typedef struct ag__bus_msg {
    const char *body; /* the envelope as published */
    size_t len;
    int delivery; /* 1 on the first delivery, as the broker counts */
    /* The event type as routed (from the NATS subject or the AMQP routing
     * key), NUL-terminated; "" when unknown. Lets the core skip events no
     * handler wants without parsing them. */
    char type[160];
    void *impl;   /* the adapter's handle for ack/nak */
} ag__bus_msg;

/* A delivered body as a CloudEvents envelope: 0 with *env (the caller's,
 * also on failure when it parsed) and *ev borrowing from it (delivery 0);
 * AG_EINVAL with `why` when it is not JSON, not an object, or lacks a
 * string id or type. */
int ag__bus_envelope_parse(const char *body, size_t len, json_t **env, ag_event *ev, char *why,
                           size_t why_len);

typedef enum ag__bus_role { AG_BUS_PUBLISHER, AG_BUS_CONSUMER } ag__bus_role;

typedef struct ag__bus_adapter {
    const char *name;
    /* Connects for one role (each role gets its own connection and is used
     * by one thread) and declares what the broker needs: streams or
     * exchanges, the service's durable consumer or queue bound to
     * `patterns` (consumer role), the dead-letter destination. */
    int (*open)(const char *url, const char *service, ag__bus_role role,
                const char *const *patterns, int npatterns, uint64_t max_deliveries,
                void **state);
    /* Publishes one event and waits for the broker's confirmation: returns 0
     * only when the broker has it (a duplicate id within the broker's window
     * counts as confirmed). `type` routes it. */
    int (*publish)(void *state, const char *type, const char *id, const char *body, size_t len,
                   char *err, size_t errlen);
    /* Waits up to timeout_ms for one message: 1 and *out, 0 on timeout, or an
     * error (the connection is down; the core retries after a pause). */
    int (*fetch)(void *state, uint64_t timeout_ms, ag__bus_msg **out);
    int (*ack)(void *state, ag__bus_msg *m);
    /* Hands the message back for redelivery after delay_ms. */
    int (*retry_later)(void *state, ag__bus_msg *m, uint64_t delay_ms);
    /* Publishes the message with `reason` to the dead-letter destination
     * (confirmed), then removes it from the service's consumer. */
    int (*dead_letter)(void *state, ag__bus_msg *m, const char *reason);
    void (*msg_free)(ag__bus_msg *m);
    /* Takes one message from this service's dead letters (for operators and
     * tests): 1 with *body and *reason (ag_malloc'ed, the caller's), 0 when
     * none arrived within timeout_ms, or an error. */
    int (*dlq_fetch)(void *state, uint64_t timeout_ms, char **body, size_t *len, char **reason);
    /* 0 when connected. Callable from any thread. */
    int (*healthy)(void *state);
    void (*close)(void *state);
} ag__bus_adapter;

extern const ag__bus_adapter ag__bus_nats;
extern const ag__bus_adapter ag__bus_rabbitmq;

/* NATS subject of a type: "agora.events.order.confirmed". */
#define AG_BUS_NATS_PREFIX "agora.events."
#define AG_BUS_EXCHANGE "agora.events"

#endif
