import Foundation
import TestSupport
import Testing
import UDIF

/// Images signed with `imagescan --sign` and accepted with `--trust`: what is refused, and that
/// openssl checks the signature from the documented message alone.
@Suite struct SignatureTests {
    struct Fixture {
        let dir = TemporaryDirectory()
        let raw: String, image: String, key: String, pub: String, otherPub: String, sha: String

        init() throws {
            raw = dir.file("disk.raw")
            image = dir.file("disk.dmg")
            key = dir.file("key.pem")
            pub = dir.file("pub.pem")
            otherPub = dir.file("other.pem")
            try Run.shell("""
                { head -c 3M /dev/urandom; seq 1 400000; } > '\(raw)'; truncate -s 6M '\(raw)'
                openssl genpkey -algorithm ed25519 -out '\(key)'
                openssl pkey -in '\(key)' -pubout -out '\(pub)'
                openssl genpkey -algorithm ed25519 | openssl pkey -pubout -out '\(otherPub)'
                """)
            sha = try sha256(file: raw)
            #expect(try CLI.run(["create", "--source", raw, "--output", image]).status == 0)
        }

        /// A copy of the image, named `name`, with the first block table that `edit` changes
        /// (it returns true) written back; scan data and signature are left as they were.
        func copyEditingOneBlockTable(_ name: String, _ edit: (inout BlockTable) -> Bool) throws -> String {
            let path = dir.file(name)
            try FileManager.default.copyItem(atPath: image, toPath: path)
            let parsed = try UDIFImage(path: path)
            var entries = parsed.resourceFork.blkx
            for r in entries.indices {
                var table = try BlockTable(parsing: entries[r].data)
                guard edit(&table) else { continue }
                entries[r].data = table.serialized()
                try ImageRewriter(parsed, replacing: path, reorder: false).finish(replacingResources: ["blkx": entries])
                return path
            }
            throw TestFailure("no block table of \(image) could be edited for \(name)")
        }

        func restore(_ source: String, trusting keys: [String], into name: String) throws -> CLI.Output {
            try CLI.run(["restore", "--source", source, "--file", dir.file(name), "--erase", "--noprompt"] + keys.flatMap { ["--trust", $0] })
        }
    }

    /// Refused in one line, exit 1, and nothing written.
    func expectRefused(_ out: CLI.Output, _ f: Fixture, _ target: String, saying words: String) {
        #expect(out.status == 1 && out.stderrLines.count == 1 && out.stderr.contains(words), "\(out.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.dir.file(target)), "nothing written")
    }

    @Test func signedImagesRestoreAndEveryForgeryIsRefusedFirst() throws {
        let f = try Fixture()
        #expect(try CLI.run(["imagescan", "--source", f.image]).status == 0)
        expectRefused(try f.restore(f.image, trusting: [f.pub], into: "unsigned.raw"), f, "unsigned.raw", saying: "is not signed")

        let signed = try CLI.run(["imagescan", "--source", f.image, "--sign", f.key])
        #expect(signed.status == 0, "\(signed.stderr)")
        #expect(try CLI.run(["verify", "--source", f.image, "--trust", f.pub]).status == 0)
        let good = try f.restore(f.image, trusting: [f.otherPub, f.pub], into: "good.raw")
        #expect(good.status == 0, "\(good.stderr)")
        #expect(try sha256(file: f.dir.file("good.raw")) == f.sha)
        expectRefused(try f.restore(f.image, trusting: [f.otherPub], into: "wrong-key.raw"), f, "wrong-key.raw", saying: "which is not trusted here")
        // A pin names the image by identity, keys or not.
        let identity = try #require(try CLI.run(["info", "--source", f.image]).stdout.split(separator: "\n")
            .first { $0.hasPrefix("Identity: ") }).dropFirst(10)
        let pinned = try CLI.run(["restore", "--source", f.image, "--file", f.dir.file("pinned.raw"), "--erase", "--noprompt",
                                  "--image-sha256", String(identity)])
        #expect(pinned.status == 0, "\(pinned.stderr)")
        let other = String(identity.reversed())
        let wrongPin = try CLI.run(["restore", "--source", f.image, "--file", f.dir.file("wrong-pin.raw"), "--erase", "--noprompt",
                                    "--image-sha256", other])
        expectRefused(wrongPin, f, "wrong-pin.raw", saying: "is not the pinned image")
        let badPin = try CLI.run(["verify", "--source", f.image, "--image-sha256", "12ab"])
        #expect(badPin.status == 1 && badPin.stderr.contains("is not an image identity"), "\(badPin.stderr)")
        let notAKey = try CLI.run(["verify", "--source", f.image, "--trust", f.raw])
        #expect(notAKey.status == 1 && notAKey.stderr.contains("is not an Ed25519 public key"), "\(notAKey.stderr)")

        // One digest byte of the scan changed: the identity changes, the signature fails.
        let tampered = f.dir.file("tampered.dmg")
        try FileManager.default.copyItem(atPath: f.image, toPath: tampered)
        let image = try UDIFImage(path: tampered)
        var scan = try #require(try ScanData.stored(in: image))
        scan.chunks[1].sha256[0] ^= 1
        let rewriter = try ImageRewriter(image, replacing: tampered, reorder: false)
        try rewriter.finish(replacingResources: [ScanData.resourceKey: [ResourceEntry(data: scan.serialized(), id: "0", name: "asr chunk checksums")]])
        expectRefused(try f.restore(tampered, trusting: [f.pub], into: "tampered.raw"), f, "tampered.raw", saying: "signature does not match")
        #expect(try CLI.run(["verify", "--source", tampered, "--trust", f.pub]).status == 1)

        // Two chunks of the table swapped: every digest still matches its chunk's place on the
        // disk, but the signature covers where each chunk is stored.
        let swapped = try swappedCopy(f)
        expectRefused(try f.restore(swapped, trusting: [f.pub], into: "swapped.raw"), f, "swapped.raw", saying: "signature does not match")

        // Over HTTP the same checks run before a byte is written.
        let nginx = try Nginx(serving: (f.image as NSString).deletingLastPathComponent)
        let http = try f.restore(nginx.url("disk.dmg"), trusting: [f.pub], into: "http.raw")
        #expect(http.status == 0, "\(http.stderr)")
        expectRefused(try f.restore(nginx.url("tampered.dmg"), trusting: [f.pub], into: "http-tampered.raw"), f, "http-tampered.raw",
                      saying: "signature does not match")
        expectRefused(try f.restore(nginx.url("swapped.dmg"), trusting: [f.pub], into: "http-swapped.raw"), f, "http-swapped.raw",
                      saying: "signature does not match")
    }

    /// A copy of the fixture's image whose chunk table points two chunks of the same codec at
    /// each other's stored bytes; scan data and signature are left as they were.
    func swappedCopy(_ f: Fixture) throws -> String {
        try f.copyEditingOneBlockTable("swapped.dmg") { table in
            let zlib = table.chunks.indices.filter { table.chunks[$0].type == .zlib }
            guard zlib.count >= 2 else { return false }
            let (a, b) = (zlib[0], zlib[1])
            (table.chunks[a].storedOffset, table.chunks[b].storedOffset) = (table.chunks[b].storedOffset, table.chunks[a].storedOffset)
            (table.chunks[a].storedLength, table.chunks[b].storedLength) = (table.chunks[b].storedLength, table.chunks[a].storedLength)
            return true
        }
    }

    /// The message is "asr image signature 3\n" and the identity `asr info` prints: openssl
    /// verifies the signature `asr info` prints with the public key alone.
    @Test func opensslVerifiesTheDocumentedMessage() throws {
        let f = try Fixture()
        #expect(try CLI.run(["imagescan", "--source", f.image, "--sign", f.key]).status == 0)
        let info = try CLI.run(["info", "--source", f.image]).stdout
        func field(_ name: String) -> String {
            info.split(separator: "\n").first { $0.hasPrefix(name + ": ") }.map { String($0.dropFirst(name.count + 2).prefix { $0 != " " }) } ?? ""
        }
        let identity = field("Identity"), signature = field("Signature")
        #expect(identity.count == 64 && signature.count == 128, "\(info)")
        let message = f.dir.file("message.bin"), sig = f.dir.file("sig.bin")
        try Run.shell("""
            unhex() { python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(sys.argv[1]))' "$1"; }
            { printf 'asr image signature 3\\n'; unhex '\(identity)'; } > '\(message)'
            unhex '\(signature)' > '\(sig)'
            openssl pkeyutl -verify -pubin -inkey '\(f.pub)' -rawin -in '\(message)' -sigfile '\(sig)'
            """)
        #expect(try Run.process("/usr/bin/openssl", ["pkeyutl", "-verify", "-pubin", "-inkey", f.otherPub, "-rawin", "-in", message, "-sigfile", sig]).status != 0)
    }

    /// `asr mount --trust` mounts only a signed image, and shows nothing of any other.
    @Test(.enabled(if: Privileged.fuse, "needs root and /dev/fuse"))
    func mountShowsOnlyTrustedImages() throws {
        let f = try Fixture()
        #expect(try CLI.run(["imagescan", "--source", f.image, "--sign", f.key]).status == 0)
        let point = f.dir.file("mnt")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let refused = try CLI.run(["mount", "--trust", f.otherPub, f.image, point], timeout: 60)
        #expect(refused.status == 1 && refused.stderrLines.count == 1 && refused.stderr.contains("which is not trusted here"), "\(refused.stderr)")
        #expect(!Mounted.isMounted(point))
        let mount = try Mounted(f.image, options: ["--trust", f.pub], in: f.dir)
        defer { try? mount.unmount() }
        #expect(try sha256(file: mount.file("disk.img")) == f.sha)
    }

    /// hdiutil's images are stored out of disk order: signing one while the scan reorders it
    /// signs the layout it ends with.
    @Test func signingWhileReorderingSignsTheNewLayout() throws {
        let f = try Fixture()
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_zlib.dmg" })
        let image = f.dir.file("hdiutil.dmg")
        try FileManager.default.copyItem(atPath: fixture.path, toPath: image)
        try Run.shell("chmod u+w '\(image)'")
        let scanned = try CLI.run(["imagescan", "--source", image, "--sign", f.key])
        #expect(scanned.status == 0, "\(scanned.stderr)")
        let verified = try CLI.run(["verify", "--source", image, "--trust", f.pub])
        #expect(verified.status == 0, "\(verified.stderr)")
    }

    /// A raw image's signature sits beside its block map and covers the map's ranges.
    @Test func rawImagesAreSignedBesideTheirBlockMap() throws {
        let f = try Fixture()
        let scanned = try CLI.run(["imagescan", "--source", f.raw, "--sign", f.key])
        #expect(scanned.status == 0, "\(scanned.stderr)")
        #expect(FileManager.default.fileExists(atPath: f.dir.file("disk.raw.sig")))
        #expect(try CLI.run(["verify", "--source", f.raw, "--trust", f.pub]).status == 0)
        let good = try f.restore(f.raw, trusting: [f.pub], into: "good.raw")
        #expect(good.status == 0, "\(good.stderr)")
        #expect(try sha256(file: f.dir.file("good.raw")) == f.sha)
        // The image changed, its old signature copied back beside it after a rescan (which
        // drops a signature it cannot make again): the identity is no longer the signed one.
        try FileManager.default.copyItem(atPath: f.dir.file("disk.raw.sig"), toPath: f.dir.file("old.sig"))
        try Run.shell("printf 'X' | dd of='\(f.raw)' bs=1 seek=4096 conv=notrunc status=none")
        #expect(try CLI.run(["imagescan", "--source", f.raw]).status == 0)
        expectRefused(try f.restore(f.raw, trusting: [f.pub], into: "unsigned.raw"), f, "unsigned.raw", saying: "is not signed")
        try FileManager.default.copyItem(atPath: f.dir.file("old.sig"), toPath: f.dir.file("disk.raw.sig"))
        expectRefused(try f.restore(f.raw, trusting: [f.pub], into: "bad.raw"), f, "bad.raw", saying: "signature does not match")
    }

    /// Over multicast the signature comes after the manifest, and a client that trusts another
    /// key stops before it touches its target.
    @Test(.enabled(if: Lab.enabled, "needs root and network namespaces"))
    func multicastClientsCheckTheSignatureFirst() throws {
        let f = try Fixture()
        #expect(try CLI.run(["imagescan", "--source", f.image, "--sign", f.key]).status == 0)
        let net = Lab()
        let config = f.dir.file("cfg.plist")
        Lab.writeConfig(config, rate: 30_000_000, group: "239.77.0.1")
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        // Two swapped chunks never reach a client: the server refuses an image whose stored
        // chunks are out of disk order, and checks every chunk against the scan before it serves.
        let swapped = try bed.run("server", [CLI.binary, "server", "--source", try swappedCopy(f), "--config", config])
        #expect(swapped.status == 1 && swapped.stderrLines.count == 1 && swapped.stderr.contains("swapped.dmg"), "\(swapped.stderr)")
        try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", config], log: f.dir.file("server.log"))
        usleep(300_000)
        let source = "asr://\(bed.address("server"))"
        let refused = try bed.run("c1", [CLI.binary, "restore", "--source", source, "--file", f.dir.file("refused.raw"), "--erase", "--noprompt",
                                         "--timeout", "20", "--trust", f.otherPub])
        expectRefused(refused, f, "refused.raw", saying: "which is not trusted here")
        let good = try bed.run("c1", [CLI.binary, "restore", "--source", source, "--file", f.dir.file("good.raw"), "--erase", "--noprompt",
                                      "--timeout", "20", "--trust", f.pub])
        #expect(good.status == 0, "\(good.stderr) \(net.log(f.dir.file("server.log")))")
        #expect(try sha256(file: f.dir.file("good.raw")) == f.sha)
    }
}
