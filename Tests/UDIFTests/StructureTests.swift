import SystemSupport
import Foundation
import TestSupport
import Testing
@testable import UDIF

@Suite struct StructureTests {
    @Test func trailerRoundTrips() throws {
        var t = Trailer()
        t.dataForkLength = 123_456
        t.xmlOffset = 123_456
        t.xmlLength = 789
        t.masterChecksum = .crc32(0xDEAD_BEEF)
        t.sectorCount = 3836
        t.segmentID = Array(0..<16)
        let bytes = t.serialized()
        #expect(bytes.count == 512)
        #expect(Array(bytes[352..<364]) == [0, 0, 0, 2, 0, 0, 0, 32, 0xDE, 0xAD, 0xBE, 0xEF], "master checksum lives at 352")
        #expect(try Trailer(parsing: bytes) == t)
    }

    @Test func trailerRejectsWrongMagicAndSize() {
        var bytes = Trailer().serialized()
        bytes[0] = UInt8(ascii: "K")
        #expect(throws: UDIFError.self) { try Trailer(parsing: bytes) }
        bytes = Trailer().serialized()
        bytes[10] = 0  // header size 512 -> 0
        #expect(throws: UDIFError.self) { try Trailer(parsing: bytes) }
    }

    @Test func blockTableRoundTrips() throws {
        let table = BlockTable(
            firstSector: 40, sectorCount: 3000, buffersNeeded: 2056, blockDescriptor: 3, checksum: .crc32(7),
            chunks: [
                BlockChunk(type: .zlib, sectorStart: 0, sectorCount: 2048, storedOffset: 0, storedLength: 100),
                BlockChunk(type: .zeroFill, sectorStart: 2048, sectorCount: 952, storedOffset: 100, storedLength: 0),
            ])
        let bytes = table.serialized()
        #expect(bytes.count == 204 + 3 * 40)
        #expect(try BlockTable(parsing: bytes) == table)
    }

    @Test func blockTableRejectsMoreChunksThanItHolds() {
        var bytes = BlockTable(firstSector: 0, sectorCount: 1, buffersNeeded: 0, blockDescriptor: 0, checksum: .none, chunks: []).serialized()
        bytes[200] = 0xFF
        #expect(throws: UDIFError.self) { try BlockTable(parsing: bytes) }
    }

    @Test func resourceForkRoundTripsWithEscapedNames() throws {
        let entry = ResourceEntry(cfName: "a <b> & c", data: Array(0..<200), id: "-1", name: "a <b> & c")
        let fork = ResourceFork(resources: ["blkx": [entry], "plst": [ResourceFork.defaultPlst()]])
        let xml = fork.xml()
        #expect(try ResourceFork(parsing: xml) == fork)
        let text = String(decoding: xml, as: UTF8.self)
        #expect(text.contains("\t\t\t\t<data>\n"), "hdiutil's tab layout")
        #expect(!text.contains("<b>"))
    }

    @Test func malformedPlistIsOneClearError() {
        #expect(throws: UDIFError.self) { try ResourceFork(parsing: Array("<plist><dict><key>x".utf8)) }
        #expect(throws: UDIFError.self) { try ResourceFork(parsing: Array("not a plist at all".utf8)) }
    }

    @Test func crcOfZeroRunsMatchesTheDirectComputation() {
        for n in [0, 1, 511, 512, 4096, 1_000_003] {
            #expect(CRC32.updateZeros(0x1234, count: UInt64(n)) == CRC32.update(0x1234, [UInt8](repeating: 0, count: n)))
        }
        let a: [UInt8] = Array("hello ".utf8)
        let b: [UInt8] = Array("world".utf8)
        #expect(CRC32.combine(CRC32.update(0, a), CRC32.update(0, b), lengthOfB: 5) == CRC32.update(0, a + b))
    }

    @Test func orderedPipelineKeepsOrderAndStopsOnError() throws {
        var seen: [Int] = []
        try orderedParallelMap(count: 1000, workers: 4, window: 5) { i in i * 2 } consume: { i, v in
            #expect(v == i * 2)
            seen.append(i)
        }
        #expect(seen == Array(0..<1000))
        #expect(throws: UDIFError.self) {
            try orderedParallelMap(count: 1000, workers: 4) { i -> Int in
                if i == 500 { throw UDIFError.badBlockTable("boom") }
                return i
            } consume: { _, _ in }
        }
    }
}
