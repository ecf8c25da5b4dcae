import ArgumentParser
import Foundation
import ImageFS
import Imaging

struct Mount: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show an image as files through FUSE: the raw disk, its partitions, block map and checksums.",
        discussion: """
            IMAGE is a UDIF image, a raw image (its .bmap is used when present) or a block device. \
            The mount holds disk.img, partitions/<n>-<name>.img, blockmap.bmap, blockmap.json, \
            checksums.sha256 and info.plist, all read-only. A UDIF image's chunks are checked \
            against its CRC-32s (and its imagescan SHA-256s) before mounting, unless -o noverify. \
            Runs in the background once mounted, unless -f. SIGINT and SIGTERM unmount; so does \
            asr unmount MOUNTPOINT. Options for mount(8) only (defaults, noauto, user, nofail, \
            _netdev, x-*) are ignored, so /etc/fstab lines work through mount.asr.
            """)

    @Argument(help: "The image or block device.") var image: String
    @Argument(help: "An existing, empty directory.") var mountPoint: String
    @Option(name: .short, help: ArgumentHelp("Mount options, comma-separated (allow_other, noverify, ...).", valueName: "options"))
    var options: [String] = []
    @Flag(name: [.short, .customLong("foreground")], help: "Stay in the foreground.") var foreground = false
    @Option(help: .hidden) var readyFD: Int32?

    func run() throws {
        let parsed = try MountOptions(options)
        if !foreground { try Daemon.spawnAndWait() }
        // The mount outlives the working directory it was started from: name the image fully.
        let image = image.contains("://") ? image : URL(fileURLWithPath: image).standardizedFileURL.path
        var mounted = false
        do {
            let view = try ImageView(path: image, verify: parsed.verify)
            if readyFD != nil { view.log = { Daemon.log($0) } }
            let mount = try FuseMount(fileSystem: view, mountPoint: mountPoint,
                                      options: ["ro", "default_permissions", "subtype=asr", "fsname=" + MountOptions.escape(image)] + parsed.fuse)
            try mount.run {
                mounted = true
                Daemon.ready(readyFD)
            }
        } catch {
            if !mounted { Daemon.failed(readyFD, error) }
            throw error
        }
    }
}

struct Unmount: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Unmount what asr mount mounted.")

    @Argument(help: "The mount point.") var mountPoint: String
    @Flag(name: [.short, .customLong("lazy")], help: "Detach now, release when no longer busy.") var lazy = false

    func run() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/fusermount3")
        process.arguments = ["-u"] + (lazy ? ["-z"] : []) + ["--", mountPoint]
        let errors = Pipe()
        process.standardError = errors
        do { try process.run() } catch { throw ImagingError("cannot run fusermount3: \(error.localizedDescription)") }
        let message = String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let line = message.split(separator: "\n").first.map { String($0).replacingOccurrences(of: "fusermount3: ", with: "") }
            throw ImagingError("cannot unmount \(mountPoint): \(line ?? "fusermount3 failed")")
        }
    }
}

/// `-o` options split into ours, FUSE's, and mount(8)'s own (dropped).
struct MountOptions {
    var verify = true
    var fuse: [String] = []

    init(_ groups: [String]) throws {
        let mountOnly: Set = ["defaults", "auto", "noauto", "user", "users", "nouser", "owner", "group", "_netdev", "nofail", "ro"]
        for option in groups.flatMap({ $0.split(separator: ",").map(String.init) }) where !option.isEmpty {
            switch option {
            case "noverify": verify = false
            case "rw": throw ImagingError("asr mount of an image is read-only; -o rw is not possible")
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
        guard pipe(&fds) == 0 else { throw ImagingError("cannot create a pipe: \(String(cString: strerror(errno)))") }
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
        guard status == 0 else { throw ImagingError("cannot start the mount process: \(String(cString: strerror(status)))") }
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
        throw ImagingError(text.isEmpty ? "the mount process ended without mounting" : text.trimmingCharacters(in: .newlines))
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
