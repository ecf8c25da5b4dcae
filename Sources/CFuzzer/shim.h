#include <stddef.h>
#include <stdint.h>

// libFuzzer's driver, present only when linked with -sanitize=fuzzer. Weak, so the plain
// build (make test builds every target) links too and falls back to the mutation loop.
__attribute__((weak)) int LLVMFuzzerRunDriver(int *argc, char ***argv,
                                              int (*callback)(const uint8_t *data, size_t size));

static inline int asr_have_libfuzzer(void) { return LLVMFuzzerRunDriver != 0; }
