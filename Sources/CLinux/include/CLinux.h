// Linux constants and calls that Glibc's Swift overlay does not import (macros hidden without
// _GNU_SOURCE, or ioctl numbers built by macros Swift cannot expand), exported by name.
// Defined in shim.c, so this header pulls in no system header and clashes with no module.
#pragma once

extern const int asr_SEEK_DATA;
extern const int asr_SEEK_HOLE;
extern const int asr_FALLOC_FL_KEEP_SIZE;
extern const int asr_FALLOC_FL_PUNCH_HOLE;
extern const int asr_UDP_SEGMENT;
extern const int asr_UDP_GRO;
extern const int asr_SO_RCVBUFFORCE;
extern const short asr_POSIX_SPAWN_SETSID;
extern const unsigned long asr_BLKZEROOUT;
extern const unsigned long asr_BLKGETSIZE64;

/// sync_file_range(SYNC_FILE_RANGE_WRITE): start writeback without waiting for it.
int asr_start_writeback(int fd, long long offset, long long length);
/* Writes a range to the device and waits for it (sync_file_range), so it can be read back. */
int asr_flush_range(int fd, long long offset, long long length);
/// Frees a range of a file so it reads as zeros, keeping the file's size.
int asr_punch_hole(int fd, long long offset, long long length);

/// ThreadSanitizer's happens-before annotations; nothing unless the program runs under TSan.
void asr_tsan_acquire(void *address);
void asr_tsan_release(void *address);

/// One recvmmsg(MSG_WAITFORONE) into `count` (at most 64) buffers: waits (up to the socket's
/// receive timeout) for the first datagram, then takes whatever else is queued. For each
/// datagram received: its length, and its UDP_GRO segment size (0 when it is one datagram).
/// A truncated datagram's length is reported as -1. Returns how many were received, or -1.
int asr_receive_batch(int fd, void *const *buffers, int capacity, int count, int *lengths, int *segments);
