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

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif
