import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

/// `restore --incremental` and `compare` through the command line, on real ext4 disks: v1 made
/// by mkfs.ext4 from a folder, v2 the same disk after a mount changed, replaced and added
/// files. Targets holding v1 (a file, a loop device, a writable FUSE disk, and over HTTP from
/// nginx) must end up byte for byte v2 while fetching and writing only what differs.
@Suite(.serialized, .enabled(if: FilesystemImagingTests.enabled, "needs root, loop devices and mounts"))
struct IncrementalRestoreTests {
    /// v1 and v2 as raw disks and as scanned images (`--all-blocks`, so a restored disk is
    /// byte-identical to its raw disk, free blocks included).
    struct Versions {
        let dir = TemporaryDirectory()
        let v1: String, v2: String, image1: String, image2: String
        let size: UInt64 = 128 << 20

        /// `chunkSize`: the images' `--chunk-size`.
        init(chunkSize: String = "1M") throws {
            v1 = dir.file("v1.raw")
            v2 = dir.file("v2.raw")
            image1 = dir.file("v1.dmg")
            image2 = dir.file("v2.dmg")
            let files = dir.file("files"), mnt = dir.file("mnt")
            try Run.shell("""
                mkdir -p '\(files)/data' '\(files)/docs' '\(mnt)'
                for i in $(seq 1 32); do head -c 2M /dev/urandom > '\(files)/data/blob-'$i'.bin'; done
                for i in $(seq 1 20); do seq $i 3 60000 > '\(files)/docs/list-'$i'.txt'; done
                truncate -s \(size) '\(v1)'
                mkfs.ext4 -q -F -b 4096 -d '\(files)' '\(v1)'
                cp --sparse=always '\(v1)' '\(v2)'
                """)
            try Run.withPrivateMounts("""
                mount -o loop '\(v2)' '\(mnt)'
                for i in 3 11 27; do head -c 65536 /dev/urandom | dd of='\(mnt)/data/blob-'$i'.bin' bs=65536 seek=8 conv=notrunc status=none; done
                rm '\(mnt)/data/blob-20.bin'; sync
                head -c 2M /dev/urandom > '\(mnt)/data/blob-20.bin'
                head -c 1M /dev/urandom > '\(mnt)/data/new-1.bin'
                head -c 1M /dev/urandom > '\(mnt)/data/new-2.bin'
                seq 1 1000 >> '\(mnt)/docs/list-5.txt'
                umount '\(mnt)'
                """)
            for (raw, image) in [(v1, image1), (v2, image2)] {
                for args in [["create", "--source", raw, "--output", image, "--all-blocks", "--chunk-size", chunkSize], ["imagescan", "--source", image]] {
                    let out = try CLI.run(args)
                    guard out.status == 0 else { throw TestFailure("asr \(args[0]) failed: \(out.stderr)") }
                }
            }
        }

        /// A file holding v1, as a lab machine's disk would before the update.
        func targetHoldingV1(_ name: String) throws -> String {
            let path = dir.file(name)
            try Run.shell("cp --sparse=always '\(v1)' '\(path)'")
            return path
        }
    }

    /// What differs between two raw disks in `image`'s chunks, found by comparing their bytes
    /// (not through asr): chunks, and the stored bytes of those that have data.
    static func differences(_ image: String, old: String, new: String) throws -> (chunks: Int, dataChunks: Int, stored: UInt64, total: Int) {
        let udif = try UDIFImage(path: image)
        let a = try FileIO(path: old, flags: O_RDONLY), b = try FileIO(path: new, flags: O_RDONLY)
        let oldSize = try a.size()
        var chunks = 0, dataChunks = 0, stored: UInt64 = 0
        for c in udif.chunks {
            let theirs = c.diskOffset + c.length <= oldSize ? try a.read(at: c.diskOffset, count: Int(c.length)) : []
            if try theirs != b.read(at: c.diskOffset, count: Int(c.length)) {
                chunks += 1
                if c.type.hasStoredData {
                    dataChunks += 1
                    stored += c.storedLength
                }
            }
        }
        return (chunks, dataChunks, stored, udif.chunks.count)
    }

    /// The counts from the last line of an incremental restore.
    static func summary(_ stdout: String) -> (reused: Int, fetched: Int)? {
        guard let line = stdout.split(separator: "\n").last, line.hasPrefix("asr: restored "),
              let reused = line.firstMatch(of: /reused ([\d,]+) chunks?/), let fetched = line.firstMatch(of: /fetched ([\d,]+) chunks?/)
        else { return nil }
        func number(_ s: Substring) -> Int { Int(s.filter(\.isNumber)) ?? -1 }
        return (number(reused.1), number(fetched.1))
    }

    func restore(_ source: String, _ target: String, _ extra: [String] = ["--incremental"]) throws -> CLI.Output {
        try CLI.run(["restore", "--source", source, "--target", target, "--erase", "--noprompt"] + extra)
    }

    @Test func fileLoopDeviceAndFuseTargetsHoldingV1BecomeV2() throws {
        let f = try Versions()
        let want = try sha256(file: f.v2)
        let diff = try Self.differences(f.image2, old: f.v1, new: f.v2)
        #expect(diff.chunks > 0 && diff.chunks < diff.total / 4, "v2 differs from v1 in \(diff.chunks) of \(diff.total) chunks")

        // A file.
        let file = try f.targetHoldingV1("file.raw")
        let out = try restore(f.image2, file)
        #expect(out.status == 0, "\(out.stderr)")
        #expect(out.stdout.contains("\tComparing  ....10") && out.stdout.contains("\tVerifying  ....10"), "\(out.stdout)")
        #expect(try sha256(file: file) == want)
        let counts = try #require(Self.summary(out.stdout), "\(out.stdout)")
        #expect(counts.reused == diff.total - diff.chunks && counts.fetched == diff.dataChunks, "\(out.stdout)")

        // A loop device: what it wrote is counted by the kernel.
        let backing = try f.targetHoldingV1("loop.raw")
        let loop = try Run.shell("losetup -f --show '\(backing)'").trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Run.shell("losetup -d \(loop)") }
        let before = try Self.sectorsWritten(loop)
        let device = try restore(f.image2, loop)
        #expect(device.status == 0, "\(device.stderr)")
        #expect(try sha256(file: loop) == want)
        let written = try (Self.sectorsWritten(loop) - before) * 512
        #expect(written <= UInt64(diff.chunks) << 20 && written < f.size / 4, "\(written) bytes written to \(loop)")
        let deviceCounts = try #require(Self.summary(device.stdout), "\(device.stdout)")
        #expect(deviceCounts.reused > 0 && deviceCounts.fetched < diff.total)

        // A writable FUSE disk, which counts the bytes written to it.
        let fuse = try Mounted(writable: ["--target", f.dir.file("fuse-backing"), "--size", String(f.size)], in: f.dir)
        let full = try restore(f.image1, fuse.file("disk.img"), [])
        #expect(full.status == 0, "\(full.stderr)")
        let writtenBefore = try Self.bytesWritten(fuse)
        let incremental = try restore(f.image2, fuse.file("disk.img"))
        #expect(incremental.status == 0, "\(incremental.stderr)")
        #expect(try sha256(file: fuse.file("disk.img")) == want)
        let fuseWritten = try Self.bytesWritten(fuse) - writtenBefore
        #expect(fuseWritten <= UInt64(diff.chunks) << 20, "the FUSE disk had \(fuseWritten) bytes written")
        let fuseCounts = try #require(Self.summary(incremental.stdout), "\(incremental.stdout)")
        #expect(fuseCounts.reused > 0 && fuseCounts.fetched < diff.total)
        try fuse.unmount()
        #expect(try sha256(file: f.dir.file("fuse-backing")) == want)
    }

    /// Sectors the kernel has written to a block device (/sys/block/NAME/stat, field 7).
    static func sectorsWritten(_ device: String) throws -> UInt64 {
        let name = (device as NSString).lastPathComponent
        let fields = try String(contentsOfFile: "/sys/block/\(name)/stat", encoding: .utf8).split(separator: " ")
        return UInt64(fields[6]) ?? 0
    }

    static func bytesWritten(_ disk: Mounted) throws -> UInt64 {
        let status = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: disk.file("status.json")))) as? [String: Any]
        return UInt64(status?["bytesWritten"] as? Int ?? -1)
    }

    @Test func httpFetchesOnlyTheChunksThatDiffer() throws {
        let f = try Versions()
        let www = f.dir.file("www")
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: f.image2, toPath: www + "/v2.dmg")
        let nginx = try Nginx(serving: www)
        let target = try f.targetHoldingV1("h.raw")
        // Slowly, so that the requests in flight overlap and can be counted.
        let out = try restore(nginx.url("slow/v2.dmg"), target)
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: target) == sha256(file: f.v2))

        let diff = try Self.differences(f.image2, old: f.v1, new: f.v2)
        let image = try UDIFImage(path: f.image2)
        let metadata = fileSize(f.image2) - image.trailer.dataForkLength  // plist and trailer
        let sent = nginx.bytesSent(for: "/slow/v2.dmg")
        // Beyond the metadata: the 1-byte probe that learns the size and the 4-byte trailer sniff.
        #expect(sent >= diff.stored && sent <= diff.stored + metadata + 5,
                "nginx sent \(sent) bytes; the \(diff.dataChunks) chunks that differ store \(diff.stored), metadata \(metadata)")
        // Back-to-back chunks came in one request: fewer requests than chunks fetched (the
        // other four read the size, the trailer twice and the plist).
        #expect(nginx.requests(for: "/slow/v2.dmg") - 4 < diff.dataChunks, "\(nginx.requests(for: "/slow/v2.dmg")) requests")
        #expect(nginx.mostAtOnce(for: "/slow/v2.dmg") >= 3, "several requests in flight")
        let counts = try #require(Self.summary(out.stdout), "\(out.stdout)")
        #expect(counts.fetched == diff.dataChunks && counts.reused > 0)
    }

    @Test func garbageOrAnotherDiskIsNeverWronglyReused() throws {
        let f = try Versions()
        let want = try sha256(file: f.v2)
        let garbage = f.dir.file("garbage.raw")
        try Run.shell("head -c \(f.size) /dev/urandom > '\(garbage)'")
        let out = try restore(f.image2, garbage)
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: garbage) == want)
        #expect(Self.summary(out.stdout)?.reused == 0, "\(out.stdout)")

        // Another ext4 disk of other files: only what is really the same may be kept.
        let other = f.dir.file("other.raw"), files = f.dir.file("other-files")
        try Run.shell("""
            mkdir -p '\(files)'; for i in $(seq 1 20); do head -c 3M /dev/urandom > '\(files)/x-'$i; done
            truncate -s \(f.size) '\(other)'; mkfs.ext4 -q -F -b 4096 -d '\(files)' '\(other)'
            """)
        let again = try restore(f.image2, other)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try sha256(file: other) == want)

        // A shorter target and a missing one: what is not there is not held.
        let short = f.dir.file("short.raw")
        try Run.shell("head -c \(f.size / 2) '\(f.v1)' > '\(short)'")
        for target in [short, f.dir.file("missing.raw")] {
            let out = try restore(f.image2, target)
            #expect(out.status == 0, "\(out.stderr)")
            #expect(try sha256(file: target) == want)
        }
    }

    @Test func unscannedSourcesAreRefusedAndTheTargetIsUntouched() throws {
        let f = try Versions()
        let target = try f.targetHoldingV1("t.raw")
        let before = try sha256(file: target)
        let unscanned = f.dir.file("unscanned.dmg")
        #expect(try CLI.run(["create", "--source", f.v2, "--output", unscanned, "--all-blocks"]).status == 0)
        for (source, extra) in [(unscanned, []), (unscanned, ["--noverify"]), (f.v2, [])] {
            let out = try restore(source, target, ["--incremental"] + extra)
            #expect(out.status == 1 && out.stderrLines.count == 1 && out.stderr.contains("is not scanned")
                    && out.stderr.contains("asr imagescan"), "\(source) \(extra): \(out.stderr)")
        }
        let compare = try CLI.run(["compare", "--source", unscanned, "--target", target])
        #expect(compare.status == 1 && compare.stderrLines.count == 1 && compare.stderr.contains("is not scanned"), "\(compare.stderr)")
        #expect(try sha256(file: target) == before, "the target was not touched")
    }

    /// A room of machines holding last week's image: each client reads its target before it
    /// reports, so the server sends only the chunks that changed; with hdiutil's 1 MiB chunks
    /// and the smallest we write.
    @Test(.enabled(if: Lab.enabled, "needs root and network namespaces"), arguments: ["1M", "64K"])
    func multicastSendsOnlyTheChunksThatDiffer(chunkSize: String) throws {
        let f = try Versions(chunkSize: chunkSize)
        let net = Lab()
        let config = f.dir.file("cfg.plist")
        Lab.writeConfig(config, rate: 20_000_000, group: "239.77.0.1")
        let bed = try Testbed(hosts: ["server", "c1", "c2"])
        defer { bed.teardown() }
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image2, "--config", config], log: f.dir.file("server.log"))
        #expect(net.eventually(seconds: 30) { net.log(f.dir.file("server.log")).contains("waiting for clients") })
        let clients = try ["c1", "c2"].map { host in
            try bed.start(host, [CLI.binary, "restore", "--source", "asr://\(bed.address("server"))", "--target", f.targetHoldingV1("\(host).raw"),
                                 "--erase", "--noprompt", "--incremental", "--timeout", "30"], log: f.dir.file("\(host).log"))
        }
        let diff = try Self.differences(f.image2, old: f.v1, new: f.v2)
        let want = try sha256(file: f.v2)
        for (host, client) in zip(["c1", "c2"], clients) {
            #expect(net.wait(client), "\(host): \(net.log(f.dir.file("\(host).log")))\n\(net.log(f.dir.file("server.log")))")
            #expect(try sha256(file: f.dir.file("\(host).raw")) == want, "\(host)")
            let counts = try #require(Self.summary(net.log(f.dir.file("\(host).log"))), "\(net.log(f.dir.file("\(host).log")))")
            #expect(counts.reused == diff.total - diff.chunks && counts.fetched == diff.dataChunks)
        }
        server.terminate()
        #expect(net.wait(server, seconds: 10))
        let text = net.log(f.dir.file("server.log"))
        let record = Lab.ServerLog(text)
        let sent = try #require(record.finished.map(\.sent).max(), "\(text)")
        // Only chunks that differ travel: at most once for each client (once for both when they
        // report together; a client still reading its target when the stream starts joins it
        // late), plus about 2.3% of packet headers. The chunks that did not change store far more.
        let image = try UDIFImage(path: f.image2)
        let unchanged = image.chunks.reduce(UInt64(0)) { $0 + $1.storedLength } - diff.stored
        #expect(unchanged > 4 * diff.stored)
        #expect(sent >= diff.stored && Double(sent) <= Double(diff.stored) * 2 * 1.05,
                "the server sent \(sent) bytes; the \(diff.dataChunks) chunks that differ store \(diff.stored): \(text)")
        #expect(record.stopped == sent, "nothing was sent after the last client finished: \(text)")
    }

    @Test func compareCountsWhatDiffers() throws {
        let f = try Versions()
        let target = try f.targetHoldingV1("t.raw")
        let diff = try Self.differences(f.image2, old: f.v1, new: f.v2)
        let before = try sha256(file: target)

        let json = try CLI.run(["compare", "--source", f.image2, "--target", target, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        let counts = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.stdout)")
        #expect(counts["chunks"] as? Int == diff.total)
        #expect(counts["differentChunks"] as? Int == diff.chunks)
        #expect(counts["sameChunks"] as? Int == diff.total - diff.chunks)
        #expect(counts["fetchChunks"] as? Int == diff.dataChunks)
        #expect(counts["fetchStoredBytes"] as? Int == Int(diff.stored))
        #expect(counts["freeChunks"] as? Int == 0 && counts["diskBytes"] as? Int == Int(f.size))
        #expect(counts["unit"] as? String == "chunk" && counts["target"] as? String == target)

        let text = try CLI.run(["compare", "--source", f.image2, "--target", target])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("\tDifferent: \(diff.chunks) chunks ("), "\(text.stdout)")
        #expect(text.stdout.contains("\tSame: \(diff.total - diff.chunks) chunks ("), "\(text.stdout)")
        #expect(text.stdout.contains("in \(diff.chunks) of \(diff.total) chunks"), "\(text.stdout)")
        #expect(try sha256(file: target) == before, "compare writes nothing")

        // v1's image against v1: nothing differs; against a missing target: refused.
        let same = try CLI.run(["compare", "--source", f.image1, "--target", target, "--json"])
        #expect(same.status == 0 && same.stdout.contains("\"differentChunks\" : 0"), "\(same.stdout) \(same.stderr)")
        let missing = try CLI.run(["compare", "--source", f.image1, "--target", f.dir.file("nothing")])
        #expect(missing.status == 1 && missing.stderrLines.count == 1 && missing.stderr.contains("does not exist"), "\(missing.stderr)")
    }

    /// A plain HTTP restore killed with SIGKILL partway, then run again with --incremental:
    /// the same disk, and no more than 10% more fetched in all than one full restore. The
    /// killed run reads slowly, with several requests in flight.
    @Test func killedHTTPRestoreFinishesIncrementally() throws {
        let dir = TemporaryDirectory()
        let www = dir.file("www"), raw = dir.file("disk.raw")
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        // 224 MiB that does not compress and 32 MiB that does: the image stores about 230 MiB.
        try Run.shell("head -c 224M /dev/urandom > '\(raw)'; seq 1 4500000 > '\(dir.file("text"))'; head -c 32M '\(dir.file("text"))' >> '\(raw)'")
        for args in [["create", "--source", raw, "--output", www + "/disk.dmg"], ["imagescan", "--source", www + "/disk.dmg"]] {
            let out = try CLI.run(args)
            try #require(out.status == 0, "\(out.stderr)")
        }
        try FileManager.default.copyItem(atPath: www + "/disk.dmg", toPath: www + "/full.dmg")
        let nginx = try Nginx(serving: www)

        let full = try restore(nginx.url("full.dmg"), dir.file("full.raw"), [])
        #expect(full.status == 0, "\(full.stderr)")
        let target = dir.file("target.raw")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["restore", "--source", nginx.url("slow/disk.dmg"), "--target", target, "--erase", "--noprompt"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Killed once 48 MiB is on the target (eight 1 MiB requests a second: some 6 s in).
        let deadline = Date().addingTimeInterval(120)
        while process.isRunning, Date() < deadline, Self.allocated(target) < 48 << 20 { usleep(10_000) }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the restore was killed, not finished")
        let partial = Self.allocated(target)
        #expect(partial >= 48 << 20 && partial < 200 << 20, "\(partial) bytes were on the target when it was killed")

        let resumed = try restore(nginx.url("disk.dmg"), target)
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(try sha256(file: target) == sha256(file: raw))
        let counts = try #require(Self.summary(resumed.stdout), "\(resumed.stdout)")
        #expect(counts.reused >= 45 && counts.fetched > 0, "\(resumed.stdout)")

        nginx.settle()
        let one = nginx.bytesSent(for: "/full.dmg")
        let killed = nginx.bytesSent(for: "/slow/disk.dmg"), rest = nginx.bytesSent(for: "/disk.dmg")
        #expect(one > 200 << 20)
        #expect(Double(killed + rest) <= 1.1 * Double(one), "killed run \(killed) + resumed run \(rest) bytes; a full restore \(one)")
        let most = nginx.mostAtOnce(for: "/slow/disk.dmg")
        #expect(most >= 3, "at most \(most) requests at once")
    }

    /// Bytes a file has allocated on disk.
    static func allocated(_ path: String) -> UInt64 {
        var st = stat()
        return stat(path, &st) == 0 ? UInt64(st.st_blocks) * 512 : 0
    }
}
