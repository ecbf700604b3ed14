/*
 * fuzz.h — what the libFuzzer harnesses of tests/fuzz share.
 *
 * Each fuzz_<name>.c defines LLVMFuzzerTestOneInput for one parser of
 * untrusted bytes and is built by tests/fuzz/CMakeLists.txt (clang,
 * -fsanitize=fuzzer,address,undefined, with libagora built the same way)
 * and run by tests/fuzz/run over its seed corpus corpus/<name>/. A harness
 * asserts what must hold for any input (FUZZ_CHECK: an invariant broken is
 * a crash, so the fuzzer keeps the input), beyond "no crash, no leak, no
 * undefined behaviour", which the sanitizers see.
 */
#ifndef AGORA_FUZZ_H
#define AGORA_FUZZ_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* The input as a NUL-terminated string of its own (the caller frees). */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* One connection to a server of the harness on 127.0.0.1:`port`: the
 * input written, the write side shut, and what the server sends read
 * until it closes (at most `cap` bytes kept in `got`); its length. The
 * server must close, not hang (5 s). libFuzzer's timeout alarm may
 * interrupt the connect (EINTR), and at thousands of connections a second
 * the kernel may be out of ephemeral ports or backlog for a moment: a new
 * try then, else the harness says why and stops. */
static inline size_t fuzz_exchange(int port, const uint8_t *data, size_t size, void *got,
                                   size_t cap)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    struct timeval tv = {.tv_sec = 5};
    int fd = -1, tries = 0;
    for (;;) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) abort();
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) break;
        int e = errno;
        close(fd);
        if (++tries == 200 || (e != EINTR && e != EADDRNOTAVAIL && e != ECONNREFUSED &&
                               e != EAGAIN && e != ETIMEDOUT && e != EINPROGRESS)) {
            fprintf(stderr, "fuzz: cannot connect to the server (%s) after %d tries\n",
                    strerror(e), tries);
            abort();
        }
        usleep(10000);
    }
    if (tries) fprintf(stderr, "fuzz: connected after %d tries\n", tries);
    for (size_t off = 0; off < size;) {
        ssize_t n = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue; /* libFuzzer's alarm */
        if (n <= 0) break;                     /* the server closed early: it may */
        off += (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    size_t len = 0;
    for (;;) {
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            FUZZ_CHECK(n == 0 || errno != EAGAIN); /* the server must close, not hang */
            break;
        }
        size_t take = (size_t)n < cap - len ? (size_t)n : cap - len;
        memcpy((char *)got + len, buf, take);
        len += take;
    }
    close(fd);
    return len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
