import Foundation
import Imaging
import Multicast
import SystemSupport
import TestSupport
import Testing
import UDIF

/// Free space (ignore chunks) in the manifest: never sent, never waited for, and a manifest
/// that claims stored bytes for it is refused.
@Suite struct FreeSpaceManifestTests {
    static let zeroDigest = [UInt8](repeating: 0, count: 32)

    @Test func freeSpaceIsNeitherSentNorAwaited() throws {
        let dir = TemporaryDirectory()
        var disk = [UInt8](repeating: 0, count: 6 << 20)
        var rng = SplitMix64(seed: 4)
        for i in disk.indices { disk[i] = UInt8(truncatingIfNeeded: rng.next()) }
        let path = dir.file("free.dmg")
        var writer = ImageWriter()
        writer.ignore = [(1 << 20)..<(4 << 20) + 512]
        try writer.write(from: Memory(bytes: disk), to: path)
        #expect(try ImageScanner(reporter: Reporter(.quiet)).scan(path) == .scanned)
        let feed = try ImageFeed(source: ImageSource.open(path))
        #expect(feed.freeBytes == (3 << 20) + 512)
        let free = feed.manifest.filter(\.isFree)
        #expect(free.count == 1 && free[0].storedLength == 0 && free[0].diskOffset == 1 << 20)
        _ = try ManifestEntry.table(of: feed.manifest, diskBytes: feed.diskBytes)
        let carousel = Carousel(manifest: feed.manifest)
        #expect(!carousel.sendable.contains { feed.manifest[$0].isFree })
        let assembler = ChunkAssembler(manifest: feed.manifest)
        for (i, e) in feed.manifest.enumerated() where e.isFree { #expect(assembler.complete[i]) }
    }

    @Test func freeSpaceClaimingStoredBytesIsRefused() {
        let manifest = [
            ManifestEntry(diskOffset: 0, length: 4096, storedLength: 100, codec: ChunkType.zlib.rawValue, sha256: Self.zeroDigest),
            ManifestEntry(diskOffset: 4096, length: 4096, storedLength: 10, codec: ChunkType.ignore.rawValue, sha256: Self.zeroDigest),
        ]
        #expect(throws: MulticastError.self) { try ManifestEntry.table(of: manifest, diskBytes: 8192) }
        var fine = manifest
        fine[1].storedLength = 0
        #expect(throws: Never.self) { try ManifestEntry.table(of: fine, diskBytes: 8192) }
    }
}

private struct Memory: ByteSource {
    let bytes: [UInt8]
    var byteCount: UInt64 { UInt64(bytes.count) }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + buffer.count)])) }
    }
}
