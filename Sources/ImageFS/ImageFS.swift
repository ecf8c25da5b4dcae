// ImageFS: images as FUSE filesystems, and the plumbing of `asr mount`.
//
// This module owns what `asr mount` shows: the read-only view of an image (`ImageView`: the
// raw disk, each partition, the block map, checksums and info as files), writable disks
// (`WritableDisk`: a target kept in a sparse file, or a copy-on-write overlay of an image)
// and the libfuse3 low-level binding that serves any `FileSystem` (`FuseMount`). File systems
// here are plain state machines over inode numbers that do no FUSE calls themselves, so they
// are unit-tested without a mount; only `FuseMount` talks to libfuse. It also owns how a mount
// lives (MountService.swift): `-o` options, the background process and its ready pipe, the pid
// record `asr unmount` waits on, unmounting, and where a mount's block map is (`MountedDisk`).

import Filesystems
import Glibc
import SystemPackage
import SystemSupport
import UDIF

/// A failure that becomes an errno reply to the kernel.
public struct FSError: Error, Sendable, Equatable {
    public let errno: Int32
    public init(_ errno: Int32) { self.errno = errno }

    public static let notFound = FSError(ENOENT)
    public static let readOnly = FSError(EROFS)
    public static let ioError = FSError(EIO)
    public static let notDirectory = FSError(ENOTDIR)
    public static let isDirectory = FSError(EISDIR)
    public static let invalid = FSError(EINVAL)
    public static let noAttribute = FSError(ENODATA)
    public static let range = FSError(ERANGE)
}

/// What `stat` shows for one inode.
public struct Attributes: Sendable, Equatable {
    public var inode: UInt64
    public var isDirectory: Bool
    public var permissions: mode_t
    public var size: UInt64
    public var linkCount: UInt32
    public var modified: timespec
    /// Content or size changes while mounted: the kernel must not cache the attributes.
    public var isLive: Bool
    /// Bytes really stored, for `du` (a sparse file's); nil means `size`.
    public var allocatedBytes: UInt64?
    /// A node of a filesystem inside the image: its own type, mode, owner and times, shown
    /// as they are (the mount's owner and mode apply only to the view's own files).
    public var node: NodeAttributes?

    public init(inode: UInt64, isDirectory: Bool, permissions: mode_t, size: UInt64, linkCount: UInt32, modified: timespec,
                isLive: Bool = false, allocatedBytes: UInt64? = nil, node: NodeAttributes? = nil) {
        self.node = node
        self.inode = inode
        self.isDirectory = isDirectory
        self.permissions = permissions
        self.size = size
        self.linkCount = linkCount
        self.modified = modified
        self.isLive = isLive
        self.allocatedBytes = allocatedBytes
    }

    public static func == (a: Attributes, b: Attributes) -> Bool {
        a.inode == b.inode && a.isDirectory == b.isDirectory && a.permissions == b.permissions && a.size == b.size
            && a.linkCount == b.linkCount && a.modified.tv_sec == b.modified.tv_sec && a.modified.tv_nsec == b.modified.tv_nsec
            && a.isLive == b.isLive && a.allocatedBytes == b.allocatedBytes && a.node == b.node
    }
}

public struct DirectoryEntry: Sendable, Equatable {
    public var name: String
    public var inode: UInt64
    public var isDirectory: Bool
    /// The file type bits (S_IFLNK, ...) when neither a directory nor a regular file.
    public var type: mode_t = 0
}

/// How the kernel may cache an opened file.
public struct OpenMode: Sendable {
    /// The content cannot change while mounted: keep pages cached across opens.
    public var keepCache: Bool
    /// Bypass the page cache (files whose size changes while open).
    public var directIO: Bool

    public init(keepCache: Bool, directIO: Bool) {
        self.keepCache = keepCache
        self.directIO = directIO
    }
}

/// A filesystem `FuseMount` can serve. Inode 1 is the root directory. Methods are called from
/// many threads at once. Writes default to EROFS.
public protocol FileSystem: AnyObject, Sendable {
    func lookup(parent: UInt64, name: String) throws(FSError) -> Attributes
    func attributes(of inode: UInt64) throws(FSError) -> Attributes
    func entries(of directory: UInt64) throws(FSError) -> [DirectoryEntry]
    /// Opens a file; `flags` are open(2)'s. Returns a handle passed to read/write/release.
    func open(_ inode: UInt64, flags: Int32) throws(FSError) -> (handle: UInt64, mode: OpenMode)
    /// Calls `reply` once with the bytes from `offset` (fewer than `count` only at the end of
    /// the file), as buffers valid during the call: the kernel copies straight from them.
    func read(_ inode: UInt64, handle: UInt64, at offset: UInt64, count: Int, reply: ([UnsafeRawBufferPointer]) -> Void) throws(FSError)
    func write(_ inode: UInt64, handle: UInt64, at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FSError) -> Int
    func truncate(_ inode: UInt64, to size: UInt64) throws(FSError)
    /// fallocate(2): `mode` as there (punch hole, keep size, ...).
    func allocate(_ inode: UInt64, mode: Int32, at offset: UInt64, length: UInt64) throws(FSError)
    func sync(_ inode: UInt64, handle: UInt64) throws(FSError)
    func release(_ inode: UInt64, handle: UInt64)
    /// Total and free bytes, for statfs.
    func capacity() -> (total: UInt64, free: UInt64)
    /// Called once after the loop ends, before the mount point is released.
    func unmounting()
    /// A symbolic link's target.
    func readLink(_ inode: UInt64) throws(FSError) -> [UInt8]
    /// Extended attribute names, and one's value (ENODATA when absent).
    func extendedAttributeNames(of inode: UInt64) throws(FSError) -> [String]
    func extendedAttribute(_ name: String, of inode: UInt64) throws(FSError) -> [UInt8]
}

extension FileSystem {
    public func write(_ inode: UInt64, handle: UInt64, at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FSError) -> Int {
        throw .readOnly
    }
    public func truncate(_ inode: UInt64, to size: UInt64) throws(FSError) { throw .readOnly }
    public func allocate(_ inode: UInt64, mode: Int32, at offset: UInt64, length: UInt64) throws(FSError) { throw .readOnly }
    public func sync(_ inode: UInt64, handle: UInt64) throws(FSError) {}
    public func release(_ inode: UInt64, handle: UInt64) {}
    public func unmounting() {}
    public func readLink(_ inode: UInt64) throws(FSError) -> [UInt8] { throw .invalid }
    public func extendedAttributeNames(of inode: UInt64) throws(FSError) -> [String] { [] }
    public func extendedAttribute(_ name: String, of inode: UInt64) throws(FSError) -> [UInt8] { throw .noAttribute }
}

/// Every failure of this module that reaches a user; `description` is its one line.
public enum ImageFSError: UserFacingError {
    // The read-only view of an image.
    /// Decoding failed while checking the image before mounting.
    case corrupt(path: String, UDIFError)
    /// A region's (blkx) CRC-32 does not match its decoded data.
    case regionChecksumMismatch(path: String, id: String, name: String)
    case masterChecksumMismatch(path: String)
    /// A chunk's data does not match the SHA-256 imagescan stored; `chunk` is its description.
    case chunkSHA256Mismatch(index: Int, chunk: String)
    case diskSHA256Mismatch
    case blockMapSizeMismatch(map: String, mapBytes: UInt64, image: String, imageBytes: UInt64)

    // Writable disks.
    case backingNotRegularFile(path: String)
    case backingMissing(path: String)
    case backingSizeMismatch(path: String, bytes: UInt64, requested: UInt64)
    case badDiskSize(UInt64)
    case changesAreTheImage(path: String)
    case changesSizeMismatch(path: String, bytes: UInt64, imageBytes: UInt64)
    case readPastEnd(diskBytes: UInt64)

    // FUSE.
    /// libfuse refused the options; `log` is what it said, when it did.
    case badFuseOptions(options: [String], log: String?)
    case signalHandlers
    /// fuse_session_mount failed; `log` is what libfuse said.
    case mount(point: String, log: String?)
    case session(point: String, Errno)

    // `asr mount` and `asr unmount`.
    /// An option the mount cannot honour (`rw` on a read-only image).
    case readOnlyOption(String)
    case startMountProcess(Errno)
    /// The background mount process sent this error line instead of "ready".
    case mountProcessFailed(String)
    case mountProcessEnded
    case runFusermount(String)
    /// fusermount3 failed; `reason` is its first line without its name.
    case unmount(point: String, reason: String?)
    case stoppedWaiting(pid: Int32)

    public var description: String {
        switch self {
        case .corrupt(let path, let error): "\(path) is corrupt: \(error)"
        case .regionChecksumMismatch(let path, let id, let name):
            "\(path) is corrupt: the checksum of blkx \(id) (\(name)) does not match its data"
        case .masterChecksumMismatch(let path): "\(path) is corrupt: its master checksum does not match"
        case .chunkSHA256Mismatch(_, let chunk): "\(chunk) does not match the SHA-256 stored by imagescan"
        case .diskSHA256Mismatch: "the disk's SHA-256 does not match the one stored by imagescan"
        case .blockMapSizeMismatch(let map, let mapBytes, let image, let imageBytes):
            "block map \(map) describes \(mapBytes) bytes but \(image) has \(imageBytes)"
        case .backingNotRegularFile(let path): "backing \(path) is not a regular file"
        case .backingMissing(let path): "backing \(path) does not exist; give --size to create it"
        case .backingSizeMismatch(let path, let bytes, let requested): "backing \(path) holds \(bytes) bytes but --size says \(requested)"
        case .badDiskSize: "the disk size must be a positive multiple of 512 bytes"
        case .changesAreTheImage(let path): "the copy-on-write file \(path) is the image itself"
        case .changesSizeMismatch(let path, let bytes, let imageBytes):
            "copy-on-write file \(path) is \(bytes) bytes, not the image's \(imageBytes): it belongs to another image"
        case .readPastEnd(let diskBytes): "read past the end of the \(diskBytes)-byte disk"
        case .badFuseOptions(let options, let log): "cannot start FUSE: \(log ?? "bad mount options \(options.joined(separator: ","))")"
        case .signalHandlers: "cannot install signal handlers for FUSE"
        case .mount(let point, let log):
            // Without udev, /dev/fuse keeps the kernel's 0600 and only root can mount.
            if let log, log.contains("failed to open /dev/fuse"), log.contains("Permission denied") {
                "cannot mount on \(point): \(log) (chmod 0666 /dev/fuse, as udev does on a standard system)"
            } else {
                "cannot mount on \(point): \(log ?? "fuse_session_mount failed")"
            }
        case .session(let point, let e): "FUSE session for \(point) failed: \(e)"
        case .readOnlyOption(let option): "asr mount of an image is read-only; -o \(option) is not possible (see --overlay)"
        case .startMountProcess(let e): "cannot start the mount process: \(e)"
        case .mountProcessFailed(let line): line
        case .mountProcessEnded: "the mount process ended without mounting"
        case .runFusermount(let why): "cannot run fusermount3: \(why)"
        case .unmount(let point, let reason): "cannot unmount \(point): \(reason ?? "fusermount3 failed")"
        case .stoppedWaiting(let pid): "stopped waiting; the mount process \(pid) still runs"
        }
    }
}
