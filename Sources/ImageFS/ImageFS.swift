// ImageFS: images as FUSE filesystems.
//
// This module owns what `asr mount` shows: the read-only view of an image (`ImageView`: the
// raw disk, each partition, the block map, checksums and info as files), writable disks
// (`WritableDisk`: a target kept in a sparse file, or a copy-on-write overlay of an image)
// and the libfuse3 low-level binding that serves any `FileSystem` (`FuseMount`). File systems here are plain
// state machines over inode numbers that do no FUSE calls themselves, so they are unit-tested
// without a mount; only `FuseMount` talks to libfuse.

import Glibc
import SystemSupport

/// A failure that becomes an errno reply to the kernel.
public struct FSError: Error, Sendable, Equatable {
    public let errno: Int32
    public init(_ errno: Int32) { self.errno = errno }

    public static let notFound = FSError(ENOENT)
    public static let readOnly = FSError(EROFS)
    public static let ioError = FSError(EIO)
    public static let notDirectory = FSError(ENOTDIR)
    public static let isDirectory = FSError(EISDIR)
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

    public init(inode: UInt64, isDirectory: Bool, permissions: mode_t, size: UInt64, linkCount: UInt32, modified: timespec,
                isLive: Bool = false, allocatedBytes: UInt64? = nil) {
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
            && a.isLive == b.isLive && a.allocatedBytes == b.allocatedBytes
    }
}

public struct DirectoryEntry: Sendable, Equatable {
    public var name: String
    public var inode: UInt64
    public var isDirectory: Bool
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
}

/// Every failure of this module that reaches a user: one line.
public struct ImageFSError: UserFacingError {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
