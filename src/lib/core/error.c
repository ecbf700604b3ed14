/* error.c — names and messages of the AG_E* codes (see agora/error.h). */
#include <errno.h>
#include <uv.h>

#include "agora/error.h"

const char *ag_strerror(int err)
{
    switch (err) {
    case AG_OK:
        return "success";
#define AG__ERR_MSG(name, msg)                                                 \
    case AG_E##name:                                                           \
        return msg;
        AG_ERRNO_MAP(AG__ERR_MSG)
#undef AG__ERR_MSG
    default:
        return "unknown error";
    }
}

const char *ag_err_name(int err)
{
    switch (err) {
    case AG_OK:
        return "AG_OK";
#define AG__ERR_NAME(name, msg)                                                \
    case AG_E##name:                                                           \
        return "AG_E" #name;
        AG_ERRNO_MAP(AG__ERR_NAME)
#undef AG__ERR_NAME
    default:
        return "AG_E?";
    }
}

int ag_err_from_errno(int e)
{
    if (e >= 0) return AG_OK;
    switch (e) {
    case UV_ENOMEM:
        return AG_ENOMEM;
    case UV_EINVAL:
        return AG_EINVAL;
    case UV_ETIMEDOUT:
        return AG_ETIMEDOUT;
    case UV_ECONNREFUSED:
        return AG_ECONNREFUSED;
    case UV_EOF:
    case UV_ECONNRESET:
    case UV_EPIPE:
    case UV_ENOTCONN:
        return AG_ECLOSED;
    case UV_ENOENT:
        return AG_ENOTFOUND;
    case UV_EEXIST:
    case UV_EADDRINUSE:
        return AG_EEXISTS;
    case UV_EAGAIN:
    case UV_EBUSY:
        return AG_EBUSY;
    case UV_ECANCELED:
        return AG_ECANCELED;
    case UV_EMFILE:
    case UV_ENFILE:
        return AG_EUNAVAIL;
    default:
        return AG_ESYS;
    }
}
