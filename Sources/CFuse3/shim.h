// libfuse3's low-level API at version 3.12. At 3.1 fuse_session_loop_mt is a macro
// Swift cannot import; at 3.12 it is still a macro over a versioned symbol, so wrap it.
#define FUSE_USE_VERSION 312
#include <fuse3/fuse.h>
#include <fuse3/fuse_lowlevel.h>

static inline int asr_fuse_session_loop_mt(struct fuse_session *se, struct fuse_loop_config *config) {
    return fuse_session_loop_mt(se, config);
}

// fuse_file_info keeps its flags in bitfields; these setters keep Swift off them.
static inline void asr_fuse_set_open_flags(struct fuse_file_info *fi, int keep_cache, int direct_io) {
    fi->keep_cache = keep_cache;
    fi->direct_io = direct_io;
}
