/*
 * plain_amqp.c — the reference for Agora's RabbitMQ path: rabbitmq-c alone,
 * no database, the same broker promises.
 *
 *   bench-plain-amqp --url amqp://USER:PASS@HOST:PORT/ [--events N] [--size BYTES]
 *                    [--prefetch P] [--timeout S]
 *
 * A durable topic exchange of its own (benchplain.events) and a durable
 * queue of its own per run bound to it. The publisher, on its own
 * connection with publisher confirms on, publishes N messages of --size bytes,
 * each `mandatory` and persistent (delivery_mode 2) with a message_id, and
 * waits for each confirm before the next (what Agora's relay does); a
 * basic.return or basic.nack fails the run. The consumer, on another
 * connection and thread, consumes with manual acks (basic.qos prefetch P)
 * and acknowledges each message on its own. The clock runs from the first
 * publish until the consumer has acknowledged N messages. Every message
 * carries its number: a lost or duplicated one is reported and fails the run.
 *
 * Prints one line on stdout:
 *   plain-amqp events=N seconds=S events_per_s=R publish_s=P bytes=B prefetch=P
 * Exit status: 0 measured, 1 failure, 2 usage.
 */
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define CH 1
#define EXCHANGE "benchplain.events"

typedef struct consumer {
    amqp_connection_state_t conn;
    long events;
    double timeout_s;
    unsigned char *seen;
    atomic_long acked;
    atomic_bool stop;
    long dups, bad;
    int failed;
    double t_done;
} consumer;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || !end || end == s || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-plain-amqp --url amqp://USER:PASS@HOST:PORT/ [--events N] "
                    "[--size BYTES] [--prefetch P] [--timeout SECONDS]\n");
    exit(2);
}

/* 0 when r is a normal reply; otherwise prints why and returns -1. */
static int check(amqp_rpc_reply_t r, const char *what)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        fprintf(stderr, "bench-plain-amqp: %s: no reply\n", what);
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        fprintf(stderr, "bench-plain-amqp: %s: %s\n", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            fprintf(stderr, "bench-plain-amqp: %s: connection closed: %u %.*s\n", what,
                    m->reply_code, (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            fprintf(stderr, "bench-plain-amqp: %s: channel closed: %u %.*s\n", what, m->reply_code,
                    (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            fprintf(stderr, "bench-plain-amqp: %s: server error 0x%08x\n", what,
                    (unsigned)r.reply.id);
        }
        break;
    }
    return -1;
}

static amqp_connection_state_t open_conn(const struct amqp_connection_info *ci, bool confirms)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(c);
    struct timeval tv = {5, 0};
    if (!sock) goto fail;
    int rc = amqp_socket_open_noblock(sock, ci->host, ci->port, &tv);
    if (rc != AMQP_STATUS_OK) {
        fprintf(stderr, "bench-plain-amqp: connect %s:%d: %s\n", ci->host, ci->port,
                amqp_error_string2(rc));
        goto fail;
    }
    amqp_set_rpc_timeout(c, &tv);
    if (check(
            amqp_login(c, ci->vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, ci->user, ci->password),
            "login"))
        goto fail;
    amqp_channel_open(c, CH);
    if (check(amqp_get_rpc_reply(c), "channel.open")) goto fail;
    if (confirms) {
        amqp_confirm_select(c, CH);
        if (check(amqp_get_rpc_reply(c), "confirm.select")) goto fail;
    }
    return c;
fail:
    amqp_destroy_connection(c);
    return NULL;
}

static void close_conn(amqp_connection_state_t c)
{
    if (!c) return;
    amqp_channel_close(c, CH, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static long number_of(const void *data, size_t len)
{
    const char *d = data;
    if (len < 6 || memcmp(d, "{\"n\":", 5) != 0) return -1;
    long v = 0;
    size_t i = 5;
    for (; i < len && d[i] >= '0' && d[i] <= '9'; i++)
        v = v * 10 + (d[i] - '0');
    return i > 5 ? v : -1;
}

static void *consumer_main(void *arg)
{
    consumer *c = arg;
    double last_progress = now_s();
    while (atomic_load(&c->acked) < c->events && !atomic_load(&c->stop)) {
        amqp_envelope_t env;
        struct timeval tv = {0, 250000};
        amqp_maybe_release_buffers(c->conn);
        amqp_rpc_reply_t r = amqp_consume_message(c->conn, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT) {
            if (now_s() - last_progress > c->timeout_s) {
                fprintf(stderr, "bench-plain-amqp: consumer stalled at %ld of %ld\n",
                        atomic_load(&c->acked), c->events);
                c->failed = 1;
                break;
            }
            continue;
        }
        if (check(r, "consume")) {
            c->failed = 1;
            break;
        }
        long n = number_of(env.message.body.bytes, env.message.body.len);
        if (n < 0 || n >= c->events)
            c->bad++;
        else if (c->seen[n]++)
            c->dups++;
        if (amqp_basic_ack(c->conn, CH, env.delivery_tag, 0) != AMQP_STATUS_OK) {
            fprintf(stderr, "bench-plain-amqp: basic.ack failed\n");
            c->failed = 1;
        }
        amqp_destroy_envelope(&env);
        atomic_fetch_add(&c->acked, 1);
        last_progress = now_s();
        if (c->failed) break;
    }
    c->t_done = now_s();
    return NULL;
}

/* Waits for the confirm of delivery tag `tag`: 0 on basic.ack without a
 * return, -1 otherwise. */
static int wait_confirm(amqp_connection_state_t c, uint64_t tag, double timeout_s)
{
    bool returned = false;
    double deadline = now_s() + timeout_s;
    for (;;) {
        double left = deadline - now_s();
        if (left <= 0) {
            fprintf(stderr, "bench-plain-amqp: no confirm for tag %llu\n", (unsigned long long)tag);
            return -1;
        }
        struct timeval tv = {(time_t)left, (suseconds_t)((left - (double)(time_t)left) * 1e6)};
        amqp_frame_t f;
        int rc = amqp_simple_wait_frame_noblock(c, &f, &tv);
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "bench-plain-amqp: waiting for a confirm: %s\n",
                    amqp_error_string2(rc));
            return -1;
        }
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        switch (f.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->delivery_tag >= tag) return returned ? -1 : 0;
            break;
        }
        case AMQP_BASIC_NACK_METHOD:
            fprintf(stderr, "bench-plain-amqp: basic.nack for tag %llu\n", (unsigned long long)tag);
            return -1;
        case AMQP_BASIC_RETURN_METHOD: {
            amqp_message_t m;
            returned = true;
            fprintf(stderr, "bench-plain-amqp: message returned (unroutable)\n");
            if (amqp_read_message(c, f.channel, &m, 0).reply_type == AMQP_RESPONSE_NORMAL)
                amqp_destroy_message(&m);
            break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD:
            fprintf(stderr, "bench-plain-amqp: the broker closed the channel\n");
            return -1;
        default:
            break;
        }
    }
}

int main(int argc, char **argv)
{
    const char *url = NULL;
    long events = 20000, size = 250, prefetch = 100, timeout = 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--events") == 0) {
            if (parse_long(v, 1, 10000000, &events) < 0) usage();
        } else if (strcmp(a, "--size") == 0) {
            if (parse_long(v, 16, 1000000, &size) < 0) usage();
        } else if (strcmp(a, "--prefetch") == 0) {
            if (parse_long(v, 1, 65535, &prefetch) < 0) usage();
        } else if (strcmp(a, "--timeout") == 0) {
            if (parse_long(v, 1, 3600, &timeout) < 0) usage();
        } else
            usage();
        i++;
    }
    if (!url) url = getenv("AGORA_TEST_AMQP_URL");
    if (!url) usage();

    char *url_copy = strdup(url);
    struct amqp_connection_info ci;
    amqp_default_connection_info(&ci);
    if (!url_copy || amqp_parse_url(url_copy, &ci) != AMQP_STATUS_OK) {
        fprintf(stderr, "bench-plain-amqp: cannot parse %s\n", url);
        free(url_copy);
        return 2;
    }
    if (!ci.vhost || !*ci.vhost) ci.vhost = "/";

    char run[64], queue[96], key[96];
    snprintf(run, sizeof run, "%ld_%ld", (long)getpid(), (long)time(NULL));
    snprintf(queue, sizeof queue, "benchplain.%s", run);
    snprintf(key, sizeof key, "bench.r%s", run);

    consumer c = {.events = events, .timeout_s = (double)timeout};
    atomic_init(&c.acked, 0);
    atomic_init(&c.stop, false);
    c.seen = calloc((size_t)events, 1);
    char *body = malloc((size_t)size + 1);
    amqp_connection_state_t pub = NULL;
    int status = 1;
    bool started = false;
    pthread_t th;
    if (!c.seen || !body) goto out;

    pub = open_conn(&ci, true);
    c.conn = open_conn(&ci, false);
    if (!pub || !c.conn) goto out;
    amqp_exchange_declare(c.conn, CH, amqp_cstring_bytes(EXCHANGE), amqp_cstring_bytes("topic"), 0,
                          1, 0, 0, amqp_empty_table);
    if (check(amqp_get_rpc_reply(c.conn), "exchange.declare")) goto out;
    amqp_queue_declare(c.conn, CH, amqp_cstring_bytes(queue), 0, 1, 0, 0, amqp_empty_table);
    if (check(amqp_get_rpc_reply(c.conn), "queue.declare")) goto out;
    amqp_queue_bind(c.conn, CH, amqp_cstring_bytes(queue), amqp_cstring_bytes(EXCHANGE),
                    amqp_cstring_bytes(key), amqp_empty_table);
    if (check(amqp_get_rpc_reply(c.conn), "queue.bind")) goto out;
    amqp_basic_qos(c.conn, CH, 0, (uint16_t)prefetch, 0);
    if (check(amqp_get_rpc_reply(c.conn), "basic.qos")) goto out;
    amqp_basic_consume(c.conn, CH, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    if (check(amqp_get_rpc_reply(c.conn), "basic.consume")) goto out;
    if (pthread_create(&th, NULL, consumer_main, &c) != 0) goto out;
    started = true;

    double t0 = now_s();
    for (long i = 0; i < events; i++) {
        char id[96];
        snprintf(id, sizeof id, "%s-%ld", run, i);
        int hl = snprintf(body, (size_t)size + 1, "{\"n\":%ld,\"id\":\"%s\",\"pad\":\"", i, id);
        if (hl < 0) goto out;
        long len = hl;
        for (; len < size - 2; len++)
            body[len] = 'x';
        if (len < size) body[len++] = '"';
        if (len < size) body[len++] = '}';
        amqp_basic_properties_t p;
        memset(&p, 0, sizeof p);
        p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
                   AMQP_BASIC_CONTENT_TYPE_FLAG;
        p.delivery_mode = 2; /* persistent */
        p.message_id = amqp_cstring_bytes(id);
        p.content_type = amqp_cstring_bytes("application/json");
        amqp_bytes_t b = {.len = (size_t)len, .bytes = body};
        int rc = amqp_basic_publish(pub, CH, amqp_cstring_bytes(EXCHANGE), amqp_cstring_bytes(key),
                                    1, 0, &p, b);
        if (rc != AMQP_STATUS_OK) {
            fprintf(stderr, "bench-plain-amqp: basic.publish: %s\n", amqp_error_string2(rc));
            goto out;
        }
        if (wait_confirm(pub, (uint64_t)i + 1, (double)timeout) < 0) goto out;
    }
    double t_pub = now_s() - t0;
    pthread_join(th, NULL);
    started = false;
    if (c.failed) goto out;
    double secs = c.t_done - t0;
    long lost = 0;
    for (long i = 0; i < events; i++)
        lost += !c.seen[i];
    if (lost || c.dups || c.bad) {
        fprintf(stderr, "bench-plain-amqp: %ld lost, %ld duplicated, %ld unreadable messages\n",
                lost, c.dups, c.bad);
        goto out;
    }
    printf("plain-amqp events=%ld seconds=%.3f events_per_s=%.0f publish_s=%.3f bytes=%ld "
           "prefetch=%ld\n",
           events, secs, (double)events / secs, t_pub, size, prefetch);
    fflush(stdout);
    status = 0;
    /* Tidy the broker: this run's queue (the publisher's channel is idle). */
    amqp_queue_delete(pub, CH, amqp_cstring_bytes(queue), 0, 0);
    check(amqp_get_rpc_reply(pub), "queue.delete");

out:
    if (started) {
        atomic_store(&c.stop, true);
        pthread_join(th, NULL);
    }
    close_conn(pub);
    close_conn(c.conn);
    free(url_copy);
    free(c.seen);
    free(body);
    return status;
}
