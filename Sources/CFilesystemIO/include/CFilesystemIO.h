// libext2fs and libntfs-3g each read a filesystem through an I/O layer of their own: an
// io_manager and a struct ntfs_device_operations. Both normally open a path, which cannot
// take a partition's offset or a decoded image. ext2.c and ntfs.c give each library a layer
// whose reads call back into Swift, so any ByteSource can be read, and whose writes all fail,
// so neither library can change the source. This header includes no system header: Swift
// imports only what is declared here, never the libraries' own headers.
#pragma once

/// One partition as the C side sees it, and where its findings go.
typedef struct asr_fs_io {
    /// Fills `buffer` with the `count` bytes at `offset` of the partition. Returns 0, or -1 when
    /// the bytes cannot be read (past the end, or the source failed).
    int (*read)(void *context, void *buffer, unsigned long long offset, unsigned long long count);
    /// Receives allocated byte runs of the partition, ascending (they may touch or overlap).
    void (*allocated)(void *context, unsigned long long start, unsigned long long length);
    void *context;
    /// Bytes in the partition: no read goes past them.
    unsigned long long length;
    /// Where a failure is described, NUL-terminated and cut to `error_capacity` bytes.
    char *error;
    int error_capacity;
} asr_fs_io;

/// Opens the ext2/3/4 filesystem read-only through libext2fs, checks its group descriptors,
/// reads its block bitmaps and reports every allocated block, the bytes before the first data
/// block and the tail past the last block. Returns 0, or -1 with `error` set.
int asr_ext2_map(asr_fs_io *io);

/// Mounts the NTFS volume read-only through libntfs-3g, refuses a hibernated or uncleanly
/// closed one, reads $Bitmap and reports every allocated cluster, the boot sector and the tail
/// past the last whole cluster (the backup boot sector). Returns 0, or -1 with `error` set.
int asr_ntfs_map(asr_fs_io *io);
