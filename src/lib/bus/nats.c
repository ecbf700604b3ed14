/*
 * nats.c — the NATS JetStream adapter of the bus (see internal.h), on nats.c
 * (Debian's libnats-dev).
 *
 * Streams: AGORA on "agora.events.>" (file storage, 2-minute duplicate
 * window, kept 7 days) and AGORA_DLQ on "agora.dlq.>". Publishing sets
 * Nats-Msg-Id to the event id and waits for the PubAck: a duplicate inside
 * the window is acknowledged without being stored again. Consuming uses one
 * durable pull consumer per service (instances bind the same durable and
 * compete), explicit acks, and NakWithDelay for backoff. JetStream 2.9 lets a
 * consumer filter on one subject only, so the consumer takes
 * "agora.events.>" and the bus core acknowledges types nobody subscribed to.
 * Dead letters are published (confirmed) to "agora.dlq.<service>" with the
 * reason in a header, then the original is terminated.
 */
#include <nats/nats.h>
#include <string.h>

#include "agora/log.h"
#include "agora/mem.h"
#include "internal.h"

#define NS_PER_MS 1000000LL

typedef struct nstate {
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    natsSubscription *dlq_sub; /* created by dlq_fetch */
    natsMsgList batch;         /* fetched, not yet handed to the core */
    int next;                  /* index of the next message in batch */
    char service[128];
    char dlq_subject[160];
    bool streams_ok;
} nstate;

static int map_status(natsStatus s)
{
    switch (s) {
    case NATS_OK:
        return 0;
    case NATS_TIMEOUT:
        return AG_ETIMEDOUT;
    case NATS_NO_SERVER:
    case NATS_CONNECTION_CLOSED:
    case NATS_CONNECTION_DISCONNECTED:
    case NATS_NOT_YET_CONNECTED:
    case NATS_STALE_CONNECTION:
        return AG_ECONNREFUSED;
    case NATS_NO_MEMORY:
        return AG_ENOMEM;
    case NATS_INVALID_ARG:
        return AG_EINVAL;
    default:
        return AG_EIO;
    }
}

static void destroy(nstate *st)
{
    if (st->sub) natsSubscription_Destroy(st->sub);
    if (st->dlq_sub) natsSubscription_Destroy(st->dlq_sub);
    natsMsgList_Destroy(&st->batch); /* destroys the messages not handed out */
    if (st->js) jsCtx_Destroy(st->js);
    if (st->nc) natsConnection_Destroy(st->nc);
    ag_free(st);
}

static natsStatus ensure_stream(jsCtx *js, const char *name, const char *subject)
{
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    const char *subjects[1] = {subject};
    sc.Name = name;
    sc.Subjects = subjects;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Retention = js_LimitsPolicy;
    sc.Discard = js_DiscardOld;
    sc.MaxAge = 7LL * 24 * 3600 * 1000 * NS_PER_MS;
    sc.Duplicates = 2LL * 60 * 1000 * NS_PER_MS;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s == NATS_ERR && jerr == JSStreamNameExistErr) {
        jerr = 0;
        s = js_UpdateStream(&si, js, &sc, NULL, &jerr);
    }
    if (si) jsStreamInfo_Destroy(si);
    if (s != NATS_OK)
        ag_error("cannot declare a JetStream stream", AG_FS("stream", name),
                 AG_FS("error", natsStatus_GetText(s)), AG_FI("jsError", jerr));
    return s;
}

static int n_open(const char *url, const char *service, ag__bus_role role,
                  const char *const *patterns, int npatterns, uint64_t max_deliveries,
                  void **state)
{
    nstate *st = ag_calloc(1, sizeof *st);
    /* A durable name may not contain '.', '*', '>' or spaces. */
    size_t i = 0;
    for (; service[i] && i < sizeof st->service - 1; i++) {
        char c = service[i];
        st->service[i] = (c == '.' || c == '*' || c == '>' || c == ' ') ? '_' : c;
    }
    st->service[i] = '\0';
    snprintf(st->dlq_subject, sizeof st->dlq_subject, "agora.dlq.%s", st->service);

    natsOptions *opts = NULL;
    natsStatus s = natsOptions_Create(&opts);
    char name[200];
    snprintf(name, sizeof name, "agora-%s-%s", st->service,
             role == AG_BUS_PUBLISHER ? "relay" : "consumer");
    if (s == NATS_OK) s = natsOptions_SetURL(opts, url);
    if (s == NATS_OK) s = natsOptions_SetName(opts, name);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(opts, -1); /* forever */
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(opts, 250);
    if (s == NATS_OK) s = natsOptions_SetTimeout(opts, 2000);
    /* Send each request at once instead of waiting for the flusher (about
     * 1 ms): with one request per event, that wait capped a consumer at
     * about a thousand events a second. */
    if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
    if (s == NATS_OK) s = natsConnection_Connect(&st->nc, opts);
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        ag_warn("cannot connect to NATS", AG_FS("url", url), AG_FS("error", natsStatus_GetText(s)));
        destroy(st);
        return map_status(s);
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 5000; /* ms: JetStream API calls and synchronous publishes */
    s = natsConnection_JetStream(&st->js, st->nc, &jo);
    if (s == NATS_OK) s = ensure_stream(st->js, "AGORA", AG_BUS_NATS_PREFIX ">");
    if (s == NATS_OK) s = ensure_stream(st->js, "AGORA_DLQ", "agora.dlq.>");
    if (s == NATS_OK && role == AG_BUS_CONSUMER) {
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = "AGORA";
        so.Config.Durable = st->service;
        so.Config.AckPolicy = js_AckExplicit;
        so.Config.AckWait = 30LL * 1000 * NS_PER_MS;
        /* Two more than the core's limit: the core dead-letters at its limit,
         * so the server never drops a message on its own. */
        so.Config.MaxDeliver = (int64_t)max_deliveries + 2;
        so.Config.DeliverPolicy = js_DeliverAll;
        so.Config.MaxAckPending = 1024;
        jsErrCode jerr = 0;
        s = js_PullSubscribe(&st->sub, st->js, AG_BUS_NATS_PREFIX ">", st->service, NULL, &so,
                             &jerr);
        if (s != NATS_OK)
            ag_error("cannot create the service's JetStream consumer",
                     AG_FS("durable", st->service), AG_FS("error", natsStatus_GetText(s)),
                     AG_FI("jsError", jerr));
        (void)patterns;
        (void)npatterns;
    }
    if (s != NATS_OK) {
        destroy(st);
        return map_status(s);
    }
    st->streams_ok = true;
    *state = st;
    return 0;
}

/* "order.confirmed" → "agora.events.order.confirmed". */
static void subject_of(const char *type, char *out, size_t n)
{
    snprintf(out, n, "%s%s", AG_BUS_NATS_PREFIX, type);
}

static int n_publish(void *state, const char *type, const char *id, const char *body, size_t len,
                     char *err, size_t errlen)
{
    nstate *st = state;
    /* While disconnected a synchronous publish would block for its whole
     * timeout (and might still land after the reconnect): fail at once; the
     * relay retries with the same Nats-Msg-Id, so either way nothing doubles. */
    if (natsConnection_Status(st->nc) != NATS_CONN_STATUS_CONNECTED) {
        snprintf(err, errlen, "NATS: not connected");
        return AG_ECONNREFUSED;
    }
    char subject[300];
    subject_of(type, subject, sizeof subject);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, body, (int)len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    jsPubAck *pa = NULL;
    jsErrCode jerr = 0;
    if (s == NATS_OK) {
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MaxWait = 5000;
        s = js_PublishMsg(&pa, st->js, m, &po, &jerr);
    }
    if (s != NATS_OK)
        snprintf(err, errlen, "NATS publish: %s (js %d)", natsStatus_GetText(s), (int)jerr);
    if (pa) jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    return map_status(s);
}

/* Messages are fetched in batches (one pull request for up to FETCH_BATCH)
 * and handed to the core one at a time, in stream order. */
#define FETCH_BATCH 64

static int n_fetch(void *state, uint64_t timeout_ms, ag__bus_msg **out)
{
    nstate *st = state;
    if (st->next >= st->batch.Count) {
        natsMsgList_Destroy(&st->batch);
        memset(&st->batch, 0, sizeof st->batch);
        st->next = 0;
        jsErrCode jerr = 0;
        natsStatus s =
            natsSubscription_Fetch(&st->batch, st->sub, FETCH_BATCH, (int64_t)timeout_ms, &jerr);
        if (s == NATS_TIMEOUT) return 0;
        if (s != NATS_OK) {
            natsMsgList_Destroy(&st->batch);
            memset(&st->batch, 0, sizeof st->batch);
            /* Connected but the pull failed (JetStream still recovering
             * after a broker restart answers "no responders"): try again
             * soon, without spinning; disconnected: the core backs off. */
            if (natsConnection_Status(st->nc) == NATS_CONN_STATUS_CONNECTED) {
                nats_Sleep(50);
                return 0;
            }
            return map_status(s);
        }
        if (st->batch.Count == 0) return 0;
    }
    natsMsg *m = st->batch.Msgs[st->next];
    st->batch.Msgs[st->next] = NULL; /* ours now */
    st->next++;
    jsMsgMetaData *md = NULL;
    int delivery = 1;
    if (natsMsg_GetMetaData(&md, m) == NATS_OK && md) {
        delivery = (int)md->NumDelivered;
        jsMsgMetaData_Destroy(md);
    }
    ag__bus_msg *bm = ag_calloc(1, sizeof *bm);
    bm->body = natsMsg_GetData(m);
    bm->len = (size_t)natsMsg_GetDataLength(m);
    bm->delivery = delivery;
    bm->impl = m;
    const char *subj = natsMsg_GetSubject(m);
    size_t pl = strlen(AG_BUS_NATS_PREFIX);
    if (subj && strncmp(subj, AG_BUS_NATS_PREFIX, pl) == 0)
        snprintf(bm->type, sizeof bm->type, "%s", subj + pl);
    *out = bm;
    return 1;
}

static int n_ack(void *state, ag__bus_msg *m)
{
    return map_status(natsMsg_Ack(m->impl, NULL));
}

static int n_retry_later(void *state, ag__bus_msg *m, uint64_t delay_ms)
{
    return map_status(natsMsg_NakWithDelay(m->impl, (int64_t)delay_ms, NULL));
}

static int n_dead_letter(void *state, ag__bus_msg *m, const char *reason)
{
    nstate *st = state;
    natsMsg *orig = m->impl;
    natsMsg *dl = NULL;
    natsStatus s = natsMsg_Create(&dl, st->dlq_subject, NULL, natsMsg_GetData(orig),
                                  natsMsg_GetDataLength(orig));
    if (s == NATS_OK) s = natsMsgHeader_Set(dl, "Agora-Reason", reason);
    if (s == NATS_OK) s = natsMsgHeader_Set(dl, "Agora-Original-Subject", natsMsg_GetSubject(orig));
    char delivery[16];
    snprintf(delivery, sizeof delivery, "%d", m->delivery);
    if (s == NATS_OK) s = natsMsgHeader_Set(dl, "Agora-Deliveries", delivery);
    jsPubAck *pa = NULL;
    if (s == NATS_OK) s = js_PublishMsg(&pa, st->js, dl, NULL, NULL);
    if (pa) jsPubAck_Destroy(pa);
    natsMsg_Destroy(dl);
    if (s != NATS_OK) return map_status(s);
    /* Stored in dead letters: the original is done for good. */
    return map_status(natsMsg_Term(orig, NULL));
}

static int n_dlq_fetch(void *state, uint64_t timeout_ms, char **body, size_t *len, char **reason)
{
    nstate *st = state;
    natsStatus s = NATS_OK;
    if (!st->dlq_sub) {
        /* A durable of its own on this service's dead letters. */
        char durable[200];
        snprintf(durable, sizeof durable, "%s_dlq_reader", st->service);
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = "AGORA_DLQ";
        so.Config.Durable = durable;
        so.Config.AckPolicy = js_AckExplicit;
        so.Config.DeliverPolicy = js_DeliverAll;
        s = js_PullSubscribe(&st->dlq_sub, st->js, st->dlq_subject, durable, NULL, &so, NULL);
        if (s != NATS_OK) return map_status(s);
    }
    natsMsgList list = {0};
    s = natsSubscription_Fetch(&list, st->dlq_sub, 1, (int64_t)timeout_ms, NULL);
    if (s == NATS_TIMEOUT) return 0;
    if (s != NATS_OK || list.Count == 0) {
        natsMsgList_Destroy(&list);
        return s == NATS_OK ? 0 : map_status(s);
    }
    natsMsg *m = list.Msgs[0];
    const char *r = NULL;
    natsMsgHeader_Get(m, "Agora-Reason", &r);
    *len = (size_t)natsMsg_GetDataLength(m);
    *body = ag_strndup(natsMsg_GetData(m), *len);
    *reason = ag_strdup(r ? r : "");
    natsMsg_Ack(m, NULL);
    natsMsgList_Destroy(&list);
    return 1;
}

static void n_msg_free(ag__bus_msg *m)
{
    natsMsg_Destroy(m->impl);
    ag_free(m);
}

static int n_healthy(void *state)
{
    nstate *st = state;
    return natsConnection_Status(st->nc) == NATS_CONN_STATUS_CONNECTED ? 0 : AG_EUNAVAIL;
}

static void n_close(void *state)
{
    destroy(state);
}

const ag__bus_adapter ag__bus_nats = {
    .name = "nats",
    .open = n_open,
    .publish = n_publish,
    .fetch = n_fetch,
    .ack = n_ack,
    .retry_later = n_retry_later,
    .dead_letter = n_dead_letter,
    .msg_free = n_msg_free,
    .dlq_fetch = n_dlq_fetch,
    .healthy = n_healthy,
    .close = n_close,
};
