/*
 * agora-notifications — notifications, WebSocket/SSE push and e-mail
 * (DESIGN.md §1; port 7006). The API and the push protocols are in
 * routes.c, ws.c, sse.c and README.md.
 *
 * Wiring, top to bottom: configuration, the token verifier
 * (ag_service_use_auth without its middleware: agora-users' JWKS, fetched
 * over HTTP and cached), the store and its migrations, the bus and its
 * subscriptions (events.c), our own auth middleware (routes.c: it leaves
 * the push endpoints to verify off the loop, verify.c), the routes, the
 * mailer thread and the stop hooks: push connections are closed when the
 * service begins to drain, the mailer stops once the bus has.
 *
 * Environment: AGORA_DB, AGORA_BUS, PORT (7006) as for every service;
 * AGORA_JWKS_URL, AGORA_JWT_* as in agora/peer.h;
 * AGORA_PUSH_MAX_PER_USER (5), AGORA_PUSH_MAX_QUEUE (1MiB),
 * AGORA_WS_PING_INTERVAL (30s), AGORA_WS_AUTH_TIMEOUT (5s),
 * AGORA_WS_MAX_MESSAGE (64KiB), AGORA_SSE_HEARTBEAT (15s), AGORA_MAIL_DIR
 * (var/mail), AGORA_SMTP_URL (unset: the Maildir), AGORA_MAIL_FROM
 * (no-reply@agora.local), AGORA_MAIL_MAX_ATTEMPTS (8), AGORA_SCHEMA_DIR.
 */
#include <string.h>

#include "agora/peer.h"
#include "hub.h"

#ifndef AGORA_NOTIFICATIONS_SCHEMA_DIR
#define AGORA_NOTIFICATIONS_SCHEMA_DIR "services/notifications/schema"
#endif

nt_ctx g_nt;

static int config(ag_service *svc)
{
    g_nt.svc = svc;
    atomic_init(&g_nt.draining, false);
    nt_config *c = &g_nt.cfg;
    long long per_user, attempts;
    int rc = 0;
    rc |= ag_config_int("AGORA_PUSH_MAX_PER_USER", 5, 1, 1000, &per_user);
    rc |= ag_config_size("AGORA_PUSH_MAX_QUEUE", 1u << 20, &c->max_queue);
    rc |= ag_config_duration_ms("AGORA_WS_PING_INTERVAL", 30000, &c->ping_ms);
    rc |= ag_config_duration_ms("AGORA_WS_AUTH_TIMEOUT", 5000, &c->auth_timeout_ms);
    rc |= ag_config_size("AGORA_WS_MAX_MESSAGE", 64u << 10, &c->max_message);
    rc |= ag_config_duration_ms("AGORA_SSE_HEARTBEAT", 15000, &c->heartbeat_ms);
    rc |= ag_config_str("AGORA_MAIL_DIR", "var/mail", &c->mail_dir);
    rc |= ag_config_str("AGORA_SMTP_URL", NULL, &c->smtp_url);
    rc |= ag_config_str("AGORA_MAIL_FROM", "no-reply@agora.local", &c->mail_from);
    rc |= ag_config_int("AGORA_MAIL_MAX_ATTEMPTS", 8, 1, 100, &attempts);
    if (rc < 0) return AG_ECONFIG;
    if (c->ping_ms < 100 || c->heartbeat_ms < 100 || c->max_message < 128) {
        ag_error("AGORA_WS_PING_INTERVAL and AGORA_SSE_HEARTBEAT must be at least 100ms, "
                 "AGORA_WS_MAX_MESSAGE at least 128 bytes");
        return AG_ECONFIG;
    }
    if (c->smtp_url && strncmp(c->smtp_url, "smtp://", 7) != 0 &&
        strncmp(c->smtp_url, "smtps://", 8) != 0) {
        ag_error("AGORA_SMTP_URL must be smtp://host:port or smtps://host:port");
        return AG_ECONFIG;
    }
    c->max_conns_per_user = (int)per_user;
    c->mail_max_attempts = (int)attempts;
    return 0;
}

static void on_drain(void *ud)
{
    atomic_store(&g_nt.draining, true);
    hub_drain();
}

static void on_stop(void *ud)
{
    nt_mailer_stop();
}

/* After the store and bus: presence a crashed run left behind is cleared,
 * the mailer starts, the push endpoints authenticate themselves. */
static int init(ag_service *svc)
{
    int rc = nt_presence_reset();
    if (rc == 0) rc = nt_mailer_start();
    if (rc < 0) return rc;
    ag_router_use(ag_service_router(svc), nt_auth_middleware, g_nt.auth);
    ag_metrics_gauge_fn(ag_service_metrics(svc), "agora_notifications_push_connections",
                        "Open WebSocket and SSE connections that receive notifications.",
                        hub_connections, NULL);
    ag_service_on_drain(svc, on_drain, NULL);
    ag_service_on_stop(svc, on_stop, NULL);
    return 0;
}

static void cleanup(void)
{
    nt_mailer_stop();
    hub_free();
    nt_events_free();
}

static const char *const k_publishes[] = {"user.online", "user.offline", NULL};

static const ag_service_def k_notifications = {
    .name = "notifications",
    .port = 7006,
    .config = config,
    .schema_dir = AGORA_NOTIFICATIONS_SCHEMA_DIR,
    .store = &g_nt.store,
    .bus = &g_nt.bus,
    .subscribe = nt_subscribe,
    .publishes = k_publishes,
    .auth = &g_nt.auth,
    .auth_flags = AG_AUTH_NO_MIDDLEWARE,
    .init = init,
    .routes = nt_routes,
    .openapi = nt_openapi_json,
    .cleanup = cleanup,
};

int main(void)
{
    return ag_service_main(&k_notifications);
}
