import Foundation
import Glibc
import SystemPackage
import SystemSupport

/// `-o` options split into ours, FUSE's, and mount(8)'s own (dropped).
package struct MountOptions: Sendable, Equatable {
    package var verify = true
    package var fuse: [String] = []
    package let writable: Bool

    /// Options only mount(8) and fstab use; mount.asr passes them through.
    static let mountOnly: Set = ["defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev", "nofail", "ro"]

    package init(_ groups: [String], writable: Bool) throws(ImageFSError) {
        self.writable = writable
        for option in groups.flatMap({ $0.split(separator: ",").map(String.init) }) where !option.isEmpty {
            switch option {
            case "noverify": verify = false
            case "rw" where !writable: throw .readOnlyOption(option)
            case "rw": continue
            case _ where Self.mountOnly.contains(option) || option.hasPrefix("x-") || option.hasPrefix("comment="): continue
            default: fuse.append(option)
            }
        }
    }

    /// What FUSE is given for a mount of `name`: read-only or not, ours, then the user's.
    package func fuseOptions(name: String) -> [String] {
        [writable ? "rw" : "ro", "default_permissions", "subtype=asr", "fsname=" + Self.escape(name)] + fuse
    }

    /// libfuse splits options at commas; a backslash keeps one in a value.
    package static func escape(_ value: String) -> String {
        var out = ""
        for c in value {
            if c == "\\" || c == "," { out.append("\\") }
            out.append(c)
        }
        return out
    }
}

/// Where a mount's serving process records its pid, by mount point: /run/asr as root, else
/// the user's runtime directory. `asr unmount` reads it to wait for the process to end.
package enum MountRecord {
    /// Never a shared directory such as /tmp, where another user could plant records.
    package static var directory: String {
        if getuid() == 0 { return "/run/asr" }
        if let runtime = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"], !runtime.isEmpty { return runtime + "/asr" }
        if FileManager.default.fileExists(atPath: "/run/user/\(getuid())") { return "/run/user/\(getuid())/asr" }
        return NSHomeDirectory() + "/.local/state/asr"
    }

    package static func path(for mountPoint: String, in directory: String = directory) -> String {
        directory + "/mount" + escape(resolved(mountPoint)) + ".pid"
    }

    /// "/" becomes "-", and "-" and "%" are percent-encoded: a code no two mount points share
    /// ("/a-/b" and "/a/-b" differ).
    package static func escape(_ path: String) -> String {
        path.unicodeScalars.map { c in
            switch c {
            case "/": "-"
            case "-": "%2D"
            case "%": "%25"
            default: String(c)
            }
        }.joined()
    }

    /// The mount point as the kernel names it; as given when it cannot be resolved.
    static func resolved(_ path: String) -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard realpath(path, &buffer) != nil else { return path }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Records this process; a failure only costs `asr unmount` its wait.
    package static func write(_ path: String) {
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
                                                 attributes: [.posixPermissions: 0o700])
        try? "\(getpid())\n".write(toFile: path, atomically: true, encoding: .utf8)
    }

    /// The recorded pid, if that process still runs (a stale record names none).
    package static func read(_ path: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              isRunning(pid) else { return nil }
        return pid
    }

    /// Alive and not a zombie: a daemon's exit is reaped by init, maybe not at once.
    package static func isRunning(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)] != "Z"
    }

    /// Removes the record only if it is this process's: a later mount may have replaced it.
    package static func remove(_ path: String) {
        if read(path) == getpid() { unlink(path) }
    }

    /// Running mount processes whose mount point's path contains `text`.
    package static func running(mountPointContaining text: String, in directory: String = directory) -> [pid_t] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.sorted().filter { $0.hasPrefix("mount") && $0.hasSuffix(".pid") && $0.contains(escape(text)) }
            .compactMap { read(directory + "/" + $0) }
    }
}

/// The pipe on which a background mount process tells its parent how mounting went: "ready"
/// and a newline once mounted, or its error line. Lines starting "note: " come before either:
/// warnings the parent prints (a volume whose files cannot be shown) while mounting goes on.
package enum ReadyPipe {
    package enum Reply: Equatable, Sendable {
        case ready
        case failed(String)
        /// The process closed the pipe (or ended) without a word.
        case ended
    }

    package static func sendReady(_ fd: Int32) { send("ready\n", to: fd) }

    package static func sendFailure(_ message: String, to fd: Int32) { send(message + "\n", to: fd) }

    /// A warning for the parent to print; the pipe stays open.
    package static func sendNote(_ message: String, to fd: Int32) {
        let line = "note: " + message.replacingOccurrences(of: "\n", with: " ") + "\n"
        _ = try? retryingInterrupts { line.withCString { write(fd, $0, strlen($0)) } }
    }

    private static func send(_ text: String, to fd: Int32) {
        // One write of less than PIPE_BUF bytes arrives whole.
        _ = try? retryingInterrupts { text.withCString { write(fd, $0, strlen($0)) } }
        close(fd)
    }

    /// Reads up to the first line that is not a note, or the end, and closes `fd`; each note
    /// goes to `note` as it arrives.
    package static func awaitReply(_ fd: Int32, note: (String) -> Void = { _ in }) -> Reply {
        defer { close(fd) }
        var reply = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            while let newline = reply.firstIndex(of: UInt8(ascii: "\n")) {
                let line = String(decoding: reply[..<newline], as: UTF8.self)
                guard line.hasPrefix("note: ") else {
                    return line == "ready" ? .ready : .failed(line)
                }
                note(String(line.dropFirst(6)))
                reply.removeSubrange(...newline)
            }
            guard let n = try? retryingInterrupts({ read(fd, &buffer, buffer.count) }), n > 0 else { break }
            reply += buffer[0..<n]
        }
        let text = String(decoding: reply, as: UTF8.self)
        return text.isEmpty ? .ended : .failed(text.trimmingCharacters(in: .newlines))
    }
}

/// Background mounting: the command starts itself again in the foreground in a new session,
/// with a pipe on which the child says "ready" once mounted or sends its error line. The parent
/// exits 0 or 1 accordingly, so `asr mount` returns only when the mount is usable.
package enum MountDaemon {
    /// The descriptor the child's end of the ready pipe has.
    package static let readyFD: Int32 = 3

    /// `arguments` with the foreground flags after the verb, before any "--" that ends the options.
    package static func childArguments(_ arguments: [String], verb: String = "mount") -> [String] {
        var arguments = arguments
        let at = (arguments.firstIndex(of: verb) ?? 0) + 1
        arguments.insert(contentsOf: ["--foreground", "--ready-fd", String(readyFD)], at: min(at, arguments.count))
        return arguments
    }

    /// Starts this program again as the mount process and exits 0 once it is mounted; throws
    /// what it sent otherwise.
    package static func startInBackground(arguments: [String] = CommandLine.arguments) throws(ImageFSError) -> Never {
        // Only the ready pipe goes along: an inherited descriptor would make whoever waits on
        // the end of `asr mount` wait for the mount instead. This process exits soon anyway.
        closeOnExec()
        let (pid, reply) = try spawn("/proc/self/exe", arguments: childArguments(arguments))
        let outcome = ReadyPipe.awaitReply(reply) { FileHandle.standardError.write(Data(($0 + "\n").utf8)) }
        if outcome == .ready { Foundation.exit(0) }
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        if case .failed(let line) = outcome { throw .mountProcessFailed(line) }
        throw .mountProcessEnded
    }

    /// Spawns `executable` in a new session, standard streams on /dev/null and the write end
    /// of a new pipe as descriptor 3; returns its pid and the pipe's read end.
    package static func spawn(_ executable: String, arguments: [String]) throws(ImageFSError) -> (pid: pid_t, reply: Int32) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw .startMountProcess(Errno(rawValue: errno)) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        // dup2 onto itself would leave close-on-exec set: a pipe end already at 3 is left alone.
        for fd in fds where fd != readyFD { _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC) }
        if fds[1] != readyFD { posix_spawn_file_actions_adddup2(&actions, fds[1], readyFD) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, Kernel.spawnSetSID)
        var pid: pid_t = 0
        let cArguments = arguments.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        let status = posix_spawn(&pid, executable, &actions, &attributes, cArguments, environ)
        close(fds[1])
        guard status == 0 else {
            close(fds[0])
            throw .startMountProcess(Errno(rawValue: status))
        }
        return (pid, fds[0])
    }

    /// Marks every open descriptor but the standard ones close-on-exec.
    private static func closeOnExec() {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in names.compactMap({ Int32($0) }) where fd > 2 {
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
    }

    /// The mount process is mounted: the parent may exit, and errors go to syslog from now on.
    package static func ready(_ fd: Int32?) {
        guard let fd else { return }
        openlog("asr", LOG_PID, LOG_DAEMON)
        pending.withLock { $0 = nil }
        ReadyPipe.sendReady(fd)
    }

    /// The ready pipe while the mount is not ready yet: log lines go to the parent's standard error.
    private static let pending = Locked<Int32?>(nil)

    /// Where a mount process's log lines go: the parent's standard error until ready (as
    /// notes on the ready pipe `fd`), then syslog.
    package static func logger(readyFD fd: Int32) -> @Sendable (String) -> Void {
        pending.withLock { $0 = fd }
        return { line in
            let sent = pending.withLock { fd -> Bool in
                guard let fd else { return false }
                ReadyPipe.sendNote(line, to: fd)
                return true
            }
            if !sent { log(line) }
        }
    }

    /// The mount process failed before mounting: the parent prints `error` and exits 1, so this one ends too.
    package static func failed(_ fd: Int32?, _ error: any Error) {
        guard let fd else { return }
        pending.withLock { $0 = nil }
        ReadyPipe.sendFailure("\(error)", to: fd)
        Foundation.exit(1)
    }

    package static func log(_ message: String) {
        withVaList([message]) { vsyslog(LOG_ERR, "%s", $0) }
    }
}

/// `asr unmount`: fusermount3, then a wait for the mount's process (its --save-as, say).
package enum Unmounter {
    /// Unmounts `mountPoint`; unless `lazy`, returns once its process has ended. `waiting` is
    /// told the pid after 5 s; SIGINT/SIGTERM end the wait (not the process).
    package static func unmount(_ mountPoint: String, lazy: Bool, waiting: (pid_t) -> Void) throws(ImageFSError) {
        let pid = MountRecord.read(MountRecord.path(for: mountPoint))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        process.arguments = ["-u"] + (lazy ? ["-z"] : []) + ["--", mountPoint]
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch { throw .runFusermount(error.localizedDescription) }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw .unmount(point: mountPoint, reason: reason(fusermountSaid: message)) }
        guard let pid, !lazy else { return }
        // Another mount namespace holding a copy of the mount keeps the process serving.
        let started = Date()
        var told = false
        while MountRecord.isRunning(pid) {
            if Interruption.requested { throw .stoppedWaiting(pid: pid) }
            if !told, Date().timeIntervalSince(started) > 5 {
                waiting(pid)
                told = true
            }
            usleep(20_000)
        }
    }

    /// fusermount3's first line without its own name, which our message replaces.
    package static func reason(fusermountSaid text: String) -> String? {
        guard let line = text.split(separator: "\n").first else { return nil }
        let prefix = "fusermount3: "
        return String(line.hasPrefix(prefix) ? line.dropFirst(prefix.count) : line)
    }
}

/// Where the block map of an `asr mount`'s disk.img is: the mount's blockmap.bmap (an image's
/// view) or written.bmap (a writable disk). Imaging asks this through `BlockMap`'s lookup.
public enum MountedDisk {
    public static func blockMap(for imagePath: String) -> String? {
        guard (imagePath as NSString).lastPathComponent == "disk.img" else { return nil }
        let dir = (imagePath as NSString).deletingLastPathComponent
        return ["blockmap.bmap", "written.bmap"].map { dir.isEmpty ? $0 : dir + "/" + $0 }
            .first { FileManager.default.fileExists(atPath: $0) }
    }
}
