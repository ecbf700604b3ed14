/*
 * catalog_client.c — how agora-cart asks agora-catalog about a product.
 *
 * One call: GET {AGORA_CATALOG_URL}/v1/products/:id, blocking on the worker
 * that handles the request (DESIGN.md §3), with
 *   - a deadline: the caller computes min(request deadline, lookup limit);
 *     the client sends what is left in X-Agora-Deadline-Ms, so catalog
 *     honours it too;
 *   - the request id (X-Request-Id) forwarded (the traceparent is the
 *     client span's, sent by agora/http_client.h), and the
 *     caller's own bearer token, so catalog sees who asks (an admin sees
 *     soft-deleted products; anyone else gets 404 for them);
 *   - the "catalog" circuit breaker around it (include/agora/resilience.h).
 *     A 5xx, a timeout, a connection error or a 200 that is not a product
 *     is a failure; any other answer, 404 included, is a success: catalog
 *     is up and said something definite. When the breaker is open the call
 *     is not made and the caller degrades (503 for writes, the stored
 *     snapshot for reads).
 */
#include <string.h>

#include "cart.h"

static int retry_after_s(void)
{
    uint64_t ms = ag_breaker_retry_after_ms(g_cart.catalog_breaker);
    int s = (int)((ms + 999) / 1000);
    return s < 1 ? 1 : s;
}

/* Fills *out from catalog's {"success":true,"data":{product}}; false when
 * the body is not that. */
static bool parse_product(const ag_http_reply *rep, const char *want_id, product_info *out)
{
    json_error_t jerr;
    json_t *doc = json_loadb(rep->body.data ? rep->body.data : "", rep->body.len, 0, &jerr);
    json_t *d = json_object_get(doc, "data");
    const char *id = json_string_value(json_object_get(d, "id"));
    const char *name = json_string_value(json_object_get(d, "name"));
    const char *currency = json_string_value(json_object_get(d, "currency"));
    json_t *price = json_object_get(d, "priceCents");
    json_t *active = json_object_get(d, "isActive");
    bool ok = id && strcmp(id, want_id) == 0 && name && strlen(name) < sizeof out->name &&
              currency && strlen(currency) < sizeof out->currency && json_is_integer(price) &&
              json_integer_value(price) >= 0 && json_is_boolean(active);
    if (ok) {
        memset(out, 0, sizeof *out);
        snprintf(out->id, sizeof out->id, "%s", id);
        snprintf(out->name, sizeof out->name, "%s", name);
        snprintf(out->currency, sizeof out->currency, "%s", currency);
        out->price_cents = json_integer_value(price);
        out->active = json_is_true(active);
    }
    json_decref(doc);
    return ok;
}

int catalog_lookup(ag_http_req *req, const char *product_id, ag_deadline deadline,
                   product_info *out, int *retry_s)
{
    *retry_s = 1;
    if (ag_deadline_expired(deadline)) return AG_EUNAVAIL; /* no time left to ask */
    ag_breaker_ticket t;
    int rc = ag_breaker_acquire(g_cart.catalog_breaker, &t);
    if (rc < 0) {
        *retry_s = retry_after_s();
        return AG_EUNAVAIL;
    }
    ag_arena *a = ag_req_arena(req);
    const char *headers[4];
    int nh = 0;
    const char *auth = ag_req_header(req, "Authorization");
    if (auth) headers[nh++] = ag_arena_printf(a, "Authorization: %s", auth);
    headers[nh] = NULL;
    /* An instance from the registry when there is one (balanced, ejected
     * when failing), else the configured URL. */
    ag_instance inst;
    bool picked = g_cart.disc && ag_discovery_pick(g_cart.disc, "catalog", &inst) == 0;
    char base[160];
    if (picked)
        ag_instance_url(&inst, base, sizeof base);
    else
        snprintf(base, sizeof base, "%s", g_cart.catalog_url);
    ag_http_call call = {
        .method = "GET",
        .url = ag_arena_printf(a, "%s/v1/products/%s", base, product_id),
        .headers = headers,
        .deadline = deadline,
        .request_id = ag_req_id(req),
    };
    ag_http_reply rep;
    memset(&rep, 0, sizeof rep);
    rc = ag_http_client_do(g_cart.http, &call, &rep);
    bool got = rc == 0, success;
    if (rc < 0) {
        ag_warn("catalog unreachable", AG_FERR(rc), AG_FS("requestId", ag_req_id(req)));
        success = false;
        rc = AG_EUNAVAIL;
    } else if (rep.status >= 500) {
        ag_warn("catalog failed", AG_FI("status", rep.status), AG_FS("requestId", ag_req_id(req)));
        success = false;
        rc = AG_EUNAVAIL;
    } else if (rep.status == 200) {
        success = parse_product(&rep, product_id, out);
        if (!success)
            ag_warn("catalog answered something that is not a product",
                    AG_FS("requestId", ag_req_id(req)));
        rc = success ? 0 : AG_EUNAVAIL;
    } else if (rep.status == 404) {
        success = true;
        rc = AG_ENOTFOUND;
    } else {
        ag_warn("catalog refused a product lookup", AG_FI("status", rep.status),
                AG_FS("requestId", ag_req_id(req)));
        success = true;
        rc = AG_EPROTO;
    }
    if (picked)
        ag_discovery_release(g_cart.disc, &inst,
                             !got || rep.status >= 502 ? AG_CALL_FAILED : AG_CALL_OK);
    if (got) ag_http_reply_release(&rep);
    ag_breaker_release(g_cart.catalog_breaker, &t, success);
    if (rc == AG_EUNAVAIL) *retry_s = retry_after_s();
    return rc;
}
