import Filesystems
import Foundation
import Imaging
import Synchronization
import SystemSupport
import UDIF

/// The read-only view of an image that `asr mount` shows:
///
///     disk.img                 the whole raw disk
///     partitions/<n>-<name>.img  each region (partition, map, free space) of it
///     blockmap.bmap            bmaptool 2.0 block map with a SHA-256 per range
///     blockmap.json            the same ranges, and the image's chunks, as JSON
///     checksums.sha256         `sha256sum -c` lines for disk.img and each partition
///     info.plist               what `asr info --plist` prints
///     volumes/<n>-<name>/      each filesystem we read (ext2/3/4, HFS+/HFSX, FAT), its files as they are
///     volumes/<n>.<k>-<name>/  each unencrypted volume of an APFS container (k: its slot, from 1)
///
/// Digests are computed in one pass over the disk: at open time for a UDIF image (which also
/// checks every CRC-32, as hdiutil does before attaching), on first use otherwise.
public final class ImageView: FileSystem, Sendable {
    enum Content {
        case directory([UInt64])
        /// A span of the disk.
        case disk(offset: UInt64, length: UInt64)
        case generated(GeneratedFile)
        /// `volumes/`: the roots of `volumes`.
        case volumes
    }

    struct Node {
        var name: String
        var parent: UInt64
        var content: Content
    }

    public static let rootInode: UInt64 = 1
    /// Inode numbers are indices into `nodes` plus one.
    let nodes: [Node]
    let source: ImageSource
    let modified: timespec
    private let readAhead: ReadAhead?
    /// The filesystems shown under `volumes/`; a node of volume `i` has inode
    /// `(i + 1) << volumeShift | node`, so hard links inside a volume share one inode.
    let volumes: [MountedVolume]
    static let volumeShift: UInt64 = 40
    /// Directories' entries by name, for lookups in large directories.
    /// Keyed by the name's bytes: Swift's String equality would take an NFC and an NFD
    /// spelling for one name, where a filesystem has two.
    private let names = Locked<[UInt64: [[UInt8]: DirectoryEntry]]>([:])
    private let listings = Locked<[UInt64: [DirectoryEntry]]>([:])
    /// Where read errors are told (they reach readers only as EIO).
    let log: @Sendable (String) -> Void

    /// Read errors go to standard error unless told otherwise (a background mount: syslog).
    public static let standardErrorLog: @Sendable (String) -> Void = { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }

    /// Opens `path` (UDIF, raw image or block device) and builds the view. With `verify`, a
    /// UDIF image's chunks are all decoded now and checked against its checksums.
    public convenience init(path: String, verify: Bool = true, log: @escaping @Sendable (String) -> Void = standardErrorLog) throws {
        try self.init(source: ImageSource.open(path, cacheChunks: 64), verify: verify, log: log)
    }

    public init(source: ImageSource, verify: Bool = true, log: @escaping @Sendable (String) -> Void = standardErrorLog) throws {
        self.source = source
        self.log = log
        modified = Self.modificationTime(of: source.path)
        let disk = source.bytes
        let udif = source.udif
        let scan = try udif.flatMap { try ScanData.stored(in: $0) }
        let regions = try Self.regions(of: source)
        let map = try Self.blockRanges(of: source)
        let plan = DiskDigests.Plan(
            diskBytes: disk.byteCount, partitions: regions.map { ($0.offset, $0.length) },
            ranges: map.ranges.map { map.byteRange($0) })
        let digests: Once<DiskDigests>
        var info: ImageInfo
        if let udif, verify {
            let computed: DiskDigests
            do { computed = try DiskDigests.compute(plan, disk: disk, udif: udif, scan: scan) } catch let error as UDIFError {
                throw ImageFSError.corrupt(path: source.path, error)
            }
            info = try ImageInfo.describe(source, computedCRCs: computed.regionCRCs)
            if let bad = info.regions.first(where: { $0.checksumValid == false }) {
                throw ImageFSError.regionChecksumMismatch(path: source.path, id: bad.id, name: bad.name)
            }
            if info.masterChecksumValid == false { throw ImageFSError.masterChecksumMismatch(path: source.path) }
            digests = Once(ready: computed)
        } else {
            info = try ImageInfo.describe(source, computedCRCs: nil)
            digests = Once { try DiskDigests.compute(plan, disk: disk, udif: udif, scan: scan) }
        }
        readAhead = udif.map { ReadAhead(image: $0) }

        var nodes: [Node] = [Node(name: "", parent: Self.rootInode, content: .directory([]))]
        func add(_ name: String, in parent: UInt64, _ content: Content) -> UInt64 {
            nodes.append(Node(name: name, parent: parent, content: content))
            let inode = UInt64(nodes.count)
            if case .directory(let children) = nodes[Int(parent) - 1].content {
                nodes[Int(parent) - 1].content = .directory(children + [inode])
            }
            return inode
        }
        _ = add("disk.img", in: Self.rootInode, .disk(offset: 0, length: disk.byteCount))
        let partitionDirectory = add("partitions", in: Self.rootInode, .directory([]))
        let files = ViewFiles(map: map, regions: regions, udif: udif, scan: scan, info: info)
        _ = add("blockmap.bmap", in: Self.rootInode, .generated(GeneratedFile(digests: digests, plan: plan, render: files.bmap)))
        _ = add("blockmap.json", in: Self.rootInode, .generated(GeneratedFile(digests: digests, plan: plan, render: files.json)))
        _ = add("checksums.sha256", in: Self.rootInode, .generated(GeneratedFile(digests: digests, plan: plan, render: files.checksums)))
        _ = add("info.plist", in: Self.rootInode, .generated(GeneratedFile(fixed: try files.infoPlist())))
        for r in regions {
            _ = add(r.fileName, in: partitionDirectory, .disk(offset: r.offset, length: r.length))
        }
        _ = add("volumes", in: Self.rootInode, .volumes)
        self.nodes = nodes
        volumes = Self.openVolumes(source, regions: regions, log: log)
    }

    /// A filesystem of the image, shown as `volumes/<name>`.
    struct MountedVolume: Sendable {
        var name: String
        var reader: any VolumeReader
        /// Where its partition starts on the disk.
        var offset: UInt64
    }

    /// Every partition's filesystem we can read, as `<partition>-<label>`, or each volume of an
    /// APFS container as `<partition>.<k>-<name>` (k its slot in the container, from 1); one
    /// that cannot be read gets a log line and no directory.
    static func openVolumes(_ source: ImageSource, regions: [PartitionFile], log: (String) -> Void) -> [MountedVolume] {
        var found: [MountedVolume] = []
        for r in regions {
            for v in Volumes.openAll(source.bytes, offset: r.offset, length: r.length) {
                let place = v.position.map { "\(r.index).\($0)" } ?? "\(r.index)"
                switch v.opening {
                case .opened(let reader):
                    found.append(MountedVolume(name: "\(place)-\(volumeLabel(reader))", reader: reader, offset: r.offset))
                case .failed(let filesystem, let reason):
                    let what = v.position.map { "partition \(r.index) volume \($0)" } ?? "partition \(r.index)"
                    log("asr mount: \(source.path): \(what) (\(filesystem)) is not shown in volumes/: \(reason)")
                }
            }
        }
        return found
    }

    /// The volume's name as a directory name: no "/" or NUL; the filesystem's name when it has none.
    static func volumeLabel(_ reader: any VolumeReader) -> String {
        let label = String(reader.label.unicodeScalars.map { $0 == "/" ? ":" : $0.value == 0 ? "_" : Character($0) })
        return label.isEmpty || label == "." || label == ".." ? reader.filesystem : label
    }

    struct PartitionFile {
        var index: Int
        var fileName: String
        var offset: UInt64
        var length: UInt64
    }

    /// Each region as a file named `<n>-<kind>.img`, the kind taken from hdiutil's name
    /// ("disk image (Apple_HFS : 4)" gives "Apple_HFS").
    static func regions(of source: ImageSource) throws -> [PartitionFile] {
        let plans: [(String, UInt64, UInt64)]
        if let udif = source.udif {
            plans = udif.regions.map { ($0.name, $0.firstSector * sectorSize, $0.sectorCount * sectorSize) }
        } else {
            plans = try PartitionMap.regions(of: source.bytes).map { ($0.name, $0.firstSector * sectorSize, $0.sectorCount * sectorSize) }
        }
        return plans.enumerated().map { n, p in
            PartitionFile(index: n, fileName: "\(n)-\(fileLabel(p.0)).img", offset: p.1, length: p.2)
        }
    }

    static func fileLabel(_ regionName: String) -> String {
        var label = Substring(regionName)
        if let open = label.lastIndex(of: "("), let close = label.lastIndex(of: ")"), open < close {
            label = label[label.index(after: open)..<close]
            if let colon = label.range(of: " : ") { label = label[..<colon.lowerBound] }
        }
        var out = ""
        for ch in label.unicodeScalars {
            let keep = (ch.isASCII && (CharacterSet.alphanumerics.contains(ch) || "._-".unicodeScalars.contains(ch)))
            if keep { out.unicodeScalars.append(ch) } else if !out.hasSuffix("_") { out += "_" }
        }
        while out.hasPrefix("_") || out.hasPrefix(".") { out.removeFirst() }
        while out.hasSuffix("_") { out.removeLast() }
        return out.isEmpty ? "region" : out
    }

    /// Which 4 KiB blocks hold data: a UDIF image's stored chunks, a raw image's `.bmap` or
    /// its allocated extents, or all of a device.
    static func blockRanges(of source: ImageSource) throws -> BlockMap {
        let size = source.bytes.byteCount
        let block: UInt64 = 4096
        if source.kind == .raw, let sidecar = BlockMap.sidecar(for: source.path) {
            let map = try BlockMap.load(sidecar)
            guard map.imageSize == size else {
                throw ImageFSError.blockMapSizeMismatch(map: sidecar, mapBytes: map.imageSize, image: source.path, imageBytes: size)
            }
            return map
        }
        let extents: [(offset: UInt64, length: UInt64)]
        if let udif = source.udif {
            extents = udif.chunks.filter { $0.type.hasStoredData && $0.length > 0 }.map { ($0.diskOffset, $0.length) }
        } else {
            extents = try source.dataExtents()
        }
        var ranges: [BlockMap.Range] = []
        for e in extents where e.length > 0 {
            let first = e.offset / block
            let last = (e.offset + e.length - 1) / block
            if let prior = ranges.last, first <= prior.last + 1 {
                ranges[ranges.count - 1].last = max(prior.last, last)
            } else {
                ranges.append(BlockMap.Range(first: first, last: last, sha256: DiskDigests.placeholder))
            }
        }
        return BlockMap(imageSize: size, blockSize: block, ranges: ranges)
    }

    static func modificationTime(of path: String) -> timespec {
        var st = stat()
        return stat(path, &st) == 0 ? st.st_mtim : timespec(tv_sec: time(nil), tv_nsec: 0)
    }

    // MARK: FileSystem

    func node(_ inode: UInt64) throws(FSError) -> Node {
        guard inode >= 1, inode <= UInt64(nodes.count) else { throw .notFound }
        return nodes[Int(inode) - 1]
    }

    public func lookup(parent: UInt64, name: String) throws(FSError) -> Attributes {
        if parent >> Self.volumeShift != 0 || isVolumes(parent) {
            let key = Array(name.utf8)
            if let hit = names.withLock({ $0[parent]?[key] }) { return try attributes(of: hit.inode) }
            let listing = try entries(of: parent)
            let byName = Dictionary(listing.map { (Array($0.name.utf8), $0) }, uniquingKeysWith: { a, _ in a })
            names.withLock { cache in
                if cache.count >= 4096 { cache.removeAll() }
                cache[parent] = byName
            }
            guard let hit = byName[key] else { throw .notFound }
            return try attributes(of: hit.inode)
        }
        guard case .directory(let children) = try node(parent).content else { throw .notDirectory }
        guard let child = children.first(where: { nodes[Int($0) - 1].name == name }) else { throw .notFound }
        return try attributes(of: child)
    }

    public func attributes(of inode: UInt64) throws(FSError) -> Attributes {
        if case let (volume, id)? = try volumeNode(inode) {
            let a = try call(volume) { () throws(VolumeError) in try volume.reader.attributes(of: id) }
            let modified = timespec(tv_sec: Int(clamping: a.modified.seconds), tv_nsec: Int(a.modified.nanoseconds))
            return Attributes(inode: inode, isDirectory: a.kind == .directory, permissions: mode_t(a.permissions), size: a.size,
                              linkCount: a.linkCount, modified: modified, allocatedBytes: a.allocatedBytes, node: a)
        }
        let n = try node(inode)
        switch n.content {
        case .volumes:
            return Attributes(inode: inode, isDirectory: true, permissions: 0o555, size: 4096,
                              linkCount: UInt32(2 + volumes.count), modified: modified)
        case .directory(let children):
            let subdirectories = children.filter {
                switch nodes[Int($0) - 1].content {
                case .directory, .volumes: true
                default: false
                }
            }.count
            return Attributes(inode: inode, isDirectory: true, permissions: 0o555, size: 4096,
                              linkCount: UInt32(2 + subdirectories), modified: modified)
        case .disk(_, let length):
            return Attributes(inode: inode, isDirectory: false, permissions: 0o444, size: length, linkCount: 1, modified: modified)
        case .generated(let file):
            return Attributes(inode: inode, isDirectory: false, permissions: 0o444, size: file.size, linkCount: 1, modified: modified)
        }
    }

    public func entries(of directory: UInt64) throws(FSError) -> [DirectoryEntry] {
        if case let (volume, id)? = try volumeNode(directory) {
            if let hit = listings.withLock({ $0[directory] }) { return hit }
            let base = directory & ~Self.nodeMask
            // A node number past 40 bits would land in another volume's inodes.
            let listing = try call(volume) { () throws(VolumeError) in try volume.reader.entries(of: id) }.filter { $0.node <= Self.nodeMask }.map { e in
                DirectoryEntry(name: e.name, inode: base | e.node, isDirectory: e.kind == .directory,
                               type: e.kind == .directory || e.kind == .file ? 0 : FuseMount.fileType(e.kind))
            }
            // readdir asks again for each buffer of a large directory.
            listings.withLock { cache in
                if cache.count >= 4096 { cache.removeAll() }
                cache[directory] = listing
            }
            return listing
        }
        if isVolumes(directory) {
            return volumes.enumerated().map { i, v in
                DirectoryEntry(name: v.name, inode: UInt64(i + 1) << Self.volumeShift | v.reader.rootNode, isDirectory: true)
            }
        }
        guard case .directory(let children) = try node(directory).content else { throw .notDirectory }
        return children.map { child in
            let isDirectory = switch nodes[Int(child) - 1].content {
            case .directory, .volumes: true
            default: false
            }
            return DirectoryEntry(name: nodes[Int(child) - 1].name, inode: child, isDirectory: isDirectory)
        }
    }

    private let nextHandle = Atomic<UInt64>(1)

    public func open(_ inode: UInt64, flags: Int32) throws(FSError) -> (handle: UInt64, mode: OpenMode) {
        if inode >> Self.volumeShift != 0 {
            let a = try attributes(of: inode)
            if a.isDirectory { throw .isDirectory }
            guard a.node?.kind == .file else { throw FSError(ENXIO) }
        } else {
            switch try node(inode).content {
            case .directory, .volumes: throw .isDirectory
            default: break
            }
        }
        guard flags & O_ACCMODE == O_RDONLY, flags & O_TRUNC == 0 else { throw .readOnly }
        let handle = nextHandle.wrappingAdd(1, ordering: .relaxed).oldValue
        return (handle, OpenMode(keepCache: true, directIO: false))
    }

    public func read(_ inode: UInt64, handle: UInt64, at offset: UInt64, count: Int,
                     reply: ([UnsafeRawBufferPointer]) -> Void) throws(FSError) {
        if case let (volume, id)? = try volumeNode(inode) {
            if let stored = volume.reader.storedOffset(of: id, at: offset) {
                readAhead?.noteRead(handle: handle, at: volume.offset + stored, count: count, starts: offset == 0)
            }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 16)
            defer { buffer.deallocate() }
            let n = try call(volume) { () throws(VolumeError) in try volume.reader.read(id, at: offset, into: buffer) }
            return reply([UnsafeRawBufferPointer(rebasing: buffer[0..<n])])
        }
        switch try node(inode).content {
        case .directory, .volumes: throw .isDirectory
        case .disk(let base, let length):
            let n = offset < length ? Int(min(UInt64(count), length - offset)) : 0
            guard n > 0 else { return reply([]) }
            readAhead?.noteRead(handle: handle, at: base + offset, count: n)
            do {
                try source.bytes.withBytes(at: base + offset, count: n, reply)
            } catch {
                reportReadError(error, at: base + offset)
                throw .ioError
            }
        case .generated(let file):
            let bytes: [UInt8]
            do { bytes = try file.content() } catch {
                reportReadError(error, at: nil)
                throw .ioError
            }
            let start = Int(min(offset, UInt64(bytes.count)))
            let end = min(bytes.count, start + count)
            bytes.withUnsafeBytes { reply([UnsafeRawBufferPointer(rebasing: $0[start..<end])]) }
        }
    }

    public func readLink(_ inode: UInt64) throws(FSError) -> [UInt8] {
        guard case let (volume, id)? = try volumeNode(inode) else { throw .invalid }
        return try call(volume) { () throws(VolumeError) in try volume.reader.linkTarget(of: id) }
    }

    public func extendedAttributeNames(of inode: UInt64) throws(FSError) -> [String] {
        guard case let (volume, id)? = try volumeNode(inode) else { return [] }
        return try call(volume) { () throws(VolumeError) in try volume.reader.extendedAttributeNames(of: id) }
    }

    public func extendedAttribute(_ name: String, of inode: UInt64) throws(FSError) -> [UInt8] {
        guard case let (volume, id)? = try volumeNode(inode) else { throw .noAttribute }
        return try call(volume) { () throws(VolumeError) in try volume.reader.extendedAttribute(name, of: id) }
    }

    static let nodeMask: UInt64 = (1 << volumeShift) - 1

    /// The volume and its own node number of an inode under `volumes/`; nil for the view's own.
    private func volumeNode(_ inode: UInt64) throws(FSError) -> (MountedVolume, UInt64)? {
        let index = inode >> Self.volumeShift
        guard index != 0 else { return nil }
        guard index <= UInt64(volumes.count) else { throw .notFound }
        return (volumes[Int(index) - 1], inode & Self.nodeMask)
    }

    private func isVolumes(_ inode: UInt64) -> Bool {
        guard let n = try? node(inode), case .volumes = n.content else { return false }
        return true
    }

    /// A volume reader's answer, its errors as errno; damage is logged (it reaches readers only as EIO).
    private func call<T>(_ volume: MountedVolume, _ body: () throws(VolumeError) -> T) throws(FSError) -> T {
        do {
            return try body()
        } catch {
            switch error {
            case .notFound: throw .notFound
            case .notDirectory: throw .notDirectory
            case .isDirectory: throw .isDirectory
            case .notSymbolicLink: throw .invalid
            case .noAttribute: throw .noAttribute
            case .tooLarge: throw FSError(E2BIG)
            case .damaged:
                log("asr mount: \(source.path): volumes/\(volume.name): \(error)")
                throw .ioError
            }
        }
    }

    public func release(_ inode: UInt64, handle: UInt64) {
        readAhead?.forget(handle: handle)
    }

    public func capacity() -> (total: UInt64, free: UInt64) { (source.bytes.byteCount, 0) }

    private func reportReadError(_ error: any Error, at offset: UInt64?) {
        let place = offset.map { " at byte \($0)" } ?? ""
        log("asr mount: \(source.path)\(place): \(error)")
    }
}

/// A file whose bytes are made from the image's digests, on first read. Its size is known
/// before: the text is the same length whatever the digest values.
final class GeneratedFile: Sendable {
    let size: UInt64
    private let bytes: Once<[UInt8]>

    init(digests: Once<DiskDigests>, plan: DiskDigests.Plan, render: @escaping @Sendable (DiskDigests) -> [UInt8]) {
        let size = UInt64(render(DiskDigests.placeholders(for: plan)).count)
        self.size = size
        bytes = Once {
            let real = render(try digests.value())
            precondition(UInt64(real.count) == size, "generated file changed length")
            return real
        }
    }

    init(fixed: [UInt8]) {
        size = UInt64(fixed.count)
        bytes = Once(ready: fixed)
    }

    func content() throws -> [UInt8] { try bytes.value() }
}
