/*
 * agora-registry — the service registry with health checks (DESIGN.md §1;
 * port 8500). It speaks the subset of Consul's HTTP API that Consul clients
 * use (routes.c; docs/internals/registry.md), so a Consul agent can take its
 * place.
 *
 * Wiring, top to bottom: the service (it never registers with itself), the
 * store and its migrations, the catalog loaded from it (store.c), the
 * persister thread, the health checker's own loop (checks.c), the routes.
 * Stopping: blocking queries are answered before the server drains (they
 * would otherwise hold the drain for their whole wait), then the checker
 * stops and the persister writes the final state.
 *
 * Environment: AGORA_DB (default sqlite:var/registry.db), PORT (8500) and
 * the rest of every service's variables; AGORA_REGISTRY_NODE, the node name
 * shown in answers (default the host name); AGORA_SCHEMA_DIR, the migrations
 * (default the source tree's schema/).
 */
#include <string.h>
#include <unistd.h>

#include "registry.h"

#ifndef AGORA_REGISTRY_SCHEMA_DIR
#define AGORA_REGISTRY_SCHEMA_DIR "registry/schema"
#endif

static int config(ag_service *svc)
{
    ag_service_set_registration(svc, false);
    const char *node;
    char host[128] = "agora";
    if (gethostname(host, sizeof host) < 0 || !host[0]) snprintf(host, sizeof host, "agora");
    host[sizeof host - 1] = '\0';
    ag_config_str("AGORA_REGISTRY_NODE", host, &node);
    snprintf(g_reg.node, sizeof g_reg.node, "%s", node);
    pthread_mutex_init(&g_reg.mu, NULL);
    g_reg.names = json_object();
    g_reg.metrics = ag_service_metrics(svc);
    return 0;
}

/* The catalogue as the store last held it, its persister and the health
 * checker; both stop with the service (on_stop), after the drain. */
static int init(ag_service *svc)
{
    int rc = reg_store_load();
    if (rc < 0) {
        ag_error("could not load the registry's store", AG_FERR(rc));
        return rc;
    }
    reg_store_start();
    ag_service_on_stop(svc, reg_checks_stop, NULL);
    ag_service_on_stop(svc, reg_store_stop, NULL);
    rc = reg_checks_start();
    if (rc < 0) return rc;
    ag_service_on_drain(svc, reg_release_waiters, NULL);
    return 0;
}

static void cleanup(void)
{
    for (int i = 0; i < g_reg.nsvcs; i++)
        reg_svc_free(g_reg.svcs[i]);
    ag_free(g_reg.svcs);
    json_decref(g_reg.names);
}

static const ag_service_def k_registry = {
    .name = "registry",
    .port = 8500,
    .config = config,
    .schema_dir = AGORA_REGISTRY_SCHEMA_DIR,
    .store = &g_reg.store,
    .init = init,
    .routes = reg_routes,
    .cleanup = cleanup,
};

int main(void)
{
    return ag_service_main(&k_registry);
}
