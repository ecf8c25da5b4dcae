#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <spawn.h>
#include <sys/socket.h>
#include <linux/fs.h>
#include <linux/falloc.h>
#include <linux/udp.h>
#include "CLinux.h"

const int asr_SEEK_DATA = SEEK_DATA;
const int asr_SEEK_HOLE = SEEK_HOLE;
const int asr_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
const int asr_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
const int asr_UDP_SEGMENT = UDP_SEGMENT;
const int asr_UDP_GRO = UDP_GRO;
const int asr_SO_RCVBUFFORCE = SO_RCVBUFFORCE;
const int asr_SO_SNDBUFFORCE = SO_SNDBUFFORCE;
const short asr_POSIX_SPAWN_SETSID = POSIX_SPAWN_SETSID;
const unsigned long asr_BLKZEROOUT = BLKZEROOUT;
const unsigned long asr_BLKGETSIZE64 = BLKGETSIZE64;
const unsigned long asr_BLKDISCARD = BLKDISCARD;

int asr_start_writeback(int fd, long long offset, long long length) {
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

int asr_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length);
}

// Weak: present only when the ThreadSanitizer runtime is linked in.
void __tsan_acquire(void *address) __attribute__((weak));
void __tsan_release(void *address) __attribute__((weak));

void asr_tsan_acquire(void *address) {
    if (__tsan_acquire) __tsan_acquire(address);
}

void asr_tsan_release(void *address) {
    if (__tsan_release) __tsan_release(address);
}
