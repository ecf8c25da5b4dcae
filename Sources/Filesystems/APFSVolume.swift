import SystemSupport
import UDIF

/// One unencrypted APFS volume's tree (its APSB superblock, object map and file-system
/// B-tree), as volumes/ shows it: inodes, directory records (hashed or not; found by their
/// parent, never by name, so case folding is never needed), file extents (holes read as
/// zeros), symlinks (com.apple.fs.symlink), extended attributes inline or in a data stream,
/// hard links (dir records naming one inode), and decmpfs-compressed files. Nodes are the
/// inodes' own numbers. What 7-Zip lists is shown: the root's children (the private
/// directory hangs off inode 1, not the root, so it never appears).
final class APFSVolume: VolumeReader, Sendable {
    let filesystem = "APFS"
    let label: String
    let rootNode: UInt64 = 2
    let blocks: APFSBlocks
    let tree: APFSTree
    let hashedNames: Bool
    private let caches = Locked(Caches())
    private let compressed = DecmpfsReader()

    struct Caches {
        var inodes: [UInt64: Inode] = [:]
        var entries: [UInt64: [NodeEntry]] = [:]
        var streams: [UInt64: Stream] = [:]
        var compression: [UInt64: Decmpfs] = [:]
    }

    static let maxCached = 1 << 16
    /// Node numbers volumes/ can carry (it keeps 40 bits for them); real volumes count up from 16.
    static let maxNode: UInt64 = 1 << 40
    static let maxListing = 1 << 22
    static let maxExtents = 1 << 20
    static let maxAttributeBytes: UInt64 = 16 << 20

    enum RecordType {
        static let inode: UInt64 = 3
        static let xattr: UInt64 = 4
        static let fileExtent: UInt64 = 8
        static let dirRecord: UInt64 = 9
    }

    /// Opens the volume whose superblock is `sb`; throws `.damaged` with why it cannot be shown.
    init(_ container: APFSContainer, superblock sb: [UInt8]) throws(VolumeError) {
        guard sb.le32(32) == 0x4253_5041 else { throw .damaged("its volume superblock has no APSB magic") }  // "APSB"
        let nameBytes = sb[704..<960].prefix { $0 != 0 }
        label = String(decoding: nameBytes, as: UTF8.self)
        guard sb.le64(264) & 1 != 0 else { throw .damaged("it is encrypted") }
        let incompatible = sb.le64(56)
        // A sealed (signed system) volume keeps file extents in a tree of its own, not read here.
        guard incompatible & 0x20 == 0 else { throw .damaged("it is a sealed system volume, which is not read") }
        // Case- or normalization-insensitive volumes key names with a hash.
        hashedNames = incompatible & 0x9 != 0
        blocks = container.blocks
        let omap = try APFSObjectMap(at: sb.le64(128), blocks: blocks)
        let xid = container.xid
        let physical = sb.le32(116) & 0x4000_0000 != 0
        let lookup: @Sendable (UInt64) throws(VolumeError) -> UInt64 = { (oid: UInt64) throws(VolumeError) -> UInt64 in
            try omap.address(of: oid, xid: xid)
        }
        let resolve = physical ? nil : lookup
        tree = try APFSTree(blocks, root: sb.le64(136), subtype: APFSContainer.ObjectType.fstree, fixed: nil, resolve: resolve)
        guard try inode(rootNode).kind == .directory else { throw .damaged("its root is not a directory") }
        _ = try entries(of: rootNode)
    }

    // MARK: Records

    /// The records of `oid` of one type, in key order.
    func records(_ oid: UInt64, type: UInt64, limit: Int = maxListing,
                 _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>) throws(VolumeError) -> Void) throws(VolumeError) {
        let want = (oid, type)
        var seen = 0
        try tree.visit({ k in
            let v = Array(k.prefix(8)).le64(0)
            let have = (v & 0x0FFF_FFFF_FFFF_FFFF, v >> 60)
            return have < want ? -1 : have == want ? 0 : 1
        }) { (key, value) throws(VolumeError) in
            seen += 1
            guard seen <= limit else { throw .damaged("object \(oid) has more than \(limit) records of type \(type)") }
            try body(key, value)
            return true
        }
    }

    struct Inode: Sendable {
        var id: UInt64
        var parent: UInt64
        var stream: UInt64
        var created: UInt64, modified: UInt64, changed: UInt64, accessed: UInt64
        var links: Int32
        var bsdFlags: UInt32
        var uid: UInt32, gid: UInt32
        var mode: UInt16
        var size: UInt64 = 0
        var allocated: UInt64 = 0
        var device: UInt32 = 0

        var kind: NodeKind { NodeKind(mode: UInt32(mode)) ?? .file }

        /// UF_COMPRESSED: the content is in com.apple.decmpfs (and maybe the resource fork).
        var isCompressed: Bool { bsdFlags & 0x20 != 0 }
    }

    func inode(_ id: UInt64) throws(VolumeError) -> Inode {
        guard id >= 1, id < 1 << 60 else { throw .notFound }
        if let hit = caches.withLock({ $0.inodes[id] }) { return hit }
        var found: [UInt8]? = nil
        try records(id, type: RecordType.inode, limit: 1) { (_, value) throws(VolumeError) in found = Array(value) }
        guard let v = found else { throw .notFound }
        guard v.count >= 92 else { throw .damaged("inode \(id)'s record is \(v.count) bytes") }
        var i = Inode(id: id, parent: v.le64(0), stream: v.le64(8), created: v.le64(16), modified: v.le64(24), changed: v.le64(32),
                      accessed: v.le64(40), links: Int32(truncatingIfNeeded: v.le32(56)), bsdFlags: UInt32(v.le32(68)),
                      uid: UInt32(v.le32(72)), gid: UInt32(v.le32(76)), mode: UInt16(v.le16(80)))
        for (type, data) in try Self.extendedFields(v, at: 92) {
            switch type {
            case 8:  // the data stream: size and allocated size
                guard data.count >= 16 else { throw .damaged("inode \(id)'s data stream field is \(data.count) bytes") }
                i.size = data.le64(0)
                i.allocated = data.le64(8)
            case 14:
                i.device = UInt32(data.le32(0))
            default:
                break
            }
        }
        let inode = i
        caches.withLock { c in
            if c.inodes.count >= Self.maxCached { c.inodes.removeAll() }
            c.inodes[id] = inode
        }
        return inode
    }

    /// An xf_blob: a count, the fields' types and sizes, then each field's data on 8-byte boundaries.
    static func extendedFields(_ v: [UInt8], at start: Int) throws(VolumeError) -> [(UInt64, [UInt8])] {
        guard v.count > start else { return [] }
        guard v.count >= start + 4 else { throw .damaged("an inode's extended fields are cut short") }
        let count = Int(v.le16(start))
        var data = start + 4 + 4 * count
        guard data <= v.count else { throw .damaged("an inode's \(count) extended fields do not fit its record") }
        var fields: [(UInt64, [UInt8])] = []
        for k in 0..<count {
            let type = v[start + 4 + 4 * k], size = Int(v.le16(start + 4 + 4 * k + 2))
            guard size <= v.count - data else { throw .damaged("an inode's extended field of \(size) bytes does not fit its record") }
            fields.append((UInt64(type), Array(v[data..<(data + size)])))
            data += (size + 7) & ~7
        }
        return fields
    }

    /// A directory record's name, hashed key (12-byte header) or not (10-byte header).
    func name(_ key: ArraySlice<UInt8>) -> [UInt8]? {
        let k = Array(key)
        let hashedLength = Int(k.le32(8) & 0x3FF), plainLength = Int(k.le16(8))
        let bytes: ArraySlice<UInt8>
        if (hashedNames || k.count != 10 + plainLength) && k.count == 12 + hashedLength {
            bytes = k[12...]
        } else if k.count == 10 + plainLength {
            bytes = k[10...]
        } else {
            return nil
        }
        let name = Array(bytes.prefix { $0 != 0 })
        return name.isEmpty ? nil : name
    }

    static func kind(ofDirectoryType t: UInt64) -> NodeKind {
        switch t & 0xF {
        case 1: .fifo
        case 2: .characterDevice
        case 4: .directory
        case 6: .blockDevice
        case 10: .symbolicLink
        case 12: .socket
        default: .file
        }
    }

    // MARK: VolumeReader

    func entries(of directory: UInt64) throws(VolumeError) -> [NodeEntry] {
        if let hit = caches.withLock({ $0.entries[directory] }) { return hit }
        guard try inode(directory).kind == .directory else { throw .notDirectory }
        var entries: [NodeEntry] = []
        try records(directory, type: RecordType.dirRecord) { (key, value) throws(VolumeError) in
            let v = Array(value)
            guard let bytes = name(key), v.count >= 18 else { throw .damaged("directory \(directory) has a record that cannot be read") }
            let name = String(decoding: bytes, as: UTF8.self)
            let id = v.le64(0)
            guard !bytes.contains(UInt8(ascii: "/")), name != ".", name != "..", id != directory, id != rootNode, id >= 2, id < Self.maxNode else { return }
            entries.append(NodeEntry(name: name, node: id, kind: Self.kind(ofDirectoryType: v.le16(16))))
        }
        let listed = entries
        caches.withLock { c in
            if c.entries.count >= Self.maxCached { c.entries.removeAll() }
            c.entries[directory] = listed
        }
        return listed
    }

    func attributes(of node: UInt64) throws(VolumeError) -> NodeAttributes {
        let i = try inode(node)
        let time = { (ns: UInt64) in Timestamp(seconds: Int64(ns / 1_000_000_000), nanoseconds: UInt32(ns % 1_000_000_000)) }
        var size = i.size
        var links = UInt32(clamping: max(1, Int(i.links)))
        switch i.kind {
        case .directory:
            size = 0
            links = 2 + UInt32(clamping: try entries(of: node).filter { $0.kind == .directory }.count)
        case .symbolicLink:
            size = UInt64((try? linkTarget(of: node))?.count ?? 0)
        case .file:
            if i.isCompressed, let d = try decmpfs(i) { size = d.size }
        default:
            size = 0
        }
        var a = NodeAttributes(kind: i.kind, permissions: UInt32(i.mode) & 0o7777, uid: i.uid, gid: i.gid, size: size, linkCount: links,
                               accessed: time(i.accessed), modified: time(i.modified), changed: time(i.changed))
        if i.kind == .characterDevice || i.kind == .blockDevice {
            a.deviceMajor = i.device >> 24
            a.deviceMinor = i.device & 0xFF_FFFF
        }
        a.allocatedBytes = i.allocated
        return a
    }

    func read(_ node: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) -> Int {
        let i = try inode(node)
        guard i.kind != .directory else { throw .isDirectory }
        if i.kind == .file, i.isCompressed, let d = try decmpfs(i) {
            let fork = try resourceFork(i)
            return try compressed.read(d, file: node, at: offset, into: buffer, forkSize: fork.size, fork: fork.bytes)
        }
        let s = try stream(i.stream, size: i.size)
        guard offset < s.size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), s.size - offset))
        try s.read(blocks, at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count]))
        return count
    }

    func storedOffset(of node: UInt64, at offset: UInt64) -> UInt64? {
        guard let i = try? inode(node), i.kind == .file, !i.isCompressed, let s = try? stream(i.stream, size: i.size) else { return nil }
        return s.stored(at: offset, blockSize: blocks.blockSize)
    }

    func linkTarget(of node: UInt64) throws(VolumeError) -> [UInt8] {
        let i = try inode(node)
        guard i.kind == .symbolicLink else { throw .notSymbolicLink }
        guard let value = try attribute(node, named: "com.apple.fs.symlink") else { throw .damaged("symbolic link \(node) has no target") }
        var target = value
        while target.last == 0 { target.removeLast() }
        guard target.count <= 1 << 16 else { throw .damaged("symbolic link \(node) is \(target.count) bytes long") }
        return target
    }

    // MARK: Data streams

    /// A data stream's extents: (file offset, length, physical block or 0 for a hole), sorted.
    struct Stream: Sendable {
        var size: UInt64
        var extents: [(offset: UInt64, length: UInt64, block: UInt64)]

        func index(of offset: UInt64) -> Int {
            var low = 0, high = extents.count
            while low < high {
                let mid = (low + high) / 2
                if extents[mid].offset + extents[mid].length <= offset { low = mid + 1 } else { high = mid }
            }
            return low
        }

        /// Bytes no extent covers, and holes, read as zeros.
        func read(_ blocks: APFSBlocks, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) {
            var done = 0
            var i = index(of: offset)
            while done < buffer.count {
                let at = offset + UInt64(done)
                let out = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
                guard i < extents.count else { out.initializeMemory(as: UInt8.self, repeating: 0); return }
                let e = extents[i]
                if at < e.offset {
                    let n = Int(min(UInt64(out.count), e.offset - at))
                    UnsafeMutableRawBufferPointer(rebasing: out[0..<n]).initializeMemory(as: UInt8.self, repeating: 0)
                    done += n
                    continue
                }
                let n = Int(min(UInt64(out.count), e.offset + e.length - at))
                let piece = UnsafeMutableRawBufferPointer(rebasing: out[0..<n])
                if e.block == 0 {
                    piece.initializeMemory(as: UInt8.self, repeating: 0)
                } else {
                    try blocks.read(into: piece, block: e.block, offset: at - e.offset)
                }
                done += n
                i += 1
            }
        }

        func stored(at offset: UInt64, blockSize: UInt64) -> UInt64? {
            let i = index(of: offset)
            guard offset < size, i < extents.count, extents[i].offset <= offset, extents[i].block != 0 else { return nil }
            return extents[i].block * blockSize + offset - extents[i].offset
        }
    }

    func stream(_ id: UInt64, size: UInt64) throws(VolumeError) -> Stream {
        if let hit = caches.withLock({ $0.streams[id] }), hit.size == size { return hit }
        var extents: [(offset: UInt64, length: UInt64, block: UInt64)] = []
        var end: UInt64 = 0
        if id != 0 {
            try records(id, type: RecordType.fileExtent, limit: Self.maxExtents) { (key, value) throws(VolumeError) in
                let k = Array(key), v = Array(value)
                guard k.count >= 16, v.count >= 16 else { throw .damaged("data stream \(id) has an extent record that cannot be read") }
                let offset = k.le64(8), length = v.le64(0) & 0x00FF_FFFF_FFFF_FFFF, block = v.le64(8)
                guard offset >= end, length <= UInt64.max - offset else { throw .damaged("data stream \(id)'s extents overlap") }
                guard block == 0 || (block < blocks.blockCount && length <= (blocks.blockCount - block) * blocks.blockSize) else {
                    throw .damaged("data stream \(id)'s extent at block \(block) runs past the container")
                }
                if length > 0 { extents.append((offset, length, block)) }
                end = offset + length
            }
        }
        let s = Stream(size: size, extents: extents)
        caches.withLock { c in
            if c.streams.count >= Self.maxCached { c.streams.removeAll() }
            c.streams[id] = s
        }
        return s
    }

    // MARK: Extended attributes

    struct Attribute {
        var name: String
        var flags: UInt64
        var data: [UInt8]
    }

    func storedAttributes(of node: UInt64) throws(VolumeError) -> [Attribute] {
        var found: [Attribute] = []
        try records(node, type: RecordType.xattr, limit: 1 << 16) { (key, value) throws(VolumeError) in
            let k = Array(key), v = Array(value)
            let length = Int(k.le16(8))
            guard k.count == 10 + length, v.count >= 4, Int(v.le16(2)) <= v.count - 4 else {
                throw .damaged("inode \(node) has an extended attribute record that cannot be read")
            }
            let name = String(decoding: k[10...].prefix { $0 != 0 }, as: UTF8.self)
            found.append(Attribute(name: name, flags: v.le16(0), data: Array(v[4..<(4 + Int(v.le16(2)))])))
        }
        return found
    }

    /// The attribute's bytes (embedded, or its own data stream), nil when the node has none of that name.
    func attribute(_ node: UInt64, named name: String) throws(VolumeError) -> [UInt8]? {
        guard let a = try storedAttributes(of: node).first(where: { $0.name == name }) else { return nil }
        if a.flags & 1 == 0 { return a.data }
        let s = try attributeStream(a, of: node)
        guard s.size <= Self.maxAttributeBytes else { throw .damaged("extended attribute \(name) of \(node) is \(s.size) bytes") }
        var bytes = [UInt8](repeating: 0, count: Int(s.size))
        var failure: VolumeError? = nil
        bytes.withUnsafeMutableBytes { b in
            do throws(VolumeError) { try s.read(blocks, at: 0, into: b) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// A stream-backed attribute's j_xattr_dstream_t: its stream ID, then the stream's sizes.
    private func attributeStream(_ a: Attribute, of node: UInt64) throws(VolumeError) -> Stream {
        guard a.data.count >= 16 else { throw .damaged("extended attribute \(a.name) of \(node) has a short stream record") }
        return try stream(a.data.le64(0), size: a.data.le64(8))
    }

    /// Attributes macOS keeps to itself: the filesystem's own (symlink targets), the
    /// compression header, and a compressed file's resource fork (its data).
    func isHidden(_ a: Attribute, of i: Inode) -> Bool {
        if a.flags & 4 != 0 || a.name == "com.apple.fs.symlink" || a.name == "com.apple.decmpfs" || a.name.hasPrefix("com.apple.system.") { return true }
        return a.name == "com.apple.ResourceFork" && i.isCompressed && (try? decmpfs(i)) != nil
    }

    func extendedAttributeNames(of node: UInt64) throws(VolumeError) -> [String] {
        let i = try inode(node)
        return try storedAttributes(of: node).filter { !isHidden($0, of: i) && !$0.name.isEmpty }.map { "user." + $0.name }
    }

    func extendedAttribute(_ name: String, of node: UInt64) throws(VolumeError) -> [UInt8] {
        let i = try inode(node)
        guard name.hasPrefix("user.") else { throw .noAttribute }
        let bare = String(name.dropFirst(5))
        guard let a = try storedAttributes(of: node).first(where: { $0.name == bare }), !isHidden(a, of: i) else { throw .noAttribute }
        if a.flags & 1 != 0 {
            // Linux takes extended attributes of up to 64 KiB.
            guard try attributeStream(a, of: node).size <= 1 << 16 else { throw .tooLarge }
        }
        guard let value = try attribute(node, named: bare) else { throw .noAttribute }
        guard value.count <= 1 << 16 else { throw .tooLarge }
        return value
    }

    // MARK: Compression

    /// The file's decmpfs header, or nil when it has none (then its data stream is read).
    private func decmpfs(_ i: Inode) throws(VolumeError) -> Decmpfs? {
        if let hit = caches.withLock({ $0.compression[i.id] }) { return hit }
        guard let attribute = try attribute(i.id, named: "com.apple.decmpfs") else { return nil }
        let fork = try resourceFork(i)
        let d = try DecmpfsReader.header(attribute, forkSize: fork.size, fork: fork.bytes)
        caches.withLock { c in
            if c.compression.count >= Self.maxCached { c.compression.removeAll() }
            c.compression[i.id] = d
        }
        return d
    }

    /// The com.apple.ResourceFork attribute as a readable fork (empty when there is none).
    private func resourceFork(_ i: Inode) throws(VolumeError) -> (size: UInt64, bytes: DecmpfsReader.Fork) {
        guard let a = try storedAttributes(of: i.id).first(where: { $0.name == "com.apple.ResourceFork" }) else {
            return (0, { (_, _) throws(VolumeError) in throw .damaged("a compressed file has no resource fork") })
        }
        if a.flags & 1 == 0 {
            let data = a.data
            return (UInt64(data.count), { (offset, count) throws(VolumeError) in Array(data[Int(offset)..<(Int(offset) + count)]) })
        }
        let s = try attributeStream(a, of: i.id)
        let blocks = blocks
        return (s.size, { (offset, count) throws(VolumeError) in
            var bytes = [UInt8](repeating: 0, count: count)
            var failure: VolumeError? = nil
            bytes.withUnsafeMutableBytes { b in
                do throws(VolumeError) { try s.read(blocks, at: offset, into: b) } catch { failure = error }
            }
            if let failure { throw failure }
            return bytes
        })
    }
}
