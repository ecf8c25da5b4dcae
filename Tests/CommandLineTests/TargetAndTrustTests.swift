import Foundation
import TestSupport
import Testing

/// Trust configuration that cannot be read, and restore targets reached through links: each
/// refused in one line with exit 1 and nothing written, where it once went ahead.
@Suite struct TargetAndTrustTests {
    struct Fixture {
        let dir = TemporaryDirectory()
        let raw: String, image: String, sha: String

        init() throws {
            raw = dir.file("disk.raw")
            image = dir.file("disk.dmg")
            try Run.shell("{ head -c 1M /dev/urandom; seq 1 200000; } > '\(raw)'; truncate -s 3M '\(raw)'")
            sha = try sha256(file: raw)
            guard try CLI.run(["create", "--source", raw, "--output", image]).status == 0,
                  try CLI.run(["imagescan", "--source", image]).status == 0 else { throw TestFailure("cannot make the image") }
        }

        /// `asr restore` with ASR_TRUSTED_DIR set; as root, without the capabilities that read
        /// past file permissions, so a mode-000 folder is as unreadable as for anyone else.
        func restore(into target: String, trustedDir: String) throws -> CLI.Output {
            let asr = ["/usr/bin/env", "ASR_TRUSTED_DIR=\(trustedDir)", CLI.binary, "restore", "--source", image, "--target", target,
                       "--erase", "--noprompt"]
            if getuid() == 0 {
                return try Run.process("/usr/bin/setpriv", ["--bounding-set", "-dac_override,-dac_read_search"] + asr)
            }
            return try Run.process(asr[0], Array(asr.dropFirst()))
        }
    }

    static let before = "what the target held before\n"

    func expectRefused(_ out: CLI.Output, _ target: String, saying words: String, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(out.status == 1 && out.stderrLines.count == 1 && out.stderr.contains(words), "\(out.stderr)", sourceLocation: sourceLocation)
        #expect((try? String(contentsOfFile: target, encoding: .utf8)) == Self.before, "target untouched", sourceLocation: sourceLocation)
    }

    @Test func anUnreadableTrustedFolderOrKeyIsAnErrorNotNoKeys() throws {
        let f = try Fixture()
        let target = f.dir.file("target.raw")
        try Self.before.write(toFile: target, atomically: false, encoding: .utf8)
        try Run.shell("openssl genpkey -algorithm ed25519 | openssl pkey -pubout -out '\(f.dir.file("pub.pem"))'")

        // The folder is honoured: with a key in it, the unsigned image is refused.
        let trusted = f.dir.file("trusted.d")
        try FileManager.default.createDirectory(atPath: trusted, withIntermediateDirectories: false)
        try FileManager.default.copyItem(atPath: f.dir.file("pub.pem"), toPath: trusted + "/site.pem")
        expectRefused(try f.restore(into: target, trustedDir: trusted), target, saying: "is not signed")

        // Unreadable, it once read as "no keys", and the unsigned image was restored.
        chmod(trusted, 0)
        defer { chmod(trusted, 0o755) }
        expectRefused(try f.restore(into: target, trustedDir: trusted), target, saying: "\(trusted) cannot be read (Permission denied)")
        chmod(trusted, 0o755)
        chmod(trusted + "/site.pem", 0)
        expectRefused(try f.restore(into: target, trustedDir: trusted), target, saying: "\(trusted)/site.pem cannot be read (Permission denied)")

        // Not a folder, or a link to nothing: not readable as a folder of keys either.
        let file = f.dir.file("trusted-file")
        try "not a folder\n".write(toFile: file, atomically: false, encoding: .utf8)
        expectRefused(try f.restore(into: target, trustedDir: file), target, saying: "\(file) cannot be read (Not a directory)")
        let dangling = f.dir.file("trusted-link")
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: f.dir.file("gone"))
        expectRefused(try f.restore(into: target, trustedDir: dangling), target, saying: "\(dangling) cannot be read")

        // Missing altogether: no keys, as documented; the unsigned image restores.
        let restored = try f.restore(into: target, trustedDir: f.dir.file("no-such-folder"))
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try sha256(file: target) == f.sha)
    }

    @Test func aTargetThatLinksToAnotherFileIsRefused() throws {
        let f = try Fixture()
        let other = f.dir.file("precious")
        try Self.before.write(toFile: other, atomically: false, encoding: .utf8)
        let link = f.dir.file("target.raw")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: other)
        let out = try CLI.run(["restore", "--source", f.image, "--target", link, "--erase", "--noprompt"])
        expectRefused(out, other, saying: "is a symbolic link")
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == other, "the link is left as it was")

        // A link to nothing yet would create the file where the link points: refused too.
        let dangling = f.dir.file("dangling.raw")
        try FileManager.default.createSymbolicLink(atPath: dangling, withDestinationPath: f.dir.file("created-elsewhere"))
        let none = try CLI.run(["restore", "--source", f.image, "--target", dangling, "--erase", "--noprompt"])
        #expect(none.status == 1 && none.stderrLines.count == 1 && none.stderr.contains("is a symbolic link"), "\(none.stderr)")
        #expect(!FileManager.default.fileExists(atPath: f.dir.file("created-elsewhere")))
    }

    /// Links to block devices (/dev/disk/by-id/...) are how disks are named: followed, and the
    /// device itself opened.
    @Test(.enabled(if: Privileged.loopDevices, "needs root and loop devices"))
    func aTargetThatLinksToABlockDeviceIsRestored() throws {
        let f = try Fixture()
        let backing = f.dir.file("backing")
        try Run.shell("truncate -s 3M '\(backing)'")
        let loop = try Run.shell("losetup -f --show '\(backing)'").trimmingCharacters(in: .whitespacesAndNewlines)
        defer { _ = try? Run.shell("losetup -d \(loop)") }
        let link = f.dir.file("by-id-disk")
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: loop)
        let out = try CLI.run(["restore", "--source", f.image, "--target", link, "--erase", "--noprompt"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: loop) == f.sha)
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: link)) == loop)
    }
}
