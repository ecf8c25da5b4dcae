/// LZVN, the byte-oriented LZ77 of LZFSE's `bvxn` blocks (used for small inputs). Each opcode
/// byte says how many literal bytes follow it and how long a match to copy afterwards:
///
///     LLMMMDDD DDDDDDDD            small distance: L 0-3, M 3-10, D 11 bits
///     101LLMMM DDDDDDMM DDDDDDDD   medium distance: L 0-3, M 3-34, D 14 bits
///     LLMMM111 DDDDDDDD DDDDDDDD   large distance: L 0-3, M 3-10, D 16 bits (little-endian)
///     LLMMM110                     previous distance: L 0-3, M 3-10 (opcodes from 0x40)
///     1110LLLL / 11100000 LLLLLLLL literal only: L 1-15 / L + 16
///     1111MMMM / 11110000 MMMMMMMM match only, previous distance: M 1-15 / M + 16
///     00000110 + 7 bytes           end of stream;  00001110, 00010110: no-op
///
/// Everything else (0x1E-0x3E with low bits 110, 0x70-0x7F, 0xD0-0xDF) is invalid.
enum LZVN {
    static func error(_ what: String) -> UDIFError { LZFSE.error(what) }

    /// Decodes one `bvxn` payload, `src[start..<end]`, into `dst` from offset `start0`. It must
    /// fill the output exactly up to `outEnd` and close with the end-of-stream opcode as its
    /// last 8 bytes. Matches may reach back to the start of `dst`. Returns `outEnd`.
    static func decodeBlock(_ src: UnsafePointer<UInt8>, from start: Int, to end: Int,
                            into dst: UnsafeMutablePointer<UInt8>, at start0: Int, end outEnd: Int, capacity: Int) throws -> Int {
        var p = start
        var o = start0
        var distance = 0  // none yet
        while true {
            guard p < end else { throw error("is truncated") }
            let op = Int(src[p])
            var literal = 0
            var match = 0
            switch op {
            case 0xE0:  // large literal
                guard end - p >= 2 else { throw error("is truncated") }
                literal = Int(src[p + 1]) + 16
                p += 2
            case 0xE1...0xEF:  // small literal
                literal = op & 0xF
                p += 1
            case 0xF0:  // large match
                guard end - p >= 2 else { throw error("is truncated") }
                match = Int(src[p + 1]) + 16
                p += 2
            case 0xF1...0xFF:  // small match
                match = op & 0xF
                p += 1
            case 0xA0...0xBF:  // medium distance
                guard end - p >= 3 else { throw error("is truncated") }
                let b1 = Int(src[p + 1]), b2 = Int(src[p + 2])
                literal = (op >> 3) & 3
                match = ((op & 7) << 2 | b1 & 3) + 3
                distance = b1 >> 2 | b2 << 6
                p += 3
            case 0x70...0x7F, 0xD0...0xDF:
                throw error("has an invalid LZVN opcode 0x" + String(op, radix: 16))
            default:
                literal = op >> 6
                match = (op >> 3 & 7) + 3
                switch op & 7 {
                case 7:  // large distance
                    guard end - p >= 3 else { throw error("is truncated") }
                    distance = Int(src[p + 1]) | Int(src[p + 2]) << 8
                    p += 3
                case 6 where op >= 0x40:  // previous distance
                    p += 1
                case 6:
                    switch op {
                    case 0x06:  // end of stream: the opcode and 7 bytes of padding end the payload
                        guard end - p == 8 else { throw error(end - p < 8 ? "is truncated" : "has data after its LZVN end") }
                        guard o == outEnd else { throw error("has a block that decodes to fewer bytes than its header says") }
                        return o
                    case 0x0E, 0x16:  // no-op
                        p += 1
                        continue
                    default:
                        throw error("has an invalid LZVN opcode 0x" + String(op, radix: 16))
                    }
                default:  // small distance
                    guard end - p >= 2 else { throw error("is truncated") }
                    distance = (op & 7) << 8 | Int(src[p + 1])
                    p += 2
                }
            }

            if literal > 0 {
                guard literal <= end - p else { throw error("is truncated") }
                guard literal <= outEnd - o else { throw error("has a block that decodes to more bytes than its header says") }
                if literal + 16 <= end - p && o + literal + LZFSE.copySlack <= capacity {
                    LZFSE.wildCopy16(dst + o, src + p, literal)
                } else {
                    (dst + o).update(from: src + p, count: literal)
                }
                p += literal
                o += literal
            }
            if match > 0 {
                guard distance != 0 && distance <= o else { throw error("refers before its start") }
                guard match <= outEnd - o else { throw error("has a block that decodes to more bytes than its header says") }
                LZFSE.copyMatch(dst, at: o, distance: distance, count: match, capacity: capacity)
                o += match
            }
        }
    }
}
