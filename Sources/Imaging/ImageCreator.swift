import SystemSupport
import Foundation
import UDIF

/// `asr create`: a UDIF image from a raw image, a block device, a mounted filesystem (its
/// device) or a folder tree (through a real filesystem made by mke2fs or mkfs.vfat).
public struct ImageCreator {
    public var format: ImageFormat = .udzo
    /// Decoded bytes per chunk; hdiutil writes 1 MiB. See `chunkSizes`.
    public var chunkSize: UInt64 = 1 << 20
    public var overwrite = false
    /// Image a read-write mounted filesystem anyway (its contents may change under us).
    public var force = false
    public var reporter = Reporter(.quiet)

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

    /// Chunk sizes we write: whole sectors from hdiutil's 1 MiB up to the largest chunk our
    /// reader accepts.
    public static let chunkSizes: ClosedRange<UInt64> = (1 << 20)...UDIFImage.maxChunkBytes

    /// A `--chunk-size` value ("16M", "4194304").
    public static func parseChunkSize(_ text: String) throws(ImagingError) -> UInt64 {
        guard let bytes = try? ByteSize.parse(text), chunkSizes.contains(bytes), bytes % sectorSize == 0 else {
            throw .invalidChunkSize(text)
        }
        return bytes
    }

    func write(_ source: any ByteSource, to output: String) throws -> WriteSummary {
        guard Self.chunkSizes.contains(chunkSize), chunkSize % sectorSize == 0 else { throw ImagingError.invalidChunkSize(String(chunkSize)) }
        var writer = ImageWriter(format: format)
        writer.chunkSectors = chunkSize / sectorSize
        reporter.begin("\tCreating  ", key: "create")
        defer { reporter.abandon() }
        let summary = try writer.write(from: source, to: output) { done, total in reporter.update(done, of: total) }
        reporter.end()
        return summary
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
