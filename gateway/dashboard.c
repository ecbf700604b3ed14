/*
 * dashboard.c — GET /api/v1/dashboard (DESIGN.md §8): the caller's profile,
 * recent orders, recommendations and unread notification count, fetched in
 * parallel and answered within the dashboard's deadline with what arrived.
 *
 *   verify token ─► four calls at once (libcurl async on this loop)
 *                      │ each: done, failed, or cut at the deadline
 *                      ▼
 *   {"success":true,"data":{…},"partial":bool,"missing":[…]}
 *
 * A part is missing when its service has no instance, answers an error, or
 * is not done by the deadline; the answer is still 200, with
 * "partial": true and the names of the missing parts (and why, in
 * "errors"). Only the profile is essential: without a token the answer is
 * 401 like any protected route.
 */
#include <string.h>

#include "agora/clock.h"
#include "agora/log.h"
#include "gateway.h"

enum { P_PROFILE, P_ORDERS, P_RECS, P_NOTES, NPARTS };

static const struct part_def {
    const char *name;    /* in "missing" */
    const char *service; /* upstream */
    const char *path;
} k_parts[NPARTS] = {
    {"profile", "users", "/v1/users/me"},
    {"recentOrders", "orders", "/v1/orders?limit=5"},
    {"recommendations", "catalog", "/v1/products?limit=4&sort=rating"},
    {"unreadNotifications", "notifications", "/v1/notifications?limit=1"},
};

typedef struct dash dash;

typedef struct part {
    dash *d;
    int idx;
    ag_http_op *op;
    bool running;
    int status;
    ag_buf body;
    json_t *value;
    char error[96];
    ag_instance inst;
    bool picked;
} part;

struct dash {
    ag_http_req *req;
    ag_http_res *res;
    gw_config *cfg;
    uv_timer_t timer;
    int running; /* parts still in flight */
    int refs;    /* the dash, the timer handle, one per running op */
    bool answered, gone;
    char auth[4200];
    part parts[NPARTS];
};

static void dash_unref(dash *d)
{
    if (--d->refs > 0) return;
    for (int i = 0; i < NPARTS; i++) {
        ag_buf_release(&d->parts[i].body);
        json_decref(d->parts[i].value);
    }
    gw_config_unref(d->cfg);
    ag_free(d);
}

static void on_timer_closed(uv_handle_t *h)
{
    dash_unref(h->data);
}

static void dash_answer(dash *d)
{
    if (d->answered) return;
    d->answered = true;
    uv_timer_stop(&d->timer);
    for (int i = 0; i < NPARTS; i++) /* cut what is still running */
        if (d->parts[i].running) ag_http_op_cancel(d->parts[i].op);
    if (!d->gone) {
        json_t *data = json_object(), *missing = json_array(), *errors = json_object();
        for (int i = 0; i < NPARTS; i++) {
            part *p = &d->parts[i];
            if (p->value) {
                json_object_set(data, k_parts[i].name, p->value);
            } else {
                json_object_set_new(data, k_parts[i].name, json_null());
                json_array_append_new(missing, json_string(k_parts[i].name));
                json_object_set_new(errors, k_parts[i].name,
                                    json_string(p->error[0] ? p->error : "no answer in time"));
            }
        }
        bool partial = json_array_size(missing) > 0;
        json_t *env = json_pack("{s:b,s:o,s:b,s:o}", "success", 1, "data", data, "partial",
                                partial, "missing", missing);
        if (partial)
            json_object_set_new(env, "errors", errors);
        else
            json_decref(errors);
        gw_common_headers(d->req, d->res, d->cfg);
        ag_res_header(d->res, "Cache-Control", "no-store");
        ag_res_json(d->res, 200, env);
    }
    ag_res_send(d->res);
    uv_close((uv_handle_t *)&d->timer, on_timer_closed);
    dash_unref(d);
}

static void on_deadline(uv_timer_t *t)
{
    dash_answer(t->data);
}

static void on_abort(void *ud)
{
    dash *d = ud;
    d->gone = true;
    dash_answer(d);
}

static int part_head(void *ud, int status, const char *headers, size_t len)
{
    part *p = ud;
    p->status = status;
    return AG_NEXT;
}

static int part_body(void *ud, const char *data, size_t len)
{
    part *p = ud;
    if (ag_buf_append(&p->body, data, len) < 0) return AG_ETOOBIG;
    return 0;
}

/* The piece of an upstream's envelope that the dashboard shows. */
static json_t *extract(int idx, json_t *env)
{
    if (idx == P_NOTES) {
        json_t *u = json_object_get(env, "unread");
        return json_is_integer(u) ? json_incref(u) : NULL;
    }
    json_t *data = json_object_get(env, "data");
    return data ? json_incref(data) : NULL;
}

static void part_done(void *ud, int err)
{
    part *p = ud;
    dash *d = p->d;
    p->running = false;
    p->op = NULL;
    ag_call_outcome oc = AG_CALL_OK;
    if (err == 0 && p->status >= 200 && p->status < 300) {
        json_t *env = json_loadb(p->body.data ? p->body.data : "", p->body.len, 0, NULL);
        p->value = env ? extract(p->idx, env) : NULL;
        json_decref(env);
        if (!p->value) snprintf(p->error, sizeof p->error, "unexpected answer");
    } else if (err == 0) {
        snprintf(p->error, sizeof p->error, "%s answered %d", k_parts[p->idx].service, p->status);
        if (p->status >= 502 && p->status <= 504) oc = AG_CALL_FAILED;
    } else {
        snprintf(p->error, sizeof p->error, "%s: %s", k_parts[p->idx].service,
                 err == AG_ECANCELED ? "no answer in time" : ag_strerror(err));
        oc = err == AG_ECANCELED ? AG_CALL_NEUTRAL : AG_CALL_FAILED;
    }
    if (p->picked) {
        ag_discovery_release(g_gw.disc, &p->inst, oc);
        p->picked = false;
    }
    if (--d->running == 0) dash_answer(d);
    dash_unref(d);
}

static void start_part(dash *d, int i, ag_deadline dl)
{
    part *p = &d->parts[i];
    p->d = d;
    p->idx = i;
    ag_buf_init(&p->body, 1u << 20);
    int rc = ag_discovery_pick(g_gw.disc, k_parts[i].service, &p->inst);
    if (rc < 0) {
        snprintf(p->error, sizeof p->error, "no healthy instance of %s", k_parts[i].service);
        return;
    }
    p->picked = true;
    char url[512];
    snprintf(url, sizeof url, "http://%s:%d%s", p->inst.address, p->inst.port, k_parts[i].path);
    const char *hdrs[2] = {d->auth, NULL};
    ag_http_call call = {.method = "GET",
                         .url = url,
                         .headers = hdrs,
                         .deadline = dl,
                         .request_id = ag_req_id(d->req)};
    ag_http_async_cbs cbs = {.on_head = part_head, .on_body = part_body, .on_done = part_done};
    p->running = true;
    d->running++;
    d->refs++;
    rc = ag_http_client_start(g_gw.http, ag_req_loop(d->req), &call, &cbs, p, &p->op);
    if (rc < 0) {
        p->running = false;
        d->running--;
        d->refs--;
        ag_discovery_release(g_gw.disc, &p->inst, AG_CALL_FAILED);
        p->picked = false;
        snprintf(p->error, sizeof p->error, "%s: %s", k_parts[i].service, ag_strerror(rc));
    }
}

static void on_auth(void *ud, int rc, const ag_caller *caller, const char *why)
{
    dash *d = ud;
    if (d->gone) {
        dash_unref(d);
        return;
    }
    if (rc != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "invalid token: %s", why ? why : "rejected");
        d->answered = true;
        gw_common_headers(d->req, d->res, d->cfg);
        ag_res_header(d->res, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
        if (rc == AG_EUNAVAIL || rc == AG_EBUSY)
            ag_res_error(d->res, 503, "AUTH_UNAVAILABLE", "tokens cannot be verified right now",
                         NULL);
        else
            ag_res_error(d->res, 401, "UNAUTHENTICATED", msg, NULL);
        ag_res_send(d->res);
        uv_close((uv_handle_t *)&d->timer, on_timer_closed);
        dash_unref(d); /* the dash's own */
        dash_unref(d); /* the auth step's */
        return;
    }
    uint64_t left = ag_deadline_remaining(ag_req_deadline(d->req));
    uint64_t t = d->cfg->dashboard_timeout_ms < left ? d->cfg->dashboard_timeout_ms : left;
    ag_deadline dl = ag_deadline_in(t);
    uv_timer_start(&d->timer, on_deadline, t, 0);
    for (int i = 0; i < NPARTS; i++) start_part(d, i, dl);
    if (d->running == 0) dash_answer(d);
    dash_unref(d); /* the auth step's */
}

void gw_dashboard_handler(ag_http_req *req, ag_http_res *res, void *ud)
{
    (void)ud;
    gw_loop *gl = gw_loop_of(req);
    dash *d = ag_calloc(1, sizeof *d);
    d->req = req;
    d->res = res;
    d->cfg = gl->config;
    gw_config_ref(d->cfg);
    d->refs = 2; /* the dash, the timer */
    uv_timer_init(ag_loop_uv(gl->loop), &d->timer);
    d->timer.data = d;
    const char *h = ag_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0 || strlen(h) >= sizeof d->auth - 16) {
        d->answered = true;
        gw_common_headers(req, res, d->cfg);
        ag_res_header(res, "WWW-Authenticate", "Bearer");
        ag_res_error(res, 401, "UNAUTHENTICATED", "the dashboard needs a bearer token", NULL);
        ag_res_send(res);
        uv_close((uv_handle_t *)&d->timer, on_timer_closed);
        dash_unref(d);
        return;
    }
    snprintf(d->auth, sizeof d->auth, "Authorization: %s", h);
    ag_res_on_abort(res, on_abort, d);
    d->refs++;
    gw_auth_verify(gl->loop, h + 7, on_auth, d);
}
