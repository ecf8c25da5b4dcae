import SystemSupport
import Filesystems
import Foundation
import UDIF

/// `asr create`: a UDIF image from a raw image, a block device, a mounted filesystem (its
/// device) or a folder tree (through a real filesystem made by mke2fs or mkfs.vfat).
public struct ImageCreator {
    public var format: ImageFormat = .udzo
    /// UDZO's zlib (libdeflate) level: 1...12.
    public var zlibLevel: Int32 = 6
    /// Decoded bytes per chunk; hdiutil writes 1 MiB. See `chunkSizes`.
    public var chunkSize: UInt64 = 1 << 20
    public var overwrite = false
    /// Image a read-write mounted filesystem anyway (its contents may change under us).
    public var force = false
    public var reporter = Reporter(.quiet)
    /// Image every block, free space included (`--all-blocks`): no filesystem is examined.
    public var allBlocks = false
    /// What a partition's filesystem has allocated. Tests hand in maps of their own.
    public var examine: @Sendable (_ source: any ByteSource, _ offset: UInt64, _ length: UInt64) -> FilesystemFinding = {
        FilesystemUsage.examine($0, offset: $1, length: $2)
    }
    /// Free runs shorter than this are read as data: an ignore chunk per small gap would
    /// cost more table than it saves.
    public static let minimumFreeRun: UInt64 = 64 << 10

    public init() {}

    public func create(source path: String, output: String) throws -> WriteSummary {
        try checkOutput(output, source: path)
        let device = try resolveMountPoint(path)
        let source = try ImageSource.open(device)
        return try write(source.bytes, to: output)
    }

    public func create(folder: String, output: String, filesystem: FolderFilesystem, volumeName: String?,
                       size: UInt64?) throws -> WriteSummary {
        try checkOutput(output, source: nil)
        let builder = FolderImageBuilder(folder: folder, filesystem: filesystem, volumeName: volumeName, size: size)
        let dir = (output as NSString).deletingLastPathComponent
        let raw = try builder.build(inDirectory: dir.isEmpty ? "." : dir)
        defer { unlink(raw) }
        let file = try FileIO(path: raw, flags: O_RDONLY)
        return try write(RawSource(file: file, byteCount: try file.size()), to: output)
    }

    /// An image of any readable disk (a FUSE writable disk, for one).
    public func create(bytes source: any ByteSource, output: String) throws -> WriteSummary {
        try checkOutput(output, source: nil)
        return try write(source, to: output)
    }

    /// Chunk sizes we write: whole sectors from 64 KiB (small chunks let an incremental restore
    /// fetch less of a scattered update) up to the largest chunk our reader accepts.
    public static let chunkSizes: ClosedRange<UInt64> = (64 << 10)...UDIFImage.maxChunkBytes

    /// A `--zlib-level` value: 1...12, libdeflate's range.
    public static func parseZlibLevel(_ text: String) throws(ImagingError) -> Int32 {
        guard let level = Int32(text), (1...12).contains(level) else { throw .invalidZlibLevel(text) }
        return level
    }

    /// A `--chunk-size` value ("16M", "4194304").
    public static func parseChunkSize(_ text: String) throws(ImagingError) -> UInt64 {
        guard let bytes = try? ByteSize.parse(text), chunkSizes.contains(bytes), bytes % sectorSize == 0 else {
            throw .invalidChunkSize(text)
        }
        return bytes
    }

    /// Examines every partition (or the whole disk) unless `allBlocks`, then writes the image
    /// with the free space found left out as ignore chunks.
    func write(_ source: any ByteSource, to output: String) throws -> WriteSummary {
        let plans = try PartitionMap.regions(of: source)
        let (free, usage) = survey(source, plans)
        return try write(source, to: output, regions: plans, ignore: free, usage: usage)
    }

    /// Writes the image: `ignore` (disk byte ranges) become ignore chunks, `usage` is stored
    /// as the image's usage record.
    func write(_ source: any ByteSource, to output: String, regions: [RegionPlan]? = nil, ignore: [Range<UInt64>],
               usage: UsageData?) throws -> WriteSummary {
        guard Self.chunkSizes.contains(chunkSize), chunkSize % sectorSize == 0 else { throw ImagingError.invalidChunkSize(String(chunkSize)) }
        var writer = ImageWriter(format: format)
        writer.chunkSectors = chunkSize / sectorSize
        writer.zlibLevel = zlibLevel
        writer.regions = regions
        writer.ignore = ignore
        if let file = (source as? RawSource)?.file as? FileIO {
            writer.dataExtents = file.dataExtents(upTo: source.byteCount).map { $0.offset..<($0.offset + $0.length) }
        }
        if let usage { writer.extraResources = usage.resources() }
        reporter.begin("\tCreating  ", key: "create")
        defer { reporter.abandon() }
        let summary = try writer.write(from: source, to: output) { done, total in reporter.update(done, of: total) }
        reporter.end()
        return summary
    }

    /// Each partition's filesystem and its free runs (disk byte ranges), with one line per
    /// partition for the user; nothing when `allBlocks`, but the record says so.
    func survey(_ source: any ByteSource, _ plans: [RegionPlan]) -> (free: [Range<UInt64>], usage: UsageData) {
        var free: [Range<UInt64>] = []
        var records: [UsageData.Record] = []
        for plan in plans {
            let number: Int
            switch plan.role {
            case .partition(let n): number = n
            case .wholeDisk: number = 0
            case .mapStructure, .free: continue  // kept as they are
            }
            let offset = plan.firstSector * sectorSize, length = plan.sectorCount * sectorSize
            let label = number == 0 ? "disk" : "partition \(number)"
            var record = UsageData.Record(partition: UInt16(clamping: number), firstSector: plan.firstSector, sectorCount: plan.sectorCount,
                                          finding: .notExamined, filesystem: "", method: "", reason: "", allocatedBytes: length,
                                          ignoredBytes: 0)
            if allBlocks {
                record.reason = "all blocks imaged (--all-blocks)"
                records.append(record)
                continue
            }
            switch examine(source, offset, length) {
            case .mapped(let map):
                let runs = Self.freeRuns(map, length: length)
                free += runs.map { (offset + $0.lowerBound)..<(offset + $0.upperBound) }
                record.finding = .mapped
                record.filesystem = map.filesystem
                record.method = map.method
                record.allocatedBytes = min(map.allocatedBytes, length)
                record.ignoredBytes = runs.reduce(0) { $0 + UInt64($1.count) }
                reporter.info("\(label) (\(map.filesystem)): \(ByteSize.format(record.allocatedBytes)) of \(ByteSize.format(length)) in use, "
                              + "found from \(map.method); \(ByteSize.format(record.ignoredBytes)) of free space left out")
            case .unmapped(let filesystem):
                record.finding = .unmapped
                record.filesystem = filesystem
                record.reason = "asr does not read \(filesystem) allocation"
            case .unreadable(let filesystem, let reason):
                record.finding = .unreadable
                record.filesystem = filesystem
                record.reason = "its \(filesystem) structures are unreadable (\(reason))"
            case .unknown:
                record.finding = .unknown
                record.reason = "no filesystem recognised"
            }
            if record.finding != .mapped {
                let name = record.filesystem.isEmpty ? "" : " (\(record.filesystem))"
                reporter.info("\(label)\(name): \(ByteSize.format(length)) imaged whole: \(record.reason)")
            }
            records.append(record)
        }
        return (free, UsageData(records: records))
    }

    /// The runs of a partition of `length` bytes that `map` leaves unallocated, shrunk inward
    /// to whole sectors, each at least `minimum` bytes; relative to the partition. The map is
    /// sorted and clipped first: it comes from parsing the disk.
    public static func freeRuns(_ map: UsageMap, length: UInt64, minimum: UInt64 = minimumFreeRun) -> [Range<UInt64>] {
        var runs: [Range<UInt64>] = []
        var pos: UInt64 = 0
        func gap(_ end: UInt64) {
            let lower = (pos + sectorSize - 1) / sectorSize * sectorSize, upper = end / sectorSize * sectorSize
            if upper > lower, upper - lower >= minimum { runs.append(lower..<upper) }
        }
        for used in map.allocated.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            let lower = min(used.lowerBound, length), upper = min(used.upperBound, length)
            if lower > pos { gap(lower) }
            pos = max(pos, upper)
        }
        if length > pos { gap(length) }
        return runs
    }

    /// Refuses to overwrite an existing file silently, or to write onto the source itself.
    /// `allowStreams`: a device, pipe or "-" is fine (raw output); images need a regular file.
    func checkOutput(_ output: String, source: String?, allowStreams: Bool = false) throws {
        if let source, (source as NSString).standardizingPath == (output as NSString).standardizingPath {
            throw ImagingError.unusableOutput(path: output, "is the source")
        }
        var st = stat()
        if output == "-" || (stat(output, &st) == 0 && st.st_mode & S_IFMT != S_IFREG) {
            guard allowStreams else { throw ImagingError.unusableOutput(path: output, "is not a regular file; images are written to files") }
            return
        }
        if FileManager.default.fileExists(atPath: output), !overwrite {
            throw ImagingError.unusableOutput(path: output, "already exists; pass --overwrite to replace it")
        }
    }

    /// A mount point stands for the block device mounted there.
    func resolveMountPoint(_ path: String) throws -> String {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir), isDir.boolValue else { return path }
        guard let mount = try MountEntry.at(path) else {
            throw ImagingError.unusableSource(path: path, "is a directory but not a mount point; use --srcfolder to image a folder tree")
        }
        guard mount.device.hasPrefix("/dev/") else {
            throw ImagingError.unusableSource(path: path, "is a \(mount.device) mount with no block device to image; use --srcfolder")
        }
        if !mount.readOnly && !force {
            throw ImagingError.mountedReadWrite(path: path, device: mount.device)
        }
        return mount.device
    }
}

extension ImageFormat {
    /// A `--format` value; hdiutil's names, in any case.
    public init(parsing text: String) throws(ImagingError) {
        guard let format = ImageFormat(rawValue: text.uppercased()) else {
            throw .unknownFormat(text, allowed: Self.allCases.map(\.rawValue))
        }
        self = format
    }
}
