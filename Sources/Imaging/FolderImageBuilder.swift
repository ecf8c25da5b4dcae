import SystemSupport
import Foundation
import UDIF

public enum FolderFilesystem: String, Sendable, CaseIterable {
    case ext4
    case fat32
}

/// Makes a raw filesystem image from a folder tree with the real tools: `mke2fs -d` for ext4,
/// `mkfs.vfat` then `mcopy` for FAT32. No filesystem is written by hand here.
struct FolderImageBuilder {
    var folder: String
    var filesystem: FolderFilesystem
    var volumeName: String?
    /// nil: size the filesystem from the tree, growing and retrying if the tool runs out of room.
    var size: UInt64?

    /// Returns the path of a sparse raw image in `directory`; the caller deletes it.
    func build(inDirectory directory: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDir), isDir.boolValue else {
            throw ImagingError.folder("source folder \(folder) does not exist or is not a directory")
        }
        let usage = try TreeUsage.measure(folder)
        if filesystem == .fat32, let problem = usage.fatProblem {
            throw ImagingError.folder("FAT32 cannot hold \(problem); use --fs ext4")
        }
        let path = (directory as NSString).appendingPathComponent(".asr-srcfolder-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).raw")
        var attempt = size ?? autoSize(usage)
        for round in 0..<5 {
            do {
                try makeImage(at: path, size: attempt)
                return path
            } catch {
                unlink(path)
                guard case ImagingError.tool(_, .noSpace) = error, size == nil, round < 4 else { throw error }
                attempt = roundUpMiB(attempt + attempt / 2)
            }
        }
        throw ImagingError.folder("could not fit \(folder) into a filesystem")
    }

    func autoSize(_ usage: TreeUsage) -> UInt64 {
        switch filesystem {
        case .ext4:
            // data in 4 KiB blocks, inode tables, the journal (mke2fs picks 4-64 MiB), slack.
            let data = usage.blockBytes(4096) + usage.entries * 256
            let journal: UInt64 = data < (128 << 20) ? 4 << 20 : data < (1 << 30) ? 32 << 20 : 64 << 20
            return roundUpMiB(data + data / 10 + journal + (8 << 20))
        case .fat32:
            // FAT32 needs about 65525 clusters; below 260 MiB mkfs.vfat uses 512-byte clusters.
            let data = usage.blockBytes(4096) + usage.entries * 64
            return max(roundUpMiB(data + data / 8 + (4 << 20)), 64 << 20)
        }
    }

    private func roundUpMiB(_ v: UInt64) -> UInt64 { (v + (1 << 20) - 1) / (1 << 20) * (1 << 20) }

    private func makeImage(at path: String, size: UInt64) throws {
        let file = try FileIO(path: path, flags: O_RDWR | O_CREAT | O_TRUNC, mode: 0o600)
        try file.truncate(to: size)
        switch filesystem {
        case .ext4:
            var args = ["-q", "-F", "-t", "ext4", "-d", folder]
            if let volumeName { args += ["-L", volumeName] }
            try Tool.run("mke2fs", args + [path], what: "mke2fs")
        case .fat32:
            var args = ["-F", "32"]
            if let volumeName { args += ["-n", String(volumeName.uppercased().prefix(11))] }
            try Tool.run("mkfs.vfat", args + [path], what: "mkfs.vfat")
            let entries = try FileManager.default.contentsOfDirectory(atPath: folder).sorted()
            if !entries.isEmpty {
                let paths = entries.map { (folder as NSString).appendingPathComponent($0) }
                try Tool.run("mcopy", ["-s", "-p", "-m", "-Q", "-i", path] + paths + ["::/"], what: "mcopy",
                             environment: ["MTOOLS_SKIP_CHECK": "1", "LC_ALL": "C.UTF-8"])
            }
        }
    }
}

/// What a folder tree needs on disk.
struct TreeUsage {
    var entries: UInt64 = 0
    var fileSizes: [UInt64] = []
    /// The first entry FAT32 cannot store, described for the user.
    var fatProblem: String?

    func blockBytes(_ block: UInt64) -> UInt64 {
        fileSizes.reduce(0) { $0 + ($1 + block - 1) / block * block } + entries * block / 8
    }

    static func measure(_ root: String) throws -> TreeUsage {
        var usage = TreeUsage()
        guard let walker = FileManager.default.enumerator(atPath: root) else {
            throw ImagingError.folder("cannot read folder \(root)")
        }
        var namesByFolder: [String: Set<String>] = [:]
        while let rel = walker.nextObject() as? String {
            usage.entries += 1
            var st = stat()
            guard lstat(root + "/" + rel, &st) == 0 else { continue }
            switch st.st_mode & S_IFMT {
            case S_IFREG:
                usage.fileSizes.append(UInt64(st.st_size))
                if st.st_size >= 1 << 32 { usage.fatProblem = usage.fatProblem ?? "\"\(rel)\": files of 4 GiB or more" }
            case S_IFDIR: break
            case S_IFLNK: usage.fatProblem = usage.fatProblem ?? "the symbolic link \"\(rel)\""
            default: usage.fatProblem = usage.fatProblem ?? "the special file \"\(rel)\""
            }
            // Split by hand: Foundation's path helpers trap on some legal names.
            let slash = rel.lastIndex(of: "/")
            let name = slash.map { String(rel[rel.index(after: $0)...]) } ?? rel
            let folder = slash.map { String(rel[..<$0]) } ?? ""
            if name.unicodeScalars.contains(where: { $0.value < 0x20 || "\"*/:<>?\\|".unicodeScalars.contains($0) }) {
                usage.fatProblem = usage.fatProblem ?? "\"\(rel)\": FAT names cannot contain \" * : < > ? \\ | or control characters"
            }
            if !namesByFolder[folder, default: []].insert(name.lowercased()).inserted {
                usage.fatProblem = usage.fatProblem ?? "\"\(rel)\": FAT names ignore case and another entry has the same name"
            }
        }
        return usage
    }
}

/// Runs a system tool and turns its failure into one line, with the tool's last message.
enum Tool {
    static func run(_ name: String, _ args: [String], what: String, environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [name] + args
        var env = ProcessInfo.processInfo.environment
        env["PATH"] = (env["PATH"] ?? "/usr/bin:/bin") + ":/usr/sbin:/sbin"
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let errPipe = Pipe()
        process.standardError = errPipe
        process.standardOutput = errPipe
        do { try process.run() } catch { throw ImagingError.tool(name: name, .cannotRun(error.localizedDescription)) }
        let output = errPipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let text = String(decoding: output, as: UTF8.self)
            if process.terminationStatus == 127 { throw ImagingError.tool(name: name, .notInstalled) }
            let lower = text.lowercased()
            if lower.contains("no space") || lower.contains("could not allocate") || lower.contains("disk full")
                || lower.contains("not enough") || lower.contains("too small") || lower.contains("no free space") {
                throw ImagingError.tool(name: what, .noSpace)
            }
            let last = text.split(separator: "\n").last.map(String.init) ?? "exit status \(process.terminationStatus)"
            throw ImagingError.tool(name: what, .failed(last))
        }
    }
}
