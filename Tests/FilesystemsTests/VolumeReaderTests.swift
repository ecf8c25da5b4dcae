import Filesystems
import Foundation
import Testing
import TestSupport
import UDIF

/// The volume readers on their own: a fixture's HFS+ volume walked through the API, and
/// hand-damaged copies of it that must be refused at open with one line, never a crash or hang.
@Suite struct VolumeReaderTests {
    static func open(_ bytes: [UInt8]) -> VolumeOpening? {
        Volumes.open(MemorySource(bytes: bytes), offset: 0, length: UInt64(bytes.count))
    }

    /// Every path, its kind and size, walked through the reader.
    static func walk(_ reader: any VolumeReader) throws -> [String: (NodeKind, UInt64)] {
        var found: [String: (NodeKind, UInt64)] = [:]
        var queue: [(String, UInt64)] = [("", reader.rootNode)]
        while let (path, node) = queue.popLast() {
            for e in try reader.entries(of: node) {
                let p = path.isEmpty ? e.name : path + "/" + e.name
                let a = try reader.attributes(of: e.node)
                found[p] = (a.kind, a.size)
                if e.kind == .directory { queue.append((p, e.node)) }
            }
        }
        return found
    }

    @Test func fixtureVolumeThroughTheReader() throws {
        let bytes = try HFSPlusTests.partitionBytes()
        guard case .opened(let reader)? = Self.open(bytes) else { Issue.record("not opened"); return }
        #expect(reader.filesystem == "HFS+" && reader.label == "hfsplus_test")
        let tree = try Self.walk(reader)
        #expect(tree.count == 17)
        #expect(tree["testdir1/testfile1"]?.1 == 9 && tree["file_hardlink1"]?.1 == 9)
        #expect(tree["forward:slash"] != nil && tree["file_symboliclink2"]?.0 == .symbolicLink)
        #expect(!tree.keys.contains { $0.contains("Private") || $0.hasPrefix(".journal") })
        let root = try reader.entries(of: reader.rootNode)
        let file = try #require(root.first { $0.name == "file_hardlink1" })
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = try buffer.withUnsafeMutableBytes { try reader.read(file.node, at: 0, into: $0) }
        #expect(String(decoding: buffer.prefix(n), as: UTF8.self) == "Keramics\n")
        let link = try #require(root.first { $0.name == "file_symboliclink1" })
        #expect(String(decoding: try reader.linkTarget(of: link.node), as: UTF8.self) == "/Volumes/hfsplus_test/testdir1/testfile1")
        #expect(throws: VolumeError.noAttribute) { try reader.extendedAttribute("user.nothing", of: file.node) }
    }

    /// Each damage gives `.failed` with a one-line reason naming what is wrong.
    @Test func damagedCatalogsAreRefusedAtOpen() throws {
        let bytes = try HFSPlusTests.partitionBytes()
        let c = HFSCatalogLayout(bytes)
        #expect(c.depth >= 1 && c.nodeSize >= 512)
        func put32(_ b: inout [UInt8], _ at: Int, _ v: Int) { for k in 0..<4 { b[at + k] = UInt8(truncatingIfNeeded: v >> (24 - 8 * k)) } }
        let damages: [(String, (inout [UInt8]) -> Void, String)] = [
            ("a leaf of an unknown kind", { $0[c.node(c.firstLeaf) + 8] = 0x55 }, "catalog"),
            ("a leaf chain that loops", { put32(&$0, c.node(c.firstLeaf), c.firstLeaf) }, "loops"),
            ("record offsets out of order", { $0[c.node(c.firstLeaf) + c.nodeSize - 4] = 0xFF }, "catalog"),
            ("too many records", { $0[c.node(c.firstLeaf) + 10] = 0xFF; $0[c.node(c.firstLeaf) + 11] = 0xFF }, "catalog"),
            ("a root past the tree", { put32(&$0, c.start + 16, 1 << 30) }, "catalog"),
            ("a header that lies about its records", { put32(&$0, c.start + 20, 12345) }, "12345"),
            ("the catalog past the volume's end", { put32(&$0, 1024 + 288, c.totalBlocks) }, "past"),
            ("a zero node size", { $0[c.start + 32] = 0; $0[c.start + 33] = 0 }, "node size"),
            ("a root whose height is wrong", { $0[c.node(c.rootNode) + 9] = 9 }, "height"),
        ]
        for (what, damage, words) in damages {
            var b = bytes
            damage(&b)
            guard case .failed(let filesystem, let reason)? = Self.open(b) else { Issue.record("\(what): opened"); continue }
            #expect(filesystem == "HFS+")
            #expect(!reason.isEmpty && !reason.contains("\n") && reason.contains(words), "\(what): \(reason)")
        }
    }

    /// A record that points its folder's child back at the folder, or a hard link to a missing
    /// node, is left out; the rest of the tree is shown.
    @Test func damagedRecordsLeaveTheRestReadable() throws {
        var bytes = try HFSPlusTests.partitionBytes()
        // Rename the indirect node file so file_hardlink1 and testfile1 dangle.
        let name = Array("iNode21".utf16).flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
        let at = try #require(find(name, in: bytes))
        bytes[at + name.count - 1] = UInt8(ascii: "9")
        guard case .opened(let reader)? = Self.open(bytes) else { Issue.record("not opened"); return }
        let tree = try Self.walk(reader)
        #expect(tree["file_hardlink1"] == nil && tree["testdir1/testfile1"] == nil)
        #expect(tree["emptyfile"] != nil && tree["testdir1/xattr1"] != nil)
    }

    func find(_ needle: [UInt8], in bytes: [UInt8]) -> Int? {
        guard needle.count <= bytes.count else { return nil }
        return (0...(bytes.count - needle.count)).first { bytes[$0] == needle[0] && bytes[$0..<($0 + needle.count)].elementsEqual(needle) }
    }

    /// ext4 through libext2fs: damaged group descriptors, or a superblock that lies about the
    /// inode table, are refused with libext2fs's words.
    @Test func damagedExtIsRefusedAtOpen() throws {
        let dir = TemporaryDirectory()
        let image = dir.file("ext4.img")
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: 4 << 20)
        try Tool.run(["mke2fs", "-q", "-F", "-t", "ext4", image])
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
        guard case .opened(let reader)? = Self.open(bytes) else { Issue.record("not opened"); return }
        #expect(reader.filesystem == "ext4")
        #expect(try reader.entries(of: reader.rootNode).map(\.name) == ["lost+found"])
        // The first group descriptor (the block after the superblock's) gets an inode table past the end.
        var b = bytes
        let blockSize = 1024 << Int(b[1024 + 24])
        let descriptor = blockSize == 1024 ? 2048 : blockSize
        for k in 8..<12 { b[descriptor + k] = 0xFF }
        guard case .failed(let filesystem, let reason)? = Self.open(b) else { Issue.record("damaged descriptors opened"); return }
        #expect(filesystem == "ext4" && !reason.contains("\n") && !reason.isEmpty, "\(reason)")
    }

    /// HFSX (case-sensitive HFS+): the same catalog under the HX signature, read the same way
    /// (lookups never compare names, so the key order is never needed).
    @Test func hfsxReadsLikeHFSPlus() throws {
        var bytes = try HFSPlusTests.partitionBytes()
        let plain = try Self.walk(try #require({ if case .opened(let r)? = Self.open(bytes) { r } else { nil } }()))
        bytes[1024] = UInt8(ascii: "H"); bytes[1025] = UInt8(ascii: "X"); bytes[1026] = 0; bytes[1027] = 5
        let c = HFSCatalogLayout(bytes)
        bytes[c.start + 14 + 37] = 0xBC  // the catalog's key compare type: binary
        guard case .opened(let reader)? = Self.open(bytes) else { Issue.record("HFSX not opened"); return }
        #expect(reader.filesystem == "HFSX")
        let tree = try Self.walk(reader)
        #expect(tree.keys.sorted() == plain.keys.sorted())
    }

    /// ext4 with large inodes keeps nanoseconds; they, owners, modes and types come through.
    @Test func extTimesOwnersAndModes() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: tree + "/f", contents: Data("x".utf8))
        try Tool.run(["touch", "-d", "2020-05-06 07:08:09 UTC", tree + "/f"])
        try Tool.run(["chown", "4242:4343", tree + "/f"])
        try Tool.run(["chmod", "2741", tree + "/f"])
        try Tool.run(["mkfifo", tree + "/p"])
        let image = dir.file("ext4.img")
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: 8 << 20)
        try Tool.run(["mke2fs", "-q", "-F", "-t", "ext4", "-I", "256", "-d", tree, image])
        // mke2fs -d keeps whole seconds; the nanoseconds (shifted left by 2) are set by hand.
        try Tool.run(["debugfs", "-w", "-R", "sif /f mtime_extra \(123_456_789 << 2)", image])
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
        guard case .opened(let reader)? = Self.open(bytes) else { Issue.record("not opened"); return }
        let entries = try reader.entries(of: reader.rootNode)
        let f = try reader.attributes(of: try #require(entries.first { $0.name == "f" }).node)
        #expect(f.modified == Timestamp(seconds: 1_588_748_889, nanoseconds: 123_456_789))
        #expect(f.uid == 4242 && f.gid == 4343 && f.permissions == 0o2741 && f.kind == .file && f.size == 1)
        #expect(try reader.attributes(of: try #require(entries.first { $0.name == "p" }).node).kind == .fifo)
    }

    /// FAT: a looping cluster chain, and a FAT32 root outside the volume, are refused; a file
    /// whose chain ends early reads as an error, the rest of the tree stays.
    @Test func damagedFATIsRefusedOrAnError() throws {
        let dir = TemporaryDirectory()
        let image = dir.file("fat.img"), file = dir.file("file.txt")
        _ = FileManager.default.createFile(atPath: file, contents: Data(String(repeating: "fat ", count: 3000).utf8))
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: 40 << 20)
        try Tool.run(["mkfs.fat", "-F", "32", "-s", "1", image])
        try Tool.run(["mcopy", "-i", image, file, "::/file.txt"])
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
        guard case .opened(let reader)? = Self.open(bytes) else { Issue.record("not opened"); return }
        #expect(reader.filesystem == "FAT32")
        let entry = try #require(try reader.entries(of: reader.rootNode).first { $0.name == "file.txt" })
        #expect(try reader.attributes(of: entry.node).size == 12000)

        let reserved = Int(bytes[14]) | Int(bytes[15]) << 8
        let rootCluster = Int(bytes[44]) | Int(bytes[45]) << 8
        func fatEntry(_ b: inout [UInt8], _ cluster: Int, _ value: Int) {
            for k in 0..<4 { b[reserved * 512 + 4 * cluster + k] = UInt8(truncatingIfNeeded: value >> (8 * k)) }
        }
        var loop = bytes
        fatEntry(&loop, rootCluster, rootCluster)
        guard case .failed(_, let reason)? = Self.open(loop) else { Issue.record("a looping root opened"); return }
        #expect(reason.contains("loops"), "\(reason)")
        var outside = bytes
        outside[44] = 0xFF; outside[45] = 0xFF; outside[46] = 0xFF; outside[47] = 0x0F
        guard case .failed? = Self.open(outside) else { Issue.record("a root outside the volume opened"); return }
        // The file's first cluster marked the end of its chain: 12000 bytes in one 512-byte cluster.
        var short = bytes
        let e = try #require(find(Array("FILE    TXT".utf8), in: bytes))
        let first = Int(bytes[e + 26]) | Int(bytes[e + 27]) << 8 | Int(bytes[e + 20]) << 16 | Int(bytes[e + 21]) << 24
        fatEntry(&short, first, 0x0FFF_FFFF)
        guard case .opened(let damaged)? = Self.open(short) else { Issue.record("not opened"); return }
        var buffer = [UInt8](repeating: 0, count: 12000)
        #expect(throws: VolumeError.self) { _ = try buffer.withUnsafeMutableBytes { try damaged.read(entry.node, at: 0, into: $0) } }
    }

    /// ext4's inline data: small files and directories kept in the inode (and its xattr area).
    @Test func extInlineData() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try FileManager.default.createDirectory(atPath: tree + "/small dir", withIntermediateDirectories: true)
        let tiny = Array("in the inode".utf8), bigger = Array(String(repeating: "i", count: 100).utf8)
        _ = FileManager.default.createFile(atPath: tree + "/tiny", contents: Data(tiny))
        _ = FileManager.default.createFile(atPath: tree + "/small dir/bigger", contents: Data(bigger))
        let image = dir.file("ext4.img")
        _ = FileManager.default.createFile(atPath: image, contents: nil)
        try FileHandle(forWritingTo: URL(fileURLWithPath: image)).truncate(atOffset: 8 << 20)
        try Tool.run(["mke2fs", "-q", "-F", "-t", "ext4", "-I", "256", "-O", "inline_data", "-d", tree, image])
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
        guard case .opened(let reader)? = Self.open(bytes) else { Issue.record("not opened"); return }
        func content(_ node: UInt64) throws -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 4096)
            let n = try buffer.withUnsafeMutableBytes { try reader.read(node, at: 0, into: $0) }
            return Array(buffer.prefix(n))
        }
        let root = try reader.entries(of: reader.rootNode)
        #expect(try content(try #require(root.first { $0.name == "tiny" }).node) == tiny)
        let sub = try #require(root.first { $0.name == "small dir" })
        let inner = try reader.entries(of: sub.node)
        #expect(inner.map(\.name) == ["bigger"])
        #expect(try content(inner[0].node) == bigger)
        #expect(reader.storedOffset(of: inner[0].node, at: 0) == nil)
    }
}
