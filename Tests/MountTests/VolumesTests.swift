import Foundation
import SystemSupport
import TestSupport
import Testing

/// `volumes/` in a real `asr mount`: each filesystem of the image as a read-only tree, compared
/// with the folder it was made from (ext4) and with independent readers (7-Zip) for HFS+.
@Suite(.enabled(if: Privileged.fuse, "needs root and /dev/fuse"))
struct VolumesTests {
    /// An awkward tree: spaces, unicode, deep directories, empty and sparse files, symlinks
    /// (a long target too), hard links, a fifo, odd modes, other owners, extended attributes.
    static func makeAwkwardTree(at root: String) throws {
        try SampleTree.make(at: root, fatSafe: false)
        try Run.shell("""
            cd '\(root)'
            mkdir -p 'deep/1/2/3/4/5/6/7/8/9/10/11/12'
            printf 'bottom\\n' > 'deep/1/2/3/4/5/6/7/8/9/10/11/12/bottom.txt'
            truncate -s 20M sparse.bin
            printf 'middle' | dd of=sparse.bin bs=1 seek=9000000 conv=notrunc status=none
            ln -s "$(printf 'x%.0s' $(seq 1 700))" long-target-link
            printf 'linked\\n' > hard-a
            ln hard-a hard-b
            ln hard-a 'a/hard c'
            mkfifo fifo
            printf 'odd\\n' > odd-mode && chmod 4751 odd-mode
            mkdir sticky && chmod 1733 sticky
            printf 'owned\\n' > owned && chown 1234:5678 owned
            printf 'nfc\\n' > "$(printf 'caf\\303\\251')" && printf 'nfd\\n' > "$(printf 'cafe\\314\\201')"
            chown -h 4321:8765 a/abs-link
            setfattr -n user.color -v blue 'a/name with spaces.txt'
            setfattr -n user.binary -v 0x00ff10 owned
            setfattr -n user.dir -v yes sticky
            touch -h -d '2001-02-03 04:05:06.123456789' a/abs-link
            touch -d '1999-12-31 23:59:59' 'a/empty-file'
            """)
    }

    /// One line per path: type and mode, owner, size (not for directories, whose size is the
    /// filesystem's own), link count (not for directories: lost+found adds one at the root),
    /// mtime in seconds (not the root's), link target.
    static func listing(_ root: String) throws -> String {
        try Run.shell("cd '\(root)' && find . -path ./lost+found -prune -o -printf '%p|%M|%U|%G|%y|%s|%n|%T@|%l\\n' | LC_ALL=C sort")
            .split(separator: "\n").filter { !$0.hasPrefix("./lost+found|") }.map { line in
                var f = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
                if f[4] == "d" { f[5] = "-"; f[6] = "-" }
                f[7] = String(f[7].prefix { $0 != "." })
                // mke2fs adds lost+found to the root after copying its times.
                if f[0] == "." { f[7] = "-" }
                return f.joined(separator: "|")
            }.joined(separator: "\n")
    }

    @Test func ext4FromAFolderShowsTheFolder() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try Self.makeAwkwardTree(at: tree)
        let image = dir.file("tree.dmg")
        let made = try CLI.run(["create", "--srcfolder", tree, "--fs", "ext4", "--volname", "Awkward/Tree", "--output", image])
        #expect(made.status == 0, "\(made.stderr)")
        let m = try Mounted(image)
        defer { try? m.unmount() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: m.file("volumes")) == ["0-Awkward:Tree"])
        let volume = m.file("volumes/0-Awkward:Tree")
        let diff = try Run.process("/usr/bin/diff", ["-r", "--no-dereference", "--exclude=lost+found", tree, volume])
        // diff cannot compare fifos' content; it says so and that is all it may say.
        let complaints = diff.stdout.split(separator: "\n").filter { !$0.hasSuffix("is a fifo while file \(volume)/fifo is a fifo") }
        #expect(complaints.isEmpty, "diff -r: \(diff.stdout) \(diff.stderr)")
        let (want, got) = (try Self.listing(tree), try Self.listing(volume))
        #expect(want == got, "only in the folder: \(Set(want.split(separator: "\n")).subtracting(got.split(separator: "\n"))); only in volumes/: \(Set(got.split(separator: "\n")).subtracting(want.split(separator: "\n")))")
        // Hard links share one inode; the three names say 3.
        let inodes = try Run.shell("cd '\(volume)' && stat -c '%i %h' hard-a hard-b 'a/hard c'").split(separator: "\n")
        #expect(Set(inodes).count == 1 && inodes.first?.hasSuffix(" 3") == true, "\(inodes)")
        let times = try Run.shell("stat -c '%X %Y %Z' '\(volume)/owned'").split(separator: " ")
        #expect(times.count == 3 && times.allSatisfy { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 1_700_000_000 })
        // Extended attributes under their own names.
        let attributes = try Run.shell("cd '\(volume)' && getfattr -d -e hex -m - 'a/name with spaces.txt' owned sticky")
        #expect(attributes.contains("user.color=0x626c7565"))
        #expect(attributes.contains("user.binary=0x00ff10"))
        #expect(attributes.contains("user.dir=0x796573"))
        // Read-only, like the rest of the mount.
        let write = try Run.process("/bin/sh", ["-c", "echo x >> '\(volume)/owned'"])
        #expect(write.status != 0 && write.stderr.contains("Read-only"), "\(write.stderr)")
        let setattr = try Run.process("/usr/bin/setfattr", ["-n", "user.new", "-v", "1", volume + "/owned"])
        #expect(setattr.status != 0)
    }

    /// 7-Zip's view of an image's HFS+ volume: `7zz l -slt -sns` entries by path inside the
    /// volume (alternate streams as "path:stream"), and its extraction.
    struct SevenZip {
        struct Entry {
            var isFolder: Bool
            var size: UInt64
            var mode: String
        }
        var entries: [String: Entry] = [:]
        var streams: [String: UInt64] = [:]
        let extracted: String

        init(_ image: String, volume: String, in dir: TemporaryDirectory) throws {
            extracted = dir.file("7z")
            try Run.shell("7zz x -y -o'\(extracted)' '\(image)' >/dev/null")
            // A name ending in "\r" would join its line to the next (Swift's "\r\n" is one Character).
            let listing = try Run.shell("7zz l -slt -sns '\(image)'").replacingOccurrences(of: "\r", with: "\\r")
            for fields in SevenZipListing.items(listing) {
                guard let path = fields["Path"], path.hasPrefix(volume + "/") else { continue }
                let inside = String(path.dropFirst(volume.count + 1))
                if fields["Alternate Stream"] == "+" {
                    streams[inside] = UInt64(fields["Size"] ?? "") ?? 0
                } else {
                    entries[inside] = Entry(isFolder: fields["Folder"] == "+", size: UInt64(fields["Size"] ?? "") ?? 0, mode: fields["Mode"] ?? "")
                }
            }
            guard !entries.isEmpty else { throw TestFailure("7zz listed nothing in \(volume)") }
        }
    }

    /// sleuthkit's `fls -r -p`: each path's inode (an HFS+ catalog node ID), hard links resolved.
    static func sleuthkitInodes(_ partition: String) throws -> [String: UInt64] {
        var found: [String: UInt64] = [:]
        for line in try Run.shell("fls -r -p '\(partition)'").split(separator: "\n") {
            guard let tab = line.firstIndex(of: "\t"), let colon = line[..<tab].lastIndex(of: ":"),
                  let space = line[..<colon].lastIndex(of: " "), let inode = UInt64(line[line.index(after: space)..<colon]) else { continue }
            found[String(line[line.index(after: tab)...])] = inode
        }
        return found
    }

    /// Every extended attribute of `path` (not following a symlink), as getfattr reads them.
    static func extendedAttributes(_ path: String) throws -> [String: [UInt8]] {
        var found: [String: [UInt8]] = [:]
        let out = try Run.process("/usr/bin/getfattr", ["-h", "--absolute-names", "-d", "-m", "-", "-e", "hex", path])
        for line in out.stdout.split(separator: "\n") where !line.hasPrefix("#") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            let hex = Array(line[line.index(eq, offsetBy: 3)...].utf8)
            found[String(line[..<eq])] = stride(from: 0, to: hex.count - 1, by: 2).map { UInt8(String(decoding: hex[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
        }
        return found
    }

    /// Every fixture's HFS+ volume under volumes/ is 7-Zip's tree: names, types, sizes, link
    /// targets, every file's SHA-256 and every alternate stream as an extended attribute.
    /// 7-Zip shows what macOS hides (the private directories) and a hard link as its empty
    /// link record, and writes ":" in a name as "_"; sleuthkit resolves the hard links (its
    /// inode numbers are the catalog node IDs, as ours are).
    @Test(arguments: Fixtures.all)
    func hfsFixtureIsWhatSevenZipExtracts(_ fixture: Fixtures.Expected) throws {
        let dir = TemporaryDirectory()
        let m = try Mounted(fixture.path)
        defer { try? m.unmount() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: m.file("volumes")) == ["4-hfsplus_test"])
        let volume = m.file("volumes/4-hfsplus_test")
        let seven = try SevenZip(fixture.path, volume: "hfsplus_test", in: dir)
        let tsk = try Self.sleuthkitInodes(m.file("partitions/4-Apple_HFS.img"))
        let hidden = ["[HFS+ Private Data]", ".HFS+ Private Directory Data"]
        let expected = seven.entries.filter { path, _ in !hidden.contains { path.hasPrefix($0) } }

        let ours = try Run.shell("cd '\(volume)' && find . -mindepth 1 -printf '%P\\t%y\\t%s\\t%n\\t%i\\t%l\\n'").split(separator: "\n").map {
            $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        }
        // Names compared as bytes: the fixture has NFC and NFD spellings of one name.
        let ourNames = Set(ours.map { Array($0[0].replacingOccurrences(of: ":", with: "_").utf8) }), sevenNames = Set(expected.keys.map { Array($0.utf8) })
        #expect(ourNames == sevenNames, "only ours: \(ourNames.subtracting(sevenNames).map { String(decoding: $0, as: UTF8.self) }), only 7-Zip's: \(sevenNames.subtracting(ourNames).map { String(decoding: $0, as: UTF8.self) })")
        var hardLinks = 0
        for f in ours {
            let (path, type, size, links, inode, target) = (f[0], f[1], UInt64(f[2])!, Int(f[3])!, UInt64(f[4])!, f[5])
            let sevenPath = path.replacingOccurrences(of: ":", with: "_")
            guard let e = expected[sevenPath] else { continue }
            #expect(tsk[path] == inode & ((1 << 40) - 1), "\(path): inode \(inode), sleuthkit \(String(describing: tsk[path]))")
            switch type {
            case "d":
                #expect(e.isFolder, "\(path)")
            case "l":
                #expect(e.mode.hasPrefix("l") && e.size == size, "\(path)")
                // 7-Zip puts its output folder before an absolute target.
                let extractedTarget = try FileManager.default.destinationOfSymbolicLink(atPath: seven.extracted + "/hfsplus_test/" + sevenPath)
                #expect(target == (target.hasPrefix("/") ? String(extractedTarget.dropFirst(seven.extracted.count)) : extractedTarget), "\(path)")
            default:
                #expect(type == "f" && !e.isFolder, "\(path)")
                var source = seven.extracted + "/hfsplus_test/" + sevenPath
                if links > 1 {
                    // The content is the indirect node file sleuthkit gives the same inode.
                    hardLinks += 1
                    #expect(e.size == 0)
                    let node = try #require(tsk.first { $0.key.hasPrefix("^^^^HFS+ Private Data/iNode") && $0.value == tsk[path] }, "\(path)")
                    source = seven.extracted + "/hfsplus_test/[HFS+ Private Data]/" + node.key.split(separator: "/").last!
                    #expect(seven.entries["[HFS+ Private Data]/" + node.key.split(separator: "/").last!]?.size == size)
                } else {
                    #expect(e.size == size, "\(path)")
                }
                #expect(try sha256(file: volume + "/" + path) == sha256(file: source), "\(path)")
            }
            // Alternate streams are extended attributes: the resource fork by Apple's name.
            let streams = seven.streams.keys.filter { $0.hasPrefix(sevenPath + ":") }.map { String($0.dropFirst(sevenPath.count + 1)) }
            let names = Set(streams.map { $0 == "rsrc" ? "user.com.apple.ResourceFork" : "user." + $0 })
            let attributes = try Self.extendedAttributes(volume + "/" + path)
            #expect(Set(attributes.keys).subtracting(["user.com.apple.FinderInfo"]) == names, "\(path)")
            for stream in streams {
                let want = try [UInt8](Data(contentsOf: URL(fileURLWithPath: seven.extracted + "/hfsplus_test/" + sevenPath + ":" + stream)))
                let name = stream == "rsrc" ? "user.com.apple.ResourceFork" : "user." + stream
                #expect(attributes[name] == want, "\(path) \(name)")
            }
        }
        #expect(hardLinks == 2, "file_hardlink1 and testdir1/testfile1")
        #expect(seven.streams.count == 4)
        // getfattr, as a user reads them.
        let fork = try Run.shell("getfattr --only-values -n user.com.apple.ResourceFork '\(volume)/testdir1/resourcefork1'")
        #expect(fork == "My resource fork\n")
        let attribute = try Run.shell("getfattr --only-values -n user.myxattr1 '\(volume)/testdir1/xattr1'")
        #expect(attribute == "My 1st extended attribute")
        // What macOS hides stays hidden, also from a direct lookup.
        for name in ["\u{0}\u{0}\u{0}\u{0}HFS+ Private Data", ".HFS+ Private Directory Data\r", ".journal"] {
            #expect(!FileManager.default.fileExists(atPath: volume + "/" + name.replacingOccurrences(of: "\u{0}", with: "")))
        }
        #expect(!FileManager.default.fileExists(atPath: volume + "/.HFS+ Private Directory Data\r"))
    }

    /// A user who is not root mounts an image, lists and reads its volume, and unmounts with
    /// fusermount3. With /dev/fuse at the kernel's 0600 (no udev here) the mount fails with one
    /// line saying what to do; the test sets 0666 as udev would and puts back what it found.
    @Test func aUserMountsReadsAndUnmounts() throws {
        let dir = TemporaryDirectory()
        try Run.shell("chmod 0755 '\(dir.path)'")
        // Everything nobody needs is in this folder: the checkout may be where nobody cannot go.
        let asr = dir.file("asr"), image = dir.file("image.dmg"), point = dir.file("mnt")
        try Run.shell("""
            cp '\(CLI.binary)' '\(asr)' && chmod 0755 '\(asr)'
            cp '\(Fixtures.all[0].path)' '\(image)' && chmod 0644 '\(image)'
            mkdir '\(point)' && chown 65534:65534 '\(point)'
            """)
        func asNobody(_ command: String) throws -> CLI.Output {
            try Run.process("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", command], timeout: 120)
        }
        var st = stat()
        guard stat("/dev/fuse", &st) == 0 else { throw TestFailure("no /dev/fuse") }
        let found = st.st_mode & 0o7777
        defer {
            chmod("/dev/fuse", found)
            if Mounted.isMounted(point) { _ = try? Run.process("/usr/bin/fusermount3", ["-u", "-z", point]) }
        }
        chmod("/dev/fuse", 0o600)
        let refused = try asNobody("'\(asr)' mount '\(image)' '\(point)'")
        #expect(refused.status == 1 && refused.stderrLines.count == 1, "\(refused.stderr)")
        #expect(refused.stderr.contains("failed to open /dev/fuse") && refused.stderr.contains("chmod 0666 /dev/fuse"), "\(refused.stderr)")

        chmod("/dev/fuse", 0o666)
        let mounted = try asNobody("'\(asr)' mount '\(image)' '\(point)'")
        #expect(mounted.status == 0, "\(mounted.stderr)")
        let volume = point + "/volumes/4-hfsplus_test"
        let read = try asNobody("""
            ls '\(volume)' | wc -l && cat '\(volume)/file_hardlink1' && readlink '\(volume)/file_symboliclink1' \
              && getfattr --only-values -n user.myxattr1 '\(volume)/testdir1/xattr1' && echo && sha256sum < '\(point)/disk.img'
            """)
        #expect(read.status == 0, "\(read.stderr)")
        #expect(read.stdout == "12\nKeramics\n/Volumes/hfsplus_test/testdir1/testfile1\nMy 1st extended attribute\n\(Fixtures.all[0].sha256)  -\n")
        let unmounted = try asNobody("fusermount3 -u '\(point)'")
        #expect(unmounted.status == 0, "\(unmounted.stderr)")
        #expect(!Mounted.isMounted(point))
    }

    /// A raw disk whose HFS+ catalog has a looping leaf chain: asr mount says so in one line
    /// and mounts; volumes/ is empty and the rest of the mount reads as ever.
    @Test func aDamagedVolumeIsOneLineAndNoDirectory() throws {
        let dir = TemporaryDirectory()
        let fixture = Fixtures.all[0]
        let raw = dir.file("damaged.img")
        do {
            let m = try Mounted(fixture.path)
            defer { try? m.unmount() }
            try FileManager.default.copyItem(atPath: m.file("disk.img"), toPath: raw)
        }
        var disk = try [UInt8](Data(contentsOf: URL(fileURLWithPath: raw)))
        let partition = 40 * 512
        let catalog = HFSCatalogLayout(Array(disk[partition...]))
        let leaf = partition + catalog.node(catalog.firstLeaf)
        for k in 0..<4 { disk[leaf + k] = UInt8(truncatingIfNeeded: catalog.firstLeaf >> (24 - 8 * k)) }
        try Data(disk).write(to: URL(fileURLWithPath: raw))

        let point = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let out = try CLI.run(["mount", raw, point], timeout: 120)
        defer { _ = try? CLI.run(["unmount", point]) }
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stderrLines.count == 1, "\(out.stderr)")
        #expect(out.stderr.hasPrefix("asr mount: \(raw): partition 4 (HFS+) is not shown in volumes/: ") && out.stderr.contains("loops"), "\(out.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: point + "/volumes").isEmpty)
        #expect(try sha256(file: point + "/disk.img") == sha256(file: raw))
        #expect(try FileManager.default.contentsOfDirectory(atPath: point + "/partitions").contains("4-Apple_HFS.img"))
    }

    /// FAT32 from a folder: the folder's names (long names, unicode) and bytes, and 7-Zip's
    /// listing of the image: paths, types, sizes and modification times (FAT keeps 2 s steps).
    @Test func fat32FromAFolderShowsTheFolder() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try SampleTree.make(at: tree, fatSafe: true)
        let image = dir.file("fat.dmg")
        let made = try CLI.run(["create", "--srcfolder", tree, "--fs", "fat32", "--volname", "lab fat", "--output", image])
        #expect(made.status == 0, "\(made.stderr)")
        let m = try Mounted(image)
        defer { try? m.unmount() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: m.file("volumes")) == ["0-LAB FAT"])
        let volume = m.file("volumes/0-LAB FAT")
        let diff = try Run.process("/usr/bin/diff", ["-r", tree, volume])
        #expect(diff.status == 0, "diff -r: \(diff.stdout) \(diff.stderr)")
        // 7-Zip's listing, "path|type|size|mtime" a line; ours the same from find.
        var seven: [String] = []
        // 7-Zip prints 8.3 names in the OEM code page, which is not UTF-8: those lines go.
        for f in SevenZipListing.items(try Run.shell("7zz l -slt '\(image)' | grep -av '^Short Name = '")) {
            guard let path = f["Path"], let modified = f["Modified"], f["Folder"] != nil else { continue }
            let folder = f["Folder"] == "+"
            seven.append("\(path)|\(folder ? "d" : "f")|\(folder ? "-" : f["Size"] ?? "?")|\(modified.prefix(19))")
        }
        let ours = try Run.shell("cd '\(volume)' && TZ=UTC find . -mindepth 1 -printf '%P|%y|%s|%TY-%Tm-%Td %TH:%TM:%.2TS\\n'")
            .split(separator: "\n").map { line -> String in
                var f = line.split(separator: "|", omittingEmptySubsequences: false).map(String.init)
                if f[1] == "d" { f[2] = "-" }
                return f.joined(separator: "|")
            }
        #expect(Set(ours) == Set(seven), "only ours: \(Set(ours).subtracting(seven)); only 7-Zip's: \(Set(seven).subtracting(ours))")
        #expect(ours.count > 10)
        // Times are the folder's, to FAT's 2 s.
        let times = try Run.shell("cd '\(tree)' && find . -type f -printf '%P|%T@\\n'").split(separator: "\n")
        for line in times {
            let f = line.split(separator: "|").map(String.init)
            let shown = try FileManager.default.attributesOfItem(atPath: volume + "/" + f[0])[.modificationDate] as! Date
            #expect(abs(shown.timeIntervalSince1970 - Double(f[1])!) < 2.01, "\(f[0])")
        }
    }
}
