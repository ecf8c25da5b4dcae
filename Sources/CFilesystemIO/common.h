// What both I/O layers share: the bounds check before every read, and error text.
#pragma once
#include <stdio.h>
#include "CFilesystemIO.h"

static inline void set_error(asr_fs_io *io, const char *what, const char *detail) {
    if (io->error && io->error_capacity > 0)
        snprintf(io->error, (size_t)io->error_capacity, "%s%s%s", what, detail && *detail ? ": " : "", detail ? detail : "");
}

/// Reads inside the partition only: a library asking past its end gets a failure, not bytes.
static inline int read_partition(asr_fs_io *io, void *buffer, unsigned long long offset, unsigned long long count) {
    if (offset > io->length || count > io->length - offset) return -1;
    if (count == 0) return 0;
    return io->read(io->context, buffer, offset, count);
}
