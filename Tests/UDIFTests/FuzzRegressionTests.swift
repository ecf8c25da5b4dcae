import Foundation
import TestSupport
import Testing
@testable import UDIF

/// Inputs the fuzz harnesses (Sources/FuzzTargets) found crashing or misbehaving, kept so the
/// fixes stay fixed. Each must now be refused with one line of error, or read correctly.
@Suite struct UDIFFuzzRegressionTests {
    func refused(_ xml: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        let e = #expect(throws: UDIFError.self, sourceLocation: sourceLocation) { try ResourceFork(parsing: xml) }
        #expect(e.map { !$0.description.contains("\n") } == true, "\(e?.description ?? "")", sourceLocation: sourceLocation)
    }

    /// A resource fork with one blkx entry holding `body`.
    func fork(_ body: [UInt8]) -> [UInt8] {
        Array("<plist version=\"1.0\"><dict><key>resource-fork</key><dict><key>blkx</key><array><dict>".utf8) + body
            + Array("</dict></array></dict></dict></plist>".utf8)
    }

    /// Foundation's XML plist decoder asserted (process killed) on invalid UTF-8 in an integer
    /// (found by the CI mutation pass in a config; a resource fork reads integers too).
    @Test func invalidUTF8InAnIntegerIsRefused() {
        refused(fork(Array("<key>Attributes</key><integer>".utf8) + [0xFD] + Array("000000</integer>".utf8)))
    }

    /// Containers nested thousands deep overflowed the stack in Foundation's XML parser.
    @Test func deeplyNestedPlistIsRefused() {
        let deep = String(repeating: "<array>", count: 20_000) + String(repeating: "</array>", count: 20_000)
        refused(fork(Array("<key>Name</key>\(deep)".utf8)))
        #expect(PropertyListSafety.depth(of: fork(Array("<key>Name</key><array/><array> <dict></dict></array>".utf8))) == 6)
    }

    /// A key from the file went into the error as it was, line break and all (libFuzzer,
    /// plist harness).
    @Test func keyWithALineBreakGivesAOneLineError() {
        refused(Array("<plist version=\"1.0\"><dict><key>resource-fork</key><dict><key>a\nb</key><array><false/></array></dict></dict></plist>".utf8))
    }

    /// An image of one region, `table` under blkx ID `id`, with no data fork.
    func image(table: [UInt8], id: String = "0", sectors: UInt64) throws -> UDIFImage {
        let xml = ResourceFork(resources: ["blkx": [ResourceEntry(data: table, id: id, name: "disk")]]).xml()
        var trailer = Trailer()
        trailer.xmlLength = UInt64(xml.count)
        trailer.sectorCount = sectors
        let dir = TemporaryDirectory()
        _ = FileManager.default.createFile(atPath: dir.file("test.dmg"), contents: Data(xml + trailer.serialized()))
        return try UDIFImage(path: dir.file("test.dmg"))
    }

    func zeroTable(sectors: UInt64) -> [UInt8] {
        let chunk = BlockChunk(type: .zeroFill, sectorStart: 0, sectorCount: sectors, storedOffset: 0, storedLength: 0)
        return BlockTable(firstSector: 0, sectorCount: sectors, buffersNeeded: 0, blockDescriptor: 0, checksum: .none, chunks: [chunk])
            .serialized()
    }

    /// A zero-fill chunk may claim the whole disk. With a koly sector count up to
    /// UInt64.max / 512 accepted, a disk past Int.max bytes trapped on the first read of that
    /// chunk and in its CRC (found by review; the blkx harness replays it as a crash).
    @Test func diskLargerThanAnIntIsRefused() throws {
        for sectors in [UInt64.max / 512, UInt64(Int64.max) / 512 + 1] {
            let e = #expect(throws: UDIFError.self) { try image(table: zeroTable(sectors: sectors), sectors: sectors) }
            guard case .notAnImage? = e else { Issue.record("\(sectors) sectors: wrong error \(String(describing: e))"); continue }
        }
        let sectors = UInt64(Int64.max) / 512
        let largest = try image(table: zeroTable(sectors: sectors), sectors: sectors)
        #expect(try largest.read(at: largest.byteCount - 1, count: 1) == [0])
        #expect(try largest.computeRegionCRCs().count == 1)
    }

    /// The blkx ID went into errors as it was, line break and all (found by the udif
    /// harness's one-line check, on a fixture with its ID and table edited).
    @Test func regionIDWithALineBreakGivesAOneLineError() throws {
        var table = zeroTable(sectors: 8)
        table[0] = UInt8(ascii: "M")  // no mish signature
        let e = #expect(throws: UDIFError.self) { try image(table: table, id: "-1\n2", sectors: 8) }
        guard case .badBlockTable? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        // The whole line, because the quoting of the ID is what is under test.
        #expect(e?.description == "blkx \"-1\\n2\": block table has no mish signature")
        let plain = try image(table: zeroTable(sectors: 8), id: "-1", sectors: 8)
        #expect(plain.describe(chunk: 0) == "chunk 0 (bytes 0-4095, blkx -1)", "plain IDs stay unquoted")
    }
}
