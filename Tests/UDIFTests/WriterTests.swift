import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

@Suite struct WriterTests {
    @Test(arguments: ImageFormat.allCases, [3 * 2048 + 7, 1, 2048, 5000])
    func unpartitionedDiskRoundTrips(format: ImageFormat, sectors: Int) throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(sectors: sectors, seed: UInt64(sectors))
        let summary = try ImageWriter(format: format).write(from: MemorySource(bytes: disk), to: dir.file("a.dmg"))
        let image = try UDIFImage(path: dir.file("a.dmg"))
        #expect(image.regions.count == 1)
        #expect(image.isOrdered)
        #expect(try readAll(image) == disk)
        #expect(try image.computeRegionCRCs() == summary.regionCRCs)
        #expect(image.trailer.masterChecksum.crc32Value == UDIFImage.masterCRC(of: summary.regionCRCs))
        if format == .udro { #expect(image.chunks.allSatisfy { $0.type == .raw || $0.type == .zeroFill }) }
    }

    @Test func zeroAndIncompressibleChunksAreStoredAsSuch() throws {
        let dir = TemporaryDirectory()
        var rng = SplitMix64(seed: 3)
        var disk = [UInt8](repeating: 0, count: 3 << 20)
        for i in (1 << 20)..<(2 << 20) { disk[i] = UInt8(truncatingIfNeeded: rng.next()) }
        for i in (2 << 20)..<(3 << 20) { disk[i] = UInt8(i % 7) }
        try ImageWriter().write(from: MemorySource(bytes: disk), to: dir.file("a.dmg"))
        let image = try UDIFImage(path: dir.file("a.dmg"))
        #expect(image.chunks.map(\.type) == [.zeroFill, .raw, .zlib])
    }

    @Test func partitionedSourceGetsOneRegionPerMapEntry() throws {
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_zlib.dmg" })
        let original = try UDIFImage(path: fixture.path)
        let disk = try readAll(original)
        let dir = TemporaryDirectory()
        try ImageWriter().write(from: MemorySource(bytes: disk), to: dir.file("copy.dmg"))
        let copy = try UDIFImage(path: dir.file("copy.dmg"))
        #expect(copy.regions.map(\.name) == original.regions.map(\.name))
        #expect(copy.regions.map(\.id) == original.regions.map(\.id))
        #expect(copy.regions.map(\.firstSector) == original.regions.map(\.firstSector))
        #expect(try readAll(copy) == disk)
    }

    @Test func nonSectorSizedSourceIsRefused() {
        let dir = TemporaryDirectory()
        let e = #expect(throws: UDIFError.self) { try ImageWriter().write(from: MemorySource(bytes: [1, 2, 3]), to: dir.file("a.dmg")) }
        guard case .unusableSource? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(!FileManager.default.fileExists(atPath: dir.file("a.dmg")))
    }

    @Test func failedWriteLeavesNothingBehind() throws {
        struct FailingSource: ByteSource {
            var byteCount: UInt64 { 8 << 20 }
            func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
                if offset >= 5 << 20 { throw UDIFError.system(.read(path: "device", offset: offset, .ioError)) }
                buffer.initializeMemory(as: UInt8.self, repeating: 1)
            }
        }
        let dir = TemporaryDirectory()
        let e = #expect(throws: UDIFError.self) { try ImageWriter().write(from: FailingSource(), to: dir.file("a.dmg")) }
        #expect(e == .system(.read(path: "device", offset: 5 << 20, .ioError)), "the source's own error, unchanged")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }
}
