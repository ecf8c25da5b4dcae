/// What `asr create` found in each partition it examined: the filesystem, how its allocation
/// was read and how much of it is in use, or why the partition was imaged whole. It lives in
/// our own resource (`asru`), beside `asrc`; readers that do not know it ignore it. `asr info`
/// shows it. Records name disk sectors, not blkx indices, so a conversion that lays the disk
/// out in other regions can carry it over unchanged.
///
/// Layout, big-endian: "ASRUSED1" (8), record count u32, reserved u32; then per record: first
/// sector u64, sector count u64, allocated bytes u64, ignored bytes u64, finding u8, reserved
/// u8, partition number u16 (0: a disk without a map), then three strings (u8 length + UTF-8):
/// filesystem, method, reason.
public struct UsageData: Sendable, Equatable {
    public static let resourceKey = "asru"
    static let magic = Array("ASRUSED1".utf8)
    static let headerSize = 16
    static let fixedRecordSize = 36

    /// What examining a partition found; unknown values read as `.unknown`.
    public enum Finding: UInt8, Sendable {
        /// Allocation read: free runs are ignore chunks.
        case mapped = 0
        /// A filesystem whose allocation asr does not read: imaged whole.
        case unmapped = 1
        /// Its structures were damaged or inconsistent: imaged whole.
        case unreadable = 2
        /// Nothing recognised: imaged whole.
        case unknown = 3
        /// Not examined (`--all-blocks`): imaged whole.
        case notExamined = 4
    }

    public struct Record: Sendable, Equatable {
        /// Number in the partition map; 0 for a disk without one.
        public var partition: UInt16
        public var firstSector: UInt64
        public var sectorCount: UInt64
        public var finding: Finding
        /// "ext4", "FAT32", ...; empty when nothing was recognised.
        public var filesystem: String
        /// How the allocation was read ("block bitmaps (libext2fs)"); empty unless mapped.
        public var method: String
        /// Why the partition was imaged whole; empty when mapped.
        public var reason: String
        /// What the filesystem has allocated (mapped), else the partition's size.
        public var allocatedBytes: UInt64
        /// Bytes stored as ignore chunks.
        public var ignoredBytes: UInt64

        public init(partition: UInt16, firstSector: UInt64, sectorCount: UInt64, finding: Finding, filesystem: String,
                    method: String, reason: String, allocatedBytes: UInt64, ignoredBytes: UInt64) {
            self.partition = partition
            self.firstSector = firstSector
            self.sectorCount = sectorCount
            self.finding = finding
            self.filesystem = filesystem
            self.method = method
            self.reason = reason
            self.allocatedBytes = allocatedBytes
            self.ignoredBytes = ignoredBytes
        }
    }

    public var records: [Record]

    public init(records: [Record]) { self.records = records }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count >= Self.headerSize, Array(bytes[0..<8]) == Self.magic else {
            throw UDIFError.badResourceFork("\(Self.resourceKey) data has a bad header")
        }
        let r = ByteReader(bytes)
        let count = Int(r.u32(8))
        // Every record takes at least its fixed part: a count beyond that is a lie.
        guard count <= (bytes.count - Self.headerSize) / Self.fixedRecordSize else {
            throw UDIFError.badResourceFork("\(Self.resourceKey) data claims \(count) records")
        }
        var at = Self.headerSize
        var records: [Record] = []
        for _ in 0..<count {
            guard at + Self.fixedRecordSize <= bytes.count else { throw UDIFError.badResourceFork("\(Self.resourceKey) data is truncated") }
            let e = ByteReader(bytes, base: at)
            var strings: [String] = []
            var s = at + Self.fixedRecordSize
            for _ in 0..<3 {
                guard s < bytes.count, s + 1 + Int(bytes[s]) <= bytes.count else {
                    throw UDIFError.badResourceFork("\(Self.resourceKey) data is truncated")
                }
                guard let text = String(validating: bytes[(s + 1)..<(s + 1 + Int(bytes[s]))], as: UTF8.self) else {
                    throw UDIFError.badResourceFork("\(Self.resourceKey) data holds a name that is not UTF-8")
                }
                strings.append(text)
                s += 1 + Int(bytes[s])
            }
            records.append(Record(partition: e.u16(34), firstSector: e.u64(0), sectorCount: e.u64(8),
                                  finding: Finding(rawValue: bytes[at + 32]) ?? .unknown,
                                  filesystem: strings[0], method: strings[1], reason: strings[2],
                                  allocatedBytes: e.u64(16), ignoredBytes: e.u64(24)))
            at = s
        }
        guard at == bytes.count else { throw UDIFError.badResourceFork("\(Self.resourceKey) data has bytes after its records") }
        self.records = records
    }

    public func serialized() -> [UInt8] {
        var out = Self.magic
        out.appendBigEndian(UInt32(records.count))
        out.appendBigEndian(UInt32(0))
        for rec in records {
            out.appendBigEndian(rec.firstSector)
            out.appendBigEndian(rec.sectorCount)
            out.appendBigEndian(rec.allocatedBytes)
            out.appendBigEndian(rec.ignoredBytes)
            out.append(rec.finding.rawValue)
            out.append(0)
            out.appendBigEndian(rec.partition)
            for text in [rec.filesystem, rec.method, rec.reason] {
                // Cut at 255 bytes, on a character boundary.
                var utf8 = Array(text.utf8.prefix(255))
                while String(validating: utf8, as: UTF8.self) == nil { utf8.removeLast() }
                out.append(UInt8(utf8.count))
                out += utf8
            }
        }
        return out
    }

    /// The usage data stored in `image`, or nil if it has none.
    public static func stored(in image: UDIFImage) throws -> UsageData? {
        guard let entry = image.resourceFork.resources[resourceKey]?.first else { return nil }
        return try UsageData(parsing: entry.data)
    }

    /// The resource to store.
    public func resources() -> [String: [ResourceEntry]] {
        [Self.resourceKey: [ResourceEntry(data: serialized(), id: "0", name: "asr filesystem usage")]]
    }
}
