import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

/// imagescan, verify and restore, through the command line, on real files, devices and nginx.
@Suite struct ScanRestoreTests {
    /// A scanned image of a partitioned test disk, and that disk's SHA-256.
    static func scannedImage(in dir: TemporaryDirectory, format: String = "UDZO") throws -> (image: String, disk: String, sha: String) {
        let disk = dir.file("disk.raw")
        try InteropTests.makeDisk(.gpt, at: disk)
        let image = dir.file("disk.dmg")
        let created = try CLI.run(["create", "--source", disk, "--output", image, "--format", format])
        guard created.status == 0 else { throw TestFailure(created.stderr) }
        let scanned = try CLI.run(["imagescan", "--source", image])
        guard scanned.status == 0 else { throw TestFailure(scanned.stderr) }
        return (image, disk, try sha256(file: disk))
    }

    @Test func imagescanThenVerifyOurImage() throws {
        let dir = TemporaryDirectory()
        let (image, _, _) = try Self.scannedImage(in: dir)
        let again = try CLI.run(["imagescan", "--source", image])
        #expect(again.stdout.contains("already scanned"))
        let verified = try CLI.run(["verify", "--source", image])
        #expect(verified.status == 0, "\(verified.stderr)")
        #expect(verified.stdout.contains("\tVerifying  ....10....20"))
        let check = try Run.process("/usr/bin/env", ["python3", Fixtures.checker, image])
        #expect(check.status == 0, "\(check.stdout)")
    }

    @Test(arguments: Fixtures.decodable.map(\.name))
    func unorderedFixtureBecomesOrderedAndKeepsItsDisk(_ name: String) throws {
        let fixture = try #require(Fixtures.all.first { $0.name == name })
        let dir = TemporaryDirectory()
        let image = dir.file(name)
        try FileManager.default.copyItem(atPath: fixture.path, toPath: image)
        try Run.shell("chmod u+w '\(image)'")
        let scanned = try CLI.run(["imagescan", "--source", image])
        #expect(scanned.status == 0, "\(scanned.stderr)")
        #expect(scanned.stdout.contains("Block checksum: ....10....20....30....40....50....60....70....80....90....100"))
        #expect(scanned.stdout.contains("asr: successfully scanned image \"\(image)\""))
        let info = try CLI.run(["info", "--source", image, "--json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
        #expect(json["ordered"] as? Bool == true)
        #expect(json["scanned"] as? Bool == true)
        #expect(json["checksumsVerified"] as? Bool == true && info.status == 0)
        #expect(try CLI.run(["verify", "--source", image]).status == 0)
        #expect(try CLI.run(["convert", "--source", image, "--format", "RAW", "--output", dir.file("raw")]).status == 0)
        #expect(try sha256(file: dir.file("raw")) == fixture.sha256)
        // The scan's whole-disk digest is the disk's sha256sum, stored in Apple's nsiz too.
        let scan = try #require(try ScanData.stored(in: UDIFImage(path: image)))
        #expect(scan.diskSHA256?.map { String(format: "%02x", $0) }.joined() == fixture.sha256)
        #expect(try UDIFImage(path: image).resourceFork.resources["nsiz"] != nil)
        if !name.contains("adc") && !name.contains("lzfse") {  // the checker decodes every codec but ADC and LZFSE
            let check = try Run.process("/usr/bin/env", ["python3", Fixtures.checker, image])
            #expect(check.status == 0, "\(check.stdout)")
            #expect(check.stdout.contains("ordered=True"))
        }
    }

    @Test func flippedByteIsNamedByVerify() throws {
        let dir = TemporaryDirectory()
        let (image, _, _) = try Self.scannedImage(in: dir, format: "UDRO")
        let parsed = try UDIFImage(path: image)
        let index = try #require(parsed.chunks.indices.last { parsed.chunks[$0].type == .raw && parsed.chunks[$0].length >= 4096 })
        let chunk = parsed.chunks[index]
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
        bytes[Int(chunk.fileOffset) + 1000] ^= 0x01
        _ = FileManager.default.createFile(atPath: image, contents: Data(bytes))
        let out = try CLI.run(["verify", "--source", image])
        #expect(out.status == 1)
        #expect(out.stderrLines.count == 1, "\(out.stderr)")
        #expect(out.stderr.contains("chunk \(index) (bytes \(chunk.diskOffset)-\(chunk.diskOffset + chunk.length - 1)"), "\(out.stderr)")
        #expect(out.stderr.contains("does not match"))
    }

    /// A signal during `asr imagescan`, sent once the progress bar has started: the scan is
    /// stopped (SIGSTOP) at its first dot, checked not to have replaced the image yet, then
    /// sent the signal, so every run takes the interrupted path. The image is the old one,
    /// intact, with no temporary file left after SIGTERM/SIGINT, and no success is claimed.
    @Test func interruptedRescanLeavesTheImageIntact() throws {
        let dir = TemporaryDirectory()
        try Run.shell("head -c 300M /dev/urandom > '\(dir.file("big.raw"))'")
        #expect(try CLI.run(["create", "--source", dir.file("big.raw"), "--output", dir.file("big.dmg"), "--format", "UDRO"]).status == 0)
        let before = try sha256(file: dir.file("big.dmg"))
        for signal in [SIGTERM, SIGKILL, SIGINT] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: CLI.binary)
            p.arguments = ["imagescan", "--source", dir.file("big.dmg")]
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            // The first dot of the bar: the rewrite has begun.
            var seen = ""
            while !seen.contains("Block checksum: .") {
                let data = out.fileHandleForReading.availableData
                if data.isEmpty { break }
                seen += String(decoding: data, as: UTF8.self)
            }
            kill(p.processIdentifier, SIGSTOP)
            let untouched = try sha256(file: dir.file("big.dmg")) == before
            try #require(p.isRunning && untouched,
                         "signal \(signal): the scan ended before it could be interrupted; the scenario did not happen")
            kill(p.processIdentifier, signal)
            kill(p.processIdentifier, SIGCONT)
            _ = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            #expect(try sha256(file: dir.file("big.dmg")) == before, "signal \(signal): the image was replaced")
            #expect(!(p.terminationReason == .exit && p.terminationStatus == 0), "signal \(signal): success without a scan")
            if signal != SIGKILL {
                let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".partial-") }
                #expect(leftovers.isEmpty, "signal \(signal): \(leftovers)")
            }
        }
        #expect(try CLI.run(["imagescan", "--source", dir.file("big.dmg")]).status == 0)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".partial-") }.isEmpty,
                "a later scan removes what a killed one left")
        #expect(try CLI.run(["verify", "--source", dir.file("big.dmg")]).status == 0)
    }

    @Test func restoreToAFileIsByteIdentical() throws {
        let dir = TemporaryDirectory()
        let (image, disk, sha) = try Self.scannedImage(in: dir)
        let out = try CLI.run(["restore", "--source", image, "--target", dir.file("target.raw"), "--erase", "--noprompt"])
        #expect(out.status == 0, "\(out.stderr)")
        for line in ["\tValidating target...done", "\tValidating source...done", "\tRetrieving scan information...done",
                     "\tValidating sizes...done", "\tRestoring  ....10....20", "\tVerifying  ....10....20"] {
            #expect(out.stdout.contains(line), "missing \(line)")
        }
        #expect(fileSize(dir.file("target.raw")) == fileSize(disk))
        #expect(try sha256(file: dir.file("target.raw")) == sha)
        // Zero chunks were not written: the new file is sparse.
        let allocated = try Run.shell("du -B1 '\(dir.file("target.raw"))' | cut -f1").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect((UInt64(allocated) ?? .max) < fileSize(disk))
        // Restoring over an existing file replaces it.
        try Run.shell("head -c 20M /dev/urandom > '\(dir.file("target.raw"))'")
        #expect(try CLI.run(["restore", "--source", image, "--target", dir.file("target.raw"), "--erase", "--noprompt"]).status == 0)
        #expect(try sha256(file: dir.file("target.raw")) == sha)
    }

    @Test func restoreFromNginxIsByteIdentical() throws {
        let dir = TemporaryDirectory()
        let (image, _, sha) = try Self.scannedImage(in: dir)
        let www = dir.file("www")
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: image, toPath: www + "/disk.dmg")
        let nginx = try Nginx(serving: www)
        for (name, url) in [("plain", nginx.url("disk.dmg")), ("flaky", nginx.url("flaky/disk.dmg"))] {
            let target = dir.file("from-\(name).raw")
            let out = try CLI.run(["restore", "--source", url, "--target", target, "--erase", "--noprompt"])
            #expect(out.status == 0, "\(name): \(out.stderr)")
            #expect(try sha256(file: target) == sha, "\(name)")
        }
        let missing = try CLI.run(["restore", "--source", nginx.url("nope.dmg"), "--target", dir.file("x"), "--erase", "--noprompt"])
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("404"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("x")))
    }

    @Test func refusals() throws {
        let dir = TemporaryDirectory()
        let (image, disk, _) = try Self.scannedImage(in: dir)
        let noErase = try CLI.run(["restore", "--source", image, "--target", dir.file("t"), "--noprompt"])
        #expect(noErase.status == 1)
        #expect(noErase.stderr.contains("--erase"))
        let noTerminal = try CLI.run(["restore", "--source", image, "--target", dir.file("t"), "--erase"])
        #expect(noTerminal.status == 1)
        #expect(noTerminal.stderr.contains("--noprompt"))
        let itself = try CLI.run(["restore", "--source", image, "--target", image, "--erase", "--noprompt"])
        #expect(itself.status == 1)
        #expect(itself.stderr.contains("is the source"))
        let unscanned = try CLI.run(["restore", "--source", disk, "--target", dir.file("t"), "--erase", "--noprompt"])
        #expect(unscanned.status == 1)
        #expect(unscanned.stderr.contains("imagescan"))
        let forced = try CLI.run(["restore", "--source", disk, "--target", dir.file("t"), "--erase", "--noprompt", "--noverify"])
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(try sha256(file: dir.file("t")) == sha256(file: disk))
        for out in [noErase, noTerminal, itself, unscanned] { #expect(out.stderrLines.count == 1, "\(out.stderr)") }
    }

    @Test func badChunkFailsAndWipesTheTarget() throws {
        let dir = TemporaryDirectory()
        let (image, _, _) = try Self.scannedImage(in: dir, format: "UDRO")
        let parsed = try UDIFImage(path: image)
        let chunk = try #require(parsed.chunks.last { $0.type == .raw && $0.length >= 4096 })
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: image)))
        bytes[Int(chunk.fileOffset) + 7] ^= 0x80
        _ = FileManager.default.createFile(atPath: image, contents: Data(bytes))
        let target = dir.file("target.raw")
        let out = try CLI.run(["restore", "--source", image, "--target", target, "--erase", "--noprompt"])
        #expect(out.status == 1)
        #expect(out.stderrLines.count == 1, "\(out.stderr)")
        #expect(out.stderr.contains("does not match its scan checksum"))
        #expect(out.stderr.contains("erased"))
        // The partition map at the start and the backup GPT at the end are gone.
        let size = fileSize(target)
        let head = try Run.shell("head -c 1048576 '\(target)' | tr -d '\\000' | wc -c")
        let tail = try Run.shell("tail -c 1048576 '\(target)' | tr -d '\\000' | wc -c")
        #expect(size > 0 && head.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
        #expect(tail.trimmingCharacters(in: .whitespacesAndNewlines) == "0")
    }

    @Test func bmaptoolCopiesWithOurBlockMap() throws {
        let dir = TemporaryDirectory()
        let disk = dir.file("disk.raw")
        try InteropTests.makeDisk(.gpt, at: disk)
        let scanned = try CLI.run(["imagescan", "--source", disk])
        #expect(scanned.status == 0, "\(scanned.stderr)")
        #expect(FileManager.default.fileExists(atPath: disk + ".bmap"))
        try Run.shell("bmaptool copy --bmap '\(disk).bmap' '\(disk)' '\(dir.file("bmaptool.raw"))' 2>/dev/null")
        #expect(try sha256(file: dir.file("bmaptool.raw")) == sha256(file: disk))
        #expect(try CLI.run(["verify", "--source", disk]).status == 0)
        let ours = try CLI.run(["restore", "--source", disk, "--target", dir.file("ours.raw"), "--erase", "--noprompt"])
        #expect(ours.status == 0, "\(ours.stderr)")
        #expect(try sha256(file: dir.file("ours.raw")) == sha256(file: disk))
        // Data in a range the map says is empty is caught too: by the chunk digests beside
        // the map (naming its 1 MiB chunk), and by the bmaptool map alone without them.
        try Run.shell("printf 'X' | dd of='\(disk)' bs=1 seek=51200 conv=notrunc status=none")
        let bad = try CLI.run(["verify", "--source", disk])
        #expect(bad.status == 1 && bad.stderr.contains("bytes 0-1048575"), "\(bad.stderr)")
        try FileManager.default.removeItem(atPath: disk + ".asrc")
        let byMap = try CLI.run(["verify", "--source", disk])
        #expect(byMap.status == 1 && byMap.stderr.contains("should be zeros"), "\(byMap.stderr)")
    }

    @Test func legacySingleDashSyntax() throws {
        let dir = TemporaryDirectory()
        let disk = dir.file("disk.raw")
        try InteropTests.makeDisk(.none, at: disk)
        #expect(try CLI.run(["create", "--source", disk, "--output", dir.file("a.dmg")]).status == 0)
        let scan = try CLI.run(["-imagescan", dir.file("a.dmg")])
        #expect(scan.status == 0, "\(scan.stderr)")
        #expect(scan.stdout.contains("successfully scanned"))
        let restore = try CLI.run(["-source", dir.file("a.dmg"), "-target", dir.file("t.raw"), "-erase", "-noprompt"])
        #expect(restore.status == 0, "\(restore.stderr)")
        #expect(try sha256(file: dir.file("t.raw")) == sha256(file: disk))
        let nocheck = try CLI.run(["restore", "-source", disk, "-target", dir.file("u.raw"), "-erase", "-noprompt", "-nocheck"])
        #expect(nocheck.status == 0, "\(nocheck.stderr)")
    }

    @Test func puppetstringsAreMachineReadable() throws {
        let dir = TemporaryDirectory()
        let (image, _, _) = try Self.scannedImage(in: dir)
        let out = try CLI.run(["restore", "--source", image, "--target", dir.file("t"), "--erase", "--noprompt", "--puppetstrings"])
        #expect(out.status == 0)
        let lines = out.stdout.split(separator: "\n").dropLast()
        #expect(lines.allSatisfy { ["PINF", "PSTT", "PPRG", "PSTP"].contains($0.split(separator: "\t").first ?? "") }, "\(out.stdout)")
        #expect(lines.contains("PSTT\t0\t100\trestore"))
        #expect(lines.contains("PSTP\t100\t100\trestore"))
        #expect(lines.contains("PSTP\t100\t100\tverify"))
        #expect(!out.stdout.contains("...."))
    }

    @Test func helpAndVersionVerbs() throws {
        for args in [["help"], ["help", "restore"], ["version"], ["restore", "--help"], ["imagescan", "--help"], ["verify", "--help"]] {
            let out = try CLI.run(args)
            #expect(out.status == 0, "\(args): \(out.stderr)")
            #expect(!out.stdout.isEmpty, "\(args)")
        }
    }
}

/// Restores onto real block devices (loop devices), and the refusals that protect them.
@Suite(.serialized) struct DeviceRestoreTests {
    final class Loop {
        let device: String
        init(_ backing: String) throws {
            device = try Run.shell("losetup -f --show '\(backing)'").trimmingCharacters(in: .whitespacesAndNewlines)
        }
        deinit { _ = try? Run.shell("losetup -d \(device)") }
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func restoreToALoopDevice() throws {
        let dir = TemporaryDirectory()
        let (image, disk, sha) = try ScanRestoreTests.scannedImage(in: dir)
        try Run.shell("head -c 12M /dev/urandom > '\(dir.file("dev.img"))'")  // old contents to overwrite
        let loop = try Loop(dir.file("dev.img"))
        let out = try CLI.run(["restore", "--source", image, "--target", loop.device, "--erase", "--noprompt"])
        #expect(out.status == 0, "\(out.stderr)")
        let written = try Run.shell("head -c \(fileSize(disk)) \(loop.device) | sha256sum | cut -c1-64").trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(written == sha)
    }

    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func mountedOrSmallDevicesAreRefusedUntouched() throws {
        let dir = TemporaryDirectory()
        let (image, _, _) = try ScanRestoreTests.scannedImage(in: dir)

        try Run.shell("truncate -s 4M '\(dir.file("small.img"))'; head -c 4M /dev/urandom > '\(dir.file("small.img"))'")
        let small = try Loop(dir.file("small.img"))
        let before = try sha256(file: dir.file("small.img"))
        let tooSmall = try CLI.run(["restore", "--source", image, "--target", small.device, "--erase", "--noprompt"])
        #expect(tooSmall.status == 1)
        #expect(tooSmall.stderr.contains("less than"), "\(tooSmall.stderr)")
        #expect(try sha256(file: dir.file("small.img")) == before, "nothing written")

        try Run.shell("truncate -s 32M '\(dir.file("fs.img"))'; mke2fs -q -F -t ext4 '\(dir.file("fs.img"))'")
        let fs = try Loop(dir.file("fs.img"))
        let mnt = dir.file("mnt")
        try FileManager.default.createDirectory(atPath: mnt, withIntermediateDirectories: true)
        try Run.shell("mount \(fs.device) '\(mnt)'")
        defer { _ = try? Run.shell("umount '\(mnt)'") }
        let mounted = try CLI.run(["restore", "--source", image, "--target", fs.device, "--erase", "--noprompt"])
        #expect(mounted.status == 1)
        #expect(mounted.stderr.contains("mounted"), "\(mounted.stderr)")
        #expect(mounted.stderrLines.count == 1)
    }
}
