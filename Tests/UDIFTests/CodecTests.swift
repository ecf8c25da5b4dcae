import SystemSupport
import Testing
import TestSupport
@testable import UDIF

@Suite struct CodecTests {
    func adc(_ input: [UInt8], outputSize: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: outputSize)
        try input.withUnsafeBytes { i in try out.withUnsafeMutableBytes { try ADC.decode(i, into: $0) } }
        return out
    }

    @Test func adcDecodesEachOpcodeForm() throws {
        // literal "abc", 2-byte copy of 3 from distance 3, 3-byte copy of 5 from distance 1 (overlapping)
        let stream: [UInt8] = [0x82, 0x61, 0x62, 0x63, 0x00, 0x02, 0x41, 0x00, 0x00]
        #expect(try adc(stream, outputSize: 11) == Array("abcabccccccc".utf8.prefix(11)))
    }

    @Test func adcRejectsBadStreams() {
        #expect(throws: UDIFError.self) { try adc([0x00, 0x05], outputSize: 3) }  // refers before the start
        #expect(throws: UDIFError.self) { try adc([0x85, 0x61], outputSize: 6) }  // literal runs past the input
        #expect(throws: UDIFError.self) { try adc([0x82, 0x61, 0x62, 0x63], outputSize: 2) }  // too much output
        #expect(throws: UDIFError.self) { try adc([0x80, 0x61], outputSize: 4) }  // too little output
    }

    func decode(_ type: ChunkType, _ stored: [UInt8], size: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        try stored.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try Codec.decode(type, s, into: $0) } }
        return out
    }

    @Test func zlibMustDecodeToExactlyTheChunkSize() throws {
        let data = [UInt8](repeating: 7, count: 4096)
        let z = try #require(data.withUnsafeBytes { Codec.compressZlib($0, level: 6) })
        #expect(try decode(.zlib, z, size: 4096) == data)
        #expect(throws: UDIFError.self) { try decode(.zlib, z, size: 3584) }
        #expect(throws: UDIFError.self) { try decode(.zlib, z, size: 4608) }
        #expect(throws: UDIFError.self) { try decode(.zlib, Array(z.prefix(z.count / 2)), size: 4096) }
    }

    @Test func incompressibleDataIsNotCompressed() {
        var rng = SplitMix64(seed: 9)
        let noise = (0..<65536).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        #expect(noise.withUnsafeBytes { Codec.compressZlib($0, level: 6) } == nil)
    }

    @Test func corruptBzip2AndXZAreErrors() {
        #expect(throws: UDIFError.self) { try decode(.bzip2, Array("BZh9garbage".utf8), size: 512) }
        #expect(throws: UDIFError.self) { try decode(.lzma, [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 1, 2, 3], size: 512) }
        #expect(throws: UDIFError.self) { try decode(.raw, [1, 2, 3], size: 512) }
    }

    @Test func zeroDetection() {
        var z = [UInt8](repeating: 0, count: 1 << 20)
        #expect(z.withUnsafeBytes(isAllZero))
        z[z.count - 1] = 1
        #expect(!z.withUnsafeBytes(isAllZero))
        z[z.count - 1] = 0
        z[12345] = 1
        #expect(!z.withUnsafeBytes(isAllZero))
        #expect([UInt8](repeating: 0, count: 13).withUnsafeBytes(isAllZero))
    }
}
