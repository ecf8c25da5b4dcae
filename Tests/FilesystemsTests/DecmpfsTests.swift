@testable import Filesystems
import Foundation
import Testing
import UDIF

/// macOS's file compression (com.apple.decmpfs), each storage and codec, with hand-made
/// attributes and resource forks (no fixture holds a compressed file).
@Suite struct DecmpfsTests {
    static func header(type: UInt32, size: UInt64) -> [UInt8] {
        var h = Array("fpmc".utf8)
        for i in 0..<4 { h.append(UInt8(truncatingIfNeeded: type >> (8 * i))) }
        for i in 0..<8 { h.append(UInt8(truncatingIfNeeded: size >> (8 * i))) }
        return h
    }

    static func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    static func be32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (24 - 8 * $0)) } }

    /// LZVN literals (1-15 bytes per opcode) and the end-of-stream opcode.
    static func lzvnLiterals(_ bytes: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var rest = bytes[...]
        while !rest.isEmpty {
            let n = min(15, rest.count)
            out.append(0xE0 | UInt8(n))
            out += rest.prefix(n)
            rest = rest.dropFirst(n)
        }
        return out + [0x06, 0, 0, 0, 0, 0, 0, 0]
    }

    static func storedLZFSE(_ bytes: [UInt8]) -> [UInt8] { Array("bvx-".utf8) + le32(bytes.count) + bytes + Array("bvx$".utf8) }

    /// Decodes the whole file as HFSPlusVolume does: inline, or block by block from the fork.
    static func decode(_ attribute: [UInt8], fork: [UInt8] = []) throws(VolumeError) -> [UInt8] {
        var d = try Decmpfs(attribute)
        let read = { (offset: UInt64, count: Int) throws(VolumeError) -> [UInt8] in
            guard offset <= UInt64(fork.count), count <= fork.count - Int(offset) else { throw .damaged("past the fork") }
            return Array(fork[Int(offset)..<(Int(offset) + count)])
        }
        if d.storage == .attribute { return try d.decodeInline() }
        try d.readTable(read)
        var out: [UInt8] = []
        for i in 0..<d.blockCount { out += try d.decodeBlock(i, read) }
        return out
    }

    let text = Array(String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 3000).utf8)

    @Test func inlineKinds() throws {
        let short = Array(text.prefix(500))
        let zlib = try #require(short.withUnsafeBytes { Codec.compressZlib($0, level: 6) })
        #expect(try Self.decode(Self.header(type: 3, size: 500) + zlib) == short)
        #expect(try Self.decode(Self.header(type: 3, size: 500) + [0xFF] + short) == short)
        #expect(try Self.decode(Self.header(type: 1, size: 500) + short) == short)
        #expect(try Self.decode(Self.header(type: 7, size: 40) + Self.lzvnLiterals(Array(short.prefix(40)))) == Array(short.prefix(40)))
        #expect(try Self.decode(Self.header(type: 7, size: 40) + [0x06] + short.prefix(40)) == Array(short.prefix(40)))
        #expect(try Self.decode(Self.header(type: 11, size: 500) + Self.storedLZFSE(short)) == short)
    }

    /// Type 4: a resource fork holding one 'cmpf' resource, a block table after its length.
    @Test func zlibInTheResourceFork() throws {
        let blocks = stride(from: 0, to: text.count, by: 65536).map { Array(text[$0..<min($0 + 65536, text.count)]) }
        let stored: [[UInt8]] = blocks.enumerated().map { i, b in
            i == blocks.count - 1 ? [0xFF] + b : b.withUnsafeBytes { Codec.compressZlib($0, level: 6)! }
        }
        var table = Self.le32(blocks.count)
        var offset = 4 + 8 * blocks.count
        for s in stored {
            table += Self.le32(offset) + Self.le32(s.count)
            offset += s.count
        }
        let resource = table + stored.flatMap { $0 }
        let fork = Self.be32(0x100) + Self.be32(0x100 + 4 + resource.count) + Self.be32(4 + resource.count) + Self.be32(50)
            + [UInt8](repeating: 0, count: 0x100 - 16) + Self.be32(resource.count) + resource + [UInt8](repeating: 0, count: 50)
        #expect(try Self.decode(Self.header(type: 4, size: UInt64(text.count)), fork: fork) == text)
    }

    /// Types 8 and 12: a table of little-endian offsets, one more than the blocks.
    @Test func lzvnAndLZFSEInTheResourceFork() throws {
        let content = [UInt8](repeating: 0x61, count: 65536) + Array("tail".utf8)
        for (type, stored) in [(UInt32(8), [[0x06] + content.prefix(65536), Self.lzvnLiterals(Array("tail".utf8))]),
                               (12, [Self.storedLZFSE(Array(content.prefix(65536))), Self.storedLZFSE(Array("tail".utf8))])] {
            let first = 4 * (stored.count + 1)
            var offsets = [first]
            for s in stored { offsets.append(offsets.last! + s.count) }
            let fork = offsets.flatMap(Self.le32) + stored.flatMap { $0 }
            #expect(try Self.decode(Self.header(type: type, size: UInt64(content.count)), fork: fork) == content, "type \(type)")
        }
    }

    @Test func damageIsAnError() throws {
        let short = Array(text.prefix(100))
        #expect(throws: VolumeError.self) { try Self.decode([0, 1, 2]) }
        #expect(throws: VolumeError.self) { try Self.decode(Self.header(type: 99, size: 1) + [0]) }
        #expect(throws: VolumeError.self) { try Self.decode(Self.header(type: 3, size: 200) + [0xFF] + short) }
        #expect(throws: VolumeError.self) { try Self.decode(Self.header(type: 3, size: 100) + [0x78, 0x9C, 1, 2, 3]) }
        #expect(throws: VolumeError.self) { try Self.decode(Self.header(type: 3, size: 1 << 40) + [0xFF]) }
        // A table for the wrong number of blocks, and a block past the fork.
        #expect(throws: VolumeError.self) { try Self.decode(Self.header(type: 8, size: 10), fork: Self.le32(16) + Self.le32(16) + Self.le32(20) + Self.le32(24)) }
        #expect(throws: VolumeError.self) { try Self.decode(Self.header(type: 8, size: 10), fork: Self.le32(8) + Self.le32(4000)) }
    }
}
