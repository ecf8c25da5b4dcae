import Filesystems
import Foundation
import Testing
import TestSupport
import UDIF

/// Compressed files (decmpfs) read through a whole HFS+ volume: no fixture holds one, so the
/// fixture volume is edited as macOS would have written it. testdir1/xattr1's attribute
/// becomes a com.apple.decmpfs attribute (type 3, zlib in the attribute) and large_xattr's
/// fork attribute becomes its resource fork holding 'cmpf' blocks (type 4), each file marked
/// UF_COMPRESSED in its catalog record.
@Suite struct HFSCompressionTests {
    static func be(_ b: [UInt8], _ at: Int, _ n: Int) -> Int { b[at..<(at + n)].reduce(0) { $0 << 8 | Int($1) } }
    static func put(_ b: inout [UInt8], _ at: Int, _ n: Int, _ v: Int) {
        for k in 0..<n { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * (n - 1 - k))) }
    }
    static func utf16(_ s: String) -> [UInt8] { s.utf16.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] } }
    static func le(_ v: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// Replaces the attributes B-tree leaf record named `old` with `record(key fields)`, rebuilding
    /// its node; returns the record's file ID and the old record's data.
    static func replaceAttribute(_ b: inout [UInt8], named old: String, with make: (_ fileID: Int) -> [UInt8]) throws -> (Int, [UInt8]) {
        let blockSize = be(b, 1024 + 40, 4)
        let tree = be(b, 1024 + 368, 4) * blockSize
        let nodeSize = be(b, tree + 32, 2)
        var node = be(b, tree + 24, 4)
        while node != 0 {
            let base = tree + node * nodeSize
            let count = be(b, base + 10, 2)
            let offsets = (0...count).map { be(b, base + nodeSize - 2 * ($0 + 1), 2) }
            var records = (0..<count).map { Array(b[(base + offsets[$0])..<(base + offsets[$0 + 1])]) }
            for i in records.indices {
                let r = records[i]
                let length = be(r, 12, 2)
                guard String(decoding: (0..<length).map { UInt16(be(r, 14 + 2 * $0, 2)) }, as: UTF16.self) == old else { continue }
                let fileID = be(r, 4, 4)
                let oldData = Array(r[(2 + be(r, 0, 2))...])
                records[i] = make(fileID)
                let body = records.flatMap { $0 }
                precondition(14 + body.count + 2 * (count + 1) <= nodeSize)
                var rebuilt = Array(b[base..<(base + 14)]) + body
                rebuilt += [UInt8](repeating: 0, count: nodeSize - rebuilt.count)
                var at = 14
                for k in 0...count {
                    put(&rebuilt, nodeSize - 2 * (k + 1), 2, at)
                    if k < count { at += records[k].count }
                }
                b.replaceSubrange(base..<(base + nodeSize), with: rebuilt)
                return (fileID, oldData)
            }
            node = be(b, base, 4)
        }
        throw TestFailure("no attribute \(old)")
    }

    /// An attribute leaf record: key (file ID, start block 0, name), then `data`, kept even.
    static func attributeRecord(fileID: Int, name: String, data: [UInt8]) -> [UInt8] {
        let n = utf16(name)
        let key: [UInt8] = [0, 0] + (0..<4).map { UInt8(truncatingIfNeeded: fileID >> (24 - 8 * $0)) } + [0, 0, 0, 0]
            + [UInt8(name.utf16.count >> 8), UInt8(name.utf16.count & 0xFF)] + n
        var record = [UInt8(key.count >> 8), UInt8(key.count & 0xFF)] + key + data
        if record.count % 2 == 1 { record.append(0) }
        return record
    }

    /// Inline attribute data (record type 0x10).
    static func inline(_ value: [UInt8]) -> [UInt8] {
        [0, 0, 0, 0x10] + [UInt8](repeating: 0, count: 8) + (0..<4).map { UInt8(truncatingIfNeeded: value.count >> (24 - 8 * $0)) } + value
    }

    static func decmpfs(type: Int, size: Int) -> [UInt8] { Array("fpmc".utf8) + le(type, 4) + le(size, 8) }

    /// The catalog file record named `name`: where its data starts.
    static func catalogRecord(_ b: [UInt8], named name: String) throws -> Int {
        let needle = [UInt8(name.utf16.count >> 8), UInt8(name.utf16.count & 0xFF)] + utf16(name)
        guard let at = (0...(b.count - needle.count)).first(where: { b[$0] == needle[0] && b[$0..<($0 + needle.count)].elementsEqual(needle) && be(b, $0 + needle.count, 2) == 2 }) else {
            throw TestFailure("no catalog record \(name)")
        }
        let keyStart = at - 6
        return keyStart + 2 + be(b, keyStart, 2)
    }

    @Test func compressedFilesReadDecompressed() throws {
        var b = try HFSPlusTests.partitionBytes()
        let small = Array(String(repeating: "Compressed by macOS, read on Linux.\n", count: 20).utf8)
        let large = Array(String(repeating: "A compressed resource fork, block by block. ", count: 3500).utf8)  // 154000 bytes, 3 blocks

        // xattr1: type 3, zlib in the attribute.
        let zlib = try #require(small.withUnsafeBytes { Codec.compressZlib($0, level: 9) })
        _ = try Self.replaceAttribute(&b, named: "myxattr1") { id in
            Self.attributeRecord(fileID: id, name: "com.apple.decmpfs", data: Self.inline(Self.decmpfs(type: 3, size: small.count) + zlib))
        }
        let xattr1 = try Self.catalogRecord(b, named: "xattr1")
        b[xattr1 + 41] |= 0x20

        // large_xattr: its fork attribute's blocks become its resource fork, holding 'cmpf' blocks.
        let (_, forkRecord) = try Self.replaceAttribute(&b, named: "mylargexattr") { id in
            Self.attributeRecord(fileID: id, name: "com.apple.decmpfs", data: Self.inline(Self.decmpfs(type: 4, size: large.count)))
        }
        let blocks = stride(from: 0, to: large.count, by: 65536).map { Array(large[$0..<min($0 + 65536, large.count)]) }
        let stored = blocks.map { block in block.withUnsafeBytes { Codec.compressZlib($0, level: 9)! } }
        var table = Self.le(blocks.count, 4)
        var offset = 4 + 8 * blocks.count
        for s in stored {
            table += Self.le(offset, 4) + Self.le(s.count, 4)
            offset += s.count
        }
        let resource = table + stored.flatMap { $0 }
        var fork = [UInt8](repeating: 0, count: 0x100)
        Self.put(&fork, 0, 4, 0x100)
        Self.put(&fork, 4, 4, 0x100 + 4 + resource.count)
        Self.put(&fork, 8, 4, 4 + resource.count)
        Self.put(&fork, 12, 4, 50)
        fork += (0..<4).map { UInt8(truncatingIfNeeded: resource.count >> (24 - 8 * $0)) } + resource + [UInt8](repeating: 0, count: 50)
        // The fork record: type 0x20, reserved, then HFSPlusForkData (size, clump, blocks, extents).
        let blockSize = Self.be(b, 1024 + 40, 4)
        let start = Self.be(forkRecord, 8 + 16, 4), count = Self.be(forkRecord, 8 + 20, 4)
        #expect(fork.count <= count * blockSize, "the resource fork fits the attribute's \(count) blocks")
        b.replaceSubrange((start * blockSize)..<(start * blockSize + fork.count), with: fork)
        let largeRecord = try Self.catalogRecord(b, named: "large_xattr")
        b.replaceSubrange((largeRecord + 168)..<(largeRecord + 248), with: forkRecord[8..<88])
        Self.put(&b, largeRecord + 168, 8, fork.count)
        b[largeRecord + 41] |= 0x20

        guard case .opened(let reader)? = Volumes.open(MemorySource(bytes: b), offset: 0, length: UInt64(b.count)) else {
            Issue.record("the edited volume did not open"); return
        }
        let testdir = try #require(try reader.entries(of: reader.rootNode).first { $0.name == "testdir1" })
        let entries = try reader.entries(of: testdir.node)
        for (name, want) in [("xattr1", small), ("large_xattr", large)] {
            let node = try #require(entries.first { $0.name == name }).node
            #expect(try reader.attributes(of: node).size == UInt64(want.count), "\(name)")
            var got: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 50000)  // reads across block boundaries
            while true {
                let n = try buffer.withUnsafeMutableBytes { try reader.read(node, at: UInt64(got.count), into: $0) }
                if n == 0 { break }
                got += buffer.prefix(n)
            }
            #expect(got == want, "\(name)")
            // The compression header and its resource fork are macOS's own: not shown.
            let names = try reader.extendedAttributeNames(of: node)
            #expect(names.isEmpty, "\(name): \(names)")
        }
    }
}
