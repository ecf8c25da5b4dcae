import Filesystems
import Foundation
import Testing
import TestSupport

/// Swap, the filesystems recognised but imaged whole, partitions inside larger sources, and
/// what is not a filesystem at all.
@Suite struct RecognitionTests {
    @Test(arguments: [4096, 65536])
    func swapIsItsHeaderPage(_ pageSize: Int) throws {
        let dir = TemporaryDirectory()
        let path = dir.file("swap.img")
        try emptyFile(path, size: 4 << 20)
        try Tool.run(["mkswap", "--pagesize", "\(pageSize)", path])
        let map = try mapped(try contents(path))
        #expect(map.filesystem == "swap")
        #expect(map.method == "swap header")
        #expect(map.allocated == [0..<UInt64(pageSize)])
    }

    @Test func swapHoldingAHibernationImageIsImagedWhole() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("swap.img")
        try emptyFile(path, size: 1 << 20)
        try Tool.run(["mkswap", path])
        var bytes = try contents(path)
        bytes.replaceSubrange(4086..<4096, with: Array("S1SUSPEND".utf8) + [0])
        #expect(examine(bytes) == .unmapped(filesystem: "swap holding a hibernation image"))
    }

    struct Signature: Sendable, CustomTestStringConvertible {
        var magic: String
        var at: Int
        var name: String
        var testDescription: String { name }
    }

    @Test(arguments: [Signature(magic: "XFSB", at: 0, name: "XFS"), Signature(magic: "_BHRfS_M", at: 0x10040, name: "btrfs"),
                      Signature(magic: "NXSB", at: 32, name: "APFS"), Signature(magic: "EXFAT   ", at: 3, name: "exFAT")])
    func signaturesOfUnmappedFilesystems(_ s: Signature) {
        let (magic, at, name) = (s.magic, s.at, s.name)
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        bytes.replaceSubrange(at..<(at + magic.utf8.count), with: Array(magic.utf8))
        #expect(examine(bytes) == .unmapped(filesystem: name))
    }

    @Test(.enabled(if: Tool.exists("mkfs.xfs"), "mkfs.xfs is not installed"))
    func realXFSIsImagedWhole() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("xfs.img")
        try emptyFile(path, size: 320 << 20)
        try Tool.run(["mkfs.xfs", "-q", "-f", path])
        #expect(examine(try contents(path)) == .unmapped(filesystem: "XFS"))
    }

    @Test(.enabled(if: Tool.exists("mkfs.btrfs"), "mkfs.btrfs is not installed"))
    func realBtrfsIsImagedWhole() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("btrfs.img")
        try emptyFile(path, size: 128 << 20)
        try Tool.run(["mkfs.btrfs", "-q", "-f", path])
        #expect(examine(try contents(path)) == .unmapped(filesystem: "btrfs"))
    }

    @Test func noiseAndZerosAreUnknown() {
        #expect(examine(randomBytes(1 << 20, seed: 5)) == .unknown)
        #expect(examine([UInt8](repeating: 0, count: 1 << 20)) == .unknown)
        #expect(examine([0xEB]) == .unknown)
    }

    @Test func aPartitionPastTheSourceIsUnknown() throws {
        let source = MemorySource(bytes: [UInt8](repeating: 0, count: 4096))
        #expect(FilesystemUsage.examine(source, offset: 4096, length: 1) == .unknown)
        #expect(FilesystemUsage.examine(source, offset: 0, length: 8192) == .unknown)
        #expect(FilesystemUsage.examine(source, offset: .max, length: .max) == .unknown)
    }

    /// A leftover signature of another filesystem: nothing says which one is real.
    @Test func twoSignaturesAreUnreadable() throws {
        let made = try FATTests.make(FATTests.variants[2])
        var bytes = try contents(made.image)
        bytes.replaceSubrange(4086..<4096, with: Array("SWAPSPACE2".utf8))
        guard case .unreadable("FAT32", let reason) = examine(bytes) else { Issue.record("\(examine(bytes))"); return }
        #expect(reason.contains("swap"))
    }

    /// Each filesystem read at an odd offset inside a larger source maps as it does alone:
    /// the C libraries' reads go through the same offset.
    @Test func partitionsInsideALargerSource() throws {
        let ext = try ExtTests.make("ext4", blockSize: 4096)
        let fat = try FATTests.make(FATTests.variants[1])
        let ntfs = try NTFSTests.make()
        for path in [ext.image, fat.image, ntfs.image] {
            let alone = try contents(path)
            let map = try mapped(alone)
            let before = (1 << 20) + 512
            let disk = randomBytes(before, seed: 7) + alone + randomBytes(3000, seed: 8)
            let inside = FilesystemUsage.examine(MemorySource(bytes: disk), offset: UInt64(before), length: UInt64(alone.count))
            #expect(inside == .mapped(map), "\(map.filesystem)")
        }
    }
}
