import SystemSupport
import Crypto
import Foundation
import UDIF

/// Runs the built `asr` binary (beside this test bundle, or $ASR_BIN) as a user would.
public enum CLI {
    public static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["ASR_BIN"] { return path }
        let me = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return me.deletingLastPathComponent().appendingPathComponent("asr").path
    }()

    public struct Output {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        public var timedOut: Bool
        public var stderrLines: [Substring] { stderr.split(separator: "\n") }
    }

    public static func run(_ args: [String], timeout: TimeInterval = 300) throws -> Output {
        try Run.process(binary, args, timeout: timeout)
    }
}

public enum Run {
    /// Runs a program with stdout and stderr captured through files (no pipe deadlocks), and
    /// kills it after `timeout`: a hang is a failure, never a stuck test run.
    public static func process(_ program: String, _ args: [String], timeout: TimeInterval = 300) throws -> CLI.Output {
        let dir = TemporaryDirectory()
        _ = FileManager.default.createFile(atPath: dir.file("out"), contents: nil)
        _ = FileManager.default.createFile(atPath: dir.file("err"), contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: program)
        p.arguments = args
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: dir.file("out"))
        p.standardError = FileHandle(forWritingAtPath: dir.file("err"))
        try p.run()
        let deadline = Date().addingTimeInterval(timeout)
        var zombieStatus: Int32?
        while p.isRunning && Date() < deadline {
            // Foundation notices an exit when the child's end of its socket pair closes; a
            // daemon the child talked to may keep it open, so a zombie counts as ended too.
            if let status = exitStatusOfZombie(p.processIdentifier) { zombieStatus = status; break }
            usleep(20_000)
        }
        let timedOut = zombieStatus == nil && p.isRunning
        if timedOut { p.terminate(); usleep(200_000); kill(p.processIdentifier, SIGKILL) }
        if zombieStatus == nil { p.waitUntilExit() }
        let read = { (name: String) in (try? String(contentsOfFile: dir.file(name), encoding: .utf8)) ?? "" }
        return CLI.Output(status: zombieStatus ?? p.terminationStatus, stdout: read("out"), stderr: read("err"), timedOut: timedOut)
    }

    /// The exit status of a child that has ended but is not reaped yet (/proc/PID/stat field 52).
    public static func exitStatusOfZombie(_ pid: pid_t) -> Int32? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.first == "Z", fields.count >= 50, let code = Int32(fields[49].trimmingCharacters(in: .whitespacesAndNewlines)) else { return nil }
        return (code >> 8) & 0xFF
    }

    /// A shell script that mounts, writes and unmounts, run in a mount namespace of its own.
    /// A namespace another test creates meanwhile (`ip netns exec`, `unshare`) would otherwise
    /// get a copy of the mount, and the filesystem would stay live, its last writes (the
    /// clean-unmount superblock) still to come, after `umount` returned here.
    @discardableResult
    public static func withPrivateMounts(_ script: String, timeout: TimeInterval = 300) throws -> String {
        let dir = TemporaryDirectory()
        try Array(script.utf8).withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: dir.file("script.sh"))) }
        let out = try process("/usr/bin/unshare", ["--mount", "--propagation", "private", "/bin/bash", "-euo", "pipefail", dir.file("script.sh")],
                              timeout: timeout)
        guard out.status == 0, !out.timedOut else { throw TestFailure("mount script failed (\(out.status)): \(out.stderr)\n\(script)") }
        return out.stdout
    }

    /// A shell command that must succeed; returns its standard output.
    @discardableResult
    public static func shell(_ command: String, timeout: TimeInterval = 300) throws -> String {
        let out = try process("/bin/bash", ["-c", "set -euo pipefail; " + command], timeout: timeout)
        guard out.status == 0, !out.timedOut else {
            throw TestFailure("`\(command)` failed (\(out.status)): \(out.stderr)")
        }
        return out.stdout
    }
}

/// Tests that need root and loop devices or mounts. They run where the facility exists; with
/// ASR_REQUIRE_PRIVILEGED=1 (CI) they always run, so a missing facility fails instead of skipping.
public enum Privileged {
    public static var required: Bool { ProcessInfo.processInfo.environment["ASR_REQUIRE_PRIVILEGED"] == "1" }
    public static var loopDevices: Bool {
        required || (getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/loop-control"))
    }
}

public func sha256(file path: String) throws -> String {
    let handle = try FileHandle(forReadingFrom: URL(fileURLWithPath: path))
    defer { try? handle.close() }
    var hasher = SHA256()
    while let data = try handle.read(upToCount: 4 << 20), !data.isEmpty { hasher.update(data: data) }
    return hasher.finalize().map { String(format: "%02x", $0) }.joined()
}

public func fileSize(_ path: String) -> UInt64 {
    ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
}
