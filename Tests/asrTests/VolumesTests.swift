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
        try CreateTests.makeTree(at: root, fatSafe: false)
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
}
