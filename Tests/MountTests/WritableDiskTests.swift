import SystemSupport
import Foundation
import Synchronization
import TestSupport
import Testing
import UDIF

/// Writable FUSE disks (targets and overlays) used as restore targets and as sources of every
/// command, next to images, raw files and devices.
@Suite(.serialized, .enabled(if: Privileged.fuse && Lab.enabled, "needs root, /dev/fuse and namespaces"))
struct WritableDiskTests {
    func ranges(_ bmap: String) throws -> [Substring] {
        try String(contentsOfFile: bmap, encoding: .utf8).split(separator: "\n").filter { $0.contains("<Range") }
    }

    func expectOK(_ args: [String], _ note: String = "", sourceLocation: SourceLocation = #_sourceLocation) throws {
        let out = try CLI.run(args, timeout: 300)
        #expect(out.status == 0, "\(note) asr \(args.joined(separator: " ")): \(out.stderr)", sourceLocation: sourceLocation)
    }

    func serve(_ source: String, extra: [String] = [], config: String, bed: Testbed, into target: String, log: String) throws -> Bool {
        let server = try bed.start("server", [CLI.binary, "server", "--source", source, "--config", config] + extra, log: log + ".server")
        defer { server.terminate(); server.waitUntilExit() }
        let client = try Lab().restore(bed, "c1", from: "server", into: target, log: log)
        return Lab().wait(client)
    }

    @Test func unicastAndMulticastRestoresIntoWritableTargets() throws {
        let f = try Lab.Fixture()
        let raw = f.dir.file("disk-one.raw")
        try expectOK(["imagescan", "--source", raw, "--bmap", f.dir.file("raw.bmap")])
        let expected = try ranges(f.dir.file("raw.bmap"))

        let unicast = try Mounted(writable: ["--target", f.dir.file("backing1"), "--size", "12M"], in: f.dir)
        try expectOK(["restore", "--source", f.image, "--target", unicast.file("disk.img"), "--erase", "--noprompt"])
        #expect(try sha256(file: unicast.file("disk.img")) == f.sha)
        #expect(try ranges(unicast.file("written.bmap")) == expected, "written.bmap lists exactly the non-zero blocks")
        let status = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: unicast.file("status.json")))) as! [String: Any]
        #expect(status["size"] as? Int == 12 << 20 && (status["bytesWritten"] as? Int ?? 0) > 0)

        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let multicast = try Mounted(writable: ["--target", f.dir.file("backing2"), "--size", "12M"], in: f.dir)
        #expect(try serve(f.image, config: f.config, bed: bed, into: multicast.file("disk.img"), log: f.dir.file("c1.log")),
                "\((try? String(contentsOfFile: f.dir.file("c1.log"), encoding: .utf8)) ?? "")")
        #expect(try sha256(file: multicast.file("disk.img")) == f.sha)
        #expect(try ranges(multicast.file("written.bmap")) == expected)

        try unicast.unmount()
        try multicast.unmount()
        #expect(try sha256(file: f.dir.file("backing1")) == f.sha, "the backing file is the disk")
        #expect(try sha256(file: f.dir.file("backing2")) == f.sha)
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs loop devices"))
    func folderToImageToTargetToSavedImageAndBack() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try SampleTree.make(at: tree, fatSafe: false)
        let image = dir.file("tree.dmg")
        try expectOK(["create", "--srcfolder", tree, "--output", image])
        let view = try Mounted(image, in: dir)
        let size = fileSize(view.file("disk.img"))
        let saved = dir.file("saved.dmg")
        let target = try Mounted(writable: ["--target", dir.file("backing"), "--size", String(size), "--save-as", saved], in: dir)
        // The read-only mount's disk.img is a raw source with its block map beside it.
        try expectOK(["restore", "--source", view.file("disk.img"), "--target", target.file("disk.img"), "--erase", "--noprompt"])
        try target.unmount()
        #expect(try CLI.run(["info", "--source", saved]).stdout.contains("Scanned: yes"))
        try expectOK(["verify", "--source", saved])

        let fs = dir.file("fs")
        try FileManager.default.createDirectory(atPath: fs, withIntermediateDirectories: true)
        let out = try Run.process("/usr/bin/env", ["ASR=\(CLI.binary)", repositoryRoot + "/mount-helpers/asr-mount-fs", saved, fs])
        #expect(out.status == 0, "\(out.stderr)")
        defer { _ = try? Run.shell("umount '\(fs)'") }
        let diff = try Run.process("/usr/bin/diff", ["-r", "--no-dereference", "--exclude=lost+found", tree, fs])
        #expect(diff.status == 0, "diff -r found: \(diff.stdout) \(diff.stderr)")
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs loop devices"))
    func overlayKeepsChangesAndNeverTouchesTheImage() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try Run.shell("mkdir -p '\(tree)/etc' && echo original > '\(tree)/etc/motd' && head -c 3M /dev/urandom > '\(tree)/blob'")
        let image = dir.file("base.dmg")
        try expectOK(["create", "--srcfolder", tree, "--output", image])
        let before = try sha256(file: image)
        let cow = dir.file("changes.cow")
        let fs = dir.file("fs")
        try FileManager.default.createDirectory(atPath: fs, withIntermediateDirectories: true)

        do {
            let overlay = try Mounted(writable: ["--overlay", image, "--cow", cow], in: dir)
            try Run.withPrivateMounts("mount -o loop '\(overlay.file("disk.img"))' '\(fs)' && echo added > '\(fs)/etc/new.txt' && umount '\(fs)'")
            try expectOK(["create", "--source", overlay.file("disk.img"), "--output", dir.file("changed.dmg")])
            try overlay.unmount()
        }
        // Mounted again with the same changes, the disk is the changed one.
        do {
            let again = try Mounted(writable: ["--overlay", image, "--cow", cow], in: dir)
            #expect(try Run.shell("mount -o ro,loop '\(again.file("disk.img"))' '\(fs)' && cat '\(fs)/etc/new.txt'; umount '\(fs)'") == "added\n")
            try again.unmount()
        }
        try expectOK(["restore", "--source", dir.file("changed.dmg"), "--target", dir.file("restored.raw"), "--erase", "--noprompt", "--noverify"])
        #expect(try Run.shell("mount -o ro,loop '\(dir.file("restored.raw"))' '\(fs)' && cat '\(fs)/etc/new.txt' '\(fs)/etc/motd'; umount '\(fs)'")
                == "added\noriginal\n")
        #expect(try sha256(file: image) == before, "the image is never written")
    }

    /// Every command, with each kind of source: the same disk comes out of each.
    @Test(.enabled(if: Privileged.loopDevices, "needs loop devices"))
    func everyCommandTakesEveryKindOfSource() throws {
        let f = try Lab.Fixture()
        let raw = f.dir.file("disk-one.raw")
        try expectOK(["imagescan", "--source", raw])
        let loop = try Run.shell("losetup -r -f --show '\(raw)'").trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Run.shell("losetup -d \(loop)") }
        let view = try Mounted(f.image, in: f.dir)
        let writable = try Mounted(writable: ["--target", f.dir.file("backing"), "--size", "12M"], in: f.dir)
        try expectOK(["restore", "--source", f.image, "--target", writable.file("disk.img"), "--erase", "--noprompt"])
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }

        let deviceMap = f.dir.file("device.bmap")
        let sources: [(name: String, path: String, scanArgs: [String], mapArgs: [String])] = [
            ("UDIF", f.image, [], []),
            ("raw", raw, [], []),
            ("block device", loop, ["--bmap", deviceMap], ["--bmap", deviceMap]),
            ("mounted disk.img", view.file("disk.img"), [], []),
            ("writable disk.img", writable.file("disk.img"), [], []),
        ]
        for (n, s) in sources.enumerated() {
            let out = try CLI.run(["info", "--source", s.path])
            #expect(out.status == 0 && out.stdout.contains("Disk size: \(12 << 20) bytes"), "\(s.name): \(out.stderr)")
            try expectOK(["imagescan", "--source", s.path] + s.scanArgs, s.name)
            try expectOK(["verify", "--source", s.path] + s.mapArgs, s.name)
            let image = f.dir.file("from-\(n).dmg")
            try expectOK(["create", "--source", s.path, "--output", image], s.name)
            try expectOK(["convert", "--source", image, "--format", "RAW", "--output", f.dir.file("from-\(n).raw")], s.name)
            #expect(try sha256(file: f.dir.file("from-\(n).raw")) == f.sha, "create from \(s.name)")
            try expectOK(["restore", "--source", s.path, "--target", f.dir.file("restored-\(n).raw"), "--erase", "--noprompt"] + s.mapArgs, s.name)
            #expect(try sha256(file: f.dir.file("restored-\(n).raw")) == f.sha, "restore from \(s.name)")
            let target = f.dir.file("multicast-\(n).raw")
            #expect(try serve(s.path, config: f.config, bed: bed, into: target, log: f.dir.file("mc-\(n).log")), "server from \(s.name)")
            #expect(try sha256(file: target) == f.sha, "multicast from \(s.name)")
        }
    }

    @Test func writesPastTheEndFailAndTheSizeIsFixed() throws {
        let dir = TemporaryDirectory()
        let disk = try Mounted(writable: ["--target", dir.file("backing"), "--size", "1M"], in: dir)
        let fd = open(disk.file("disk.img"), O_WRONLY)
        defer { close(fd) }
        var block = [UInt8](repeating: 7, count: 4096)
        #expect(pwrite(fd, &block, 4096, off_t(1 << 20)) == -1 && errno == ENOSPC)
        #expect(pwrite(fd, &block, 4096, off_t((1 << 20) - 1000)) == 1000, "a write across the end is cut short")
        #expect(ftruncate(fd, 2 << 20) == -1)
        #expect(fileSize(disk.file("disk.img")) == 1 << 20)
        let other = try CLI.run(["mount", "--target", dir.file("backing"), "--size", "2M", dir.file("x")])
        #expect(other.status == 1 && other.stderrLines.count == 1 && other.stderr.contains("1048576"), "\(other.stderr)")
    }

    /// The mount process dies mid-write: whatever fsync acknowledged is in the backing file.
    @Test func sigkillKeepsEveryAcknowledgedWrite() throws {
        let dir = TemporaryDirectory()
        let backing = dir.file("backing")
        let disk = try Mounted(writable: ["--target", backing, "--size", "64M"], in: dir)
        let pid = try #require(disk.processID)
        let fd = open(disk.file("disk.img"), O_WRONLY)
        defer { close(fd) }
        let acknowledged = Locked(0)
        let killer = Thread { usleep(300_000); kill(pid, SIGKILL) }
        killer.start()
        var block = [UInt8](repeating: 0, count: 65536)
        for i in 0..<1024 {
            for j in stride(from: 0, to: block.count, by: 8) { block[j] = UInt8(truncatingIfNeeded: i &* 31 &+ j / 8) | 1 }
            guard pwrite(fd, &block, block.count, off_t(i * block.count)) == block.count, fsync(fd) == 0 else { break }
            acknowledged.withLock { $0 = i + 1 }
        }
        waitForExit(pid)
        _ = try Run.process("/usr/bin/fusermount3", ["-u", disk.point])
        let done = acknowledged.withLock { $0 }
        #expect(done > 0 && done < 1024, "the kill landed mid-write (\(done) blocks acknowledged)")
        let file = try FileIO(path: backing, flags: O_RDONLY)
        for i in 0..<done {
            let bytes = try file.read(at: UInt64(i * 65536), count: 65536)
            let ok = stride(from: 0, to: 65536, by: 8).allSatisfy { bytes[$0] == UInt8(truncatingIfNeeded: i &* 31 &+ $0 / 8) | 1 }
            #expect(ok, "block \(i) was acknowledged but is not in the backing file")
            if !ok { break }
        }
    }
}
