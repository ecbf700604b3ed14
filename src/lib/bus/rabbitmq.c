/*
 * rabbitmq.c — the RabbitMQ adapter of the bus (see internal.h), on
 * rabbitmq-c 0.11 (Debian's librabbitmq-dev). The core decides retries and
 * dead letters; this file keeps the broker's promises.
 *
 * Topology, declared idempotently by every open (and again after every
 * reconnect):
 *
 *   agora.events               topic exchange, durable; routing key = type
 *   agora.<svc>                durable queue, bound to agora.events with each
 *                              pattern (consumer role; ">" becomes "#")
 *   agora.<svc>.dlq            durable queue; dead letters carry the headers
 *                              x-agora-reason and x-agora-deliveries
 *   agora.<svc>.retry.<ms>     durable queue per distinct delay, declared on
 *                              first use: x-message-ttl <ms>, dead-lettered by
 *                              the broker through the default exchange back
 *                              to agora.<svc>
 *
 * Why one retry queue per delay rather than one queue with a per-message
 * `expiration`: RabbitMQ only expires messages at the head of a queue, so in
 * a single queue an event waiting 8 s holds back one behind it that should
 * wait 1 s. In a queue whose messages all share one TTL, the head is always
 * the first to expire, so every delay is kept exactly. The core's backoff
 * doubles per delivery, so a service has a handful of these queues
 * (log2(max delay / base) + 1); their arguments follow from their name, so a
 * redeclaration never conflicts.
 *
 * Publishing: persistent, content type application/cloudevents+json,
 * message_id = event id, routing key = type, mandatory, publisher confirms
 * (one outstanding publish per channel, waited for up to 5 s). A basic.nack,
 * a timeout or a lost connection is a failure. A basic.return with 312
 * NO_ROUTE for an event is NOT a failure: it means no service has bound a
 * queue for that type, so no consumer exists that could miss it, and
 * treating it as a failure would block the outbox for good behind an event
 * nobody listens to (a catch-all queue would only pile messages up). Note the
 * consequence: a consumer's queue must be declared (its service started once)
 * before events published for it are kept. Retry and dead-letter copies are
 * published to queues this adapter declared, so for them a return is a
 * failure.
 *
 * Delivery count: RabbitMQ 3.10 classic queues do not count redeliveries, so
 * the count travels with the message: a retry copy carries x-agora-delivery
 * = the number its next delivery will have. A delivery is
 *     (x-agora-delivery, or 1 without it) + (1 if `redelivered`)
 * where `redelivered` means the broker handed it out before to a consumer
 * that died without acking. That is a lower bound: a message that crashes
 * its consumer again and again counts only one more each time it comes back
 * through a retry queue (quorum queues' delivery-limit would fix that; the
 * queues here are classic). It can also count one too many: the message the
 * broker pushed ahead (prefetch 1) when a consumer stops or its connection
 * breaks comes back flagged `redelivered` though no handler saw it.
 *
 * Connections: each open() is one connection with channel 1 (confirm mode)
 * used by one thread; dlq_fetch uses channel 2. When the connection breaks,
 * the adapter drops it and the next publish/fetch/dlq_fetch reconnects and
 * redeclares everything (the core calls again after a pause), so a broker
 * restart needs nothing from the core. Deliveries carry the generation of
 * the connection they came on: ack/retry_later/dead_letter of a message from
 * a dead connection do nothing (AG_ECLOSED) because the broker has already
 * put it back in the queue.
 *
 *   DOWN ──connect, login, declare (generation++)──► UP
 *    ▲                                                │ socket error, broker
 *    └──────────────── drop ◄─────────────────────────┘ close, confirm
 *                                                       timeout, channel error
 *
 * The consumer negotiates 60 s heartbeats (fetch runs the library every
 * 250 ms, which sends them; a handler busy for more than two minutes costs
 * the connection, and its event comes again for the inbox to drop). The
 * publisher does not: the relay can sit idle for long and nothing would send
 * them. A dead peer shows there as a confirm timeout instead, and each
 * publish first reads what the broker sent meanwhile (a connection.close at
 * shutdown), so a restarted broker costs no failed publish. healthy()
 * reports what the last operation saw (an atomic flag; the library has no
 * thread of its own): an idle publisher whose broker went away says "up"
 * until its next publish finds out and reconnects.
 */
#include <amqp.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "agora/clock.h"
#include "agora/log.h"
#include "agora/mem.h"
#include "internal.h"

#define CH 1     /* everything but dlq_fetch */
#define DLQ_CH 2 /* dlq_fetch's basic.get, away from channel 1's deliveries */
#define CONNECT_TIMEOUT_MS 2000
#define RPC_TIMEOUT_MS 5000
#define CONFIRM_TIMEOUT_MS 5000
#define CONSUMER_HEARTBEAT_S 60
#define PREFETCH 1
#define RETRY_CACHE 32
#define MAX_NAME 200 /* a service name longer than this makes queue names too long */
#define CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

typedef struct rstate {
    ag__bus_role role;
    char *url_copy; /* amqp_parse_url's fields point into it */
    struct amqp_connection_info ci;
    char where[300]; /* host:port/vhost, for logs (no password) */
    char *queue, *dlq, *conn_name;
    char **keys; /* binding keys (consumer role) */
    int nkeys;

    amqp_connection_state_t conn; /* NULL while down */
    uint64_t generation;          /* bumped on every connect */
    uint64_t next_tag;            /* last publish sequence number on channel 1 */
    bool dlq_ready;               /* channel 2 open and the DLQ declared */
    uint64_t retry_declared[RETRY_CACHE];
    int nretry;
    bool was_up; /* for logging transitions only */
    atomic_int up;
} rstate;

/* What fetch hands out: the envelope (self-contained: rabbitmq-c copies the
 * properties into the message's own pool and mallocs the body). */
typedef struct rmsg {
    amqp_envelope_t env;
    uint64_t generation;
} rmsg;

/* ---- Small helpers ----------------------------------------------------------- */

static struct timeval tv_of(uint64_t ms)
{
    return (struct timeval){.tv_sec = (time_t)(ms / 1000),
                            .tv_usec = (suseconds_t)(ms % 1000) * 1000};
}

static amqp_bytes_t bytes_of(const char *s)
{
    return amqp_cstring_bytes(s);
}

static bool bytes_eq(amqp_bytes_t b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.bytes, s, n) == 0);
}

static bool bytes_prefix(amqp_bytes_t b, const char *s)
{
    size_t n = strlen(s);
    return b.len >= n && memcmp(b.bytes, s, n) == 0;
}

/* a + b + c in one ag_malloc'ed string. */
static char *concat3(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = ag_malloc(la + lb + lc + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

static int map_status(int status)
{
    switch (status) {
    case AMQP_STATUS_OK:
        return 0;
    case AMQP_STATUS_TIMEOUT:
        return AG_ETIMEDOUT;
    case AMQP_STATUS_NO_MEMORY:
        return AG_ENOMEM;
    case AMQP_STATUS_CONNECTION_CLOSED:
    case AMQP_STATUS_SOCKET_ERROR:
    case AMQP_STATUS_SOCKET_CLOSED:
    case AMQP_STATUS_HEARTBEAT_TIMEOUT:
    case AMQP_STATUS_SSL_ERROR:
    case AMQP_STATUS_TCP_ERROR:
        return AG_ECLOSED;
    default:
        return AG_EIO;
    }
}

/* Describes a failed RPC into buf and maps it to an AG_E* code. */
static int reply_error(amqp_rpc_reply_t r, char *buf, size_t n)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        buf[0] = '\0';
        return 0;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, n, "no reply from the broker");
        return AG_EPROTO;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, n, "%s", amqp_error_string2(r.library_error));
        return map_status(r.library_error);
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *m = r.reply.decoded;
            snprintf(buf, n, "connection closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
            return AG_ECLOSED;
        }
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *m = r.reply.decoded;
            snprintf(buf, n, "channel closed by the broker: %u %.*s", m->reply_code,
                     (int)m->reply_text.len, (const char *)m->reply_text.bytes);
            return AG_EIO;
        }
        snprintf(buf, n, "unexpected method 0x%08x from the broker", (unsigned)r.reply.id);
        return AG_EPROTO;
    }
    snprintf(buf, n, "unknown reply type");
    return AG_EPROTO;
}

/* Forgets the connection; the next operation reconnects. `why` goes to the
 * log once per loss. */
static void drop(rstate *st, const char *why)
{
    if (!st->conn) return;
    if (st->was_up)
        ag_warn("RabbitMQ connection lost; reconnecting on next use", AG_FS("broker", st->where),
                AG_FS("role", st->role == AG_BUS_PUBLISHER ? "publisher" : "consumer"),
                AG_FS("reason", why));
    st->was_up = false;
    atomic_store(&st->up, 0);
    /* No close handshake: the socket is dead, or its state unknown (a
     * confirm that timed out); closing the socket is the one safe move. */
    amqp_destroy_connection(st->conn);
    st->conn = NULL;
}

/* Checks the last RPC on the connection; on failure logs, drops the
 * connection (channel errors leave channel 1 unusable) and returns the code. */
static int check_rpc(rstate *st, const char *what)
{
    char buf[400];
    int rc = reply_error(amqp_get_rpc_reply(st->conn), buf, sizeof buf);
    if (rc == 0) return 0;
    ag_error("RabbitMQ operation failed", AG_FS("op", what), AG_FS("broker", st->where),
             AG_FS("error", buf));
    drop(st, buf);
    return rc;
}

static amqp_table_entry_t entry_str(const char *k, const char *v)
{
    amqp_table_entry_t e;
    e.key = bytes_of(k);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = bytes_of(v);
    return e;
}

static amqp_table_entry_t entry_i64(const char *k, int64_t v)
{
    amqp_table_entry_t e;
    e.key = bytes_of(k);
    e.value.kind = AMQP_FIELD_KIND_I64;
    e.value.value.i64 = v;
    return e;
}

static amqp_table_entry_t entry_bool(const char *k, bool v)
{
    amqp_table_entry_t e;
    e.key = bytes_of(k);
    e.value.kind = AMQP_FIELD_KIND_BOOLEAN;
    e.value.value.boolean = v;
    return e;
}

static const amqp_field_value_t *header(const amqp_basic_properties_t *p, const char *key)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG)) return NULL;
    for (int i = 0; i < p->headers.num_entries; i++)
        if (bytes_eq(p->headers.entries[i].key, key)) return &p->headers.entries[i].value;
    return NULL;
}

/* An integer header of any integer kind; false when absent or not one. */
static bool header_int(const amqp_basic_properties_t *p, const char *key, int64_t *out)
{
    const amqp_field_value_t *v = header(p, key);
    if (!v) return false;
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        *out = v->value.i8;
        return true;
    case AMQP_FIELD_KIND_U8:
        *out = v->value.u8;
        return true;
    case AMQP_FIELD_KIND_I16:
        *out = v->value.i16;
        return true;
    case AMQP_FIELD_KIND_U16:
        *out = v->value.u16;
        return true;
    case AMQP_FIELD_KIND_I32:
        *out = v->value.i32;
        return true;
    case AMQP_FIELD_KIND_U32:
        *out = v->value.u32;
        return true;
    case AMQP_FIELD_KIND_I64:
        *out = v->value.i64;
        return true;
    case AMQP_FIELD_KIND_U64:
        *out = v->value.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->value.u64;
        return true;
    default:
        return false;
    }
}

/* The original's headers without the ones this adapter or the broker's
 * dead-lettering own, with room for `extra` more (ag_malloc'ed entries). */
static amqp_table_t copy_headers(const amqp_basic_properties_t *p, int extra)
{
    int n = (p->_flags & AMQP_BASIC_HEADERS_FLAG) ? p->headers.num_entries : 0;
    amqp_table_t t = {0, ag_malloc((size_t)(n + extra) * sizeof(amqp_table_entry_t))};
    for (int i = 0; i < n; i++) {
        amqp_bytes_t k = p->headers.entries[i].key;
        if (bytes_prefix(k, "x-agora-") || bytes_eq(k, "x-death") ||
            bytes_prefix(k, "x-first-death-") || bytes_prefix(k, "x-last-death-"))
            continue;
        t.entries[t.num_entries++] = p->headers.entries[i];
    }
    return t;
}

/* ---- Connecting ------------------------------------------------------------------ */

static int declare_queue(rstate *st, amqp_channel_t ch, const char *name, amqp_table_t args)
{
    amqp_queue_declare(st->conn, ch, bytes_of(name), 0, 1, 0, 0, args);
    return check_rpc(st, name);
}

static int declare(rstate *st)
{
    amqp_exchange_declare(st->conn, CH, bytes_of(AG_BUS_EXCHANGE), bytes_of("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    int rc = check_rpc(st, "exchange.declare " AG_BUS_EXCHANGE);
    if (rc < 0 || st->role != AG_BUS_CONSUMER) return rc;
    if ((rc = declare_queue(st, CH, st->queue, amqp_empty_table)) < 0) return rc;
    for (int i = 0; i < st->nkeys; i++) {
        amqp_queue_bind(st->conn, CH, bytes_of(st->queue), bytes_of(AG_BUS_EXCHANGE),
                        bytes_of(st->keys[i]), amqp_empty_table);
        if ((rc = check_rpc(st, "queue.bind")) < 0) return rc;
    }
    if ((rc = declare_queue(st, CH, st->dlq, amqp_empty_table)) < 0) return rc;
    amqp_basic_qos(st->conn, CH, 0, PREFETCH, 0);
    if ((rc = check_rpc(st, "basic.qos")) < 0) return rc;
    amqp_basic_consume(st->conn, CH, bytes_of(st->queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    return check_rpc(st, "basic.consume");
}

/* Connects, logs in, opens channel 1 in confirm mode and declares the
 * topology. Leaves st->conn NULL on failure. */
static int connect_broker(rstate *st)
{
    if (st->conn) return 0;
    st->conn = amqp_new_connection();
    amqp_socket_t *sock =
        st->ci.ssl ? amqp_ssl_socket_new(st->conn) : amqp_tcp_socket_new(st->conn);
    if (!sock) {
        amqp_destroy_connection(st->conn);
        st->conn = NULL;
        return AG_ENOMEM;
    }
    if (st->ci.ssl) {
        /* Verify the broker against the system's CA bundle. */
        amqp_ssl_socket_set_verify_peer(sock, 1);
        amqp_ssl_socket_set_verify_hostname(sock, 1);
        if (amqp_ssl_socket_set_cacert(sock, CA_BUNDLE) != AMQP_STATUS_OK)
            ag_warn("cannot load the CA bundle for amqps", AG_FS("file", CA_BUNDLE));
    }
    struct timeval ct = tv_of(CONNECT_TIMEOUT_MS), rt = tv_of(RPC_TIMEOUT_MS);
    int s = amqp_socket_open_noblock(sock, st->ci.host, st->ci.port, &ct);
    if (s != AMQP_STATUS_OK) {
        if (st->was_up || st->generation == 0)
            ag_warn("cannot connect to RabbitMQ", AG_FS("broker", st->where),
                    AG_FS("error", amqp_error_string2(s)));
        amqp_destroy_connection(st->conn);
        st->conn = NULL;
        st->was_up = false;
        return s == AMQP_STATUS_TIMEOUT ? AG_ETIMEDOUT : AG_ECONNREFUSED;
    }
    amqp_set_handshake_timeout(st->conn, &rt);
    amqp_set_rpc_timeout(st->conn, &rt);
    amqp_table_entry_t caps_e[] = {entry_bool("consumer_cancel_notify", true),
                                   entry_bool("authentication_failure_close", true)};
    amqp_table_entry_t props_e[2] = {entry_str("connection_name", st->conn_name)};
    props_e[1].key = bytes_of("capabilities");
    props_e[1].value.kind = AMQP_FIELD_KIND_TABLE;
    props_e[1].value.value.table = (amqp_table_t){2, caps_e};
    amqp_table_t props = {2, props_e};
    int heartbeat = st->role == AG_BUS_CONSUMER ? CONSUMER_HEARTBEAT_S : 0;
    char buf[400];
    amqp_rpc_reply_t r =
        amqp_login_with_properties(st->conn, st->ci.vhost, 0, AMQP_DEFAULT_FRAME_SIZE, heartbeat,
                                   &props, AMQP_SASL_METHOD_PLAIN, st->ci.user, st->ci.password);
    int rc = reply_error(r, buf, sizeof buf);
    if (rc < 0) {
        ag_error("RabbitMQ login failed", AG_FS("broker", st->where), AG_FS("user", st->ci.user),
                 AG_FS("error", buf));
        amqp_destroy_connection(st->conn);
        st->conn = NULL;
        st->was_up = false;
        return rc == AG_ETIMEDOUT ? rc : AG_ECONNREFUSED;
    }
    st->generation++;
    st->next_tag = 0;
    st->dlq_ready = false;
    st->nretry = 0;
    st->was_up = true; /* so that a failure below is logged as a loss */
    amqp_channel_open(st->conn, CH);
    if ((rc = check_rpc(st, "channel.open")) < 0) return rc;
    amqp_confirm_select(st->conn, CH);
    if ((rc = check_rpc(st, "confirm.select")) < 0) return rc;
    if ((rc = declare(st)) < 0) return rc;
    atomic_store(&st->up, 1);
    if (st->generation > 1)
        ag_info("RabbitMQ connection restored", AG_FS("broker", st->where),
                AG_FS("role", st->role == AG_BUS_PUBLISHER ? "publisher" : "consumer"));
    return 0;
}

/* ---- Frames that arrive on their own -------------------------------------------- */

/* Handles a method frame nobody waits for: a broker closing the channel or
 * the connection, a consumer cancelled because its queue was deleted, or a
 * stray return or confirm. Returns 0, or an error after dropping the
 * connection. */
static int handle_async(rstate *st, const amqp_frame_t *f)
{
    char buf[400];
    if (f->frame_type != AMQP_FRAME_METHOD) return 0;
    switch (f->payload.method.id) {
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *m = f->payload.method.decoded;
        snprintf(buf, sizeof buf, "connection closed by the broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        amqp_send_method(st->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        drop(st, buf);
        return AG_ECLOSED;
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
        const amqp_channel_close_t *m = f->payload.method.decoded;
        snprintf(buf, sizeof buf, "channel closed by the broker: %u %.*s", m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        drop(st, buf);
        return AG_EIO;
    }
    case AMQP_BASIC_CANCEL_METHOD:
        /* Our queue was deleted: reconnecting declares it again. */
        drop(st, "the broker cancelled the consumer (queue deleted?)");
        return AG_ECLOSED;
    case AMQP_BASIC_RETURN_METHOD:
    case AMQP_BASIC_DELIVER_METHOD:
    case AMQP_BASIC_GET_OK_METHOD: {
        /* Content follows; read it so the stream stays in step. A delivery
         * here (prefetch makes it impossible) goes back to the queue. */
        amqp_message_t msg;
        amqp_rpc_reply_t r = amqp_read_message(st->conn, f->channel, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            reply_error(r, buf, sizeof buf);
            drop(st, buf);
            return AG_ECLOSED;
        }
        amqp_destroy_message(&msg);
        if (f->payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
            const amqp_basic_deliver_t *d = f->payload.method.decoded;
            amqp_basic_reject(st->conn, f->channel, d->delivery_tag, 1);
        }
        return 0;
    }
    default:
        return 0; /* a late confirm, a consume-ok... */
    }
}

/* Reads, without waiting, whatever the broker sent while we were idle. */
static int drain(rstate *st)
{
    while (st->conn) {
        amqp_frame_t f;
        struct timeval zero = {0, 0};
        int s = amqp_simple_wait_frame_noblock(st->conn, &f, &zero);
        if (s == AMQP_STATUS_TIMEOUT) return 0;
        if (s != AMQP_STATUS_OK) {
            drop(st, amqp_error_string2(s));
            return map_status(s) == AG_ETIMEDOUT ? AG_ECLOSED : map_status(s);
        }
        int rc = handle_async(st, &f);
        if (rc < 0) return rc;
    }
    return AG_ECLOSED;
}

/* ---- Publishing with confirms ------------------------------------------------------ */

/* Publishes on channel 1 and waits for the broker's confirm. `unrouted_ok`:
 * a 312 NO_ROUTE return counts as confirmed (events nobody subscribes to). */
static int publish_confirmed(rstate *st, const char *exchange, const char *key,
                             const amqp_basic_properties_t *props, amqp_bytes_t body,
                             bool unrouted_ok, char *err, size_t errlen)
{
    int s = amqp_basic_publish(st->conn, CH, bytes_of(exchange), bytes_of(key), 1, 0, props, body);
    if (s != AMQP_STATUS_OK) {
        snprintf(err, errlen, "RabbitMQ publish: %s", amqp_error_string2(s));
        drop(st, amqp_error_string2(s));
        return map_status(s) == AG_EIO ? AG_EIO : AG_ECLOSED;
    }
    uint64_t tag = ++st->next_tag;
    uint64_t deadline = ag_now_ms() + CONFIRM_TIMEOUT_MS;
    int returned = 0;
    char rtext[200] = "";
    for (;;) {
        uint64_t now = ag_now_ms();
        if (now >= deadline) {
            snprintf(err, errlen, "RabbitMQ publish: no confirm within %d ms", CONFIRM_TIMEOUT_MS);
            /* Its fate is unknown and a late confirm would be misread: start
             * over on a new connection (the outbox publishes it again). */
            drop(st, "publisher confirm timed out");
            return AG_ETIMEDOUT;
        }
        struct timeval tv = tv_of(deadline - now);
        amqp_frame_t f;
        s = amqp_simple_wait_frame_noblock(st->conn, &f, &tv);
        if (s == AMQP_STATUS_TIMEOUT) continue;
        if (s != AMQP_STATUS_OK) {
            snprintf(err, errlen, "RabbitMQ publish: %s", amqp_error_string2(s));
            drop(st, amqp_error_string2(s));
            return AG_ECLOSED;
        }
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        amqp_method_number_t id = f.payload.method.id;
        if (f.channel == CH && id == AMQP_BASIC_ACK_METHOD) {
            const amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->delivery_tag < tag && !(a->multiple && a->delivery_tag >= tag)) continue;
            break;
        }
        if (f.channel == CH && id == AMQP_BASIC_NACK_METHOD) {
            const amqp_basic_nack_t *a = f.payload.method.decoded;
            if (a->delivery_tag < tag && !(a->multiple && a->delivery_tag >= tag)) continue;
            snprintf(err, errlen, "RabbitMQ publish: the broker refused the message (basic.nack)");
            ag_warn("RabbitMQ nacked a publish", AG_FS("exchange", exchange), AG_FS("key", key));
            return AG_EIO;
        }
        if (f.channel == CH && id == AMQP_BASIC_RETURN_METHOD) {
            /* Comes before the ack of the same publish (one is outstanding). */
            const amqp_basic_return_t *r = f.payload.method.decoded;
            returned = r->reply_code;
            snprintf(rtext, sizeof rtext, "%.*s", (int)r->reply_text.len,
                     (const char *)r->reply_text.bytes);
            amqp_message_t msg;
            amqp_rpc_reply_t rr = amqp_read_message(st->conn, CH, &msg, 0);
            if (rr.reply_type != AMQP_RESPONSE_NORMAL) {
                char buf[400];
                int rc = reply_error(rr, buf, sizeof buf);
                snprintf(err, errlen, "RabbitMQ publish: %s", buf);
                drop(st, buf);
                return rc < 0 ? rc : AG_ECLOSED;
            }
            amqp_destroy_message(&msg);
            continue;
        }
        int rc = handle_async(st, &f);
        if (rc < 0) {
            snprintf(err, errlen, "RabbitMQ publish: connection lost before the confirm");
            return rc;
        }
    }
    if (!returned) return 0;
    if (unrouted_ok && returned == AMQP_NO_ROUTE) {
        ag_debug("event routed to no queue (nobody subscribes to its type); confirmed",
                 AG_FS("type", key));
        return 0;
    }
    snprintf(err, errlen, "RabbitMQ publish to '%s' returned: %d %s", key, returned, rtext);
    return AG_EIO;
}

static int ensure_up(rstate *st)
{
    if (st->conn && drain(st) == 0) return 0;
    return connect_broker(st);
}

/* ---- The adapter ----------------------------------------------------------------- */

static void destroy(rstate *st)
{
    if (st->conn) {
        /* Orderly close when the connection still answers; destroy frees
         * everything either way. */
        amqp_channel_close(st->conn, CH, AMQP_REPLY_SUCCESS);
        amqp_connection_close(st->conn, AMQP_REPLY_SUCCESS);
        amqp_destroy_connection(st->conn);
    }
    for (int i = 0; i < st->nkeys; i++)
        ag_free(st->keys[i]);
    ag_free(st->keys);
    ag_free(st->url_copy);
    ag_free(st->queue);
    ag_free(st->dlq);
    ag_free(st->conn_name);
    ag_free(st);
}

/* "order.*" stays; a ">" word (NATS style) becomes "#". */
static char *binding_key(const char *pattern)
{
    size_t n = strlen(pattern);
    char *k = ag_malloc(n + 1);
    memcpy(k, pattern, n + 1);
    for (size_t i = 0; i < n; i++)
        if (k[i] == '>' && (i == 0 || k[i - 1] == '.') && (k[i + 1] == '\0' || k[i + 1] == '.'))
            k[i] = '#';
    return k;
}

static int r_open(const char *url, const char *service, ag__bus_role role,
                  const char *const *patterns, int npatterns, uint64_t max_deliveries, void **state)
{
    (void)max_deliveries; /* the core counts; classic queues have no limit of their own */
    size_t sl = strlen(service);
    if (sl == 0 || sl > MAX_NAME) {
        ag_error("service name unusable for RabbitMQ queue names", AG_FI("length", (long long)sl));
        return AG_EINVAL;
    }
    rstate *st = ag_calloc(1, sizeof *st);
    atomic_init(&st->up, 0);
    st->role = role;
    st->url_copy = ag_strdup(url);
    amqp_default_connection_info(&st->ci);
    if (amqp_parse_url(st->url_copy, &st->ci) != AMQP_STATUS_OK) {
        ag_error("invalid RabbitMQ URL",
                 AG_FS("reason", "expected amqp://user:pass@host:port/vhost"));
        destroy(st);
        return AG_EINVAL;
    }
    /* "amqp://host:port/" parses to the vhost "", which cannot exist; people
     * (and the test harness) mean the default one. */
    if (!st->ci.vhost || !st->ci.vhost[0]) st->ci.vhost = "/";
    snprintf(st->where, sizeof st->where, "%s:%d%s%s", st->ci.host, st->ci.port,
             strcmp(st->ci.vhost, "/") == 0 ? "" : "/",
             strcmp(st->ci.vhost, "/") == 0 ? "" : st->ci.vhost);
    st->queue = concat3("agora.", service, "");
    st->dlq = concat3("agora.", service, ".dlq");
    st->conn_name = concat3("agora-", service, role == AG_BUS_PUBLISHER ? "-relay" : "-consumer");
    if (role == AG_BUS_CONSUMER && npatterns > 0) {
        st->keys = ag_calloc((size_t)npatterns, sizeof *st->keys);
        for (int i = 0; i < npatterns; i++)
            st->keys[i] = binding_key(patterns[i]);
        st->nkeys = npatterns;
    }
    int rc = connect_broker(st);
    if (rc < 0) {
        destroy(st);
        return rc;
    }
    *state = st;
    return 0;
}

static int r_publish(void *state, const char *type, const char *id, const char *body, size_t len,
                     char *err, size_t errlen)
{
    rstate *st = state;
    if (strlen(type) > 255 || strlen(id) > 255) {
        /* AMQP short strings: the routing key and message-id. */
        snprintf(err, errlen, "RabbitMQ publish: type or id longer than 255 bytes");
        return AG_EINVAL;
    }
    int rc = ensure_up(st);
    if (rc < 0) {
        snprintf(err, errlen, "RabbitMQ %s unreachable: %s", st->where, ag_strerror(rc));
        return rc;
    }
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG |
               AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    p.content_type = bytes_of("application/cloudevents+json");
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.message_id = bytes_of(id);
    p.type = bytes_of(type);
    p.timestamp = ag_wall_ms() / 1000;
    amqp_bytes_t b = {len, (void *)body};
    rc = publish_confirmed(st, AG_BUS_EXCHANGE, type, &p, b, true, err, errlen);
    if (st->conn && !amqp_frames_enqueued(st->conn)) amqp_maybe_release_buffers(st->conn);
    return rc;
}

static int r_fetch(void *state, uint64_t timeout_ms, ag__bus_msg **out)
{
    rstate *st = state;
    if (!st->conn) {
        int rc = connect_broker(st);
        if (rc < 0) return rc;
    }
    uint64_t deadline = ag_now_ms() + timeout_ms;
    for (;;) {
        amqp_maybe_release_buffers(st->conn);
        uint64_t now = ag_now_ms();
        struct timeval tv = tv_of(deadline > now ? deadline - now : 0);
        rmsg *rm = ag_calloc(1, sizeof *rm);
        amqp_rpc_reply_t r = amqp_consume_message(st->conn, &rm->env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_NORMAL) {
            const amqp_basic_properties_t *p = &rm->env.message.properties;
            int64_t d = 1;
            if (!header_int(p, "x-agora-delivery", &d) || d < 1) d = 1;
            if (rm->env.redelivered) d++;
            rm->generation = st->generation;
            ag__bus_msg *m = ag_calloc(1, sizeof *m);
            m->body = rm->env.message.body.bytes;
            m->len = rm->env.message.body.len;
            m->delivery = d > 1000000 ? 1000000 : (int)d;
            m->impl = rm;
            *out = m;
            return 1;
        }
        ag_free(rm); /* the envelope holds nothing when the call failed */
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_TIMEOUT)
            return 0;
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
            /* Something other than a delivery: read it and act. */
            amqp_frame_t f;
            int s = amqp_simple_wait_frame(st->conn, &f);
            if (s != AMQP_STATUS_OK) {
                drop(st, amqp_error_string2(s));
                return AG_ECLOSED;
            }
            int rc = handle_async(st, &f);
            if (rc < 0) return rc;
            if (ag_now_ms() >= deadline) return 0;
            continue;
        }
        char buf[400];
        int rc = reply_error(r, buf, sizeof buf);
        drop(st, buf);
        return rc < 0 && rc != AG_ETIMEDOUT ? rc : AG_ECLOSED;
    }
}

/* The message's connection is gone: the broker has requeued it already. */
static bool stale(rstate *st, const rmsg *rm)
{
    return !st->conn || rm->generation != st->generation;
}

static int ack_tag(rstate *st, uint64_t tag)
{
    int s = amqp_basic_ack(st->conn, CH, tag, 0);
    if (s != AMQP_STATUS_OK) {
        drop(st, amqp_error_string2(s));
        return AG_ECLOSED;
    }
    return 0;
}

static int r_ack(void *state, ag__bus_msg *m)
{
    rstate *st = state;
    rmsg *rm = m->impl;
    if (stale(st, rm)) {
        ag_debug("ack of a message from a lost RabbitMQ connection skipped; it will come again");
        return AG_ECLOSED;
    }
    return ack_tag(st, rm->env.delivery_tag);
}

/* "agora.<svc>.retry.<ms>", declared once per connection. */
static int retry_queue(rstate *st, uint64_t delay_ms, char *name, size_t n)
{
    snprintf(name, n, "%s.retry.%llu", st->queue, (unsigned long long)delay_ms);
    for (int i = 0; i < st->nretry; i++)
        if (st->retry_declared[i] == delay_ms) return 0;
    amqp_table_entry_t e[] = {entry_i64("x-message-ttl", (int64_t)delay_ms),
                              entry_str("x-dead-letter-exchange", ""),
                              entry_str("x-dead-letter-routing-key", st->queue)};
    int rc = declare_queue(st, CH, name, (amqp_table_t){3, e});
    if (rc < 0) return rc;
    if (st->nretry < RETRY_CACHE) st->retry_declared[st->nretry++] = delay_ms;
    return 0;
}

/* Hands a message back for immediate redelivery when it could not be moved:
 * it is never left unacknowledged on a live channel (that would stall the
 * consumer, whose prefetch it fills). */
static void requeue(rstate *st, rmsg *rm)
{
    if (!st->conn || stale(st, rm)) return;
    int s = amqp_basic_nack(st->conn, CH, rm->env.delivery_tag, 0, 1);
    if (s != AMQP_STATUS_OK) drop(st, amqp_error_string2(s));
}

static int r_retry_later(void *state, ag__bus_msg *m, uint64_t delay_ms)
{
    rstate *st = state;
    rmsg *rm = m->impl;
    if (stale(st, rm)) return AG_ECLOSED;
    if (delay_ms < 1) delay_ms = 1;
    if (delay_ms > INT32_MAX) delay_ms = INT32_MAX; /* ~24 days, RabbitMQ's TTL range */
    char name[MAX_NAME + 64];
    int rc = retry_queue(st, delay_ms, name, sizeof name);
    if (rc < 0) return rc; /* connection dropped: the broker requeues */
    const amqp_basic_properties_t *orig = &rm->env.message.properties;
    amqp_basic_properties_t p = *orig;
    amqp_table_t h = copy_headers(orig, 1);
    h.entries[h.num_entries++] = entry_i64("x-agora-delivery", (int64_t)m->delivery + 1);
    p.headers = h;
    p._flags = (p._flags & ~(amqp_flags_t)AMQP_BASIC_EXPIRATION_FLAG) | AMQP_BASIC_HEADERS_FLAG |
               AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    char err[300];
    rc = publish_confirmed(st, "", name, &p, rm->env.message.body, false, err, sizeof err);
    ag_free(h.entries);
    if (rc < 0) {
        ag_warn("cannot schedule a redelivery; requeued at once instead", AG_FS("queue", name),
                AG_FS("error", err));
        st->nretry = 0; /* the queue may have been deleted: declare again next time */
        requeue(st, rm);
        return rc;
    }
    return ack_tag(st, rm->env.delivery_tag);
}

static int r_dead_letter(void *state, ag__bus_msg *m, const char *reason)
{
    rstate *st = state;
    rmsg *rm = m->impl;
    if (stale(st, rm)) return AG_ECLOSED;
    const amqp_basic_properties_t *orig = &rm->env.message.properties;
    amqp_basic_properties_t p = *orig;
    amqp_table_t h = copy_headers(orig, 2);
    h.entries[h.num_entries++] = entry_str("x-agora-reason", reason);
    h.entries[h.num_entries++] = entry_i64("x-agora-deliveries", m->delivery);
    p.headers = h;
    p._flags = (p._flags & ~(amqp_flags_t)AMQP_BASIC_EXPIRATION_FLAG) | AMQP_BASIC_HEADERS_FLAG |
               AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    char err[300];
    int rc = publish_confirmed(st, "", st->dlq, &p, rm->env.message.body, false, err, sizeof err);
    ag_free(h.entries);
    if (rc < 0) {
        /* Not acked: the core hands it to retry_later next. */
        ag_warn("cannot publish a dead letter", AG_FS("queue", st->dlq), AG_FS("error", err));
        return rc;
    }
    return ack_tag(st, rm->env.delivery_tag);
}

static void r_msg_free(ag__bus_msg *m)
{
    rmsg *rm = m->impl;
    amqp_destroy_envelope(&rm->env);
    ag_free(rm);
    ag_free(m);
}

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int r_dlq_fetch(void *state, uint64_t timeout_ms, char **body, size_t *len, char **reason)
{
    rstate *st = state;
    int rc = ensure_up(st);
    if (rc < 0) return rc;
    if (!st->dlq_ready) {
        amqp_channel_open(st->conn, DLQ_CH);
        if ((rc = check_rpc(st, "channel.open (dlq)")) < 0) return rc;
        if ((rc = declare_queue(st, DLQ_CH, st->dlq, amqp_empty_table)) < 0) return rc;
        st->dlq_ready = true;
    }
    uint64_t deadline = ag_now_ms() + timeout_ms;
    for (;;) {
        amqp_rpc_reply_t r = amqp_basic_get(st->conn, DLQ_CH, bytes_of(st->dlq), 0);
        char buf[400];
        rc = reply_error(r, buf, sizeof buf);
        if (rc < 0) {
            ag_error("RabbitMQ basic.get failed", AG_FS("queue", st->dlq), AG_FS("error", buf));
            drop(st, buf);
            return rc;
        }
        if (r.reply.id == AMQP_BASIC_GET_OK_METHOD) {
            uint64_t tag = ((const amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
            amqp_message_t msg;
            r = amqp_read_message(st->conn, DLQ_CH, &msg, 0);
            if ((rc = reply_error(r, buf, sizeof buf)) < 0) {
                drop(st, buf);
                return rc;
            }
            const amqp_field_value_t *v = header(&msg.properties, "x-agora-reason");
            bool is_str =
                v && (v->kind == AMQP_FIELD_KIND_UTF8 || v->kind == AMQP_FIELD_KIND_BYTES);
            *reason = is_str ? ag_strndup(v->value.bytes.bytes, v->value.bytes.len) : ag_strdup("");
            *len = msg.body.len;
            *body = ag_strndup(msg.body.bytes, msg.body.len);
            amqp_destroy_message(&msg);
            int s = amqp_basic_ack(st->conn, DLQ_CH, tag, 0);
            if (s != AMQP_STATUS_OK) drop(st, amqp_error_string2(s));
            return 1;
        }
        uint64_t now = ag_now_ms();
        if (now >= deadline) return 0;
        sleep_ms(deadline - now < 50 ? deadline - now : 50);
    }
}

static int r_healthy(void *state)
{
    rstate *st = state;
    return atomic_load(&st->up) ? 0 : AG_EUNAVAIL;
}

static void r_close(void *state)
{
    if (state) destroy(state);
}

const ag__bus_adapter ag__bus_rabbitmq = {
    .name = "rabbitmq",
    .open = r_open,
    .publish = r_publish,
    .fetch = r_fetch,
    .ack = r_ack,
    .retry_later = r_retry_later,
    .dead_letter = r_dead_letter,
    .msg_free = r_msg_free,
    .dlq_fetch = r_dlq_fetch,
    .healthy = r_healthy,
    .close = r_close,
};
