import SystemSupport

/// The extents of one HFS+ fork (TN1150's HFSPlusForkData): its logical size and where its
/// allocation blocks are, the volume header's or catalog record's eight extents followed by
/// those of the extents overflow file.
struct HFSPlusFork: Sendable, Equatable {
    var logicalSize: UInt64
    var totalBlocks: UInt64
    var extents: [(start: UInt64, count: UInt64)]

    /// The 80-byte fork data at `at` of `bytes`.
    init(_ bytes: [UInt8], at: Int) {
        logicalSize = bytes.be64(at)
        totalBlocks = bytes.be32(at + 12)
        extents = []
        for i in 0..<8 {
            let count = bytes.be32(at + 20 + 8 * i)
            guard count > 0 else { break }
            extents.append((bytes.be32(at + 16 + 8 * i), count))
        }
    }

    var mappedBlocks: UInt64 { extents.reduce(0) { $0 + $1.count } }

    static func == (a: HFSPlusFork, b: HFSPlusFork) -> Bool {
        a.logicalSize == b.logicalSize && a.totalBlocks == b.totalBlocks
            && a.extents.elementsEqual(b.extents) { $0.start == $1.start && $0.count == $1.count }
    }
}

/// One B-tree of an HFS+ volume (catalog, extents overflow, attributes): its header, nodes
/// read on demand through a small cache, searches by a caller's key order and walks along the
/// leaf chain. Every node's descriptor and record offsets are checked before a record is
/// used, descents must lose one level of height per step, and walks stop at a node seen
/// twice or after `totalNodes` nodes: a damaged tree gives an error, never a loop.
final class HFSPlusBTree: Sendable {
    let name: String
    let nodeSize: Int
    let rootNode: UInt32
    let firstLeaf: UInt32
    let totalNodes: UInt32
    let depth: Int
    let leafRecords: UInt64
    /// Index records' keys take their own length (else the header's maximum).
    let variableIndexKeys: Bool
    let maxKeyLength: Int
    private let read: @Sendable (UInt64, Int) throws(VolumeError) -> [UInt8]
    private let cache = Locked<[UInt32: Node]>([:])
    static let maxCachedNodes = 512

    struct Node: Sendable {
        var kind: Int8
        var height: Int
        var forward: UInt32
        var bytes: [UInt8]
        /// Record boundaries: record i is bytes[offsets[i]..<offsets[i + 1]].
        var offsets: [Int]

        var count: Int { offsets.count - 1 }
        func record(_ i: Int) -> ArraySlice<UInt8> { bytes[offsets[i]..<offsets[i + 1]] }
    }

    /// `read(offset, count)` reads the tree's file (its fork, already mapped).
    init(name: String, fileBytes: UInt64, read: @escaping @Sendable (UInt64, Int) throws(VolumeError) -> [UInt8]) throws(VolumeError) {
        self.name = name
        self.read = read
        guard fileBytes >= 512 else { throw .damaged("its \(name) file is \(fileBytes) bytes") }
        let head = try read(0, 512)
        let h = Array(head[14...])
        nodeSize = Int(h.be16(18))
        depth = Int(h.be16(0))
        rootNode = UInt32(h.be32(2))
        leafRecords = h.be32(6)
        firstLeaf = UInt32(h.be32(10))
        maxKeyLength = Int(h.be16(20))
        totalNodes = UInt32(h.be32(22))
        variableIndexKeys = h.be32(38) & 4 != 0
        guard head[8] == 1, [512, 1024, 2048, 4096, 8192, 16384, 32768].contains(nodeSize) else {
            throw .damaged("its \(name) B-tree header node is damaged (node size \(nodeSize))")
        }
        guard totalNodes > 0, UInt64(totalNodes) * UInt64(nodeSize) <= fileBytes, depth <= 16,
              rootNode < totalNodes, firstLeaf < totalNodes, (depth == 0) == (rootNode == 0) else {
            throw .damaged("its \(name) B-tree header is inconsistent (\(totalNodes) nodes, root \(rootNode), depth \(depth))")
        }
    }

    func node(_ number: UInt32) throws(VolumeError) -> Node {
        if let hit = cache.withLock({ $0[number] }) { return hit }
        guard number < totalNodes else { throw .damaged("its \(name) B-tree links to node \(number) of \(totalNodes)") }
        let bytes = try read(UInt64(number) * UInt64(nodeSize), nodeSize)
        let count = Int(bytes.be16(10))
        guard count > 0, 14 + 2 * (count + 1) <= nodeSize else { throw damaged(number, "has \(count) records") }
        var offsets: [Int] = []
        offsets.reserveCapacity(count + 1)
        for i in 0...count {
            let at = nodeSize - 2 * (i + 1)
            offsets.append(Int(bytes.be16(at)))
        }
        let tableStart = nodeSize - 2 * (count + 1)
        guard offsets[0] == 14, offsets.last! <= tableStart, zip(offsets, offsets.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw damaged(number, "has record offsets out of order")
        }
        let node = Node(kind: Int8(bitPattern: bytes[8]), height: Int(bytes[9]), forward: UInt32(bytes.be32(0)), bytes: bytes, offsets: offsets)
        cache.withLock { c in
            if c.count >= Self.maxCachedNodes { c.removeAll() }
            c[number] = node
        }
        return node
    }

    func damaged(_ node: UInt32, _ what: String) -> VolumeError { .damaged("its \(name) B-tree node \(node) \(what)") }

    /// A record's key (without its length field) and data. Index records' data is the child.
    func split(_ record: ArraySlice<UInt8>, in node: Node, number: UInt32) throws(VolumeError) -> (key: ArraySlice<UInt8>, data: ArraySlice<UInt8>) {
        let start = record.startIndex
        guard record.count >= 2 else { throw damaged(number, "has a record too short for its key") }
        let keyLength = Int(record[start]) << 8 | Int(record[start + 1])
        let dataStart = start + 2 + (node.kind == 0 && !variableIndexKeys ? maxKeyLength : keyLength)
        guard keyLength <= maxKeyLength || maxKeyLength == 0, dataStart <= record.endIndex else {
            throw damaged(number, "has a \(keyLength)-byte key that does not fit")
        }
        // HFS+ pads keys to an even length only where the record says so; data follows the key.
        return (record[(start + 2)..<(start + 2 + keyLength)], record[dataStart...])
    }

    /// The leaf where records not below the search key start: descends choosing the last index
    /// record whose key `compare` says is not above the search key. nil for an empty tree.
    func leaf(for compare: (ArraySlice<UInt8>) -> Int) throws(VolumeError) -> UInt32? {
        guard depth > 0 else { return nil }
        var number = rootNode
        var height = depth
        while true {
            let node = try node(number)
            guard node.height == height else { throw damaged(number, "is at height \(node.height), not \(height)") }
            if node.kind == -1 {
                guard height == 1 else { throw damaged(number, "is a leaf at height \(height)") }
                return number
            }
            guard node.kind == 0, height > 1 else { throw damaged(number, "is of kind \(node.kind) where an index node belongs") }
            var chosen: UInt32? = nil
            for i in 0..<node.count {
                let (key, data) = try split(node.record(i), in: node, number: number)
                guard data.count >= 4 else { throw damaged(number, "has an index record without a child") }
                if i > 0, compare(key) > 0 { break }
                chosen = UInt32(Array(data).be32(0))
            }
            number = chosen!
            height -= 1
        }
    }

    /// Calls `body` with each leaf record from node `start` on, along the leaf chain, until it
    /// returns false. A node seen twice, or more nodes than the tree has, is damage.
    func walk(from start: UInt32, _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>) throws(VolumeError) -> Bool) throws(VolumeError) {
        var number = start
        var seen = Set<UInt32>()
        while true {
            guard seen.insert(number).inserted, seen.count <= Int(totalNodes) else {
                throw .damaged("its \(name) B-tree's leaf chain loops back to node \(number)")
            }
            let node = try node(number)
            guard node.kind == -1, node.height == 1 else { throw damaged(number, "in the leaf chain is not a leaf") }
            for i in 0..<node.count {
                let (key, data) = try split(node.record(i), in: node, number: number)
                guard try body(key, data) else { return }
            }
            guard node.forward != 0 else { return }
            number = node.forward
        }
    }

    /// Walks the whole leaf chain once, checking every node and that it holds as many records
    /// as the header says, in the order `ascending` accepts for consecutive keys.
    func check(ascending: (ArraySlice<UInt8>, ArraySlice<UInt8>) -> Bool) throws(VolumeError) {
        guard depth > 0 else { return }
        var records: UInt64 = 0
        var previous: ArraySlice<UInt8>? = nil
        try walk(from: firstLeaf) { (key, _) throws(VolumeError) in
            if let previous, !ascending(previous, key) { throw .damaged("its \(name) B-tree's keys are out of order") }
            previous = key
            records += 1
            return true
        }
        guard records == leafRecords else {
            throw .damaged("its \(name) B-tree holds \(records) records, its header says \(leafRecords)")
        }
    }
}

extension ArraySlice where Element == UInt8 {
    func be(_ at: Int, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<width {
            let i = startIndex + at + k
            v = v << 8 | UInt64(i < endIndex ? self[i] : 0)
        }
        return v
    }

    func be16(_ at: Int) -> UInt64 { be(at, 2) }
    func be32(_ at: Int) -> UInt64 { be(at, 4) }
}
