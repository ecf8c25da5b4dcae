import Foundation
import SystemSupport
import TestSupport
import Testing

/// A 16 GiB sparse disk holding a 150 MB ext4: every verb's cost follows the data, not the
/// disk's size. Counted as the bytes each command read (`rchar`, which counts holes read as
/// zeros too), not as time.
@Suite struct SparseScaleTests {
    /// Runs `asr ARGS` under a shell that reports what it read once the command has been reaped
    /// (a reaped child's I/O counts are added to its parent's).
    func bytesRead(_ args: [String]) throws -> UInt64 {
        let quoted = ([CLI.binary] + args).map { "'\($0)'" }.joined(separator: " ")
        let out = try Run.shell("\(quoted) >&2; grep '^rchar:' /proc/$$/io")
        guard let n = UInt64(out.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") else {
            throw TestFailure("no rchar in \(out)")
        }
        return n
    }

    @Test func everyVerbReadsTheDataNotTheDisk() throws {
        let dir = TemporaryDirectory()
        let data = dir.file("data"), disk = dir.file("disk.raw"), image = dir.file("disk.dmg"), target = dir.file("restored.raw")
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        var rng = SplitMix64(seed: 16)
        for i in 0..<3 {
            let words = (0..<(50_000_000 / 8)).map { _ in rng.next() }
            try words.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: dir.file("data/file\(i)"))) }
        }
        try Run.shell("truncate -s 16G '\(disk)' && mkfs.ext4 -q -F -d '\(data)' '\(disk)'")
        let dataBytes: UInt64 = 150_000_000
        // What each may read: the data (twice for restore, which reads it back) plus metadata.
        let budget = dataBytes + (64 << 20)

        let create = try bytesRead(["create", "--source", disk, "--output", image])
        #expect(create < budget, "create read \(create) bytes")
        let scan = try bytesRead(["imagescan", "--source", image, "--no-apple-digests"])
        #expect(scan < budget, "imagescan read \(scan) bytes")
        let verify = try bytesRead(["verify", "--source", image])
        #expect(verify < budget, "verify read \(verify) bytes")
        let restore = try bytesRead(["restore", "--source", image, "--file", target, "--erase", "--noprompt"])
        #expect(restore < 2 * budget, "restore and its read-back read \(restore) bytes")

        try Run.shell("e2fsck -fn '\(target)' >&2")
        // Outputs are the owner's alone: an image of a root-only disk must not be readable by all.
        for output in [image, target] {
            let mode = (try FileManager.default.attributesOfItem(atPath: output)[.posixPermissions] as? Int) ?? -1
            #expect(mode == 0o600, "\(output) is \(String(mode, radix: 8))")
        }
        let info = try CLI.run(["info", "--source", image])
        #expect(info.stdout.contains("Scanned: yes (without Apple's whole-disk digests)"), "\(info.stdout)")
        #expect(info.stdout.contains("Identity: "))
    }
}
