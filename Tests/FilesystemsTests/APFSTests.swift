import Crypto
import Filesystems
import Foundation
import SystemSupport
import Testing
import TestSupport
import UDIF

/// The APFS reader on the fixture container (../shared/fixtures/fs/apfs.raw, made on macOS):
/// its tree against 7-Zip's listing and extraction, damaged containers refused with one line,
/// random damage never a crash or hang, and a compressed file built into the fixture.
@Suite struct APFSTests {
    static func fixture() throws -> [UInt8] { try contents(try Fixtures.filesystem("apfs.raw")) }

    static func volumes(_ bytes: [UInt8]) -> [ContainedVolume] {
        Volumes.openAll(MemorySource(bytes: bytes), offset: 0, length: UInt64(bytes.count))
    }

    static func reader(_ bytes: [UInt8]) throws -> any VolumeReader {
        let found = volumes(bytes)
        guard found.count == 1, case .opened(let reader) = found[0].opening else { throw TestFailure("not one opened volume: \(found)") }
        return reader
    }

    struct Node {
        var node: UInt64
        var attributes: NodeAttributes
    }

    /// Every path below the root with its node and attributes.
    static func walk(_ reader: any VolumeReader) throws -> [String: Node] {
        var found: [String: Node] = [:]
        var queue: [(String, UInt64)] = [("", reader.rootNode)]
        while let (path, node) = queue.popLast() {
            for e in try reader.entries(of: node) {
                let p = path.isEmpty ? e.name : path + "/" + e.name
                let a = try reader.attributes(of: e.node)
                #expect(a.kind == e.kind, "\(p)")
                found[p] = Node(node: e.node, attributes: a)
                if e.kind == .directory { queue.append((p, e.node)) }
            }
        }
        return found
    }

    static func content(_ reader: any VolumeReader, _ node: UInt64, size: UInt64) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: Int(size) + 100)
        let n = try buffer.withUnsafeMutableBytes { try reader.read(node, at: 0, into: $0) }
        return Array(buffer.prefix(n))
    }

    static func sha256(_ bytes: [UInt8]) -> String { SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

    /// 7-Zip's `7zz l -slt -sns`: items by path (alternate streams as "path:stream").
    static func sevenZipListing(_ path: String) throws -> [String: [String: String]] {
        var items: [String: [String: String]] = [:]
        for fields in SevenZipListing.items(try Tool.run(["7zz", "l", "-slt", "-sns", path])) {
            guard let p = fields["Path"], fields["Alternate Stream"] != nil else { continue }
            items[p] = fields
        }
        return items
    }

    @Test func fixtureTreeIsWhatSevenZipListsAndExtracts() throws {
        let path = try Fixtures.filesystem("apfs.raw")
        let bytes = try Self.fixture()
        let found = Self.volumes(bytes)
        #expect(found.count == 1 && found.first?.position == 1)
        let reader = try Self.reader(bytes)
        #expect(reader.filesystem == "APFS" && reader.label == "apfs_test")
        let tree = try Self.walk(reader)

        let seven = try Self.sevenZipListing(path)
        let dir = TemporaryDirectory()
        try Tool.run(["7zz", "x", "-y", "-o" + dir.file("x"), path])
        let items = seven.filter { $0.value["Alternate Stream"] == "-" }
        let streams = seven.filter { $0.value["Alternate Stream"] == "+" }
        #expect(Set(tree.keys) == Set(items.keys), "ours \(tree.keys.sorted()), 7-Zip's \(items.keys.sorted())")
        #expect(tree.count == 10 && streams.count == 2)
        for (p, item) in items {
            let n = try #require(tree[p], "\(p)")
            let a = n.attributes
            let mode = item["Mode"] ?? ""
            #expect(String(format: "%o", a.permissions) == String(format: "%o", Self.permissions(mode)), "\(p) \(mode)")
            #expect(a.uid == UInt32(item["User ID"] ?? "") && a.gid == UInt32(item["Group ID"] ?? ""), "\(p)")
            #expect(Self.formatted(a.modified) == item["Modified"], "\(p) \(a.modified)")
            switch mode.first {
            case "d":
                #expect(a.kind == .directory, "\(p)")
            case "l":
                #expect(a.kind == .symbolicLink, "\(p)")
                let target = String(decoding: try reader.linkTarget(of: n.node), as: UTF8.self)
                #expect(target == item["Symbolic Link"], "\(p)")
                #expect(target == (try FileManager.default.destinationOfSymbolicLink(atPath: dir.file("x/" + p))))
                // 7-Zip counts the NUL APFS stores after the target; stat's size does not.
                #expect(a.size + 1 == UInt64(item["Size"] ?? ""), "\(p)")
            default:
                #expect(a.kind == .file && a.size == UInt64(item["Size"] ?? ""), "\(p)")
                let ours = try Self.content(reader, n.node, size: a.size)
                #expect(Self.sha256(ours) == Self.sha256(try contents(dir.file("x/" + p))), "\(p)")
                #expect(reader.storedOffset(of: n.node, at: 0).map { bytes[Int($0)..<(Int($0) + ours.count)].elementsEqual(ours) } ?? (a.size == 0), "\(p)")
            }
            // Alternate streams are extended attributes; the resource fork keeps Apple's name.
            let names = Set(streams.keys.filter { $0.hasPrefix(p + ":") }.map { "user." + $0.dropFirst(p.count + 1) })
            #expect(Set(try reader.extendedAttributeNames(of: n.node)) == names, "\(p)")
            for name in names {
                let want = try contents(dir.file("x/" + p + ":" + name.dropFirst(5)))
                #expect(try reader.extendedAttribute(name, of: n.node) == want, "\(p) \(name)")
            }
        }
        let file = try #require(tree["a_directory/a_file"])
        #expect(try reader.extendedAttributeNames(of: file.node) == ["user.myxattr"])
        #expect(try reader.extendedAttributeNames(of: try #require(tree["a_directory/a_resourcefork"]).node) == ["user.com.apple.ResourceFork"])
        #expect(throws: VolumeError.noAttribute) { try reader.extendedAttribute("user.com.apple.fs.symlink", of: try #require(tree["a_link"]).node) }
        let passwords = try #require(tree["passwords.txt"]).attributes
        #expect(passwords.modified == Timestamp(seconds: 1_642_144_781, nanoseconds: 216_184_416))
        #expect(passwords.linkCount == 1 && passwords.uid == 99)
        #expect(try #require(tree["a_directory"]).attributes.linkCount == 2)
    }

    static func permissions(_ mode: String) -> UInt32 {
        let bits = Array(mode.dropFirst().prefix(9))
        return bits.enumerated().reduce(0) { v, e in v << 1 | (e.element == "-" ? 0 : 1) }
    }

    /// 7-Zip's "2022-01-14 07:19:41.216184416" (UTC here).
    static func formatted(_ t: Timestamp) -> String {
        var time = time_t(t.seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d.%09d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday,
                      parts.tm_hour, parts.tm_min, parts.tm_sec, t.nanoseconds)
    }

    // MARK: Damage

    /// The blocks of the fixture that hold objects, by type (low 16 bits of o_type).
    static func objects(_ bytes: [UInt8], type: UInt32) -> [Int] {
        stride(from: 0, to: bytes.count, by: 4096).filter { at in
            let t = UInt32(bytes[at + 24]) | UInt32(bytes[at + 25]) << 8
            return t == type && bytes[at..<(at + 8)].contains { $0 != 0 }
        }
    }

    static func le16(_ b: [UInt8], _ i: Int) -> Int { Int(b[i]) | Int(b[i + 1]) << 8 }

    static func put64(_ b: inout [UInt8], _ at: Int, _ v: UInt64) { for k in 0..<8 { b[at + k] = UInt8(truncatingIfNeeded: v >> (8 * k)) } }

    /// Each damage gives one line and no volume: a container-level failure (position nil) or
    /// that volume's (position 1).
    @Test func damagedContainersAreOneLineAndNoVolume() throws {
        let bytes = try Self.fixture()
        let superblocks = Self.objects(bytes, type: 1), volumes = Self.objects(bytes, type: 0xD)
        let omaps = Self.objects(bytes, type: 0xB), roots = Self.objects(bytes, type: 2)
        #expect(!superblocks.isEmpty && !volumes.isEmpty && !omaps.isEmpty && !roots.isEmpty)
        let damages: [(String, (inout [UInt8]) -> Void, Bool, String)] = [
            ("every superblock's checksum wrong", { b in for at in superblocks { b[at + 100] ^= 0xFF } }, true, "checksum"),
            ("every volume superblock's checksum wrong", { b in for at in volumes { b[at + 1000] ^= 0xFF } }, false, "checksum"),
            ("every object map's checksum wrong", { b in for at in omaps { b[at + 60] ^= 0x01 } }, true, "checksum"),
            ("volumes marked encrypted", { b in for at in volumes { b[at + 264] &= 0xFE }; APFSChecksum.reseal(&b) }, false, "encrypted"),
            ("a block size of 3", { b in for at in superblocks { b[at + 36] = 3; b[at + 37] = 0 }; APFSChecksum.reseal(&b) }, true, "block size"),
            ("more blocks than the partition", { b in for at in superblocks { Self.put64(&b, at + 40, 1 << 40) }; APFSChecksum.reseal(&b) }, true, "blocks"),
            ("B-tree roots of level 40", { b in for at in roots { b[at + 34] = 40 }; APFSChecksum.reseal(&b) }, false, "level"),
            ("B-tree roots holding 60000 records", { b in for at in roots { b[at + 36] = 0x60; b[at + 37] = 0xEA }; APFSChecksum.reseal(&b) }, false, "records"),
            ("a file-system tree whose root is its own child", { b in
                // The root made an index node whose every child is the root's own ID.
                for at in roots where b[at + 28] == 0xE {
                    let oid = b[(at + 8)..<(at + 16)].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                    let toc = at + 56 + Self.le16(b, at + 40), valueEnd = at + 4096 - 40
                    for i in 0..<Self.le16(b, at + 36) {
                        Self.put64(&b, valueEnd - Self.le16(b, toc + 8 * i + 4), oid)
                        b[toc + 8 * i + 6] = 8; b[toc + 8 * i + 7] = 0
                    }
                    b[at + 32] &= ~2
                    b[at + 34] = 1
                }
                APFSChecksum.reseal(&b)
            }, false, "root"),
        ]
        for (what, damage, containerLevel, words) in damages {
            var b = bytes
            damage(&b)
            let found = Self.volumes(b)
            #expect(!found.isEmpty, "\(what)")
            for v in found {
                guard case .failed(let filesystem, let reason) = v.opening else {
                    if !containerLevel, case .opened = v.opening { continue }
                    Issue.record("\(what): opened"); continue
                }
                #expect(filesystem == "APFS")
                if containerLevel { #expect(v.position == nil, "\(what)") }
                #expect(!reason.isEmpty && !reason.contains("\n") && reason.contains(words), "\(what): \(reason)")
            }
            #expect(found.contains { if case .failed = $0.opening { true } else { false } }, "\(what)")
        }
    }

    /// Random bytes written over the fixture's objects, resealed or not: every mutant opens
    /// or is refused, and whatever opens is walked and read, without a crash or a hang.
    @Test func randomDamageIsRefusedOrRead() throws {
        let bytes = try Self.fixture()
        let objects = stride(from: 0, to: bytes.count, by: 4096).filter { at in bytes[at..<(at + 8)].contains { $0 != 0 } && bytes[at + 24] != 0 }
        var rng = SplitMix64(seed: SplitMix64.seed(default: 1717))
        var (opened, refused) = (0, 0)
        for round in 0..<300 {
            var b = bytes
            let at = objects[Int(rng.next() % UInt64(objects.count))]
            for _ in 0..<(1 + Int(rng.next() % 8)) {
                let k = at + 32 + Int(rng.next() % 4064)
                b[k] = rng.next() % 3 == 0 ? 0xFF : UInt8(truncatingIfNeeded: rng.next())
            }
            if round % 4 != 0 { APFSChecksum.reseal(&b) }
            for v in Self.volumes(b) {
                switch v.opening {
                case .failed(_, let reason):
                    refused += 1
                    #expect(!reason.isEmpty && !reason.contains("\n"), "round \(round): \(reason)")
                case .opened(let reader):
                    opened += 1
                    var queue = [reader.rootNode], seen = Set<UInt64>()
                    while let d = queue.popLast(), seen.count < 200 {
                        guard seen.insert(d).inserted, let entries = try? reader.entries(of: d) else { continue }
                        for e in entries {
                            guard let a = try? reader.attributes(of: e.node) else { continue }
                            _ = try? reader.extendedAttributeNames(of: e.node).map { try? reader.extendedAttribute($0, of: e.node) }
                            if a.kind == .directory { queue.append(e.node) }
                            if a.kind == .symbolicLink { _ = try? reader.linkTarget(of: e.node) }
                            if a.kind == .file, a.size < 1 << 20 {
                                var buffer = [UInt8](repeating: 0, count: Int(a.size))
                                if let n = try? buffer.withUnsafeMutableBytes({ try reader.read(e.node, at: 0, into: $0) }) {
                                    #expect(n == Int(a.size), "round \(round)")
                                }
                            }
                        }
                    }
                }
            }
        }
        #expect(opened > 0 && refused > 0, "opened \(opened), refused \(refused)")
    }

    /// The container superblock's fs_oid array with the volume in slots 1 and 3 and an ID
    /// the object map lacks in slot 2: three volumes in slot order, the middle one refused
    /// with one line, the others read.
    @Test func volumesAreInSlotOrderAndOneBadSlotLeavesTheOthers() throws {
        var bytes = try Self.fixture()
        for at in Self.objects(bytes, type: 1) {
            let oid = Array(bytes[(at + 184)..<(at + 192)])
            bytes[at + 180] = 3  // nx_max_file_systems: this small container allows one
            bytes.replaceSubrange((at + 192)..<(at + 200), with: Self.le64(9999))
            bytes.replaceSubrange((at + 200)..<(at + 208), with: oid)
        }
        APFSChecksum.reseal(&bytes)
        let found = Self.volumes(bytes)
        #expect(found.map(\.position) == [1, 2, 3])
        guard found.count == 3 else { return }
        guard case .failed(let filesystem, let reason) = found[1].opening else { Issue.record("slot 2 opened"); return }
        #expect(filesystem == "APFS" && reason.contains("9999") && !reason.contains("\n"), "\(reason)")
        for v in [found[0], found[2]] {
            guard case .opened(let reader) = v.opening else { Issue.record("slot \(v.position ?? 0) not opened"); continue }
            #expect(reader.label == "apfs_test")
            #expect(try Self.walk(reader).count == 10)
        }
    }

    // MARK: Compression

    /// The fixture has no compressed file, so two are made in it: the file-system tree's one
    /// leaf (the root) is rebuilt with a_file marked UF_COMPRESSED and given a decmpfs header
    /// with its zlib data inline (type 3), and another_file given one pointing at a zlib
    /// resource fork (type 4) in a com.apple.ResourceFork kept in a data stream of its own
    /// (an extent in a free block). Both read back as their text; the headers are hidden from
    /// the attributes, as macOS hides them.
    @Test func compressedFilesReadThroughDecmpfs() throws {
        var bytes = try Self.fixture()
        let reader = try Self.reader(bytes)
        let tree = try Self.walk(reader)
        let inline = try #require(tree["a_directory/a_file"]).node, forked = try #require(tree["a_directory/another_file"]).node
        let text = Array(String(repeating: "APFS keeps this file compressed. ", count: 400).utf8)
        let other = Array(String(repeating: "In a resource fork, in 64 KiB blocks. ", count: 2000).utf8)
        func zlib(_ b: [UInt8]) throws -> [UInt8] { try #require(b.withUnsafeBytes { Codec.compressZlib($0, level: 9) }) }
        func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
        func header(_ type: Int, _ size: Int) -> [UInt8] { Array("fpmc".utf8) + le32(type) + le32(size) + le32(0) }
        // A resource fork holding one 'cmpf' resource: 0x100 of header, then the block table.
        let blocks = stride(from: 0, to: other.count, by: 65536).map { Array(other[$0..<min($0 + 65536, other.count)]) }
        let stored = try blocks.map(zlib)
        var fork = [0, 0, 0, 16] + [UInt8](repeating: 0, count: 12)
        fork += le32(0) + le32(blocks.count)
        var offset = 4 + 8 * blocks.count
        for s in stored { fork += le32(offset) + le32(s.count); offset += s.count }
        fork += stored.flatMap { $0 }

        let root = try #require(Self.objects(bytes, type: 2).first { bytes[$0 + 28] == 0xE && bytes[$0 + 16] == 3 })
        var records = Self.leafRecords(bytes, at: root)
        for (k, r) in records.enumerated() where r.key.prefix(8).elementsEqual(Self.le64(inline | 3 << 60)) || r.key.prefix(8).elementsEqual(Self.le64(forked | 3 << 60)) {
            records[k].value[68] |= 0x20  // UF_COMPRESSED
        }
        func xattr(_ node: UInt64, _ name: String, _ data: [UInt8]) -> (key: [UInt8], value: [UInt8]) {
            let n = Array(name.utf8) + [0]
            return (Self.le64(node | 4 << 60) + [UInt8(n.count), 0] + n, [2, 0, UInt8(data.count & 0xFF), UInt8(data.count >> 8)] + data)
        }
        // The fork in a free block, as data stream 5000: the xattr's j_xattr_dstream_t and one extent.
        let block = try #require(stride(from: 4096 * 200, to: bytes.count, by: 4096).first { bytes[$0..<($0 + 4096)].allSatisfy { $0 == 0 } })
        #expect(fork.count <= 4096)
        bytes.replaceSubrange(block..<(block + fork.count), with: fork)
        let stream: UInt64 = 5000
        var forkRecord = xattr(forked, "com.apple.ResourceFork", Self.le64(stream) + Self.le64(UInt64(fork.count)) + Self.le64(4096) + [UInt8](repeating: 0, count: 24))
        forkRecord.value[0] = 1  // XATTR_DATA_STREAM
        records += [xattr(inline, "com.apple.decmpfs", header(3, text.count) + (try zlib(text))),
                    xattr(forked, "com.apple.decmpfs", header(4, other.count)), forkRecord,
                    (Self.le64(stream | 8 << 60) + Self.le64(0), Self.le64(4096) + Self.le64(UInt64(block / 4096)) + Self.le64(0))]
        records.sort { a, b in
            let (ka, kb) = (a.key.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }, b.key.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            let (ta, tb) = ((ka & 0x0FFF_FFFF_FFFF_FFFF, ka >> 60), (kb & 0x0FFF_FFFF_FFFF_FFFF, kb >> 60))
            return ta != tb ? ta < tb : a.key.lexicographicallyPrecedes(b.key)
        }
        try Self.writeLeaf(&bytes, at: root, records)
        APFSChecksum.reseal(&bytes)

        let compressed = try Self.reader(bytes)
        for (node, want) in [(inline, text), (forked, other)] {
            let a = try compressed.attributes(of: node)
            #expect(a.size == UInt64(want.count))
            #expect(try Self.content(compressed, node, size: a.size) == want)
            // A read from the middle, across a 64 KiB block for the forked one.
            var piece = [UInt8](repeating: 0, count: 1000)
            let at = min(65000, want.count - 1000)
            let n = try piece.withUnsafeMutableBytes { try compressed.read(node, at: UInt64(at), into: $0) }
            #expect(n == 1000 && piece == Array(want[at..<(at + 1000)]))
            #expect(compressed.storedOffset(of: node, at: 0) == nil)
            #expect(try !compressed.extendedAttributeNames(of: node).contains { $0.contains("decmpfs") || $0.contains("ResourceFork") })
        }
        #expect(try compressed.extendedAttributeNames(of: inline) == ["user.myxattr"])
    }

    /// A case-sensitive volume keys directory records by name alone (j_drec_key_t: u16 length,
    /// name), not by a hash: the fixture's records rewritten so, its case-insensitive flag
    /// cleared, read as the same tree.
    @Test func caseSensitiveVolumesKeyNamesWithoutAHash() throws {
        var bytes = try Self.fixture()
        let plain = try Self.walk(try Self.reader(bytes))
        let root = try #require(Self.objects(bytes, type: 2).first { bytes[$0 + 28] == 0xE && bytes[$0 + 16] == 3 })
        var records = Self.leafRecords(bytes, at: root)
        var rewritten = 0
        for k in records.indices where records[k].key[7] >> 4 == 9 {
            let key = records[k].key
            let length = Int(key[8]) | Int(key[9] & 0x3) << 8
            records[k].key = Array(key[0..<8]) + [UInt8(length & 0xFF), UInt8(length >> 8)] + Array(key[12...])
            rewritten += 1
        }
        #expect(rewritten >= 9)
        records.sort { a, b in
            let (ka, kb) = (a.key.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }, b.key.prefix(8).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
            let (ta, tb) = ((ka & 0x0FFF_FFFF_FFFF_FFFF, ka >> 60), (kb & 0x0FFF_FFFF_FFFF_FFFF, kb >> 60))
            return ta != tb ? ta < tb : a.key.lexicographicallyPrecedes(b.key)
        }
        try Self.writeLeaf(&bytes, at: root, records)
        for at in Self.objects(bytes, type: 0xD) { bytes[at + 56] &= ~0x9 }
        APFSChecksum.reseal(&bytes)
        let tree = try Self.walk(try Self.reader(bytes))
        #expect(Set(tree.keys) == Set(plain.keys) && tree.count == 10)
        #expect(tree.mapValues(\.attributes) == plain.mapValues(\.attributes))
    }

    static func le64(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }

    /// A variable-size leaf's records (kvloc_t table of contents).
    static func leafRecords(_ b: [UInt8], at: Int) -> [(key: [UInt8], value: [UInt8])] {
        let tocOffset = le16(b, at + 40), tocLength = le16(b, at + 42)
        let keyStart = at + 56 + tocOffset + tocLength, valueEnd = at + 4096 - (b[at + 32] & 1 != 0 ? 40 : 0)
        return (0..<le16(b, at + 36)).map { i in
            let e = at + 56 + tocOffset + 8 * i
            let k = keyStart + le16(b, e), v = valueEnd - le16(b, e + 4)
            return (Array(b[k..<(k + le16(b, e + 2))]), Array(b[v..<(v + le16(b, e + 6))]))
        }
    }

    /// Lays the records out again: keys after the table of contents, values back from the end.
    static func writeLeaf(_ b: inout [UInt8], at: Int, _ records: [(key: [UInt8], value: [UInt8])]) throws {
        let tocLength = le16(b, at + 42)
        guard 8 * records.count <= tocLength else { throw TestFailure("\(records.count) records do not fit the table") }
        let keyStart = at + 56 + tocLength, valueEnd = at + 4096 - 40
        var keyAt = 0, valueAt = 0
        for (i, r) in records.enumerated() {
            let e = at + 56 + 8 * i
            valueAt += r.value.count
            guard keyStart + keyAt + r.key.count <= valueEnd - valueAt else { throw TestFailure("the records do not fit the node") }
            for (o, v) in [(0, keyAt), (2, r.key.count), (4, valueAt), (6, r.value.count)] { b[e + o] = UInt8(v & 0xFF); b[e + o + 1] = UInt8(v >> 8) }
            b.replaceSubrange((keyStart + keyAt)..<(keyStart + keyAt + r.key.count), with: r.key)
            b.replaceSubrange((valueEnd - valueAt)..<(valueEnd - valueAt + r.value.count), with: r.value)
            keyAt += r.key.count
        }
        b[at + 36] = UInt8(records.count & 0xFF); b[at + 37] = UInt8(records.count >> 8)
    }
}
