/// Chunk types of a `mish` block table.
public struct ChunkType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let zeroFill = ChunkType(rawValue: 0)
    public static let raw = ChunkType(rawValue: 1)
    public static let ignore = ChunkType(rawValue: 2)
    public static let adc = ChunkType(rawValue: 0x8000_0004)
    public static let zlib = ChunkType(rawValue: 0x8000_0005)
    public static let bzip2 = ChunkType(rawValue: 0x8000_0006)
    public static let lzfse = ChunkType(rawValue: 0x8000_0007)
    public static let lzma = ChunkType(rawValue: 0x8000_0008)
    public static let comment = ChunkType(rawValue: 0x7FFF_FFFE)
    public static let terminator = ChunkType(rawValue: 0xFFFF_FFFF)

    /// Chunks whose bytes live in the data fork.
    public var hasStoredData: Bool { self == .raw || isCompressed }
    public var isCompressed: Bool { rawValue & 0x8000_0000 != 0 && self != .terminator }

    public var description: String {
        switch self {
        case .zeroFill: "zero"
        case .raw: "raw"
        case .ignore: "ignore"
        case .adc: "adc"
        case .zlib: "zlib"
        case .bzip2: "bzip2"
        case .lzfse: "lzfse"
        case .lzma: "lzma"
        case .comment: "comment"
        case .terminator: "terminator"
        default: "0x" + hex32(rawValue)
        }
    }
}

/// One 40-byte entry of a block table. Sectors are relative to the table's first sector;
/// the stored offset is relative to the data fork plus the table's data offset.
public struct BlockChunk: Sendable, Equatable {
    public var type: ChunkType
    public var comment: UInt32
    public var sectorStart: UInt64
    public var sectorCount: UInt64
    public var storedOffset: UInt64
    public var storedLength: UInt64

    public init(type: ChunkType, comment: UInt32 = 0, sectorStart: UInt64, sectorCount: UInt64,
                storedOffset: UInt64, storedLength: UInt64) {
        self.type = type
        self.comment = comment
        self.sectorStart = sectorStart
        self.sectorCount = sectorCount
        self.storedOffset = storedOffset
        self.storedLength = storedLength
    }
}

/// A `mish` block table: the chunks of one blkx region.
public struct BlockTable: Sendable, Equatable {
    static let magic: UInt32 = 0x6D69_7368  // "mish"
    static let headerSize = 204
    static let entrySize = 40

    public var firstSector: UInt64
    public var sectorCount: UInt64
    public var dataOffset: UInt64
    public var buffersNeeded: UInt32
    public var blockDescriptor: UInt32
    public var checksum: UDIFChecksum
    /// Every entry but the terminator, comments included.
    public var chunks: [BlockChunk]

    public init(firstSector: UInt64, sectorCount: UInt64, dataOffset: UInt64 = 0, buffersNeeded: UInt32,
                blockDescriptor: UInt32, checksum: UDIFChecksum, chunks: [BlockChunk]) {
        self.firstSector = firstSector
        self.sectorCount = sectorCount
        self.dataOffset = dataOffset
        self.buffersNeeded = buffersNeeded
        self.blockDescriptor = blockDescriptor
        self.checksum = checksum
        self.chunks = chunks
    }

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count >= Self.headerSize else { throw UDIFError.badBlockTable("block table is \(bytes.count) bytes, too short") }
        let r = ByteReader(bytes)
        guard r.u32(0) == Self.magic else { throw UDIFError.badBlockTable("block table has no mish signature") }
        guard r.u32(4) == 1 else { throw UDIFError.badBlockTable("block table version \(r.u32(4)) is not supported") }
        firstSector = r.u64(8)
        sectorCount = r.u64(16)
        dataOffset = r.u64(24)
        buffersNeeded = r.u32(32)
        blockDescriptor = r.u32(36)
        checksum = UDIFChecksum(reading: r, at: 64)
        let count = Int(r.u32(200))
        guard count <= (bytes.count - Self.headerSize) / Self.entrySize else {
            throw UDIFError.badBlockTable("block table claims \(count) chunks but holds \((bytes.count - Self.headerSize) / Self.entrySize)")
        }
        var chunks: [BlockChunk] = []
        chunks.reserveCapacity(count)
        for i in 0..<count {
            let e = ByteReader(bytes, base: Self.headerSize + i * Self.entrySize)
            let type = ChunkType(rawValue: e.u32(0))
            if type == .terminator { break }
            chunks.append(BlockChunk(type: type, comment: e.u32(4), sectorStart: e.u64(8), sectorCount: e.u64(16),
                                     storedOffset: e.u64(24), storedLength: e.u64(32)))
        }
        self.chunks = chunks
    }

    public func serialized() -> [UInt8] {
        let count = chunks.count + 1
        var w = ByteWriter(count: Self.headerSize + count * Self.entrySize)
        w.u32(0, Self.magic)
        w.u32(4, 1)
        w.u64(8, firstSector)
        w.u64(16, sectorCount)
        w.u64(24, dataOffset)
        w.u32(32, buffersNeeded)
        w.u32(36, blockDescriptor)
        checksum.write(into: &w, at: 64)
        w.u32(200, UInt32(count))
        let terminator = BlockChunk(type: .terminator, sectorStart: sectorCount, sectorCount: 0, storedOffset: 0, storedLength: 0)
        for (i, c) in (chunks + [terminator]).enumerated() {
            let at = Self.headerSize + i * Self.entrySize
            w.u32(at, c.type.rawValue)
            w.u32(at + 4, c.comment)
            w.u64(at + 8, c.sectorStart)
            w.u64(at + 16, c.sectorCount)
            w.u64(at + 24, c.storedOffset)
            w.u64(at + 32, c.storedLength)
        }
        return w.bytes
    }
}
