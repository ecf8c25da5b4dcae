/// The 512-byte `koly` block: where the data fork and the XML plist are, and the master checksum.
public struct Trailer: Sendable, Equatable {
    public static let size = 512
    static let magic: UInt32 = 0x6B6F_6C79  // "koly"

    public var version: UInt32 = 4
    public var flags: UInt32 = 1
    public var runningDataForkOffset: UInt64 = 0
    public var dataForkOffset: UInt64 = 0
    public var dataForkLength: UInt64 = 0
    public var resourceForkOffset: UInt64 = 0
    public var resourceForkLength: UInt64 = 0
    public var segmentNumber: UInt32 = 1
    public var segmentCount: UInt32 = 1
    public var segmentID: [UInt8] = [UInt8](repeating: 0, count: 16)
    public var dataForkChecksum: UDIFChecksum = .none
    public var xmlOffset: UInt64 = 0
    public var xmlLength: UInt64 = 0
    public var codeSignatureOffset: UInt64 = 0
    public var codeSignatureLength: UInt64 = 0
    public var masterChecksum: UDIFChecksum = .none
    public var imageVariant: UInt32 = 1
    public var sectorCount: UInt64 = 0

    public init() {}

    public init(parsing bytes: [UInt8]) throws {
        guard bytes.count == Self.size else { throw UDIFError.notAnImage("koly trailer is \(bytes.count) bytes, want 512") }
        let r = ByteReader(bytes)
        guard r.u32(0) == Self.magic else { throw UDIFError.notAnImage("no koly trailer: not a UDIF image") }
        version = r.u32(4)
        guard r.u32(8) == UInt32(Self.size) else { throw UDIFError.notAnImage("koly header size is \(r.u32(8)), want 512") }
        flags = r.u32(12)
        runningDataForkOffset = r.u64(16)
        dataForkOffset = r.u64(24)
        dataForkLength = r.u64(32)
        resourceForkOffset = r.u64(40)
        resourceForkLength = r.u64(48)
        segmentNumber = r.u32(56)
        segmentCount = r.u32(60)
        segmentID = r.slice(64, 16)
        dataForkChecksum = UDIFChecksum(reading: r, at: 80)
        xmlOffset = r.u64(216)
        xmlLength = r.u64(224)
        codeSignatureOffset = r.u64(296)
        codeSignatureLength = r.u64(304)
        masterChecksum = UDIFChecksum(reading: r, at: 352)
        imageVariant = r.u32(488)
        sectorCount = r.u64(492)
    }

    public func serialized() -> [UInt8] {
        var w = ByteWriter(count: Self.size)
        w.u32(0, Self.magic)
        w.u32(4, version)
        w.u32(8, UInt32(Self.size))
        w.u32(12, flags)
        w.u64(16, runningDataForkOffset)
        w.u64(24, dataForkOffset)
        w.u64(32, dataForkLength)
        w.u64(40, resourceForkOffset)
        w.u64(48, resourceForkLength)
        w.u32(56, segmentNumber)
        w.u32(60, segmentCount)
        w.put(64, Array(segmentID.prefix(16)))
        dataForkChecksum.write(into: &w, at: 80)
        w.u64(216, xmlOffset)
        w.u64(224, xmlLength)
        w.u64(296, codeSignatureOffset)
        w.u64(304, codeSignatureLength)
        masterChecksum.write(into: &w, at: 352)
        w.u32(488, imageVariant)
        w.u64(492, sectorCount)
        return w.bytes
    }
}
