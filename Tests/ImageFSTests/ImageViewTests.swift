import SystemSupport
import Crypto
import Foundation
import Synchronization
@testable import ImageFS
import Imaging
import TestSupport
import Testing
import UDIF

/// The view as a state machine: inode table, reads and generated files, without a mount.
struct ImageViewTests {
    func readAll(_ view: ImageView, _ inode: UInt64, chunk: Int = 300_000) throws -> [UInt8] {
        let size = try view.attributes(of: inode).size
        var out: [UInt8] = []
        var offset: UInt64 = 0
        while offset < size {
            try view.read(inode, handle: 1, at: offset, count: chunk) { pieces in
                for p in pieces { out += p }
            }
            offset += UInt64(chunk)
        }
        return out
    }

    func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    @Test(arguments: Fixtures.all)
    func fixtureTreeMatchesTheDisk(_ fixture: Fixtures.Expected) throws {
        let view = try ImageView(path: fixture.path)
        let names = try view.entries(of: ImageView.rootInode).map(\.name)
        #expect(names == ["disk.img", "partitions", "blockmap.bmap", "blockmap.json", "checksums.sha256", "info.plist", "volumes"])
        let disk = try view.lookup(parent: ImageView.rootInode, name: "disk.img")
        #expect(disk.size == fixture.size && !disk.isDirectory && disk.permissions == 0o444)
        let bytes = try readAll(view, disk.inode)
        #expect(hex(SHA256.hash(data: bytes)) == fixture.sha256)

        let partitions = try view.lookup(parent: ImageView.rootInode, name: "partitions")
        let files = try view.entries(of: partitions.inode)
        var joined: [UInt8] = []
        for f in files { joined += try readAll(view, f.inode) }
        #expect(joined == bytes, "the partitions, in order, are the disk")

        let checksums = try view.lookup(parent: ImageView.rootInode, name: "checksums.sha256")
        let text = String(decoding: try readAll(view, checksums.inode), as: UTF8.self)
        #expect(text.hasPrefix("\(fixture.sha256)  disk.img\n"))
        #expect(text.split(separator: "\n").count == 1 + files.count)

        let info = try view.lookup(parent: ImageView.rootInode, name: "info.plist")
        let encoder = PropertyListEncoder()
        encoder.outputFormat = .xml
        #expect(try readAll(view, info.inode) == Array(encoder.encode(ImageInfo.inspect(fixture.path))))
    }

    /// Generated files are sized before their digests exist; the real text must fit exactly.
    @Test func lazyDigestsGiveTheSameFilesAsTheMountTimePass() throws {
        let fixture = Fixtures.all[0]
        let checked = try ImageView(path: fixture.path, verify: true)
        let lazy = try ImageView(path: fixture.path, verify: false)
        for name in ["blockmap.bmap", "blockmap.json", "checksums.sha256"] {
            let a = try checked.lookup(parent: ImageView.rootInode, name: name)
            let b = try lazy.lookup(parent: ImageView.rootInode, name: name)
            #expect(a.size == b.size, "\(name)")
            let bytes = try readAll(lazy, b.inode, chunk: 100)
            #expect(UInt64(bytes.count) == b.size, "\(name)")
            #expect(bytes == (try readAll(checked, a.inode)), "\(name)")
        }
    }

    @Test func errorsAreErrnos() throws {
        let view = try ImageView(path: Fixtures.all[0].path)
        let disk = try view.lookup(parent: ImageView.rootInode, name: "disk.img")
        #expect(throws: FSError.notFound) { try view.lookup(parent: ImageView.rootInode, name: "nope") }
        #expect(throws: FSError.notFound) { try view.attributes(of: 999) }
        #expect(throws: FSError.notDirectory) { try view.entries(of: disk.inode) }
        #expect(throws: FSError.readOnly) { try view.open(disk.inode, flags: O_RDWR) }
        #expect(throws: FSError.readOnly) { try view.open(disk.inode, flags: O_RDONLY | O_TRUNC) }
        #expect(throws: FSError.isDirectory) { try view.open(ImageView.rootInode, flags: O_RDONLY) }
        #expect(throws: FSError.readOnly) { try view.truncate(disk.inode, to: 0) }
        var past = 0
        try view.read(disk.inode, handle: 1, at: disk.size + 10, count: 4096) { past = $0.reduce(0) { $0 + $1.count } }
        #expect(past == 0)
    }

    @Test func corruptImageIsRefusedWithItsName() throws {
        let dir = TemporaryDirectory()
        let path = dir.file("bad.dmg")
        let original = Fixtures.all.first { $0.name.contains("zlib") }!.path
        let largest = try UDIFImage(path: original).chunks.max { $0.storedLength < $1.storedLength }!
        var bytes = try Data(contentsOf: URL(fileURLWithPath: original))
        bytes[Int(largest.fileOffset + largest.storedLength / 2)] ^= 0x55
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect { try ImageView(path: path) } throws: { error in
            guard case .corrupt(path, _)? = error as? ImageFSError else { return false }
            return "\(error)".hasPrefix("\(path) is corrupt: ")
        }
        // Without the check it mounts; reading the bad chunk is an I/O error.
        let messages = LogLines()
        let view = try ImageView(path: path, verify: false, log: { messages.add($0) })
        let disk = try view.lookup(parent: ImageView.rootInode, name: "disk.img")
        #expect(throws: FSError.ioError) { _ = try readAll(view, disk.inode) }
        #expect(messages.lines.first?.contains(path) == true)
    }

    @Test func regionNamesBecomeFileNames() {
        #expect(ImageView.fileLabel("disk image (Apple_HFS : 4)") == "Apple_HFS")
        #expect(ImageView.fileLabel("Protective Master Boot Record (MBR : 0)") == "MBR")
        #expect(ImageView.fileLabel(" (Apple_Free : 3)") == "Apple_Free")
        #expect(ImageView.fileLabel("whole disk (Linux : 0)") == "Linux")
        #expect(ImageView.fileLabel("Microsoft Basic Data") == "Microsoft_Basic_Data")
        #expect(ImageView.fileLabel("../../etc/passwd") == "etc_passwd")
        #expect(ImageView.fileLabel("日本語") == "region")
    }

    /// Hashing ranges across arbitrary piece boundaries gives each range's own SHA-256.
    @Test func rangeDigestsMatchDirectHashing() {
        let seed = SplitMix64.seed(default: 0xD16E_575)
        var rng = SplitMix64(seed: seed)
        for _ in 0..<50 {
            let size = Int.random(in: 1...200_000, using: &rng)
            let data = (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
            var cuts = Set((0..<Int.random(in: 0...8, using: &rng)).map { _ in Int.random(in: 0...size, using: &rng) })
            cuts.formUnion([0, size])
            let bounds = cuts.sorted()
            let ranges = zip(bounds, bounds.dropFirst()).enumerated().filter { $0.offset % 2 == 0 }
                .map { (offset: UInt64($0.element.0), length: UInt64($0.element.1 - $0.element.0)) }
            var sink = DigestSink(.init(diskBytes: UInt64(size), partitions: [(0, UInt64(size))], ranges: ranges))
            var at = 0
            while at < size {
                let n = min(size - at, Int.random(in: 1...40_000, using: &rng))
                sink.feed(Array(data[at..<(at + n)]))
                at += n
            }
            let digests = sink.finish()
            #expect(digests.disk == Array(SHA256.hash(data: data)), "seed \(seed)")
            #expect(digests.partitions == [Array(SHA256.hash(data: data))], "seed \(seed)")
            #expect(digests.ranges == ranges.map { Array(SHA256.hash(data: data[Int($0.offset)..<Int($0.offset + $0.length)])) },
                    "seed \(seed)")
        }
    }

    /// Chunks that do not start on 4 KiB boundaries still give whole, merged, sorted blocks.
    @Test func blockRangesCoverEveryStoredChunk() throws {
        let fixture = Fixtures.all[0]
        let source = try ImageSource.open(fixture.path)
        let map = try ImageView.blockRanges(of: source)
        for c in source.udif!.chunks where c.type.hasStoredData {
            #expect(map.ranges.contains { $0.first * 4096 <= c.diskOffset && c.diskOffset + c.length <= ($0.last + 1) * 4096 })
        }
        for (a, b) in zip(map.ranges, map.ranges.dropFirst()) { #expect(a.last + 1 < b.first) }
    }

    /// volumes/ without a mount: each volume's nodes are inodes of their own (the volume in the
    /// high bits), hard links share one, and links, attributes and reads answer as errnos.
    @Test func volumesAreInodesOfTheirOwn() throws {
        let view = try ImageView(path: Fixtures.all[0].path)
        let volumes = try view.lookup(parent: ImageView.rootInode, name: "volumes")
        #expect(volumes.isDirectory && volumes.linkCount == 3)
        let volume = try view.lookup(parent: volumes.inode, name: "4-hfsplus_test")
        #expect(volume.inode == 1 << 40 | 2 && volume.node?.kind == .directory && volume.node?.uid == 501)
        let link = try view.lookup(parent: volume.inode, name: "file_hardlink1")
        let testdir = try view.lookup(parent: volume.inode, name: "testdir1")
        let other = try view.lookup(parent: testdir.inode, name: "testfile1")
        #expect(link.inode == other.inode && link.linkCount == 2 && link.size == 9)
        #expect(String(decoding: try readAll(view, link.inode), as: UTF8.self) == "Keramics\n")
        let symlink = try view.lookup(parent: volume.inode, name: "file_symboliclink1")
        #expect(symlink.node?.kind == .symbolicLink)
        #expect(String(decoding: try view.readLink(symlink.inode), as: UTF8.self) == "/Volumes/hfsplus_test/testdir1/testfile1")
        let xattr1 = try view.lookup(parent: testdir.inode, name: "xattr1")
        #expect(try view.extendedAttributeNames(of: xattr1.inode) == ["user.myxattr1"])
        #expect(String(decoding: try view.extendedAttribute("user.myxattr1", of: xattr1.inode), as: UTF8.self) == "My 1st extended attribute")
        #expect(throws: FSError.noAttribute) { try view.extendedAttribute("user.none", of: xattr1.inode) }
        #expect(throws: FSError.invalid) { try view.readLink(link.inode) }
        #expect(throws: FSError.isDirectory) { try view.open(testdir.inode, flags: O_RDONLY) }
        #expect(throws: FSError.readOnly) { try view.open(link.inode, flags: O_RDWR) }
        #expect(throws: FSError.notFound) { try view.lookup(parent: volume.inode, name: ".journal") }
        #expect(throws: FSError.notFound) { try view.attributes(of: 7 << 40 | 2) }
        let names = try view.entries(of: volume.inode).map(\.name)
        #expect(names.count == 12 && names.contains("forward:slash") && !names.contains { $0.contains("Private") })
    }
}

final class LogLines: Sendable {
    private let stored = Locked<[String]>([])
    func add(_ line: String) { stored.withLock { $0.append(line) } }
    var lines: [String] { stored.withLock { $0 } }
}
