import SystemPackage
import SystemSupport
import Foundation
import UDIF

/// A raw image file or a block device, read with pread from many threads.
public final class RawSource: ByteSource, Sendable {
    public let file: any RandomAccessFile
    public let byteCount: UInt64

    public init(file: any RandomAccessFile, byteCount: UInt64) {
        self.file = file
        self.byteCount = byteCount
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= byteCount, UInt64(buffer.count) <= byteCount - offset else {
            throw UDIFError.outOfRange(offset: offset, count: buffer.count, diskBytes: byteCount)
        }
        try file.read(into: buffer, at: offset)
    }
}

/// What `--source` named, opened: a UDIF image, a raw image file, or a block device.
public struct ImageSource: Sendable {
    public enum Kind: String, Sendable { case udif, raw, blockDevice = "block device" }
    public let path: String
    public let kind: Kind
    public let bytes: any ByteSource
    public let udif: UDIFImage?
    /// Read over HTTP(S): range requests, so reads are worth merging and waiting on.
    public var isRemote: Bool { (udif?.file ?? (bytes as? RawSource)?.file) is HTTPFile }

    /// Opens a file or device; a UDIF image is recognised by its trailer, whatever its name.
    public static func open(_ path: String, cacheChunks: Int = 32) throws -> ImageSource {
        let lower = path.lowercased()
        if lower.hasPrefix("http://") || lower.hasPrefix("https://") {
            let remote = try HTTPFile(url: path)
            if UDIFImage.looksLikeUDIF(remote) {
                let image = try UDIFImage(file: remote, cacheChunks: cacheChunks)
                return ImageSource(path: path, kind: .udif, bytes: image, udif: image)
            }
            return ImageSource(path: path, kind: .raw, bytes: RawSource(file: remote, byteCount: try remote.size()), udif: nil)
        }
        var st = stat()
        guard stat(path, &st) == 0 else { throw SystemError.open(path: path, Errno(rawValue: errno)) }
        let type = st.st_mode & S_IFMT
        if type == S_IFDIR { throw ImagingError.unusableSource(path: path, "is a directory; use --srcfolder to image a folder tree") }
        let file = try FileIO(path: path, flags: O_RDONLY)
        if type == S_IFBLK {
            return ImageSource(path: path, kind: .blockDevice, bytes: RawSource(file: file, byteCount: try blockDeviceSize(file)), udif: nil)
        }
        guard type == S_IFREG else { throw ImagingError.unusableSource(path: path, "is neither a file nor a block device") }
        if UDIFImage.looksLikeUDIF(file) {
            let image = try UDIFImage(file: file, cacheChunks: cacheChunks)
            return ImageSource(path: path, kind: .udif, bytes: image, udif: image)
        }
        if looksLikeDamagedUDIF(path: path, file: file) {
            throw ImagingError.unusableSource(path: path, "has no koly trailer at its end: a truncated or damaged UDIF image")
        }
        return ImageSource(path: path, kind: .raw, bytes: RawSource(file: file, byteCount: try file.size()), udif: nil)
    }

    /// A .dmg name, or a UDIF resource plist near the end, without a trailer: treating such a
    /// file as a raw disk would deploy garbage.
    static func looksLikeDamagedUDIF(path: String, file: FileIO) -> Bool {
        if (path as NSString).pathExtension.lowercased() == "dmg" { return true }
        guard let size = try? file.size(), size > 0 else { return false }
        let tail = min(size, 1 << 20)
        guard let bytes = try? file.read(at: size - tail, count: Int(tail)) else { return false }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.contains("<key>resource-fork</key>") || text.contains("<key>blkx</key>")
    }
}

extension ImageSource {
    /// Where a raw file has data (holes skipped through SEEK_DATA); a device is all data.
    public func dataExtents() throws -> [(offset: UInt64, length: UInt64)] {
        let size = bytes.byteCount
        guard kind == .raw, let raw = (bytes as? RawSource)?.file as? FileIO else { return size > 0 ? [(UInt64(0), size)] : [] }
        return raw.dataExtents(upTo: size)
    }
}

public func blockDeviceSize(_ file: FileIO) throws -> UInt64 {
    var size: UInt64 = 0
    guard ioctl(file.fd, Kernel.blockGetSize64, &size) == 0 else {
        throw SystemError.call(what: "read the size of \(file.path)", Errno(rawValue: errno))
    }
    return size
}

/// A mounted filesystem as /proc/self/mountinfo describes it.
public struct MountEntry: Sendable {
    public var mountPoint: String
    public var device: String
    public var readOnly: Bool
    /// "major:minor" of the mounted device.
    public var deviceNumber: String

    /// The mount whose mount point is exactly `path` (after resolving links), if any.
    public static func at(_ path: String) throws -> MountEntry? {
        let target = (path as NSString).resolvingSymlinksInPath
        return try all().last { $0.mountPoint == target }
    }

    public static func all() throws -> [MountEntry] {
        guard let text = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8) else {
            throw SystemError.call(what: "read /proc/self/mountinfo", .ioError)
        }
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard let dash = f.firstIndex(of: "-"), f.count > dash + 2, f.count > 5 else { return nil }
            let options = f[5].split(separator: ",")
            return MountEntry(mountPoint: unescape(String(f[4])), device: unescape(String(f[dash + 2])),
                              readOnly: options.contains("ro"), deviceNumber: String(f[2]))
        }
    }

    /// mountinfo writes space, tab, newline and backslash as octal escapes.
    static func unescape(_ s: String) -> String {
        guard s.contains("\\") else { return s }
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "\\"), i + 3 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 3)], as: UTF8.self), radix: 8) {
                out.append(v)
                i += 4
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}
