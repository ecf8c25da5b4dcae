import Crypto
import Foundation

/// What `imagescan` stores in an image: the SHA-256 of every chunk's decoded bytes, from which
/// `table(of:)` builds the image's `ChunkTable` (and so its identity). It lives in our own
/// resource (`asrc`), beside Apple's `nsiz`, which holds the linear whole-disk SHA-1 and SHA-256
/// as Apple's asr writes them. Readers that do not know `asrc` ignore it.
///
/// Layout of the `asrc` data, big-endian: magic (8), chunk count u32, flags u32, disk bytes
/// u64, linear whole-disk SHA-256 (32), then per chunk: disk offset u64, length u64, SHA-256
/// (32). "ASRSCAN3" is this version (flag 1: the linear digest is there, else 32 zero bytes).
/// "ASRSCAN1" (with the linear digest) and "ASRSCAN2" (without) are scans by an earlier asr,
/// read for unpinned, unsigned use only: their identity was version 1, which no pin or
/// signature is checked against any more (`version`).
public struct ScanData: Sendable, Equatable {
    public static let resourceKey = "asrc"
    public static let currentVersion = 3
    static let magics = ["ASRSCAN1": 1, "ASRSCAN2": 1, "ASRSCAN3": 3].map { (Array($0.key.utf8), $0.value) }
    static let hasLinearDigest: UInt32 = 1
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

    /// 3 for scans this asr writes; 1 for scans by an earlier one.
    public var version: Int
    public var diskBytes: UInt64
    /// The linear SHA-256 of the whole disk (Apple's `nsiz` digest); nil when it was skipped.
    /// Nothing checks a disk against it: the per-chunk digests cover every byte.
    public var diskSHA256: [UInt8]?
    public var chunks: [Entry]

    public init(diskBytes: UInt64, diskSHA256: [UInt8]?, chunks: [Entry]) {
        version = Self.currentVersion
        self.diskBytes = diskBytes
        self.diskSHA256 = diskSHA256
        self.chunks = chunks
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count >= Self.headerSize, let version = Self.magics.first(where: { $0.0 == Array(bytes[0..<8]) })?.1 else {
            throw UDIFError.badScanData("bad header")
        }
        let r = ByteReader(bytes)
        let count = Int(r.u32(8))
        guard count == (bytes.count - Self.headerSize) / Self.entrySize, (bytes.count - Self.headerSize) % Self.entrySize == 0 else {
            throw UDIFError.badScanData("claims \(count) chunks")
        }
        let linear = version == 1 ? Array(bytes[0..<8]) == Array("ASRSCAN1".utf8) : r.u32(12) & Self.hasLinearDigest != 0
        self.version = version
        diskBytes = r.u64(16)
        diskSHA256 = linear ? r.slice(24, 32) : nil
        chunks = (0..<count).map { i in
            let at = Self.headerSize + i * Self.entrySize
            return Entry(diskOffset: r.u64(at), length: r.u64(at + 8), sha256: r.slice(at + 16, 32))
        }
    }

    /// Always in the current version: an older scan is written again only by a rescan.
    public func serialized() -> [UInt8] {
        var w = ByteWriter(count: Self.headerSize + chunks.count * Self.entrySize)
        w.put(0, Array("ASRSCAN3".utf8))
        w.u32(8, UInt32(chunks.count))
        w.u32(12, diskSHA256 == nil ? 0 : Self.hasLinearDigest)
        w.u64(16, diskBytes)
        w.put(24, diskSHA256 ?? ChunkTable.noDigest)
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

    /// The chunk table of `image`, whose stored scan this is: each chunk's type, stored range
    /// and codec from the image, its digest from the scan. Free space (ignore chunks) carries
    /// no digest; an entry there that holds anything but nothing or the digest of zeros (what
    /// earlier scans wrote) means the chunk was data when it was scanned.
    /// `storedOffsets`: where a rewritten copy of the image stores each chunk, in place of
    /// where `image` does.
    public func table(of image: UDIFImage, storedOffsets: [UInt64]? = nil) throws(UDIFError) -> ChunkTable {
        var records: [ChunkRecord] = []
        records.reserveCapacity(chunks.count)
        for (i, (entry, c)) in zip(chunks, image.chunks).enumerated() {
            switch c.type {
            case .ignore:
                guard entry.sha256 == ChunkTable.noDigest || entry.sha256 == ZeroDigests.shared.sha256(of: c.length) else {
                    throw .badChunkRecord(index: i, firstByte: c.diskOffset, "is free space but its scan digest says it held data")
                }
                records.append(.free(at: c.diskOffset, length: c.length))
            case .zeroFill:
                records.append(ChunkRecord(diskOffset: c.diskOffset, length: c.length, kind: .zeros, codec: c.type.rawValue,
                                           storedOffset: 0, storedLength: 0, sha256: entry.sha256))
            default:
                records.append(ChunkRecord(diskOffset: c.diskOffset, length: c.length, kind: .data, codec: c.type.rawValue,
                                           storedOffset: storedOffsets?[i] ?? c.fileOffset, storedLength: c.storedLength, sha256: entry.sha256))
            }
        }
        return try ChunkTable(diskBytes: diskBytes, records: records)
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
