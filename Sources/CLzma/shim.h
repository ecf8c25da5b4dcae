#include <lzma.h>

// Macros Swift cannot import (they expand through UINT64_C/UINT32_C).
static const lzma_vli asr_LZMA_FILTER_LZMA2 = LZMA_FILTER_LZMA2;
static const lzma_vli asr_LZMA_VLI_UNKNOWN = LZMA_VLI_UNKNOWN;
static const uint32_t asr_LZMA_PRESET_EXTREME = LZMA_PRESET_EXTREME;
