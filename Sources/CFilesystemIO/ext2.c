// libext2fs's I/O layer over the read callback (see CFilesystemIO.h), and the calls that turn
// an opened ext2/3/4 into allocated byte runs. In C because libext2fs takes a table of C
// function pointers (an io_manager) and hands back structs and inline bitmap helpers Swift
// cannot use. Every write entry point fails.
#include <errno.h>
#include <pthread.h>
#include "../CExt2fs/shim.h"
#include "common.h"

static struct struct_io_manager asr_ext2_manager;

// libext2fs opens a channel from a name alone, so the name carries the asr_fs_io pointer
// (printed with %p, read back with %p): no global state, any number of opens at once.
static errcode_t ext2_open(const char *name, int flags, io_channel *channel) {
    void *pointer = NULL;
    if (!name || sscanf(name, "asr-io:%p", &pointer) != 1 || !pointer) return EXT2_ET_BAD_DEVICE_NAME;
    if (flags & IO_FLAG_RW) return EXT2_ET_RO_FILSYS;
    io_channel ch = calloc(1, sizeof(*ch));
    if (!ch) return EXT2_ET_NO_MEMORY;
    ch->name = strdup(name);
    if (!ch->name) {
        free(ch);
        return EXT2_ET_NO_MEMORY;
    }
    ch->magic = EXT2_ET_MAGIC_IO_CHANNEL;
    ch->manager = &asr_ext2_manager;
    ch->block_size = 1024;
    ch->refcount = 1;
    ch->private_data = pointer;
    *channel = ch;
    return 0;
}

static errcode_t ext2_close(io_channel ch) {
    if (--ch->refcount > 0) return 0;
    free(ch->name);
    free(ch);
    return 0;
}

static errcode_t ext2_set_blksize(io_channel ch, int size) {
    if (size <= 0 || size > (1 << 16)) return EXT2_ET_INVALID_ARGUMENT;
    ch->block_size = size;
    return 0;
}

// A negative count is a byte count (libext2fs's convention), else a count of blocks.
static errcode_t ext2_read_blk64(io_channel ch, unsigned long long block, int count, void *data) {
    unsigned long long size = count < 0 ? (unsigned long long)(-(long long)count)
                                        : (unsigned long long)count * (unsigned long long)ch->block_size;
    unsigned long long offset;
    if (__builtin_mul_overflow(block, (unsigned long long)ch->block_size, &offset)) return EXT2_ET_SHORT_READ;
    return read_partition(ch->private_data, data, offset, size) == 0 ? 0 : EXT2_ET_SHORT_READ;
}

static errcode_t ext2_read_blk(io_channel ch, unsigned long block, int count, void *data) {
    return ext2_read_blk64(ch, block, count, data);
}

static errcode_t ext2_write_blk64(io_channel ch, unsigned long long block, int count, const void *data) {
    (void)ch; (void)block; (void)count; (void)data;
    return EXT2_ET_RO_FILSYS;
}

static errcode_t ext2_write_blk(io_channel ch, unsigned long block, int count, const void *data) {
    return ext2_write_blk64(ch, block, count, data);
}

static errcode_t ext2_write_byte(io_channel ch, unsigned long offset, int count, const void *data) {
    (void)ch; (void)offset; (void)count; (void)data;
    return EXT2_ET_RO_FILSYS;
}

static errcode_t ext2_flush(io_channel ch) {
    (void)ch;
    return 0;
}

static struct struct_io_manager asr_ext2_manager = {
    .magic = EXT2_ET_MAGIC_IO_MANAGER,
    .name = "asr ByteSource I/O manager",
    .open = ext2_open,
    .close = ext2_close,
    .set_blksize = ext2_set_blksize,
    .read_blk = ext2_read_blk,
    .write_blk = ext2_write_blk,
    .flush = ext2_flush,
    .write_byte = ext2_write_byte,
    .read_blk64 = ext2_read_blk64,
    .write_blk64 = ext2_write_blk64,
};

struct struct_io_manager *asr_ext2_io_manager(void) { return &asr_ext2_manager; }

static int ext2_fail(asr_fs_io *io, ext2_filsys fs, const char *what, errcode_t err) {
    set_error(io, what, err ? error_message(err) : NULL);
    if (fs) ext2fs_close_free(&fs);
    return -1;
}

// error_message() names libext2fs's codes only once its table is registered.
static pthread_once_t ext2_errors_once = PTHREAD_ONCE_INIT;

void asr_ext2_register_errors(void) { pthread_once(&ext2_errors_once, initialize_ext2_error_table); }

int asr_ext2_map(asr_fs_io *io) {
    asr_ext2_register_errors();
    char name[64];
    snprintf(name, sizeof name, "asr-io:%p", (void *)io);
    ext2_filsys fs = NULL;
    // Without EXT2_FLAG_RW libext2fs never writes; 64BITS for filesystems past 2^32 blocks.
    errcode_t err = ext2fs_open2(name, NULL, EXT2_FLAG_64BITS, 0, 0, &asr_ext2_manager, &fs);
    if (err) return ext2_fail(io, NULL, "libext2fs cannot open it", err);
    // A journal still to replay, or a read-only feature libext2fs does not know, may allocate
    // blocks its bitmaps do not show yet.
    if (ext2fs_has_feature_journal_needs_recovery(fs->super))
        return ext2_fail(io, fs, "its journal needs recovery (run e2fsck)", 0);
    if (fs->super->s_feature_ro_compat & ~EXT2_LIB_FEATURE_RO_COMPAT_SUPP)
        return ext2_fail(io, fs, "it has read-only features libext2fs does not know", 0);
    // Bitmaps and inode tables outside their groups mean the bitmaps cannot be trusted.
    if ((err = ext2fs_check_desc(fs))) return ext2_fail(io, fs, "its group descriptors are damaged", err);
    if ((err = ext2fs_read_block_bitmap(fs))) return ext2_fail(io, fs, "libext2fs cannot read its block bitmaps", err);

    unsigned long long block_size = fs->blocksize;
    blk64_t first = fs->super->s_first_data_block;
    blk64_t count = ext2fs_blocks_count(fs->super);
    if (count <= first || count > io->length / block_size)
        return ext2_fail(io, fs, "its block count does not fit its partition", 0);
    // Below the first data block: the boot sectors and, with 1 KiB blocks, the superblock.
    io->allocated(io->context, 0, first * block_size);
    blk64_t end = count - 1, at = first;
    while (at <= end) {
        blk64_t set, clear;
        err = ext2fs_find_first_set_block_bitmap2(fs->block_map, at, end, &set);
        if (err == ENOENT) break;
        if (err) return ext2_fail(io, fs, "libext2fs cannot search its block bitmaps", err);
        err = ext2fs_find_first_zero_block_bitmap2(fs->block_map, set, end, &clear);
        if (err == ENOENT) clear = end + 1;
        else if (err) return ext2_fail(io, fs, "libext2fs cannot search its block bitmaps", err);
        // With bigalloc both answers are cluster-aligned; a run never ends before it starts.
        if (clear <= set || clear <= at) return ext2_fail(io, fs, "libext2fs's bitmap search did not advance", 0);
        io->allocated(io->context, set * block_size, (clear - set) * block_size);
        at = clear;
    }
    io->allocated(io->context, count * block_size, io->length - count * block_size);
    ext2fs_close_free(&fs);
    return 0;
}
