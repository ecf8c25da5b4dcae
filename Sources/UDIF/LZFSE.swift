/// LZFSE (ULFO chunks): Apple's LZ77 format whose literals and (literal length, match length,
/// distance) triples are entropy-coded with finite-state-entropy (tANS) tables.
///
/// A stream is a run of blocks, each opened by a little-endian magic: `bvx-` stored bytes,
/// `bvxn` LZVN opcodes, `bvx1` LZFSE with plain frequency tables, `bvx2` LZFSE with packed
/// tables, and `bvx$` ending the stream. Matches may reach back into earlier blocks.
///
/// Every header count is checked before it is used, every read stays inside the input, every
/// write inside the output and every match inside what was already written, so a crafted
/// stream can only make `decode` throw. Scratch memory is fixed (about 48 KiB) whatever the input.
public enum LZFSE {
    /// Decodes a whole stream into `output` and returns the number of bytes produced. Throws
    /// when the stream is malformed, has no end marker, or would produce more than `output.count`.
    public static func decode(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let src = input.baseAddress?.assumingMemoryBound(to: UInt8.self) else { throw error("is empty") }
        guard let dst = output.baseAddress?.assumingMemoryBound(to: UInt8.self) else {
            // An empty output still has to parse: a stream of empty blocks is valid.
            var spare: UInt8 = 0
            return try withUnsafeMutablePointer(to: &spare) {
                var d = Decoder(src: src, srcCount: input.count, dst: $0, capacity: 0)
                defer { d.release() }
                return try d.run()
            }
        }
        var d = Decoder(src: src, srcCount: input.count, dst: dst, capacity: output.count)
        defer { d.release() }
        return try d.run()
    }

    static func error(_ what: String) -> UDIFError { .corruptChunk(codec: "lzfse", .invalid(what)) }

    // Block magics, little-endian "bvx?".
    static let endOfStreamMagic: UInt32 = 0x2478_7662  // bvx$
    static let storedMagic: UInt32 = 0x2D78_7662       // bvx-
    static let v1Magic: UInt32 = 0x3178_7662           // bvx1
    static let v2Magic: UInt32 = 0x3278_7662           // bvx2
    static let lzvnMagic: UInt32 = 0x6E78_7662         // bvxn

    // Format limits: an encoder never exceeds these, so neither may a stream we accept.
    static let maxLiterals = 40_000
    static let maxMatches = 10_000
    static let literalStates = 1024, lStates = 64, mStates = 64, dStates = 256
    static let lSymbols = 20, mSymbols = 20, dSymbols = 64, literalSymbols = 256
    static let frequencyCount = lSymbols + mSymbols + dSymbols + literalSymbols
    /// The v1 header is a C struct of 4-byte alignment: 770 bytes of fields, padded to 772.
    static let v1HeaderSize = 772
    static let v2FixedHeaderSize = 32

    /// Extra (raw) bits carried by each L, M and D symbol. Each symbol stands for
    /// 1 << extraBits consecutive values, starting where the previous symbol's range ended.
    static let lExtraBits: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 5, 8]
    static let mExtraBits: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 5, 8, 11]
    static let dExtraBits: [UInt8] = (0..<64).map { UInt8($0 >> 2) }
}

// MARK: - Block loop

extension LZFSE {
    /// The fields of a compressed block header, v1 and v2 alike.
    struct BlockHeader {
        var rawBytes = 0
        var literalCount = 0
        var matchCount = 0
        var literalPayload = 0
        var lmdPayload = 0
        var literalBits = 0
        var literalStates: (Int, Int, Int, Int) = (0, 0, 0, 0)
        var lmdBits = 0
        var lState = 0, mState = 0, dState = 0
        var headerSize = 0
    }

    struct Decoder {
        let src: UnsafePointer<UInt8>
        let srcCount: Int
        let dst: UnsafeMutablePointer<UInt8>
        let capacity: Int
        var i = 0
        var o = 0
        var scratch: Scratch?

        init(src: UnsafePointer<UInt8>, srcCount: Int, dst: UnsafeMutablePointer<UInt8>, capacity: Int) {
            self.src = src
            self.srcCount = srcCount
            self.dst = dst
            self.capacity = capacity
        }

        mutating func release() { scratch?.deallocate() }

        func u16(_ at: Int) -> Int { Int(UInt16(littleEndian: UnsafeRawPointer(src + at).loadUnaligned(as: UInt16.self))) }
        func u32(_ at: Int) -> UInt32 { UInt32(littleEndian: UnsafeRawPointer(src + at).loadUnaligned(as: UInt32.self)) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: UnsafeRawPointer(src + at).loadUnaligned(as: UInt64.self)) }

        /// Throws unless `n` more input bytes exist at the cursor.
        func need(_ n: Int) throws {
            guard n <= srcCount - i else { throw LZFSE.error("is truncated") }
        }

        /// Claims `n` output bytes for a block, throwing if the output cannot hold them.
        func claim(_ n: Int) throws -> Int {
            guard n <= capacity - o else { throw LZFSE.error("decompresses to more than \(capacity) bytes") }
            return o + n
        }

        mutating func run() throws -> Int {
            while true {
                guard srcCount - i >= 4 else {
                    throw LZFSE.error(i == srcCount ? "has no end-of-stream marker" : "is truncated")
                }
                let magic = u32(i)
                switch magic {
                case LZFSE.endOfStreamMagic:
                    return o  // anything after the marker is not part of the stream
                case LZFSE.storedMagic:
                    try need(8)
                    let n = Int(u32(i + 4))
                    i += 8
                    try need(n)
                    let end = try claim(n)
                    (dst + o).update(from: src + i, count: n)
                    i += n
                    o = end
                case LZFSE.lzvnMagic:
                    try need(12)
                    let raw = Int(u32(i + 4))
                    let payload = Int(u32(i + 8))
                    i += 12
                    try need(payload)
                    let end = try claim(raw)
                    o = try LZVN.decodeBlock(src, from: i, to: i + payload, into: dst, at: o, end: end, capacity: capacity)
                    i += payload
                case LZFSE.v1Magic, LZFSE.v2Magic:
                    let header = magic == LZFSE.v1Magic ? try readV1Header() : try readV2Header()
                    try decodeCompressedBlock(header)
                default:
                    throw LZFSE.error("has an unknown block magic 0x" + String(magic, radix: 16))
                }
            }
        }
    }
}

// MARK: - Compressed block headers

extension LZFSE.Decoder {
    mutating func scratchSpace() -> LZFSE.Scratch {
        if let s = scratch { return s }
        let s = LZFSE.Scratch()
        scratch = s
        return s
    }

    /// bvx1: every field spelled out, frequencies as 16-bit counts.
    mutating func readV1Header() throws -> LZFSE.BlockHeader {
        try need(LZFSE.v1HeaderSize)
        var h = LZFSE.BlockHeader()
        h.headerSize = LZFSE.v1HeaderSize
        h.rawBytes = Int(u32(i + 4))
        h.literalCount = Int(u32(i + 12))
        h.matchCount = Int(u32(i + 16))
        h.literalPayload = Int(u32(i + 20))
        h.lmdPayload = Int(u32(i + 24))
        h.literalBits = Int(Int32(bitPattern: u32(i + 28)))
        h.literalStates = (u16(i + 32), u16(i + 34), u16(i + 36), u16(i + 38))
        h.lmdBits = Int(Int32(bitPattern: u32(i + 40)))
        h.lState = u16(i + 44)
        h.mState = u16(i + 46)
        h.dState = u16(i + 48)
        // n_payload_bytes (offset 8) is the sum of the two payloads; the two are what we use.
        guard Int(u32(i + 8)) == h.literalPayload + h.lmdPayload else { throw LZFSE.error("has inconsistent payload sizes") }
        let freq = scratchSpace().frequencies
        for k in 0..<LZFSE.frequencyCount { freq[k] = UInt16(u16(i + 50 + 2 * k)) }
        return h
    }

    /// bvx2: the counts packed into three 64-bit words, then the frequencies in a prefix code.
    mutating func readV2Header() throws -> LZFSE.BlockHeader {
        try need(LZFSE.v2FixedHeaderSize)
        var h = LZFSE.BlockHeader()
        h.rawBytes = Int(u32(i + 4))
        let w0 = u64(i + 8), w1 = u64(i + 16), w2 = u64(i + 24)
        func field(_ w: UInt64, _ at: UInt64, _ width: UInt64) -> Int { Int((w >> at) & ((1 << width) - 1)) }
        h.literalCount = field(w0, 0, 20)
        h.literalPayload = field(w0, 20, 20)
        h.matchCount = field(w0, 40, 20)
        h.literalBits = field(w0, 60, 3) - 7
        h.literalStates = (field(w1, 0, 10), field(w1, 10, 10), field(w1, 20, 10), field(w1, 30, 10))
        h.lmdPayload = field(w1, 40, 20)
        h.lmdBits = field(w1, 60, 3) - 7
        h.headerSize = field(w2, 0, 32)
        h.lState = field(w2, 32, 10)
        h.mState = field(w2, 42, 10)
        h.dState = field(w2, 52, 10)
        guard h.headerSize >= LZFSE.v2FixedHeaderSize else { throw LZFSE.error("has a bad block header size") }
        try need(h.headerSize)

        // Each frequency is a prefix code read from the low bits up:
        //   x0 -> 0 or 1 (2 bits), x01 -> 2 or 3 (3 bits), xx011 -> 4...7 (5 bits),
        //   0111 + 4 bits -> 8...23 (8 bits), 1111 + 10 bits -> 24...1047 (14 bits).
        let freq = scratchSpace().frequencies
        var p = i + LZFSE.v2FixedHeaderSize
        let end = i + h.headerSize
        var accum: UInt32 = 0
        var bits = 0
        for k in 0..<LZFSE.frequencyCount {
            while p < end && bits <= 24 {
                accum |= UInt32(src[p]) << UInt32(bits)
                bits += 8
                p += 1
            }
            let value: UInt32, used: Int
            if accum & 1 == 0 {
                (value, used) = ((accum >> 1) & 1, 2)
            } else if accum & 3 == 1 {
                (value, used) = (2 + (accum >> 2) & 1, 3)
            } else if accum & 7 == 3 {
                (value, used) = (4 + (accum >> 3) & 3, 5)
            } else if accum & 15 == 7 {
                (value, used) = (8 + (accum >> 4) & 0xF, 8)
            } else {
                (value, used) = (24 + (accum >> 4) & 0x3FF, 14)
            }
            guard used <= bits else { throw LZFSE.error("has a truncated frequency table") }
            freq[k] = UInt16(value)
            accum >>= UInt32(used)
            bits -= used
        }
        // The encoder pads the table to a whole byte and the header ends right there.
        guard p == end && bits < 8 else { throw LZFSE.error("has a frequency table that does not fill its header") }
        return h
    }
}

// MARK: - Compressed block body

extension LZFSE.Decoder {
    mutating func decodeCompressedBlock(_ h: LZFSE.BlockHeader) throws {
        guard h.literalCount <= LZFSE.maxLiterals, h.matchCount <= LZFSE.maxMatches else {
            throw LZFSE.error("has more literals or matches in a block than the format allows")
        }
        let (s0, s1, s2, s3) = h.literalStates
        guard max(s0, s1, s2, s3) < LZFSE.literalStates, min(s0, s1, s2, s3) >= 0,
              h.lState < LZFSE.lStates, h.mState < LZFSE.mStates, h.dState < LZFSE.dStates
        else { throw LZFSE.error("has an initial decoder state out of range") }
        guard (-7...0).contains(h.literalBits), (-7...0).contains(h.lmdBits) else {
            throw LZFSE.error("has a bad bit count in a block header")
        }
        let blockStart = i
        let literalStart = blockStart + h.headerSize
        guard h.literalPayload <= srcCount - literalStart,
              h.lmdPayload <= srcCount - literalStart - h.literalPayload
        else { throw LZFSE.error("is truncated") }
        let lmdStart = literalStart + h.literalPayload
        let lmdEnd = lmdStart + h.lmdPayload
        let blockEnd = try claim(h.rawBytes)

        let s = scratchSpace()
        let freq = s.frequencies
        try LZFSE.buildValueTable(states: LZFSE.lStates, freq: freq, extraBits: LZFSE.lExtraBits, into: s.lTable)
        try LZFSE.buildValueTable(states: LZFSE.mStates, freq: freq + LZFSE.lSymbols, extraBits: LZFSE.mExtraBits, into: s.mTable)
        try LZFSE.buildValueTable(states: LZFSE.dStates, freq: freq + LZFSE.lSymbols + LZFSE.mSymbols,
                                  extraBits: LZFSE.dExtraBits, into: s.dTable)
        try LZFSE.buildLiteralTable(freq: freq + LZFSE.lSymbols + LZFSE.mSymbols + LZFSE.dSymbols, into: s.literalTable)

        // Literals: four interleaved FSE states over one backward bit stream. The encoder
        // always stores a multiple of four; a stray count is rounded up into the scratch pad.
        // The stream may read a few bytes before its payload (bits it never uses), as the
        // reference decoder does, but never before this block.
        let literals = s.literals
        let literalTotal = (h.literalCount + 3) & ~3
        do {
            var bits = try LZFSE.BackwardBits(src, end: lmdStart, initFloor: blockStart, floor: blockStart, finalBits: h.literalBits)
            var (q0, q1, q2, q3) = h.literalStates
            let table = UnsafePointer(s.literalTable)
            var k = 0
            while k < literalTotal {
                try bits.refill()
                literals[k] = LZFSE.decodeLiteral(&q0, table, &bits)
                literals[k + 1] = LZFSE.decodeLiteral(&q1, table, &bits)
                literals[k + 2] = LZFSE.decodeLiteral(&q2, table, &bits)
                literals[k + 3] = LZFSE.decodeLiteral(&q3, table, &bits)
                k += 4
            }
        }

        // L, M, D triples: copy L literals, then M bytes from D back (D = 0 repeats the last D).
        var bits = try LZFSE.BackwardBits(src, end: lmdEnd, initFloor: lmdStart, floor: blockStart, finalBits: h.lmdBits)
        var lState = h.lState, mState = h.mState, dState = h.dState
        let lTable = UnsafePointer(s.lTable), mTable = UnsafePointer(s.mTable), dTable = UnsafePointer(s.dTable)
        var distance = 0  // none yet
        var lit = 0
        var o = self.o
        let dst = self.dst
        let capacity = self.capacity
        for _ in 0..<h.matchCount {
            try bits.refill()  // 56+ bits: enough for L (14), M (17) and D (23) together
            let l = LZFSE.decodeValue(&lState, lTable, &bits)
            let m = LZFSE.decodeValue(&mState, mTable, &bits)
            let d = LZFSE.decodeValue(&dState, dTable, &bits)
            if d != 0 { distance = d }
            guard l <= literalTotal - lit else { throw LZFSE.error("uses more literals than its block holds") }
            guard l + m <= blockEnd - o else { throw LZFSE.error("has a block that decodes to more bytes than its header says") }
            if o + l + m + LZFSE.copySlack <= capacity {
                LZFSE.wildCopy16(dst + o, literals + lit, l)
            } else {
                (dst + o).update(from: literals + lit, count: l)
            }
            o += l
            lit += l
            if m > 0 {
                guard distance != 0 && distance <= o else { throw LZFSE.error("refers before its start") }
                LZFSE.copyMatch(dst, at: o, distance: distance, count: m, capacity: capacity)
                o += m
            }
        }
        guard o == blockEnd else { throw LZFSE.error("has a block that decodes to fewer bytes than its header says") }
        self.o = o
        i = lmdEnd
    }
}

// MARK: - FSE tables and bit stream

extension LZFSE {
    /// Fixed scratch memory for compressed blocks, allocated on the first such block.
    struct Scratch {
        let base: UnsafeMutableRawPointer
        let literalTable: UnsafeMutablePointer<UInt32>  // 1024 states
        let lTable: UnsafeMutablePointer<UInt64>        // 64 states
        let mTable: UnsafeMutablePointer<UInt64>        // 64 states
        let dTable: UnsafeMutablePointer<UInt64>        // 256 states
        let frequencies: UnsafeMutablePointer<UInt16>   // 360 counts, L M D literal
        let literals: UnsafeMutablePointer<UInt8>       // 40,000 + room for 16-byte copies

        init() {
            let tables = 1024 * 4 + (64 + 64 + 256) * 8
            let freq = LZFSE.frequencyCount * 2
            let size = tables + freq + LZFSE.maxLiterals + 64
            base = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 16)
            // Zeroed once so the over-reads of wide literal copies never see uninitialized bytes.
            base.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            literalTable = base.assumingMemoryBound(to: UInt32.self)
            lTable = (base + 4096).assumingMemoryBound(to: UInt64.self)
            mTable = lTable + 64
            dTable = mTable + 64
            frequencies = (base + tables).assumingMemoryBound(to: UInt16.self)
            literals = (base + tables + freq).assumingMemoryBound(to: UInt8.self)
        }

        func deallocate() { base.deallocate() }
    }

    /// Checks that a frequency table covers exactly every state: a table that sums short would
    /// leave states without an entry, one that sums over would overflow the table.
    static func checkFrequencies(_ freq: UnsafePointer<UInt16>, symbols: Int, states: Int) throws {
        var sum = 0
        for k in 0..<symbols { sum += Int(freq[k]) }
        guard sum == states else { throw error("has a frequency table summing to \(sum), not \(states)") }
    }

    /// tANS: a symbol of frequency f owns f consecutive states. Each of them reads k or k - 1
    /// bits (k chosen so that states <= f << k < 2 * states) and adds them to a base to get the
    /// next state; the bases tile 0..<states, so the next state is always in range.
    @inline(__always)
    static func forEachState(states: Int, frequency f: Int, _ body: (_ j: Int, _ bits: Int, _ base: Int) -> Void) {
        let k = f.leadingZeroBitCount - states.leadingZeroBitCount
        let j0 = ((2 * states) >> k) - f
        for j in 0..<f {
            if j < j0 {
                body(j, k, ((f + j) << k) - states)
            } else {
                body(j, k - 1, (j - j0) << (k - 1))
            }
        }
    }

    /// Literal entry: bits 0-7 bit count, 8-15 symbol, 16-31 next-state base.
    static func buildLiteralTable(freq: UnsafePointer<UInt16>, into table: UnsafeMutablePointer<UInt32>) throws {
        try checkFrequencies(freq, symbols: literalSymbols, states: literalStates)
        var at = 0
        for symbol in 0..<literalSymbols {
            let f = Int(freq[symbol])
            guard f > 0 else { continue }
            forEachState(states: literalStates, frequency: f) { _, bits, base in
                table[at] = UInt32(bits) | UInt32(symbol) << 8 | UInt32(base) << 16
                at += 1
            }
        }
    }

    /// L/M/D entry: bits 0-7 total bits (state + extra), 8-15 extra bits, 16-31 next-state
    /// base, 32-63 the symbol's first value.
    static func buildValueTable(states: Int, freq: UnsafePointer<UInt16>, extraBits: [UInt8],
                                into table: UnsafeMutablePointer<UInt64>) throws {
        try checkFrequencies(freq, symbols: extraBits.count, states: states)
        var at = 0
        var firstValue = 0
        for symbol in 0..<extraBits.count {
            let extra = Int(extraBits[symbol])
            let f = Int(freq[symbol])
            if f > 0 {
                let value = firstValue
                forEachState(states: states, frequency: f) { _, bits, base in
                    table[at] = UInt64(bits + extra) | UInt64(extra) << 8 | UInt64(base) << 16 | UInt64(value) << 32
                    at += 1
                }
            }
            firstValue += 1 << extra
        }
    }

    @inline(__always)
    static func decodeLiteral(_ state: inout Int, _ table: UnsafePointer<UInt32>, _ bits: inout BackwardBits) -> UInt8 {
        let e = table[state]
        state = Int(e >> 16) + Int(bits.pull(Int(e & 0xFF)))
        return UInt8(truncatingIfNeeded: e >> 8)
    }

    @inline(__always)
    static func decodeValue(_ state: inout Int, _ table: UnsafePointer<UInt64>, _ bits: inout BackwardBits) -> Int {
        let e = table[state]
        let extra = e >> 8 & 0xFF
        let read = bits.pull(Int(e & 0xFF))
        state = Int(e >> 16 & 0xFFFF) + Int(read &>> extra)
        return Int(e >> 32) + Int(read & ((1 &<< extra) &- 1))
    }

    /// An FSE bit stream read backwards: the encoder wrote it front to back, so decoding starts
    /// at the end and takes the most recently written bits first. Holds 56...63 bits after
    /// each refill; the bits above `count` are always zero.
    struct BackwardBits {
        let src: UnsafePointer<UInt8>
        let floor: Int  // never read below this
        let end: Int    // nor at or past this
        var pos: Int    // bytes floor..<pos are not loaded yet
        var accum: UInt64 = 0
        var count = 0

        /// `finalBits` (-7...0) is how far the encoder's last byte fell short of full.
        init(_ src: UnsafePointer<UInt8>, end: Int, initFloor: Int, floor: Int, finalBits: Int) throws {
            self.src = src
            self.floor = floor
            self.end = end
            let first = finalBits == 0 ? 7 : 8
            guard end - first >= initFloor else { throw LZFSE.error("is truncated") }
            pos = end - first
            for k in 0..<first { accum |= UInt64(src[pos + k]) << UInt64(8 * k) }
            count = first * 8 + (finalBits == 0 ? 0 : finalBits)
            guard accum >> UInt64(count) == 0 else { throw LZFSE.error("has a corrupt bit stream") }
        }

        @inline(__always)
        mutating func refill() throws {
            let take = (63 - count) >> 3
            guard take > 0 else { return }
            let p = pos - take
            guard p >= floor && p + 8 <= end else { throw LZFSE.error("is truncated") }
            pos = p
            let incoming = UInt64(littleEndian: UnsafeRawPointer(src + p).loadUnaligned(as: UInt64.self))
            let n = UInt64(take << 3)
            accum = (accum &<< n) | (incoming & ((1 &<< n) &- 1))
            count += take << 3
        }

        @inline(__always)
        mutating func pull(_ n: Int) -> UInt64 {
            count -= n
            let value = accum &>> UInt64(count)
            accum &= (1 &<< UInt64(count)) &- 1
            return value
        }
    }
}

// MARK: - Copies shared with LZVN

extension LZFSE {
    /// Output room a wide copy may overrun past its last byte.
    static let copySlack = 32

    /// Copies `n` bytes 16 at a time; may read and write up to 15 bytes past `n`.
    @inline(__always)
    static func wildCopy16(_ to: UnsafeMutablePointer<UInt8>, _ from: UnsafePointer<UInt8>, _ n: Int) {
        var k = 0
        while k < n {
            let a = UnsafeRawPointer(from + k).loadUnaligned(as: UInt64.self)
            let b = UnsafeRawPointer(from + k + 8).loadUnaligned(as: UInt64.self)
            UnsafeMutableRawPointer(to + k).storeBytes(of: a, as: UInt64.self)
            UnsafeMutableRawPointer(to + k + 8).storeBytes(of: b, as: UInt64.self)
            k += 16
        }
    }

    /// Copies `n` bytes 8 at a time; may write up to 7 bytes past `n`. Safe for overlapping
    /// LZ copies whose distance is at least 8.
    @inline(__always)
    static func wildCopy8(_ to: UnsafeMutablePointer<UInt8>, _ from: UnsafePointer<UInt8>, _ n: Int) {
        var k = 0
        while k < n {
            UnsafeMutableRawPointer(to + k).storeBytes(of: UnsafeRawPointer(from + k).loadUnaligned(as: UInt64.self), as: UInt64.self)
            k += 8
        }
    }

    /// Appends `count` bytes copied from `distance` back, byte after byte in effect, so a short
    /// distance repeats its pattern. The caller has checked 1 <= distance <= at and
    /// at + count <= capacity.
    @inline(__always)
    static func copyMatch(_ dst: UnsafeMutablePointer<UInt8>, at o: Int, distance d: Int, count m: Int, capacity: Int) {
        let to = dst + o
        guard o + m + copySlack <= capacity else {
            if d >= m {
                to.update(from: to - d, count: m)
            } else {
                for k in 0..<m { to[k] = to[k - d] }
            }
            return
        }
        if d >= 16 {
            wildCopy16(to, to - d, m)
        } else if d >= 8 {
            wildCopy8(to, to - d, m)
        } else if d == 1 {
            to.update(repeating: to[-1], count: m)
        } else {
            // Write one period of at least 8 bytes (a multiple of d), then copy 8 at a time
            // from one such period back, which repeats the same pattern.
            let period = d * ((8 + d - 1) / d)
            let head = min(m, period)
            for k in 0..<head { to[k] = to[k - d] }
            if m > head { wildCopy8(to + head, to + head - period, m - head) }
        }
    }
}
