#define _GNU_SOURCE
#include <fcntl.h>

// Linux calls Glibc's Swift overlay does not import without _GNU_SOURCE.
static inline int asr_start_writeback(int fd, long long offset, long long length) {
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

// Frees a range of a file so it reads as zeros, keeping the file's size.
static inline int asr_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}
