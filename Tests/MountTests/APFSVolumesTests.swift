import Filesystems
import Foundation
import SystemSupport
import TestSupport
import Testing

/// An APFS container under `asr mount`'s volumes/: the fixture (../shared/fixtures/fs/apfs.raw)
/// as a bare raw container and wrapped in a UDIF image by `asr create`, compared with 7-Zip's
/// listing and extraction through the kernel (find, stat, getfattr, sha256); a damaged
/// container or volume is one log line and no directory.
@Suite(.enabled(if: Privileged.fuse, "needs root and /dev/fuse"))
struct APFSVolumesTests {
    /// 7-Zip's items by path ("path:stream" for alternate streams), fields by name.
    static func sevenZip(_ image: String) throws -> [String: [String: String]] {
        var items: [String: [String: String]] = [:]
        for fields in SevenZipListing.items(try Run.shell("7zz l -slt -sns '\(image)'")) {
            guard let p = fields["Path"], fields["Alternate Stream"] != nil else { continue }
            items[p] = fields
        }
        return items
    }

    @Test func fixtureContainerIsWhatSevenZipExtracts() throws {
        let raw = try Fixtures.filesystem("apfs.raw")
        let dir = TemporaryDirectory()
        let dmg = dir.file("apfs.dmg")
        let created = try CLI.run(["create", "--source", raw, "--output", dmg])
        #expect(created.status == 0, "\(created.stderr)")
        let seven = try Self.sevenZip(raw)
        let extracted = dir.file("7z")
        try Run.shell("7zz x -y -o'\(extracted)' '\(raw)' >/dev/null")
        let items = seven.filter { $0.value["Alternate Stream"] == "-" }
        let streams = seven.filter { $0.value["Alternate Stream"] == "+" }
        #expect(items.count == 10 && streams.count == 2)

        for image in [raw, dmg] {
            let m = try Mounted(image)
            defer { try? m.unmount() }
            #expect(try FileManager.default.contentsOfDirectory(atPath: m.file("volumes")) == ["0.1-apfs_test"], "\(image)")
            let volume = m.file("volumes/0.1-apfs_test")
            let ours = try Run.shell("cd '\(volume)' && find . -mindepth 1 -printf '%P\\t%y\\t%s\\t%m\\t%U\\t%T@\\t%l\\n'").split(separator: "\n").map {
                $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            }
            #expect(Set(ours.map { $0[0] }) == Set(items.keys), "\(image)")
            for f in ours {
                let (path, type, size, mode, uid, mtime, target) = (f[0], f[1], UInt64(f[2])!, f[3], f[4], f[5], f[6])
                let e = try #require(items[path], "\(path)")
                let sevenMode = e["Mode"] ?? ""
                #expect(String(sevenMode.first ?? "?") == (type == "f" ? "-" : type), "\(path)")
                #expect(mode == String(Self.permissions(sevenMode), radix: 8), "\(path): \(mode) \(sevenMode)")
                #expect(uid == e["User ID"], "\(path)")
                // find's %T@ has ten decimals; 7-Zip prints the same nanoseconds as a UTC date.
                let seconds = try #require(Int(mtime.prefix { $0 != "." }))
                let nanoseconds = String(mtime.split(separator: ".")[1].prefix(9))
                #expect(Self.utc(seconds) + "." + nanoseconds == e["Modified"], "\(path): \(mtime) \(e["Modified"] ?? "")")
                switch type {
                case "l":
                    #expect(target == e["Symbolic Link"], "\(path)")
                    #expect(size == UInt64(target.utf8.count))
                case "f":
                    #expect(size == UInt64(e["Size"] ?? ""), "\(path)")
                    #expect(try sha256(file: volume + "/" + path) == sha256(file: extracted + "/" + path), "\(path)")
                default:
                    #expect(type == "d")
                }
                // Alternate streams are the extended attributes, by their own names.
                let names = Set(streams.keys.filter { $0.hasPrefix(path + ":") }.map { "user." + $0.dropFirst(path.count + 1) })
                let attributes = try VolumesTests.extendedAttributes(volume + "/" + path)
                #expect(Set(attributes.keys) == names, "\(path)")
                for name in names {
                    let want = try [UInt8](Data(contentsOf: URL(fileURLWithPath: extracted + "/" + path + ":" + name.dropFirst(5))))
                    #expect(attributes[name] == want, "\(path) \(name)")
                }
            }
            #expect(try Run.shell("getfattr --only-values -n user.myxattr '\(volume)/a_directory/a_file'") == "My extended attribute")
            #expect(try Run.shell("getfattr --only-values -n user.com.apple.ResourceFork '\(volume)/a_directory/a_resourcefork'") == "My resource fork\n")
            #expect(try Run.shell("cat '\(volume)/a_link'") == (try Run.shell("cat '\(volume)/a_directory/another_file'")))
        }
    }

    static func permissions(_ mode: String) -> Int {
        mode.dropFirst().prefix(9).reduce(0) { v, c in v << 1 | (c == "-" ? 0 : 1) }
    }

    static func utc(_ seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        return String(format: "%04d-%02d-%02d %02d:%02d:%02d", parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec)
    }

    /// A container whose superblocks all fail their checksum, and one whose only volume is
    /// marked encrypted: the mount comes up, says why in one line, and volumes/ is empty.
    @Test(arguments: ["container", "volume"])
    func aDamagedContainerIsOneLineAndNoDirectory(_ damage: String) throws {
        let dir = TemporaryDirectory()
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try Fixtures.filesystem("apfs.raw"))))
        for at in stride(from: 0, to: bytes.count, by: 4096) where bytes[at..<(at + 8)].contains(where: { $0 != 0 }) {
            let type = Int(bytes[at + 24]) | Int(bytes[at + 25]) << 8
            if damage == "container", type == 1 { bytes[at + 100] ^= 0xFF }
            if damage == "volume", type == 0xD { bytes[at + 264] &= 0xFE }
        }
        if damage == "volume" { APFSChecksum.reseal(&bytes) }
        let raw = dir.file("damaged.raw")
        try Data(bytes).write(to: URL(fileURLWithPath: raw))
        let point = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let out = try CLI.run(["mount", raw, point], timeout: 120)
        defer { _ = try? CLI.run(["unmount", point]) }
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stderrLines.count == 1, "\(out.stderr)")
        let what = damage == "container" ? "partition 0 (APFS)" : "partition 0 volume 1 (APFS)"
        let why = damage == "container" ? "checksum" : "encrypted"
        #expect(out.stderr.hasPrefix("asr mount: \(raw): \(what) is not shown in volumes/: ") && out.stderr.contains(why), "\(out.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: point + "/volumes").isEmpty)
        #expect(try sha256(file: point + "/disk.img") == sha256(file: raw))
    }

    /// A container listing its volume in slots 1 and 3 and a missing one in slot 2: two
    /// directories named by slot, one log line for the other.
    @Test func volumesAreNamedByTheirSlot() throws {
        let dir = TemporaryDirectory()
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: try Fixtures.filesystem("apfs.raw"))))
        for at in stride(from: 0, to: bytes.count, by: 4096) where bytes[(at + 32)..<(at + 36)].elementsEqual("NXSB".utf8) {
            let oid = Array(bytes[(at + 184)..<(at + 192)])
            bytes[at + 180] = 3  // nx_max_file_systems: this small container allows one
            bytes.replaceSubrange((at + 192)..<(at + 200), with: [0x0F, 0x27, 0, 0, 0, 0, 0, 0])  // 9999
            bytes.replaceSubrange((at + 200)..<(at + 208), with: oid)
        }
        APFSChecksum.reseal(&bytes)
        let raw = dir.file("three.raw")
        try Data(bytes).write(to: URL(fileURLWithPath: raw))
        let point = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let out = try CLI.run(["mount", raw, point], timeout: 120)
        defer { _ = try? CLI.run(["unmount", point]) }
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stderrLines.count == 1 && out.stderr.hasPrefix("asr mount: \(raw): partition 0 volume 2 (APFS) is not shown in volumes/: "), "\(out.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: point + "/volumes").sorted() == ["0.1-apfs_test", "0.3-apfs_test"])
        #expect(try Run.shell("cat '\(point)/volumes/0.3-apfs_test/a_directory/another_file'") == (try Run.shell("cat '\(point)/volumes/0.1-apfs_test/a_link'")))
    }
}
