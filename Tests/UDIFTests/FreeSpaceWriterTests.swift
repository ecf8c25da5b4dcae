import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

/// Free space written as ignore chunks, and the usage record stored beside the scan data.
@Suite struct FreeSpaceWriterTests {
    /// A source that remembers every byte range read from it.
    final class RecordingSource: ByteSource, @unchecked Sendable {  // reads are recorded under the lock
        let base: MemorySource
        private let lock = NSLock()
        private var reads: [Range<UInt64>] = []
        init(_ bytes: [UInt8]) { base = MemorySource(bytes: bytes) }
        var byteCount: UInt64 { base.byteCount }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
            lock.lock()
            reads.append(offset..<(offset + UInt64(buffer.count)))
            lock.unlock()
            try base.read(into: buffer, at: offset)
        }
        var ranges: [Range<UInt64>] { lock.lock(); defer { lock.unlock() }; return reads }
    }

    @Test func piecesKeepTheGridAndMergeFreeRuns() {
        typealias P = ImageWriter.Piece
        // Region of 10 sectors, grid of 4: free 1..<2, 3..<6 and 6..<7 (adjacent: one chunk), 9..<12 (clipped).
        let pieces = ImageWriter.pieces(sectorCount: 10, chunkSectors: 4, free: [1..<2, 3..<6, 6..<7, 9..<12])
        #expect(pieces == [
            P(sectorStart: 0, sectorCount: 1, ignore: false), P(sectorStart: 1, sectorCount: 1, ignore: true),
            P(sectorStart: 2, sectorCount: 1, ignore: false), P(sectorStart: 3, sectorCount: 4, ignore: true),
            P(sectorStart: 7, sectorCount: 1, ignore: false), P(sectorStart: 8, sectorCount: 1, ignore: false),
            P(sectorStart: 9, sectorCount: 1, ignore: true),
        ])
        #expect(ImageWriter.pieces(sectorCount: 9, chunkSectors: 4, free: []).map(\.sectorCount) == [4, 4, 1])
        #expect(ImageWriter.pieces(sectorCount: 9, chunkSectors: 4, free: [0..<9]) == [P(sectorStart: 0, sectorCount: 9, ignore: true)])
    }

    @Test(arguments: [ImageFormat.udzo, .udro])
    func freeRunsBecomeIgnoreChunksThatAreNeverRead(format: ImageFormat) throws {
        let dir = TemporaryDirectory()
        var disk = sampleDisk(sectors: 9 * 2048 + 5, seed: 7)
        var rng = SplitMix64(seed: 8)
        for i in disk.indices where i % 3 == 0 { disk[i] = UInt8(truncatingIfNeeded: rng.next()) | 1 }  // no zero chunks: free runs must not hide
        // Runs off the grid, one crossing several cells, one at the very end.
        let free: [Range<UInt64>] = [(512 * 100)..<(512 * 3000), (512 * 4096)..<(512 * 4097), (512 * 8000)..<(512 * (9 * 2048 + 5))]
        let source = RecordingSource(disk)
        var writer = ImageWriter(format: format)
        writer.ignore = free
        let summary = try writer.write(from: source, to: dir.file("a.dmg"))
        for read in source.ranges {
            #expect(!free.contains { $0.overlaps(read) }, "read \(read) reaches into free space")
        }
        let image = try UDIFImage(path: dir.file("a.dmg"))
        let ignored = image.chunks.filter { $0.type == .ignore }.map { $0.diskOffset..<($0.diskOffset + $0.length) }
        #expect(ignored == free)
        #expect(summary.ignoredBytes == free.reduce(0) { $0 + UInt64($1.count) })
        #expect(image.chunks.filter { $0.type == .ignore }.allSatisfy { $0.storedLength == 0 })
        // Data chunks stay within one 1 MiB cell of the grid.
        for c in image.chunks where c.type != .ignore {
            #expect(c.length <= 1 << 20 && c.diskOffset >> 20 == (c.diskOffset + c.length - 1) >> 20, "\(c)")
        }
        #expect(try image.computeRegionCRCs() == image.regions.compactMap { $0.table.checksum.crc32Value })
        #expect(try image.computeRegionCRCs() == summary.regionCRCs)
        var expected = disk
        for run in free { for i in Int(run.lowerBound)..<Int(run.upperBound) { expected[i] = 0 } }
        #expect(try readAll(image) == expected, "free space reads as zeros")
        let check = try python3([Fixtures.checker, dir.file("a.dmg"), dir.file("a.raw")])
        #expect(check.status == 0, "\(check.output)")
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.file("a.raw")))) == expected)
    }

    @Test func aFreeRunCanSpanRegions() throws {
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_zlib.dmg" })
        let disk = try readAll(UDIFImage(path: fixture.path))
        let regions = try PartitionMap.regions(of: MemorySource(bytes: disk))
        // From inside the second region to inside the fifth.
        let start = (regions[1].firstSector) * 512, end = (regions[4].firstSector + 3) * 512
        let dir = TemporaryDirectory()
        var writer = ImageWriter()
        writer.ignore = [start..<end]
        try writer.write(from: MemorySource(bytes: disk), to: dir.file("a.dmg"))
        let image = try UDIFImage(path: dir.file("a.dmg"))
        #expect(image.regions.count == regions.count)
        let ignored = image.chunks.filter { $0.type == .ignore }
        #expect(ignored.map(\.region) == [1, 2, 3, 4])
        #expect(ignored.reduce(0) { $0 + $1.length } == end - start)
        #expect(try image.computeRegionCRCs() == image.regions.compactMap { $0.table.checksum.crc32Value })
    }

    @Test func freeRunsThatAreNotWholeSectorsAreRefused() throws {
        let dir = TemporaryDirectory()
        let bads: [[Range<UInt64>]] = [[100..<4096], [4096..<8192, 0..<512], [0..<(1 << 30)]]
        for bad in bads {
            var writer = ImageWriter()
            writer.ignore = bad
            #expect(throws: UDIFError.self) { try writer.write(from: MemorySource(bytes: sampleDisk(sectors: 64)), to: dir.file("a.dmg")) }
            #expect(!FileManager.default.fileExists(atPath: dir.file("a.dmg")))
        }
    }

    @Test func usageDataRoundTripsAndRefusesDamage() throws {
        let long = String(repeating: "é", count: 200)  // 400 bytes: cut at 254, a whole character
        let data = UsageData(records: [
            .init(partition: 1, firstSector: 2048, sectorCount: 8192, finding: .mapped, filesystem: "ext4",
                  method: "block bitmaps (libext2fs)", reason: "", allocatedBytes: 1_000_000, ignoredBytes: 3_000_000),
            .init(partition: 2, firstSector: 10240, sectorCount: 6000, finding: .unknown, filesystem: "", method: "",
                  reason: long, allocatedBytes: 6000 * 512, ignoredBytes: 0),
        ])
        let bytes = data.serialized()
        let back = try UsageData(parsing: bytes)
        #expect(back.records[0] == data.records[0])
        #expect(back.records[1].reason == String(repeating: "é", count: 127))
        for cut in [0, 8, 15, 16 + 36, bytes.count - 1] {
            #expect(throws: UDIFError.self) { try UsageData(parsing: Array(bytes[0..<cut])) }
        }
        var lying = bytes
        lying[11] = 200  // claims 200 records
        #expect(throws: UDIFError.self) { try UsageData(parsing: lying) }
        #expect(throws: UDIFError.self) { try UsageData(parsing: bytes + [0]) }
        var notText = bytes
        notText[16 + 36 + 1] = 0xFF  // the first byte of "ext4"
        #expect(throws: UDIFError.self) { try UsageData(parsing: notText) }
        var unknown = bytes
        unknown[16 + 32] = 9  // a finding from a later version reads as unknown
        #expect(try UsageData(parsing: unknown).records[0].finding == .unknown)
    }
}

/// python3 with arguments; its output and status.
func python3(_ args: [String]) throws -> (status: Int32, output: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = ["python3"] + args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    try p.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, output)
}
