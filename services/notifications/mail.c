/*
 * mail.c — the mailer thread: sends what the mail_outbox table holds.
 *
 * Event handlers queue a mail in the transaction that records the event
 * (at most one per event and recipient: a unique key), and wake this thread
 * after the commit. The thread takes due rows in id order and delivers each:
 *
 *   PENDING ── delivered ──────────────────────────────► SENT
 *      │ failed: attempts+1, retry after 1 s doubling (at most 10 min)
 *      └── after AGORA_MAIL_MAX_ATTEMPTS attempts ───────► FAILED (logged)
 *   (user.deleted turns PENDING into CANCELLED)
 *
 * Delivery: into a Maildir (AGORA_MAIL_DIR, default var/mail: write in tmp/,
 * fsync, rename into new/) or, when AGORA_SMTP_URL is set, over SMTP with
 * libcurl. Either way the message is RFC 5322 with Date, From, To,
 * Subject and a Message-ID made from the event id and the recipient.
 *
 * Guarantee: at least once. A crash after delivering and before marking
 * the row SENT delivers again after the restart. For the Maildir the file
 * name is fixed by the row (no clock, no random), and a message already in
 * new/ or cur/ under that name is not written again, so that case does not
 * repeat it there; over SMTP it does (with the same Message-ID, which lets a
 * mail client recognise the duplicate).
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "notifications.h"

#define BATCH 20
#define SWEEP_MS 1000
#define MAX_BACKOFF_MS (10ull * 60 * 1000)

static struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool wake, stop, started;
    char host[64];
} g_mail = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---- The message ----------------------------------------------------------------------- */

/* RFC 5322 §3.3 date in UTC, without the locale's names. */
static void mail_date(char *out, size_t n, int64_t ms)
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, n, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* Copies `s` keeping only characters fit for a Message-ID or a file name. */
static void atom(char *out, size_t n, const char *s)
{
    size_t k = 0;
    for (; *s && k + 1 < n; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        out[k++] = ok ? c : '_';
    }
    out[k] = '\0';
}

static bool header_safe(const char *s)
{
    for (; *s; s++)
        if (*s == '\r' || *s == '\n') return false;
    return true;
}

/* The bare address of "Name <addr>" or "addr". */
static void bare_address(char *out, size_t n, const char *from)
{
    const char *lt = strchr(from, '<'), *gt = lt ? strchr(lt, '>') : NULL;
    if (lt && gt)
        snprintf(out, n, "%.*s", (int)(gt - lt - 1), lt + 1);
    else
        snprintf(out, n, "%s", from);
}

/* The whole message, CRLF line ends. */
static void build_message(ag_buf *b, const nt_mail *m)
{
    char date[64], ev[80], user[NT_USER_MAX], from_addr[256];
    mail_date(date, sizeof date, m->created_ms);
    atom(ev, sizeof ev, m->event_id);
    atom(user, sizeof user, m->user_id);
    bare_address(from_addr, sizeof from_addr, g_nt.cfg.mail_from);
    const char *at = strchr(from_addr, '@');
    ag_buf_printf(b,
                  "Date: %s\r\nFrom: Agora <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
                  "Message-ID: <%s.%s@%s>\r\nMIME-Version: 1.0\r\n"
                  "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
                  "X-Agora-Event-Id: %s\r\n\r\n",
                  date, from_addr, m->to, m->subject, ev, user, at ? at + 1 : "agora.local",
                  m->event_id);
    for (const char *p = m->body; *p; p++) {
        if (*p == '\n' && (p == m->body || p[-1] != '\r'))
            ag_buf_append(b, "\r\n", 2);
        else
            ag_buf_append(b, p, 1);
    }
}

/* ---- Maildir ----------------------------------------------------------------------------- */

static int mkdir_p(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%.1000s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return AG_EIO;
        *p = '/';
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST) return AG_EIO;
    return 0;
}

/* True when cur/ holds `name` (a reader moves mail there, adding ":2,<flags>"). */
static bool in_cur(const char *dir, const char *name)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/cur", dir);
    DIR *d = opendir(path);
    if (!d) return false;
    size_t n = strlen(name);
    bool found = false;
    struct dirent *e;
    while (!found && (e = readdir(d)))
        found = strncmp(e->d_name, name, n) == 0 && (e->d_name[n] == '\0' || e->d_name[n] == ':');
    closedir(d);
    return found;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return AG_EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int deliver_maildir(const nt_mail *m, const ag_buf *msg, char *err, size_t errn)
{
    const char *dir = g_nt.cfg.mail_dir;
    char sub[1100], name[256], tmp[1400], dst[1400], ev[80];
    const char *parts[] = {"tmp", "new", "cur"};
    for (int i = 0; i < 3; i++) {
        snprintf(sub, sizeof sub, "%s/%s", dir, parts[i]);
        if (mkdir_p(sub) < 0) {
            snprintf(err, errn, "cannot create %.160s: %s", sub, strerror(errno));
            return AG_EIO;
        }
    }
    /* time.unique.host, fixed by the row: a second delivery finds the first. */
    atom(ev, sizeof ev, m->event_id);
    snprintf(name, sizeof name, "%lld.A%lld_%s.%s", (long long)(m->created_ms / 1000),
             (long long)m->id, ev, g_mail.host);
    snprintf(dst, sizeof dst, "%s/new/%s", dir, name);
    struct stat st;
    if (stat(dst, &st) == 0 || in_cur(dir, name)) {
        ag_info("mail already in the Maildir: not written again", AG_FI("mailId", m->id));
        return 0;
    }
    snprintf(tmp, sizeof tmp, "%s/tmp/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errn, "cannot create %.160s: %s", tmp, strerror(errno));
        return AG_EIO;
    }
    int rc = write_all(fd, msg->data, msg->len);
    if (rc == 0 && fsync(fd) < 0) rc = AG_EIO;
    if (close(fd) < 0) rc = AG_EIO;
    if (rc == 0 && rename(tmp, dst) < 0) rc = AG_EIO;
    if (rc < 0) {
        snprintf(err, errn, "cannot deliver into %.160s: %s", dir, strerror(errno));
        unlink(tmp);
        return rc;
    }
    snprintf(sub, sizeof sub, "%s/new", dir);
    int dfd = open(sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* the rename itself survives a crash */
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- SMTP -------------------------------------------------------------------------------- */

typedef struct upload {
    const char *data;
    size_t left;
} upload;

static size_t read_cb(char *buf, size_t size, size_t nitems, void *ud)
{
    upload *u = ud;
    size_t n = size * nitems;
    if (n > u->left) n = u->left;
    memcpy(buf, u->data, n);
    u->data += n;
    u->left -= n;
    return n;
}

static int deliver_smtp(const nt_mail *m, const ag_buf *msg, char *err, size_t errn)
{
    CURL *h = curl_easy_init();
    if (!h) {
        snprintf(err, errn, "curl_easy_init failed");
        return AG_ENOMEM;
    }
    char from[300], rcpt[300], addr[256];
    bare_address(addr, sizeof addr, g_nt.cfg.mail_from);
    snprintf(from, sizeof from, "<%s>", addr);
    snprintf(rcpt, sizeof rcpt, "<%s>", m->to);
    struct curl_slist *to = curl_slist_append(NULL, rcpt);
    upload u = {msg->data, msg->len};
    curl_easy_setopt(h, CURLOPT_URL, g_nt.cfg.smtp_url);
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, to);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, read_cb);
    curl_easy_setopt(h, CURLOPT_READDATA, &u);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) snprintf(err, errn, "smtp: %s", curl_easy_strerror(cc));
    curl_slist_free_all(to);
    curl_easy_cleanup(h);
    return cc == CURLE_OK ? 0 : AG_EIO;
}

/* ---- The thread ---------------------------------------------------------------------------- */

static bool address_ok(const char *a)
{
    const char *at = strchr(a, '@');
    if (!at || at == a || !at[1] || strchr(at + 1, '@') || strlen(a) > 254) return false;
    for (const char *p = a; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == '"' || *p == 0x7f)
            return false;
    return true;
}

static void deliver(ag_db *db, const nt_mail *m)
{
    char err[256] = "";
    int rc;
    if (!address_ok(m->to) || !header_safe(m->subject)) {
        snprintf(err, sizeof err, "not a deliverable address");
        if (nt_mail_failed(db, m->id, err, 0, true) < 0)
            ag_error("cannot record a mail failure", AG_FI("mailId", m->id));
        ag_warn("mail not sent: bad address", AG_FI("mailId", m->id));
        return;
    }
    ag_buf msg;
    ag_buf_init(&msg, 0);
    build_message(&msg, m);
    rc = g_nt.cfg.smtp_url ? deliver_smtp(m, &msg, err, sizeof err)
                           : deliver_maildir(m, &msg, err, sizeof err);
    ag_buf_release(&msg);
    if (rc == 0) {
        rc = nt_mail_sent(db, m->id);
        if (rc < 0)
            ag_error("mail sent but not marked", AG_FI("mailId", m->id), AG_FERR(rc));
        else
            ag_info("mail sent", AG_FI("mailId", m->id), AG_FS("subject", m->subject),
                    AG_FS("via", g_nt.cfg.smtp_url ? "smtp" : "maildir"));
        return;
    }
    int attempts = m->attempts + 1;
    bool give_up = attempts >= g_nt.cfg.mail_max_attempts;
    uint64_t backoff = 1000ull << (attempts < 20 ? attempts - 1 : 19);
    if (backoff > MAX_BACKOFF_MS) backoff = MAX_BACKOFF_MS;
    if (give_up)
        ag_error("mail failed: giving up", AG_FI("mailId", m->id), AG_FS("reason", err),
                 AG_FI("attempts", attempts));
    else
        ag_warn("mail failed: will retry", AG_FI("mailId", m->id), AG_FS("reason", err),
                AG_FI("attempts", attempts), AG_FI("retryInMs", (long long)backoff));
    rc = nt_mail_failed(db, m->id, err, (int64_t)(ag_wall_ms() + backoff), give_up);
    if (rc < 0) ag_error("cannot record a mail failure", AG_FI("mailId", m->id), AG_FERR(rc));
}

/* Sends what is due; true when a full batch was taken (more may wait). */
static bool send_due(void)
{
    ag_db *db;
    nt_mail *m;
    size_t n;
    if (ag_store_db(g_nt.store, &db) < 0) return false;
    int rc = nt_mail_due(db, (int64_t)ag_wall_ms(), BATCH, &m, &n);
    if (rc < 0) {
        ag_error("cannot read the mail outbox", AG_FERR(rc));
        return false;
    }
    for (size_t i = 0; i < n; i++)
        deliver(db, &m[i]);
    nt_mails_free(m, n);
    return n == BATCH;
}

static void *mailer_main(void *arg)
{
    for (;;) {
        while (send_due()) {
            pthread_mutex_lock(&g_mail.mu);
            bool stop = g_mail.stop;
            pthread_mutex_unlock(&g_mail.mu);
            if (stop) return NULL;
        }
        pthread_mutex_lock(&g_mail.mu);
        if (!g_mail.wake && !g_mail.stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += SWEEP_MS / 1000;
            pthread_cond_timedwait(&g_mail.cond, &g_mail.mu, &until);
        }
        g_mail.wake = false;
        bool stop = g_mail.stop;
        pthread_mutex_unlock(&g_mail.mu);
        if (stop) return NULL;
    }
}

int nt_mailer_start(void)
{
    if (gethostname(g_mail.host, sizeof g_mail.host - 1) < 0 || !g_mail.host[0])
        snprintf(g_mail.host, sizeof g_mail.host, "agora");
    char clean[64];
    atom(clean, sizeof clean, g_mail.host);
    memcpy(g_mail.host, clean, sizeof clean);
    pthread_cond_init(&g_mail.cond, NULL);
    g_mail.stop = g_mail.wake = false;
    if (pthread_create(&g_mail.thread, NULL, mailer_main, NULL) != 0) {
        pthread_cond_destroy(&g_mail.cond);
        return AG_ESYS;
    }
    g_mail.started = true;
    ag_info("mailer started", AG_FS("via", g_nt.cfg.smtp_url ? "smtp" : "maildir"),
            AG_FS("maildir", g_nt.cfg.smtp_url ? "" : g_nt.cfg.mail_dir));
    return 0;
}

void nt_mailer_wake(void)
{
    pthread_mutex_lock(&g_mail.mu);
    g_mail.wake = true;
    pthread_cond_signal(&g_mail.cond);
    pthread_mutex_unlock(&g_mail.mu);
}

void nt_mailer_stop(void)
{
    if (!g_mail.started) return;
    pthread_mutex_lock(&g_mail.mu);
    g_mail.stop = true;
    pthread_cond_signal(&g_mail.cond);
    pthread_mutex_unlock(&g_mail.mu);
    pthread_join(g_mail.thread, NULL);
    pthread_cond_destroy(&g_mail.cond);
    g_mail.started = false;
}
