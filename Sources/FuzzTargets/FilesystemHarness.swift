import Filesystems
import Foundation
import UDIF

/// A partition held in memory, read as a disk is.
public struct MemoryBytes: ByteSource {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var byteCount: UInt64 { UInt64(bytes.count) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= byteCount, UInt64(buffer.count) <= byteCount - offset else {
            throw UDIFError.outOfRange(offset: offset, count: buffer.count, diskBytes: byteCount)
        }
        let start = Int(offset)
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<(start + buffer.count)])) }
    }
}

/// `FilesystemUsage.examine` over a partition's bytes: the Swift parsers (FAT, HFS+, swap,
/// the ext and NTFS superblock checks) and, past those checks, libext2fs and libntfs-3g.
enum FilesystemHarness {
    static func examine(_ input: [UInt8]) throws {
        let length = UInt64(input.count)
        let finding = FilesystemUsage.examine(MemoryBytes(input), offset: 0, length: length)
        switch finding {
        case .mapped(let map):
            try check(map.length == length, "map of \(map.length) bytes for a \(length)-byte partition")
            var end: UInt64? = nil
            for r in map.allocated {
                try check(!r.isEmpty && r.upperBound <= length, "range \(r) outside 0..<\(length)")
                if let end { try check(r.lowerBound > end, "ranges unsorted, overlapping or unmerged at \(r)") }
                end = r.upperBound
            }
            try check(!map.method.isEmpty && !map.filesystem.isEmpty, "map without a name or method")
        case .unreadable(let name, let reason):
            try check(!name.isEmpty && !reason.isEmpty && !reason.contains("\n"), "reason \(reason.debugDescription) for \(name)")
        case .unmapped, .unknown:
            break
        }
        // The same partition inside a larger source, at an odd offset: the same finding.
        let shifted = [UInt8](repeating: 0xEE, count: 512) + input + [0xEE]
        try check(FilesystemUsage.examine(MemoryBytes(shifted), offset: 512, length: length) == finding,
                  "a different finding at offset 512 of a larger source")
    }
}

/// Small filesystems for the seeds, made by the real tools (mke2fs, mkfs.fat with mtools,
/// mkntfs, mkswap) in a temporary folder, and the HFS+ partition of each fixture image.
enum FilesystemSeeds {
    static func all(images: [[UInt8]]) -> [[UInt8]] { made + images.prefix(1).compactMap(hfsPartition) }

    /// The fixture's HFS+ partition: the blkx region hdiutil named Apple_HFS.
    static func hfsPartition(_ bytes: [UInt8]) -> [UInt8]? {
        guard let image = try? UDIFImage(file: MemoryFile(bytes)),
              let region = image.regions.first(where: { $0.name.contains("Apple_HFS") }) else { return nil }
        return try? image.read(at: region.table.firstSector * 512, count: Int(region.table.sectorCount * 512))
    }

    /// Made once per process; empty entries where a tool is missing (a test names them).
    static let made: [[UInt8]] = {
        let dir = NSTemporaryDirectory() + "asr-fs-seeds-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let file = dir + "/file.txt"
        _ = FileManager.default.createFile(atPath: file, contents: Data(Seeds.text.prefix(5000)))
        try? FileManager.default.createDirectory(atPath: dir + "/tree/sub", withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: dir + "/tree/sub/file.txt", contents: Data(Seeds.text.prefix(3000)))
        var seeds: [[UInt8]] = []
        func make(_ name: String, size: Int, _ commands: [[String]]) {
            let path = dir + "/" + name
            guard FileManager.default.createFile(atPath: path, contents: nil),
                  (try? FileHandle(forWritingTo: URL(fileURLWithPath: path)).truncate(atOffset: UInt64(size))) != nil else { return }
            for c in commands { guard run(c.map { $0.replacingOccurrences(of: "IMG", with: path) }) else { return } }
            if let data = FileManager.default.contents(atPath: path) { seeds.append([UInt8](data)) }
        }
        make("ext4", size: 256 << 10, [["mke2fs", "-q", "-F", "-t", "ext4", "-d", dir + "/tree", "IMG"]])
        make("ext2", size: 128 << 10, [["mke2fs", "-q", "-F", "-t", "ext2", "-d", dir + "/tree", "IMG"]])
        make("fat12", size: 64 << 10, [["mkfs.fat", "-F", "12", "IMG"], ["mcopy", "-i", "IMG", file, "::/file.txt"]])
        make("fat16", size: 4200 << 10, [["mkfs.fat", "-F", "16", "-s", "1", "IMG"], ["mcopy", "-i", "IMG", file, "::/file.txt"]])
        make("ntfs", size: 2 << 20, [["mkntfs", "-F", "-f", "-Q", "-q", "IMG"], ["ntfscp", "-q", "IMG", file, "file.txt"]])
        make("swap", size: 40 << 10, [["mkswap", "IMG"]])
        return seeds
    }()

    /// ext4 and ext2 trees with what the volumes/ reader must handle: a symlink in the inode
    /// and one in a block, a hard link, an extended attribute, a sparse file.
    static let extTrees: [[UInt8]] = {
        let dir = NSTemporaryDirectory() + "asr-ext-seeds-" + UUID().uuidString
        let tree = dir + "/tree"
        try? FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = FileManager.default.createFile(atPath: tree + "/sub/file.txt", contents: Data(Seeds.text.prefix(5000)))
        try? FileManager.default.createSymbolicLink(atPath: tree + "/short", withDestinationPath: "sub/file.txt")
        try? FileManager.default.createSymbolicLink(atPath: tree + "/long", withDestinationPath: String(repeating: "d/", count: 60) + "file")
        try? FileManager.default.linkItem(atPath: tree + "/sub/file.txt", toPath: tree + "/hard")
        _ = run(["setfattr", "-n", "user.seed", "-v", "value", tree + "/sub/file.txt"])
        _ = run(["truncate", "-s", "300000", tree + "/sparse"])
        var seeds: [[UInt8]] = []
        for (type, size) in [("ext4", 512 << 10), ("ext2", 256 << 10)] {
            let path = dir + "/" + type
            guard FileManager.default.createFile(atPath: path, contents: nil),
                  (try? FileHandle(forWritingTo: URL(fileURLWithPath: path)).truncate(atOffset: UInt64(size))) != nil,
                  run(["mke2fs", "-q", "-F", "-t", type, "-d", tree, path]),
                  let data = FileManager.default.contents(atPath: path) else { continue }
            seeds.append([UInt8](data))
        }
        return seeds
    }()

    static func run(_ arguments: [String]) -> Bool {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["LC_ALL"] = "C.UTF-8"
        environment["MTOOLS_SKIP_CHECK"] = "1"
        p.environment = environment
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        p.waitUntilExit()
        return p.terminationStatus == 0
    }
}
