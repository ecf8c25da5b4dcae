import Foundation
import enum ImageFS.MountRecord
import SystemSupport

extension Privileged {
    public static var fuse: Bool { required || (getuid() == 0 && FileManager.default.fileExists(atPath: "/dev/fuse")) }
}

/// An `asr mount` in a temporary directory, always unmounted (and its process waited for)
/// when released, even after a failed expectation.
public final class Mounted {
    public let point: String
    private let dir: TemporaryDirectory

    public init(_ image: String, options: [String] = [], in dir: TemporaryDirectory = TemporaryDirectory()) throws {
        self.dir = dir
        point = dir.file("mnt-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let out = try CLI.run(["mount"] + options + [image, point], timeout: 120)
        guard out.status == 0 else { throw TestFailure("asr mount failed (\(out.status)): \(out.stderr)") }
    }

    /// A writable disk: `asr mount --target ...` or `--overlay ...` at a new mount point.
    public init(writable arguments: [String], in dir: TemporaryDirectory = TemporaryDirectory()) throws {
        self.dir = dir
        point = dir.file("mnt-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(atPath: point, withIntermediateDirectories: true)
        let out = try CLI.run(["mount"] + arguments + [point], timeout: 120)
        guard out.status == 0 else { throw TestFailure("asr mount failed (\(out.status)): \(out.stderr)") }
    }

    public func file(_ name: String) -> String { point + "/" + name }

    /// `asr unmount`, which returns once the mount's process (and any --save-as) is done.
    public func unmount() throws {
        let out = try CLI.run(["unmount", point], timeout: 300)
        guard out.status == 0 else { throw TestFailure("asr unmount failed: \(out.stderr)") }
    }

    /// The background process serving this mount, from the pid record it keeps.
    public var processID: pid_t? { MountRecord.read(MountRecord.path(for: point)) }

    public static func isMounted(_ path: String) -> Bool {
        let table = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        return table.split(separator: "\n").contains { $0.split(separator: " ").dropFirst(4).first.map(String.init) == path }
    }

    deinit {
        let pid = processID
        if Self.isMounted(point) {
            _ = try? Run.process("/usr/bin/fusermount3", ["-u", point])
            if Self.isMounted(point) { _ = try? Run.process("/usr/bin/fusermount3", ["-u", "-z", point]) }
        }
        if let pid { waitForExit(pid) }
    }
}

/// A background mount's process is reaped by init, perhaps late: a zombie has ended.
public func isRunning(_ pid: pid_t) -> Bool { MountRecord.isRunning(pid) }

public func waitForExit(_ pid: pid_t, seconds: Double = 10) {
    let deadline = Date().addingTimeInterval(seconds)
    while isRunning(pid) && Date() < deadline { usleep(20_000) }
}

/// The repository, two folders above this file (Tests/TestSupport).
public let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path
