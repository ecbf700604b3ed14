/* A delivered event's body (the bus's consumer: ag__bus_envelope_parse)
 * and its traceparent (ag_traceparent_parse). An envelope accepted has a
 * non-empty string id and type; a traceparent accepted is valid and prints
 * back to the same 55 characters. */
#include "fuzz.h"

#include "agora/trace.h"
#include "bus/internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *env;
    ag_event ev;
    char why[300];
    if (ag__bus_envelope_parse((const char *)data, size, &env, &ev, why, sizeof why) == 0) {
        FUZZ_CHECK(ev.id && *ev.id && ev.type && *ev.type);
        if (ev.traceparent) {
            ag_trace_ctx t;
            ag_traceparent_parse(ev.traceparent, &t);
        }
    } else {
        FUZZ_CHECK(strncmp(why, "unparseable event: ", 19) == 0);
    }
    json_decref(env);

    char *s = fuzz_str(data, size);
    ag_trace_ctx t;
    if (ag_traceparent_parse(s, &t) == 0) {
        char back[AG_TRACEPARENT_LEN + 1];
        ag_traceparent_format(&t, back);
        FUZZ_CHECK(strlen(back) == AG_TRACEPARENT_LEN);
    }
    free(s);
    return 0;
}
