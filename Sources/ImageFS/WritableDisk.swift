import SystemSupport
import Crypto
import Foundation
import Imaging
import Synchronization
import UDIF

/// A writable `disk.img` of fixed size, and live files about what was written:
///
///     disk.img      the disk; writes past its end fail with ENOSPC, fsync reaches the store
///     written.bmap  bmaptool 2.0 block map of the blocks the store holds, with SHA-256s
///     status.json   bytes written, write rate, the stored ranges
///
/// Two kinds: a target (`asr mount --target`), whose sparse store file is the disk itself and
/// holds only non-zero blocks (zero blocks written are punched out), and an overlay
/// (`asr mount --overlay`), where the disk is an image's and every written 4 KiB block is kept
/// in the copy-on-write store, which is never the image. Which blocks the store holds is
/// read back from its allocation (SEEK_DATA) when mounted again.
public final class WritableDisk: FileSystem, ByteSource, Sendable {
    public static let blockSize: UInt64 = 4096
    public let byteCount: UInt64
    public let storePath: String
    let store: FileIO
    /// The image under an overlay; nil for a target, whose unwritten blocks are zeros.
    let base: ImageSource?
    let started = Date()
    let modified: timespec

    private struct State {
        var stored: BlockSet
        var bytesWritten: UInt64 = 0
        /// Changes whenever the disk does, so live files are rendered again only then.
        var generation: UInt64 = 0
        var recent: [(time: Double, bytes: UInt64)] = []
        var rendered: [UInt64: (generation: UInt64, bytes: [UInt8])] = [:]
        var snapshots: [UInt64: [UInt8]] = [:]
    }
    private let state: Locked<State>
    /// Writes are read-modify-write at their edges; one at a time keeps blocks whole.
    private let writeLock = Locked(())
    private let nextHandle = Atomic<UInt64>(1)

    static let diskInode: UInt64 = 2
    static let bmapInode: UInt64 = 3
    static let statusInode: UInt64 = 4
    static let names: [(String, UInt64)] = [("disk.img", diskInode), ("written.bmap", bmapInode), ("status.json", statusInode)]

    /// A target backed by `backing`: created sparse at `size`, or an existing file of its own
    /// size (which `size`, if given, must match).
    public static func target(backing: String, size: UInt64?) throws -> WritableDisk {
        var st = stat()
        let exists = stat(backing, &st) == 0
        if exists, st.st_mode & S_IFMT != S_IFREG { throw ImageFSError.backingNotRegularFile(path: backing) }
        let current = exists ? UInt64(st.st_size) : 0
        guard let bytes = size ?? (exists ? current : nil) else {
            throw ImageFSError.backingMissing(path: backing)
        }
        if exists, current != 0, current != bytes {
            throw ImageFSError.backingSizeMismatch(path: backing, bytes: current, requested: bytes)
        }
        guard bytes > 0, bytes % sectorSize == 0 else { throw ImageFSError.badDiskSize(bytes) }
        let file = try FileIO(path: backing, flags: O_RDWR | O_CREAT)
        try file.truncate(to: bytes)
        return try WritableDisk(store: file, byteCount: bytes, base: nil)
    }

    /// `image` made writable, its changes kept in `changes` (created sparse if missing).
    public static func overlay(image: String, changes: String) throws -> WritableDisk {
        let source = try ImageSource.open(image, cacheChunks: 64)
        let bytes = source.bytes.byteCount
        var st = stat()
        if stat(changes, &st) == 0 {
            var imageStat = stat()
            if stat(image, &imageStat) == 0, imageStat.st_dev == st.st_dev, imageStat.st_ino == st.st_ino {
                throw ImageFSError.changesAreTheImage(path: changes)
            }
            guard UInt64(st.st_size) == bytes else {
                throw ImageFSError.changesSizeMismatch(path: changes, bytes: UInt64(st.st_size), imageBytes: bytes)
            }
        }
        let file = try FileIO(path: changes, flags: O_RDWR | O_CREAT)
        try file.truncate(to: bytes)
        return try WritableDisk(store: file, byteCount: bytes, base: source)
    }

    init(store: FileIO, byteCount: UInt64, base: ImageSource?) throws {
        self.store = store
        self.storePath = store.path
        self.byteCount = byteCount
        self.base = base
        var st = stat()
        modified = fstat(store.fd, &st) == 0 ? st.st_mtim : timespec(tv_sec: time(nil), tv_nsec: 0)
        state = Locked(State(stored: Self.allocatedBlocks(of: store, size: byteCount)))
    }

    /// Blocks the store file has allocated: what earlier mounts wrote.
    static func allocatedBlocks(of file: FileIO, size: UInt64) -> BlockSet {
        BlockSet(file.dataExtents(upTo: size).map { $0.offset / blockSize...($0.offset + $0.length - 1) / blockSize })
    }

    // MARK: the disk

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try readLentBytes(into: buffer, at: offset)
    }

    /// Stored blocks come from the store; the rest from the image, or for a target as shared
    /// zeros: reading a sparse file's holes would make the kernel allocate and clear pages.
    public func withBytes(at offset: UInt64, count: Int, _ body: ([UnsafeRawBufferPointer]) -> Void) throws {
        guard offset <= byteCount, UInt64(count) <= byteCount - offset else {
            throw ImageFSError.readPastEnd(diskBytes: byteCount)
        }
        guard count > 0 else { return body([]) }
        let b = Self.blockSize
        let parts = state.withLock { $0.stored.split(offset / b...(offset + UInt64(count) - 1) / b) }
        try ScratchBuffers.borrow(count) { scratch in
            var pieces: [UnsafeRawBufferPointer] = []
            for part in parts {
                let start = max(offset, part.range.lowerBound * b)
                let end = min(offset + UInt64(count), (part.range.upperBound + 1) * b)
                let slice = UnsafeMutableRawBufferPointer(rebasing: scratch[Int(start - offset)..<Int(end - offset)])
                if part.inSet {
                    try store.read(into: slice, at: start)
                } else if let base {
                    try base.bytes.read(into: slice, at: start)
                } else {
                    pieces += sharedZeros(slice.count)
                    continue
                }
                pieces.append(UnsafeRawBufferPointer(slice))
            }
            body(pieces)
        }
    }

    /// Writes `data` at `offset`; returns how much fitted before the end of the disk.
    func write(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws -> Int {
        guard offset < byteCount else { throw FSError(ENOSPC) }
        let n = Int(min(UInt64(data.count), byteCount - offset))
        guard n > 0 else { return 0 }
        let data = UnsafeRawBufferPointer(rebasing: data[0..<n])
        try writeLock.withLock { _ in
            if base != nil { try writeOverlay(data, at: offset) } else { try writeTarget(data, at: offset) }
        }
        state.withLock { s in
            s.bytesWritten += UInt64(n)
            s.generation += 1
            let now = Date().timeIntervalSince(started)
            s.recent.append((now, UInt64(n)))
            s.recent.removeAll { $0.time < now - 5 }
        }
        return n
    }

    /// Copy-on-write: a block first written in part takes the image's bytes for the rest.
    private func writeOverlay(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let b = Self.blockSize
        let end = offset + UInt64(data.count)
        let first = offset / b
        let last = (end - 1) / b
        for edge in Set([first, last]) {
            let blockStart = edge * b
            let blockEnd = min(blockStart + b, byteCount)
            let covered = offset <= blockStart && end >= blockEnd
            if !covered, !state.withLock({ $0.stored.contains(edge) }) {
                let block = try base!.bytes.read(at: blockStart, count: Int(blockEnd - blockStart))
                try store.write(block, at: blockStart)
            }
        }
        try store.write(data, at: offset)
        state.withLock { $0.stored.insert(first...last) }
    }

    /// A target keeps only non-zero blocks: whole zero blocks are punched out, not written.
    private func writeTarget(_ data: UnsafeRawBufferPointer, at offset: UInt64) throws {
        let b = Self.blockSize
        let end = offset + UInt64(data.count)
        var block = offset / b
        var runStart = block
        var runZero: Bool?
        func flush(upTo next: UInt64) throws {
            guard let zero = runZero, next > runStart else { return }
            let start = max(offset, runStart * b)
            let stop = min(end, next * b)
            if zero {
                if !store.punchHole(at: start, length: stop - start) {
                    try store.write([UInt8](repeating: 0, count: Int(stop - start)), at: start)
                }
                state.withLock { $0.stored.remove(runStart...(next - 1)) }
            } else {
                try store.write(UnsafeRawBufferPointer(rebasing: data[Int(start - offset)..<Int(stop - offset)]), at: start)
                state.withLock { $0.stored.insert(runStart...(next - 1)) }
            }
        }
        while block * b < end {
            let blockStart = block * b
            let blockEnd = min(blockStart + b, byteCount)
            let zero: Bool
            if offset <= blockStart && end >= blockEnd {
                zero = isAllZero(UnsafeRawBufferPointer(rebasing: data[Int(blockStart - offset)..<Int(blockEnd - offset)]))
            } else {
                // A partial block: write it, then judge the whole block as it now stands.
                try flush(upTo: block)
                runZero = nil
                let start = max(offset, blockStart)
                let stop = min(end, blockEnd)
                try store.write(UnsafeRawBufferPointer(rebasing: data[Int(start - offset)..<Int(stop - offset)]), at: start)
                let whole = try store.read(at: blockStart, count: Int(blockEnd - blockStart))
                let isZero = whole.withUnsafeBytes { isAllZero($0) }
                state.withLock { if isZero { $0.stored.remove(block...block) } else { $0.stored.insert(block...block) } }
                block += 1
                runStart = block
                continue
            }
            if runZero != zero {
                try flush(upTo: block)
                runStart = block
                runZero = zero
            }
            block += 1
        }
        try flush(upTo: block)
    }

    // MARK: live files

    /// The block map of what the store holds, hashed from the disk as it is now.
    func writtenBlockMap() throws -> BlockMap {
        let ranges = state.withLock { $0.stored.ranges }
        var map = BlockMap(imageSize: byteCount, blockSize: Self.blockSize, ranges: [])
        for r in ranges {
            var hasher = SHA256()
            let range = BlockMap.Range(first: r.lowerBound, last: r.upperBound, sha256: [])
            let (start, length) = map.byteRange(range)
            var at: UInt64 = 0
            while at < length {
                let n = Int(min(length - at, 1 << 20))
                hasher.update(data: try read(at: start + at, count: n))
                at += UInt64(n)
            }
            map.ranges.append(BlockMap.Range(first: r.lowerBound, last: r.upperBound, sha256: Array(hasher.finalize())))
        }
        return map
    }

    struct Status: Encodable {
        struct Range: Encodable {
            var offset: UInt64
            var length: UInt64
        }
        var kind: String
        var store: String
        var image: String?
        var size: UInt64
        var bytesWritten: UInt64
        var storedBytes: UInt64
        var writeRate: UInt64
        var ranges: [Range]
    }

    func status() -> [UInt8] {
        let (stored, written, rate) = state.withLock { s -> ([ClosedRange<UInt64>], UInt64, UInt64) in
            let now = Date().timeIntervalSince(started)
            let window = min(5, max(now, 0.001))
            let recent = s.recent.filter { $0.time >= now - 5 }.reduce(0) { $0 + $1.bytes }
            return (s.stored.ranges, s.bytesWritten, UInt64(Double(recent) / window))
        }
        let b = Self.blockSize
        let ranges = stored.map { r in
            let start = r.lowerBound * b
            return Status.Range(offset: start, length: min((r.upperBound + 1) * b, byteCount) - start)
        }
        let status = Status(kind: base == nil ? "target" : "overlay", store: storePath, image: base?.path, size: byteCount,
                            bytesWritten: written, storedBytes: ranges.reduce(0) { $0 + $1.length },
                            writeRate: rate, ranges: ranges)
        return jsonDocument(status)
    }

    /// A live file's bytes for the disk as it is now; made again only after a change.
    func render(_ inode: UInt64) throws -> [UInt8] {
        let generation = state.withLock { $0.generation }
        if inode == Self.bmapInode, let cached = state.withLock({ $0.rendered[inode] }), cached.generation == generation {
            return cached.bytes
        }
        let bytes = inode == Self.bmapInode ? Array(try writtenBlockMap().xml().utf8) : status()
        state.withLock { $0.rendered[inode] = (generation, bytes) }
        return bytes
    }

    // MARK: FileSystem

    public func lookup(parent: UInt64, name: String) throws(FSError) -> Attributes {
        guard parent == ImageView.rootInode else { throw .notDirectory }
        guard let (_, inode) = Self.names.first(where: { $0.0 == name }) else { throw .notFound }
        return try attributes(of: inode)
    }

    public func attributes(of inode: UInt64) throws(FSError) -> Attributes {
        switch inode {
        case ImageView.rootInode:
            return Attributes(inode: inode, isDirectory: true, permissions: 0o755, size: 4096, linkCount: 2, modified: modified)
        case Self.diskInode:
            let stored = state.withLock { $0.stored.count } * Self.blockSize
            return Attributes(inode: inode, isDirectory: false, permissions: 0o644, size: byteCount, linkCount: 1,
                              modified: modified, allocatedBytes: min(stored, byteCount))
        case Self.bmapInode, Self.statusInode:
            let size: Int
            do { size = try render(inode).count } catch { throw .ioError }
            return Attributes(inode: inode, isDirectory: false, permissions: 0o444, size: UInt64(size), linkCount: 1,
                              modified: timespec(tv_sec: time(nil), tv_nsec: 0), isLive: true)
        default:
            throw .notFound
        }
    }

    public func entries(of directory: UInt64) throws(FSError) -> [DirectoryEntry] {
        guard directory == ImageView.rootInode else { throw .notDirectory }
        return Self.names.map { DirectoryEntry(name: $0.0, inode: $0.1, isDirectory: false) }
    }

    public func open(_ inode: UInt64, flags: Int32) throws(FSError) -> (handle: UInt64, mode: OpenMode) {
        let handle = nextHandle.wrappingAdd(1, ordering: .relaxed).oldValue
        switch inode {
        case Self.diskInode:
            // Straight to the store: no second copy of the disk in the page cache, one copy less per byte.
            return (handle, OpenMode(keepCache: false, directIO: true))
        case Self.bmapInode, Self.statusInode:
            guard flags & O_ACCMODE == O_RDONLY else { throw .readOnly }
            // Each open reads one consistent snapshot.
            let bytes: [UInt8]
            do { bytes = try render(inode) } catch { throw .ioError }
            state.withLock { $0.snapshots[handle] = bytes }
            return (handle, OpenMode(keepCache: false, directIO: true))
        case ImageView.rootInode: throw .isDirectory
        default: throw .notFound
        }
    }

    public func read(_ inode: UInt64, handle: UInt64, at offset: UInt64, count: Int,
                     reply: ([UnsafeRawBufferPointer]) -> Void) throws(FSError) {
        if inode == Self.diskInode {
            let n = offset < byteCount ? Int(min(UInt64(count), byteCount - offset)) : 0
            do { try withBytes(at: offset, count: n, reply) } catch { throw .ioError }
            return
        }
        guard let bytes = state.withLock({ $0.snapshots[handle] }) else { throw .ioError }
        let start = Int(min(offset, UInt64(bytes.count)))
        let end = min(bytes.count, start + count)
        bytes.withUnsafeBytes { reply([UnsafeRawBufferPointer(rebasing: $0[start..<end])]) }
    }

    public func write(_ inode: UInt64, handle: UInt64, at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws(FSError) -> Int {
        guard inode == Self.diskInode else { throw .readOnly }
        do { return try write(buffer, at: offset) } catch let e as FSError { throw e } catch { throw .ioError }
    }

    /// The disk's size is fixed; asking for that size is fine (restores do), any other is not.
    public func truncate(_ inode: UInt64, to size: UInt64) throws(FSError) {
        guard inode == Self.diskInode else { throw .readOnly }
        guard size == byteCount else { throw FSError(EPERM) }
    }

    /// Punching a range makes it read as zeros, as on a thinly provisioned disk; reserving
    /// space inside the disk is a no-op, past its end impossible.
    public func allocate(_ inode: UInt64, mode: Int32, at offset: UInt64, length: UInt64) throws(FSError) {
        guard inode == Self.diskInode else { throw .readOnly }
        if mode == 0 || mode == Kernel.keepSize {
            guard offset.addingReportingOverflow(length).partialValue <= byteCount || mode == Kernel.keepSize else { throw FSError(ENOSPC) }
            return
        }
        guard mode == Kernel.punchHoleKeepSize else { throw FSError(EOPNOTSUPP) }
        guard offset < byteCount else { return }
        let end = min(byteCount, offset + length)
        // A target frees whole blocks at once (a restore empties the disk this way first);
        // partial blocks, and every block of an overlay, take written zeros.
        let b = Self.blockSize
        let firstWhole = (offset + b - 1) / b
        let endWhole = end == byteCount ? (end + b - 1) / b : end / b
        var zeroSpans = [(offset, end)]
        if base == nil, firstWhole < endWhole {
            let start = firstWhole * b
            let stop = min(endWhole * b, byteCount)
            let freed = writeLock.withLock { _ in
                let freed = store.punchHole(at: start, length: stop - start)
                if freed { state.withLock { $0.stored.remove(firstWhole...(endWhole - 1)); $0.generation += 1 } }
                return freed
            }
            if freed { zeroSpans = [(offset, start), (stop, end)] }
        }
        for (from, to) in zeroSpans {
            var at = from
            while at < to {
                let n = Int(min(to - at, 1 << 20))
                do { _ = try [UInt8](repeating: 0, count: n).withUnsafeBytes { try write($0, at: at) } } catch { throw .ioError }
                at += UInt64(n)
            }
        }
    }

    public func sync(_ inode: UInt64, handle: UInt64) throws(FSError) {
        guard inode == Self.diskInode else { return }
        do { try store.sync() } catch { throw .ioError }
    }

    public func release(_ inode: UInt64, handle: UInt64) {
        _ = state.withLock { $0.snapshots.removeValue(forKey: handle) }
    }

    public func capacity() -> (total: UInt64, free: UInt64) {
        (byteCount, byteCount - min(byteCount, state.withLock { $0.stored.count } * Self.blockSize))
    }

    public func unmounting() { try? store.sync() }

    /// `--save-as`: the disk as it is now, packed into a scanned UDZO image.
    public func save(as output: String) throws {
        var creator = ImageCreator()
        creator.overwrite = true
        _ = try creator.create(bytes: self, output: output)
        _ = try ImageScanner(reporter: Reporter(.quiet)).scan(output)
    }
}
