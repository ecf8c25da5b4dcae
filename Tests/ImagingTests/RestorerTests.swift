import Foundation
@testable import Imaging
import SystemSupport
import TestSupport
import Testing
import UDIF

/// `Restorer` and `RestoreTarget` in-process, on small images made here.
@Suite struct RestorerTests {
    let reporter = Reporter(.quiet)

    @Test(arguments: [ImageFormat.udzo, .udro])
    func restoreToAFileIsByteIdentical(_ format: ImageFormat) throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 6)
        let image = try scannedImage(disk, in: dir, format: format)
        try Restorer(reporter: reporter).restore(source: image, target: dir.file("target.raw"))
        #expect(try contents(dir.file("target.raw")) == disk)
        // Over a longer file of other bytes: replaced, not overlaid.
        _ = FileManager.default.createFile(atPath: dir.file("old.raw"), contents: Data(repeating: 0xA5, count: 9 * mib))
        try Restorer(reporter: reporter).restore(source: image, target: dir.file("old.raw"))
        #expect(try contents(dir.file("old.raw")) == disk)
        #expect(try partialFiles(in: dir).isEmpty)
    }

    @Test func fixtureRestoresToItsDisk() throws {
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_zlib.dmg" }, "fixture missing")
        let dir = TemporaryDirectory()
        try FileManager.default.copyItem(atPath: fixture.path, toPath: dir.file("f.dmg"))
        #expect(try ImageScanner(reporter: reporter).scan(dir.file("f.dmg")) == .scanned)
        try Restorer(reporter: reporter).restore(source: dir.file("f.dmg"), target: dir.file("target.raw"))
        #expect(hex(sha256(try contents(dir.file("target.raw")))) == fixture.sha256)
    }

    /// A raw image restores too, checked against the block map its scan wrote.
    @Test func rawImageWithItsBlockMapRestores() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 4, seed: 2, textAtEnd: true)
        _ = FileManager.default.createFile(atPath: dir.file("disk.img"), contents: Data(disk))
        #expect(try ImageScanner(reporter: reporter).scan(dir.file("disk.img")) == .wroteBlockMap(dir.file("disk.img.bmap")))
        try Restorer(reporter: reporter).restore(source: dir.file("disk.img"), target: dir.file("target.raw"))
        #expect(try contents(dir.file("target.raw")) == disk)
    }

    @Test func unscannedImageIsRefusedUnlessNotVerifying() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 3)
        let image = try makeImage(disk, in: dir)
        let e = #expect(throws: ImagingError.self) { try Restorer(reporter: reporter).restore(source: image, target: dir.file("t.raw")) }
        guard case .notScanned(let path, let restoring)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(path == image && restoring)
        #expect(!FileManager.default.fileExists(atPath: dir.file("t.raw")), "refused before the target was created")
        var restorer = Restorer(reporter: reporter)
        restorer.verify = false
        try restorer.restore(source: image, target: dir.file("t.raw"))
        #expect(try contents(dir.file("t.raw")) == disk)
    }

    @Test func targetThatIsTheSourceIsRefused() throws {
        let dir = TemporaryDirectory()
        let image = try scannedImage(sampleDisk(mebibytes: 2), in: dir)
        let before = try contents(image)
        try FileManager.default.linkItem(atPath: image, toPath: dir.file("link.dmg"))
        for target in [image, dir.file("link.dmg")] {
            let e = #expect(throws: ImagingError.self) { try Restorer(reporter: reporter).restore(source: image, target: target) }
            guard case .unusableTarget(let path, .isSource)? = e else { Issue.record("\(target): wrong error \(String(describing: e))"); continue }
            #expect(path == target)
        }
        #expect(try contents(image) == before)
    }

    @Test func targetInAMissingFolderIsRefused() throws {
        let dir = TemporaryDirectory()
        let image = try scannedImage(sampleDisk(mebibytes: 2), in: dir)
        let target = dir.file("no/such/folder/t.raw")
        let e = #expect(throws: ImagingError.self) { try Restorer(reporter: reporter).restore(source: image, target: target) }
        guard case .unusableTarget(let path, .folderMissing)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(path == target)
    }

    @Test func deviceTooSmallIsRefusedBeforeWriting() throws {
        let device = RestoreTarget(path: "/dev/small", isBlockDevice: true, capacity: 4096)
        let e = #expect(throws: ImagingError.self) { try device.checkFits(8192) }
        guard case .unusableTarget("/dev/small", .tooSmall(capacity: 4096, needed: 8192))? = e else {
            Issue.record("wrong error: \(String(describing: e))"); return
        }
        #expect(throws: Never.self) { try device.checkFits(4096) }
        // A file grows to the disk's size: never too small.
        #expect(throws: Never.self) { try RestoreTarget(path: "/tmp/x", isBlockDevice: false, capacity: 0).checkFits(1 << 40) }
    }

    /// The same through `Restorer` on a real 1 MiB loop device (root only; required in CI).
    @Test(.enabled(if: LoopDevice.available)) func loopDeviceTooSmallIsRefused() throws {
        let dir = TemporaryDirectory()
        let image = try scannedImage(sampleDisk(mebibytes: 2), in: dir)
        _ = FileManager.default.createFile(atPath: dir.file("backing"), contents: Data(repeating: 0x5A, count: mib))
        let loop = try LoopDevice(backing: dir.file("backing"))
        defer { loop.detach() }
        let e = #expect(throws: ImagingError.self) { try Restorer(reporter: reporter).restore(source: image, target: loop.path) }
        guard case .unusableTarget(let path, .tooSmall(capacity: UInt64(mib), needed: UInt64(2 * mib)))? = e else {
            Issue.record("wrong error: \(String(describing: e))"); return
        }
        #expect(path == loop.path)
        #expect(try contents(dir.file("backing")).allSatisfy { $0 == 0x5A }, "nothing was written")
    }

    /// A chunk that no longer matches the scan is caught before it is written; the chunks
    /// before it were written, and the wipe zeroes the target's ends.
    @Test func damagedChunkErasesTheTargetsEnds() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 6)
        let image = try scannedImage(disk, in: dir, format: .udro)
        let parsed = try UDIFImage(path: image)
        let damaged = 3
        #expect(parsed.chunks[damaged].type == .raw && parsed.chunks[damaged].diskOffset == UInt64(3 * mib))
        try flipBit(in: image, at: parsed.chunks[damaged].fileOffset + 1000)
        let target = dir.file("t.raw")

        let e = #expect(throws: ImagingError.self) { try Restorer(reporter: reporter).restore(source: image, target: target) }
        guard case .targetErased(let path, let cause)? = e, case .damagedSource(let m)? = cause as? ImagingError else {
            Issue.record("wrong error: \(String(describing: e))"); return
        }
        #expect(path == target)
        #expect(m.firstByte == UInt64(3 * mib) && m.lastByte == UInt64(4 * mib - 1))
        #expect(m.chunk?.index == damaged && m.reference == .scan)
        #expect(!e!.description.contains("\n"))
        let restored = try contents(target)
        #expect(restored.count == disk.count)
        #expect(try endsAreZero(target))
        #expect(restored[mib..<(3 * mib)] == disk[mib..<(3 * mib)], "chunks before the damaged one were written")
        #expect(restored[(3 * mib)...].allSatisfy { $0 == 0 }, "nothing from the damaged chunk on")
    }

    /// What a multicast client does: `RestoreTarget.restore` with its own writer. A failure
    /// after writing began (here an interruption-like error from the writer) wipes the ends.
    @Test func failedWriterErasesTheTargetsEnds() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 4)
        let target = try RestoreTarget.validate(dir.file("t.raw"), source: nil)
        struct Stop: Error {}
        let e = #expect(throws: ImagingError.self) {
            try target.restore(diskBytes: UInt64(disk.count), verifying: nil, reporter: reporter) { file, _ in
                try file.write(disk, at: 0)
                throw Stop()
            }
        }
        guard case .targetErased(let path, let cause)? = e, cause is Stop else { Issue.record("wrong error: \(String(describing: e))"); return }
        #expect(path == dir.file("t.raw"))
        let restored = try contents(dir.file("t.raw"))
        #expect(try endsAreZero(dir.file("t.raw")))
        #expect(restored[mib..<(3 * mib)] == disk[mib..<(3 * mib)])
    }

    /// A write that goes wrong unnoticed is caught by reading the target back.
    @Test func targetThatReadsBackWrongFailsVerification() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 4)
        let ranges = (0..<4).map { ExpectedRange(offset: UInt64($0 * mib), length: UInt64(mib), sha256: sha256(Array(disk[($0 * mib)..<(($0 + 1) * mib)]))) }
        let target = try RestoreTarget.validate(dir.file("t.raw"), source: nil)
        let check = (ranges: ranges, mismatch: { @Sendable (i: Int) in
            Mismatch(firstByte: ranges[i].offset, lastByte: ranges[i].offset + ranges[i].length - 1, reference: .source)
        })
        let e = #expect(throws: ImagingError.self) {
            try target.restore(diskBytes: UInt64(disk.count), verifying: check, reporter: reporter) { file, _ in
                var wrong = disk
                wrong[2 * mib + 7] ^= 1
                try file.write(wrong, at: 0)
            }
        }
        guard case .targetErased(_, let cause)? = e, case .mismatch(let m)? = cause as? ImagingError else {
            Issue.record("wrong error: \(String(describing: e))"); return
        }
        #expect(m.firstByte == UInt64(2 * mib) && m.lastByte == UInt64(3 * mib - 1))
        #expect(m.afterWriting && m.reference == .source)
        #expect(try endsAreZero(dir.file("t.raw")))
    }
}

/// The read-back that follows the writers: ranges reported written are read back from the
/// device while writing goes on, in disk order, whatever order they were reported in.
@Suite struct TrailingVerifierTests {
    static let batch = Int(TrailingVerifier.batchBytes)

    func disk(_ dir: TemporaryDirectory, bytes: Int) throws -> (FileIO, [UInt8], [ExpectedRange]) {
        var rng = SplitMix64(seed: SplitMix64.seed(default: 41))
        var content = [UInt8](repeating: 0, count: bytes)
        content.withUnsafeMutableBytes { raw in
            for i in 0..<(bytes / 8) { raw.storeBytes(of: rng.next(), toByteOffset: i * 8, as: UInt64.self) }
        }
        let file = try FileIO(path: dir.file("t.raw"), flags: O_RDWR | O_CREAT)
        try file.write(content, at: 0)
        let ranges = stride(from: 0, to: bytes, by: mib).map {
            ExpectedRange(offset: UInt64($0), length: UInt64(mib), sha256: sha256(Array(content[$0..<($0 + mib)])))
        }
        return (file, content, ranges)
    }

    /// Polls until `done` holds; the bound only keeps a broken verifier from hanging the suite.
    func eventually(_ done: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(60)
        while !done() && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        return done()
    }

    @Test func verifiesStretchesWrittenInAnyOrder() throws {
        let dir = TemporaryDirectory()
        let p = Self.batch / mib
        let (file, _, ranges) = try disk(dir, bytes: 3 * Self.batch)
        let verifier = TrailingVerifier(file: file, ranges: ranges, holesAreZeros: true)
        // The last batch back to front, as a late joiner gets its ranges; the first batch but
        // its last range, as a lossy client lacks a chunk.
        for i in (2 * p..<3 * p).reversed() { try verifier.written(i) }
        for i in 0..<(p - 1) { try verifier.written(i) }
        #expect(eventually { verifier.verifiedCount == p })
        Thread.sleep(forTimeInterval: 0.2)
        #expect(verifier.verifiedCount == p, "a stretch shorter than a batch waits")
        for i in p..<(2 * p) { try verifier.written(i) }
        #expect(eventually { verifier.verifiedCount == 2 * p })
        try verifier.written(p - 1)
        #expect(eventually { verifier.verifiedCount == 3 * p })
        #expect(try verifier.stop().isEmpty)
    }

    @Test func theFinalPassGetsWhatWasNotReadBack() throws {
        let dir = TemporaryDirectory()
        let (file, _, ranges) = try disk(dir, bytes: Self.batch + 4 * mib)
        let verifier = TrailingVerifier(file: file, ranges: ranges, holesAreZeros: true)
        try verifier.written(upTo: UInt64(Self.batch))
        #expect(eventually { verifier.verifiedCount == Self.batch / mib })
        try verifier.written(Self.batch / mib + 2)
        #expect(try verifier.stop() == (Self.batch / mib..<ranges.count).map { $0 })
    }

    @Test func aBadRangeStopsTheWritersEarly() throws {
        let dir = TemporaryDirectory()
        let (file, content, ranges) = try disk(dir, bytes: 2 * Self.batch)
        try file.write([content[5 * mib + 3] ^ 0x40], at: UInt64(5 * mib + 3))
        let verifier = TrailingVerifier(file: file, ranges: ranges, holesAreZeros: true)
        try verifier.written(upTo: UInt64(Self.batch + mib))
        #expect(eventually { verifier.failedRange != nil })
        #expect(verifier.failedRange == 5)
        #expect(throws: TrailingVerifier.RangeMismatch.self) { try verifier.written(upTo: UInt64(2 * Self.batch)) }
        #expect(throws: TrailingVerifier.RangeMismatch.self) { try verifier.stop() }
        #expect(throws: TrailingVerifier.RangeMismatch.self, "again, as a failed restore does") { try verifier.stop() }
    }

    @Test func holesPassAsZerosAndDataInAZeroRangeFails() throws {
        let dir = TemporaryDirectory()
        let file = try FileIO(path: dir.file("t.raw"), flags: O_RDWR | O_CREAT)
        try file.truncate(to: UInt64(Self.batch + 2 * mib))
        try file.write([1], at: UInt64(Self.batch + mib + 9))
        let ranges = stride(from: 0, to: Self.batch + 2 * mib, by: mib).map { ExpectedRange(offset: UInt64($0), length: UInt64(mib), sha256: nil) }
        let verifier = TrailingVerifier(file: file, ranges: ranges, holesAreZeros: true)
        try verifier.written(upTo: UInt64(Self.batch + 2 * mib))
        #expect(eventually { verifier.failedRange != nil })
        #expect(verifier.failedRange == Self.batch / mib + 1)
    }
}

/// A loop device over a file, for tests that need a real block device.
struct LoopDevice {
    let path: String

    static var available: Bool {
        ProcessInfo.processInfo.environment["ASR_REQUIRE_PRIVILEGED"] == "1"
            || (getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/loop-control"))
    }

    init(backing: String) throws {
        let out = try Self.run(["losetup", "--find", "--show", backing])
        path = out.trimmingCharacters(in: .whitespacesAndNewlines)
        guard path.hasPrefix("/dev/loop") else { throw TestFailure("losetup gave \(out.debugDescription)") }
    }

    func detach() { _ = try? Self.run(["losetup", "--detach", path]) }

    private static func run(_ args: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestFailure("\(args.joined(separator: " ")) failed (\(p.terminationStatus))") }
        return String(decoding: data, as: UTF8.self)
    }
}
