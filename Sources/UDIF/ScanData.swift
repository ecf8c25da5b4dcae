import Crypto
import Foundation

/// What `imagescan` stores in an image: the SHA-256 of every chunk's decoded bytes, and the
/// image's identity derived from them. It lives in our own resource (`asrc`), beside Apple's
/// `nsiz`, which holds the linear whole-disk SHA-1 and SHA-256 as Apple's asr writes them.
/// Readers that do not know `asrc` ignore it.
///
/// Layout of the `asrc` data, big-endian: magic (8), chunk count u32, reserved u32, disk bytes
/// u64, linear whole-disk SHA-256 (32), then per chunk: disk offset u64, length u64, SHA-256
/// (32). "ASRSCAN1" holds the linear digest; "ASRSCAN2" (`imagescan --no-apple-digests`) holds
/// 32 zero bytes in its place.
public struct ScanData: Sendable, Equatable {
    public static let resourceKey = "asrc"
    /// The entry of an ignore chunk (free space), which is never hashed. Scans written before
    /// hold the SHA-256 of zeros there; readers skip ignore chunks by their type either way.
    public static let unhashed = [UInt8](repeating: 0, count: 32)
    static let magic = Array("ASRSCAN1".utf8)
    static let magicWithoutLinearDigest = Array("ASRSCAN2".utf8)
    static let headerSize = 56
    static let entrySize = 48

    public struct Entry: Sendable, Equatable {
        public var diskOffset: UInt64
        public var length: UInt64
        public var sha256: [UInt8]
        public init(diskOffset: UInt64, length: UInt64, sha256: [UInt8]) {
            self.diskOffset = diskOffset
            self.length = length
            self.sha256 = sha256
        }
    }

    public var diskBytes: UInt64
    /// The linear SHA-256 of the whole disk (Apple's `nsiz` digest); nil when it was skipped.
    /// Nothing checks a disk against it: the per-chunk digests cover every byte.
    public var diskSHA256: [UInt8]?
    public var chunks: [Entry]

    public init(diskBytes: UInt64, diskSHA256: [UInt8]?, chunks: [Entry]) {
        self.diskBytes = diskBytes
        self.diskSHA256 = diskSHA256
        self.chunks = chunks
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count >= Self.headerSize, [Self.magic, Self.magicWithoutLinearDigest].contains(Array(bytes[0..<8])) else {
            throw UDIFError.badScanData("bad header")
        }
        let r = ByteReader(bytes)
        let count = Int(r.u32(8))
        guard count == (bytes.count - Self.headerSize) / Self.entrySize, (bytes.count - Self.headerSize) % Self.entrySize == 0 else {
            throw UDIFError.badScanData("claims \(count) chunks")
        }
        diskBytes = r.u64(16)
        diskSHA256 = Array(bytes[0..<8]) == Self.magic ? r.slice(24, 32) : nil
        chunks = (0..<count).map { i in
            let at = Self.headerSize + i * Self.entrySize
            return Entry(diskOffset: r.u64(at), length: r.u64(at + 8), sha256: r.slice(at + 16, 32))
        }
    }

    public func serialized() -> [UInt8] {
        var w = ByteWriter(count: Self.headerSize + chunks.count * Self.entrySize)
        w.put(0, diskSHA256 == nil ? Self.magicWithoutLinearDigest : Self.magic)
        w.u32(8, UInt32(chunks.count))
        w.u64(16, diskBytes)
        w.put(24, diskSHA256 ?? Self.unhashed)
        for (i, c) in chunks.enumerated() {
            let at = Self.headerSize + i * Self.entrySize
            w.u64(at, c.diskOffset)
            w.u64(at + 8, c.length)
            w.put(at + 16, c.sha256)
        }
        return w.bytes
    }

    /// The scan data stored in `image`, checked against its chunk table; nil if unscanned.
    public static func stored(in image: UDIFImage) throws -> ScanData? {
        guard let entry = image.resourceFork.resources[resourceKey]?.first else { return nil }
        let scan = try ScanData(parsing: entry.data)
        guard scan.diskBytes == image.byteCount, scan.chunks.count == image.chunks.count,
              zip(scan.chunks, image.chunks).allSatisfy({ $0.diskOffset == $1.diskOffset && $0.length == $1.length })
        else {
            throw UDIFError.staleScanData
        }
        return scan
    }

    /// Resources to store: ours, and Apple's `nsiz` when the linear digests were computed.
    public func resources(diskSHA1: [UInt8]?, masterCRC: UInt32) -> [String: [ResourceEntry]] {
        var resources = [Self.resourceKey: [ResourceEntry(data: serialized(), id: "0", name: "asr chunk checksums")]]
        if let diskSHA256, let diskSHA1 {
            resources["nsiz"] = [ResourceEntry(data: NSIZ(sha1: diskSHA1, sha256: diskSHA256, blockChecksum: masterCRC).xml(), id: "0", name: "")]
        }
        return resources
    }

    /// The image's identity (see `ImageIdentity`); `isFree(i)` tells ignore chunks.
    public func identity(isFree: (Int) -> Bool) -> [UInt8] {
        ImageIdentity.digest(diskBytes: diskBytes, chunks: chunks.enumerated().map { i, c in
            (c.diskOffset, c.length, isFree(i) ? nil : c.sha256)
        })
    }

    /// The identity of `image`, whose stored scan this is.
    public func identity(of image: UDIFImage) -> [UInt8] {
        identity { image.chunks[$0].type == .ignore }
    }
}

/// What verify, multicast and signatures take an image to be: the SHA-256 of its chunk table
/// (offsets, lengths, and each chunk's SHA-256, or a mark for free space). Checking every chunk
/// against the table checks the whole disk, and the identity costs O(chunks) where a linear
/// digest of a mostly empty 16 GiB disk costs seconds of hashing zeros.
///
/// Hashed, big-endian: "asr image identity 1" (20), disk bytes u64, chunk count u64, then per
/// chunk: disk offset u64, length u64, kind u8 (0 data or zeros, 1 free), SHA-256 (32; zero
/// bytes for free space).
public enum ImageIdentity {
    static let label = Array("asr image identity 1".utf8)

    public static func digest(diskBytes: UInt64, chunks: [(offset: UInt64, length: UInt64, sha256: [UInt8]?)]) -> [UInt8] {
        var hasher = SHA256()
        var w = ByteWriter(count: label.count + 16)
        w.put(0, label)
        w.u64(label.count, diskBytes)
        w.u64(label.count + 8, UInt64(chunks.count))
        hasher.update(data: w.bytes)
        for c in chunks {
            var e = ByteWriter(count: 49)
            e.u64(0, c.offset)
            e.u64(8, c.length)
            e.put(16, [c.sha256 == nil ? 1 : 0])
            e.put(17, c.sha256 ?? ScanData.unhashed)
            hasher.update(data: e.bytes)
        }
        return Array(hasher.finalize())
    }
}

/// Apple's `nsiz` resource: an XML plist inside the plist.
struct NSIZ: Encodable {
    var sha1: [UInt8]
    var sha256: [UInt8]
    var blockChecksum: UInt32

    enum CodingKeys: String, CodingKey {
        case sha1 = "SHA-1-digest", sha256 = "SHA-256-digest", volumes = "Volume names and UUIDs"
        case blockChecksum = "block-checksum-2", partNum = "part-num", version
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(Data(sha1), forKey: .sha1)
        try c.encode(Data(sha256), forKey: .sha256)
        try c.encode([String](), forKey: .volumes)
        try c.encode(Int(blockChecksum), forKey: .blockChecksum)
        try c.encode(0, forKey: .partNum)
        try c.encode(6, forKey: .version)
    }

    func xml() -> [UInt8] {
        let encoder = PropertyListEncoder()
        encoder.outputFormat = .xml
        return (try? [UInt8](encoder.encode(self))) ?? []
    }
}
