// libext2fs (e2fsprogs): opens ext2/3/4 and reads their block bitmaps. Only CFilesystemIO
// includes it; Swift reaches it through that target's small header.
#include <ext2fs/ext2fs.h>
