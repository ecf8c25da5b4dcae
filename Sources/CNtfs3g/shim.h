// libntfs-3g: mounts NTFS read-only and reads its cluster bitmap ($Bitmap). Only
// CFilesystemIO includes it. Its headers expect config.h's HAVE_* macros; without them they
// leave out the system headers they rely on, so those come first.
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/param.h>
#include <ntfs-3g/types.h>
#include <ntfs-3g/volume.h>
#include <ntfs-3g/device.h>
#include <ntfs-3g/attrib.h>
#include <ntfs-3g/inode.h>
#include <ntfs-3g/logfile.h>
#include <ntfs-3g/logging.h>
