import SystemSupport
import Foundation
import Testing
import TestSupport
import UDIF

/// LZFSE streams made by hand (each block kind, each LZVN opcode form), real blocks from the
/// hdiutil fixture, rejections of malformed streams, and a mutation loop.
@Suite struct LZFSETests {
    // MARK: Stream building

    func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: v >> (8 * $0)) } }
    func le16(_ v: Int) -> [UInt8] { [UInt8(truncatingIfNeeded: v), UInt8(truncatingIfNeeded: v >> 8)] }
    let end = Array("bvx$".utf8)
    func stored(_ bytes: [UInt8]) -> [UInt8] { Array("bvx-".utf8) + le32(bytes.count) + bytes }
    func lzvn(raw: Int, _ payload: [UInt8]) -> [UInt8] { Array("bvxn".utf8) + le32(raw) + le32(payload.count) + payload }

    func decode(_ stream: [UInt8], capacity: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: capacity)
        let n = try stream.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try LZFSE.decode(s, into: $0) } }
        return Array(out.prefix(n))
    }

    /// A refusal is `.corruptChunk(codec: "lzfse", .invalid(finding))`, the finding naming
    /// what is wrong (`why`), in one line.
    func expectFinding(_ e: UDIFError?, _ why: String, _ note: Comment, _ sourceLocation: SourceLocation) {
        guard case .corruptChunk(codec: "lzfse", .invalid(let finding))? = e else {
            Issue.record("\(note): wrong error \(String(describing: e))", sourceLocation: sourceLocation)
            return
        }
        #expect(finding.contains(why), "\(note): \(finding)", sourceLocation: sourceLocation)
        #expect(!e!.description.contains("\n"), sourceLocation: sourceLocation)
    }

    /// What an LZ77 step sequence expands to, computed the obvious way.
    struct Step {
        var literal: [UInt8] = []
        var match = 0
        var distance = 0
    }
    func expand(_ steps: [Step], after prefix: [UInt8] = []) -> [UInt8] {
        var out = prefix
        for s in steps {
            out += s.literal
            for _ in 0..<s.match { out.append(out[out.count - s.distance]) }
        }
        return out
    }

    // MARK: LZVN

    /// Every opcode form, with its expected effect.
    var lzvnSample: (payload: [UInt8], steps: [Step]) {
        let long = (0..<271).map { UInt8(($0 * 7) % 251) }
        let mid = (0..<30).map { UInt8(200 - $0) }
        var p: [UInt8] = []
        var steps: [Step] = []
        p += [0xE3] + Array("abc".utf8); steps.append(Step(literal: Array("abc".utf8)))  // small literal
        for k in 0..<3 {  // large literals, 16 + 255
            let run = long.map { $0 &+ UInt8(k) }
            p += [0xE0, 0xFF] + run; steps.append(Step(literal: run))
        }
        p += [0xE0, 14] + mid; steps.append(Step(literal: mid))  // large literal, 16 + 14
        p += [0x40, 23] + Array("x".utf8); steps.append(Step(literal: Array("x".utf8), match: 3, distance: 23))  // small distance
        p += [0x56] + Array("y".utf8); steps.append(Step(literal: Array("y".utf8), match: 5, distance: 23))  // previous distance
        // medium distance: L 2, M 20 (17 = 100|01), D 300 (low 6 bits 44, high 4)
        p += [0xB4, 44 << 2 | 1, 4] + Array("pq".utf8); steps.append(Step(literal: Array("pq".utf8), match: 20, distance: 300))
        p += [0x3F, 0x20, 0x03]; steps.append(Step(match: 10, distance: 800))  // large distance
        p += [0xF7]; steps.append(Step(match: 7, distance: 800))  // small match, previous distance
        p += [0xF0, 40]; steps.append(Step(match: 56, distance: 800))  // large match, previous distance
        p += [0x0E, 0x16]  // no-ops
        p += [0x38, 1]; steps.append(Step(match: 10, distance: 1))  // small distance 1: a run
        p += [0xC8, 2] + Array("XYZ".utf8); steps.append(Step(literal: Array("XYZ".utf8), match: 4, distance: 2))
        p += [0x97, 5, 0] + Array("kl".utf8); steps.append(Step(literal: Array("kl".utf8), match: 5, distance: 5))  // large distance, L 2
        p += [0x06, 0, 0, 0, 0, 0, 0, 0]  // end of stream
        return (p, steps)
    }

    @Test func lzvnBlockDecodesEveryOpcodeForm() throws {
        let (payload, steps) = lzvnSample
        let want = expand(steps)
        #expect(try decode(lzvn(raw: want.count, payload) + end, capacity: want.count) == want)
        // A roomy output takes the wide-copy paths, an exact one the careful ones; same bytes.
        #expect(try decode(lzvn(raw: want.count, payload) + end, capacity: want.count + 100) == want)
    }

    @Test func lzvnRejections() {
        func bad(_ payload: [UInt8], raw: Int, _ note: Comment, _ why: String, sourceLocation: SourceLocation = #_sourceLocation) {
            let e = #expect(throws: UDIFError.self, note, sourceLocation: sourceLocation) { try decode(lzvn(raw: raw, payload) + end, capacity: 4096) }
            expectFinding(e, why, note, sourceLocation)
        }
        let eos: [UInt8] = [0x06, 0, 0, 0, 0, 0, 0, 0]
        bad([0x00, 5] + eos, raw: 3, "distance before the start of the output", "refers before its start")
        bad([0xE1, 0x61, 0x46, 0x62] + eos, raw: 5, "previous distance with none yet", "refers before its start")
        bad([0xE1, 0x61, 0xF3] + eos, raw: 4, "match-only with no distance yet", "refers before its start")
        bad([0xE1, 0x61, 0x00, 0] + eos, raw: 4, "distance zero", "refers before its start")
        for op: UInt8 in [0x1E, 0x3E, 0x70, 0x7F, 0xD0, 0xDF] { bad([op, 0, 0] + eos, raw: 3, "undefined opcode \(op)", "invalid LZVN opcode") }
        bad([0xE3, 0x61, 0x62, 0x63], raw: 3, "no end-of-stream opcode", "truncated")
        bad([0xE3, 0x61, 0x62, 0x63, 0x06, 0, 0], raw: 3, "end-of-stream opcode cut short", "truncated")
        bad([0xE3, 0x61, 0x62, 0x63] + eos + [0], raw: 3, "bytes after the end-of-stream opcode", "data after its LZVN end")
        bad([0xEF, 0x61, 0x62] + eos, raw: 15, "literal past the payload", "truncated")
        bad([0xE3, 0x61, 0x62, 0x63] + eos, raw: 2, "more output than the header says", "more bytes than its header says")
        bad([0xE3, 0x61, 0x62, 0x63] + eos, raw: 4, "less output than the header says", "fewer bytes than its header says")
        bad([0xE0], raw: 16, "large literal without its length", "truncated")
        bad([0xE1, 0x61, 0xA0, 0], raw: 4, "medium distance cut short", "truncated")
        // The header's payload size running past the input.
        #expect(throws: UDIFError.self) { try decode(Array("bvxn".utf8) + le32(3) + le32(100) + [0xE3, 1, 2, 3], capacity: 64) }
    }

    // MARK: bvx1 / bvx2 made by hand

    /// A compressed block's fields. With a single symbol per table every state reads zero
    /// state bits, so the payloads only carry extra bits (all zero here): every L, M and D
    /// is its symbol's first value.
    struct Block {
        var rawBytes = 60
        var literalCount = 12
        var matchCount = 3
        var literalPayload = [UInt8](repeating: 0, count: 7)
        var lmdPayload = [UInt8](repeating: 0, count: 16)
        var literalBits = 0
        var literalStates = [0, 0, 0, 0]
        var lmdBits = 0
        var lState = 0, mState = 0, dState = 0
        var freq: [Int] = {
            var f = [Int](repeating: 0, count: 360)
            f[4] = 64             // L symbol 4: L = 4
            f[20 + 16] = 64       // M symbol 16: M = 16 (+ 3 zero extra bits)
            f[40 + 10] = 256      // D symbol 10: D = 20 (+ 2 zero extra bits)
            f[104 + 0x41] = 1024  // literal "A"
            return f
        }()
    }
    /// The hand block's output: three times "AAAA" then 16 bytes from 20 back.
    func handBlockOutput(after prefix: [UInt8]) -> [UInt8] {
        expand(Array(repeating: Step(literal: Array("AAAA".utf8), match: 16, distance: 20), count: 3), after: prefix)
    }
    let prefix = Array("0123456789abcdefghij".utf8)

    func v1(_ b: Block) -> [UInt8] {
        var h = Array("bvx1".utf8) + le32(b.rawBytes) + le32(b.literalPayload.count + b.lmdPayload.count)
        h += le32(b.literalCount) + le32(b.matchCount) + le32(b.literalPayload.count) + le32(b.lmdPayload.count)
        h += le32(b.literalBits) + b.literalStates.flatMap(le16) + le32(b.lmdBits)
        h += le16(b.lState) + le16(b.mState) + le16(b.dState) + b.freq.flatMap(le16) + [0, 0]
        #expect(h.count == 772)
        return h + b.literalPayload + b.lmdPayload
    }

    func v2(_ b: Block, headerSize: Int? = nil) -> [UInt8] {
        var bits = BitWriter()
        for f in b.freq {
            switch f {
            case 0...1: bits.put(f << 1, 2)
            case 2...3: bits.put((f - 2) << 2 | 1, 3)
            case 4...7: bits.put((f - 4) << 3 | 3, 5)
            case 8...23: bits.put((f - 8) << 4 | 7, 8)
            default: bits.put((f - 24) << 4 | 15, 14)
            }
        }
        let table = bits.flushed
        func put(_ w: inout UInt64, _ v: Int, _ at: Int) { w |= UInt64(v) << UInt64(at) }
        var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0
        put(&w0, b.literalCount, 0); put(&w0, b.literalPayload.count, 20); put(&w0, b.matchCount, 40); put(&w0, b.literalBits + 7, 60)
        for (k, s) in b.literalStates.enumerated() { put(&w1, s, 10 * k) }
        put(&w1, b.lmdPayload.count, 40); put(&w1, b.lmdBits + 7, 60)
        put(&w2, headerSize ?? (32 + table.count), 0); put(&w2, b.lState, 32); put(&w2, b.mState, 42); put(&w2, b.dState, 52)
        let words = [w0, w1, w2].flatMap { w in (0..<8).map { UInt8(truncatingIfNeeded: w >> (8 * UInt64($0))) } }
        return Array("bvx2".utf8) + le32(b.rawBytes) + words + table + b.literalPayload + b.lmdPayload
    }

    struct BitWriter {
        var bytes: [UInt8] = []
        var accum = 0
        var count = 0
        mutating func put(_ v: Int, _ n: Int) {
            accum |= v << count
            count += n
            while count >= 8 { bytes.append(UInt8(accum & 0xFF)); accum >>= 8; count -= 8 }
        }
        var flushed: [UInt8] { count > 0 ? bytes + [UInt8(accum)] : bytes }
    }

    @Test func handMadeV1AndV2BlocksDecode() throws {
        let want = handBlockOutput(after: prefix)
        for block in [v1(Block()), v2(Block())] {
            #expect(try decode(stored(prefix) + block + end, capacity: want.count) == want)
            #expect(try decode(stored(prefix) + block + end, capacity: want.count + 64) == want)
        }
    }

    @Test func blocksOfEveryKindConcatenate() throws {
        let (payload, steps) = lzvnSample
        let first = expand(steps)
        let stream = lzvn(raw: first.count, payload) + stored(prefix) + v1(Block()) + v2(Block()) + stored([]) + end
        var want = handBlockOutput(after: first + prefix)
        want = handBlockOutput(after: want)
        #expect(try decode(stream, capacity: want.count) == want)
        // An LZVN block may reach back into the blocks before it.
        let back = lzvn(raw: 5, [0x17, UInt8(want.count & 0xFF), UInt8(want.count >> 8), 0x06, 0, 0, 0, 0, 0, 0, 0])
        let longer = try decode(stream.dropLast(4) + back + end, capacity: want.count + 5)
        #expect(longer == want + want.prefix(5))
    }

    @Test func handMadeBlockRejections() {
        func bad(_ b: Block, capacity: Int = 200, prefix: [UInt8]? = nil, _ note: Comment, _ why: String,
                 sourceLocation: SourceLocation = #_sourceLocation) {
            for block in [v1(b), v2(b)] {
                let e = #expect(throws: UDIFError.self, note, sourceLocation: sourceLocation) {
                    try decode(stored(prefix ?? self.prefix) + block + end, capacity: capacity)
                }
                expectFinding(e, why, note, sourceLocation)
            }
        }
        bad(Block(), prefix: [], "match distance before the start of the output", "refers before its start")
        bad(Block(), capacity: 79, "output larger than the capacity", "decompresses to more than 79 bytes")
        var b = Block(); b.rawBytes = 61; bad(b, "header claims more output than the block makes", "fewer bytes than its header says")
        b = Block(); b.rawBytes = 59; bad(b, "block makes more output than its header claims", "more bytes than its header says")
        b = Block(); b.rawBytes = 1 << 30; bad(b, "raw size far beyond the output", "decompresses to more than 200 bytes")
        b = Block(); b.literalCount = 8; bad(b, "matches use more literals than decoded", "more literals than its block holds")
        b = Block(); b.literalCount = 40_004; bad(b, "more literals than a block may hold", "than the format allows")
        b = Block(); b.matchCount = 10_001; bad(b, "more matches than a block may hold", "than the format allows")
        b = Block(); b.freq[104 + 0x41] = 1000; bad(b, "literal frequencies sum short", "summing to 1000, not 1024")
        b = Block(); b.freq[4] = 63; b.freq[5] = 2; bad(b, "L frequencies sum over", "summing to 65, not 64")
        b = Block(); b.freq[40 + 10] = 0; bad(b, "D frequencies all zero", "summing to 0, not 256")
        b = Block(); b.lState = 64; bad(b, "L state out of range", "state out of range")
        b = Block(); b.dState = 300; bad(b, "D state out of range", "state out of range")
        b = Block(); b.lmdPayload = [0, 0, 0]; bad(b, "LMD payload too short for its bit stream", "truncated")
        b = Block(); b.lmdBits = -1; b.lmdPayload = [UInt8](repeating: 0, count: 15) + [0x80]; bad(b, "bits set above the final bit count", "corrupt bit stream")
        // v1 only: counts v2 cannot even express.
        b = Block(); b.literalBits = -9
        #expect(throws: UDIFError.self) { try decode(stored(prefix) + v1(b) + end, capacity: 200) }
        var lying = v1(Block()); lying[8] &+= 1  // n_payload_bytes not the sum of the two payloads
        #expect(throws: UDIFError.self) { try decode(stored(prefix) + lying + end, capacity: 200) }
        // v2 only: header sizes that do not match the table.
        for size in [0, 31, 32, 33, 100, 4000] {
            #expect(throws: UDIFError.self, "header size \(size)") { try decode(stored(prefix) + v2(Block(), headerSize: size) + end, capacity: 200) }
        }
    }

    @Test func streamLevelRejections() throws {
        let good = stored(Array("hello".utf8)) + end
        #expect(try decode(good, capacity: 5) == Array("hello".utf8))
        #expect(try decode(end, capacity: 0) == [])
        #expect(try decode(good + [1, 2, 3], capacity: 5) == Array("hello".utf8), "bytes after bvx$ are not part of the stream")
        #expect(throws: UDIFError.self, "missing bvx$") { try decode(stored(Array("hello".utf8)), capacity: 5) }
        #expect(throws: UDIFError.self, "empty input") { try decode([], capacity: 5) }
        #expect(throws: UDIFError.self, "unknown magic") { try decode(Array("bvx3".utf8) + le32(0) + end, capacity: 5) }
        #expect(throws: UDIFError.self, "output larger than capacity") { try decode(good, capacity: 4) }
        for cut in 1..<good.count {
            #expect(throws: UDIFError.self, "cut at \(cut)") { try decode(Array(good.prefix(cut)), capacity: 5) }
        }
        for cut in 1..<v2(Block()).count {
            #expect(throws: UDIFError.self, "v2 cut at \(cut)") { try decode(stored(prefix) + v2(Block()).prefix(cut), capacity: 200) }
        }
        // Through the codec: the chunk must decode to exactly its size.
        func codec(_ size: Int) throws {
            var out = [UInt8](repeating: 0, count: size)
            try good.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try Codec.decode(.lzfse, s, into: $0) } }
        }
        #expect(throws: Never.self) { try codec(5) }
        #expect(throws: UDIFError.self) { try codec(6) }
        #expect(throws: UDIFError.self) { try codec(4) }
    }

    // MARK: Real blocks from the hdiutil fixture

    /// The fixture's LZFSE chunks: stored bytes and what they decode to (the fixture tests
    /// check the whole decoded image against its published SHA-256).
    func fixtureChunks() throws -> [(stored: [UInt8], decoded: [UInt8])] {
        let image = try UDIFImage(path: Fixtures.directory.appendingPathComponent("hfsplus_lzfse.dmg").path)
        return try image.chunks.indices.filter { image.chunks[$0].type == .lzfse }.map {
            (try image.storedBytes(of: $0), try image.decodeChunk($0))
        }
    }

    @Test func lzfseFixtureDecodesToThePublishedDigest() throws {
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_lzfse.dmg" })
        let image = try UDIFImage(path: fixture.path)
        #expect(sha256Hex(try readAll(image)) == fixture.sha256)
        let chunks = try fixtureChunks()
        #expect(chunks.contains { $0.stored.starts(with: Array("bvx2".utf8)) })
        #expect(chunks.contains { $0.stored.starts(with: Array("bvxn".utf8)) })
    }

    /// The same real bvx2 blocks rewritten with unpacked (v1) headers decode the same.
    @Test func realBlocksAsV1() throws {
        var converted = 0
        for chunk in try fixtureChunks() where chunk.stored.starts(with: Array("bvx2".utf8)) {
            let v1 = try unpackV2Blocks(chunk.stored)
            #expect(v1.starts(with: Array("bvx1".utf8)))
            #expect(try decode(v1, capacity: chunk.decoded.count) == chunk.decoded)
            converted += 1
        }
        #expect(converted > 0)
    }

    /// Rewrites every bvx2 block of a stream as bvx1, decoding the packed header independently.
    func unpackV2Blocks(_ s: [UInt8]) throws -> [UInt8] {
        func u32(_ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(s[at + $1]) << (8 * $1) } }
        func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(s[at + $1]) << (8 * UInt64($1)) } }
        var out: [UInt8] = []
        var i = 0
        while true {
            let magic = String(decoding: s[i..<(i + 4)], as: UTF8.self)
            switch magic {
            case "bvx$":
                return out + end
            case "bvxn", "bvx-":
                let size = magic == "bvxn" ? 12 + u32(i + 8) : 8 + u32(i + 4)
                out += s[i..<(i + size)]
                i += size
            case "bvx2":
                let (w0, w1, w2) = (u64(i + 8), u64(i + 16), u64(i + 24))
                func f(_ w: UInt64, _ at: UInt64, _ n: UInt64) -> Int { Int(w >> at & (1 << n - 1)) }
                let headerSize = f(w2, 0, 32)
                var freq: [Int] = []
                var bit = 0
                func peek(_ n: Int) -> Int {
                    (0..<n).reduce(0) { acc, k in
                        let at = (i + 32) * 8 + bit + k
                        return acc | Int(s[at / 8] >> UInt8(at % 8) & 1) << k
                    }
                }
                while freq.count < 360 {
                    if peek(2) & 1 == 0 { freq.append(peek(2) >> 1); bit += 2 }
                    else if peek(2) == 1 { freq.append(2 + peek(3) >> 2); bit += 3 }
                    else if peek(3) == 3 { freq.append(4 + peek(5) >> 3); bit += 5 }
                    else if peek(4) == 7 { freq.append(8 + peek(8) >> 4); bit += 8 }
                    else { freq.append(24 + peek(14) >> 4); bit += 14 }
                }
                #expect((bit + 7) / 8 == headerSize - 32)
                let literalPayload = f(w0, 20, 20), lmdPayload = f(w1, 40, 20)
                let payloadAt = i + headerSize
                let b = Block(
                    rawBytes: u32(i + 4), literalCount: f(w0, 0, 20), matchCount: f(w0, 40, 20),
                    literalPayload: Array(s[payloadAt..<(payloadAt + literalPayload)]),
                    lmdPayload: Array(s[(payloadAt + literalPayload)..<(payloadAt + literalPayload + lmdPayload)]),
                    literalBits: f(w0, 60, 3) - 7, literalStates: [0, 10, 20, 30].map { f(w1, UInt64($0), 10) },
                    lmdBits: f(w1, 60, 3) - 7, lState: f(w2, 32, 10), mState: f(w2, 42, 10), dState: f(w2, 52, 10), freq: freq)
                out += v1(b)
                i = payloadAt + literalPayload + lmdPayload
            default:
                throw TestFailure("unexpected block \(magic)")
            }
        }
    }

    @Test func v2HeaderRoundTripsThroughTheTestPacker() throws {
        // The test's own packer and unpacker agree, so realBlocksAsV1 tests the decoder, not them.
        let packed = v2(Block()) + end
        let unpacked = try unpackV2Blocks(packed)
        #expect(unpacked == v1(Block()) + end)
    }

    // MARK: Mutations

    /// Bit flips, byte overwrites, runs and truncations of real and hand-made streams: every
    /// mutant must decode or throw, never crash or hang. Fixed seed, so failures replay.
    @Test func mutantsDecodeOrThrow() throws {
        let chunks = try fixtureChunks()
        let realV2 = try #require(chunks.filter { $0.stored.starts(with: Array("bvx2".utf8)) }.min { $0.stored.count < $1.stored.count })
        let realLZVN = try #require(chunks.filter { $0.stored.starts(with: Array("bvxn".utf8)) }.max { $0.stored.count < $1.stored.count })
        let (payload, steps) = lzvnSample
        let handLZVN = expand(steps)
        let handV1 = handBlockOutput(after: prefix)
        let corpus: [(stream: [UInt8], size: Int)] = [
            (realV2.stored, realV2.decoded.count),
            (realLZVN.stored, realLZVN.decoded.count),
            (lzvn(raw: handLZVN.count, payload) + end, handLZVN.count),
            (stored(prefix) + v1(Block()) + end, handV1.count),
            (stored(prefix) + v2(Block()) + end, handV1.count),
        ]
        var rng = SplitMix64(seed: 20261127)
        var decoded = 0, thrown = 0
        for (stream, size) in corpus {
            for _ in 0..<1500 {
                var m = stream
                for _ in 0..<Int(rng.next() % 3 + 1) { mutate(&m, &rng) }
                let capacity = rng.next() % 8 == 0 ? Int(rng.next() % UInt64(size * 2 + 1)) : size
                do {
                    _ = try decode(m, capacity: capacity)
                    decoded += 1
                } catch is UDIFError {
                    thrown += 1
                }
            }
        }
        print("lzfse mutation test: \(decoded) decoded, \(thrown) threw")
        #expect(decoded + thrown == corpus.count * 1500)
        #expect(thrown > decoded)
    }

    func mutate(_ bytes: inout [UInt8], _ rng: inout SplitMix64) {
        guard !bytes.isEmpty else { return }
        let n = bytes.count
        // Headers matter most: aim half the edits at the first 64 bytes.
        let at = rng.next() % 2 == 0 ? Int(rng.next() % UInt64(min(n, 64))) : Int(rng.next() % UInt64(n))
        switch rng.next() % 5 {
        case 0: bytes[at] ^= 1 << UInt8(rng.next() % 8)
        case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
        case 2: for k in 0..<Int(rng.next() % 8 + 1) where at + k < n { bytes[at + k] = UInt8(truncatingIfNeeded: rng.next()) }
        case 3: bytes.removeLast(Int(rng.next() % UInt64(n)))
        default: bytes[at] = [0x00, 0xFF, 0x7F, 0x80][Int(rng.next() % 4)]
        }
    }
}
