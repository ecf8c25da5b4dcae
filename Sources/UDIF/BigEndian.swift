// Big-endian field access for the fixed-layout UDIF structures.

struct ByteReader {
    let bytes: [UInt8]
    let base: Int

    init(_ bytes: [UInt8], base: Int = 0) {
        self.bytes = bytes
        self.base = base
    }

    func u16(_ at: Int) -> UInt16 { UInt16(bytes[base + at]) << 8 | UInt16(bytes[base + at + 1]) }

    func u32(_ at: Int) -> UInt32 {
        let p = base + at
        return UInt32(bytes[p]) << 24 | UInt32(bytes[p + 1]) << 16 | UInt32(bytes[p + 2]) << 8 | UInt32(bytes[p + 3])
    }

    func u64(_ at: Int) -> UInt64 { UInt64(u32(at)) << 32 | UInt64(u32(at + 4)) }

    func slice(_ at: Int, _ count: Int) -> [UInt8] { Array(bytes[(base + at)..<(base + at + count)]) }
}

struct ByteWriter {
    private(set) var bytes: [UInt8]

    init(count: Int) { bytes = [UInt8](repeating: 0, count: count) }

    mutating func u32(_ at: Int, _ value: UInt32) {
        for i in 0..<4 { bytes[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(i))) }
    }

    mutating func u64(_ at: Int, _ value: UInt64) {
        u32(at, UInt32(truncatingIfNeeded: value >> 32))
        u32(at + 4, UInt32(truncatingIfNeeded: value))
    }

    mutating func put(_ at: Int, _ data: [UInt8]) { bytes.replaceSubrange(at..<(at + data.count), with: data) }
}

extension Array where Element == UInt8 {
    /// Appends a field of a variable-length structure.
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        for i in stride(from: MemoryLayout<T>.size - 1, through: 0, by: -1) { append(UInt8(truncatingIfNeeded: value >> (i * 8))) }
    }
}
