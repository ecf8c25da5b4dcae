import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

/// The bzip2 and XZ encoders behind UDBZ and ULMO, and the writer's chunk sizes and memory bound.
@Suite struct DenseFormatTests {
    static let text = Array((1...60_000).map { "line \($0)\n" }.joined().utf8)

    func decode(_ type: ChunkType, _ stored: ArraySlice<UInt8>, size: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: size)
        try stored.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try Codec.decode(type, s, into: $0) } }
        return out
    }

    func encode(_ input: [UInt8], _ body: (UnsafeRawBufferPointer, UnsafeMutableRawBufferPointer) -> Int?) -> ArraySlice<UInt8>? {
        var out = [UInt8](repeating: 0, count: input.count)
        guard let n = input.withUnsafeBytes({ i in out.withUnsafeMutableBytes { body(i, $0) } }) else { return nil }
        return out[0..<n]
    }

    @Test func bzip2ChunksDecode() throws {
        let stored = try #require(encode(Self.text) { Codec.compressBzip2($0, level: 9, into: $1) })
        #expect(stored.count < Self.text.count / 4)
        #expect(try decode(.bzip2, stored, size: Self.text.count) == Self.text)
    }

    @Test func xzChunksDecodeAndCarryNoCheck() throws {
        let settings = Codec.XZSettings(preset: 9, extreme: true, dictionarySize: 1 << 20)
        let stored = try #require(encode(Self.text) { Codec.compressXZ($0, settings, into: $1) })
        #expect(try decode(.lzma, stored, size: Self.text.count) == Self.text)
        // Stream header: magic, then flags 00 00 (check none), as in hdiutil's ULMO chunks.
        #expect(Array(stored.prefix(8)) == [0xFD, 0x37, 0x7A, 0x58, 0x5A, 0x00, 0x00, 0x00])
        let hdiutil = try #require(Fixtures.all.first { $0.name == "hfsplus_lzma.dmg" })
        let image = try UDIFImage(path: hdiutil.path)
        let chunk = try #require(image.chunks.indices.first { image.chunks[$0].type == .lzma })
        #expect(Array(try image.storedBytes(of: chunk).prefix(8)) == Array(stored.prefix(8)))
    }

    @Test func incompressibleInputIsRefusedByEveryEncoder() {
        var rng = SplitMix64(seed: 9)
        let noise = (0..<(256 << 10)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        #expect(encode(noise) { Codec.compressBzip2($0, into: $1) } == nil)
        #expect(encode(noise) { Codec.compressXZ($0, Codec.XZSettings(), into: $1) } == nil)
        #expect(encode(noise) { Codec.compressZlib($0, level: 6, into: $1) } == nil)
    }

    @Test(arguments: [ImageFormat.ulmo, .udbz], [UInt64(2048), UInt64(4 * 2048 + 1)])
    func largeChunksRoundTrip(format: ImageFormat, chunkSectors: UInt64) throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(sectors: 6 * 2048 + 3, seed: chunkSectors)
        var writer = ImageWriter(format: format)
        writer.chunkSectors = chunkSectors
        try writer.write(from: MemorySource(bytes: disk), to: dir.file("a.dmg"))
        let image = try UDIFImage(path: dir.file("a.dmg"))
        #expect(image.chunks.map(\.length).max() == chunkSectors * 512)
        #expect(image.regions.allSatisfy { $0.table.buffersNeeded == UInt32(chunkSectors + 8) })
        #expect(image.chunks.contains { $0.type == format.chunkType })
        #expect(try readAll(image) == disk)
    }

    @Test(arguments: [1, 2, 16, 64])
    func inFlightChunkBytesStayWithinTheBudget(workers: Int) {
        for megabytes: UInt64 in [1, 3, 16, 33, 48, 64] {
            for format in ImageFormat.allCases {
                var writer = ImageWriter(format: format)
                writer.workers = workers
                writer.chunkSectors = megabytes * 2048
                let (w, window) = writer.parallelism()
                #expect(w >= 1 && w <= workers && window >= w)
                // Each chunk in flight holds one buffer, plus one more while a worker encodes it.
                #expect(UInt64(window + w) * megabytes << 20 <= UInt64(writer.memoryBudget), "\(megabytes)M \(format) \(workers)")
            }
        }
    }
}
