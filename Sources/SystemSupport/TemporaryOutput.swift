import Foundation
import SystemPackage

/// A file written under a temporary name beside its final path and renamed into place only
/// when complete, so a failure never leaves something that looks like a finished output.
public final class TemporaryOutput {
    public let file: FileIO
    public let finalPath: String
    private let tempPath: String
    private var committed = false

    public init(finalPath: String) throws {
        self.finalPath = finalPath
        let dir = (finalPath as NSString).deletingLastPathComponent
        let base = (finalPath as NSString).lastPathComponent
        let prefix = ".\(base).partial-"
        Self.removeStale(in: dir.isEmpty ? "." : dir, prefix: prefix)
        tempPath = (dir.isEmpty ? "" : dir + "/") + prefix + "\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        file = try FileIO(path: tempPath, flags: O_RDWR | O_CREAT | O_EXCL)
    }

    /// Temporary files left by a process that was killed outright (SIGKILL, power loss).
    private static func removeStale(in dir: String, prefix: String) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return }
        for name in names where name.hasPrefix(prefix) {
            let pid = name.dropFirst(prefix.count).split(separator: "-").first.flatMap { Int32($0) } ?? 0
            if pid > 0, kill(pid, 0) != 0, errno == ESRCH { unlink(dir + "/" + name) }
        }
    }

    public func commit() throws {
        try file.sync()
        guard rename(tempPath, finalPath) == 0 else {
            throw SystemError.rename(to: finalPath, Errno(rawValue: errno))
        }
        committed = true
    }

    public func discard() {
        if !committed { unlink(tempPath) }
    }
}

/// Starts writeback every 32 MiB of sequential output, so flushing overlaps the work instead
/// of all landing on the final fsync.
public struct WritebackTrigger {
    let file: FileIO
    private var started: UInt64 = 0

    public init(file: FileIO) { self.file = file }

    public mutating func wrote(upTo end: UInt64) {
        guard end >= started + (32 << 20) else { return }
        file.startWriteback(offset: started, length: end - started)
        started = end
    }
}
