/*
 * plain_nats.c — the reference for Agora's NATS path: nats.c JetStream alone,
 * no database, the same broker promises.
 *
 *   bench-plain-nats --url nats://HOST:PORT [--events N] [--size BYTES]
 *                    [--mode sync|async] [--batch B] [--timeout S] [--send-asap]
 *
 * A stream of its own (BENCH_PLAIN on "benchplain.>", file storage, 2-minute
 * duplicate window, as Agora's AGORA stream), a durable pull consumer of its
 * own per run (explicit acks, AckWait 30 s, MaxAckPending 1024, as Agora's),
 * on its own connection and thread, fetching up to B messages per request and
 * acknowledging each one (natsMsg_Ack, as Agora). The publisher, on another
 * connection, sends N messages of --size bytes, each with a unique
 * Nats-Msg-Id:
 *   sync   js_PublishMsg, waiting for each PubAck (what Agora's relay does);
 *   async  js_PublishMsgAsync with up to 4096 in flight, then
 *          js_PublishAsyncComplete (not what Agora does; for reference).
 * --send-asap sets natsOptions_SetSendAsap on both connections (nats.c then
 * writes each protocol message at once instead of letting its flusher thread
 * gather them for up to ~1 ms), for experiments; Agora does not set it.
 * The clock runs from the first publish until the consumer has acknowledged
 * N messages. Every message carries its number: a lost or duplicated one is
 * reported and fails the run.
 *
 * Prints one line on stdout:
 *   plain-nats mode=sync events=N seconds=S events_per_s=R publish_s=P bytes=B
 * Exit status: 0 measured, 1 failure, 2 usage.
 */
#include <errno.h>
#include <nats/nats.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_MS 1000000LL
#define STREAM "BENCH_PLAIN"

typedef struct consumer {
    natsSubscription *sub;
    long events;
    int batch;
    double timeout_s;
    unsigned char *seen; /* one byte per message number */
    atomic_long acked;
    long dups, bad;
    int failed;
    double t_done;
} consumer;

static atomic_long g_async_errors;

static void on_async_error(jsCtx *js, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)closure;
    if (atomic_fetch_add(&g_async_errors, 1) == 0)
        fprintf(stderr, "bench-plain-nats: async publish failed: %s (js error %d)\n",
                natsStatus_GetText(pae->Err), (int)pae->ErrCode);
}

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
    fprintf(stderr, "usage: bench-plain-nats --url nats://HOST:PORT [--events N] [--size BYTES] "
                    "[--mode sync|async] [--batch B] [--timeout SECONDS] [--send-asap]\n");
    exit(2);
}

static int fail_status(const char *what, natsStatus s, jsErrCode jerr)
{
    fprintf(stderr, "bench-plain-nats: %s: %s (js error %d)\n", what, natsStatus_GetText(s),
            (int)jerr);
    return 1;
}

static bool g_send_asap;

static natsStatus open_conn(const char *url, const char *name, natsConnection **nc, jsCtx **js)
{
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetURL(o, url);
    if (s == NATS_OK) s = natsOptions_SetName(o, name);
    if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
    if (s == NATS_OK && g_send_asap) s = natsOptions_SetSendAsap(o, true);
    if (s == NATS_OK) s = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) return s;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000;
    jo.PublishAsync.MaxPending = 4096;
    jo.PublishAsync.ErrHandler = on_async_error;
    return natsConnection_JetStream(js, *nc, &jo);
}

static natsStatus ensure_stream(jsCtx *js)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {"benchplain.>"};
    sc.Name = STREAM;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Retention = js_LimitsPolicy;
    sc.Discard = js_DiscardOld;
    sc.MaxAge = 3600LL * 1000 * NS_PER_MS;
    sc.Duplicates = 2LL * 60 * 1000 * NS_PER_MS;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s == NATS_ERR && jerr == JSStreamNameExistErr) {
        jerr = 0;
        s = js_UpdateStream(&si, js, &sc, NULL, &jerr);
    }
    if (si) jsStreamInfo_Destroy(si);
    return s;
}

/* The message number from a body that starts with {"n":<number>, */
static long number_of(const char *data, int len)
{
    if (len < 6 || memcmp(data, "{\"n\":", 5) != 0) return -1;
    long v = 0;
    int i = 5;
    for (; i < len && data[i] >= '0' && data[i] <= '9'; i++)
        v = v * 10 + (data[i] - '0');
    return i > 5 ? v : -1;
}

static void *consumer_main(void *arg)
{
    consumer *c = arg;
    double last_progress = now_s();
    while (atomic_load(&c->acked) < c->events) {
        natsMsgList list = {0};
        jsErrCode jerr = 0;
        natsStatus s = natsSubscription_Fetch(&list, c->sub, c->batch, 250, &jerr);
        if (s == NATS_TIMEOUT) {
            if (now_s() - last_progress > c->timeout_s) {
                fprintf(stderr, "bench-plain-nats: consumer stalled at %ld of %ld\n",
                        atomic_load(&c->acked), c->events);
                c->failed = 1;
                break;
            }
            continue;
        }
        if (s != NATS_OK) {
            fail_status("fetch", s, jerr);
            c->failed = 1;
            natsMsgList_Destroy(&list);
            break;
        }
        for (int i = 0; i < list.Count; i++) {
            natsMsg *m = list.Msgs[i];
            long n = number_of(natsMsg_GetData(m), natsMsg_GetDataLength(m));
            if (n < 0 || n >= c->events)
                c->bad++;
            else if (c->seen[n]++)
                c->dups++;
            s = natsMsg_Ack(m, NULL);
            if (s != NATS_OK) {
                fail_status("ack", s, 0);
                c->failed = 1;
            }
            atomic_fetch_add(&c->acked, 1);
        }
        natsMsgList_Destroy(&list);
        last_progress = now_s();
        if (c->failed) break;
    }
    c->t_done = now_s();
    return NULL;
}

int main(int argc, char **argv)
{
    const char *url = NULL, *mode = "sync";
    long events = 20000, size = 250, batch = 100, timeout = 30;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--send-asap") == 0) {
            g_send_asap = true;
            continue;
        }
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) usage();
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--mode") == 0)
            mode = v;
        else if (strcmp(a, "--events") == 0) {
            if (parse_long(v, 1, 10000000, &events) < 0) usage();
        } else if (strcmp(a, "--size") == 0) {
            if (parse_long(v, 16, 1000000, &size) < 0) usage();
        } else if (strcmp(a, "--batch") == 0) {
            if (parse_long(v, 1, 10000, &batch) < 0) usage();
        } else if (strcmp(a, "--timeout") == 0) {
            if (parse_long(v, 1, 3600, &timeout) < 0) usage();
        } else
            usage();
        i++;
    }
    if (!url) url = getenv("AGORA_TEST_NATS_URL");
    if (!url || (strcmp(mode, "sync") != 0 && strcmp(mode, "async") != 0)) usage();
    bool async = strcmp(mode, "async") == 0;

    char run[64], subject[96], durable[96];
    snprintf(run, sizeof run, "%ld_%ld", (long)getpid(), (long)time(NULL));
    snprintf(subject, sizeof subject, "benchplain.r%s", run);
    snprintf(durable, sizeof durable, "benchplain_%s", run);

    natsConnection *pnc = NULL, *cnc = NULL;
    jsCtx *pjs = NULL, *cjs = NULL;
    consumer c = {.events = events, .batch = (int)batch, .timeout_s = (double)timeout};
    atomic_init(&c.acked, 0);
    c.seen = calloc((size_t)events, 1);
    char *body = malloc((size_t)size + 1);
    int status = 1;
    bool started = false;
    pthread_t th;
    if (!c.seen || !body) goto out;

    natsStatus s = open_conn(url, "bench-plain-publisher", &pnc, &pjs);
    if (s != NATS_OK) {
        status = fail_status("connect", s, 0);
        goto out;
    }
    s = open_conn(url, "bench-plain-consumer", &cnc, &cjs);
    if (s != NATS_OK) {
        status = fail_status("connect", s, 0);
        goto out;
    }
    s = ensure_stream(pjs);
    if (s != NATS_OK) {
        status = fail_status("stream " STREAM, s, 0);
        goto out;
    }
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = STREAM;
    so.Config.Durable = durable;
    so.Config.AckPolicy = js_AckExplicit;
    so.Config.AckWait = 30LL * 1000 * NS_PER_MS;
    so.Config.MaxDeliver = 7;
    so.Config.DeliverPolicy = js_DeliverAll;
    so.Config.MaxAckPending = 1024;
    jsErrCode jerr = 0;
    s = js_PullSubscribe(&c.sub, cjs, subject, durable, NULL, &so, &jerr);
    if (s != NATS_OK) {
        status = fail_status("pull subscribe", s, jerr);
        goto out;
    }
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
        natsMsg *m = NULL;
        s = natsMsg_Create(&m, subject, NULL, body, (int)len);
        if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
        if (s == NATS_OK && !async) {
            jsPubOptions po;
            jsPubOptions_Init(&po);
            po.MaxWait = 5000;
            jsPubAck *pa = NULL;
            jerr = 0;
            s = js_PublishMsg(&pa, pjs, m, &po, &jerr);
            if (s == NATS_OK && pa->Duplicate) {
                fprintf(stderr, "bench-plain-nats: PubAck says duplicate for %s\n", id);
                s = NATS_ERR;
            }
            if (pa) jsPubAck_Destroy(pa);
        } else if (s == NATS_OK) {
            s = js_PublishMsgAsync(pjs, &m, NULL); /* takes m on success */
        }
        natsMsg_Destroy(m);
        if (s != NATS_OK) {
            status = fail_status("publish", s, jerr);
            goto out;
        }
    }
    if (async) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = (int64_t)timeout * 1000;
        natsMsgList pending = {0};
        s = js_PublishAsyncComplete(pjs, &po);
        if (s == NATS_OK && js_PublishAsyncGetPendingList(&pending, pjs) == NATS_OK) {
            fprintf(stderr, "bench-plain-nats: %d async publishes not acknowledged\n",
                    pending.Count);
            natsMsgList_Destroy(&pending);
            s = NATS_ERR;
        }
        if (s == NATS_OK && atomic_load(&g_async_errors) > 0) {
            fprintf(stderr, "bench-plain-nats: %ld async publishes failed\n",
                    atomic_load(&g_async_errors));
            s = NATS_ERR;
        }
        if (s != NATS_OK) {
            status = fail_status("async publish", s, 0);
            goto out;
        }
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
        fprintf(stderr, "bench-plain-nats: %ld lost, %ld duplicated, %ld unreadable messages\n",
                lost, c.dups, c.bad);
        goto out;
    }
    printf("plain-nats mode=%s events=%ld seconds=%.3f events_per_s=%.0f publish_s=%.3f "
           "bytes=%ld batch=%ld\n",
           mode, events, secs, (double)events / secs, t_pub, size, batch);
    fflush(stdout);
    status = 0;
    /* Tidy the broker: the consumer and this run's messages. */
    js_DeleteConsumer(cjs, STREAM, durable, NULL, NULL);
    {
        jsOptions po;
        jsOptions_Init(&po);
        po.Stream.Purge.Subject = subject;
        js_PurgeStream(pjs, STREAM, &po, NULL);
    }

out:
    if (started) {
        atomic_store(&c.acked, events); /* stop the consumer */
        pthread_join(th, NULL);
    }
    if (c.sub) natsSubscription_Destroy(c.sub);
    if (pjs) jsCtx_Destroy(pjs);
    if (cjs) jsCtx_Destroy(cjs);
    if (pnc) natsConnection_Destroy(pnc);
    if (cnc) natsConnection_Destroy(cnc);
    nats_CloseAndWait(2000);
    free(c.seen);
    free(body);
    return status;
}
