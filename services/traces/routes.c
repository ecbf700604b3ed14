/*
 * routes.c — agora-traces' HTTP API (services/traces/README.md).
 *
 *   POST /v1/traces                 OTLP/HTTP JSON export; no token (below)
 *   GET  /v1/traces                 summaries: filters, sort, pages   admin
 *   GET  /v1/traces/services        services seen, with span counts    admin
 *   GET  /v1/traces/:traceId        one trace, spans ordered by start  admin
 *
 * The export route takes no token: exporters send none (OTLP has no place
 * for our JWTs) and the service listens on loopback (AGORA_HOST). The
 * token verifier is therefore not router middleware, which would answer
 * 401 to an exporter that sends some other Authorization header, but runs
 * in the query handlers only. The gateway routes only the queries
 * (/api/v1/traces, GET, role admin).
 *
 * Export bodies are spooled to a file as they arrive (AG_ROUTE_SPOOL)
 * with the route's own limit, AGORA_TRACES_MAX_BODY: a Content-Length over
 * it is answered 413 before a byte of the body is read. The JSON is parsed
 * straight from the file.
 *
 * Answers carry durations in milliseconds with microsecond resolution,
 * written with 15 significant digits (12.345, not 12.345000000000001).
 */
#include <strings.h>

#include "traces.h"

static ag_auth *g_auth;
static ag_series *m_received, *m_rejected;

static void send_json(ag_http_res *res, int status, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(15));
    json_decref(body);
    if (!text) {
        ag_res_error(res, 500, "INTERNAL", "internal error", NULL);
        return;
    }
    /* jansson allocates with malloc, as ag_malloc does (see ag_res_json). */
    ag_res_body_take(res, status, "application/json", text, strlen(text));
}

static void send_ok(ag_http_res *res, json_t *data)
{
    send_json(res, 200, json_pack("{s:b, s:o}", "success", 1, "data", data));
}

/* ---- POST /v1/traces ---- */

/* The export's JSON (read from the spool file), or NULL after answering
 * 400 MALFORMED_JSON. */
static json_t *export_body(ag_http_req *req, ag_http_res *res)
{
    json_t *doc;
    return ag_req_json(req, res, &doc) < 0 ? NULL : doc;
}

static void post_traces(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!ag_req_is_content_type(req, "application/json")) {
        ag_res_error(res, 415, "UNSUPPORTED_MEDIA_TYPE",
                     ag_req_is_content_type(req, "application/x-protobuf")
                         ? "only the OTLP/HTTP JSON encoding is accepted, not protobuf: send "
                           "Content-Type: application/json (OTEL_EXPORTER_OTLP_PROTOCOL=http/json)"
                         : "only the OTLP/HTTP JSON encoding is accepted: send Content-Type: "
                           "application/json",
                     NULL);
        return;
    }
    const char *enc = ag_req_header(req, "Content-Encoding");
    if (enc && *enc && strcasecmp(enc, "identity") != 0) {
        ag_res_error(res, 415, "UNSUPPORTED_MEDIA_TYPE",
                     "compressed exports are not accepted: send the body without "
                     "Content-Encoding (OTEL_EXPORTER_OTLP_COMPRESSION=none)",
                     NULL);
        return;
    }
    json_t *doc = export_body(req, res);
    if (!doc) return;
    tr_batch b;
    tr_batch_init(&b);
    char err[200];
    if (otlp_decode(doc, &b, err, sizeof err) < 0) {
        ag_res_error(res, 400, "MALFORMED_EXPORT", err, NULL);
        tr_batch_release(&b);
        json_decref(doc);
        return;
    }
    size_t received = b.n + b.rejected, dups;
    tr_store_add(&b, &dups); /* the items' service names point into doc */
    ag_series_inc(m_received, received);
    json_t *partial = json_object();
    if (b.rejected) {
        char n[24];
        snprintf(n, sizeof n, "%zu", b.rejected);
        /* int64 as a string: proto3's JSON mapping, which OTLP follows */
        json_object_set_new(partial, "rejectedSpans", json_string(n));
        json_object_set_new(partial, "errorMessage", json_string(b.why.data ? b.why.data : ""));
        ag_series_inc(m_rejected, b.rejected);
        ag_info("spans rejected", AG_FI("rejected", b.rejected), AG_FI("received", received),
                AG_FS("reason", b.why.data ? b.why.data : ""), AG_FS("requestId", ag_req_id(req)));
    }
    if (dups)
        ag_debug("duplicate spans ignored", AG_FI("duplicates", dups),
                 AG_FS("requestId", ag_req_id(req)));
    tr_batch_release(&b);
    json_decref(doc);
    send_json(res, 200, json_pack("{s:o}", "partialSuccess", partial));
}

/* ---- queries (admins) ---- */

static bool admin(ag_http_req *req, ag_http_res *res)
{
    if (ag_auth_middleware(req, res, g_auth) != AG_NEXT) return false;
    return ag_auth_caller_role(req, res, "admin") != NULL;
}

/* A text filter: NULL when absent or empty; a problem past TR_FILTER_MAX. */
static const char *filter(ag_validator *v, ag_http_req *req, const char *name)
{
    const char *s = ag_req_query(req, name);
    if (!s || !*s) return NULL;
    if (strlen(s) > TR_FILTER_MAX) {
        ag_v_fail(v, name, "%s must be at most %d bytes", name, TR_FILTER_MAX);
        return NULL;
    }
    return s;
}

static void list_traces(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin(req, res)) return;
    ag_validator v;
    ag_v_init(&v);
    tr_query q = {.error = -1, .sort = TR_SORT_RECENT};
    q.page = ag_v_query_int(&v, req, "page", 1, 1, 1000000);
    q.limit = ag_v_query_int(&v, req, "limit", 20, 1, 100);
    q.min_duration_ns =
        (uint64_t)ag_v_query_int(&v, req, "minDurationMs", 0, 0, 86400000) * 1000000u;
    q.service = filter(&v, req, "service");
    q.name = filter(&v, req, "name");
    const char *err = ag_req_query(req, "error");
    if (err && strcmp(err, "true") == 0)
        q.error = 1;
    else if (err && strcmp(err, "false") == 0)
        q.error = 0;
    else if (err)
        ag_v_fail(&v, "error", "error must be true or false");
    const char *sort = ag_req_query(req, "sort");
    if (sort && strcmp(sort, "slowest") == 0)
        q.sort = TR_SORT_SLOWEST;
    else if (sort && strcmp(sort, "recent") != 0)
        ag_v_fail(&v, "sort", "sort must be recent or slowest");
    if (!ag_v_passed(&v, res, NULL)) return;
    int64_t total;
    json_t *data = tr_store_list(&q, &total);
    send_json(res, 200, ag_page_envelope(data, q.page, q.limit, total));
}

static void get_trace(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin(req, res)) return;
    uint8_t id[16];
    if (!tr_hex_id(ag_req_param(req, "traceId"), 32, id)) {
        ag_validator v;
        ag_v_init(&v);
        ag_v_fail(&v, "traceId", "traceId must be 32 hex digits, not all zero");
        ag_res_validation(res, &v);
        return;
    }
    json_t *t = tr_store_get(id);
    if (!t) {
        ag_res_error(res, 404, "TRACE_NOT_FOUND",
                     "no such trace here: never received, or evicted to stay within the bounds",
                     NULL);
        return;
    }
    send_ok(res, t);
}

static void list_services(ag_http_req *req, ag_http_res *res, void *ud)
{
    if (!admin(req, res)) return;
    send_ok(res, tr_store_services());
}

void tr_routes(ag_router *r, ag_auth *auth, size_t max_body, ag_metrics *m)
{
    g_auth = auth;
    m_received = ag_metric_series(
        ag_metrics_family(m, AG_COUNTER, "agora_traces_received_spans_total",
                          "Spans received in export requests, rejected ones included", 0, NULL,
                          NULL, 0),
        NULL);
    m_rejected = ag_metric_series(
        ag_metrics_family(m, AG_COUNTER, "agora_traces_rejected_spans_total",
                          "Spans rejected as invalid (bad ids, no start, end before start)", 0,
                          NULL, NULL, 0),
        NULL);
    ag_router_add(r, "POST", "/v1/traces", post_traces, NULL, AG_ROUTE_SPOOL);
    ag_router_set_body_limit(r, "POST", "/v1/traces", max_body);
    ag_router_add(r, "GET", "/v1/traces", list_traces, NULL, 0);
    ag_router_add(r, "GET", "/v1/traces/services", list_services, NULL, 0);
    ag_router_add(r, "GET", "/v1/traces/:traceId", get_trace, NULL, 0);
}
