// An opened ext2/3/4 filesystem's tree through libext2fs: inodes, directories, block runs,
// symlinks and extended attributes, for the read-only `volumes/` view. File data is not read
// here: the runs go back to Swift, which reads them through the image's chunk cache without
// holding the volume's lock. Every walk is bounded by the inode's size or a fixed cap, so a
// hostile filesystem cannot make one call run for ever.
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include "../CExt2fs/shim.h"
#include "common.h"

struct asr_ext2_volume {
    ext2_filsys fs;
    asr_fs_io *io;
};

extern struct struct_io_manager *asr_ext2_io_manager(void);
extern void asr_ext2_register_errors(void);

static int fail(asr_fs_io *io, const char *what, errcode_t err) {
    set_error(io, what, err ? error_message(err) : NULL);
    return -1;
}

asr_ext2_volume *asr_ext2_open(asr_fs_io *io) {
    asr_ext2_register_errors();
    char name[64];
    snprintf(name, sizeof name, "asr-io:%p", (void *)io);
    ext2_filsys fs = NULL;
    errcode_t err = ext2fs_open2(name, NULL, EXT2_FLAG_64BITS, 0, 0, asr_ext2_io_manager(), &fs);
    if (err) {
        fail(io, "libext2fs cannot open it", err);
        return NULL;
    }
    const char *refusal = NULL;
    // A journal still to replay holds changes the tree does not show yet.
    if (ext2fs_has_feature_journal_needs_recovery(fs->super)) refusal = "its journal needs recovery (run e2fsck)";
    else if (fs->super->s_feature_incompat & ~EXT2_LIB_FEATURE_INCOMPAT_SUPP) refusal = "it has features libext2fs does not know";
    else if ((err = ext2fs_check_desc(fs))) refusal = "its group descriptors are damaged";
    if (refusal) {
        fail(io, refusal, err);
        ext2fs_close_free(&fs);
        return NULL;
    }
    asr_ext2_volume *v = calloc(1, sizeof *v);
    if (!v) {
        ext2fs_close_free(&fs);
        fail(io, "out of memory", 0);
        return NULL;
    }
    v->fs = fs;
    v->io = io;
    return v;
}

void asr_ext2_close(asr_ext2_volume *v) {
    if (!v) return;
    ext2fs_close_free(&v->fs);
    free(v);
}

void asr_ext2_label(asr_ext2_volume *v, char *out, int capacity) {
    if (capacity <= 0) return;
    size_t n = strnlen((const char *)v->fs->super->s_volume_name, EXT2_LABEL_LEN);
    if (n >= (size_t)capacity) n = (size_t)capacity - 1;
    memcpy(out, v->fs->super->s_volume_name, n);
    out[n] = 0;
}

unsigned asr_ext2_block_size(asr_ext2_volume *v) { return v->fs->blocksize; }

unsigned long long asr_ext2_inode_count(asr_ext2_volume *v) { return v->fs->super->s_inodes_count; }

static int read_inode(asr_ext2_volume *v, unsigned ino, struct ext2_inode_large *inode) {
    if (ino < 1 || ino > v->fs->super->s_inodes_count) return fail(v->io, "inode number out of range", 0);
    memset(inode, 0, sizeof *inode);
    errcode_t err = ext2fs_read_inode_full(v->fs, ino, (struct ext2_inode *)inode, sizeof *inode);
    if (err) return fail(v->io, "libext2fs cannot read an inode", err);
    return 0;
}

// Seconds and nanoseconds of one timestamp; `extra` only when the large inode has room for it.
static void timestamp(unsigned base, int has_extra, unsigned extra, long long *sec, unsigned *nsec) {
    *sec = (long long)(int)base;
    *nsec = 0;
    if (has_extra) {
        *sec += (long long)(extra & 3) << 32;
        *nsec = extra >> 2;
        if (*nsec > 999999999) *nsec = 0;
    }
}

int asr_ext2_stat(asr_ext2_volume *v, unsigned ino, asr_ext2_inode *out) {
    struct ext2_inode_large inode;
    if (read_inode(v, ino, &inode)) return -1;
    memset(out, 0, sizeof *out);
    out->mode = inode.i_mode;
    out->uid = inode_uid(inode);
    out->gid = inode_gid(inode);
    out->links = inode.i_links_count;
    out->flags = inode.i_flags;
    out->size = EXT2_I_SIZE(&inode);
    out->blocks_512 = ext2fs_get_stat_i_blocks(v->fs, (struct ext2_inode *)&inode);
    int large = EXT2_INODE_SIZE(v->fs->super) > EXT2_GOOD_OLD_INODE_SIZE;
    unsigned extra = large ? inode.i_extra_isize : 0;
    timestamp(inode.i_ctime, extra >= 8, inode.i_ctime_extra, &out->ctime, &out->ctime_ns);
    timestamp(inode.i_mtime, extra >= 12, inode.i_mtime_extra, &out->mtime, &out->mtime_ns);
    timestamp(inode.i_atime, extra >= 16, inode.i_atime_extra, &out->atime, &out->atime_ns);
    if (LINUX_S_ISCHR(inode.i_mode) || LINUX_S_ISBLK(inode.i_mode)) {
        unsigned old = inode.i_block[0], new = inode.i_block[1];
        if (old) {
            out->rdev_major = (old >> 8) & 0xff;
            out->rdev_minor = old & 0xff;
        } else {
            out->rdev_major = (new & 0xfff00) >> 8;
            out->rdev_minor = (new & 0xff) | ((new >> 12) & 0xfff00);
        }
    }
    return 0;
}

struct list_state {
    int (*entry)(void *, const char *, int, unsigned, int);
    void *context;
    unsigned long long seen, limit;
    int stopped;
};

static int list_one(ext2_ino_t dir, int entry, struct ext2_dir_entry *dirent, int offset, int blocksize, char *buf, void *priv) {
    (void)dir; (void)offset; (void)blocksize; (void)buf;
    struct list_state *s = priv;
    if (entry == DIRENT_DOT_FILE || entry == DIRENT_DOT_DOT_FILE || dirent->inode == 0) return 0;
    if (++s->seen > s->limit) {
        s->stopped = 1;
        return DIRENT_ABORT;
    }
    int len = ext2fs_dirent_name_len(dirent);
    if (s->entry(s->context, dirent->name, len, dirent->inode, ext2fs_dirent_file_type(dirent))) {
        s->stopped = 2;
        return DIRENT_ABORT;
    }
    return 0;
}

int asr_ext2_list(asr_ext2_volume *v, unsigned dir, unsigned long long limit,
                  int (*entry)(void *context, const char *name, int length, unsigned ino, int type), void *context) {
    struct ext2_inode_large inode;
    if (read_inode(v, dir, &inode)) return -1;
    if (!LINUX_S_ISDIR(inode.i_mode)) return fail(v->io, "not a directory", 0);
    struct list_state s = {entry, context, 0, limit, 0};
    errcode_t err = ext2fs_dir_iterate2(v->fs, dir, 0, NULL, list_one, &s);
    if (s.stopped == 1) return fail(v->io, "a directory has more entries than allowed", 0);
    if (s.stopped == 2) return fail(v->io, "a directory entry was refused", 0);
    if (err) return fail(v->io, "libext2fs cannot read a directory", err);
    return 0;
}

struct run_state {
    int (*run)(void *, unsigned long long, unsigned long long, unsigned long long, int);
    void *context;
    unsigned long long logical, physical, count, last_logical;
    int pending, failed;
};

static int flush_run(struct run_state *s) {
    if (!s->pending) return 0;
    s->pending = 0;
    if (s->run(s->context, s->logical, s->physical, s->count, 0)) s->failed = 1;
    return s->failed;
}

static int block_one(ext2_filsys fs, blk64_t *blocknr, e2_blkcnt_t blockcnt, blk64_t ref_blk, int ref_offset, void *priv) {
    (void)fs; (void)ref_blk; (void)ref_offset;
    struct run_state *s = priv;
    if (blockcnt < 0) return 0;
    unsigned long long l = (unsigned long long)blockcnt;
    // Past the inode's size nothing is read: stop rather than walk a hostile indirect tree.
    if (l > s->last_logical) return BLOCK_ABORT;
    if (s->pending && l == s->logical + s->count && *blocknr == s->physical + s->count) {
        s->count++;
        return 0;
    }
    if (flush_run(s)) return BLOCK_ABORT;
    s->logical = l;
    s->physical = *blocknr;
    s->count = 1;
    s->pending = 1;
    return 0;
}

int asr_ext2_runs(asr_ext2_volume *v, unsigned ino, unsigned long long limit,
                  int (*run)(void *context, unsigned long long logical, unsigned long long physical,
                             unsigned long long count, int zero), void *context) {
    struct ext2_inode_large inode;
    if (read_inode(v, ino, &inode)) return -1;
    unsigned long long size = EXT2_I_SIZE(&inode);
    if (size == 0 || (inode.i_flags & EXT4_INLINE_DATA_FL)) return 0;
    unsigned long long last = (size - 1) / v->fs->blocksize;
    if (inode.i_flags & EXT4_EXTENTS_FL) {
        ext2_extent_handle_t handle;
        errcode_t err = ext2fs_extent_open2(v->fs, ino, (struct ext2_inode *)&inode, &handle);
        if (err) return fail(v->io, "libext2fs cannot open an extent tree", err);
        struct ext2fs_extent e;
        unsigned long long found = 0;
        err = ext2fs_extent_get(handle, EXT2_EXTENT_ROOT, &e);
        while (!err) {
            if ((e.e_flags & EXT2_EXTENT_FLAGS_LEAF) && e.e_len > 0) {
                if (++found > limit) {
                    ext2fs_extent_free(handle);
                    return fail(v->io, "a file has more extents than allowed", 0);
                }
                if (e.e_lblk > last) break;
                if (run(context, e.e_lblk, e.e_pblk, e.e_len, (e.e_flags & EXT2_EXTENT_FLAGS_UNINIT) != 0)) {
                    ext2fs_extent_free(handle);
                    return fail(v->io, "an extent was refused", 0);
                }
            }
            err = ext2fs_extent_get(handle, EXT2_EXTENT_NEXT_LEAF, &e);
        }
        ext2fs_extent_free(handle);
        if (err && err != EXT2_ET_EXTENT_NO_NEXT && err != EXT2_ET_NO_CURRENT_NODE)
            return fail(v->io, "libext2fs cannot walk an extent tree", err);
        return 0;
    }
    struct run_state s = {run, context, 0, 0, 0, last, 0, 0};
    errcode_t err = ext2fs_block_iterate3(v->fs, ino, BLOCK_FLAG_READ_ONLY | BLOCK_FLAG_DATA_ONLY, NULL, block_one, &s);
    if (!s.failed) flush_run(&s);
    if (s.failed) return fail(v->io, "a block run was refused", 0);
    if (err) return fail(v->io, "libext2fs cannot walk a block map", err);
    return 0;
}

long long asr_ext2_inline_data(asr_ext2_volume *v, unsigned ino, void *buffer, unsigned long long capacity) {
    struct ext2_inode_large inode;
    if (read_inode(v, ino, &inode)) return -1;
    if (!(inode.i_flags & EXT4_INLINE_DATA_FL)) return -2;
    size_t size = 0;
    errcode_t err = ext2fs_inline_data_size(v->fs, ino, &size);
    if (err) return fail(v->io, "libext2fs cannot read inline data", err);
    if (!buffer) return (long long)size;
    // Inline data is at most an inode's worth plus an xattr value: far below a page.
    if (size > capacity) return fail(v->io, "inline data larger than allowed", 0);
    // libext2fs copies the whole inline area, which may be larger than i_size says.
    char *tmp = malloc(size + EXT4_MIN_INLINE_DATA_SIZE + 1);
    if (!tmp) return fail(v->io, "out of memory", 0);
    size_t got = size;
    err = ext2fs_inline_data_get(v->fs, ino, (struct ext2_inode *)&inode, tmp, &got);
    if (err) {
        free(tmp);
        return fail(v->io, "libext2fs cannot read inline data", err);
    }
    if (got > size) got = size;
    memcpy(buffer, tmp, got);
    free(tmp);
    return (long long)got;
}

long long asr_ext2_fast_symlink(asr_ext2_volume *v, unsigned ino, char *buffer, unsigned long long capacity) {
    struct ext2_inode_large inode;
    if (read_inode(v, ino, &inode)) return -1;
    if (!LINUX_S_ISLNK(inode.i_mode)) return fail(v->io, "not a symbolic link", 0);
    if (!ext2fs_is_fast_symlink((struct ext2_inode *)&inode)) return -2;
    unsigned long long size = EXT2_I_SIZE(&inode);
    if (size > sizeof inode.i_block || size > capacity) return fail(v->io, "a fast symbolic link longer than its inode", 0);
    memcpy(buffer, inode.i_block, size);
    return (long long)size;
}

struct xattr_state {
    int (*attr)(void *, const char *, const void *, unsigned long long);
    void *context;
    int refused;
};

static int xattr_one(char *name, char *value, size_t value_len, void *data) {
    struct xattr_state *s = data;
    if (s->attr(s->context, name, value, value_len)) {
        s->refused = 1;
        return XATTR_ABORT;
    }
    return 0;
}

int asr_ext2_xattrs(asr_ext2_volume *v, unsigned ino,
                    int (*attr)(void *context, const char *name, const void *value, unsigned long long length), void *context) {
    if (ino < 1 || ino > v->fs->super->s_inodes_count) return fail(v->io, "inode number out of range", 0);
    struct ext2_xattr_handle *h = NULL;
    errcode_t err = ext2fs_xattrs_open(v->fs, ino, &h);
    if (err) return fail(v->io, "libext2fs cannot open extended attributes", err);
    err = ext2fs_xattrs_read(h);
    if (err) {
        ext2fs_xattrs_close(&h);
        return fail(v->io, "libext2fs cannot read extended attributes", err);
    }
    struct xattr_state s = {attr, context, 0};
    err = ext2fs_xattrs_iterate(h, xattr_one, &s);
    ext2fs_xattrs_close(&h);
    if (s.refused) return fail(v->io, "an extended attribute was refused", 0);
    if (err) return fail(v->io, "libext2fs cannot list extended attributes", err);
    return 0;
}
