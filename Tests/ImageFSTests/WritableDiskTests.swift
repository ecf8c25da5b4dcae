import SystemSupport
import Foundation
@testable import ImageFS
import Imaging
import TestSupport
import Testing
import UDIF

/// Writable disks as state machines: what is stored, what reads return, without a mount.
struct WritableDiskUnitTests {
    func write(_ disk: WritableDisk, _ bytes: [UInt8], at offset: UInt64) throws -> Int {
        try bytes.withUnsafeBytes { try disk.write(WritableDisk.diskInode, handle: 1, at: offset, from: $0) }
    }

    @Test func targetStoresOnlyNonZeroBlocks() throws {
        let dir = TemporaryDirectory()
        let disk = try WritableDisk.target(backing: dir.file("b"), size: 64 * 4096)
        #expect(try write(disk, [UInt8](repeating: 1, count: 3 * 4096), at: 4096) == 3 * 4096)
        #expect(try write(disk, [UInt8](repeating: 0, count: 4096), at: 2 * 4096) == 4096)
        // A partial write: its block is judged whole, as it now stands.
        #expect(try write(disk, [9, 9], at: 10 * 4096 + 100) == 2)
        #expect(try disk.writtenBlockMap().ranges.map { $0.first...$0.last } == [1...1, 3...3, 10...10])
        #expect(try disk.read(at: 10 * 4096 + 99, count: 4) == [0, 9, 9, 0])
        #expect(try write(disk, [0, 0], at: 10 * 4096 + 100) == 2)
        #expect(try disk.writtenBlockMap().ranges.map { $0.first...$0.last } == [1...1, 3...3])
        try disk.allocate(WritableDisk.diskInode, mode: 3, at: 0, length: 64 * 4096)
        #expect(try disk.writtenBlockMap().ranges.isEmpty)
        #expect(try disk.read(at: 0, count: 64 * 4096).allSatisfy { $0 == 0 })
    }

    @Test func theEndOfTheDiskIsTheEnd() throws {
        let dir = TemporaryDirectory()
        let disk = try WritableDisk.target(backing: dir.file("b"), size: 8192)
        #expect(throws: FSError(ENOSPC)) { try write(disk, [1], at: 8192) }
        #expect(try write(disk, [UInt8](repeating: 1, count: 100), at: 8150) == 42)
        #expect(throws: FSError(EPERM)) { try disk.truncate(WritableDisk.diskInode, to: 0) }
        try disk.truncate(WritableDisk.diskInode, to: 8192)
        #expect(throws: FSError(ENOSPC)) { try disk.allocate(WritableDisk.diskInode, mode: 0, at: 0, length: 9000) }
        #expect(throws: (any Error).self) { try WritableDisk.target(backing: dir.file("b"), size: 4096) }
        #expect(throws: (any Error).self) { try WritableDisk.target(backing: dir.file("new"), size: nil) }
        #expect(throws: (any Error).self) { try WritableDisk.target(backing: dir.file("odd"), size: 1000) }
    }

    @Test func overlayCopiesOnWriteAndRemembers() throws {
        let dir = TemporaryDirectory()
        let fixture = Fixtures.all.first { $0.name.contains("zlib") }!
        let original = try ImageSource.open(fixture.path).bytes.read(at: 0, count: Int(fixture.size))
        let cow = dir.file("changes")
        do {
            let disk = try WritableDisk.overlay(image: fixture.path, changes: cow)
            #expect(try write(disk, [0xAA, 0xBB], at: 1030) == 2)  // inside block 0, partly
            var expected = original
            expected[1030] = 0xAA
            expected[1031] = 0xBB
            #expect(try disk.read(at: 0, count: Int(fixture.size)) == expected)
            #expect(try disk.writtenBlockMap().ranges.map { $0.first...$0.last } == [0...0])
        }
        // Mounted again over the same changes: the same disk.
        let again = try WritableDisk.overlay(image: fixture.path, changes: cow)
        let bytes = try again.read(at: 1024, count: 16)
        #expect(Array(bytes[6...7]) == [0xAA, 0xBB])
        #expect(Array(bytes[0...5]) == Array(original[1024...1029]))
        #expect(throws: (any Error).self) { try WritableDisk.overlay(image: fixture.path, changes: fixture.path) }
    }

    @Test func blockSetMergesSplitsAndRemoves() {
        var set = BlockSet()
        set.insert(5...7)
        set.insert(10...12)
        set.insert(8...9)
        #expect(set.ranges == [5...12])
        set.remove(7...8)
        #expect(set.ranges == [5...6, 9...12])
        #expect(set.contains(9) && !set.contains(7))
        #expect(set.split(0...10).map { "\($0.range)\($0.inSet)" } == ["0...4false", "5...6true", "7...8false", "9...10true"])
        set.insert(0...0)
        set.insert(1...3)
        #expect(set.ranges == [0...3, 5...6, 9...12])
        set.remove(0...100)
        #expect(set.ranges.isEmpty)
        var random = BlockSet()
        var truth = Set<UInt64>()
        let seed = SplitMix64.seed(default: 0xB10C_5E7)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<2000 {
            let a = UInt64.random(in: 0..<200, using: &rng)
            let r = a...min(199, a + UInt64.random(in: 0..<10, using: &rng))
            if Bool.random(using: &rng) { random.insert(r); truth.formUnion(r) } else { random.remove(r); truth.subtract(r) }
        }
        #expect((0..<200).allSatisfy { random.contains($0) == truth.contains($0) }, "seed \(seed)")
        #expect(zip(random.ranges, random.ranges.dropFirst()).allSatisfy { $0.upperBound + 1 < $1.lowerBound }, "seed \(seed)")
    }
}
