import Filesystems
import Foundation
import Testing
import TestSupport

/// ext4 and ext2 made by mke2fs -d, a file then deleted with debugfs; checked against
/// dumpe2fs's free block ranges, against where the files' bytes really are, and by wiping
/// everything the map leaves out and running e2fsck and debugfs on what remains.
@Suite struct ExtTests {
    struct Made {
        let dir = TemporaryDirectory()
        let files = SampleFiles()
        var image: String { dir.file("fs.img") }
    }

    struct Variant: Sendable, CustomTestStringConvertible {
        var kind: String
        var blockSize: Int
        var options: [String] = []
        var testDescription: String { ([kind] + options).joined(separator: " ") }
    }

    /// ext4 with 4 KiB blocks (BLOCK_UNINIT groups), ext2 with 1 KiB blocks (the boot block
    /// before the first data block), ext3 with 2 KiB blocks, ext4 with bigalloc (a bitmap bit
    /// per 16 KiB cluster).
    static let variants = [Variant(kind: "ext4", blockSize: 4096), Variant(kind: "ext2", blockSize: 1024),
                           Variant(kind: "ext3", blockSize: 2048),
                           Variant(kind: "ext4", blockSize: 4096, options: ["-O", "bigalloc", "-C", "16384"])]

    static func make(_ kind: String, blockSize: Int, options: [String] = []) throws -> Made {
        let made = Made()
        let tree = made.dir.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/sub/dir", withIntermediateDirectories: true)
        try write(made.files.keep, to: tree + "/keep.bin")
        try write(made.files.big, to: tree + "/big.bin")
        try write(made.files.nested, to: tree + "/sub/dir/nested.bin")
        try write(made.files.notes, to: tree + "/notes.txt")
        try emptyFile(made.image, size: 24 << 20)
        try Tool.run(["mke2fs", "-q", "-F", "-t", kind, "-b", "\(blockSize)"] + options + ["-d", tree, made.image])
        try Tool.run(["debugfs", "-w", "-R", "rm big.bin", made.image])
        return made
    }

    /// dumpe2fs's "Free blocks: a-b, c" lines, one per group, as a set of block numbers.
    static func freeBlocks(_ image: String) throws -> (free: Set<UInt64>, first: UInt64, count: UInt64) {
        let text = try Tool.run(["dumpe2fs", image])
        var free = Set<UInt64>()
        var first: UInt64 = 0, count: UInt64 = 0, blockSize: UInt64 = 1, clusterSize: UInt64 = 0
        for line in text.split(separator: "\n") {
            let t = line.trimmingCharacters(in: .whitespaces)
            func value(_ key: String) -> UInt64? { t.hasPrefix(key) ? UInt64(t.dropFirst(key.count).trimmingCharacters(in: .whitespaces)) : nil }
            first = value("First block:") ?? first
            count = value("Block count:") ?? count
            blockSize = value("Block size:") ?? blockSize
            clusterSize = value("Cluster size:") ?? clusterSize
            // With bigalloc a range ends at its last cluster's first block: widen to the cluster.
            let perCluster = max(1, clusterSize / blockSize)
            // Per group lines are indented; the superblock's "Free blocks: N" is a count.
            guard line.hasPrefix("  Free blocks:") else { continue }
            for part in t.dropFirst(12).split(separator: ",") {
                let ends = part.trimmingCharacters(in: .whitespaces).split(separator: "-").compactMap { UInt64($0) }
                guard let a = ends.first else { continue }
                for b in a...((ends.last ?? a) / perCluster * perCluster + perCluster - 1) where b < count { free.insert(b) }
            }
        }
        guard count > 0 else { throw TestFailure("dumpe2fs gave no block count") }
        return (free, first, count)
    }

    @Test(arguments: ExtTests.variants)
    func mapIsTheBlockBitmap(_ v: Variant) throws {
        let (kind, blockSize) = (v.kind, v.blockSize)
        let made = try Self.make(kind, blockSize: blockSize, options: v.options)
        let image = try contents(made.image)
        let map = try mapped(image)
        #expect(map.filesystem == kind)
        #expect(map.method == "block bitmaps (libext2fs)")

        let truth = try Self.freeBlocks(made.image)
        #expect(truth.free.count > (1 << 20) / blockSize, "the deleted file's blocks are free")
        let size = UInt64(blockSize)
        var wrong: [UInt64] = []
        for b in truth.first..<truth.count where map.covers(b * size..<(b + 1) * size) == truth.free.contains(b) {
            wrong.append(b)
        }
        #expect(wrong.isEmpty, "blocks where the map and dumpe2fs disagree: \(wrong.prefix(20))")
        // Below the first data block (the boot block with 1 KiB blocks) is always kept.
        #expect(map.covers(0..<truth.first * size))
        #expect(map.length - map.allocatedBytes == UInt64(truth.free.count) * size)

        for range in try locate(made.files.keep, in: image) + locate(made.files.nested, in: image) {
            #expect(map.covers(range), "a kept file's bytes at \(range) are not in the map")
        }
        let deleted = try locate(made.files.big, in: image)
        #expect(!deleted.contains { map.touches($0) }, "the deleted file's bytes are in the map")
    }

    /// The proof the map is safe: with every byte it leaves out overwritten, e2fsck finds
    /// nothing wrong and every file reads back as it was.
    @Test(arguments: ExtTests.variants)
    func filesystemSurvivesWipingWhatIsFree(_ v: Variant) throws {
        let made = try Self.make(v.kind, blockSize: v.blockSize, options: v.options)
        try Tool.run(["e2fsck", "-fn", made.image])
        var image = try contents(made.image)
        let map = try mapped(image)
        #expect(wipeUnallocated(&image, map) >= 1 << 20)
        let wiped = made.dir.file("wiped.img")
        try write(image, to: wiped)
        try Tool.run(["e2fsck", "-fn", wiped])
        for (name, want) in [("keep.bin", made.files.keep), ("sub/dir/nested.bin", made.files.nested), ("notes.txt", made.files.notes)] {
            let out = made.dir.file("out-" + name.replacingOccurrences(of: "/", with: "-"))
            try Tool.run(["debugfs", "-R", "dump -p /\(name) \(out)", wiped])
            #expect(try contents(out) == want, "\(name) reads back changed")
        }
    }

    @Test func damagedOrUnsafeSuperblocksAreUnreadable() throws {
        let made = try Self.make("ext4", blockSize: 4096)
        let image = try contents(made.image)
        func unreadable(_ bytes: [UInt8], length: Int? = nil) -> String? {
            let finding = FilesystemUsage.examine(MemorySource(bytes: bytes), offset: 0, length: UInt64(length ?? bytes.count))
            guard case .unreadable(let name, let reason) = finding, name == "ext4" else { return nil }
            return reason
        }
        // Cut short: the filesystem is larger than its partition.
        #expect(unreadable(image, length: image.count / 2)?.contains("larger than") == true)
        // A journal to replay (the superblock's needs_recovery flag).
        var recover = image
        recover[1024 + 96] |= 0x4
        #expect(unreadable(recover)?.contains("journal needs recovery") == true)
        // Errors recorded by the kernel.
        var errors = image
        errors[1024 + 58] |= 0x2
        #expect(unreadable(errors)?.contains("errors") == true)
        // A block count past the partition.
        var huge = image
        huge[1024 + 7] = 0x40
        #expect(unreadable(huge) != nil)
        // Group descriptor 0 pointing its block bitmap at a block past the end (the first
        // descriptor block follows the superblock's block).
        var badBitmap = image
        for k in 0..<4 { badBitmap[4096 + k] = 0xFF }
        #expect(unreadable(badBitmap) != nil)
    }

    @Test func ext2GroupDescriptorsOutsideTheirGroupsAreUnreadable() throws {
        let made = try Self.make("ext2", blockSize: 1024)
        var image = try contents(made.image)
        // ext2 has no checksums: libext2fs's descriptor check is what catches this.
        for k in 0..<4 { image[2048 + k] = 0xFE }
        guard case .unreadable(_, let reason) = examine(image) else { Issue.record("mapped"); return }
        #expect(reason.contains("group descriptors"))
    }
}
