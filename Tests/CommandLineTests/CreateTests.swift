import Foundation
import TestSupport
import Testing

/// `create` from folders, loop devices and mount points, checked through real mounts.
@Suite(.serialized) struct CreateTests {
    static func diffAgainstImage(_ image: String, source: String, fsType: String, in dir: TemporaryDirectory) throws {
        let raw = dir.file("fs.raw")
        let out = try CLI.run(["convert", "--source", image, "--format", "RAW", "--output", raw])
        #expect(out.status == 0, "\(out.stderr)")
        let mnt = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try Run.shell("mount -t \(fsType) -o ro,loop '\(raw)' '\(mnt)'")
        defer { _ = try? Run.shell("umount '\(mnt)'") }
        let diff = try Run.process("/usr/bin/diff", ["-r", "--no-dereference", "--exclude=lost+found", source, mnt])
        #expect(diff.status == 0, "diff -r found: \(diff.stdout) \(diff.stderr)")
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func srcfolderExt4HoldsIdenticalFiles() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try SampleTree.make(at: tree, fatSafe: false)
        let out = try CLI.run(["create", "--srcfolder", tree, "--output", dir.file("tree.dmg"), "--volname", "TREE"])
        #expect(out.status == 0, "\(out.stderr)")
        // No progress when piped: the line about the filesystem's use, then the result.
        let lines = out.stdout.split(separator: "\n")
        #expect(lines.count == 2 && lines[0].hasPrefix("\tdisk") && lines[1] == "asr: created image \"\(dir.file("tree.dmg"))\"",
                "\(out.stdout)")
        try Self.diffAgainstImage(dir.file("tree.dmg"), source: tree, fsType: "ext4", in: dir)
        let label = try Run.shell("e2label '\(dir.file("fs.raw"))'")
        #expect(label == "TREE\n")
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func srcfolderFat32HoldsIdenticalFiles() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try SampleTree.make(at: tree, fatSafe: true)
        let out = try CLI.run(["create", "--srcfolder", tree, "--output", dir.file("tree.dmg"), "--fs", "fat32", "--volname", "fatvol"])
        #expect(out.status == 0, "\(out.stderr)")
        // This kernel has no vfat driver, so the FAT is checked by fsck.fat and read back by mtools.
        let raw = dir.file("fs.raw")
        #expect(try CLI.run(["convert", "--source", dir.file("tree.dmg"), "--format", "RAW", "--output", raw]).status == 0)
        try Run.shell("fsck.fat -n '\(raw)' >/dev/null")
        let label = try Run.shell("MTOOLS_SKIP_CHECK=1 mlabel -s -i '\(raw)' ::")
        #expect(label.contains("FATVOL"), "\(label)")
        try Run.shell("mkdir '\(dir.file("out"))'; MTOOLS_SKIP_CHECK=1 LC_ALL=C.UTF-8 mcopy -s -n -i '\(raw)' '::/*' '\(dir.file("out"))/'")
        let diff = try Run.process("/usr/bin/diff", ["-r", tree, dir.file("out")])
        #expect(diff.status == 0, "diff -r found: \(diff.stdout) \(diff.stderr)")
    }

    @Test func fat32RefusesWhatFATCannotHold() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try SampleTree.make(at: tree, fatSafe: false)
        let out = try CLI.run(["create", "--srcfolder", tree, "--output", dir.file("tree.dmg"), "--fs", "fat32"])
        #expect(out.status == 1)
        #expect(out.stderrLines.count == 1, "\(out.stderr)")
        #expect(out.stderr.contains("FAT32 cannot hold"), "\(out.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("tree.dmg")))
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func fixedSizeThatIsTooSmallFailsClearly() throws {
        let dir = TemporaryDirectory()
        try Run.shell("mkdir '\(dir.file("tree"))'; head -c 20M /dev/urandom > '\(dir.file("tree/big"))'")
        let out = try CLI.run(["create", "--srcfolder", dir.file("tree"), "--output", dir.file("t.dmg"), "--size", "8M"])
        #expect(out.status == 1)
        #expect(out.stderrLines.count == 1, "\(out.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("t.dmg")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".") }.isEmpty)
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func fromLoopDeviceAndMountPoint() throws {
        let dir = TemporaryDirectory()
        let backing = dir.file("fs.raw")
        try Run.shell("truncate -s 40M '\(backing)'; mkdir -p '\(dir.file("src"))'; seq 1 100000 > '\(dir.file("src/numbers"))'")
        try Run.shell("mke2fs -q -F -t ext4 -d '\(dir.file("src"))' '\(backing)'")
        let loop = try Run.shell("losetup -f --show '\(backing)'").trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Run.shell("losetup -d \(loop)") }

        let fromDevice = try CLI.run(["create", "--source", loop, "--output", dir.file("dev.dmg")])
        #expect(fromDevice.status == 0, "\(fromDevice.stderr)")
        let back = try CLI.run(["convert", "--source", dir.file("dev.dmg"), "--format", "RAW", "--output", dir.file("dev.raw")])
        #expect(back.status == 0)
        #expect(try sha256(file: dir.file("dev.raw")) == sha256(file: backing))

        let mnt = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try Run.shell("mount \(loop) '\(mnt)'")
        defer { _ = try? Run.shell("umount '\(mnt)'") }
        let refused = try CLI.run(["create", "--source", mnt, "--output", dir.file("mnt.dmg")])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("read-write"), "\(refused.stderr)")
        #expect(!FileManager.default.fileExists(atPath: dir.file("mnt.dmg")))

        try Run.shell("mount -o remount,ro '\(mnt)'")
        let fromMount = try CLI.run(["create", "--source", mnt, "--output", dir.file("mnt.dmg")])
        #expect(fromMount.status == 0, "\(fromMount.stderr)")
        let raw = try CLI.run(["convert", "--source", dir.file("mnt.dmg"), "--format", "RAW", "--output", dir.file("mnt.raw")])
        #expect(raw.status == 0)
        #expect(try sha256(file: dir.file("mnt.raw")) == sha256(file: loop))
    }

    @Test func helpAndVersion() throws {
        for args in [["--help"], ["create", "--help"], ["info", "--help"], ["convert", "--help"], ["--version"]] {
            let out = try CLI.run(args)
            #expect(out.status == 0, "\(args)")
            #expect(!out.stdout.isEmpty)
        }
    }
}
