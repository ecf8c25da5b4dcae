import Filesystems
import Foundation
import Testing
import TestSupport

/// FAT12, FAT16 and FAT32 made by mkfs.fat, files written and one deleted with mtools;
/// checked against fsck.fat's cluster count, where the files' bytes are, and by wiping
/// everything the map leaves out.
@Suite struct FATTests {
    struct Variant: Sendable, CustomTestStringConvertible {
        var bits: Int
        var kibibytes: Int
        var sectorsPerCluster: Int
        var testDescription: String { "FAT\(bits)" }
    }

    static let variants = [Variant(bits: 12, kibibytes: 4096, sectorsPerCluster: 4),
                           Variant(bits: 16, kibibytes: 32768, sectorsPerCluster: 4),
                           Variant(bits: 32, kibibytes: 65536, sectorsPerCluster: 1)]

    struct Made {
        let dir = TemporaryDirectory()
        let files = SampleFiles()
        var image: String { dir.file("fat.img") }
    }

    static func make(_ v: Variant) throws -> Made {
        let made = Made()
        try Tool.run(["mkfs.fat", "-F", "\(v.bits)", "-s", "\(v.sectorsPerCluster)", "-C", made.image, "\(v.kibibytes)"])
        for (name, bytes) in [("keep.bin", made.files.keep), ("big.bin", made.files.big), ("nested.bin", made.files.nested), ("notes.txt", made.files.notes)] {
            try write(bytes, to: made.dir.file(name))
        }
        let i = ["-i", made.image]
        try Tool.run(["mmd"] + i + ["::/sub"])
        try Tool.run(["mcopy"] + i + [made.dir.file("keep.bin"), "::/keep.bin"])
        try Tool.run(["mcopy"] + i + [made.dir.file("big.bin"), "::/big.bin"])
        try Tool.run(["mcopy"] + i + [made.dir.file("nested.bin"), "::/sub/nested.bin"])
        try Tool.run(["mcopy"] + i + [made.dir.file("notes.txt"), "::/sub/notes.txt"])
        try Tool.run(["mdel"] + i + ["::/big.bin"])
        return made
    }

    /// fsck.fat's "IMAGE: 3 files, 588/129022 clusters": used and total clusters.
    static func clusters(_ image: String) throws -> (used: UInt64, total: UInt64) {
        let text = try Tool.run(["fsck.fat", "-n", image])
        guard let line = text.split(separator: "\n").last(where: { $0.hasSuffix(" clusters") }),
              let counts = line.split(separator: " ").dropLast().last?.split(separator: "/"), counts.count == 2,
              let used = UInt64(counts[0]), let total = UInt64(counts[1]) else { throw TestFailure("fsck.fat said: \(text)") }
        return (used, total)
    }

    @Test(arguments: FATTests.variants)
    func mapIsTheFileAllocationTable(_ v: Variant) throws {
        let made = try Self.make(v)
        let image = try contents(made.image)
        let map = try mapped(image)
        #expect(map.filesystem == "FAT\(v.bits)")
        #expect(map.method == "file allocation table")
        let clusters = try Self.clusters(made.image)
        let clusterBytes = UInt64(v.sectorsPerCluster * 512)
        // Everything but the free clusters is allocated: boot and reserved sectors, the FATs,
        // the root directory, and any sectors past the last cluster.
        #expect(map.length - map.allocatedBytes == (clusters.total - clusters.used) * clusterBytes)
        #expect(map.covers(0..<512))
        for range in try locate(made.files.keep, in: image) + locate(made.files.nested, in: image) {
            #expect(map.covers(range), "a kept file's bytes at \(range) are not in the map")
        }
        let deleted = try locate(made.files.big, in: image)
        #expect(!deleted.contains { map.touches($0) }, "the deleted file's bytes are in the map")
    }

    @Test(arguments: FATTests.variants)
    func filesystemSurvivesWipingWhatIsFree(_ v: Variant) throws {
        let made = try Self.make(v)
        var image = try contents(made.image)
        let map = try mapped(image)
        #expect(wipeUnallocated(&image, map) >= 1 << 20)
        let wiped = made.dir.file("wiped.img")
        try write(image, to: wiped)
        let before = try Self.clusters(made.image)
        let after = try Self.clusters(wiped)  // fsck.fat -n exits 0: no errors
        #expect(after.used == before.used && after.total == before.total)
        for (name, want) in [("keep.bin", made.files.keep), ("sub/nested.bin", made.files.nested), ("sub/notes.txt", made.files.notes)] {
            let out = made.dir.file("out.bin")
            try Tool.run(["mcopy", "-n", "-o", "-i", wiped, "::/" + name, out])
            #expect(try contents(out) == want, "\(name) reads back changed")
        }
    }

    @Test func inconsistentGeometryIsUnreadable() throws {
        let made = try Self.make(Self.variants[1])
        let image = try contents(made.image)
        func reason(_ bytes: [UInt8], length: Int? = nil) -> String? {
            let finding = FilesystemUsage.examine(MemorySource(bytes: bytes), offset: 0, length: UInt64(length ?? bytes.count))
            guard case .unreadable(_, let reason) = finding else { return nil }
            return reason
        }
        #expect(reason(image, length: image.count - 4096)?.contains("larger than") == true)
        var smallFAT = image
        (smallFAT[22], smallFAT[23]) = (1, 0)  // one sector per FAT for thousands of clusters
        #expect(reason(smallFAT) != nil)
        var noSectors = image
        for k in [19, 20, 32, 33, 34, 35] { noSectors[k] = 0 }
        #expect(reason(noSectors) != nil)
    }
}
