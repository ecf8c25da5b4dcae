#define _GNU_SOURCE
#include <fcntl.h>
#include <unistd.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
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
const short asr_POSIX_SPAWN_SETSID = POSIX_SPAWN_SETSID;
const unsigned long asr_BLKZEROOUT = BLKZEROOUT;
const unsigned long asr_BLKGETSIZE64 = BLKGETSIZE64;

int asr_start_writeback(int fd, long long offset, long long length) {
    return sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE);
}

int asr_flush_range(int fd, long long offset, long long length) {
    return sync_file_range(fd, offset, length,
                           SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
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

int asr_receive_batch(int fd, void *const *buffers, int capacity, int count, int *lengths, int *segments) {
    enum { limit = 64 };
    struct mmsghdr messages[limit];
    struct iovec vectors[limit];
    char controls[limit][CMSG_SPACE(sizeof(int))] __attribute__((aligned(8)));
    if (count > limit) count = limit;
    for (int i = 0; i < count; i++) {
        vectors[i].iov_base = buffers[i];
        vectors[i].iov_len = (size_t)capacity;
        memset(&messages[i], 0, sizeof messages[i]);
        messages[i].msg_hdr.msg_iov = &vectors[i];
        messages[i].msg_hdr.msg_iovlen = 1;
        messages[i].msg_hdr.msg_control = controls[i];
        messages[i].msg_hdr.msg_controllen = sizeof controls[i];
    }
    int n = recvmmsg(fd, messages, (unsigned)count, MSG_WAITFORONE, NULL);
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &messages[i].msg_hdr;
        lengths[i] = (h->msg_flags & MSG_TRUNC) ? -1 : (int)messages[i].msg_len;
        segments[i] = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == IPPROTO_UDP && c->cmsg_type == UDP_GRO) memcpy(&segments[i], CMSG_DATA(c), sizeof(int));
        }
    }
    return n;
}
