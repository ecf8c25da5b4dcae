import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

/// Images with free space (ignore runs), made here with the writer, through the command line:
/// scan, verify, info, restore to files, devices, over HTTP and multicast, and block maps.
@Suite(.serialized) struct FreeSpaceCLITests {
    /// A 40 MiB disk without a map: text everywhere but two free runs of noise, which the
    /// image leaves out. Returns the image (scanned), the disk and its free runs.
    struct Fixture {
        let dir = TemporaryDirectory()
        let disk: String
        let image: String
        let free: [Range<UInt64>] = [(4 << 20)..<(20 << 20) + 1536, (28 << 20) + 4096..<(36 << 20)]
        let size: UInt64 = 40 << 20

        init() throws {
            disk = dir.file("disk.raw")
            image = dir.file("disk.dmg")
            try Run.shell("seq 1 5000000 > '\(disk)'; truncate -s \(size) '\(disk)'")
            for run in free {
                try Run.shell("head -c \(run.count) /dev/urandom | dd of='\(disk)' bs=512 seek=\(run.lowerBound / 512) conv=notrunc status=none")
            }
            var writer = ImageWriter()
            writer.ignore = free
            let usage = UsageData(records: [.init(partition: 0, firstSector: 0, sectorCount: size / 512, finding: .mapped,
                                                  filesystem: "testfs", method: "a map the test wrote",
                                                  reason: "", allocatedBytes: size - freeBytes, ignoredBytes: freeBytes)])
            writer.extraResources = usage.resources()
            let file = try FileIO(path: disk, flags: O_RDONLY)
            try writer.write(from: FileSource(file: file, byteCount: size), to: image)
            let scanned = try CLI.run(["imagescan", "--source", image])
            guard scanned.status == 0 else { throw TestFailure(scanned.stderr) }
        }

        var freeBytes: UInt64 { free.reduce(0) { $0 + UInt64($1.count) } }

        /// The disk as a target that held `fill` before should read after a restore.
        func expected(keeping fill: UInt8?) throws -> [UInt8] {
            var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: disk)))
            for run in free { bytes.replaceSubrange(Int(run.lowerBound)..<Int(run.upperBound), with: repeatElement(fill ?? 0, count: run.count)) }
            return bytes
        }

        /// A file of `size` bytes of 0xFF.
        func filledTarget(_ name: String) throws -> String {
            let path = dir.file(name)
            try Run.shell("head -c \(size) /dev/zero | tr '\\0' '\\377' > '\(path)'")
            return path
        }
    }

    static func bytes(_ path: String) throws -> [UInt8] { try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) }

    @Test func scanVerifyInfoAndRestoreKeepFreeSpace() throws {
        let f = try Fixture()
        #expect(try CLI.run(["verify", "--source", f.image]).status == 0)
        let info = try CLI.run(["info", "--source", f.image])
        #expect(info.status == 0, "\(info.stderr)")
        #expect(info.stdout.contains("Filesystems:\n\tdisk (testfs): 16.0 MiB of 40.0 MiB in use (found from a map the test wrote)"), "\(info.stdout)")
        #expect(info.stdout.contains("\tignore: 2 chunks, \(f.freeBytes) bytes on disk, 0 stored"), "\(info.stdout)")

        let target = try f.filledTarget("t.raw")
        let restored = try CLI.run(["restore", "--source", f.image, "--target", target, "--erase", "--noprompt"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(restored.stdout.contains("\tVerifying  ....10"))
        #expect(try Self.bytes(target) == f.expected(keeping: 0xFF), "free space keeps what the target held")

        let erased = try f.filledTarget("e.raw")
        let out = try CLI.run(["restore", "--source", f.image, "--target", erased, "--erase", "--noprompt", "--erase-free"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try Self.bytes(erased) == f.expected(keeping: nil), "--erase-free zeroes it")
    }

    @Test func httpRestoreFetchesNoFreeSpace() throws {
        let f = try Fixture()
        let www = f.dir.file("www")
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: f.image, toPath: www + "/disk.dmg")
        let nginx = try Nginx(serving: www)
        let target = try f.filledTarget("h.raw")
        let out = try CLI.run(["restore", "--source", nginx.url("disk.dmg"), "--target", target, "--erase", "--noprompt"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try Self.bytes(target) == f.expected(keeping: 0xFF))
        // The image is all that is fetched, at most once: free space has nothing stored.
        let sent = nginx.bytesSent(for: "/disk.dmg")
        #expect(sent > 0 && sent <= fileSize(f.image) + 4096, "nginx sent \(sent) bytes of a \(fileSize(f.image))-byte image")
        #expect(sent < f.size - f.freeBytes)
    }

    @Test func rawCopyHasAnUnmappedBlockMapThatBmaptoolFollows() throws {
        let f = try Fixture()
        let raw = f.dir.file("copy.img")
        #expect(try CLI.run(["convert", "--source", f.image, "--format", "RAW", "--output", raw]).status == 0)
        #expect(try CLI.run(["imagescan", "--source", raw]).status == 0)
        let copy = f.dir.file("bmap-copy.img")
        try Run.shell("bmaptool -q copy --bmap '\(raw).bmap' '\(raw)' '\(copy)'")
        #expect(try Self.bytes(copy) == f.expected(keeping: nil))
        // bmaptool wrote nothing in the free runs: they are holes in its copy.
        let file = try FileIO(path: copy, flags: O_RDONLY)
        for run in f.free {
            let inner = (run.lowerBound + 4096)..<(run.upperBound - 4096)
            #expect(!file.dataExtents(upTo: f.size).contains { ($0.offset..<($0.offset + $0.length)).overlaps(inner) }, "\(run)")
        }
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func deviceKeepsFreeSpaceUnlessErased() throws {
        let f = try Fixture()
        let backing = try f.filledTarget("dev.raw")
        let loop = try Run.shell("losetup -f --show '\(backing)'").trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Run.shell("losetup -d \(loop)") }
        let out = try CLI.run(["restore", "--source", f.image, "--target", loop, "--erase", "--noprompt"])
        #expect(out.status == 0, "\(out.stderr)")
        try Run.shell("sync")
        #expect(try Self.bytes(backing) == f.expected(keeping: 0xFF))
        let erased = try CLI.run(["restore", "--source", f.image, "--target", loop, "--erase", "--noprompt", "--erase-free"])
        #expect(erased.status == 0, "\(erased.stderr)")
        try Run.shell("sync")
        #expect(try Self.bytes(backing) == f.expected(keeping: nil))
    }

    @Test(.enabled(if: Lab.enabled, "needs root and network namespaces"))
    func multicastSkipsFreeSpace() throws {
        let f = try Fixture()
        let config = f.dir.file("cfg.plist")
        Lab.writeConfig(config, rate: 30_000_000, group: "239.77.0.3", extra: "<key>DNS Service Discovery</key><false/>")
        let bed = try Testbed(hosts: ["server", "keep", "erase"])
        defer { bed.teardown() }
        let lab = Lab()
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", config], log: f.dir.file("server.log"))
        usleep(300_000)
        let keep = try f.filledTarget("keep.raw"), erase = try f.filledTarget("erase.raw")
        let clients = [
            try bed.start("keep", [CLI.binary, "restore", "--source", "asr://\(bed.address("server"))", "--target", keep,
                                   "--erase", "--noprompt", "--timeout", "30"], log: f.dir.file("keep.log")),
            try bed.start("erase", [CLI.binary, "restore", "--source", "asr://\(bed.address("server"))", "--target", erase,
                                    "--erase", "--noprompt", "--erase-free", "--timeout", "30"], log: f.dir.file("erase.log")),
        ]
        for (c, name) in zip(clients, ["keep", "erase"]) { #expect(lab.wait(c), "\(name): \(lab.log(f.dir.file("\(name).log")))") }
        #expect(try Self.bytes(keep) == f.expected(keeping: 0xFF))
        #expect(try Self.bytes(erase) == f.expected(keeping: nil))
        server.terminate()
        #expect(lab.wait(server, seconds: 10))
        let text = lab.log(f.dir.file("server.log"))
        #expect(text.contains("skipping \(f.freeBytes) bytes of free space"), "\(text)")
        let numbers = Lab.ServerLog(text)
        let stored = try #require(numbers.stored)
        let sent = try #require(numbers.stopped)
        // A copy per client at most (they join at different moments), never the free space:
        // its noise alone is ten times the stored bytes.
        #expect(sent <= stored * 3 && sent < f.freeBytes, "sent \(sent), stored \(stored): \(text)")
    }
}

/// A file read as a disk.
struct FileSource: ByteSource {
    let file: FileIO
    let byteCount: UInt64
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws { try file.read(into: buffer, at: offset) }
}
