import SystemSupport
import Foundation
import enum ImageFS.MountRecord
import Synchronization
import TestSupport
import Testing
import UDIF

@Suite(.enabled(if: Privileged.fuse, "needs root and /dev/fuse"))
struct MountTests {
    @Test(arguments: Fixtures.decodable)
    func fixtureDiskPartitionsAndChecksums(_ fixture: Fixtures.Expected) throws {
        let m = try Mounted(fixture.path)
        #expect(try sha256(file: m.file("disk.img")) == fixture.sha256)
        #expect(fileSize(m.file("disk.img")) == fixture.size)
        let parts = try FileManager.default.contentsOfDirectory(atPath: m.file("partitions"))
        #expect(parts.count == 8)
        #expect(parts.reduce(0) { $0 + fileSize(m.file("partitions/\($1)")) } == fixture.size)
        #expect(parts.contains("4-Apple_HFS.img"))
        let check = try Run.process("/bin/sh", ["-c", "cd '\(m.point)' && sha256sum -c checksums.sha256"])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
        #expect(check.stdout.split(separator: "\n").count == 9)
        // The partitions are the disk's bytes, in order.
        let joined = try Run.shell("cd '\(m.file("partitions"))' && cat $(ls | sort -n) | sha256sum")
        #expect(joined.hasPrefix(fixture.sha256))
        let info = try CLI.run(["info", "--plist", "--source", fixture.path])
        #expect(try String(contentsOfFile: m.file("info.plist"), encoding: .utf8) == info.stdout)
        #expect(info.stdout.contains("<key>scanned</key>\n\t<false/>"))
        // The block map is one the real bmaptool reads; sizes in stat match the bytes read.
        for name in ["blockmap.bmap", "blockmap.json", "checksums.sha256", "info.plist"] {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: m.file(name)))
            #expect(UInt64(bytes.count) == fileSize(m.file(name)), "\(name)")
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: m.file("blockmap.json")))) as! [String: Any]
        #expect(json["diskSHA256"] as? String == fixture.sha256)
        let chunks = json["chunks"] as! [[String: Any]]
        #expect(chunks.allSatisfy { $0["sha256"] == nil }, "an unscanned image has no chunk checksums")
    }

    @Test func statTimesFollowTheImage() throws {
        let fixture = Fixtures.decodable[0]
        let m = try Mounted(fixture.path)
        let image = try FileManager.default.attributesOfItem(atPath: fixture.path)[.modificationDate] as! Date
        for name in ["disk.img", "info.plist", "partitions", "partitions/0-MBR.img"] {
            let date = try FileManager.default.attributesOfItem(atPath: m.file(name))[.modificationDate] as! Date
            #expect(abs(date.timeIntervalSince(image)) < 0.001, "\(name)")
        }
    }

    @Test func writesFailWithEROFS() throws {
        let m = try Mounted(Fixtures.decodable[0].path)
        for name in ["disk.img", "info.plist", "partitions/4-Apple_HFS.img"] {
            let fd = open(m.file(name), O_WRONLY)
            #expect(fd < 0 && errno == EROFS, "\(name)")
        }
        #expect(open(m.file("new"), O_WRONLY | O_CREAT, 0o644) < 0 && errno == EROFS)
        #expect(mkdir(m.file("dir"), 0o755) < 0 && errno == EROFS)
        #expect(unlink(m.file("disk.img")) < 0 && errno == EROFS)
        #expect(truncate(m.file("disk.img"), 0) < 0 && errno == EROFS)
    }

    @Test func scannedImageShowsStoredChunkChecksums() throws {
        let dir = TemporaryDirectory()
        let image = dir.file("scanned.dmg")
        try FileManager.default.copyItem(atPath: Fixtures.decodable[0].path, toPath: image)
        #expect(try CLI.run(["imagescan", "--source", image]).status == 0)
        let m = try Mounted(image)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: m.file("blockmap.json")))) as! [String: Any]
        #expect(json["scanned"] as? Bool == true)
        let chunks = json["chunks"] as! [[String: Any]]
        // Free space (ignore chunks) is not hashed: its chunks list no digest.
        #expect(chunks.allSatisfy { ($0["sha256"] as? String)?.count == ($0["type"] as? String == "ignore" ? nil : 64) })
        #expect(chunks.contains { $0["type"] as? String == "ignore" })
        #expect(try String(contentsOfFile: m.file("info.plist"), encoding: .utf8).contains("<key>scanned</key>\n\t<true/>"))
        let check = try Run.process("/bin/sh", ["-c", "cd '\(m.point)' && sha256sum -c --quiet checksums.sha256"])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
    }

    @Test func bmaptoolCopiesFromTheMount() throws {
        let dir = TemporaryDirectory()
        let fixture = Fixtures.decodable[0]
        let m = try Mounted(fixture.path, in: dir)
        let target = dir.file("target.raw")
        let out = try Run.process("/usr/bin/bmaptool", ["copy", "--bmap", m.file("blockmap.bmap"), m.file("disk.img"), target])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: target) == fixture.sha256)
    }

    /// A raw image and its .bmap mount too; the mount's block map lists the .bmap's ranges.
    @Test func rawImageWithItsBlockMap() throws {
        let dir = TemporaryDirectory()
        let fixture = Fixtures.decodable[0]
        let raw = dir.file("disk.raw")
        #expect(try CLI.run(["convert", "--source", fixture.path, "--format", "RAW", "--output", raw]).status == 0)
        #expect(try CLI.run(["imagescan", "--source", raw]).status == 0)
        let m = try Mounted(raw, in: dir)
        #expect(try sha256(file: m.file("disk.img")) == fixture.sha256)
        let ours = try String(contentsOfFile: raw + ".bmap", encoding: .utf8)
        let shown = try String(contentsOfFile: m.file("blockmap.bmap"), encoding: .utf8)
        let ranges = { (text: String) in text.split(separator: "\n").filter { $0.contains("<Range") } }
        #expect(ranges(ours) == ranges(shown))
        let check = try Run.process("/bin/sh", ["-c", "cd '\(m.point)' && sha256sum -c --quiet checksums.sha256"])
        #expect(check.status == 0, "\(check.stdout) \(check.stderr)")
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs loop devices"))
    func blockDeviceMounts() throws {
        let dir = TemporaryDirectory()
        let fixture = Fixtures.decodable[0]
        let raw = dir.file("disk.raw")
        #expect(try CLI.run(["convert", "--source", fixture.path, "--format", "RAW", "--output", raw]).status == 0)
        let loop = try Run.shell("losetup -r -f --show '\(raw)'").trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Run.shell("losetup -d \(loop)") }
        do {
            let m = try Mounted(loop, in: dir)
            #expect(try sha256(file: m.file("disk.img")) == fixture.sha256)
            #expect(try String(contentsOfFile: m.file("checksums.sha256"), encoding: .utf8).hasPrefix(fixture.sha256 + "  disk.img\n"))
        }
    }

    @Test func sixteenParallelRandomReaders() throws {
        let dir = TemporaryDirectory()
        let raw = dir.file("mixed.raw")
        // Random, compressible and zero stretches, so reads cross every kind of chunk.
        try Run.shell("""
            { head -c 7M /dev/urandom; head -c 5M /dev/zero; seq 1 900000; head -c 3M /dev/urandom; } > '\(raw)'
            truncate -s 24M '\(raw)'
            """)
        let image = dir.file("mixed.dmg")
        #expect(try CLI.run(["convert", "--source", raw, "--format", "UDZO", "--output", image]).status == 0)
        let m = try Mounted(image, in: dir)
        let expected = [UInt8](try Data(contentsOf: URL(fileURLWithPath: raw)))
        let size = expected.count
        let disk = m.file("disk.img")
        let mismatches = Locked(0)
        let reads = Locked(0)
        DispatchQueue.concurrentPerform(iterations: 16) { (reader: Int) -> Void in
            var rng = SeededRandom(seed: UInt64(reader) + 1)
            let fd = open(disk, O_RDONLY)
            guard fd >= 0 else { mismatches.withLock { $0 += 1 }; return }
            defer { close(fd) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            for _ in 0..<150 {
                let length = Int(rng.next() % UInt64(1 << 20)) + 1
                let offset = Int(rng.next() % UInt64(size))
                let n: Int = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, length, off_t(offset)) }
                let want = min(length, size - offset)
                if n != want || buffer[0..<want] != expected[offset..<(offset + want)] { mismatches.withLock { $0 += 1 } }
                reads.withLock { $0 += 1 }
            }
        }
        #expect(reads.withLock { $0 } == 16 * 150)
        #expect(mismatches.withLock { $0 } == 0)
    }

    @Test func sigtermUnmountsTheBackgroundProcess() throws {
        let m = try Mounted(Fixtures.decodable[0].path)
        #expect(Mounted.isMounted(m.point))
        let pid = try #require(m.processID)
        kill(pid, SIGTERM)
        waitForExit(pid)
        #expect(!isRunning(pid), "the mount process has ended")
        #expect(!Mounted.isMounted(m.point), "no stale mount")
    }

    @Test func unmountCommandEndsTheProcess() throws {
        let m = try Mounted(Fixtures.decodable[0].path)
        let pid = try #require(m.processID)
        let out = try CLI.run(["unmount", m.point])
        #expect(out.status == 0, "\(out.stderr)")
        waitForExit(pid)
        #expect(!isRunning(pid))
        #expect(!Mounted.isMounted(m.point))
        let again = try CLI.run(["unmount", m.point])
        #expect(again.status == 1 && again.stderrLines.count == 1 && again.stderr.hasPrefix("asr: cannot unmount"))
    }

    @Test func badInputFailsBeforeMounting() throws {
        let dir = TemporaryDirectory()
        let point = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let truncated = dir.file("truncated.dmg")
        let bytes = try Data(contentsOf: URL(fileURLWithPath: Fixtures.decodable[0].path))
        try bytes.prefix(bytes.count - 300).write(to: URL(fileURLWithPath: truncated))
        let corrupt = dir.file("corrupt.dmg")
        var damaged = bytes
        damaged[100] ^= 0xFF  // inside the first stored chunk
        try damaged.write(to: URL(fileURLWithPath: corrupt))
        let cases: [([String], String)] = [
            ([truncated, point], "truncated"),
            ([corrupt, point], "corrupt"),
            ([dir.file("missing.dmg"), point], "cannot open"),
            ([Fixtures.decodable[0].path, dir.file("no-such-dir")], "cannot mount"),
            (["-o", "rw", Fixtures.decodable[0].path, point], "read-only"),
            (["-o", "no_such_option", Fixtures.decodable[0].path, point], "no_such_option"),
        ]
        for (args, words) in cases {
            let out = try CLI.run(["mount"] + args, timeout: 60)
            #expect(out.status == 1 && out.stderrLines.count == 1, "\(args): \(out.stderr)")
            #expect(out.stderr.hasPrefix("asr: ") && out.stderr.contains(words), "\(args): \(out.stderr)")
            #expect(!Mounted.isMounted(point))
        }
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs loop devices"))
    func mountFsHelperShowsTheFolderItWasMadeFrom() throws {
        let dir = TemporaryDirectory()
        let tree = dir.file("tree")
        try SampleTree.make(at: tree, fatSafe: false)
        let image = dir.file("tree.dmg")
        #expect(try CLI.run(["create", "--srcfolder", tree, "--output", image]).status == 0)
        let fs = dir.file("fs")
        try FileManager.default.createDirectory(atPath: fs, withIntermediateDirectories: true)
        let helper = repositoryRoot + "/mount-helpers/asr-mount-fs"
        let out = try Run.process("/usr/bin/env", ["ASR=\(CLI.binary)", helper, image, fs], timeout: 120)
        #expect(out.status == 0, "\(out.stderr)")
        // This mount's own loop device and what it reads: other tests attach and detach loop
        // devices meanwhile, so counting all of them says nothing about this one.
        let loop = try Run.shell("findmnt -n -o SOURCE '\(fs)'").trimmingCharacters(in: .whitespacesAndNewlines)
        // Its backing file by device and inode: the image mount is detached, so its path is not
        // told in full.
        let backing = try Run.shell("losetup '\(loop)'").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(loop.hasPrefix("/dev/loop") && backing.hasSuffix("/disk.img)"), "\(loop) \(backing)")
        // The helper's image mount is at a mktemp directory named asr-mount-fs.XXXXXX.
        let pid = MountRecord.running(mountPointContaining: "/asr-mount-fs.").first
        do {
            defer { _ = try? Run.shell("umount '\(fs)'") }
            let diff = try Run.process("/usr/bin/diff", ["-r", "--no-dereference", "--exclude=lost+found", tree, fs])
            #expect(diff.status == 0, "diff -r found: \(diff.stdout) \(diff.stderr)")
        }
        // Unmounting the filesystem releases the loop device and the image mount behind it.
        if let pid { waitForExit(pid) }
        #expect(pid.map { !isRunning($0) } ?? false, "the image mount's process has ended")
        // Detached, or attached since by someone else to another file.
        let now = (try? Run.shell("losetup '\(loop)' 2>/dev/null"))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        #expect(now != backing, "\(loop) still reads \(now)")
        #expect(!Mounted.isMounted(fs))
    }

    /// What another user may do with a mount: it shows its image file's owner and at most that
    /// file's mode, so `allow_other` opens nothing the file keeps closed; and a setuid-root
    /// program inside an image's filesystem mounted by asr-mount-fs runs without root.
    @Test(.enabled(if: Privileged.loopDevices, "needs loop devices"))
    func otherUsersGetNoMoreThanTheImageFileAllows() throws {
        let dir = TemporaryDirectory()
        try Run.shell("chmod 0755 '\(dir.path)'")  // so that nobody can reach the mount points at all
        let tree = dir.file("tree")
        try Run.shell("mkdir -p '\(tree)' && cp /usr/bin/id '\(tree)/id' && chmod 4755 '\(tree)/id' && echo text > '\(tree)/note.txt'")
        let image = dir.file("tree.dmg")
        #expect(try CLI.run(["create", "--srcfolder", tree, "--output", image]).status == 0)
        func asNobody(_ command: String) throws -> CLI.Output {
            try Run.process("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", "--", "/bin/sh", "-c", command])
        }
        for mode in ["0644", "0600"] {
            try Run.shell("chmod \(mode) '\(image)'")
            let mount = try Mounted(image, options: ["-o", "allow_other"], in: dir)
            defer { try? mount.unmount() }
            let read = try asNobody("head -c 16 '\(mount.file("disk.img"))' > /dev/null")
            #expect((read.status == 0) == (mode == "0644"), "mode \(mode): \(read.stderr)")
            let attributes = try FileManager.default.attributesOfItem(atPath: mount.file("disk.img"))
            #expect(attributes[.ownerAccountID] as? Int == 0 && attributes[.posixPermissions] as? Int == (mode == "0644" ? 0o444 : 0o400))
        }

        try Run.shell("chmod 0644 '\(image)'")
        let fs = dir.file("fs")
        try FileManager.default.createDirectory(atPath: fs, withIntermediateDirectories: true)
        let out = try Run.process("/usr/bin/env", ["ASR=\(CLI.binary)", repositoryRoot + "/mount-helpers/asr-mount-fs", image, fs], timeout: 120)
        #expect(out.status == 0, "\(out.stderr)")
        defer { _ = try? Run.shell("umount '\(fs)'") }
        let program = try FileManager.default.attributesOfItem(atPath: fs + "/id")
        #expect(program[.ownerAccountID] as? Int == 0 && (program[.posixPermissions] as? Int ?? 0) & 0o4000 != 0, "setuid root inside")
        let id = try asNobody("'\(fs)/id' -u")
        #expect(id.status == 0 && id.stdout == "65534\n", "nosuid: \(id.stdout) \(id.stderr)")
    }

    /// mount(8) finds mount.asr for `-t asr`, and for an fstab line (options passed through).
    @Test func mountHelperForMountAndFstab() throws {
        let dir = TemporaryDirectory()
        let fixture = Fixtures.decodable[0]
        let installed = "/usr/sbin/mount.asr"
        let ours = repositoryRoot + "/mount-helpers/mount.asr"
        let preexisting = FileManager.default.fileExists(atPath: installed)
        if !preexisting { try FileManager.default.createSymbolicLink(atPath: installed, withDestinationPath: ours) }
        defer { if !preexisting { try? FileManager.default.removeItem(atPath: installed) } }
        let point = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let env = ["ASR=\(CLI.binary)"]
        var out = try Run.process("/usr/bin/env", env + ["mount", "-t", "asr", "-o", "ro,allow_other", fixture.path, point])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: point + "/disk.img") == fixture.sha256)
        #expect(try Run.shell("findmnt -n -o FSTYPE,OPTIONS '\(point)'").contains("fuse.asr"))
        #expect(try Run.shell("findmnt -n -o OPTIONS '\(point)'").contains("allow_other"))
        out = try Run.process("/bin/umount", [point])
        #expect(out.status == 0, "\(out.stderr)")
        let fstab = dir.file("fstab")
        try "\(fixture.path) \(point) asr ro,noauto,nofail,x-systemd.automount,noverify 0 0\n".write(toFile: fstab, atomically: true, encoding: .utf8)
        out = try Run.process("/usr/bin/env", env + ["mount", "-T", fstab, point])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: point + "/disk.img") == fixture.sha256)
        #expect(try String(contentsOfFile: point + "/info.plist", encoding: .utf8).contains("<key>checksumsVerified</key>\n\t<false/>"))
        _ = try Run.process("/bin/umount", [point])
        #expect(!Mounted.isMounted(point))
    }
}

/// xorshift64*: the same reads on every run.
struct SeededRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed &* 0x9E37_79B9_7F4A_7C15 | 1 }
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}
