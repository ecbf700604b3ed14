/* A Range header against a file's size (ag_http_range, used by agora-files
 * and static files): the first 8 bytes are the size, the rest the header.
 * A range taken lies inside the file; an input it refuses leaves the
 * outputs as they were. */
#include "fuzz.h"

#include "agora/http.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8) return 0;
    uint64_t fsize = 0;
    memcpy(&fsize, data, 8);
    fsize %= (uint64_t)1 << 40;
    char *h = fuzz_str(data + 8, size - 8);
    uint64_t a = 7, b = 7;
    int r = ag_http_range(h, fsize, &a, &b);
    FUZZ_CHECK(r == -1 || r == 0 || r == 1);
    if (r == 1) FUZZ_CHECK(a <= b && b < fsize);
    if (r != 1) FUZZ_CHECK(a == 7 && b == 7);
    free(h);
    return 0;
}
