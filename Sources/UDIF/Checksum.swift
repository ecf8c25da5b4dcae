import CDeflate
import CZlib

/// The 136-byte checksum field of `koly` and `mish`: type, bit count, up to 128 bytes of value.
public struct UDIFChecksum: Sendable, Equatable {
    public static let typeNone: UInt32 = 0
    public static let typeCRC32: UInt32 = 2
    static let fieldSize = 136

    public var type: UInt32
    public var bits: UInt32
    public var value: [UInt8]

    public static let none = UDIFChecksum(type: typeNone, bits: 0, value: [])

    public static func crc32(_ crc: UInt32) -> UDIFChecksum {
        UDIFChecksum(type: typeCRC32, bits: 32, value: [
            UInt8(truncatingIfNeeded: crc >> 24), UInt8(truncatingIfNeeded: crc >> 16),
            UInt8(truncatingIfNeeded: crc >> 8), UInt8(truncatingIfNeeded: crc),
        ])
    }

    /// The CRC-32 value when this is a CRC-32 checksum.
    public var crc32Value: UInt32? {
        guard type == Self.typeCRC32, bits == 32, value.count >= 4 else { return nil }
        return ByteReader(value).u32(0)
    }

    init(reading r: ByteReader, at offset: Int) {
        type = r.u32(offset)
        bits = r.u32(offset + 4)
        let byteCount = Int(min(bits, 1024) + 7) / 8
        value = r.slice(offset + 8, byteCount)
    }

    init(type: UInt32, bits: UInt32, value: [UInt8]) {
        self.type = type
        self.bits = bits
        self.value = value
    }

    func write(into w: inout ByteWriter, at offset: Int) {
        w.u32(offset, type)
        w.u32(offset + 4, bits)
        w.put(offset + 8, Array(value.prefix(128)))
    }

    public var description: String {
        switch crc32Value {
        case let crc?: "CRC32 $" + hex32(crc)
        case nil where type == Self.typeNone: "none"
        case nil: "type \(type), \(bits) bits"
        }
    }
}

func hex32(_ v: UInt32) -> String {
    let s = String(v, radix: 16, uppercase: true)
    return String(repeating: "0", count: 8 - s.count) + s
}

/// CRC-32 (the zlib polynomial), as UDIF uses for blkx and master checksums.
public enum CRC32 {
    public static func update(_ crc: UInt32, _ buffer: UnsafeRawBufferPointer) -> UInt32 {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return crc }
        return libdeflate_crc32(crc, base, buffer.count)
    }

    public static func update(_ crc: UInt32, _ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { update(crc, $0) }
    }

    /// CRC-32 of `count` zero bytes appended to `crc`, in O(log count): a zero-fill chunk may
    /// claim a huge run, and checking it must not take time proportional to that claim.
    public static func updateZeros(_ crc: UInt32, count: UInt64) -> UInt32 {
        var result = crc
        var blockCRC = update(0, [0])  // CRC of 2^k zero bytes, doubled each step
        var blockLength: UInt64 = 1
        var left = count
        while left > 0 {
            if left & 1 != 0 { result = combine(result, blockCRC, lengthOfB: blockLength) }
            left >>= 1
            if left > 0 {
                blockCRC = combine(blockCRC, blockCRC, lengthOfB: blockLength)
                blockLength <<= 1
            }
        }
        return result
    }

    /// The CRC of A followed by B, from CRC(A), CRC(B) and B's length.
    public static func combine(_ a: UInt32, _ b: UInt32, lengthOfB: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: crc32_combine(uLong(a), uLong(b), Int(lengthOfB)))
    }
}
