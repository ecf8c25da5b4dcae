import SystemSupport
import ArgumentParser
import Foundation
import ImageFS
import Imaging
import UDIF

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an image as files through FUSE, or a writable disk: target or copy-on-write overlay.",
        discussion: """
            asr mount IMAGE MOUNTPOINT: IMAGE is a UDIF image, a raw image (its .bmap is used when \
            present) or a block device. The mount holds disk.img, partitions/<n>-<name>.img, \
            blockmap.bmap, blockmap.json, checksums.sha256 and info.plist, all read-only. A UDIF \
            image's chunks are checked against its CRC-32s (and its imagescan SHA-256s) before \
            mounting, unless -o noverify.

            asr mount --target BACKING [--size SIZE] MOUNTPOINT: a writable disk.img of SIZE bytes \
            kept in the sparse file BACKING, with live written.bmap and status.json beside it. \
            asr mount --overlay IMAGE --cow CHANGES MOUNTPOINT: the image's disk made writable, \
            writes kept in the sparse file CHANGES; the image is never written. --save-as packs \
            the writable disk into a scanned UDZO image when it is unmounted.

            Runs in the background once mounted, unless -f. SIGINT, SIGTERM and asr unmount \
            unmount. Options for mount(8) only (defaults, noauto, user, nofail, _netdev, x-*) are \
            ignored, so /etc/fstab lines work through mount.asr.
            """)

    @Argument(help: ArgumentHelp("IMAGE MOUNTPOINT, or only MOUNTPOINT with --target or --overlay.", valueName: "paths"))
    var paths: [String]
    @Option(name: .short, help: ArgumentHelp("Mount options, comma-separated (allow_other, noverify, ...).", valueName: "options"))
    var options: [String] = []
    @Flag(name: [.short, .customLong("foreground")], help: "Stay in the foreground.") var foreground = false
    @Option(help: ArgumentHelp("A writable disk kept in this sparse file.", valueName: "backing")) var target: String?
    @Option(help: "The size of the --target disk (bytes, or K, M, G, T); an existing backing file has its own.") var size: String?
    @Option(help: ArgumentHelp("Make this image writable; writes go to --cow.", valueName: "image")) var overlay: String?
    @Option(help: ArgumentHelp("The copy-on-write file of --overlay.", valueName: "changes")) var cow: String?
    @Option(help: ArgumentHelp("On unmount, pack the writable disk into this scanned UDZO image.", valueName: "image.dmg"))
    var saveAs: String?
    @Option(help: .hidden) var readyFD: Int32?

    func validate() throws {
        let writable = target != nil || overlay != nil
        if target != nil && overlay != nil { throw ValidationError("give --target or --overlay, not both") }
        if paths.count != (writable ? 1 : 2) {
            throw ValidationError(writable ? "give only the mount point with --target or --overlay" : "give IMAGE and MOUNTPOINT")
        }
        if (overlay == nil) != (cow == nil) { throw ValidationError("--overlay and --cow go together") }
        if size != nil && target == nil { throw ValidationError("--size goes with --target") }
        if saveAs != nil && !writable { throw ValidationError("--save-as goes with --target or --overlay") }
    }

    func run() throws {
        let parsed = try MountOptions(options, writable: target != nil || overlay != nil)
        if !foreground { try Daemon.spawnAndWait() }
        let mountPoint = paths.last!
        var mounted = false
        do {
            if target == nil && overlay == nil {
                // The mount outlives the working directory it was started from: name the image fully.
                let name = absolute(paths[0])
                let view = try ImageView(path: name, verify: parsed.verify)
                if readyFD != nil { view.log = { Daemon.log($0) } }
                try mountAndServe(view, name: name, at: mountPoint, parsed) { mounted = true }
                return
            }
            let disk = if let target {
                try WritableDisk.target(backing: absolute(target), size: try size.map(ByteSize.parse))
            } else {
                try WritableDisk.overlay(image: absolute(overlay!), changes: absolute(cow!))
            }
            try mountAndServe(disk, name: absolute(target ?? overlay!), at: mountPoint, parsed) { mounted = true }
            if let saveAs { try disk.save(as: absolute(saveAs)) }
        } catch {
            if !mounted { Daemon.failed(readyFD, error) }
            // In the background standard error is gone; a failed --save-as still gets told.
            if readyFD != nil { Daemon.log("asr mount: \(error)") }
            throw error
        }
    }

    private func absolute(_ path: String) -> String {
        path.contains("://") ? path : URL(fileURLWithPath: path).standardizedFileURL.path
    }

    /// Mounts `fileSystem`, says ready, serves until unmounted; the pid file lets
    /// `asr unmount` wait for this process to finish (a --save-as, say).
    private func mountAndServe(_ fileSystem: any FileSystem, name: String, at mountPoint: String, _ parsed: MountOptions,
                               onMounted: () -> Void) throws {
        let base = parsed.writable ? ["rw"] : ["ro"]
        let mount = try FuseMount(fileSystem: fileSystem, mountPoint: mountPoint,
                                  options: base + ["default_permissions", "subtype=asr", "fsname=" + MountOptions.escape(name)] + parsed.fuse)
        let pidFile = MountRecord.path(for: mountPoint)
        try mount.run {
            MountRecord.write(pidFile)
            onMounted()
            Daemon.ready(readyFD)
        }
        MountRecord.remove(pidFile)
    }
}

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Unmount what asr mount mounted, and wait for its process to finish.",
        discussion: "Waits for a --save-as image to be written before returning.")

    @Argument(help: "The mount point.") var mountPoint: String
    @Flag(name: [.short, .customLong("lazy")], help: "Detach now, release when no longer busy.") var lazy = false

    func run() throws {
        let pid = MountRecord.read(MountRecord.path(for: mountPoint))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        process.arguments = ["-u"] + (lazy ? ["-z"] : []) + ["--", mountPoint]
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch { throw ImageFSError("cannot run fusermount3: \(error.localizedDescription)") }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let line = message.split(separator: "\n").first.map { String($0).replacingOccurrences(of: "fusermount3: ", with: "") }
            throw ImageFSError("cannot unmount \(mountPoint): \(line ?? "fusermount3 failed")")
        }
        guard let pid, !lazy else { return }
        // Another mount namespace holding a copy of the mount keeps the process serving; say
        // what is awaited, and let SIGINT/SIGTERM end the wait (not the process).
        let started = Date()
        var told = false
        while MountRecord.isRunning(pid) {
            if Interruption.requested { throw ImageFSError("stopped waiting; the mount process \(pid) still runs") }
            if !told, Date().timeIntervalSince(started) > 5 {
                FileHandle.standardError.write(Data("asr: waiting for the mount process \(pid) to finish (a --save-as, or another mount namespace still holding \(mountPoint))\n".utf8))
                told = true
            }
            usleep(20_000)
        }
    }
}

/// Where a mount's serving process records its pid, by mount point: /run/asr as root, else
/// the user's runtime directory.
enum MountRecord {
    static func path(for mountPoint: String) -> String {
        var resolved = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let full = realpath(mountPoint, &resolved) != nil
            ? String(decoding: resolved.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : mountPoint
        let directory = getuid() == 0 ? "/run/asr" : (ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"] ?? NSTemporaryDirectory()) + "/asr"
        let name = full.unicodeScalars.map { $0 == "/" ? "-" : ($0 == "-" ? "--" : String($0)) }.joined()
        return directory + "/mount" + name + ".pid"
    }

    static func write(_ path: String) {
        try? FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try? "\(getpid())\n".write(toFile: path, atomically: true, encoding: .utf8)
    }

    static func read(_ path: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8), let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)),
              isRunning(pid) else { return nil }
        return pid
    }

    /// Alive and not a zombie: a daemon's exit is reaped by init, maybe not at once.
    static func isRunning(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0, let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(close, offsetBy: 2)] != "Z"
    }

    static func remove(_ path: String) {
        if read(path) == getpid() { unlink(path) }
    }
}

/// `-o` options split into ours, FUSE's, and mount(8)'s own (dropped).
struct MountOptions {
    var verify = true
    var fuse: [String] = []
    let writable: Bool

    init(_ groups: [String], writable: Bool) throws {
        self.writable = writable
        let mountOnly: Set = ["defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev", "nofail", "ro"]
        for option in groups.flatMap({ $0.split(separator: ",").map(String.init) }) where !option.isEmpty {
            switch option {
            case "noverify": verify = false
            case "rw" where !writable: throw ImageFSError("asr mount of an image is read-only; -o rw is not possible (see --overlay)")
            case "rw": continue
            case _ where mountOnly.contains(option) || option.hasPrefix("x-") || option.hasPrefix("comment="): continue
            default: fuse.append(option)
            }
        }
    }

    /// libfuse splits options at commas; a backslash keeps one in a value.
    static func escape(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: ",", with: "\\,")
    }
}

/// Background mounting: the command starts itself again in the foreground in a new session,
/// with a pipe on which the child says "ready" once mounted or sends its error line. The parent
/// exits 0 or 1 accordingly, so `asr mount` returns only when the mount is usable.
enum Daemon {
    static func spawnAndWait() throws -> Never {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw ImageFSError("cannot create a pipe: \(String(cString: strerror(errno)))") }
        // Before any "--", which ends the options.
        var arguments = CommandLine.arguments
        let verb = (arguments.firstIndex(of: "mount") ?? 0) + 1
        arguments.insert(contentsOf: ["--foreground", "--ready-fd", "3"], at: verb)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for fd: Int32 in 0...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0) }
        // Only the ready pipe goes along: an inherited descriptor would make whoever waits
        // on the end of `asr mount` wait for the mount instead.
        closeOnExec(except: fds[1] == 3 ? 3 : -1)
        if fds[1] != 3 { posix_spawn_file_actions_adddup2(&actions, fds[1], 3) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        posix_spawnattr_setflags(&attributes, 0x80)  // POSIX_SPAWN_SETSID: glibc hides it without _GNU_SOURCE)
        var pid: pid_t = 0
        let cArguments = arguments.map { strdup($0) } + [nil]
        defer { cArguments.forEach { free($0) } }
        let status = posix_spawn(&pid, "/proc/self/exe", &actions, &attributes, cArguments, environ)
        close(fds[1])
        guard status == 0 else { throw ImageFSError("cannot start the mount process: \(String(cString: strerror(status)))") }
        var reply = [UInt8]()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while !reply.contains(UInt8(ascii: "\n")) {
            let n = read(fds[0], &buffer, buffer.count)
            if n > 0 { reply += buffer[0..<n] } else if n < 0 && errno == EINTR { continue } else { break }
        }
        close(fds[0])
        let text = String(decoding: reply, as: UTF8.self)
        if text == "ready\n" { Foundation.exit(0) }
        var childStatus: Int32 = 0
        waitpid(pid, &childStatus, 0)
        throw ImageFSError(text.isEmpty ? "the mount process ended without mounting" : text.trimmingCharacters(in: .newlines))
    }

    /// Marks every open descriptor but `keep` close-on-exec; this process exits soon anyway.
    private static func closeOnExec(except keep: Int32) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
        for fd in names.compactMap({ Int32($0) }) where fd > 2 && fd != keep {
            _ = fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC)
        }
    }

    static func ready(_ fd: Int32?) {
        guard let fd else { return }
        _ = "ready\n".withCString { write(fd, $0, 6) }
        close(fd)
        openlog("asr", LOG_PID, LOG_DAEMON)
    }

    static func failed(_ fd: Int32?, _ error: any Error) {
        guard let fd else { return }
        let line = "\(error)\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        close(fd)
        Foundation.exit(1)
    }

    static func log(_ message: String) {
        withVaList([message]) { vsyslog(LOG_ERR, "%s", $0) }
    }
}
