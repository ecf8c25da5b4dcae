import Crypto
import Foundation
@testable import Imaging
import SystemSupport
import TestSupport
import Testing
import UDIF

/// `TargetSurvey`, `Restorer.incremental` and `TargetComparer` in-process, on small disks.
@Suite struct IncrementalTests {
    let reporter = Reporter(.quiet)

    /// `sampleDisk` (8 MiB) with chunks 2 (zeros), 4 (noise) and 6 (text) changed.
    static func changed(_ disk: [UInt8]) -> [UInt8] {
        var b = disk
        b[2 * mib + 100] = 1
        b[4 * mib + 7] ^= 0xFF
        b[6 * mib + 4096] = UInt8(ascii: "#")
        return b
    }

    func write(_ bytes: [UInt8], _ path: String) {
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
    }

    @Test func surveyHoldsExactlyWhatMatches() throws {
        let dir = TemporaryDirectory()
        var bytes = [UInt8](repeating: 7, count: 6 * mib)
        bytes[mib..<(2 * mib)] = ArraySlice(repeating: 0, count: mib)
        bytes[3 * mib + 5] = 9
        bytes.replaceSubrange((2 * mib)..<(3 * mib), with: repeatElement(0, count: mib))
        bytes[2 * mib + 100] = 1
        write(bytes, dir.file("t.raw"))
        let file = try FileIO(path: dir.file("t.raw"), flags: O_RDWR)
        #expect(file.punchHole(at: UInt64(4 * mib), length: UInt64(mib)))  // 4..5 MiB: a hole

        func digest(_ r: Range<Int>) -> [UInt8] { sha256(Array(bytes[r])) }
        let zeros = sha256([UInt8](repeating: 0, count: mib))
        let m = UInt64(mib)
        let ranges = [
            ExpectedRange(offset: 0, length: m, sha256: digest(0..<mib)),                    // same
            ExpectedRange(offset: m, length: m, sha256: nil),                                 // zeros, read
            ExpectedRange(offset: 2 * m, length: m, sha256: nil),                             // zeros but for one byte
            ExpectedRange(offset: 3 * m, length: m, sha256: sha256([UInt8](repeating: 7, count: mib))),  // one byte off
            ExpectedRange(offset: 4 * m, length: m, sha256: zeros),                           // a hole holding zeros
            ExpectedRange(offset: 5 * m, length: m, sha256: nil, unchecked: true),            // free space
            ExpectedRange(offset: 6 * m, length: m, sha256: nil),                             // past the end
            ExpectedRange(offset: 5 * m + m / 2, length: m, sha256: nil),                     // across the end
        ]
        let survey = TargetSurvey(reporter: reporter)
        #expect(try survey.held(in: dir.file("t.raw"), ranges: ranges) == [true, true, false, false, true, false, false, false])
        #expect(try survey.held(in: dir.file("missing.raw"), ranges: ranges) == Array(repeating: false, count: ranges.count))
        var one = survey
        one.workers = 1
        #expect(try one.held(in: dir.file("t.raw"), ranges: ranges) == [true, true, false, false, true, false, false, false])
    }

    @Test func restoreReusesWhatTheTargetHolds() throws {
        let dir = TemporaryDirectory()
        let a = sampleDisk(mebibytes: 8), b = Self.changed(a)
        let image = try scannedImage(b, in: dir)
        write(a, dir.file("t.raw"))
        var restorer = Restorer(reporter: reporter)
        restorer.incremental = true
        let c = try #require(try restorer.restore(source: image, target: dir.file("t.raw")))
        #expect(try contents(dir.file("t.raw")) == b)
        #expect(c.chunks == 8 && c.sameChunks == 5 && c.differentChunks == 3)
        #expect(c.fetchChunks == 3 && c.zeroChunks == 0 && c.fetchBytes == UInt64(3 * mib))
        let udif = try UDIFImage(path: image)
        #expect(c.fetchStoredBytes == [2, 4, 6].reduce(0) { $0 + udif.chunks[$1].storedLength })
        #expect(c.restoreSummary == "reused 5 chunks (5.0 MiB); fetched 3 chunks (\(ByteSize.format(c.fetchStoredBytes)) stored, 3.0 MiB on disk)")

        // Again: everything is held; compare agrees.
        let again = try #require(try restorer.restore(source: image, target: dir.file("t.raw")))
        #expect(again.sameChunks == 8 && again.differentChunks == 0)
        #expect(try TargetComparer(reporter: reporter).compare(source: image, target: dir.file("t.raw")).differentChunks == 0)

        // Back to a: the chunk of zeros b wrote into is zeroed, not fetched.
        let back = try scannedImage(a, in: dir, name: "a.dmg")
        let undo = try #require(try restorer.restore(source: back, target: dir.file("t.raw")))
        #expect(try contents(dir.file("t.raw")) == a)
        #expect(undo.fetchChunks == 2 && undo.zeroChunks == 1 && undo.zeroBytes == UInt64(mib))
        #expect(undo.restoreSummary.hasSuffix("; zeroed 1 chunk (1.0 MiB)"))
    }

    /// The target is never emptied first: a short or missing file holds nothing past its end,
    /// and a longer one is cut to the disk.
    @Test func shortMissingAndLongerTargets() throws {
        let dir = TemporaryDirectory()
        let a = sampleDisk(mebibytes: 8), b = Self.changed(a)
        let image = try scannedImage(b, in: dir)
        var restorer = Restorer(reporter: reporter)
        restorer.incremental = true
        write(Array(a[..<(3 * mib + 10)]), dir.file("short.raw"))
        let short = try #require(try restorer.restore(source: image, target: dir.file("short.raw")))
        #expect(try contents(dir.file("short.raw")) == b)
        #expect(short.sameChunks == 2, "chunks 0 and 1; 2 differs, the rest is past the end")
        let missing = try #require(try restorer.restore(source: image, target: dir.file("missing.raw")))
        #expect(try contents(dir.file("missing.raw")) == b)
        #expect(missing.sameChunks == 0)
        write(a + [UInt8](repeating: 3, count: mib), dir.file("long.raw"))
        let long = try #require(try restorer.restore(source: image, target: dir.file("long.raw")))
        #expect(try contents(dir.file("long.raw")) == b)
        #expect(long.sameChunks == 5)
    }

    /// A raw image with its block map: ranges of the map are the units.
    @Test func rawImageWithABlockMap() throws {
        let dir = TemporaryDirectory()
        let a = sampleDisk(mebibytes: 8, seed: 2, textAtEnd: true), b = Self.changed(a)
        write(b, dir.file("disk.img"))
        #expect(try ImageScanner(reporter: reporter).scan(dir.file("disk.img")) == .wroteBlockMap(dir.file("disk.img.bmap")))
        write(a, dir.file("t.raw"))
        var restorer = Restorer(reporter: reporter)
        restorer.incremental = true
        let c = try #require(try restorer.restore(source: dir.file("disk.img"), target: dir.file("t.raw")))
        #expect(try contents(dir.file("t.raw")) == b)
        #expect(c.unit == "range" && c.sameChunks > 0 && c.differentChunks > 0 && c.fetchStoredBytes == c.fetchBytes)
        #expect(try TargetComparer(reporter: reporter).compare(source: dir.file("disk.img"), target: dir.file("t.raw")).differentChunks == 0)
    }

    /// Free space keeps what the target held, as in any restore; with `eraseFree` it is
    /// zeroed where it is not zero already.
    @Test func freeSpaceIsLeftAloneOrZeroed() throws {
        let dir = TemporaryDirectory()
        let b = Self.changed(sampleDisk(mebibytes: 8))
        let free = UInt64(6 * mib)..<UInt64(8 * mib)
        var writer = ImageWriter()
        writer.ignore = [free]
        try writer.write(from: MemorySource(bytes: b), to: dir.file("disk.dmg"))
        #expect(try ImageScanner(reporter: reporter).scan(dir.file("disk.dmg")) == .scanned)
        var target = [UInt8](repeating: 0xFF, count: b.count)
        target.replaceSubrange(0..<(6 * mib), with: b[0..<(6 * mib)])
        write(target, dir.file("t.raw"))
        var restorer = Restorer(reporter: reporter)
        restorer.incremental = true
        let kept = try #require(try restorer.restore(source: dir.file("disk.dmg"), target: dir.file("t.raw")))
        #expect(try contents(dir.file("t.raw")) == target)
        #expect(kept.freeChunks == 1 && kept.freeBytes == UInt64(2 * mib) && kept.sameChunks == kept.chunks - 1)

        restorer.eraseFree = true
        let erased = try #require(try restorer.restore(source: dir.file("disk.dmg"), target: dir.file("t.raw")))
        var zeroed = b
        zeroed.replaceSubrange(Int(free.lowerBound)..<Int(free.upperBound), with: repeatElement(0, count: free.count))
        #expect(try contents(dir.file("t.raw")) == zeroed)
        #expect(erased.freeChunks == 0 && erased.zeroChunks == 1 && erased.fetchChunks == 0)
        let twice = try #require(try restorer.restore(source: dir.file("disk.dmg"), target: dir.file("t.raw")))
        #expect(twice.differentChunks == 0)
    }

    @Test func unscannedSourceIsRefusedAndTheTargetUntouched() throws {
        let dir = TemporaryDirectory()
        let a = sampleDisk(mebibytes: 8)
        let image = try makeImage(Self.changed(a), in: dir)
        write(a, dir.file("t.raw"))
        for verify in [true, false] {
            var restorer = Restorer(reporter: reporter)
            restorer.incremental = true
            restorer.verify = verify
            let e = #expect(throws: ImagingError.self) { try restorer.restore(source: image, target: dir.file("t.raw")) }
            guard case .cannotCompare(let path)? = e else { Issue.record("wrong error: \(String(describing: e))"); continue }
            #expect(path == image)
            #expect(try contents(dir.file("t.raw")) == a)
        }
        #expect(throws: ImagingError.self) { try TargetComparer(reporter: reporter).compare(source: image, target: dir.file("t.raw")) }
    }
}
