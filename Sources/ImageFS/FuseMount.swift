import SystemSupport
import CFuse3
import Filesystems
import Glibc
import Imaging
import Synchronization
import SystemPackage

/// Serves a `FileSystem` at a mount point through libfuse3's low-level API, on several
/// threads. libfuse's signal handlers end the loop on SIGINT, SIGTERM and SIGHUP, after
/// which the mount point is released.
public final class FuseMount: @unchecked Sendable {  // owns raw pointers: the fuse session and its argv
    let fileSystem: any FileSystem
    public let mountPoint: String
    /// Set once in init; nil only if libfuse refused the options.
    private var session: OpaquePointer?
    private let argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    private let argc: Int
    /// Read-ahead the kernel does on this mount, when we may set it (root): a sequential
    /// reader then sends 1 MiB requests instead of 128 KiB ones.
    public let readAheadKiB: Int
    /// Kernel cache lifetime of attributes and names that cannot change.
    static let stableTimeout = 86400.0

    /// Whose the mount's files are, and which permission bits they may have at most.
    public let owner: Owner

    /// The owner and permissions of what a mount shows: those of its source file (an image, a
    /// device, a backing file), so that `allow_other` opens nothing the file itself keeps
    /// closed; the mounting user's, with any bits, when there is no local file.
    public struct Owner: Sendable {
        var uid = getuid(), gid = getgid()
        /// Read and write bits of files; directories get execute where they get read.
        var mode: mode_t = 0o666

        public init() {}

        public init(of path: String) {
            var st = stat()
            guard stat(path, &st) == 0 else { return }
            uid = st.st_uid
            gid = st.st_gid
            mode = st.st_mode & 0o666
        }

        func permissions(_ a: Attributes) -> mode_t {
            a.isDirectory ? a.permissions & (mode | (mode & 0o444) >> 2) : a.permissions & mode
        }
    }

    /// Creates the session; `options` are FUSE `-o` options (`allow_other`, `fsname=...`).
    public init(fileSystem: any FileSystem, mountPoint: String, options: [String], owner: Owner = Owner(),
                readAheadKiB: Int = 1024) throws(ImageFSError) {
        self.fileSystem = fileSystem
        self.owner = owner
        self.mountPoint = mountPoint
        self.readAheadKiB = readAheadKiB
        FuseLog.install()
        let words = ["asr"] + (options.isEmpty ? [] : ["-o", options.joined(separator: ",")])
        argc = words.count
        argv = .allocate(capacity: words.count + 1)
        for (i, w) in words.enumerated() { argv[i] = strdup(w) }
        argv[words.count] = nil
        var args = fuse_args(argc: Int32(argc), argv: argv, allocated: 0)
        var ops = FuseMount.operations()
        let me = Unmanaged.passUnretained(self).toOpaque()
        FuseLog.reset()
        guard let session = fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, me) else {
            throw .badFuseOptions(options: options, log: FuseLog.last)
        }
        self.session = session
    }

    deinit {
        if let session { fuse_session_destroy(session) }
        for i in 0..<argc { free(argv[i]) }
        argv.deallocate()
    }

    /// Mounts, calls `onMounted`, and serves requests until unmounted or signalled.
    public func run(threads: Int = 16, onMounted: () -> Void = {}) throws(ImageFSError) {
        // libfuse installs its handlers only over the default action.
        for stop in [SIGINT, SIGTERM, SIGHUP] { signal(stop, SIG_DFL) }
        guard fuse_set_signal_handlers(session) == 0 else { throw .signalHandlers }
        defer { fuse_remove_signal_handlers(session) }
        FuseLog.reset()
        guard fuse_session_mount(session, mountPoint) == 0 else {
            throw .mount(point: mountPoint, log: FuseLog.last)
        }
        setReadAhead()
        onMounted()
        let config = fuse_loop_cfg_create()
        fuse_loop_cfg_set_max_threads(config, UInt32(threads))
        fuse_loop_cfg_set_idle_threads(config, UInt32(max(2, threads / 2)))
        let status = asr_fuse_session_loop_mt(session, config)
        fuse_loop_cfg_destroy(config)
        fileSystem.unmounting()
        fuse_session_unmount(session)
        // Negative is an error; positive is the signal that ended the loop, which is normal.
        if status < 0 { throw .session(point: mountPoint, Errno(rawValue: -status)) }
    }

    /// The mount's backing device number comes from mountinfo: a stat of the mount point
    /// would wait for this very process to answer it.
    private func setReadAhead() {
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath(mountPoint, &resolved) != nil else { return }
        let path = String(decoding: resolved.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let entry = (try? MountEntry.all())?.last(where: { $0.mountPoint == path }) else { return }
        let control = "/sys/class/bdi/\(entry.deviceNumber)/read_ahead_kb"
        guard let file = fopen(control, "w") else { return }
        fputs("\(readAheadKiB)\n", file)
        fclose(file)
    }

    // MARK: libfuse callbacks

    private static func mount(of req: fuse_req_t?) -> FuseMount {
        Unmanaged<FuseMount>.fromOpaque(fuse_req_userdata(req)!).takeUnretainedValue()
    }

    private static func fill(_ a: Attributes, _ owner: Owner) -> stat {
        if let node = a.node { return fill(a, node) }
        var st = stat()
        st.st_ino = __ino_t(a.inode)
        st.st_mode = (a.isDirectory ? S_IFDIR : S_IFREG) | owner.permissions(a)
        st.st_nlink = UInt(a.linkCount)
        st.st_size = off_t(clamping: a.size)
        st.st_blksize = 4096
        st.st_blocks = blkcnt_t(clamping: (a.allocatedBytes ?? a.size + 511) / 512)
        st.st_uid = owner.uid
        st.st_gid = owner.gid
        st.st_mtim = a.modified
        st.st_ctim = a.modified
        st.st_atim = a.modified
        return st
    }

    static func fileType(_ kind: NodeKind) -> mode_t {
        switch kind {
        case .file: S_IFREG
        case .directory: S_IFDIR
        case .symbolicLink: S_IFLNK
        case .fifo: S_IFIFO
        case .socket: S_IFSOCK
        case .characterDevice: S_IFCHR
        case .blockDevice: S_IFBLK
        }
    }

    /// A node of a filesystem in the image, as that filesystem has it.
    private static func fill(_ a: Attributes, _ node: NodeAttributes) -> stat {
        var st = stat()
        st.st_ino = __ino_t(a.inode)
        st.st_mode = fileType(node.kind) | mode_t(node.permissions & 0o7777)
        st.st_nlink = UInt(node.linkCount)
        st.st_size = off_t(clamping: node.size)
        st.st_blksize = 4096
        st.st_blocks = blkcnt_t(clamping: (node.allocatedBytes ?? node.size + 511) / 512)
        st.st_uid = node.uid
        st.st_gid = node.gid
        // glibc's makedev: 12 bits of major and 20 of minor, split around each other.
        let major = UInt64(node.deviceMajor), minor = UInt64(node.deviceMinor)
        st.st_rdev = dev_t((major & 0xfff) << 8 | (major & ~0xfff) << 32 | (minor & 0xff) | (minor & ~0xff) << 12)
        func time(_ t: Timestamp) -> timespec { timespec(tv_sec: Int(clamping: t.seconds), tv_nsec: Int(t.nanoseconds)) }
        st.st_atim = time(node.accessed)
        st.st_mtim = time(node.modified)
        st.st_ctim = time(node.changed)
        return st
    }

    private static func timeout(_ a: Attributes) -> Double { a.isLive ? 0 : stableTimeout }

    private static func replyEntry(_ req: fuse_req_t?, _ a: Attributes) {
        var e = fuse_entry_param()
        e.ino = a.inode
        e.generation = 1
        e.attr = fill(a, mount(of: req).owner)
        e.attr_timeout = timeout(a)
        e.entry_timeout = stableTimeout
        fuse_reply_entry(req, &e)
    }

    private static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { _, conn in
            guard let conn else { return }
            // Large requests: one FUSE round trip per MiB instead of per 128 KiB.
            conn.pointee.max_readahead = 1 << 20
            conn.pointee.max_write = 1 << 20
            if conn.pointee.capable & UInt32(FUSE_CAP_ASYNC_READ) != 0 { conn.pointee.want |= UInt32(FUSE_CAP_ASYNC_READ) }
            if conn.pointee.capable & UInt32(FUSE_CAP_PARALLEL_DIROPS) != 0 { conn.pointee.want |= UInt32(FUSE_CAP_PARALLEL_DIROPS) }
        }
        ops.lookup = { req, parent, name in
            do { FuseMount.replyEntry(req, try FuseMount.mount(of: req).fileSystem.lookup(parent: parent, name: String(decoding: UnsafeRawBufferPointer(start: name!, count: strlen(name!)), as: UTF8.self))) } catch { FuseMount.reply(req, error) }
        }
        ops.getattr = { req, ino, _ in
            do {
                let mount = FuseMount.mount(of: req)
                let a = try mount.fileSystem.attributes(of: ino)
                var st = FuseMount.fill(a, mount.owner)
                fuse_reply_attr(req, &st, FuseMount.timeout(a))
            } catch { FuseMount.reply(req, error) }
        }
        ops.setattr = { req, ino, attr, toSet, _ in
            let mount = FuseMount.mount(of: req), fs = mount.fileSystem
            do {
                guard toSet & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_CTIME) == 0,
                      toSet & FUSE_SET_ATTR_SIZE != 0 else { throw FSError.readOnly }
                try fs.truncate(ino, to: UInt64(clamping: attr!.pointee.st_size))
                var st = FuseMount.fill(try fs.attributes(of: ino), mount.owner)
                fuse_reply_attr(req, &st, 0)
            } catch { FuseMount.reply(req, error) }
        }
        ops.readdir = { req, ino, size, offset, _ in
            do {
                let fs = FuseMount.mount(of: req).fileSystem
                let listing = [DirectoryEntry(name: ".", inode: ino, isDirectory: true),
                               DirectoryEntry(name: "..", inode: 1, isDirectory: true)] + (try fs.entries(of: ino))
                let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: size)
                defer { buffer.deallocate() }
                var used = 0
                var index = Int(offset)
                while index < listing.count {
                    var st = stat()
                    st.st_ino = __ino_t(listing[index].inode)
                    st.st_mode = listing[index].type != 0 ? listing[index].type : listing[index].isDirectory ? S_IFDIR : S_IFREG
                    let needed = fuse_add_direntry(req, buffer + used, size - used, listing[index].name, &st, off_t(index + 1))
                    if needed > size - used { break }
                    used += needed
                    index += 1
                }
                fuse_reply_buf(req, buffer, used)
            } catch { FuseMount.reply(req, error) }
        }
        ops.open = { req, ino, fi in
            do {
                let (handle, mode) = try FuseMount.mount(of: req).fileSystem.open(ino, flags: fi!.pointee.flags)
                fi!.pointee.fh = handle
                asr_fuse_set_open_flags(fi, mode.keepCache ? 1 : 0, mode.directIO ? 1 : 0)
                fuse_reply_open(req, fi)
            } catch { FuseMount.reply(req, error) }
        }
        ops.read = { req, ino, size, offset, fi in
            do {
                try FuseMount.mount(of: req).fileSystem.read(ino, handle: fi!.pointee.fh, at: UInt64(offset), count: size) { pieces in
                    var vectors = pieces.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
                    fuse_reply_iov(req, &vectors, Int32(vectors.count))
                }
            } catch { FuseMount.reply(req, error) }
        }
        ops.write = { req, ino, bytes, size, offset, fi in
            do {
                let n = try FuseMount.mount(of: req).fileSystem.write(ino, handle: fi!.pointee.fh, at: UInt64(offset),
                                                           from: UnsafeRawBufferPointer(start: bytes, count: size))
                fuse_reply_write(req, n)
            } catch { FuseMount.reply(req, error) }
        }
        ops.fsync = { req, ino, _, fi in
            do {
                try FuseMount.mount(of: req).fileSystem.sync(ino, handle: fi!.pointee.fh)
                fuse_reply_err(req, 0)
            } catch { FuseMount.reply(req, error) }
        }
        ops.fallocate = { req, ino, mode, offset, length, _ in
            do {
                try FuseMount.mount(of: req).fileSystem.allocate(ino, mode: mode, at: UInt64(offset), length: UInt64(length))
                fuse_reply_err(req, 0)
            } catch { FuseMount.reply(req, error) }
        }
        ops.readlink = { req, ino in
            do {
                let target = try FuseMount.mount(of: req).fileSystem.readLink(ino)
                guard !target.contains(0) else { throw FSError.ioError }
                (target + [0]).withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { _ = fuse_reply_readlink(req, $0.baseAddress) } }
            } catch { FuseMount.reply(req, error) }
        }
        ops.listxattr = { req, ino, size in
            do {
                let names = try FuseMount.mount(of: req).fileSystem.extendedAttributeNames(of: ino)
                FuseMount.replyXattr(req, names.flatMap { Array($0.utf8) + [0] }, size: size)
            } catch { FuseMount.reply(req, error) }
        }
        ops.getxattr = { req, ino, name, size in
            do {
                let value = try FuseMount.mount(of: req).fileSystem.extendedAttribute(String(cString: name!), of: ino)
                FuseMount.replyXattr(req, value, size: size)
            } catch { FuseMount.reply(req, error) }
        }
        ops.setxattr = { req, _, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.removexattr = { req, _, _ in fuse_reply_err(req, EROFS) }
        ops.flush = { req, _, _ in fuse_reply_err(req, 0) }
        ops.release = { req, ino, fi in
            FuseMount.mount(of: req).fileSystem.release(ino, handle: fi!.pointee.fh)
            fuse_reply_err(req, 0)
        }
        ops.statfs = { req, _ in
            let (total, free) = FuseMount.mount(of: req).fileSystem.capacity()
            var s = statvfs()
            s.f_bsize = 4096
            s.f_frsize = 4096
            s.f_blocks = fsblkcnt_t(total / 4096)
            s.f_bfree = fsblkcnt_t(free / 4096)
            s.f_bavail = fsblkcnt_t(free / 4096)
            s.f_namemax = 255
            fuse_reply_statfs(req, &s)
        }
        // The tree itself is fixed: no names are created, removed or renamed.
        ops.mknod = { req, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.mkdir = { req, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.unlink = { req, _, _ in fuse_reply_err(req, EROFS) }
        ops.rmdir = { req, _, _ in fuse_reply_err(req, EROFS) }
        ops.symlink = { req, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.rename = { req, _, _, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.link = { req, _, _, _ in fuse_reply_err(req, EROFS) }
        ops.create = { req, _, _, _, _ in fuse_reply_err(req, EROFS) }
        return ops
    }
}

extension FuseMount {
    /// getxattr/listxattr: the size when asked for it (size 0), ERANGE when it does not fit.
    private static func replyXattr(_ req: fuse_req_t?, _ bytes: [UInt8], size: Int) {
        if size == 0 {
            fuse_reply_xattr(req, bytes.count)
        } else if bytes.count > size {
            fuse_reply_err(req, ERANGE)
        } else {
            bytes.withUnsafeBytes { _ = fuse_reply_buf(req, $0.baseAddress?.assumingMemoryBound(to: CChar.self), $0.count) }
        }
    }

    private static func reply(_ req: fuse_req_t?, _ error: any Error) {
        fuse_reply_err(req, (error as? FSError)?.errno ?? EIO)
    }
}

/// libfuse reports errors through its log; keep the last line for our own one-line error.
enum FuseLog {
    private static let lastLine = Locked<String?>(nil)
    private static let installed = Locked(false)

    static func install() {
        installed.withLock { done in
            guard !done else { return }
            done = true
            fuse_set_log_func { _, format, args in
                var text = [CChar](repeating: 0, count: 1024)
                guard let args else { return }
                _ = vsnprintf(&text, text.count, format, args)
                let line = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self).trimmingTrailingNewlines()
                if !line.isEmpty { FuseLog.lastLine.withLock { $0 = line } }
            }
        }
    }

    static func reset() { lastLine.withLock { $0 = nil } }
    static var last: String? { lastLine.withLock { $0 } }
}

extension String {
    func trimmingTrailingNewlines() -> String {
        var s = Substring(self)
        while s.last == "\n" || s.last == "\r" { s = s.dropLast() }
        return String(s)
    }
}
