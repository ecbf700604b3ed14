/* config.c — typed getters over environment variables (see agora/config.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "agora/config.h"
#include "agora/log.h"

static char g_service_upper[64];
static _Thread_local char g_last_error[256];
/* The variable the last lookup of this thread read, so that an error names
 * AGORA_ORDERS_DB rather than AGORA_DB when the override was the bad one. */
static _Thread_local char g_last_name[192];

void ag_config_set_service(const char *service)
{
    size_t i = 0;
    for (; service && service[i] && i < sizeof g_service_upper - 1; i++) {
        char c = service[i];
        g_service_upper[i] = (char)(c == '-' ? '_' : toupper((unsigned char)c));
    }
    g_service_upper[i] = '\0';
}

const char *ag_config_last_error(void)
{
    return g_last_error;
}

const char *ag_config_raw(const char *name)
{
    /* AGORA_DB with service "orders" is overridden by AGORA_ORDERS_DB. */
    if (g_service_upper[0] && strncmp(name, "AGORA_", 6) == 0) {
        char specific[192];
        int n = snprintf(specific, sizeof specific, "AGORA_%s_%s", g_service_upper, name + 6);
        if (n > 0 && (size_t)n < sizeof specific) {
            const char *v = getenv(specific);
            if (v && *v) {
                snprintf(g_last_name, sizeof g_last_name, "%s", specific);
                return v;
            }
        }
    }
    snprintf(g_last_name, sizeof g_last_name, "%s", name);
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int fail(const char *name, const char *expected, const char *got)
{
    if (g_last_name[0]) name = g_last_name;
    snprintf(g_last_error, sizeof g_last_error, "%s: expected %s, got \"%s\"", name, expected,
             got);
    ag_error("invalid configuration", AG_FS("variable", name), AG_FS("reason", g_last_error));
    return AG_ECONFIG;
}

int ag_config_str(const char *name, const char *def, const char **out)
{
    const char *v = ag_config_raw(name);
    *out = v ? v : def;
    return 0;
}

int ag_config_int(const char *name, long long def, long long min, long long max, long long *out)
{
    const char *v = ag_config_raw(name);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!isdigit((unsigned char)v[0]) && v[0] != '-' && v[0] != '+') end = (char *)v;
    if (errno || end == v || *end != '\0' || x < min || x > max) {
        char expected[96];
        snprintf(expected, sizeof expected, "an integer between %lld and %lld", min, max);
        return fail(name, expected, v);
    }
    *out = x;
    return 0;
}

int ag_config_bool(const char *name, bool def, bool *out)
{
    const char *v = ag_config_raw(name);
    if (!v) {
        *out = def;
        return 0;
    }
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return fail(name, "true or false (also yes/no, on/off, 1/0)", v);
}

int ag_parse_duration_ms(const char *s, uint64_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return AG_EINVAL;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno) return AG_EINVAL;
    unsigned long long mul;
    if (*end == '\0' || strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0)
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return AG_EINVAL;
    if (x > UINT64_MAX / mul) return AG_EINVAL;
    *out = x * mul;
    return 0;
}

int ag_parse_size(const char *s, size_t *out)
{
    if (!s || !isdigit((unsigned char)*s)) return AG_EINVAL;
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 10);
    if (errno) return AG_EINVAL;
    unsigned long long mul = 1;
    if (*end) {
        char u = (char)tolower((unsigned char)*end);
        const char *rest = end + 1;
        if (u == 'k')
            mul = 1024ull;
        else if (u == 'm')
            mul = 1024ull * 1024;
        else if (u == 'g')
            mul = 1024ull * 1024 * 1024;
        else if (u == 'b' && *rest == '\0')
            mul = 1;
        else
            return AG_EINVAL;
        if (u != 'b' && *rest && strcasecmp(rest, "ib") != 0 && strcasecmp(rest, "b") != 0)
            return AG_EINVAL;
    }
    if (x > SIZE_MAX / mul) return AG_EINVAL;
    *out = (size_t)(x * mul);
    return 0;
}

int ag_config_duration_ms(const char *name, uint64_t def, uint64_t *out)
{
    const char *v = ag_config_raw(name);
    if (!v) {
        *out = def;
        return 0;
    }
    uint64_t x;
    if (ag_parse_duration_ms(v, &x) < 0)
        return fail(name, "a duration such as 250ms, 5s, 2m or 1h", v);
    *out = x;
    return 0;
}

int ag_config_size(const char *name, size_t def, size_t *out)
{
    const char *v = ag_config_raw(name);
    if (!v) {
        *out = def;
        return 0;
    }
    size_t x;
    if (ag_parse_size(v, &x) < 0) return fail(name, "a size such as 512, 64k or 1MiB", v);
    *out = x;
    return 0;
}
