import Filesystems
import Foundation
@testable import Imaging
import SystemSupport
import TestSupport
import Testing
import UDIF

/// Free space left out of images (`create` with a usage map handed in, so these tests do not
/// depend on the filesystem readers), then kept through scan, info, convert, restore and verify.
@Suite struct FreeSpaceTests {
    let reporter = Reporter(.quiet)

    /// What examine was asked, from the creator's threads.
    final class Calls: Sendable {
        let list = Locked<[(UInt64, UInt64)]>([])
        func add(_ offset: UInt64, _ length: UInt64) { list.withLock { $0.append((offset, length)) } }
        var all: [(UInt64, UInt64)] { list.withLock { $0 } }
    }

    /// A GPT disk made by sfdisk: partition 1 (16 MiB at 1 MiB) full of noise, partition 2
    /// (4 MiB) of text, then a gap before the backup table.
    static func makeDisk(at path: String) throws {
        try shell("""
            truncate -s 24M '\(path)'
            printf 'label: gpt\\nstart=2048, size=32768, type=L, name="data"\\nstart=34816, size=8192, type=L\\n' | sfdisk -q '\(path)'
            head -c 16M /dev/urandom | dd of='\(path)' bs=1M seek=1 conv=notrunc status=none
            seq 1 500000 | head -c 4M | dd of='\(path)' bs=512 seek=34816 conv=notrunc status=none
            """)
    }

    static let partitionOffset: UInt64 = 1 << 20
    static let partitionLength: UInt64 = 16 << 20
    /// Partition 1's allocation, relative to it: edges off the sector grid, a 1000-byte gap
    /// (too small to leave out) and a last range that ends the partition.
    static let mib: UInt64 = 1 << 20
    static let allocated: [Range<UInt64>] = [
        0..<300_013, (2 * mib + 777)..<(3 * mib), (3 * mib + 1000)..<(3 * mib + 40_000),
        (10 * mib)..<(10 * mib + 4096), (15 * mib)..<(16 * mib),
    ]
    /// Its free runs on the disk: gaps shrunk inward to whole sectors, at least 64 KiB.
    static let free: [Range<UInt64>] = {
        let relative: [Range<UInt64>] = [300_032..<(2 * mib + 512), (3 * mib + 40_448)..<(10 * mib), (10 * mib + 4096)..<(15 * mib)]
        return relative.map { (partitionOffset + $0.lowerBound)..<(partitionOffset + $0.upperBound) }
    }()

    func makeCreator(calls: Calls? = nil) -> ImageCreator {
        var creator = ImageCreator()
        creator.examine = { _, offset, length in
            calls?.add(offset, length)
            guard offset == Self.partitionOffset else { return .unknown }
            return .mapped(UsageMap(filesystem: "ext4", method: "a map the test handed in", length: length, allocated: Self.allocated))
        }
        return creator
    }

    /// The disk with its free runs as zeros: what the image decodes to.
    func decoded(_ disk: [UInt8]) -> [UInt8] {
        var bytes = disk
        for run in Self.free { bytes.replaceSubrange(Int(run.lowerBound)..<Int(run.upperBound), with: repeatElement(0, count: run.count)) }
        return bytes
    }

    @Test func freeRunsAreGapsShrunkToSectorsAndLongEnough() {
        let map = UsageMap(filesystem: "ext4", method: "m", length: Self.partitionLength, allocated: Self.allocated.reversed())
        #expect(ImageCreator.freeRuns(map, length: Self.partitionLength)
                == Self.free.map { ($0.lowerBound - Self.partitionOffset)..<($0.upperBound - Self.partitionOffset) })
        // Overlaps, ranges past the end and an empty map.
        let odd = UsageMap(filesystem: "x", method: "m", length: 1 << 20, allocated: [0..<4096, 1000..<8192, (900 << 10)..<(4 << 20)])
        #expect(ImageCreator.freeRuns(odd, length: 1 << 20) == [8192..<(900 << 10)])
        #expect(ImageCreator.freeRuns(UsageMap(filesystem: "x", method: "m", length: 1 << 20, allocated: []), length: 1 << 20) == [0..<(1 << 20)])
        #expect(ImageCreator.freeRuns(UsageMap(filesystem: "x", method: "m", length: 1 << 20, allocated: [0..<(1 << 20)]), length: 1 << 20).isEmpty)
    }

    @Test func createLeavesFreeRunsOutAndIndependentReadersDecodeThemAsZeros() throws {
        let dir = TemporaryDirectory()
        try Self.makeDisk(at: dir.file("disk.raw"))
        let disk = try contents(dir.file("disk.raw"))
        let calls = Calls()
        let summary = try makeCreator(calls: calls).create(source: dir.file("disk.raw"), output: dir.file("disk.dmg"))
        // Each partition examined once, map structures and gaps not at all.
        #expect(calls.all.map { $0.0 } == [Self.partitionOffset, 34816 * 512])
        #expect(calls.all.map { $0.1 } == [Self.partitionLength, 8192 * 512])
        #expect(summary.ignoredBytes == Self.free.reduce(0) { $0 + UInt64($1.count) })

        let image = try UDIFImage(path: dir.file("disk.dmg"))
        let ignored = image.chunks.filter { $0.type == .ignore }.map { $0.diskOffset..<($0.diskOffset + $0.length) }
        #expect(ignored == Self.free)
        #expect(try image.computeRegionCRCs() == image.regions.compactMap { $0.table.checksum.crc32Value })
        for c in image.chunks where c.type != .ignore {
            let region = image.regions[c.region]
            let start = c.diskOffset - region.firstSector * 512
            #expect(c.length <= 1 << 20 && start >> 20 == (start + c.length - 1) >> 20, "a data chunk crosses the grid: \(c)")
        }
        // The noise in the free runs is not in the image: it would not compress.
        let stored = image.chunks.reduce(UInt64(0)) { $0 + $1.storedLength }
        #expect(stored < 6 << 20, "\(stored) bytes stored")
        let want = decoded(disk)
        #expect(try image.read(at: 0, count: Int(image.byteCount)) == want, "free space reads as zeros")

        let check = try shell("python3 '\(Fixtures.checker)' '\(dir.file("disk.dmg"))' '\(dir.file("check.raw"))'")
        #expect(check.contains("valid UDIF"), "\(check)")
        #expect(try contents(dir.file("check.raw")) == want)
        try shell("7zz x -tdmg -o'\(dir.file("7z"))' '\(dir.file("disk.dmg"))' >/dev/null")
        let parts = try FileManager.default.contentsOfDirectory(atPath: dir.file("7z"))
            .sorted { Int($0.prefix { $0.isNumber }) ?? 0 < Int($1.prefix { $0.isNumber }) ?? 0 }
        #expect(parts.count == image.regions.count)
        try shell("cat " + parts.map { "'\(dir.file("7z/" + $0))'" }.joined(separator: " ") + " > '\(dir.file("7z.raw"))'")
        #expect(try contents(dir.file("7z.raw")) == want)
        try shell("dmg2img -s -i '\(dir.file("disk.dmg"))' -o '\(dir.file("dmg2img.raw"))'")
        #expect(try contents(dir.file("dmg2img.raw")) == want)
    }

    @Test func usageIsRecordedAndShownByInfo() throws {
        let dir = TemporaryDirectory()
        try Self.makeDisk(at: dir.file("disk.raw"))
        _ = try makeCreator().create(source: dir.file("disk.raw"), output: dir.file("disk.dmg"))
        let usage = try #require(try UsageData.stored(in: UDIFImage(path: dir.file("disk.dmg"))))
        #expect(usage.records.map(\.partition) == [1, 2])
        #expect(usage.records[0].finding == .mapped && usage.records[0].filesystem == "ext4")
        #expect(usage.records[0].allocatedBytes == Self.allocated.reduce(0) { $0 + UInt64($1.count) })
        #expect(usage.records[0].ignoredBytes == Self.free.reduce(0) { $0 + UInt64($1.count) })
        #expect(usage.records[1].finding == .unknown && usage.records[1].reason == "no filesystem recognised")
        let info = try ImageInfo.inspect(dir.file("disk.dmg"))
        #expect(info.usageRecorded == true)
        let text = info.text()
        #expect(text.contains("\tpartition 1 (ext4): 2.3 MiB of 16.0 MiB in use (found from a map the test handed in)"), "\(text)")
        #expect(text.contains("\tpartition 2: 4.0 MiB, imaged whole: no filesystem recognised"), "\(text)")
        #expect(info.checksumsOK)

        // hdiutil's images have no record: in use is what their ignore chunks leave.
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_zlib.dmg" })
        let theirs = try ImageInfo.inspect(fixture.path)
        #expect(theirs.usageRecorded == false)
        let hfs = try #require(theirs.usage?.max { $0.sectorCount < $1.sectorCount })  // the HFS+ partition
        #expect(hfs.method == "unknown" && hfs.ignoredBytes > 0 && hfs.inUseBytes > 0)
        #expect(hfs.inUseBytes + hfs.ignoredBytes == hfs.sectorCount * 512)
        #expect(theirs.text().contains("in use (method unknown)"))
    }

    @Test func allBlocksExaminesNothingAndKeepsEveryByte() throws {
        let dir = TemporaryDirectory()
        try Self.makeDisk(at: dir.file("disk.raw"))
        let calls = Calls()
        var creator = makeCreator(calls: calls)
        creator.allBlocks = true
        let summary = try creator.create(source: dir.file("disk.raw"), output: dir.file("disk.dmg"))
        #expect(calls.all.isEmpty && summary.ignoredBytes == 0)
        #expect(try ScanDataCheck.scan(dir.file("disk.dmg")))
        try Restorer(reporter: reporter).restore(source: dir.file("disk.dmg"), target: dir.file("t.raw"))
        #expect(try contents(dir.file("t.raw")) == contents(dir.file("disk.raw")))
        #expect(try UsageData.stored(in: UDIFImage(path: dir.file("disk.dmg")))?.records.map(\.finding) == [.notExamined, .notExamined])
    }

    @Test func restoreLeavesFreeSpaceAsItWasUnlessErasingIt() throws {
        let dir = TemporaryDirectory()
        try Self.makeDisk(at: dir.file("disk.raw"))
        let disk = try contents(dir.file("disk.raw"))
        _ = try makeCreator().create(source: dir.file("disk.raw"), output: dir.file("disk.dmg"))
        #expect(try ScanDataCheck.scan(dir.file("disk.dmg")))
        // The scan hashes no free space: its entries hold no digest, and verify skips them.
        let image = try UDIFImage(path: dir.file("disk.dmg"))
        let scan = try #require(try ScanData.stored(in: image))
        for (entry, chunk) in zip(scan.chunks, image.chunks) where chunk.type == .ignore { #expect(entry.sha256 == ChunkTable.noDigest) }
        try ImageVerifier(reporter: reporter).verify(dir.file("disk.dmg"))

        let ff = [UInt8](repeating: 0xFF, count: disk.count)
        _ = FileManager.default.createFile(atPath: dir.file("t.raw"), contents: Data(ff))
        try Restorer(reporter: reporter).restore(source: dir.file("disk.dmg"), target: dir.file("t.raw"))
        var want = disk
        for run in Self.free { want.replaceSubrange(Int(run.lowerBound)..<Int(run.upperBound), with: repeatElement(0xFF, count: run.count)) }
        #expect(try contents(dir.file("t.raw")) == want, "free space keeps the target's 0xFF; the rest is the disk")

        // A zero chunk is still zeroed on a target that keeps its contents.
        #expect(image.chunks.contains { $0.type == .zeroFill })

        var erasing = Restorer(reporter: reporter)
        erasing.eraseFree = true
        _ = FileManager.default.createFile(atPath: dir.file("t.raw"), contents: Data(ff))
        try erasing.restore(source: dir.file("disk.dmg"), target: dir.file("t.raw"))
        #expect(try contents(dir.file("t.raw")) == decoded(disk))

        // A new target file gets holes there.
        try Restorer(reporter: reporter).restore(source: dir.file("disk.dmg"), target: dir.file("new.raw"))
        #expect(try contents(dir.file("new.raw")) == decoded(disk))
        let file = try FileIO(path: dir.file("new.raw"), flags: O_RDONLY)
        let data = file.dataExtents(upTo: UInt64(disk.count))
        for run in Self.free {
            #expect(!data.contains { ($0.offset..<($0.offset + $0.length)).overlaps(run.lowerBound + 65536..<run.upperBound - 65536) },
                    "free run \(run) holds data blocks")
        }
    }

    @Test func eraseFreeVerifiesThatFreeSpaceIsZero() throws {
        let dir = TemporaryDirectory()
        try Self.makeDisk(at: dir.file("disk.raw"))
        _ = try makeCreator().create(source: dir.file("disk.raw"), output: dir.file("disk.dmg"))
        #expect(try ScanDataCheck.scan(dir.file("disk.dmg")))
        let source = try ImageSource.open(dir.file("disk.dmg"))
        let kept = try #require(try VerificationPlan(ifScanned: source))
        let erased = try #require(try VerificationPlan(ifScanned: source, eraseFree: true))
        let free = Set(Self.free.map(\.lowerBound))
        #expect(kept.ranges.filter(\.unchecked).map(\.offset).allSatisfy(free.contains))
        #expect(kept.ranges.filter(\.unchecked).count == Self.free.count)
        #expect(erased.ranges.filter { $0.unchecked }.isEmpty)
        #expect(erased.ranges.filter { free.contains($0.offset) }.allSatisfy { $0.sha256 == nil })
        // Read back from a disk whose free space is not zero: fine unless erasing.
        let mismatch: @Sendable (Int) -> Mismatch = { _ in Mismatch(firstByte: 0, lastByte: 0, reference: .source) }
        var decodedDisk = decoded(try contents(dir.file("disk.raw")))
        decodedDisk[Int(Self.free[1].lowerBound) + 5] = 1
        try RangeVerifier(reporter: reporter).verify(MemorySource(bytes: decodedDisk), kept.ranges, mismatch: mismatch)
        #expect(throws: ImagingError.self) {
            try RangeVerifier(reporter: reporter).verify(MemorySource(bytes: decodedDisk), erased.ranges, mismatch: mismatch)
        }
    }

    @Test func convertKeepsFreeSpaceFreeAndItsRecord() throws {
        let dir = TemporaryDirectory()
        try Self.makeDisk(at: dir.file("disk.raw"))
        _ = try makeCreator().create(source: dir.file("disk.raw"), output: dir.file("disk.dmg"))
        for format in [ImageConverter.Target.udro, .udbz] {
            let out = dir.file("c-\(format.rawValue).dmg")
            try ImageConverter().convert(source: dir.file("disk.dmg"), to: format, output: out)
            let converted = try UDIFImage(path: out)
            #expect(converted.chunks.filter { $0.type == .ignore }.map { $0.diskOffset..<($0.diskOffset + $0.length) } == Self.free)
            #expect(try UsageData.stored(in: converted) == UsageData.stored(in: UDIFImage(path: dir.file("disk.dmg"))))
            #expect(try converted.computeRegionCRCs() == converted.regions.compactMap { $0.table.checksum.crc32Value })
        }
        // A raw copy has holes there, and its block map leaves them unmapped, as multicast does.
        try ImageConverter().convert(source: dir.file("disk.dmg"), to: .raw, output: dir.file("copy.img"))
        #expect(try ImageScanner(reporter: reporter).scan(dir.file("copy.img")) == .wroteBlockMap(dir.file("copy.img.bmap")))
        let map = try BlockMap.load(dir.file("copy.img.bmap"))
        for run in Self.free {
            // Block maps count 4 KiB blocks: a block the run shares with data is mapped.
            let blocks = ((run.lowerBound + 4095) / 4096 * 4096)..<(run.upperBound / 4096 * 4096)
            #expect(!map.ranges.contains { r in
                let (o, n) = map.byteRange(r)
                return (o..<(o + n)).overlaps(blocks)
            }, "free run \(run) is mapped")
        }
    }
}

/// Scans an image in place; true when it was scanned now.
enum ScanDataCheck {
    static func scan(_ path: String) throws -> Bool {
        try ImageScanner(reporter: Reporter(.quiet)).scan(path) == .scanned
    }
}

/// A shell command that must succeed; its standard output.
@discardableResult
func shell(_ command: String) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/bin/bash")
    p.arguments = ["-c", "set -euo pipefail; " + command]
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    let problem = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else {
        throw TestFailure("`\(command)` failed (\(p.terminationStatus)): \(String(decoding: problem, as: UTF8.self))")
    }
    return String(decoding: data, as: UTF8.self)
}
