/*
 * endpoints.c — the built-in /health, /ready and /metrics of every service.
 *
 * /health answers on the I/O loop (it proves the process serves requests);
 * /ready runs the service's checks on a worker since they may block on a
 * store or a broker; /metrics renders on the loop (it only reads atomics).
 */
#include <stdlib.h>
#include <string.h>

#include "agora/auth.h"
#include "agora/config.h"
#include "agora/json.h"
#include "agora/mem.h"
#include "agora/log.h"
#include "agora/service.h"

int ag__service_ready(ag_service *s, json_t *checks);

static void health(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    /* The version is the one the service registers with (AGORA_VERSION). */
    const char *v = ag_config_raw("AGORA_VERSION");
    json_t *body = json_pack("{s:s, s:s, s:s}", "status", "ok", "service", ag_service_name(s),
                             "version", v && *v ? v : "dev");
    ag_res_json(res, 200, body);
}

static void ready(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    json_t *checks = json_object();
    int rc = ag__service_ready(s, checks);
    json_t *body = json_pack("{s:s, s:s, s:o}", "status", rc == 0 ? "ready" : "unavailable",
                             "service", ag_service_name(s), "checks", checks);
    if (rc != 0) ag_res_header(res, "Retry-After", "1");
    ag_res_json(res, rc == 0 ? 200 : 503, body);
}

static void metrics(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    ag_buf out;
    ag_buf_init(&out, 0);
    ag_metrics_render(ag_service_metrics(s), &out);
    size_t len;
    char *text = ag_buf_detach(&out, &len);
    ag_res_body_take(res, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static void openapi(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    char title[96];
    snprintf(title, sizeof title, "agora-%s", ag_service_name(s));
    ag_res_json(res, 200, ag_router_openapi(ag_service_router(s), title, "1.0.0"));
}

/* A service's own document, completed at start and served as text. */
static void openapi_doc(ag_http_req *req, ag_http_res *res, void *ud)
{
    const char *text = ud;
    ag_res_body(res, 200, "application/json", text, strlen(text));
}

/* The built-in endpoints the router holds (ag_service_new's, the bus's
 * /admin/dead-letters, /openapi.json itself), added to a service's own
 * document where it leaves them out: the document describes every route
 * served (tests/docs checks it). */
static void add_builtins(json_t *doc, const ag_router *router)
{
    static const struct {
        const char *path, *summary;
    } k_builtin[] = {
        {"/health", "Liveness: 200 while the process serves requests"},
        {"/ready", "Readiness: 200 when every check passes, else 503 with the reasons"},
        {"/metrics", "Prometheus text format 0.0.4"},
        {"/openapi.json", "This document"},
        {"/admin/dead-letters", "What the service dead-lettered, newest first (admins)"},
    };
    json_t *paths = json_object_get(doc, "paths");
    if (!json_is_object(paths)) {
        paths = json_object();
        json_object_set_new(doc, "paths", paths);
    }
    for (size_t i = 0; i < sizeof k_builtin / sizeof *k_builtin; i++) {
        ag_route_match m;
        if (strcmp(k_builtin[i].path, "/openapi.json") != 0 &&
            ag_router_match(router, "GET", k_builtin[i].path, &m) != 0)
            continue;
        json_t *item = json_object_get(paths, k_builtin[i].path);
        if (!json_is_object(item)) {
            item = json_object();
            json_object_set_new(paths, k_builtin[i].path, item);
        }
        if (!json_object_get(item, "get"))
            json_object_set_new(item, "get",
                                json_pack("{s:s, s:{s:{s:s}}}", "summary", k_builtin[i].summary,
                                          "responses", "200", "description", "OK"));
    }
}

/* Fills in what every service's document shares, where it is missing. */
static void complete_doc(json_t *doc)
{
    json_t *comp = json_object_get(doc, "components");
    if (!json_is_object(comp)) {
        comp = json_object();
        json_object_set_new(doc, "components", comp);
    }
    json_t *schemas = json_object_get(comp, "schemas");
    if (!json_is_object(schemas)) {
        schemas = json_object();
        json_object_set_new(comp, "schemas", schemas);
    }
    if (!json_object_get(schemas, "Error"))
        json_object_set_new(
            schemas, "Error",
            json_pack("{s:s,s:{s:{s:s},s:{s:s,s:{s:{s:s},s:{s:s},s:{s:s}}},s:{s:s}}}", "type",
                      "object", "properties", "success", "type", "boolean", "error", "type",
                      "object", "properties", "code", "type", "string", "message", "type",
                      "string", "details", "type", "array", "requestId", "type", "string"));
    json_t *sec = json_object_get(comp, "securitySchemes");
    if (!json_is_object(sec)) {
        sec = json_object();
        json_object_set_new(comp, "securitySchemes", sec);
    }
    if (!json_object_get(sec, "bearer"))
        json_object_set_new(sec, "bearer", json_pack("{s:s,s:s,s:s}", "type", "http", "scheme",
                                                     "bearer", "bearerFormat", "JWT"));
}

const char *ag__service_openapi_doc(const ag_service *s);

/* The text of each service's completed document; one per process. */
static char *g_doc_text;

/* The completed document itself, kept for the body checks below (their
 * schemas point into it, and "$ref"s resolve in it). */
static json_t *g_doc;

/* A route's request body against its operation's application/json schema
 * (ag_router_set_check), so that what /openapi.json says a body must be is
 * what is enforced, before the handler runs. A body that is empty, not
 * application/json or not JSON at all is left to the handler, which answers
 * 400 or 415 as it always has (ag_req_json); the body is parsed twice
 * (here and there), which costs microseconds for the bodies these routes
 * take. */
typedef struct body_check {
    const json_t *schema; /* into g_doc */
    bool needs_caller;    /* the operation's security asks for a bearer token */
} body_check;

static int check_body(ag_http_req *req, ag_http_res *res, void *ud)
{
    const body_check *bc = ud;
    /* No caller where one is needed: the handler answers 401 first, as a
     * caller who may not use the route learns nothing of its bodies. */
    if (bc->needs_caller && !ag_auth_caller(req)) return AG_NEXT;
    const json_t *schema = bc->schema;
    if (!ag_req_is_content_type(req, "application/json")) return AG_NEXT;
    json_t *root;
    json_error_t err;
    if (ag_req_json_parse(req, &root, &err) < 0) return AG_NEXT;
    ag_validator v;
    ag_v_init(&v);
    ag_schema_check(&v, g_doc, schema, root);
    json_decref(root);
    if (ag_v_ok(&v)) {
        ag_v_release(&v);
        return AG_NEXT;
    }
    ag_res_validation(res, &v);
    return AG_STOP;
}

/* The checks made (one a route with a schema), for the process's life. */
static body_check **g_checks;
static size_t g_nchecks;

/* A check on every route whose operation has a JSON request schema. An
 * operation for a route the router lacks is logged (tests/docs fails on
 * it too). */
static void add_body_checks(ag_router *router, json_t *doc)
{
    const char *path;
    json_t *item;
    json_object_foreach (json_object_get(doc, "paths"), path, item) {
        char pattern[512];
        size_t n = 0;
        for (const char *c = path; *c && n + 2 < sizeof pattern; c++) {
            if (*c == '{') pattern[n++] = ':';
            else if (*c != '}') pattern[n++] = *c;
        }
        pattern[n] = '\0';
        const char *method;
        json_t *op;
        json_object_foreach (item, method, op) {
            json_t *schema = json_object_get(
                json_object_get(json_object_get(json_object_get(op, "requestBody"), "content"),
                                "application/json"),
                "schema");
            /* x-agora-invalid: the protocol's own answer to a bad body
             * (OTLP's 400), given by the handler, not this check's 422. */
            if (!json_is_object(schema) || json_object_get(op, "x-agora-invalid")) continue;
            /* The operation's security, else the document's: a bearer
             * token is needed unless it is empty or lists {} (optional). */
            json_t *sec = json_object_get(op, "security");
            if (!sec) sec = json_object_get(doc, "security");
            bool needs = json_array_size(sec) > 0;
            size_t si;
            json_t *alt;
            json_array_foreach (sec, si, alt)
                if (json_object_size(alt) == 0) needs = false;
            body_check *bc = ag_calloc(1, sizeof *bc);
            bc->schema = schema;
            bc->needs_caller = needs;
            g_checks = ag_realloc(g_checks, (g_nchecks + 1) * sizeof *g_checks);
            g_checks[g_nchecks++] = bc;
            char up[16];
            size_t k = 0;
            for (const char *c = method; *c && k + 1 < sizeof up; c++)
                up[k++] = (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
            up[k] = '\0';
            if (ag_router_set_check(router, up, pattern, check_body, bc) < 0)
                ag_warn("the OpenAPI document describes a route that is not served",
                        AG_FS("method", up), AG_FS("path", path));
        }
    }
}

int ag__obs_register_openapi(ag_router *router, ag_service *svc);
int ag__obs_register_openapi(ag_router *router, ag_service *svc)
{
    /* Only when the service did not register a route of its own. */
    ag_route_match m;
    if (ag_router_match(router, "GET", "/openapi.json", &m) == 0) return 0;
    const char *text = ag__service_openapi_doc(svc);
    if (!text) {
        ag_router_add(router, "GET", "/openapi.json", openapi, svc, 0);
        return 0;
    }
    json_error_t err;
    json_t *doc = json_loads(text, 0, &err);
    if (!json_is_object(doc)) {
        ag_error("the service's OpenAPI document is not a JSON object", AG_FI("line", err.line),
                 AG_FS("reason", err.text));
        json_decref(doc);
        return AG_ECONFIG;
    }
    complete_doc(doc);
    add_builtins(doc, router);
    free(g_doc_text); /* jansson allocates with malloc */
    g_doc_text = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(g_doc);
    g_doc = doc;
    add_body_checks(router, doc);
    ag_router_add(router, "GET", "/openapi.json", openapi_doc, g_doc_text, 0);
    return 0;
}

/* The completed document ag__obs_register_openapi serves, or NULL when the
 * service's is generated from its routes. */
const char *ag__obs_openapi_text(void);
const char *ag__obs_openapi_text(void)
{
    return g_doc_text;
}

void ag_obs_register_endpoints(ag_router *router, ag_service *svc)
{
    ag_router_add(router, "GET", "/health", health, svc, AG_ROUTE_INLINE);
    ag_router_add(router, "GET", "/ready", ready, svc, 0);
    ag_router_add(router, "GET", "/metrics", metrics, svc, AG_ROUTE_INLINE);
}
