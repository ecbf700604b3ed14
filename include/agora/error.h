/*
 * error.h — the one error convention of libagora.
 *
 * Functions return 0 (or a non-negative count) on success and a negative
 * AG_E* code on failure. ag_strerror() names a code. The list is a single
 * X-macro so that the enum, the names and the messages never drift apart
 * (libuv's UV_ERRNO_MAP). A function that fails leaves nothing half-done:
 * what it allocated is freed and its out-parameters are untouched.
 */
#ifndef AGORA_ERROR_H
#define AGORA_ERROR_H

#define AG_ERRNO_MAP(X)                                                        \
    X(NOMEM, "out of memory")                                                  \
    X(INVAL, "invalid argument")                                               \
    X(IO, "input/output error")                                                \
    X(TIMEDOUT, "timed out")                                                   \
    X(DEADLINE, "deadline exceeded")                                           \
    X(CONNREFUSED, "connection refused")                                       \
    X(CLOSED, "connection closed")                                             \
    X(NOTFOUND, "not found")                                                   \
    X(EXISTS, "already exists")                                                \
    X(TOOBIG, "too large")                                                     \
    X(BUSY, "busy, try again later")                                           \
    X(CANCELED, "canceled")                                                    \
    X(PROTO, "protocol error")                                                 \
    X(CONFIG, "invalid configuration")                                         \
    X(UNAVAIL, "service unavailable")                                          \
    X(STATE, "operation not valid in this state")                              \
    X(RETRY, "conflict with a concurrent transaction; retry")                  \
    X(CONSTRAINT, "constraint violated")                                       \
    X(AUTH, "authentication failed")                                           \
    X(SYS, "system call failed")

typedef enum ag_err {
    AG_OK = 0,
#define AG__ERR_ENUM(name, msg) AG_E##name,
    AG__ERR_FIRST = -1000,
    AG_ERRNO_MAP(AG__ERR_ENUM)
#undef AG__ERR_ENUM
    AG__ERR_LAST
} ag_err;

/* A static string describing `err` ("out of memory"); never NULL. */
const char *ag_strerror(int err);

/* A static string naming `err` ("AG_ENOMEM"); never NULL. */
const char *ag_err_name(int err);

/* Maps a negative errno or libuv error (UV_E*) to the closest AG_E* code. */
int ag_err_from_errno(int neg_errno);

#endif
