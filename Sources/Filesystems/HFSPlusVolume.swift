import SystemSupport
import UDIF

/// An HFS+ or HFSX tree (Apple TN1150), parsed here: the catalog B-tree for names and
/// attributes, the extents overflow B-tree for fragmented forks, the attributes B-tree for
/// extended attributes, hard links through the private directories' `iNode<N>` and `dir_<N>`,
/// and decmpfs-compressed files decoded on read. The three B-trees' leaf chains are walked
/// once at open, so a damaged tree is refused before anything is shown. What macOS hides
/// stays hidden: the private directories and the journal's files.
final class HFSPlusVolume: VolumeReader, Sendable {
    let filesystem: String
    let label: String
    let rootNode: UInt64 = 2
    let partition: Partition
    let blockSize: UInt64
    let totalBlocks: UInt64
    let extentsTree: HFSPlusBTree
    let catalog: HFSPlusBTree
    let attributesTree: HFSPlusBTree?
    /// "\0\0\0\0HFS+ Private Data" (file hard links) and ".HFS+ Private Directory Data\r".
    let fileLinks: UInt32?
    let directoryLinks: UInt32?
    private let caches = Locked(Caches())
    private let compressed = DecmpfsReader()

    struct Caches {
        var listings: [UInt32: [Child]] = [:]
        var entries: [UInt32: [NodeEntry]] = [:]
        /// The private directories' children by name, for hard links.
        var links: [UInt32: [String: Child]] = [:]
        var records: [UInt32: Child] = [:]
        var forks: [UInt64: ForkMap] = [:]
        var compression: [UInt32: Decmpfs] = [:]
    }

    /// A catalog record found in its parent's listing.
    struct Child: Sendable {
        var name: String
        var parent: UInt32
        var record: CatalogRecord
    }

    static let hfsEpochOffset: Int64 = 2_082_844_800  // 1904-01-01 to 1970-01-01
    static let maxCached = 1 << 16
    static let maxListing = 1 << 22
    static let maxAttributeBytes = 16 << 20
    static let hiddenInRoot: Set<String> = [".journal", ".journal_info_block", ".HFS+ Private Directory Data\r"]

    init(_ partition: Partition, header h: [UInt8], filesystem: String) throws(VolumeError) {
        self.partition = partition
        self.filesystem = filesystem
        blockSize = h.be32(40)
        totalBlocks = h.be32(44)
        guard blockSize.isPowerOfTwo, blockSize >= 512, blockSize <= 1 << 20, totalBlocks > 0,
              let bytes = totalBlocks.times(blockSize), bytes <= partition.length else {
            throw .damaged("its volume header gives \(totalBlocks) blocks of \(blockSize) bytes for a \(partition.length)-byte partition")
        }
        if h.be32(4) & HFSPlus.journaledBit != 0 {
            do throws(FilesystemError) {
                try HFSPlus.checkJournalEmpty(partition, block: h.be32(12), blockSize: blockSize, blocks: totalBlocks)
            } catch {
                throw .damaged(error.description)
            }
        }
        let (partition, blockSize, totalBlocks) = (partition, blockSize, totalBlocks)
        func tree(_ name: String, fork: HFSPlusFork, overflow: HFSPlusBTree?, id: UInt32) throws(VolumeError) -> HFSPlusBTree {
            let map = try ForkMap(fork, id: id, type: 0, overflow: overflow, blockSize: blockSize, totalBlocks: totalBlocks)
            return try HFSPlusBTree(name: name, fileBytes: map.logicalSize) { (offset, count) throws(VolumeError) in
                var bytes = [UInt8](repeating: 0, count: count)
                try map.read(partition, at: offset, into: &bytes)
                return bytes
            }
        }
        extentsTree = try tree("extents overflow", fork: HFSPlusFork(h, at: 192), overflow: nil, id: 3)
        try extentsTree.check { a, b in (a.be32(2), a.be(0, 1), a.be32(6)) < (b.be32(2), b.be(0, 1), b.be32(6)) }
        catalog = try tree("catalog", fork: HFSPlusFork(h, at: 272), overflow: extentsTree, id: 4)
        try catalog.check { a, b in a.be32(0) <= b.be32(0) }
        let attributes = HFSPlusFork(h, at: 352)
        if attributes.logicalSize > 0 {
            let t = try tree("attributes", fork: attributes, overflow: extentsTree, id: 8)
            try t.check { a, b in a.be32(2) <= b.be32(2) }
            attributesTree = t
        } else {
            attributesTree = nil
        }
        // The root's thread names the volume; the root's listing holds the private directories.
        label = try Self.thread(of: 2, in: catalog)?.name ?? ""
        let root = try Self.list(2, in: catalog)
        fileLinks = root.first { $0.name == "\0\0\0\0HFS+ Private Data" && $0.record.isFolder }?.record.id
        directoryLinks = root.first { $0.name == ".HFS+ Private Directory Data\r" && $0.record.isFolder }?.record.id
        _ = try entries(of: rootNode)
    }

    // MARK: Catalog

    /// The thread record of `id`: its parent and name.
    static func thread(of id: UInt32, in catalog: HFSPlusBTree) throws(VolumeError) -> (parent: UInt32, name: String)? {
        let compare = { (key: ArraySlice<UInt8>) -> Int in
            let p = UInt32(key.be32(0))
            return p < id ? -1 : p > id ? 1 : key.be16(4) == 0 ? 0 : 1
        }
        guard let leaf = try catalog.leaf(for: compare) else { return nil }
        var found: (UInt32, String)? = nil
        try catalog.walk(from: leaf) { (key, data) throws(VolumeError) in
            let c = compare(key)
            if c < 0 { return true }
            if c == 0, [3, 4].contains(data.be16(0)) {
                let name = try Self.name(Array(data), at: 8)
                found = (UInt32(data.be32(4)), name)
            }
            return false
        }
        return found
    }

    /// The records whose parent is `parent`, in catalog order, names as the catalog has them.
    static func list(_ parent: UInt32, in catalog: HFSPlusBTree) throws(VolumeError) -> [Child] {
        let compare = { (key: ArraySlice<UInt8>) -> Int in
            let p = UInt32(key.be32(0))
            return p < parent ? -1 : p > parent ? 1 : key.be16(4) == 0 ? 0 : 1
        }
        guard let leaf = try catalog.leaf(for: compare) else { return [] }
        var children: [Child] = []
        try catalog.walk(from: leaf) { (key, data) throws(VolumeError) in
            let p = UInt32(key.be32(0))
            if p < parent { return true }
            if p > parent { return false }
            let type = data.be16(0)
            guard type == 1 || type == 2 else { return true }
            guard children.count < maxListing else { throw .damaged("folder \(parent) has more than \(maxListing) entries") }
            let name = try Self.name(Array(key), at: 4)
            children.append(Child(name: name, parent: parent, record: try CatalogRecord(Array(data))))
            return true
        }
        return children
    }

    /// An HFSUniStr255 (u16 length, UTF-16BE) at `at`.
    static func name(_ bytes: [UInt8], at: Int) throws(VolumeError) -> String {
        let length = Int(bytes.be16(at))
        guard length <= 255, at + 2 + 2 * length <= bytes.count else { throw .damaged("a catalog name of \(length) characters does not fit its record") }
        let units = (0..<length).map { UInt16(bytes.be16(at + 2 + 2 * $0)) }
        return String(decoding: units, as: UTF16.self)
    }

    /// The directory's children, cached, and each remembered by its ID.
    private func children(of id: UInt32) throws(VolumeError) -> [Child] {
        if let hit = caches.withLock({ $0.listings[id] }) { return hit }
        let listed = try Self.list(id, in: catalog)
        caches.withLock { c in
            if c.listings.count >= Self.maxCached { c.listings.removeAll() }
            if c.records.count + listed.count >= 4 * Self.maxCached { c.records.removeAll() }
            c.listings[id] = listed
            for child in listed { c.records[child.record.id] = child }
        }
        return listed
    }

    /// The record of `id`, through its thread and its parent's listing.
    private func child(_ id: UInt32) throws(VolumeError) -> Child {
        if let hit = caches.withLock({ $0.records[id] }) { return hit }
        guard let thread = try Self.thread(of: id, in: catalog) else { throw .notFound }
        guard let found = try children(of: thread.parent).first(where: { $0.record.id == id }) else {
            throw .damaged("catalog node \(id)'s thread names folder \(thread.parent), which does not hold it")
        }
        return found
    }

    private func nodeID(_ node: UInt64) throws(VolumeError) -> UInt32 {
        guard node >= 1, node <= UInt64(UInt32.max) else { throw .notFound }
        return UInt32(node)
    }

    /// What a listed record stands for: a hard link's indirect node, or the record itself.
    private func resolve(_ child: Child) throws(VolumeError) -> Child {
        let r = child.record
        if !r.isFolder, r.fileType == 0x686C_6E6B, r.creator == 0x6866_732B, let fileLinks {  // 'hlnk' 'hfs+'
            return try linked("iNode\(r.special)", in: fileLinks)
        }
        if !r.isFolder, r.fileType == 0x6664_7270, r.creator == 0x4D41_4353, let directoryLinks {  // 'fdrp' 'MACS'
            return try linked("dir_\(r.special)", in: directoryLinks)
        }
        return child
    }

    private func linked(_ name: String, in directory: UInt32) throws(VolumeError) -> Child {
        var byName = caches.withLock { $0.links[directory] }
        if byName == nil {
            let built = Dictionary(try children(of: directory).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
            caches.withLock { $0.links[directory] = built }
            byName = built
        }
        guard let target = byName?[name] else {
            throw .damaged("a hard link's \(name) is missing")
        }
        return target
    }

    // MARK: VolumeReader

    func entries(of directory: UInt64) throws(VolumeError) -> [NodeEntry] {
        let id = try nodeID(directory)
        if let hit = caches.withLock({ $0.entries[id] }) { return hit }
        guard try child(id).record.isFolder else { throw .notDirectory }
        var entries: [NodeEntry] = []
        for c in try children(of: id) {
            if c.name.unicodeScalars.contains("\0") || (id == 2 && Self.hiddenInRoot.contains(c.name)) { continue }
            let target: Child
            do throws(VolumeError) { target = try resolve(c) } catch { continue }  // a dangling link is left out
            guard target.record.id != id, target.record.id != 2 else { continue }
            // The catalog keeps POSIX's ":" as "/", as macOS's HFS+ does.
            let name = String(c.name.unicodeScalars.map { $0 == "/" ? ":" : Character($0) })
            entries.append(NodeEntry(name: name, node: UInt64(target.record.id), kind: target.record.kind))
        }
        caches.withLock { c in
            if c.entries.count >= Self.maxCached { c.entries.removeAll() }
            c.entries[id] = entries
        }
        return entries
    }

    func attributes(of node: UInt64) throws(VolumeError) -> NodeAttributes {
        let c = try child(try nodeID(node))
        let r = c.record
        let time = { (t: UInt32) in Timestamp(seconds: Int64(t) - Self.hfsEpochOffset) }
        var size: UInt64 = 0
        var links: UInt32 = 1
        if r.isFolder {
            links = 2 + UInt32(clamping: try children(of: r.id).filter { $0.record.isFolder }.count)
        } else {
            size = r.dataFork.logicalSize
            if r.isCompressed, r.kind == .file, let d = try decmpfs(r) { size = d.size }
            if c.parent == fileLinks, c.name.hasPrefix("iNode") { links = max(1, r.special) }
        }
        var a = NodeAttributes(kind: r.kind, permissions: r.permissions, uid: r.hasBSDInfo ? r.uid : 99, gid: r.hasBSDInfo ? r.gid : 99,
                               size: size, linkCount: links, accessed: time(r.accessed), modified: time(r.contentModified),
                               changed: time(r.attributeModified))
        if r.kind == .characterDevice || r.kind == .blockDevice {
            a.deviceMajor = r.special >> 24
            a.deviceMinor = r.special & 0xFF_FFFF
        }
        a.allocatedBytes = (r.dataFork.totalBlocks + r.resourceFork.totalBlocks).times(blockSize)
        return a
    }

    func read(_ node: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) -> Int {
        let r = try child(try nodeID(node)).record
        guard !r.isFolder else { throw .isDirectory }
        if r.isCompressed, r.kind == .file, let d = try decmpfs(r) { return try readCompressed(r, d, at: offset, into: buffer) }
        let map = try forkMap(r, type: 0)
        guard offset < map.logicalSize, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), map.logicalSize - offset))
        try map.read(partition, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
        return count
    }

    func storedOffset(of node: UInt64, at offset: UInt64) -> UInt64? {
        guard let r = try? child(try nodeID(node)).record, !r.isFolder, !r.isCompressed, let map = try? forkMap(r, type: 0) else { return nil }
        return map.stored(at: offset)
    }

    func linkTarget(of node: UInt64) throws(VolumeError) -> [UInt8] {
        let r = try child(try nodeID(node)).record
        guard r.kind == .symbolicLink else { throw .notSymbolicLink }
        let map = try forkMap(r, type: 0)
        guard map.logicalSize <= 1 << 16 else { throw .damaged("symbolic link \(node) is \(map.logicalSize) bytes long") }
        var bytes = [UInt8](repeating: 0, count: Int(map.logicalSize))
        try map.read(partition, at: 0, into: &bytes)
        return bytes
    }

    // MARK: Forks

    private func forkMap(_ r: CatalogRecord, type: UInt8) throws(VolumeError) -> ForkMap {
        let key = UInt64(r.id) << 8 | UInt64(type)
        if let hit = caches.withLock({ $0.forks[key] }) { return hit }
        let map = try ForkMap(type == 0 ? r.dataFork : r.resourceFork, id: r.id, type: type, overflow: extentsTree,
                              blockSize: blockSize, totalBlocks: totalBlocks)
        caches.withLock { c in
            if c.forks.count >= Self.maxCached { c.forks.removeAll() }
            c.forks[key] = map
        }
        return map
    }

    // MARK: Extended attributes

    /// One attribute of the attributes B-tree: inline data, or a fork of its own.
    private func storedAttributes(of id: UInt32, named wanted: String?) throws(VolumeError) -> [(String, [UInt8]?)] {
        guard let tree = attributesTree else { return [] }
        let compare = { (key: ArraySlice<UInt8>) -> Int in
            let f = UInt32(key.be32(2))
            return f < id ? -1 : f > id ? 1 : key.be16(10) == 0 ? 0 : 1
        }
        guard let leaf = try tree.leaf(for: compare) else { return [] }
        var found: [(String, [UInt8]?)] = []
        var fork: (name: String, fork: HFSPlusFork)? = nil
        try tree.walk(from: leaf) { (key, data) throws(VolumeError) in
            let f = UInt32(key.be32(2))
            if f < id { return true }
            if f > id { return false }
            let name = try Self.name(Array(key), at: 10)
            let d = Array(data)
            switch d.be32(0) {
            case 0x10:
                let size = Int(d.be32(12))
                guard 16 + size <= d.count else { throw .damaged("extended attribute \(name) of \(id) does not fit its record") }
                found.append((name, wanted == name ? Array(d[16..<(16 + size)]) : nil))
            case 0x20:
                guard d.count >= 88 else { throw .damaged("extended attribute \(name) of \(id) has a short fork record") }
                found.append((name, nil))
                if wanted == name { fork = (name, HFSPlusFork(d, at: 8)) }
            case 0x30:
                // More extents of the fork attribute just before, in key order.
                if var f = fork, f.name == name, d.count >= 72 {
                    for i in 0..<8 where d.be32(12 + 8 * i) > 0 { f.fork.extents.append((d.be32(8 + 8 * i), d.be32(12 + 8 * i))) }
                    fork = f
                }
            default:
                break
            }
            return true
        }
        if let fork {
            guard fork.fork.logicalSize <= UInt64(Self.maxAttributeBytes) else {
                throw .damaged("extended attribute \(fork.name) of \(id) is \(fork.fork.logicalSize) bytes")
            }
            let map = try ForkMap(fork.fork, id: id, type: 0, overflow: nil, blockSize: blockSize, totalBlocks: totalBlocks)
            var bytes = [UInt8](repeating: 0, count: Int(fork.fork.logicalSize))
            try map.read(partition, at: 0, into: &bytes)
            if let i = found.firstIndex(where: { $0.0 == fork.name }) { found[i].1 = bytes }
        }
        return found
    }

    /// Attributes macOS keeps to itself: the compression header, and system ones.
    static func isHidden(_ name: String) -> Bool { name == "com.apple.decmpfs" || name.hasPrefix("com.apple.system.") }

    func extendedAttributeNames(of node: UInt64) throws(VolumeError) -> [String] {
        let r = try child(try nodeID(node)).record
        guard r.kind == .file || r.kind == .directory else { return [] }
        var names: [String] = []
        if r.finderInfo.contains(where: { $0 != 0 }) { names.append("com.apple.FinderInfo") }
        if r.resourceFork.logicalSize > 0, !r.isCompressed || (try? decmpfs(r)) == nil { names.append("com.apple.ResourceFork") }
        for (name, _) in try storedAttributes(of: r.id, named: nil) where !Self.isHidden(name) && !names.contains(name) {
            names.append(name)
        }
        return names.map { "user." + $0 }
    }

    func extendedAttribute(_ name: String, of node: UInt64) throws(VolumeError) -> [UInt8] {
        let r = try child(try nodeID(node)).record
        guard name.hasPrefix("user."), r.kind == .file || r.kind == .directory else { throw .noAttribute }
        let bare = String(name.dropFirst(5))
        switch bare {
        case "com.apple.FinderInfo":
            guard r.finderInfo.contains(where: { $0 != 0 }) else { throw .noAttribute }
            return r.finderInfo
        case "com.apple.ResourceFork":
            guard r.resourceFork.logicalSize > 0, !r.isCompressed || (try? decmpfs(r)) == nil else { throw .noAttribute }
            // Linux takes extended attributes of up to 64 KiB.
            guard r.resourceFork.logicalSize <= 1 << 16 else { throw .tooLarge }
            let map = try forkMap(r, type: 0xFF)
            var bytes = [UInt8](repeating: 0, count: Int(map.logicalSize))
            try map.read(partition, at: 0, into: &bytes)
            return bytes
        default:
            guard !Self.isHidden(bare), let value = try storedAttributes(of: r.id, named: bare).first(where: { $0.0 == bare })?.1 else {
                throw .noAttribute
            }
            guard value.count <= 1 << 16 else { throw .tooLarge }
            return value
        }
    }

    // MARK: Compression

    /// The file's com.apple.decmpfs header, or nil when it has none (then its data fork is read).
    private func decmpfs(_ r: CatalogRecord) throws(VolumeError) -> Decmpfs? {
        if let hit = caches.withLock({ $0.compression[r.id] }) { return hit }
        guard let attribute = try storedAttributes(of: r.id, named: "com.apple.decmpfs").first(where: { $0.0 == "com.apple.decmpfs" })?.1 else {
            return nil
        }
        let d = try DecmpfsReader.header(attribute, forkSize: r.resourceFork.logicalSize, fork: resourceFork(r))
        caches.withLock { c in
            if c.compression.count >= Self.maxCached { c.compression.removeAll() }
            c.compression[r.id] = d
        }
        return d
    }

    /// The resource fork's bytes, its extents mapped only when first read (inline-compressed
    /// files never need them).
    private func resourceFork(_ r: CatalogRecord) -> DecmpfsReader.Fork {
        let partition = partition
        return { [self] (offset, count) throws(VolumeError) in
            let map = try forkMap(r, type: 0xFF)
            var bytes = [UInt8](repeating: 0, count: count)
            try map.read(partition, at: offset, into: &bytes)
            return bytes
        }
    }

    private func readCompressed(_ r: CatalogRecord, _ d: Decmpfs, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) -> Int {
        try compressed.read(d, file: UInt64(r.id), at: offset, into: buffer, forkSize: r.resourceFork.logicalSize, fork: resourceFork(r))
    }
}

/// A catalog file or folder record (TN1150's HFSPlusCatalogFile and HFSPlusCatalogFolder).
struct CatalogRecord: Sendable {
    var isFolder: Bool
    var id: UInt32
    var flags: UInt16
    var created: UInt32, contentModified: UInt32, attributeModified: UInt32, accessed: UInt32
    var uid: UInt32, gid: UInt32
    var ownerFlags: UInt8
    var mode: UInt16
    /// The BSD info's union: an indirect node's link count, a hard link's iNode number, a device.
    var special: UInt32
    var fileType: UInt32, creator: UInt32
    /// userInfo and finderInfo, as com.apple.FinderInfo shows them: like macOS, without the
    /// extended info's document ID, date added and write generation (all zeros means none).
    var finderInfo: [UInt8]
    var dataFork: HFSPlusFork
    var resourceFork: HFSPlusFork

    init(_ d: [UInt8]) throws(VolumeError) {
        let type = d.be16(0)
        isFolder = type == 1
        guard d.count >= (isFolder ? 88 : 248) else { throw .damaged("a catalog record of type \(type) is \(d.count) bytes") }
        flags = UInt16(d.be16(2))
        id = UInt32(d.be32(8))
        created = UInt32(d.be32(12))
        contentModified = UInt32(d.be32(16))
        attributeModified = UInt32(d.be32(20))
        accessed = UInt32(d.be32(24))
        uid = UInt32(d.be32(32))
        gid = UInt32(d.be32(36))
        ownerFlags = d[41]
        mode = UInt16(d.be16(42))
        special = UInt32(d.be32(44))
        fileType = isFolder ? 0 : UInt32(d.be32(48))
        creator = isFolder ? 0 : UInt32(d.be32(52))
        var info = Array(d[48..<80])
        for i in [16, 17, 18, 19, 20, 21, 22, 23, 28, 29, 30, 31] { info[i] = 0 }
        finderInfo = info
        let empty = [UInt8](repeating: 0, count: 80)
        dataFork = HFSPlusFork(isFolder ? empty : d, at: isFolder ? 0 : 88)
        resourceFork = HFSPlusFork(isFolder ? empty : d, at: isFolder ? 0 : 168)
        guard id >= 1 else { throw .damaged("a catalog record has node ID 0") }
    }

    var hasBSDInfo: Bool { mode & 0o170000 != 0 }

    var kind: NodeKind {
        if isFolder { return .directory }
        // A file record is never a directory, whatever its mode says.
        guard let kind = NodeKind(mode: UInt32(mode)), kind != .directory else { return .file }
        return kind
    }

    /// The BSD mode's permission bits; macOS's defaults when the record has none.
    var permissions: UInt32 { hasBSDInfo ? UInt32(mode) & 0o7777 : isFolder ? 0o755 : 0o644 }

    /// UF_COMPRESSED: the content is in com.apple.decmpfs (and maybe the resource fork).
    var isCompressed: Bool { ownerFlags & 0x20 != 0 }
}

/// Where a fork's bytes are: its extents, with the extents overflow file's after the first
/// eight, each checked to lie inside the volume.
struct ForkMap: Sendable {
    let logicalSize: UInt64
    let blockSize: UInt64
    /// (first block of the fork, first block of the volume, count)
    let runs: [(fileBlock: UInt64, start: UInt64, count: UInt64)]
    static let maxRuns = 1 << 20

    init(_ fork: HFSPlusFork, id: UInt32, type: UInt8, overflow: HFSPlusBTree?, blockSize: UInt64, totalBlocks: UInt64) throws(VolumeError) {
        logicalSize = fork.logicalSize
        self.blockSize = blockSize
        var extents = fork.extents
        var mapped = fork.mappedBlocks
        let needed = (fork.logicalSize + blockSize - 1) / blockSize
        // More extents are in the overflow file, keyed by the fork's block they start at.
        while mapped < needed, let overflow, extents.count < Self.maxRuns {
            let want = (id, type, UInt32(truncatingIfNeeded: mapped))
            let compare = { (key: ArraySlice<UInt8>) -> Int in
                let k = (UInt32(key.be32(2)), UInt8(key.be(0, 1)), UInt32(key.be32(6)))
                return k < want ? -1 : k == want ? 0 : 1
            }
            guard let leaf = try overflow.leaf(for: compare) else { break }
            var more: [(start: UInt64, count: UInt64)] = []
            try overflow.walk(from: leaf) { (key, data) throws(VolumeError) in
                let c = compare(key)
                if c < 0 { return true }
                if c == 0 {
                    for i in 0..<8 where data.be32(4 + 8 * i) > 0 { more.append((data.be32(8 * i), data.be32(4 + 8 * i))) }
                }
                return false
            }
            guard !more.isEmpty else { break }
            extents += more
            mapped += more.reduce(0) { $0 + $1.count }
        }
        guard mapped >= needed else {
            throw .damaged("file \(id)'s fork of \(fork.logicalSize) bytes has only \(mapped) blocks mapped")
        }
        var runs: [(UInt64, UInt64, UInt64)] = []
        var fileBlock: UInt64 = 0
        for e in extents {
            guard e.start < totalBlocks, e.count <= totalBlocks - e.start else {
                throw .damaged("file \(id)'s extent at block \(e.start) (\(e.count) blocks) is past the volume's \(totalBlocks)")
            }
            runs.append((fileBlock, e.start, e.count))
            fileBlock += e.count
            if fileBlock >= needed { break }
        }
        self.runs = runs
    }

    func read(_ partition: Partition, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) {
        guard offset <= logicalSize, UInt64(buffer.count) <= logicalSize - offset else { throw .damaged("a read past a fork's end") }
        var done = 0
        var i = index(of: offset / blockSize)
        while done < buffer.count {
            guard i < runs.count else { throw .damaged("a fork's extents end before its size") }
            let at = offset + UInt64(done)
            let r = runs[i]
            let runStart = r.fileBlock * blockSize, runEnd = (r.fileBlock + r.count) * blockSize
            guard at >= runStart, at < runEnd else { i += 1; continue }
            let n = Int(min(UInt64(buffer.count - done), runEnd - at))
            do throws(FilesystemError) {
                try partition.read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]), at: r.start * blockSize + (at - runStart))
            } catch {
                throw .damaged(error.description)
            }
            done += n
            i += 1
        }
    }

    func read(_ partition: Partition, at offset: UInt64, into bytes: inout [UInt8]) throws(VolumeError) {
        var failure: VolumeError? = nil
        bytes.withUnsafeMutableBytes { b in
            do throws(VolumeError) { try read(partition, at: offset, into: b) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// The run holding the fork's block `block` (or the end).
    func index(of block: UInt64) -> Int {
        var low = 0, high = runs.count
        while low < high {
            let mid = (low + high) / 2
            if runs[mid].fileBlock + runs[mid].count <= block { low = mid + 1 } else { high = mid }
        }
        return low
    }

    func stored(at offset: UInt64) -> UInt64? {
        let i = index(of: offset / blockSize)
        guard i < runs.count, offset < logicalSize else { return nil }
        return runs[i].start * blockSize + offset - runs[i].fileBlock * blockSize
    }
}
