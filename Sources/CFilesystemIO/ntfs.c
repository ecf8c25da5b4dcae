// libntfs-3g's device operations over the read callback (see CFilesystemIO.h), and the calls
// that turn a mounted NTFS volume into allocated byte runs. In C because libntfs-3g takes a
// table of C function pointers (struct ntfs_device_operations), keeps device state in bit
// macros, and logs through a varargs handler. Every write entry point fails.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "../CNtfs3g/shim.h"
#include "common.h"

struct ntfs_source {
    asr_fs_io *io;
    s64 position;
};

static int ntfs_io_open(struct ntfs_device *dev, int flags) {
    if (NDevOpen(dev)) {
        errno = EBUSY;
        return -1;
    }
    if ((flags & O_ACCMODE) != O_RDONLY) {
        errno = EROFS;
        return -1;
    }
    NDevSetReadOnly(dev);
    NDevSetOpen(dev);
    return 0;
}

static int ntfs_io_close(struct ntfs_device *dev) {
    NDevClearOpen(dev);
    return 0;
}

static s64 ntfs_io_seek(struct ntfs_device *dev, s64 offset, int whence) {
    struct ntfs_source *s = dev->d_private;
    s64 base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? s->position : whence == SEEK_END ? (s64)s->io->length : -1;
    s64 to;
    if (base < 0 || __builtin_add_overflow(base, offset, &to) || to < 0) {
        errno = EINVAL;
        return -1;
    }
    s->position = to;
    return to;
}

// Like a file's pread: short at the end of the partition, 0 past it.
static s64 ntfs_io_pread(struct ntfs_device *dev, void *buffer, s64 count, s64 offset) {
    struct ntfs_source *s = dev->d_private;
    if (count < 0 || offset < 0) {
        errno = EINVAL;
        return -1;
    }
    unsigned long long length = s->io->length;
    if ((unsigned long long)offset >= length) return 0;
    if ((unsigned long long)count > length - (unsigned long long)offset) count = (s64)(length - (unsigned long long)offset);
    if (read_partition(s->io, buffer, (unsigned long long)offset, (unsigned long long)count) != 0) {
        errno = EIO;
        return -1;
    }
    return count;
}

static s64 ntfs_io_read(struct ntfs_device *dev, void *buffer, s64 count) {
    struct ntfs_source *s = dev->d_private;
    s64 n = ntfs_io_pread(dev, buffer, count, s->position);
    if (n > 0) s->position += n;
    return n;
}

static s64 ntfs_io_write(struct ntfs_device *dev, const void *buffer, s64 count) {
    (void)dev; (void)buffer; (void)count;
    errno = EROFS;
    return -1;
}

static s64 ntfs_io_pwrite(struct ntfs_device *dev, const void *buffer, s64 count, s64 offset) {
    (void)dev; (void)buffer; (void)count; (void)offset;
    errno = EROFS;
    return -1;
}

static int ntfs_io_sync(struct ntfs_device *dev) {
    (void)dev;
    return 0;
}

static int ntfs_io_stat(struct ntfs_device *dev, struct stat *buf) {
    struct ntfs_source *s = dev->d_private;
    memset(buf, 0, sizeof *buf);
    buf->st_mode = S_IFREG | 0444;
    buf->st_size = (off_t)s->io->length;
    return 0;
}

static int ntfs_io_ioctl(struct ntfs_device *dev, unsigned long request, void *argp) {
    (void)dev; (void)request; (void)argp;
    errno = ENOTTY;
    return -1;
}

static struct ntfs_device_operations asr_ntfs_operations = {
    .open = ntfs_io_open,
    .close = ntfs_io_close,
    .seek = ntfs_io_seek,
    .read = ntfs_io_read,
    .write = ntfs_io_write,
    .pread = ntfs_io_pread,
    .pwrite = ntfs_io_pwrite,
    .sync = ntfs_io_sync,
    .stat = ntfs_io_stat,
    .ioctl = ntfs_io_ioctl,
};

// libntfs-3g logs to stderr by default. Its last error on this thread becomes our reason
// instead, and nothing is printed.
static _Thread_local char ntfs_last_error[200];

static int ntfs_log_capture(const char *function, const char *file, int line, u32 level, void *data,
                            const char *format, va_list args) {
    (void)function; (void)file; (void)line; (void)data;
    int saved = errno;
    if (level & (NTFS_LOG_LEVEL_ERROR | NTFS_LOG_LEVEL_PERROR | NTFS_LOG_LEVEL_CRITICAL)) {
        vsnprintf(ntfs_last_error, sizeof ntfs_last_error, format, args);
        size_t n = strlen(ntfs_last_error);
        while (n > 0 && (ntfs_last_error[n - 1] == '\n' || ntfs_last_error[n - 1] == '.')) ntfs_last_error[--n] = 0;
        if (level & NTFS_LOG_LEVEL_PERROR)
            snprintf(ntfs_last_error + n, sizeof ntfs_last_error - n, " (%s)", strerror(saved));
    }
    errno = saved;
    return 0;
}

static pthread_once_t ntfs_log_once = PTHREAD_ONCE_INIT;
static void ntfs_install_log(void) { ntfs_log_set_handler(ntfs_log_capture); }

static const char *ntfs_reason(int err) { return ntfs_last_error[0] ? ntfs_last_error : strerror(err); }

/// Windows replays $LogFile at its next mount, and resumes a hibernated system from memory:
/// either may allocate clusters $Bitmap does not show.
static const char *ntfs_unsafe_state(ntfs_volume *vol) {
    if (vol->flags & VOLUME_IS_DIRTY) return "the volume is marked dirty (run chkdsk)";
    if (ntfs_volume_check_hiberfile(vol, 0) < 0)
        return errno == EPERM ? "Windows is hibernated on it" : "libntfs-3g cannot read hiberfil.sys";
    ntfs_inode *ni = ntfs_inode_open(vol, FILE_LogFile);
    if (!ni) return "libntfs-3g cannot open $LogFile";
    ntfs_attr *na = ntfs_attr_open(ni, AT_DATA, AT_UNNAMED, 0);
    if (!na) {
        ntfs_inode_close(ni);
        return "libntfs-3g cannot open $LogFile";
    }
    RESTART_PAGE_HEADER *rp = NULL;
    const char *why = NULL;
    if (!ntfs_check_logfile(na, &rp) || !ntfs_is_logfile_clean(na, rp))
        why = "it was not closed cleanly ($LogFile holds changes to replay)";
    else if (rp && rp->major_ver == const_cpu_to_le16(2) && rp->minor_ver == const_cpu_to_le16(0))
        why = "Windows kept its metadata cached (fast startup)";
    free(rp);
    ntfs_attr_close(na);
    ntfs_inode_close(ni);
    return why;
}

static int ntfs_map_bitmap(asr_fs_io *io, ntfs_volume *vol) {
    const char *unsafe = ntfs_unsafe_state(vol);
    if (unsafe) {
        set_error(io, unsafe, NULL);
        return -1;
    }
    unsigned long long clusters = (unsigned long long)vol->nr_clusters, cluster_size = vol->cluster_size;
    if (vol->nr_clusters <= 0 || cluster_size == 0 || clusters > io->length / cluster_size) {
        set_error(io, "its cluster count does not fit its partition", NULL);
        return -1;
    }
    ntfs_attr *na = vol->lcnbmp_na;
    unsigned long long bytes = (clusters + 7) / 8;
    if (!na || na->data_size < 0 || (unsigned long long)na->data_size < bytes) {
        set_error(io, "$Bitmap is shorter than the volume's cluster count", NULL);
        return -1;
    }
    // The boot sector; the backup boot sector and any part cluster are in the tail below.
    io->allocated(io->context, 0, vol->sector_size ? vol->sector_size : 512);
    unsigned char buffer[65536];
    unsigned long long run_start = 0, lcn = 0;
    int in_run = 0;
    for (unsigned long long at = 0; at < bytes; at += sizeof buffer) {
        s64 want = (s64)(bytes - at < sizeof buffer ? bytes - at : sizeof buffer);
        if (ntfs_attr_pread(na, (s64)at, want, buffer) != want) {
            set_error(io, "libntfs-3g cannot read $Bitmap", ntfs_reason(errno));
            return -1;
        }
        for (s64 i = 0; i < want; i++) {
            for (int bit = 0; bit < 8 && lcn < clusters; bit++, lcn++) {
                int used = (buffer[i] >> bit) & 1;
                if (used && !in_run) {
                    run_start = lcn;
                    in_run = 1;
                } else if (!used && in_run) {
                    io->allocated(io->context, run_start * cluster_size, (lcn - run_start) * cluster_size);
                    in_run = 0;
                }
            }
        }
    }
    if (in_run) io->allocated(io->context, run_start * cluster_size, (clusters - run_start) * cluster_size);
    io->allocated(io->context, clusters * cluster_size, io->length - clusters * cluster_size);
    return 0;
}

int asr_ntfs_map(asr_fs_io *io) {
    pthread_once(&ntfs_log_once, ntfs_install_log);
    ntfs_last_error[0] = 0;
    struct ntfs_source source = {io, 0};
    struct ntfs_device *dev = ntfs_device_alloc("(partition)", 0, &asr_ntfs_operations, &source);
    if (!dev) {
        set_error(io, "libntfs-3g cannot allocate a device", strerror(errno));
        return -1;
    }
    ntfs_volume *vol = ntfs_device_mount(dev, NTFS_MNT_RDONLY);
    if (!vol) {
        int err = errno;
        set_error(io, "libntfs-3g cannot mount it", ntfs_reason(err));
        ntfs_device_free(dev);
        return -1;
    }
    int result = ntfs_map_bitmap(io, vol);
    ntfs_umount(vol, FALSE);  // frees dev too
    return result;
}
