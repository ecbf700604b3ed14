/*
 * agora-hello — the smallest Agora service: what `make up` starts until the
 * real services exist, and the framework's side of bench/http.
 *   GET /hello        "hello\n" answered on the I/O loop
 *   GET /hello/pool   the same through the worker pool
 *   GET /v1/hello/:name  {"success":true,"data":{"hello":name}}
 */
#include "agora/agora.h"

static void hello(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_res_body(res, 200, "text/plain", "hello\n", 6);
}

static void hello_name(ag_http_req *req, ag_http_res *res, void *ud)
{
    ag_res_ok(res, 200, json_pack("{s:s}", "hello", ag_req_param(req, "name")));
}

static void routes(ag_router *r)
{
    ag_router_add(r, "GET", "/hello", hello, NULL, AG_ROUTE_INLINE);
    ag_router_add(r, "GET", "/hello/pool", hello, NULL, 0);
    ag_router_add(r, "GET", "/v1/hello/:name", hello_name, NULL, 0);
}

static const ag_service_def k_hello = {.name = "hello", .port = 7000, .routes = routes};

int main(void)
{
    return ag_service_main(&k_hello);
}
