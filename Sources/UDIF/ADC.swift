/// Apple Data Compression (UDCO chunks): an LZ77 variant with three opcode forms.
/// 1xxxxxxx: literal run of x+1 bytes; 01xxxxxx + 2 bytes: copy x+4 bytes from distance
/// (16-bit)+1; 00xxxxyy + 1 byte: copy x+3 bytes from distance (yy<<8 | byte)+1.
public enum ADC {
    public static func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        let src = input.bindMemory(to: UInt8.self)
        let dst = output.bindMemory(to: UInt8.self)
        var i = 0
        var o = 0
        while i < src.count && o < dst.count {
            let op = src[i]
            if op & 0x80 != 0 {
                let n = Int(op & 0x7F) + 1
                guard i + 1 + n <= src.count else { throw UDIFError.corruptChunk(codec: "adc", .truncated) }
                guard o + n <= dst.count else { throw UDIFError.corruptChunk(codec: "adc", .overflows(capacity: dst.count)) }
                for k in 0..<n { dst[o + k] = src[i + 1 + k] }
                i += 1 + n
                o += n
                continue
            }
            let length: Int
            let distance: Int
            if op & 0x40 != 0 {
                guard i + 3 <= src.count else { throw UDIFError.corruptChunk(codec: "adc", .truncated) }
                length = Int(op & 0x3F) + 4
                distance = (Int(src[i + 1]) << 8 | Int(src[i + 2])) + 1
                i += 3
            } else {
                guard i + 2 <= src.count else { throw UDIFError.corruptChunk(codec: "adc", .truncated) }
                length = Int((op >> 2) & 0x0F) + 3
                distance = (Int(op & 0x03) << 8 | Int(src[i + 1])) + 1
                i += 2
            }
            guard distance <= o else { throw UDIFError.corruptChunk(codec: "adc", .invalid("refers before its start")) }
            guard o + length <= dst.count else { throw UDIFError.corruptChunk(codec: "adc", .overflows(capacity: dst.count)) }
            for k in 0..<length { dst[o + k] = dst[o + k - distance] }
            o += length
        }
        guard o == dst.count else { throw Codec.sizeError("adc", got: o, want: dst.count) }
    }
}
