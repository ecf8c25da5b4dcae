import SystemSupport
import Foundation
import SystemPackage
import UDIF

/// The disk a restore writes: a block device or a regular file (created or replaced). It
/// refuses what would be unsafe before a byte is written: a mounted or busy device, the
/// source itself, a target too small, a symbolic link to anything but a block device.
/// What is opened for writing is checked, on the descriptor, to be what was validated.
public struct RestoreTarget: Sendable {
    public let path: String
    public let isBlockDevice: Bool
    /// Bytes the target holds (devices) or 0 (files grow to the disk's size).
    public let capacity: UInt64
    /// Keep what a file target holds instead of emptying it: the image has free space
    /// (ignore runs) that the restore leaves as it was. Zero runs are then zeroed explicitly.
    public var keepsContents = false
    /// What validation found, which the opened descriptor must match.
    private let validated: Validated

    private enum Validated: Sendable {
        /// Nothing there: it is created, and must not appear meanwhile.
        case newFile
        case file(device: UInt64, inode: UInt64)
        /// A device by its own name (a link such as /dev/disk/by-id/... resolved) and number.
        case device(path: String, number: UInt64)
    }

    private init(path: String, isBlockDevice: Bool, capacity: UInt64, validated: Validated) {
        self.path = path
        self.isBlockDevice = isBlockDevice
        self.capacity = capacity
        self.validated = validated
    }

    /// A target not looked at (for the size rules alone): it opens only as a new file, or
    /// as a device numbered 0, which none is.
    package init(path: String, isBlockDevice: Bool, capacity: UInt64) {
        self.init(path: path, isBlockDevice: isBlockDevice, capacity: capacity,
                  validated: isBlockDevice ? .device(path: path, number: 0) : .newFile)
    }

    public static func validate(_ path: String, source: ImageSource?) throws -> RestoreTarget {
        var st = stat()
        guard lstat(path, &st) == 0 else {
            let parent = (path as NSString).deletingLastPathComponent
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: parent.isEmpty ? "." : parent, isDirectory: &isDir), isDir.boolValue else {
                throw ImagingError.unusableTarget(path: path, .folderMissing)
            }
            return RestoreTarget(path: path, isBlockDevice: false, capacity: 0, validated: .newFile)
        }
        var device = path
        if st.st_mode & S_IFMT == S_IFLNK {
            // Followed to a block device only, which is then opened by its own name. A link
            // to a file (or to nothing yet) would let whoever can change it choose the file.
            guard let resolved = realpath(path, nil) else { throw ImagingError.unusableTarget(path: path, .symbolicLink) }
            device = String(cString: resolved)
            free(resolved)
            guard stat(device, &st) == 0, st.st_mode & S_IFMT == S_IFBLK else { throw ImagingError.unusableTarget(path: path, .symbolicLink) }
        }
        switch st.st_mode & S_IFMT {
        case S_IFBLK:
            try checkNotInUse(path, st)
            try checkNotSource(path, device: device, st, source)
            let file = try FileIO(path: device, flags: O_RDONLY)
            return RestoreTarget(path: path, isBlockDevice: true, capacity: try blockDeviceSize(file),
                                 validated: .device(path: device, number: UInt64(st.st_rdev)))
        case S_IFREG:
            try checkNotSource(path, device: path, st, source)
            if try MountEntry.all().contains(where: { $0.device == path }) {
                throw ImagingError.unusableTarget(path: path, .mounted(device: nil, at: nil))
            }
            return RestoreTarget(path: path, isBlockDevice: false, capacity: 0,
                                 validated: .file(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
        default:
            throw ImagingError.unusableTarget(path: path, .notDiskOrFile)
        }
    }

    private static func checkNotSource(_ path: String, device: String, _ st: stat, _ source: ImageSource?) throws {
        var s = stat()
        guard let source, !source.isRemote, stat(source.path, &s) == 0 else { return }
        let same = st.st_mode & S_IFMT == S_IFBLK ? s.st_rdev == st.st_rdev && s.st_mode & S_IFMT == S_IFBLK
                                                  : s.st_dev == st.st_dev && s.st_ino == st.st_ino
        if same { throw ImagingError.unusableTarget(path: path, .isSource) }
        // A loop device whose backing file is the source is the source too.
        let name = (device as NSString).lastPathComponent
        if let backing = try? String(contentsOfFile: "/sys/block/\(name)/loop/backing_file", encoding: .utf8),
           (backing.trimmingCharacters(in: .whitespacesAndNewlines) as NSString).resolvingSymlinksInPath
            == (source.path as NSString).resolvingSymlinksInPath {
            throw ImagingError.unusableTarget(path: path, .loopOfSource)
        }
    }

    /// Mounted (itself or any partition), used as swap, or held by device-mapper/RAID.
    private static func checkNotInUse(_ path: String, _ st: stat) throws {
        let me = sysfsPath(st.st_rdev)
        func isMeOrPartition(_ number: String) -> Bool {
            guard let other = sysfsPath(number) else { return false }
            return other == me || other.hasPrefix((me ?? "\u{0}") + "/")
        }
        for mount in try MountEntry.all() where isMeOrPartition(mount.deviceNumber) {
            throw ImagingError.unusableTarget(path: path, .mounted(device: mount.device, at: mount.mountPoint))
        }
        if let swaps = try? String(contentsOfFile: "/proc/swaps", encoding: .utf8) {
            for line in swaps.split(separator: "\n").dropFirst() {
                let device = String(line.split(separator: " ").first ?? "")
                var s = stat()
                if stat(device, &s) == 0, s.st_mode & S_IFMT == S_IFBLK, isMeOrPartition(number(s.st_rdev)) {
                    throw ImagingError.unusableTarget(path: path, .swap(device))
                }
            }
        }
        if let me, let holders = try? FileManager.default.contentsOfDirectory(atPath: me + "/holders"), !holders.isEmpty {
            throw ImagingError.unusableTarget(path: path, .inUse(by: holders))
        }
    }

    private static func number(_ rdev: dev_t) -> String {
        let major = ((rdev >> 8) & 0xFFF) | ((rdev >> 32) & ~0xFFF)
        let minor = (rdev & 0xFF) | ((rdev >> 12) & ~0xFF)
        return "\(major):\(minor)"
    }

    private static func sysfsPath(_ rdev: dev_t) -> String? { sysfsPath(number(rdev)) }

    private static func sysfsPath(_ number: String) -> String? {
        let link = "/sys/dev/block/\(number)"
        guard FileManager.default.fileExists(atPath: link) else { return nil }
        return (link as NSString).resolvingSymlinksInPath
    }

    /// A device must hold the whole disk; checked before anything is written.
    public func checkFits(_ diskBytes: UInt64) throws {
        if isBlockDevice, capacity < diskBytes {
            throw ImagingError.unusableTarget(path: path, .tooSmall(capacity: capacity, needed: diskBytes))
        }
    }

    /// The write and verify half of every restore, unicast or multicast: opens the target,
    /// lets `write` fill it while a `TrailingVerifier` reads back each range `write` reports
    /// finished, then flushes the target, drops it from the page cache and checks the ranges
    /// not yet read back against what the disk now holds. Any failure from the first write on
    /// wipes the target's ends and says so.
    /// `check.mismatch(i)` locates a difference in range `i`.
    package func restore(diskBytes: UInt64, verifying check: (ranges: [ExpectedRange], mismatch: @Sendable (Int) -> Mismatch)?,
                         reporter: Reporter, write: (FileIO, TrailingVerifier?) throws -> Void) throws {
        let file = try open(diskBytes: diskBytes)
        let trailing = check.map { TrailingVerifier(file: file, ranges: $0.ranges, holesAreZeros: !isBlockDevice) }
        let locate = check?.mismatch
        @Sendable func afterWriting(_ range: Int) -> Mismatch {
            var mismatch = locate!(range)
            mismatch.afterWriting = true
            return mismatch
        }
        do {
            do {
                try write(file, trailing)
                try file.sync()
                let left = try trailing?.stop()
                _ = posix_fadvise(file.fd, 0, 0, POSIX_FADV_DONTNEED)  // verify what the disk holds, not the cache
                if let check, let left {
                    reporter.begin("\tVerifying  ", key: "verify")
                    defer { reporter.abandon() }
                    var verifier = RangeVerifier(reporter: reporter)
                    verifier.holes = isBlockDevice ? nil : file
                    try verifier.verify(RawSource(file: file, byteCount: diskBytes), left.map { check.ranges[$0] }) {
                        afterWriting(left[$0])
                    }
                    reporter.end()
                }
            } catch let bad as TrailingVerifier.RangeMismatch {
                throw ImagingError.mismatch(afterWriting(bad.range))
            }
        } catch {
            _ = try? trailing?.stop()
            // Bytes that failed the read-back (a source checked only afterwards, by a block
            // map's ranges) do not stay on the target either.
            if case ImagingError.mismatch(let m) = error, m.afterWriting {
                try? file.writeZeros(at: m.firstByte, count: m.lastByte - m.firstByte + 1)
            }
            wipe(file, diskBytes: diskBytes)
            throw ImagingError.targetErased(path: path, cause: error)
        }
    }

    /// Opens for writing. A file starts empty and sparse at the disk's size; a device is
    /// opened exclusively, so the kernel refuses if anything mounts it meanwhile.
    func open(diskBytes: UInt64) throws -> FileIO {
        try checkFits(diskBytes)
        let file = try openValidated()
        if isBlockDevice { return file }
        let size = try file.size()
        if keepsContents {
            // A new file, or the part past its old end, is a hole: free space reads as zeros there.
            // A larger file that cannot shrink (a writable `asr mount` disk) is used like a device.
            if size != diskBytes {
                do { try file.truncate(to: diskBytes) } catch {
                    guard size > diskBytes else { throw ImagingError.unusableTarget(path: path, .cannotResize(to: diskBytes, "\(error)")) }
                }
            }
            return file
        }
        // Emptied in place when it has the disk's size already: a file that cannot change
        // size (a writable `asr mount` disk) is then restored like a device.
        if size == diskBytes, file.punchHole(at: 0, length: diskBytes) { return file }
        do {
            try file.truncate(to: 0)
            try file.truncate(to: diskBytes)
        } catch {
            guard size >= diskBytes, file.punchHole(at: 0, length: diskBytes) else {
                throw ImagingError.unusableTarget(path: path, .cannotResize(to: diskBytes, "\(error)"))
            }
        }
        return file
    }

    /// Opens what `validate` saw and nothing else: a file without following a link (and,
    /// when there was none, creating it anew), then checks on the descriptor that it is the
    /// file or device validated, so nothing swapped in between the check and the open is written.
    private func openValidated() throws -> FileIO {
        let (name, flags): (String, Int32) = switch validated {
        case .newFile: (path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW)
        case .file: (path, O_RDWR | O_NOFOLLOW)
        case .device(let device, _): (device, O_RDWR | O_EXCL | O_NOFOLLOW)
        }
        let file: FileIO
        do { file = try FileIO(path: name, flags: flags) } catch {
            // A link now where there was none, a file where there was nothing, or gone: swapped.
            if let code = error.errno?.rawValue, [ELOOP, EEXIST, ENOENT].contains(code) {
                throw ImagingError.unusableTarget(path: path, .changed)
            }
            throw error
        }
        var st = stat()
        guard fstat(file.fd, &st) == 0 else { throw SystemError.call(what: "stat \(path)", .init(rawValue: errno)) }
        let same = switch validated {
        case .newFile: st.st_mode & S_IFMT == S_IFREG
        case .file(let device, let inode): st.st_mode & S_IFMT == S_IFREG && UInt64(st.st_dev) == device && UInt64(st.st_ino) == inode
        case .device(_, let number): st.st_mode & S_IFMT == S_IFBLK && UInt64(st.st_rdev) == number
        }
        guard same else { throw ImagingError.unusableTarget(path: path, .changed) }
        return file
    }

    /// Makes a range read as zeros: a device is told to zero it (BLKZEROOUT); a file emptied
    /// by `open` already reads as zeros; a file that keeps its contents gets a hole punched.
    /// Where the kernel cannot, zeros are written.
    public func zero(_ file: FileIO, offset: UInt64, length: UInt64) throws {
        guard length > 0 else { return }
        if isBlockDevice {
            var range: [UInt64] = [offset, length]
            if ioctl(file.fd, Kernel.blockZeroOut, &range) == 0 { return }
        } else if !keepsContents || file.punchHole(at: offset, length: length) {
            return
        }
        try file.writeZeros(at: offset, count: length)
    }

    /// After a failed restore: zeros over the first and last MiB (where partition maps and
    /// filesystem headers live), so the half-written disk is never taken for a good one.
    func wipe(_ file: FileIO, diskBytes: UInt64) {
        let mib: UInt64 = 1 << 20
        let end = isBlockDevice ? capacity : diskBytes
        var spans = [(UInt64(0), min(mib, end))]
        if end > mib { spans.append((end - mib, mib)) }
        if isBlockDevice, diskBytes > mib, diskBytes < end { spans.append((diskBytes - mib, mib)) }
        for (offset, length) in spans { try? file.writeZeros(at: offset, count: length) }
        try? file.sync()
    }

    /// Free space where a file target would be written.
    public func availableBytes() -> UInt64? {
        guard !isBlockDevice else { return nil }
        var fs = statvfs()
        let dir = (path as NSString).deletingLastPathComponent
        guard statvfs(dir.isEmpty ? "." : dir, &fs) == 0 else { return nil }
        var existing: UInt64 = 0
        var st = stat()
        if stat(path, &st) == 0 { existing = UInt64(st.st_blocks) * 512 }  // freed by the erase
        return UInt64(fs.f_bavail) * UInt64(fs.f_frsize) + existing
    }
}
