import Foundation
import TestSupport
import Testing
import UDIF

/// Randomized mutation of real images: whatever the bytes, opening and decoding must either
/// work or throw UDIFError: no crash, no hang, no huge allocation. Runs for a bounded time
/// (ASR_FUZZ_SECONDS, default 20) from a fixed seed, so a failure can be replayed.
@Suite struct MutationTests {
    @Test func mutatedImagesFailCleanly() throws {
        let seconds = Double(ProcessInfo.processInfo.environment["ASR_FUZZ_SECONDS"] ?? "") ?? 20
        let seed = UInt64(ProcessInfo.processInfo.environment["ASR_FUZZ_SEED"] ?? "") ?? 20261127
        var corpus = try Fixtures.decodable.map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: $0.path))) }
        let dir = TemporaryDirectory()
        try ImageWriter().write(from: MemorySource(bytes: sampleDisk(sectors: 3000)), to: dir.file("ours.dmg"))
        corpus.append(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.file("ours.dmg")))))

        var rng = SplitMix(seed: seed)
        let deadline = Date().addingTimeInterval(seconds)
        var runs = 0
        var opened = 0
        let path = dir.file("mutant.dmg")
        while Date() < deadline {
            var bytes = corpus[Int(rng.next() % UInt64(corpus.count))]
            mutate(&bytes, &rng)
            FileManager.default.createFile(atPath: path, contents: Data(bytes))
            runs += 1
            guard let image = try? UDIFImage(path: path) else { continue }
            opened += 1
            for i in image.chunks.indices where image.chunks[i].type.hasStoredData {
                _ = try? image.decodeChunk(i)
            }
            _ = try? image.computeRegionCRCs()
        }
        print("mutation test: \(runs) mutants, \(opened) still parsed, seed \(seed)")
        #expect(runs > 100)
    }

    /// Byte flips aimed at the structures (trailer, plist, block tables) as well as the data,
    /// plus truncation and splicing.
    func mutate(_ bytes: inout [UInt8], _ rng: inout SplitMix) {
        let n = bytes.count
        switch rng.next() % 6 {
        case 0:  // trailer field
            let at = n - 512 + Int(rng.next() % 512)
            bytes[at] = UInt8(truncatingIfNeeded: rng.next())
        case 1:  // a run of bytes anywhere
            let at = Int(rng.next() % UInt64(n))
            for k in 0..<Int(rng.next() % 16 + 1) where at + k < n { bytes[at + k] = UInt8(truncatingIfNeeded: rng.next()) }
        case 2:  // inside the XML plist: digits and base64 characters matter most
            let xmlAt = Int(rng.next() % UInt64(min(n, 12000)))
            let at = max(0, n - 512 - 1 - xmlAt)
            let alphabet = Array("0123456789ABCDEFabcdef+/=<>AQgw".utf8)
            bytes[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
        case 3:  // truncate
            bytes.removeLast(Int(rng.next() % UInt64(n)))
        case 4:  // a big-endian field set to an extreme value
            let at = Int(rng.next() % UInt64(max(1, n - 8)))
            let extreme: [UInt8] = rng.next() % 2 == 0 ? [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xF0] : [0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF]
            for k in 0..<8 where at + k < n { bytes[at + k] = extreme[k] }
        default:  // several flips at once
            for _ in 0..<8 { bytes[Int(rng.next() % UInt64(n))] ^= UInt8(1 << (rng.next() % 8)) }
        }
    }
}
