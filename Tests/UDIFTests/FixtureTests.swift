import SystemSupport
import Testing
import TestSupport
import UDIF

@Suite struct FixtureTests {
    @Test(arguments: Fixtures.decodable.map(\.name))
    func decodesToPublishedDigest(_ name: String) throws {
        let expected = try #require(Fixtures.all.first { $0.name == name })
        let image = try UDIFImage(path: expected.path)
        #expect(image.byteCount == expected.size)
        #expect(image.regions.count == 8)
        #expect(sha256Hex(try readAll(image)) == expected.sha256)
    }

    @Test(arguments: Fixtures.decodable.map(\.name))
    func checksumsMatchAsStored(_ name: String) throws {
        let image = try UDIFImage(path: Fixtures.directory.appendingPathComponent(name).path)
        let crcs = try image.computeRegionCRCs()
        #expect(crcs == image.regions.map { $0.table.checksum.crc32Value })
        #expect(UDIFImage.masterCRC(of: crcs) == image.trailer.masterChecksum.crc32Value)
        #expect(!image.isOrdered, "hdiutil's modern images are not in logical order")
    }

    @Test func fixturesArePresent() {
        #expect(Fixtures.all.count == 5, "expected ../shared/fixtures/udif/raw.sha256 with five images")
    }

    @Test func lzfseChunksDecodeToTheirSize() throws {
        let image = try UDIFImage(path: Fixtures.directory.appendingPathComponent("hfsplus_lzfse.dmg").path)
        let indices = image.chunks.indices.filter { image.chunks[$0].type == .lzfse }
        #expect(!indices.isEmpty)
        for index in indices {
            #expect(try image.decodeChunk(index).count == Int(image.chunks[index].length))
        }
    }

    @Test func manyThreadsReadTheSameImage() async throws {
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_zlib.dmg" })
        let image = try UDIFImage(path: fixture.path, cacheChunks: 2)
        let reference = try readAll(image)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask {
                    var rng = SplitMix64(seed: UInt64(t))
                    for _ in 0..<200 {
                        let at = Int(rng.next() % UInt64(reference.count))
                        let n = Int(rng.next() % UInt64(min(70_000, reference.count - at))) + 1
                        let got = try image.read(at: UInt64(at), count: n)
                        guard got[...] == reference[at..<(at + n)] else { throw TestFailure("mismatch at \(at)+\(n)") }
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
