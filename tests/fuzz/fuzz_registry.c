/* A service registration as agora-registry receives it (Consul's service
 * definition: registry/parse.c, reg_svc_parse). A definition taken has a
 * name and an id of 1 to 256 printable characters, a port in range, at
 * most 16 checks each either HTTP with an interval or TTL; one refused says
 * why. Durations (reg_parse_duration) on their own too. */
#include "fuzz.h"

#include "registry.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[400] = "";
    reg_svc *s = reg_svc_parse((const char *)data, size, why, sizeof why);
    if (s) {
        FUZZ_CHECK(s->name && *s->name && s->id && *s->id && strlen(s->id) <= 256);
        FUZZ_CHECK(s->port >= 0 && s->port <= 65535);
        FUZZ_CHECK(s->nchecks >= 0 && s->nchecks <= 16);
        for (int i = 0; i < s->nchecks; i++) {
            const reg_check *c = &s->checks[i];
            FUZZ_CHECK(c->id && c->name);
            FUZZ_CHECK(c->http ? c->interval_ms >= 100 && c->ttl_ms == 0 : c->ttl_ms > 0);
        }
        reg_svc_free(s);
    } else {
        FUZZ_CHECK(why[0] != '\0');
    }
    char *d = fuzz_str(data, size);
    uint64_t ms;
    reg_parse_duration(d, &ms);
    free(d);
    return 0;
}
