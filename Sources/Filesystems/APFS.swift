import SystemSupport
import UDIF

/// An APFS container (Apple's "Apple File System Reference"), read-only: the container
/// superblock chosen from the checkpoint descriptor area (the valid one with the highest
/// transaction ID), objects read with their Fletcher-64 checksums verified, B-tree nodes
/// parsed with every offset checked (`APFSTree`), and object maps resolving virtual object
/// IDs at a transaction (`APFSObjectMap`). The volumes' trees are `APFSVolume`.
struct APFSContainer: Sendable {
    let partition: Partition
    let blockSize: UInt64
    let blockCount: UInt64
    /// The checkpoint's transaction: virtual objects are looked up as of it.
    let xid: UInt64
    let omap: APFSObjectMap
    /// The superblock's nx_fs_oid array: (position from 1, virtual OID) of each slot in use.
    let volumeSlots: [(position: Int, oid: UInt64)]

    static let magic: UInt64 = 0x4253_584E  // "NXSB"
    static let maxDescriptorBlocks: UInt64 = 1 << 16

    enum ObjectType {
        static let superblock: UInt64 = 1
        static let btree: UInt64 = 2
        static let btreeNode: UInt64 = 3
        static let omap: UInt64 = 0xB
        static let fs: UInt64 = 0xD
        static let fstree: UInt64 = 0xE
    }

    static func checksumValid(_ block: [UInt8]) -> Bool {
        block.count >= 32 && block.le64(0) == APFSChecksum.fletcher64(block)
    }

    init(_ partition: Partition) throws(VolumeError) {
        self.partition = partition
        let head = try Self.bytes(partition, at: 0, count: 4096)
        guard head.le32(32) == Self.magic else { throw .damaged("no container superblock") }
        let blockSize = head.le32(36)
        guard blockSize.isPowerOfTwo, blockSize >= 4096, blockSize <= 65536 else {
            throw .damaged("its container superblock gives a block size of \(blockSize)")
        }
        self.blockSize = blockSize
        let first = try Self.bytes(partition, at: 0, count: Int(blockSize))
        guard Self.checksumValid(first) else { throw .damaged("its container superblock's checksum is wrong") }
        // The newest valid superblock in the checkpoint descriptor area; block 0 last.
        var candidates: [[UInt8]] = []
        let descBlocks = first.le32(104)
        let descBase = first.le64(112)
        if descBlocks & 0x8000_0000 == 0, descBlocks <= Self.maxDescriptorBlocks, descBase > 0, descBase < partition.length / blockSize {
            for i in 0..<descBlocks {
                guard let at = (descBase + i).times(blockSize), at <= partition.length, blockSize <= partition.length - at,
                      let b = try? Self.bytes(partition, at: at, count: Int(blockSize)) else { break }
                if b.le32(32) == Self.magic, b.le32(24) & 0xFFFF == ObjectType.superblock, b.le32(36) == blockSize, Self.checksumValid(b) {
                    candidates.append(b)
                }
            }
        }
        candidates.sort { $0.le64(16) > $1.le64(16) }
        candidates.append(first)
        var lastError = VolumeError.damaged("no usable container superblock")
        for sb in candidates {
            let count = sb.le64(40)
            guard count > 0, let bytes = count.times(blockSize), bytes <= partition.length else {
                lastError = .damaged("its container superblock gives \(count) blocks of \(blockSize) bytes for a \(partition.length)-byte partition")
                continue
            }
            let map: APFSObjectMap
            do throws(VolumeError) {
                map = try APFSObjectMap(at: sb.le64(160), blocks: APFSBlocks(partition: partition, blockSize: blockSize, blockCount: count))
            } catch {
                lastError = error
                continue
            }
            blockCount = count
            xid = sb.le64(16)
            omap = map
            let slots = min(Int(sb.le32(180)), 100)
            volumeSlots = (0..<max(0, slots)).compactMap { k in
                let oid = sb.le64(184 + 8 * k)
                return oid == 0 ? nil : (k + 1, oid)
            }
            return
        }
        throw lastError
    }

    static func bytes(_ partition: Partition, at: UInt64, count: Int) throws(VolumeError) -> [UInt8] {
        do throws(FilesystemError) {
            return try partition.bytes(at: at, count: count)
        } catch {
            throw .damaged(error.description)
        }
    }

    /// The object at physical block `address`, checksum, type and (optionally) OID checked.
    static func object(_ partition: Partition, blockSize: UInt64, blockCount: UInt64, at address: UInt64,
                       type: UInt64, oid: UInt64?) throws(VolumeError) -> [UInt8] {
        guard address > 0, address < blockCount else { throw .damaged("an object at block \(address), outside the container") }
        let b = try bytes(partition, at: address * blockSize, count: Int(blockSize))
        guard checksumValid(b) else { throw .damaged("the object at block \(address) has a wrong checksum") }
        guard b.le32(24) & 0xFFFF == type else {
            throw .damaged("the object at block \(address) has type \(b.le32(24) & 0xFFFF), not \(type)")
        }
        if let oid, b.le64(8) != oid { throw .damaged("the object at block \(address) is object \(b.le64(8)), not \(oid)") }
        return b
    }

    var blocks: APFSBlocks { APFSBlocks(partition: partition, blockSize: blockSize, blockCount: blockCount) }
}

/// One B-tree node (btree_node_phys_t): its table of contents, keys and values located and
/// bounds-checked at parse time, so reading record `i` cannot leave the block.
struct APFSNode: Sendable {
    let bytes: [UInt8]
    let level: Int
    let count: Int
    let isRoot: Bool
    let isLeaf: Bool
    private let entries: [(key: Range<Int>, value: Range<Int>)]

    static let header = 56
    static let infoSize = 40

    /// `fixed`: the key and value sizes of a fixed-size tree (an index node's values are 8-byte child IDs).
    init(_ b: [UInt8], fixed: (key: Int, value: Int)?) throws(VolumeError) {
        bytes = b
        let flags = b.le16(32)
        level = Int(b.le16(34))
        count = Int(b.le32(36))
        isRoot = flags & 1 != 0
        isLeaf = flags & 2 != 0
        guard isLeaf == (level == 0) else { throw .damaged("a B-tree node's leaf flag contradicts its level \(level)") }
        let tocOffset = Int(b.le16(40)), tocLength = Int(b.le16(42))
        let keyStart = Self.header + tocOffset + tocLength
        let valueEnd = b.count - (isRoot ? Self.infoSize : 0)
        guard keyStart <= valueEnd else { throw .damaged("a B-tree node's table of contents runs past the node") }
        let isFixed = flags & 4 != 0
        if isFixed != (fixed != nil) { throw .damaged("a B-tree node's fixed-size flag is wrong for its tree") }
        let entrySize = isFixed ? 4 : 8
        guard count <= tocLength / entrySize else { throw .damaged("a B-tree node holds \(count) records in a \(tocLength)-byte table") }
        var found: [(Range<Int>, Range<Int>)] = []
        found.reserveCapacity(count)
        for i in 0..<count {
            let e = Self.header + tocOffset + entrySize * i
            let kOff: Int, kLen: Int, vOff: Int, vLen: Int
            if let fixed {
                kOff = Int(b.le16(e)); kLen = fixed.key
                vOff = Int(b.le16(e + 2)); vLen = isLeaf ? fixed.value : 8
            } else {
                kOff = Int(b.le16(e)); kLen = Int(b.le16(e + 2))
                vOff = Int(b.le16(e + 4)); vLen = Int(b.le16(e + 6))
            }
            let key = (keyStart + kOff)..<(keyStart + kOff + kLen)
            guard kLen >= 8, key.upperBound <= valueEnd else { throw .damaged("a B-tree key lies outside its node") }
            let value: Range<Int>
            if vOff == 0xFFFF {
                value = valueEnd..<valueEnd
            } else {
                guard vOff <= valueEnd - keyStart, vLen <= vOff else { throw .damaged("a B-tree value lies outside its node") }
                value = (valueEnd - vOff)..<(valueEnd - vOff + vLen)
            }
            guard isLeaf || value.count >= 8 else { throw .damaged("a B-tree index record has no child") }
            found.append((key, value))
        }
        entries = found
    }

    func key(_ i: Int) -> ArraySlice<UInt8> { bytes[entries[i].key] }
    func value(_ i: Int) -> ArraySlice<UInt8> { bytes[entries[i].value] }
    func child(_ i: Int) -> UInt64 { Array(value(i).prefix(8)).le64(0) }
}

/// A B-tree of the container or a volume: nodes by physical address or, for a volume's
/// file-system tree, by virtual ID through its object map. Descents must lose one level per
/// step from a root no deeper than `maxDepth`, and each query visits at most `maxVisits`
/// nodes, so a tree that points back at itself ends in an error, not a hang.
final class APFSTree: Sendable {
    let container: APFSBlocks
    let root: UInt64
    let subtype: UInt64
    let fixed: (key: Int, value: Int)?
    /// Turns a child ID into a physical address; nil when IDs are addresses.
    let resolve: (@Sendable (UInt64) throws(VolumeError) -> UInt64)?
    private let cache = Locked<[UInt64: APFSNode]>([:])

    static let maxDepth = 12
    static let maxVisits = 1 << 16
    static let maxCached = 4096

    init(_ container: APFSBlocks, root: UInt64, subtype: UInt64, fixed: (key: Int, value: Int)?,
         resolve: (@Sendable (UInt64) throws(VolumeError) -> UInt64)?) throws(VolumeError) {
        self.container = container
        self.root = root
        self.subtype = subtype
        self.fixed = fixed
        self.resolve = resolve
        let r = try node(root, isRoot: true)
        guard r.isRoot, r.level <= Self.maxDepth else { throw .damaged("a B-tree root of level \(r.level)") }
    }

    func node(_ id: UInt64, isRoot: Bool) throws(VolumeError) -> APFSNode {
        if let hit = cache.withLock({ $0[id] }) {
            guard hit.isRoot == isRoot else { throw .damaged("a B-tree node's root flag is wrong") }
            return hit
        }
        let address = try resolve?(id) ?? id
        let b = try container.object(at: address, type: isRoot ? APFSContainer.ObjectType.btree : APFSContainer.ObjectType.btreeNode, oid: id)
        guard b.le32(28) == subtype else { throw .damaged("a B-tree node of subtype \(b.le32(28)), not \(subtype)") }
        let n = try APFSNode(b, fixed: fixed)
        guard n.isRoot == isRoot else { throw .damaged("a B-tree node's root flag is wrong") }
        cache.withLock { c in
            if c.count >= Self.maxCached { c.removeAll() }
            c[id] = n
        }
        return n
    }

    /// The last record whose key is at or before the target (`compare(key)` < 0 before, 0 at, > 0 after).
    func floor(_ compare: (ArraySlice<UInt8>) -> Int) throws(VolumeError) -> (key: ArraySlice<UInt8>, value: ArraySlice<UInt8>)? {
        var n = try node(root, isRoot: true)
        while true {
            var pick = -1
            for i in 0..<n.count {
                if compare(n.key(i)) <= 0 { pick = i } else { break }
            }
            guard pick >= 0 else { return nil }
            if n.isLeaf { return (n.key(pick), n.value(pick)) }
            let child = try node(n.child(pick), isRoot: false)
            guard child.level == n.level - 1 else { throw .damaged("a B-tree child at level \(child.level) under level \(n.level)") }
            n = child
        }
    }

    /// Every record whose key is in range (`compare(key)` == 0), in key order; `body` returns
    /// false to stop.
    func visit(_ compare: (ArraySlice<UInt8>) -> Int,
               _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>) throws(VolumeError) -> Bool) throws(VolumeError) {
        var visits = 0
        func walk(_ n: APFSNode) throws(VolumeError) -> Bool {
            visits += 1
            guard visits <= Self.maxVisits else { throw .damaged("a B-tree query visits more than \(Self.maxVisits) nodes") }
            for i in 0..<n.count {
                let c = compare(n.key(i))
                if c > 0 { return false }
                if n.isLeaf {
                    if c == 0, try !body(n.key(i), n.value(i)) { return false }
                } else {
                    // Child i holds keys from key i up to key i + 1.
                    if i + 1 < n.count, compare(n.key(i + 1)) < 0 { continue }
                    let child = try node(n.child(i), isRoot: false)
                    guard child.level == n.level - 1 else { throw .damaged("a B-tree child at level \(child.level) under level \(n.level)") }
                    if try !walk(child) { return false }
                }
            }
            return true
        }
        _ = try walk(try node(root, isRoot: true))
    }
}

/// An object map (omap_phys_t and its B-tree of (OID, XID) → (flags, size, address)):
/// a virtual object's newest version at or before a transaction.
final class APFSObjectMap: Sendable {
    let tree: APFSTree
    private let cache = Locked<[UInt64: UInt64]>([:])

    init(at address: UInt64, blocks: APFSBlocks) throws(VolumeError) {
        let b = try blocks.object(at: address, type: APFSContainer.ObjectType.omap, oid: address)
        tree = try APFSTree(blocks, root: b.le64(48), subtype: APFSContainer.ObjectType.omap, fixed: (16, 16), resolve: nil)
    }

    /// The physical address of `oid` as of `xid`.
    func address(of oid: UInt64, xid: UInt64) throws(VolumeError) -> UInt64 {
        if let hit = cache.withLock({ $0[oid] }) { return hit }
        let want = (oid, xid)
        guard let found = try tree.floor({ k in
            let key = Array(k)
            let have = (key.le64(0), key.le64(8))
            return have < want ? -1 : have == want ? 0 : 1
        }) else { throw .damaged("object \(oid) is not in its object map") }
        let key = Array(found.key), value = Array(found.value)
        guard key.le64(0) == oid, value.count >= 16 else { throw .damaged("object \(oid) is not in its object map") }
        guard value.le32(0) & 1 == 0 else { throw .damaged("object \(oid) is deleted in its object map") }
        guard value.le32(0) & 4 == 0 else { throw .damaged("object \(oid) is encrypted") }
        let address = value.le64(8)
        cache.withLock { c in
            if c.count >= 1 << 16 { c.removeAll() }
            c[oid] = address
        }
        return address
    }
}

/// The container's blocks: physical objects read with their checksums verified.
struct APFSBlocks: Sendable {
    let partition: Partition
    let blockSize: UInt64
    let blockCount: UInt64

    func object(at address: UInt64, type: UInt64, oid: UInt64?) throws(VolumeError) -> [UInt8] {
        try APFSContainer.object(partition, blockSize: blockSize, blockCount: blockCount, at: address, type: type, oid: oid)
    }

    /// Plain bytes (file data), checked against the container's end.
    func read(into buffer: UnsafeMutableRawBufferPointer, block: UInt64, offset: UInt64) throws(VolumeError) {
        let total = blockCount * blockSize  // checked against the partition at open
        guard block < blockCount, let start = block.times(blockSize), offset <= total - start,
              UInt64(buffer.count) <= total - start - offset else {
            throw .damaged("an extent at block \(block) runs past the container")
        }
        do throws(FilesystemError) {
            try partition.read(into: buffer, at: start + offset)
        } catch {
            throw .damaged(error.description)
        }
    }
}

/// APFS's object checksum, for tests and fuzz harnesses that build or damage containers.
package enum APFSChecksum {
    /// Apple's Fletcher-64 over the block after its checksum field, as the field stores it.
    package static func fletcher64(_ block: [UInt8]) -> UInt64 {
        let mod: UInt64 = 0xFFFF_FFFF
        var sum1: UInt64 = 0, sum2: UInt64 = 0
        block.withUnsafeBytes { b in
            var i = 8
            while i + 4 <= b.count {
                sum1 = (sum1 + UInt64(UInt32(littleEndian: b.loadUnaligned(fromByteOffset: i, as: UInt32.self)))) % mod
                sum2 = (sum2 + sum1) % mod
                i += 4
            }
        }
        let c1 = mod - ((sum1 + sum2) % mod)
        let c2 = mod - ((sum1 + c1) % mod)
        return c2 << 32 | c1
    }

    /// Rewrites the checksum of each `blockSize` block of `bytes` that looks like an object
    /// (a known type in its header), so changed objects pass the check.
    package static func reseal(_ bytes: inout [UInt8], blockSize: Int = 4096) {
        let known: Set<UInt64> = [1, 2, 3, 5, 0xB, 0xC, 0xD, 0xE]
        var at = 0
        while at + blockSize <= bytes.count {
            let block = Array(bytes[at..<(at + blockSize)])
            if known.contains(block.le32(24) & 0xFFFF), block.le64(8) != 0 {
                let sum = fletcher64(block)
                for k in 0..<8 { bytes[at + k] = UInt8(truncatingIfNeeded: sum >> (8 * k)) }
            }
            at += blockSize
        }
    }
}
