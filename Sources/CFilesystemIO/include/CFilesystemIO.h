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

// An opened ext2/3/4 tree (ext2tree.c), read-only. Calls on one volume must not overlap
// (libext2fs is not thread-safe); `io` must outlive it. Failing calls return -1 with the
// reason in io->error. Callbacks return 0 to go on, anything else to stop with an error.
typedef struct asr_ext2_volume asr_ext2_volume;

/// One inode's attributes; times are seconds and nanoseconds since 1970.
typedef struct asr_ext2_inode {
    unsigned mode, uid, gid, links, flags;
    unsigned long long size, blocks_512;
    long long atime, mtime, ctime;
    unsigned atime_ns, mtime_ns, ctime_ns;
    unsigned rdev_major, rdev_minor;
} asr_ext2_inode;

/// Opens the filesystem; NULL with io->error set when libext2fs refuses it, its journal needs
/// recovery or its group descriptors are damaged.
asr_ext2_volume *asr_ext2_open(asr_fs_io *io);
void asr_ext2_close(asr_ext2_volume *volume);
void asr_ext2_label(asr_ext2_volume *volume, char *out, int capacity);
unsigned asr_ext2_block_size(asr_ext2_volume *volume);
unsigned long long asr_ext2_inode_count(asr_ext2_volume *volume);
int asr_ext2_stat(asr_ext2_volume *volume, unsigned ino, asr_ext2_inode *out);
/// A directory's entries but "." and "..", at most `limit`; `type` is the entry's file type (0 unknown).
int asr_ext2_list(asr_ext2_volume *volume, unsigned dir, unsigned long long limit,
                  int (*entry)(void *context, const char *name, int length, unsigned ino, int type), void *context);
/// The mapped block runs of a file (logical and physical block, count), ascending, at most
/// `limit`; `zero` for unwritten (preallocated) extents. Blocks in no run are holes.
int asr_ext2_runs(asr_ext2_volume *volume, unsigned ino, unsigned long long limit,
                  int (*run)(void *context, unsigned long long logical, unsigned long long physical,
                             unsigned long long count, int zero), void *context);
/// An inline-data inode's bytes: their count, -2 when the inode has no inline data, -1 on error.
/// With a NULL buffer, only the count.
long long asr_ext2_inline_data(asr_ext2_volume *volume, unsigned ino, void *buffer, unsigned long long capacity);
/// A fast symlink's target: its length, -2 when the target is in a data block, -1 on error.
long long asr_ext2_fast_symlink(asr_ext2_volume *volume, unsigned ino, char *buffer, unsigned long long capacity);
/// Every extended attribute by its full name ("user.x", "security.selinux", "system.data").
int asr_ext2_xattrs(asr_ext2_volume *volume, unsigned ino,
                    int (*attr)(void *context, const char *name, const void *value, unsigned long long length), void *context);
