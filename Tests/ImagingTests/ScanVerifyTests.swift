import Foundation
@testable import Imaging
import SystemSupport
import TestSupport
import Testing
import UDIF

/// `ImageScanner`, `ImageVerifier` and `RangeVerifier` in-process.
@Suite struct ScannerTests {
    let reporter = Reporter(.quiet)

    @Test func scanStoresAChecksumPerChunkAndOfTheDisk() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 6)
        let path = try makeImage(disk, in: dir)
        #expect(try ScanData.stored(in: UDIFImage(path: path)) == nil)
        #expect(try ImageScanner(reporter: reporter).scan(path) == .scanned)

        let image = try UDIFImage(path: path)
        let scan = try #require(try ScanData.stored(in: image))
        #expect(scan.diskBytes == UInt64(disk.count))
        #expect(scan.diskSHA256 == sha256(disk))
        #expect(scan.chunks.count == image.chunks.count)
        for (entry, chunk) in zip(scan.chunks, image.chunks) {
            #expect(entry.diskOffset == chunk.diskOffset && entry.length == chunk.length)
            let range = Int(chunk.diskOffset)..<Int(chunk.diskOffset + chunk.length)
            #expect(entry.sha256 == sha256(Array(disk[range])), "chunk at \(chunk.diskOffset)")
        }
        #expect(image.isOrdered)
        #expect(try image.read(at: 0, count: disk.count) == disk, "the rewritten image holds the same disk")
        #expect(try partialFiles(in: dir).isEmpty)
        try ImageVerifier(reporter: reporter).verify(path)
    }

    @Test func rescanReportsAlreadyScannedAndChangesNothing() throws {
        let dir = TemporaryDirectory()
        let path = try scannedImage(sampleDisk(mebibytes: 3), in: dir)
        let before = try contents(path)
        #expect(try ImageScanner(reporter: reporter).scan(path) == .alreadyScanned)
        #expect(try contents(path) == before)
    }

    /// A chunk whose bytes no longer give its region's stored CRC-32: the scan refuses and
    /// leaves the image as it was, with no temporary file.
    @Test func damagedRegionChecksumIsRefused() throws {
        let dir = TemporaryDirectory()
        let path = try makeImage(sampleDisk(mebibytes: 4), in: dir, format: .udro)
        let parsed = try UDIFImage(path: path)
        #expect(parsed.regions[0].table.checksum.crc32Value != nil, "the writer stores region CRCs")
        try flipBit(in: path, at: parsed.chunks[1].fileOffset + 5)
        let before = try contents(path)
        let e = #expect(throws: ImagingError.self) { try ImageScanner(reporter: reporter).scan(path) }
        guard case .regionChecksumMismatch(let id, let name)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(id == parsed.regions[0].id && name == parsed.regions[0].name)
        #expect(!e!.description.contains("\n"))
        #expect(try contents(path) == before)
        #expect(try partialFiles(in: dir).isEmpty)
    }

    @Test func unscannedImageCannotBeVerified() throws {
        let dir = TemporaryDirectory()
        let path = try makeImage(sampleDisk(mebibytes: 2), in: dir)
        let e = #expect(throws: ImagingError.self) { try ImageVerifier(reporter: reporter).verify(path) }
        guard case .notScanned(path, restoring: false)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
    }

    /// verify names the chunk that changed after the scan, by its disk bytes.
    @Test func verifyNamesTheDamagedChunk() throws {
        let dir = TemporaryDirectory()
        let path = try scannedImage(sampleDisk(mebibytes: 5), in: dir, format: .udro)
        let parsed = try UDIFImage(path: path)
        let index = try #require(parsed.chunks.indices.last { parsed.chunks[$0].type == .raw })
        try flipBit(in: path, at: parsed.chunks[index].fileOffset + 77)
        let e = #expect(throws: ImagingError.self) { try ImageVerifier(reporter: reporter).verify(path) }
        guard case .mismatch(let m)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        let c = parsed.chunks[index]
        #expect(m.firstByte == c.diskOffset && m.lastByte == c.diskOffset + c.length - 1)
        #expect(m.chunk?.index == index && m.chunk?.region == parsed.regions[c.region].id)
        #expect(m.reference == .scan && !m.afterWriting && !m.shouldBeZeros)
    }

    /// A raw image's block map: bytes where the map says zeros are named as such.
    @Test func dataInAnUnmappedBlockIsNamed() throws {
        let dir = TemporaryDirectory()
        var disk = sampleDisk(mebibytes: 3, textAtEnd: true)
        let zeroMiB = mib  // MiB 1, noise in the sample, made zeros: unmapped in the block map
        for i in zeroMiB..<(zeroMiB + mib) { disk[i] = 0 }
        _ = FileManager.default.createFile(atPath: dir.file("disk.img"), contents: Data(disk))
        #expect(try ImageScanner(reporter: reporter).scan(dir.file("disk.img")) == .wroteBlockMap(dir.file("disk.img.bmap")))
        try ImageVerifier(reporter: reporter).verify(dir.file("disk.img"))

        try flipBit(in: dir.file("disk.img"), at: UInt64(zeroMiB + 5000))
        let e = #expect(throws: ImagingError.self) { try ImageVerifier(reporter: reporter).verify(dir.file("disk.img")) }
        guard case .mismatch(let m)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(m.shouldBeZeros && m.reference == .blockMap && m.chunk == nil)
        #expect(m.firstByte <= UInt64(zeroMiB + 5000) && m.lastByte >= UInt64(zeroMiB + 5000))
        #expect(m.firstByte >= UInt64(zeroMiB) && m.lastByte < UInt64(zeroMiB + mib), "within the unmapped MiB")
    }
}

@Suite struct RangeVerifierTests {
    let reporter = Reporter(.quiet)
    /// Three 64 KiB ranges: data, zeros, data.
    let disk: [UInt8] = {
        var rng = SplitMix64(seed: 5)
        var bytes = (0..<(3 << 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for i in (1 << 16)..<(2 << 16) { bytes[i] = 0 }
        return bytes
    }()

    var ranges: [ExpectedRange] {
        (0..<3).map { i in
            let r = (i << 16)..<((i + 1) << 16)
            return ExpectedRange(offset: UInt64(r.lowerBound), length: UInt64(r.count), sha256: i == 1 ? nil : sha256(Array(disk[r])))
        }
    }

    func locate(_ ranges: [ExpectedRange]) -> @Sendable (Int) -> Mismatch {
        { i in Mismatch(firstByte: ranges[i].offset, lastByte: ranges[i].offset + ranges[i].length - 1,
                        shouldBeZeros: ranges[i].sha256 == nil, reference: .blockMap) }
    }

    @Test func matchingDiskPasses() throws {
        try RangeVerifier(reporter: reporter).verify(MemorySource(bytes: disk), ranges, mismatch: locate(ranges))
    }

    @Test func changedByteGivesItsRange() throws {
        var changed = disk
        changed[(2 << 16) + 100] ^= 0xFF
        let e = #expect(throws: ImagingError.self) {
            try RangeVerifier(reporter: reporter).verify(MemorySource(bytes: changed), ranges, mismatch: locate(ranges))
        }
        guard case .mismatch(let m)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(m == locate(ranges)(2))
        #expect(!m.shouldBeZeros)
    }

    @Test func nonZeroByteInAZeroRangeShouldBeZeros() throws {
        var changed = disk
        changed[(1 << 16) + 9] = 1
        let e = #expect(throws: ImagingError.self) {
            try RangeVerifier(reporter: reporter).verify(MemorySource(bytes: changed), ranges, mismatch: locate(ranges))
        }
        guard case .mismatch(let m)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(m.shouldBeZeros && m.firstByte == 1 << 16 && m.lastByte == (2 << 16) - 1)
        #expect(m.description.contains("should be zeros"), "the one line says what is wrong")
    }

    /// The first bad range in disk order is reported, whatever order the workers finish in.
    @Test func firstBadRangeIsReported() throws {
        var changed = disk
        changed[5] ^= 1
        changed[(2 << 16) + 5] ^= 1
        for workers in [1, 2, 4] {
            var verifier = RangeVerifier(reporter: reporter)
            verifier.workers = workers
            let e = #expect(throws: ImagingError.self) { try verifier.verify(MemorySource(bytes: changed), ranges, mismatch: locate(ranges)) }
            guard case .mismatch(let m)? = e else { Issue.record("wrong error: \(String(describing: e))"); continue }
            #expect(m.firstByte == 0, "\(workers) workers")
        }
    }
}
