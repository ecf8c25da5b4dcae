import Foundation

/// What `imagescan` stores in an image: the SHA-256 of every chunk's decoded bytes and of the
/// whole disk. It lives in our own resource (`asrc`), beside Apple's `nsiz`, which holds the
/// whole-disk SHA-1 and SHA-256 as Apple's asr writes them. Readers that do not know `asrc`
/// ignore it.
///
/// Layout of the `asrc` data, big-endian: "ASRSCAN1" (8), chunk count u32, reserved u32,
/// disk bytes u64, whole-disk SHA-256 (32), then per chunk: disk offset u64, length u64,
/// SHA-256 (32).
public struct ScanData: Sendable, Equatable {
    public static let resourceKey = "asrc"
    /// The entry of an ignore chunk (free space), which is never hashed. Scans written before
    /// hold the SHA-256 of zeros there; readers skip ignore chunks by their type either way.
    public static let unhashed = [UInt8](repeating: 0, count: 32)
    static let magic = Array("ASRSCAN1".utf8)
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
    public var diskSHA256: [UInt8]
    public var chunks: [Entry]

    public init(diskBytes: UInt64, diskSHA256: [UInt8], chunks: [Entry]) {
        self.diskBytes = diskBytes
        self.diskSHA256 = diskSHA256
        self.chunks = chunks
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count >= Self.headerSize, Array(bytes[0..<8]) == Self.magic else {
            throw UDIFError.badScanData("bad header")
        }
        let r = ByteReader(bytes)
        let count = Int(r.u32(8))
        guard count == (bytes.count - Self.headerSize) / Self.entrySize, (bytes.count - Self.headerSize) % Self.entrySize == 0 else {
            throw UDIFError.badScanData("claims \(count) chunks")
        }
        diskBytes = r.u64(16)
        diskSHA256 = r.slice(24, 32)
        chunks = (0..<count).map { i in
            let at = Self.headerSize + i * Self.entrySize
            return Entry(diskOffset: r.u64(at), length: r.u64(at + 8), sha256: r.slice(at + 16, 32))
        }
    }

    public func serialized() -> [UInt8] {
        var w = ByteWriter(count: Self.headerSize + chunks.count * Self.entrySize)
        w.put(0, Self.magic)
        w.u32(8, UInt32(chunks.count))
        w.u64(16, diskBytes)
        w.put(24, diskSHA256)
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

    /// Resources to store: ours, and Apple's `nsiz` with the whole-disk digests.
    public func resources(diskSHA1: [UInt8], masterCRC: UInt32) -> [String: [ResourceEntry]] {
        [
            Self.resourceKey: [ResourceEntry(data: serialized(), id: "0", name: "asr chunk checksums")],
            "nsiz": [ResourceEntry(data: NSIZ(sha1: diskSHA1, sha256: diskSHA256, blockChecksum: masterCRC).xml(), id: "0", name: "")],
        ]
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
