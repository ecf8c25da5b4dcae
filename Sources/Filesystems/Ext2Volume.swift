import CFilesystemIO
import SystemSupport

/// An ext2/3/4 tree read through libext2fs (CFilesystemIO's ext2tree.c): directories, inodes,
/// block runs, symlinks and extended attributes. libext2fs is not thread-safe, so its calls
/// run under one lock; file data is read outside it, from the runs, through the partition's
/// source (the image's chunk cache). Listings, attributes and runs are cached.
final class Ext2Volume: VolumeReader, @unchecked Sendable {  // owns the C volume and its io
    let filesystem: String
    let label: String
    let rootNode: UInt64 = 2
    private let partition: Partition
    private let blockSize: UInt64
    private let inodeCount: UInt64
    private let io: UnsafeMutablePointer<asr_fs_io>
    private let errorText: UnsafeMutablePointer<CChar>
    private let reader: PartitionReader
    /// The C volume, and the caches, behind one lock.
    private let state: Locked<State>

    struct Run {
        var logical: UInt64
        var physical: UInt64
        var count: UInt64
        var zero: Bool
    }

    enum Layout {
        case runs([Run])
        case inline([UInt8])
    }

    struct State: @unchecked Sendable {  // the C handle is used only under the lock
        var volume: OpaquePointer
        var listings: [UInt64: [NodeEntry]] = [:]
        var attributes: [UInt64: NodeAttributes] = [:]
        var layouts: [UInt64: Layout] = [:]
    }

    // Caps: a hostile filesystem cannot make us hold more than these.
    static let maxEntries: UInt64 = 1 << 22
    static let maxRuns: UInt64 = 1 << 20
    static let maxCached = 1 << 16
    static let maxLinkTarget: UInt64 = 1 << 16

    init(_ partition: Partition, filesystem: String) throws(VolumeError) {
        self.partition = partition
        self.filesystem = filesystem
        reader = PartitionReader(partition)
        errorText = .allocate(capacity: 512)
        errorText.initialize(repeating: 0, count: 512)
        io = .allocate(capacity: 1)
        io.initialize(to: asr_fs_io(
            read: { context, buffer, offset, count in
                guard let context, let buffer, count <= UInt64(Int.max) else { return -1 }
                let reader = Unmanaged<PartitionReader>.fromOpaque(context).takeUnretainedValue()
                do {
                    try reader.partition.read(into: UnsafeMutableRawBufferPointer(start: buffer, count: Int(count)), at: offset)
                    return 0
                } catch {
                    return -1
                }
            },
            allocated: { _, _, _ in },
            context: Unmanaged.passUnretained(reader).toOpaque(),
            length: partition.length, error: errorText, error_capacity: 512))
        guard let volume = asr_ext2_open(io) else {
            let why = String(cString: errorText)
            io.deallocate()
            errorText.deallocate()
            throw .damaged(why)
        }
        var name = [CChar](repeating: 0, count: 32)
        asr_ext2_label(volume, &name, Int32(name.count))
        label = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        blockSize = UInt64(asr_ext2_block_size(volume))
        inodeCount = asr_ext2_inode_count(volume)
        state = Locked(State(volume: volume))
        // The root must be a readable directory, or there is nothing to show.
        let root = try attributes(of: rootNode)
        guard root.kind == .directory else { throw .damaged("its root inode is not a directory") }
        _ = try entries(of: rootNode)
    }

    deinit {
        state.withLock { asr_ext2_close($0.volume) }
        io.deallocate()
        errorText.deallocate()
    }

    /// The C side's last error; called under the lock.
    private func failure() -> VolumeError { .damaged(String(cString: errorText)) }

    private func inode(_ node: UInt64) throws(VolumeError) -> UInt32 {
        guard node >= 1, node <= inodeCount, node <= UInt64(UInt32.max) else { throw .notFound }
        return UInt32(node)
    }

    static func kind(direntType: Int32) -> NodeKind? {
        switch direntType {
        case 1: .file
        case 2: .directory
        case 3: .characterDevice
        case 4: .blockDevice
        case 5: .fifo
        case 6: .socket
        case 7: .symbolicLink
        default: nil
        }
    }

    func attributes(of node: UInt64) throws(VolumeError) -> NodeAttributes {
        let ino = try inode(node)
        return try state.withLock { (s: inout State) throws(VolumeError) -> NodeAttributes in
            if let cached = s.attributes[node] { return cached }
            var raw = asr_ext2_inode()
            guard asr_ext2_stat(s.volume, ino, &raw) == 0 else { throw failure() }
            guard let kind = NodeKind(mode: raw.mode), raw.links > 0 || node == rootNode else {
                throw .damaged("inode \(node) is not in use or has no file type")
            }
            var a = NodeAttributes(
                kind: kind, permissions: raw.mode & 0o7777, uid: raw.uid, gid: raw.gid, size: raw.size, linkCount: raw.links,
                accessed: Timestamp(seconds: raw.atime, nanoseconds: raw.atime_ns),
                modified: Timestamp(seconds: raw.mtime, nanoseconds: raw.mtime_ns),
                changed: Timestamp(seconds: raw.ctime, nanoseconds: raw.ctime_ns))
            a.deviceMajor = raw.rdev_major
            a.deviceMinor = raw.rdev_minor
            a.allocatedBytes = raw.blocks_512.times(512)
            if s.attributes.count >= Self.maxCached { s.attributes.removeAll() }
            s.attributes[node] = a
            return a
        }
    }

    /// Collects a directory's entries from the C callback.
    private final class Listing {
        var entries: [(name: String, ino: UInt32, type: Int32)] = []
    }

    func entries(of directory: UInt64) throws(VolumeError) -> [NodeEntry] {
        let ino = try inode(directory)
        let raw = try state.withLock { (s: inout State) throws(VolumeError) -> [(name: String, ino: UInt32, type: Int32)]? in
            if s.listings[directory] != nil { return nil }
            let listing = Listing()
            let result = withExtendedLifetime(listing) {
                asr_ext2_list(s.volume, ino, Self.maxEntries, { context, name, length, ino, type in
                    guard let context, let name, length >= 0 else { return 1 }
                    let listing = Unmanaged<Listing>.fromOpaque(context).takeUnretainedValue()
                    let bytes = UnsafeRawBufferPointer(start: name, count: Int(length))
                    listing.entries.append((String(decoding: bytes, as: UTF8.self), ino, type))
                    return 0
                }, Unmanaged.passUnretained(listing).toOpaque())
            }
            guard result == 0 else { throw failure() }
            return listing.entries
        }
        guard let raw else { return state.withLock { $0.listings[directory] ?? [] } }
        var entries: [NodeEntry] = []
        entries.reserveCapacity(raw.count)
        for e in raw {
            // A name with "/" or NUL, or "." and ".." again, cannot be shown.
            guard !e.name.isEmpty, !e.name.utf8.contains(where: { $0 == 0 || $0 == UInt8(ascii: "/") }),
                  e.name != ".", e.name != ".." else { continue }
            // Without the filetype feature the inode says; one that cannot be read is left out.
            guard let kind = Self.kind(direntType: e.type) ?? (try? attributes(of: UInt64(e.ino)))?.kind else { continue }
            entries.append(NodeEntry(name: e.name, node: UInt64(e.ino), kind: kind))
        }
        state.withLock { s in
            if s.listings.count >= Self.maxCached { s.listings.removeAll() }
            s.listings[directory] = entries
        }
        return entries
    }

    private final class RunList {
        var runs: [Run] = []
    }

    private func layout(of node: UInt64) throws(VolumeError) -> Layout {
        let ino = try inode(node)
        let length = partition.length, blockSize = blockSize
        return try state.withLock { (s: inout State) throws(VolumeError) -> Layout in
            if let cached = s.layouts[node] { return cached }
            // The size first: most inodes have no inline data, and need no buffer.
            var n = asr_ext2_inline_data(s.volume, ino, nil, 0)
            var inline: [UInt8] = []
            if n > 0 {
                guard n <= 65536 else { throw .damaged("inode \(node)'s inline data is \(n) bytes") }
                inline = [UInt8](repeating: 0, count: Int(n))
                n = inline.withUnsafeMutableBytes { asr_ext2_inline_data(s.volume, ino, $0.baseAddress, UInt64($0.count)) }
            }
            let layout: Layout
            if n >= 0 {
                layout = .inline(Array(inline.prefix(Int(n))))
            } else if n == -2 {
                let list = RunList()
                let result = withExtendedLifetime(list) {
                    asr_ext2_runs(s.volume, ino, Self.maxRuns, { context, logical, physical, count, zero in
                        guard let context else { return 1 }
                        let list = Unmanaged<RunList>.fromOpaque(context).takeUnretainedValue()
                        list.runs.append(Run(logical: logical, physical: physical, count: count, zero: zero != 0))
                        return 0
                    }, Unmanaged.passUnretained(list).toOpaque())
                }
                guard result == 0 else { throw failure() }
                var end: UInt64 = 0
                for r in list.runs {
                    // Runs ascend without overlapping, and lie inside the partition.
                    guard r.logical >= end, let last = (r.physical + r.count).times(blockSize), last <= length,
                          r.physical.addingReportingOverflow(r.count).overflow == false else {
                        throw .damaged("inode \(node)'s blocks overlap or lie past the end of the partition")
                    }
                    end = r.logical + r.count
                }
                layout = .runs(list.runs)
            } else {
                throw failure()
            }
            if s.layouts.count >= Self.maxCached { s.layouts.removeAll() }
            s.layouts[node] = layout
            return layout
        }
    }

    func read(_ node: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) -> Int {
        let a = try attributes(of: node)
        guard a.kind != .directory else { throw .isDirectory }
        guard offset < a.size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), a.size - offset))
        let out = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
        switch try layout(of: node) {
        case .inline(let bytes):
            out.initializeMemory(as: UInt8.self, repeating: 0)
            let start = Int(min(offset, UInt64(bytes.count))), end = min(bytes.count, start + count)
            if start < end { bytes.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<end])) } }
        case .runs(let runs):
            var done = 0
            var index = Self.firstRun(runs, endingAfter: offset / blockSize)
            while done < count {
                let at = offset + UInt64(done)
                let block = at / blockSize
                let piece: Int
                if index < runs.count, runs[index].logical <= block {
                    let r = runs[index]
                    let runEnd = (r.logical + r.count) * blockSize
                    piece = Int(min(UInt64(count - done), runEnd - at))
                    let target = UnsafeMutableRawBufferPointer(rebasing: out[done..<(done + piece)])
                    if r.zero {
                        target.initializeMemory(as: UInt8.self, repeating: 0)
                    } else {
                        do throws(FilesystemError) {
                            try partition.read(into: target, at: r.physical * blockSize + (at - r.logical * blockSize))
                        } catch {
                            throw .damaged(error.description)
                        }
                    }
                    index += 1
                } else {
                    // A hole, up to the next run.
                    let holeEnd = index < runs.count ? runs[index].logical * blockSize : UInt64.max
                    piece = Int(min(UInt64(count - done), holeEnd - at))
                    UnsafeMutableRawBufferPointer(rebasing: out[done..<(done + piece)]).initializeMemory(as: UInt8.self, repeating: 0)
                }
                done += piece
            }
        }
        return count
    }

    /// The first run whose end is past `block`.
    static func firstRun(_ runs: [Run], endingAfter block: UInt64) -> Int {
        var low = 0, high = runs.count
        while low < high {
            let mid = (low + high) / 2
            if runs[mid].logical + runs[mid].count <= block { low = mid + 1 } else { high = mid }
        }
        return low
    }

    func storedOffset(of node: UInt64, at offset: UInt64) -> UInt64? {
        guard case .runs(let runs)? = try? layout(of: node) else { return nil }
        let block = offset / blockSize
        let i = Self.firstRun(runs, endingAfter: block)
        guard i < runs.count, runs[i].logical <= block, !runs[i].zero else { return nil }
        return runs[i].physical * blockSize + (offset - runs[i].logical * blockSize)
    }

    func linkTarget(of node: UInt64) throws(VolumeError) -> [UInt8] {
        let ino = try inode(node)
        let a = try attributes(of: node)
        guard a.kind == .symbolicLink else { throw .notSymbolicLink }
        guard a.size <= Self.maxLinkTarget else { throw .damaged("symbolic link \(node) is \(a.size) bytes long") }
        var target = [UInt8](repeating: 0, count: 64)
        let n = try state.withLock { (s: inout State) throws(VolumeError) -> Int64 in
            let n = target.withUnsafeMutableBytes { asr_ext2_fast_symlink(s.volume, ino, $0.baseAddress!.assumingMemoryBound(to: CChar.self), 64) }
            if n == -1 { throw failure() }
            return n
        }
        if n >= 0 { return Array(target.prefix(Int(n))) }
        return try readAll(node, size: a.size)
    }

    /// A small file's whole content (a symlink's target).
    func readAll(_ node: UInt64, size: UInt64) throws(VolumeError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var failure: VolumeError? = nil
        let got = bytes.withUnsafeMutableBytes { b in
            do throws(VolumeError) { return try read(node, at: 0, into: b) } catch { failure = error; return 0 }
        }
        if let failure { throw failure }
        return Array(bytes.prefix(got))
    }

    /// Which attributes are shown: user., trusted. and security. as they are; system. (POSIX
    /// ACLs in libext2fs's translation, inline data) is the filesystem's own business.
    static func shows(_ name: String) -> Bool {
        name.hasPrefix("user.") || name.hasPrefix("trusted.") || name.hasPrefix("security.")
    }

    private final class AttributeList {
        var items: [(String, [UInt8])] = []
        let wanted: String?
        init(wanted: String?) { self.wanted = wanted }
    }

    private func xattrs(of node: UInt64, wanted: String?) throws(VolumeError) -> [(String, [UInt8])] {
        let ino = try inode(node)
        return try state.withLock { (s: inout State) throws(VolumeError) -> [(String, [UInt8])] in
            let list = AttributeList(wanted: wanted)
            let result = withExtendedLifetime(list) {
                asr_ext2_xattrs(s.volume, ino, { context, name, value, length in
                    guard let context, let name else { return 1 }
                    let list = Unmanaged<AttributeList>.fromOpaque(context).takeUnretainedValue()
                    let key = String(cString: name)
                    guard Ext2Volume.shows(key), list.wanted == nil || list.wanted == key else { return 0 }
                    let bytes = value.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(length))) } ?? []
                    list.items.append((key, list.wanted == nil ? [] : bytes))
                    return 0
                }, Unmanaged.passUnretained(list).toOpaque())
            }
            guard result == 0 else { throw failure() }
            return list.items
        }
    }

    func extendedAttributeNames(of node: UInt64) throws(VolumeError) -> [String] {
        try xattrs(of: node, wanted: nil).map(\.0)
    }

    func extendedAttribute(_ name: String, of node: UInt64) throws(VolumeError) -> [UInt8] {
        guard Self.shows(name), let found = try xattrs(of: node, wanted: name).first else { throw .noAttribute }
        return found.1
    }
}

/// The partition a C reader's callbacks read, kept alive as long as the reader.
final class PartitionReader: Sendable {
    let partition: Partition
    init(_ partition: Partition) { self.partition = partition }
}
