/*
 * def.c — ag_service_main: a declared service's start-up, run and describe
 * (agora/service.h has the declaration and the order of the steps).
 *
 *   new ─ config ─ store ─ bus ─ subscribe ─ declare ─ auth ─ peers ─ init
 *       ─ routes ─ openapi ─┬─ AGORA_DESCRIBE=1 → print the declaration ─┐
 *                           └─ run (until SIGTERM, then drain) ──────────┴─ free ─ cleanup
 *
 * A step that fails has logged why; the rest are skipped and main gets 2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agora/config.h"
#include "agora/log.h"
#include "agora/peer.h"
#include "agora/service.h"

int ag__obs_register_openapi(ag_router *router, ag_service *svc);
const char *ag__obs_openapi_text(void);

/* {method, path} of each operation in an OpenAPI document's paths, in the
 * document's order. */
static json_t *operations(json_t *paths)
{
    static const char *const k_methods[] = {"get",   "put",     "post", "delete",
                                            "patch", "options", "head"};
    json_t *out = json_array();
    const char *path;
    json_t *item;
    json_object_foreach(paths, path, item)
    {
        for (size_t i = 0; i < sizeof k_methods / sizeof *k_methods; i++) {
            if (!json_object_get(item, k_methods[i])) continue;
            char up[16];
            size_t n = 0;
            for (const char *c = k_methods[i]; *c && n + 1 < sizeof up; c++)
                up[n++] = (char)(*c - 'a' + 'A');
            up[n] = '\0';
            json_array_append_new(out, json_pack("{s:s, s:s}", "method", up, "path", path));
        }
    }
    return out;
}

static int describe(const ag_service_def *d, ag_service *svc)
{
    ag_router *r = ag_service_router(svc);
    if (ag__obs_register_openapi(r, svc) < 0) return AG_ECONFIG;
    json_t *routes_doc = ag_router_openapi(r, d->name, "describe");
    json_t *doc = routes_doc;
    json_t *own = NULL;
    const char *served = ag__obs_openapi_text(); /* the service's own, completed */
    if (served) {
        own = json_loads(served, 0, NULL);
        if (own) doc = own;
    }
    json_t *publishes = json_array(), *consumes = json_array(), *peers = json_array();
    for (const char *const *t = d->publishes; t && *t; t++)
        json_array_append_new(publishes, json_string(*t));
    if (d->bus && *d->bus) {
        for (int i = 0; i < ag_bus_subscription_count(*d->bus); i++)
            json_array_append_new(consumes, json_string(ag_bus_subscription(*d->bus, i)));
    }
    for (const ag_peer_def *p = d->peers; p && p->name; p++)
        json_array_append_new(peers, json_string(p->name));
    json_t *grpc = json_array();
    for (const ag_grpc_method *m = d->grpc; m && m->path; m++)
        json_array_append_new(grpc, json_string(m->path));
    json_t *out = json_pack("{s:s, s:i, s:b, s:b, s:o, s:o, s:o, s:o, s:o, s:o}", "name", d->name,
                            "port", d->port, "store", d->store != NULL, "bus", d->bus != NULL,
                            "routes", operations(json_object_get(routes_doc, "paths")), "openapi",
                            operations(json_object_get(doc, "paths")), "publishes", publishes,
                            "consumes", consumes, "peers", peers, "grpc", grpc);
    json_decref(routes_doc);
    json_decref(own);
    char *text = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(out);
    if (!text) return AG_ENOMEM;
    fputs(text, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    free(text); /* jansson allocates with malloc */
    return 0;
}

/* Every step before the run; 0 or the failing step's (logged) code. */
static int set_up(const ag_service_def *d, ag_service *svc)
{
    int rc = d->config ? d->config(svc) : 0;
    if (rc == 0 && d->store) {
        const char *schema;
        rc = ag_config_str("AGORA_SCHEMA_DIR", d->schema_dir, &schema);
        if (rc == 0) rc = ag_service_use_store(svc, schema, d->store);
    }
    if (rc == 0 && d->bus) {
        rc = ag_service_use_bus(svc, d->bus);
        if (rc == 0 && d->subscribe) rc = d->subscribe(*d->bus);
        /* What the service publishes is all it may publish; nothing at all
         * when it names nothing. */
        static const char *const k_none[] = {NULL};
        if (rc == 0) ag_bus_declare(*d->bus, d->publishes ? d->publishes : k_none);
    }
    if (rc == 0 && d->auth) rc = ag_service_use_auth(svc, d->auth_flags, d->auth);
    for (const ag_peer_def *p = d->peers; rc == 0 && p && p->name; p++) {
        if (p->breaker_min_calls > 0) {
            ag_breaker_opts o;
            rc = ag_breaker_opts_from_env_min(&o, ag_service_metrics(svc), p->breaker_min_calls);
            if (rc == 0) rc = ag_service_peer_with(svc, p->name, p->default_url, &o, p->out);
        } else {
            rc = ag_service_peer(svc, p->name, p->default_url, p->out);
        }
    }
    if (rc == 0 && d->init) rc = d->init(svc);
    if (rc == 0 && d->routes) d->routes(ag_service_router(svc));
    if (rc == 0 && d->openapi) ag_service_set_openapi(svc, d->openapi);
    if (rc == 0 && d->grpc) ag_service_use_grpc(svc, d->grpc_name, d->grpc);
    return rc;
}

int ag_service_main(const ag_service_def *d)
{
    ag_service *svc;
    int status = 2;
    if (ag_service_new(d->name, d->port, &svc) == 0) {
        if (set_up(d, svc) == 0) {
            const char *mode = getenv("AGORA_DESCRIBE");
            if (mode && strcmp(mode, "1") == 0)
                status = describe(d, svc) == 0 ? 0 : 2;
            else
                status = ag_service_run(svc) == 0 ? 0 : 1;
        }
        ag_service_free(svc);
    }
    if (d->cleanup) d->cleanup();
    return status;
}
