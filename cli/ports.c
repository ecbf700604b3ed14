/*
 * ports.c — who holds a port, pid files, and the two small network probes
 * (an HTTP GET and a TCP connect) that readiness and status use.
 *
 * "port 8080 is in use by pid 1234 (nginx)": the listening socket's inode
 * comes from /proc/net/tcp and /proc/net/tcp6 (state 0A is LISTEN), and the
 * process from the /proc/<pid>/fd link that reads "socket:[inode]". Another
 * user's processes are not readable; the port is then reported as in use by
 * an unknown process rather than as free.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agora/error.h"
#include "agora/http_client.h"
#include "agora/mem.h"
#include "cli.h"

/* The inode of a socket listening on `port` in one /proc/net file, or 0. */
static unsigned long listen_inode(const char *file, int port)
{
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    char line[512];
    unsigned long found = 0;
    if (!fgets(line, sizeof line, f)) { /* the header */
        fclose(f);
        return 0;
    }
    while (fgets(line, sizeof line, f)) {
        char local[128], remote[128];
        unsigned st;
        unsigned long inode;
        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
        if (sscanf(line, " %*s %127s %127s %x %*s %*s %*s %*s %*s %lu", local, remote, &st,
                   &inode) != 4)
            continue;
        const char *colon = strrchr(local, ':');
        if (!colon || st != 0x0A) continue;
        if ((int)strtol(colon + 1, NULL, 16) == port) {
            found = inode ? inode : 1;
            break;
        }
    }
    fclose(f);
    return found;
}

static pid_t inode_owner(unsigned long inode)
{
    char want[64];
    snprintf(want, sizeof want, "socket:[%lu]", inode);
    DIR *proc = opendir("/proc");
    if (!proc) return 0;
    struct dirent *d;
    pid_t owner = 0;
    while (!owner && (d = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(d->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char fddir[64];
        snprintf(fddir, sizeof fddir, "/proc/%ld/fd", pid);
        DIR *fds = opendir(fddir);
        if (!fds) continue;
        struct dirent *fd;
        while ((fd = readdir(fds)) != NULL) {
            if (fd->d_name[0] == '.') continue;
            char link[320], target[128];
            snprintf(link, sizeof link, "%s/%s", fddir, fd->d_name);
            ssize_t n = readlink(link, target, sizeof target - 1);
            if (n <= 0) continue;
            target[n] = '\0';
            if (strcmp(target, want) == 0) {
                owner = (pid_t)pid;
                break;
            }
        }
        closedir(fds);
    }
    closedir(proc);
    return owner;
}

void cli_proc_name(pid_t pid, char *out, size_t n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
    snprintf(out, n, "?");
    FILE *f = fopen(path, "r");
    if (!f) return;
    if (fgets(out, (int)n, f)) out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

pid_t cli_port_owner(int port, char *comm, size_t n)
{
    if (comm && n) comm[0] = '\0';
    unsigned long inode = listen_inode("/proc/net/tcp", port);
    if (!inode) inode = listen_inode("/proc/net/tcp6", port);
    if (!inode) {
        /* Not listening; a bind also catches a port held another way. */
        int s = socket(AF_INET, SOCK_STREAM, 0);
        if (s < 0) return -1;
        int one = 1;
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int rc = bind(s, (struct sockaddr *)&a, sizeof a);
        close(s);
        return rc == 0 ? -1 : 0;
    }
    pid_t pid = inode_owner(inode);
    if (pid > 0 && comm) cli_proc_name(pid, comm, n);
    return pid;
}

bool cli_pid_alive(pid_t pid)
{
    if (pid <= 0 || (kill(pid, 0) != 0 && errno == ESRCH)) return false;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) return false;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
    return !(paren && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X'));
}

pid_t cli_read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[32] = "";
    long pid = 0;
    if (fgets(line, sizeof line, f)) pid = strtol(line, NULL, 10);
    fclose(f);
    if (pid <= 0 || pid > 0x7fffffff) return 0;
    if (!cli_pid_alive((pid_t)pid)) return 0;
    return (pid_t)pid;
}

static ag_http_client *g_http; /* shared by every thread; see cli_http_init */

int cli_http_init(void)
{
    ag_http_client_opts o = {
        .connect_timeout_ms = 1000, .timeout_ms = 2000, .user_agent = "agora-cli"};
    return ag_http_client_new(&o, &g_http);
}

void cli_http_shutdown(void)
{
    ag_http_client_free(g_http);
    g_http = NULL;
}

int cli_http_get(const char *url, uint64_t timeout_ms, char **body)
{
    ag_http_reply rep;
    ag_http_call call = {.url = url, .timeout_ms = timeout_ms};
    int rc = ag_http_client_do(g_http, &call, &rep);
    if (rc < 0) return rc;
    int status = rep.status;
    if (body) *body = ag_strdup(rep.body.data ? rep.body.data : "");
    ag_http_reply_release(&rep);
    return status;
}

int cli_http_do(const ag_http_call *call, ag_http_reply *rep)
{
    return ag_http_client_do(g_http, call, rep);
}

bool cli_tcp_ok(int port, uint64_t timeout_ms)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0) return false;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        ok = true;
    } else if (errno == EINPROGRESS) {
        struct pollfd p = {.fd = s, .events = POLLOUT};
        if (poll(&p, 1, (int)timeout_ms) == 1) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
            ok = err == 0;
        }
    }
    close(s);
    return ok;
}

pid_t cli_component_pid(const cli_config *cfg, const char *name)
{
    char path[4096];
    cli_path(cfg, path, sizeof path, "run", name, ".pid");
    return cli_read_pid(path);
}

bool cli_component_ready(const cli_component *c, uint64_t timeout_ms)
{
    if (c->ready == CLI_READY_TCP) return cli_tcp_ok(c->port, timeout_ms);
    char url[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", c->port, c->ready_path);
    return cli_http_get(url, timeout_ms, NULL) == 200;
}

int cli_proc_mem(pid_t pid, long *rss_kb, long *pss_kb)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return AG_ENOTFOUND;
    *rss_kb = *pss_kb = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "Rss:", 4) == 0) *rss_kb = strtol(line + 4, NULL, 10);
        if (strncmp(line, "Pss:", 4) == 0) *pss_kb = strtol(line + 4, NULL, 10);
    }
    fclose(f);
    return *rss_kb >= 0 && *pss_kb >= 0 ? 0 : AG_EPROTO;
}

int cli_children(pid_t parent, pid_t *out, int max)
{
    DIR *d = opendir("/proc");
    if (!d) return AG_EIO;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && n < max) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0) continue;
        char path[64], stat[512];
        snprintf(path, sizeof path, "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t got = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[got] = '\0';
        /* "pid (comm) state ppid ...": comm may hold spaces and parentheses */
        char *close = strrchr(stat, ')');
        long ppid = 0;
        if (close && sscanf(close + 1, " %*c %ld", &ppid) == 1 && ppid == parent)
            out[n++] = (pid_t)pid;
    }
    closedir(d);
    return n;
}
