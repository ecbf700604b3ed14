/*
 * grpc_bench.c — one transport's calls to agora-inventory for bench/grpc:
 * the checkout saga's hot call (Reserve: POST /v1/reservations or
 * InventoryService/Reserve) or a repeat Commit of a committed reservation
 * (POST /v1/reservations/:id/commit or InventoryService/Commit), from
 * --threads threads for --seconds, each call answered before the next on
 * its thread. Prints one line: calls, seconds, errors, p50 and p99 in ms.
 *
 *   bench-grpc --transport grpc|http --call reserve|commit --http URL
 *              --grpc URL --token TOKEN --product ID [--order ID]
 *              [--threads 8] [--seconds 10]
 *
 * Both transports go through what the services use: ag_grpc_client_call
 * (agora/grpc.h) and ag_http_client_do (agora/http_client.h), each keeping
 * its connections. A measurement, not a test: exits non-zero only when it
 * could not run or a call failed.
 */
#include <pthread.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "agora/agora.h"
#include "agora/grpc.h"
#include "agora/http_client.h"
#include "inventory.pb-c.h"

typedef struct opts {
    bool grpc, reserve;
    const char *http_url, *grpc_url, *token, *product, *order;
    int threads, seconds;
} opts;

static opts g_o = {.threads = 8, .seconds = 10};
static ag_grpc_client *g_grpc;
static ag_http_client *g_http;
static atomic_int g_errors;

typedef struct worker {
    int id;
    double *lat; /* ms */
    size_t n, cap;
    pthread_t t;
} worker;

static int one_grpc(worker *w, uint64_t seq, char *auth)
{
    uint8_t buf[512];
    size_t len;
    char order[96];
    if (g_o.reserve) {
        snprintf(order, sizeof order, "bg-%d-%llu-%ld", w->id, (unsigned long long)seq,
                 (long)getpid());
        Agora__Inventory__V1__Item item = AGORA__INVENTORY__V1__ITEM__INIT, *items[] = {&item};
        item.product_id = (char *)g_o.product;
        item.quantity = 1;
        Agora__Inventory__V1__ReserveRequest r = AGORA__INVENTORY__V1__RESERVE_REQUEST__INIT;
        r.order_id = order;
        r.n_items = 1;
        r.items = items;
        len = agora__inventory__v1__reserve_request__pack(&r, buf);
    } else {
        Agora__Inventory__V1__ReservationRef r = AGORA__INVENTORY__V1__RESERVATION_REF__INIT;
        r.order_id = (char *)g_o.order;
        len = agora__inventory__v1__reservation_ref__pack(&r, buf);
    }
    ag_grpc_answer a;
    int rc = ag_grpc_client_call(g_grpc, g_o.grpc_url,
                                 g_o.reserve ? "/agora.inventory.v1.InventoryService/Reserve"
                                             : "/agora.inventory.v1.InventoryService/Commit",
                                 "inventory", auth, buf, len, ag_deadline_in(5000), &a);
    if (rc < 0) return rc;
    rc = a.status == AG_GRPC_OK ? 0 : AG_EPROTO;
    if (rc < 0) fprintf(stderr, "bench-grpc: %s %s\n", ag_grpc_status_name(a.status), a.message);
    ag_grpc_answer_clear(&a);
    return rc;
}

static int one_http(worker *w, uint64_t seq, const char *auth_header)
{
    char url[512], body[512];
    const char *headers[] = {auth_header, "Content-Type: application/json", NULL};
    if (g_o.reserve) {
        snprintf(url, sizeof url, "%s/v1/reservations", g_o.http_url);
        snprintf(body, sizeof body,
                 "{\"orderId\":\"bh-%d-%llu-%ld\",\"items\":[{\"productId\":\"%s\",\"quantity\":1}]}",
                 w->id, (unsigned long long)seq, (long)getpid(), g_o.product);
    } else {
        snprintf(url, sizeof url, "%s/v1/reservations/%s/commit", g_o.http_url, g_o.order);
        body[0] = '\0';
    }
    ag_http_call call = {.method = "POST", .url = url, .headers = headers, .body = body,
                         .body_len = strlen(body), .deadline = ag_deadline_in(5000)};
    ag_http_reply rep;
    memset(&rep, 0, sizeof rep);
    int rc = ag_http_client_do(g_http, &call, &rep);
    if (rc == 0 && rep.status != (g_o.reserve ? 201 : 200)) {
        fprintf(stderr, "bench-grpc: HTTP %d\n", rep.status);
        rc = AG_EPROTO;
    }
    ag_http_reply_release(&rep);
    return rc;
}

static void *run(void *arg)
{
    worker *w = arg;
    char auth[4200], auth_header[4300];
    snprintf(auth, sizeof auth, "Bearer %s", g_o.token);
    snprintf(auth_header, sizeof auth_header, "Authorization: Bearer %s", g_o.token);
    uint64_t end = ag_now_ms() + (uint64_t)g_o.seconds * 1000;
    for (uint64_t seq = 0; ag_now_ms() < end; seq++) {
        uint64_t t0 = ag_now_ns();
        int rc = g_o.grpc ? one_grpc(w, seq, auth) : one_http(w, seq, auth_header);
        if (rc < 0) {
            atomic_fetch_add(&g_errors, 1);
            continue;
        }
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 4096;
            w->lat = ag_realloc(w->lat, w->cap * sizeof *w->lat);
        }
        w->lat[w->n++] = (double)(ag_now_ns() - t0) / 1e6;
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--transport")) g_o.grpc = !strcmp(v, "grpc");
        else if (!strcmp(k, "--call")) g_o.reserve = !strcmp(v, "reserve");
        else if (!strcmp(k, "--http")) g_o.http_url = v;
        else if (!strcmp(k, "--grpc")) g_o.grpc_url = v;
        else if (!strcmp(k, "--token")) g_o.token = v;
        else if (!strcmp(k, "--product")) g_o.product = v;
        else if (!strcmp(k, "--order")) g_o.order = v;
        else if (!strcmp(k, "--threads")) g_o.threads = (int)strtol(v, NULL, 10);
        else if (!strcmp(k, "--seconds")) g_o.seconds = (int)strtol(v, NULL, 10);
        else {
            fprintf(stderr, "bench-grpc: unknown option %s\n", k);
            return 2;
        }
    }
    if (!g_o.http_url || !g_o.grpc_url || !g_o.token || !g_o.product ||
        (!g_o.reserve && !g_o.order) || g_o.threads < 1 || g_o.threads > 256 ||
        g_o.seconds < 1) {
        fprintf(stderr, "bench-grpc: see the header comment for the options\n");
        return 2;
    }
    if (ag_grpc_client_new(&g_grpc) < 0 || ag_http_client_new(NULL, &g_http) < 0) return 1;
    worker *w = ag_calloc((size_t)g_o.threads, sizeof *w);
    uint64_t t0 = ag_now_ns();
    for (int i = 0; i < g_o.threads; i++) {
        w[i].id = i;
        pthread_create(&w[i].t, NULL, run, &w[i]);
    }
    size_t total = 0;
    for (int i = 0; i < g_o.threads; i++) {
        pthread_join(w[i].t, NULL);
        total += w[i].n;
    }
    double secs = (double)(ag_now_ns() - t0) / 1e9;
    double *all = ag_calloc(total ? total : 1, sizeof *all);
    size_t k = 0;
    for (int i = 0; i < g_o.threads; i++) {
        memcpy(all + k, w[i].lat, w[i].n * sizeof *all);
        k += w[i].n;
        ag_free(w[i].lat);
    }
    qsort(all, total, sizeof *all, cmp);
    double p50 = total ? all[total / 2] : 0, p99 = total ? all[(size_t)((double)total * 0.99)] : 0;
    printf("calls=%zu seconds=%.3f errors=%d p50_ms=%.3f p99_ms=%.3f\n", total, secs,
           atomic_load(&g_errors), p50, p99);
    ag_free(all);
    ag_free(w);
    ag_grpc_client_free(g_grpc);
    ag_http_client_free(g_http);
    return atomic_load(&g_errors) ? 1 : 0;
}
