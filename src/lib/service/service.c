/*
 * service.c — the start and stop of every Agora executable (agora/service.h).
 *
 * The main thread owns a small libuv loop of its own that only watches
 * signals; the I/O loops and the worker pool are separate threads. Shutdown
 * order matters and is written once here:
 *   signal → deregister from the registry → on_drain hooks → readiness 503
 *   → server drains (in-flight requests finish) → on_stop hooks
 *   → pool finishes → loops stop → exit 0.
 */
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "agora/auth.h"
#include "agora/config.h"
#include "agora/json.h"
#include "agora/log.h"
#include "agora/service.h"
#include "agora/trace.h"
#include "grpc/internal.h"

typedef struct ready_check {
    char *name;
    ag_ready_check fn;
    void *ud;
} ready_check;

typedef struct owned {
    void (*free_fn)(void *);
    void *p;
} owned;

typedef struct stop_hook {
    void (*fn)(void *);
    void *ud;
} stop_hook;

struct ag_service {
    char *name;
    const char *openapi_doc; /* the service's own document (borrowed) */
    const char *host;
    int port;
    int bound_port;
    int nloops, nworkers, queue;
    bool access_log;
    uint64_t drain_ms;
    ag_http_limits limits;
    ag_router *router;
    ag_loopset *loops;
    ag_pool *pool;
    ag_http_server *server;
    ag_metrics *metrics;
    ready_check *checks;
    int nchecks;
    stop_hook *hooks;
    int nhooks;
    bool hooks_ran;
    stop_hook *drain_hooks;
    int ndrain_hooks;
    ag_discovery *discovery;
    bool discovery_failed;
    bool no_registration;
    uv_loop_t main_loop;
    uv_async_t stop_async;
    uv_signal_t sigterm, sigint, sighup;
    void (*reload_fn)(void *ud); /* SIGHUP (ag_service_on_reload) */
    void *reload_ud;
    void (*start_fn)(void *ud); /* after the server started (ag_service_on_start) */
    void *start_ud;
    atomic_bool stopping;
    int signals_seen;
    ag_store *store;
    ag_bus *bus;
    owned *owned; /* freed in reverse order after the pool stopped (ag__service_own) */
    int nowned;
    const ag_grpc_method *grpc_methods; /* ag_service_use_grpc; NULL: no gRPC server */
    const char *grpc_name;
    ag_grpc_server *grpc;
    int grpc_port;
};

static int read_config(ag_service *s, int default_port)
{
    long long n;
    int rc = 0;
    const char *level_s;
    ag_log_level level = AG_LOG_INFO;
    ag_config_str("AGORA_LOG", "info", &level_s);
    if (ag_log_level_parse(level_s, &level) < 0) {
        ag_error("invalid configuration", AG_FS("variable", "AGORA_LOG"),
                 AG_FS("reason", "expected debug, info, warn, error or off"),
                 AG_FS("value", level_s));
        rc = AG_ECONFIG;
    }
    ag_log_setup(s->name, level);
    if (ag_config_int("PORT", default_port, 0, 65535, &n) < 0) rc = AG_ECONFIG;
    s->port = (int)n;
    ag_config_str("AGORA_HOST", "127.0.0.1", &s->host);
    if (ag_config_int("AGORA_LOOPS", 0, 0, 256, &n) < 0) rc = AG_ECONFIG;
    s->nloops = (int)n;
    if (ag_config_int("AGORA_WORKERS", 16, 1, 4096, &n) < 0) rc = AG_ECONFIG;
    s->nworkers = (int)n;
    if (ag_config_int("AGORA_QUEUE", 1024, 0, 1000000, &n) < 0) rc = AG_ECONFIG;
    s->queue = (int)n;
    if (ag_config_bool("AGORA_ACCESS_LOG", true, &s->access_log) < 0) rc = AG_ECONFIG;
    if (ag_config_duration_ms("AGORA_DRAIN_TIMEOUT", 10000, &s->drain_ms) < 0) rc = AG_ECONFIG;
    ag_http_limits_default(&s->limits);
    if (ag_http_limits_from_env(&s->limits) < 0) rc = AG_ECONFIG;
    return rc;
}

int ag_service_new(const char *name, int default_port, ag_service **out)
{
    ag_service *s = ag_calloc(1, sizeof *s);
    s->name = ag_strdup(name);
    ag_config_set_service(name);
    ag_log_setup(name, AG_LOG_INFO);
    int rc = read_config(s, default_port);
    if (rc < 0) {
        ag_free(s->name);
        ag_free(s);
        return rc;
    }
    s->metrics = ag_metrics_default();
    ag_metrics_process(s->metrics);
    if ((rc = ag_trace_setup(name, s->metrics)) < 0) {
        ag_free(s->name);
        ag_free(s);
        return rc;
    }
    s->router = ag_router_new();
    ag_obs_register_endpoints(s->router, s);
    atomic_init(&s->stopping, false);
    *out = s;
    return 0;
}

ag_router *ag_service_router(ag_service *s)
{
    return s->router;
}

ag_metrics *ag_service_metrics(ag_service *s)
{
    return s->metrics;
}

ag_loopset *ag_service_loops(ag_service *s)
{
    return s->loops;
}

ag_pool *ag_service_pool(ag_service *s)
{
    return s->pool;
}

const char *ag_service_name(const ag_service *s)
{
    return s->name;
}

int ag_service_port(const ag_service *s)
{
    return s->bound_port;
}

void ag_service_add_ready_check(ag_service *s, const char *name, ag_ready_check fn, void *ud)
{
    s->checks = ag_realloc(s->checks, (size_t)(s->nchecks + 1) * sizeof *s->checks);
    s->checks[s->nchecks++] = (ready_check){ag_strdup(name), fn, ud};
}

/* Replaces "{service}" in `url` with the service's name. */
static char *expand_service(const ag_service *s, const char *url)
{
    ag_buf b;
    ag_buf_init(&b, 0);
    const char *p = url;
    const char *hit;
    while ((hit = strstr(p, "{service}"))) {
        ag_buf_append(&b, p, (size_t)(hit - p));
        ag_buf_appends(&b, s->name);
        p = hit + 9;
    }
    ag_buf_appends(&b, p);
    return ag_buf_detach(&b, NULL);
}

int ag_service_use_store(ag_service *s, const char *schema_dir, ag_store **out)
{
    if (s->store) {
        *out = s->store;
        return 0;
    }
    char def[300];
    snprintf(def, sizeof def, "sqlite:var/%s.db", s->name);
    const char *raw;
    ag_config_str("AGORA_DB", def, &raw);
    char *url = expand_service(s, raw);
    int rc = ag_store_open(url, &s->store);
    if (rc == 0) ag_store_instrument(s->store, s->metrics, s->name);
    ag_free(url);
    if (rc < 0) return rc;
    if (schema_dir) {
        rc = ag_store_migrate(s->store, schema_dir, NULL);
        if (rc < 0) {
            ag_store_close(s->store);
            s->store = NULL;
            return rc;
        }
    }
    ag_service_add_ready_check(s, "store", ag_store_ping, s->store);
    *out = s->store;
    return 0;
}

/* GET /admin/dead-letters: what this service dead-lettered (admins only;
 * the service's auth middleware has verified the caller, if it has one). */
static void dead_letters(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_service *s = ud;
    if (!ag_auth_caller_role(req, res, "admin")) return;
    ag_validator v;
    ag_v_init(&v);
    int64_t limit = ag_v_query_int(&v, req, "limit", 50, 1, 1000);
    if (!ag_v_passed(&v, res, NULL)) return;
    json_t *arr = json_array();
    int rc = ag_bus_dead_letters(s->bus, (int)limit, arr);
    if (rc < 0) {
        json_decref(arr);
        ag_res_internal(req, res, "reading the dead letters failed", rc);
        return;
    }
    ag_res_ok(res, 200, arr);
}

int ag_service_use_bus(ag_service *s, ag_bus **out)
{
    if (s->bus) {
        *out = s->bus;
        return 0;
    }
    if (!s->store) {
        ag_error("ag_service_use_bus needs the service's store first (ag_service_use_store)");
        return AG_ESTATE;
    }
    const char *raw;
    ag_config_str("AGORA_BUS", "nats://127.0.0.1:4222", &raw);
    char *url = expand_service(s, raw);
    ag_bus_opts o = {.url = url, .service = s->name, .store = s->store, .metrics = s->metrics};
    int rc = ag_bus_open(&o, &s->bus);
    ag_free(url);
    if (rc < 0) return rc;
    ag_service_add_ready_check(s, "bus", ag_bus_ping, s->bus);
    ag_router_add(s->router, "GET", "/admin/dead-letters", dead_letters, s, 0);
    *out = s->bus;
    return 0;
}

ag_discovery *ag_service_discovery(ag_service *s)
{
    if (!s->discovery && !s->discovery_failed && ag_discovery_new(NULL, &s->discovery) < 0)
        s->discovery_failed = true;
    return s->discovery;
}

void ag_service_set_registration(ag_service *s, bool enabled)
{
    s->no_registration = !enabled;
}

void ag_service_on_drain(ag_service *s, void (*fn)(void *), void *ud)
{
    s->drain_hooks =
        ag_realloc(s->drain_hooks, (size_t)(s->ndrain_hooks + 1) * sizeof *s->drain_hooks);
    s->drain_hooks[s->ndrain_hooks++] = (stop_hook){fn, ud};
}

/* Registers with AGORA_REGISTRY when it is a URL (see service.h). */
static void register_self(ag_service *s)
{
    const char *reg = ag_config_raw("AGORA_REGISTRY");
    if (s->no_registration || !reg || strcmp(reg, "static") == 0) return;
    ag_discovery *d = ag_service_discovery(s);
    if (!d) return;
    ag_registration r = {.name = s->name, .port = s->bound_port};
    int rc = ag_discovery_register(d, &r);
    if (rc < 0) ag_warn("could not register with the registry", AG_FERR(rc));
}

void ag_service_set_openapi(ag_service *s, const char *json)
{
    s->openapi_doc = json;
}

const char *ag__service_openapi_doc(const ag_service *s);
const char *ag__service_openapi_doc(const ag_service *s)
{
    return s->openapi_doc;
}

void ag_service_on_reload(ag_service *s, void (*fn)(void *), void *ud)
{
    s->reload_fn = fn;
    s->reload_ud = ud;
}

void ag_service_on_start(ag_service *s, void (*fn)(void *), void *ud)
{
    s->start_fn = fn;
    s->start_ud = ud;
}

void ag_service_on_stop(ag_service *s, void (*fn)(void *), void *ud)
{
    s->hooks = ag_realloc(s->hooks, (size_t)(s->nhooks + 1) * sizeof *s->hooks);
    s->hooks[s->nhooks++] = (stop_hook){fn, ud};
}

/* Runs the readiness checks; fills `checks` with name → "ok" or the reason. */
int ag__service_ready(ag_service *s, json_t *checks);
int ag__service_ready(ag_service *s, json_t *checks)
{
    int rc = 0;
    if (s->server && ag_http_server_draining(s->server)) {
        json_object_set_new(checks, "server", json_string("draining"));
        rc = AG_EUNAVAIL;
    }
    for (int i = 0; i < s->nchecks; i++) {
        char why[256] = "";
        int r = s->checks[i].fn(s->checks[i].ud, why, sizeof why);
        json_object_set_new(checks, s->checks[i].name,
                            json_string(r == 0   ? "ok"
                                        : why[0] ? why
                                                 : ag_strerror(r)));
        if (r < 0) rc = r;
    }
    return rc;
}

void ag_service_use_grpc(ag_service *s, const char *name, const ag_grpc_method *methods)
{
    s->grpc_name = name;
    s->grpc_methods = methods;
}

int ag_service_grpc_port(const ag_service *s)
{
    return s->grpc_port;
}

static int grpc_ready(void *ud)
{
    json_t *checks = json_object();
    int rc = ag__service_ready(ud, checks);
    json_decref(checks);
    return rc;
}

/* The gRPC server beside the HTTP one: on AGORA_GRPC_PORT, or the HTTP
 * port + 100; "off": none. */
static int start_grpc(ag_service *s)
{
    const char *raw = ag_config_raw("AGORA_GRPC_PORT");
    if (raw && strcmp(raw, "off") == 0) return 0;
    long long port = s->bound_port + 100;
    if (raw && ag_config_int("AGORA_GRPC_PORT", port, 0, 65535, &port) < 0) return AG_ECONFIG;
    ag__grpc_opts o = {
        .host = s->host,
        .port = (int)port,
        .loops = s->loops,
        .pool = s->pool,
        .metrics = s->metrics,
        .methods = s->grpc_methods,
        .name = s->grpc_name,
        .tls_cert = ag_config_raw("AGORA_TLS_CERT"),
        .tls_key = ag_config_raw("AGORA_TLS_KEY"),
        .ready = grpc_ready,
        .ready_ud = s,
    };
    int rc = ag__grpc_server_start(&o, &s->grpc);
    if (rc == 0) s->grpc_port = ag__grpc_server_port(s->grpc);
    return rc;
}

static void on_signal(uv_signal_t *h, int signum)
{
    ag_service *s = h->data;
    if (signum == SIGHUP) {
        if (!s->reload_fn) {
            ag_info("SIGHUP received; nothing to reload");
            return;
        }
        ag_info("SIGHUP received; reloading");
        s->reload_fn(s->reload_ud);
        return;
    }
    s->signals_seen++;
    if (s->signals_seen > 1) {
        ag_warn("second signal during shutdown; exiting now", AG_FI("signal", signum));
        _exit(1);
    }
    ag_info("shutting down", AG_FS("signal", signum == SIGTERM ? "SIGTERM" : "SIGINT"));
    uv_stop(&s->main_loop);
}

static void on_stop_async(uv_async_t *h)
{
    ag_service *s = h->data;
    if (s->signals_seen++ == 0) ag_info("shutting down", AG_FS("reason", "requested"));
    uv_stop(&s->main_loop);
}

void ag_service_stop(ag_service *s)
{
    if (!atomic_exchange(&s->stopping, true)) uv_async_send(&s->stop_async);
}

static void close_cb_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

int ag__obs_register_openapi(ag_router *router, ag_service *svc);

/* The on_stop hooks, once: at the end of a run, or when a service that
 * never ran (it failed to start, or only described itself) is freed. */
static void run_stop_hooks(ag_service *s)
{
    if (s->hooks_ran) return;
    s->hooks_ran = true;
    for (int i = 0; i < s->nhooks; i++)
        s->hooks[i].fn(s->hooks[i].ud);
}

int ag_service_run(ag_service *s)
{
    if (ag__obs_register_openapi(s->router, s) < 0) return AG_ECONFIG;
    int rc = ag_loopset_new(s->nloops, &s->loops);
    if (rc < 0) return rc;
    rc = ag_pool_new(s->nworkers, s->queue, &s->pool);
    if (rc < 0) goto err_loops;
    rc = ag_loopset_start(s->loops);
    if (rc < 0) goto err_pool;
    ag_http_server_opts o = {
        .host = s->host,
        .port = s->port,
        .router = s->router,
        .loops = s->loops,
        .pool = s->pool,
        .limits = s->limits,
        .access_log = s->access_log,
        .metrics = s->metrics,
        /* TLS termination when both are set (AGORA_<SERVICE>_TLS_* too). */
        .tls_cert = ag_config_raw("AGORA_TLS_CERT"),
        .tls_key = ag_config_raw("AGORA_TLS_KEY"),
    };
    rc = ag_http_server_new(&o, &s->server);
    if (rc < 0) goto err_pool;
    if (s->bus) {
        rc = ag_bus_start(s->bus);
        if (rc < 0) goto err_server;
    }
    rc = ag_http_server_start(s->server);
    if (rc < 0) goto err_server;
    s->bound_port = ag_http_server_port(s->server);
    if (s->grpc_methods) {
        rc = start_grpc(s);
        if (rc < 0) goto err_server;
    }
    if (s->start_fn) s->start_fn(s->start_ud);

    /* Signals are watched on the main thread's own loop. SIGPIPE is ignored:
     * a peer that goes away is an error return, not a death. */
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&s->main_loop);
    uv_async_init(&s->main_loop, &s->stop_async, on_stop_async);
    s->stop_async.data = s;
    uv_signal_init(&s->main_loop, &s->sigterm);
    uv_signal_init(&s->main_loop, &s->sigint);
    uv_signal_init(&s->main_loop, &s->sighup);
    s->sigterm.data = s->sigint.data = s->sighup.data = s;
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    uv_signal_start(&s->sighup, on_signal, SIGHUP);

    ag_info("listening", AG_FS("host", s->host), AG_FI("port", s->bound_port),
            AG_FI("loops", ag_loopset_size(s->loops)), AG_FI("workers", s->nworkers),
            AG_FI("pid", getpid()));
    register_self(s);
    uv_run(&s->main_loop, UV_RUN_DEFAULT);

    /* Keep watching signals while draining: a second one exits at once.
     * Leave the registry first, so that callers stop picking this instance
     * while it still answers. */
    uv_signal_stop(&s->sighup);
    if (s->discovery) ag_discovery_deregister(s->discovery);
    for (int i = 0; i < s->ndrain_hooks; i++)
        s->drain_hooks[i].fn(s->drain_hooks[i].ud);
    int forced = ag_http_server_drain(s->server, s->drain_ms);
    /* gRPC calls in flight come back and are answered; then its
     * connections close. */
    ag__grpc_server_stop(s->grpc);
    s->grpc = NULL;
    /* Requests are done: stop consuming events and flush what they
     * published. */
    if (s->bus) ag_bus_stop(s->bus, s->drain_ms);
    run_stop_hooks(s);
    ag_pool_shutdown(s->pool);
    ag_loopset_stop(s->loops);
    uv_walk(&s->main_loop, close_cb_walk, NULL);
    uv_run(&s->main_loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->main_loop);
    ag_trace_shutdown(); /* the spans of the last requests and events */
    ag_info("stopped", AG_FI("forcedConnections", forced));
    return 0;

err_server:
    ag_http_server_free(s->server);
    s->server = NULL;
err_pool:
    ag_pool_free(s->pool);
    s->pool = NULL;
err_loops:
    ag_loopset_free(s->loops);
    s->loops = NULL;
    return rc;
}

void ag__service_own(ag_service *s, void (*free_fn)(void *), void *p);
void ag__service_own(ag_service *s, void (*free_fn)(void *), void *p)
{
    s->owned = ag_realloc(s->owned, (size_t)(s->nowned + 1) * sizeof *s->owned);
    s->owned[s->nowned++] = (owned){free_fn, p};
}

void ag_service_free(ag_service *s)
{
    if (!s) return;
    run_stop_hooks(s);
    ag_http_server_free(s->server);
    ag_pool_free(s->pool);
    ag_loopset_free(s->loops);
    /* Peers, the verifier and the HTTP client: nothing calls them any more. */
    for (int i = s->nowned - 1; i >= 0; i--)
        s->owned[i].free_fn(s->owned[i].p);
    ag_free(s->owned);
    ag_discovery_free(s->discovery);
    ag_bus_free(s->bus);
    ag_store_close(s->store);
    ag_router_free(s->router);
    for (int i = 0; i < s->nchecks; i++)
        ag_free(s->checks[i].name);
    ag_free(s->checks);
    ag_free(s->hooks);
    ag_free(s->drain_hooks);
    ag_free(s->name);
    ag_free(s);
    ag_trace_shutdown();
}
