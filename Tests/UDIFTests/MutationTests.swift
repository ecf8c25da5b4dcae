import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

/// Randomized mutation of real images: whatever the bytes, opening and decoding must either
/// work or throw UDIFError (or SystemError, from reading the file) of one line: no other
/// error, no crash, no hang, no huge allocation. Runs for a bounded time (ASR_FUZZ_SECONDS,
/// default 20) from a fixed seed (ASR_FUZZ_SEED); mutant i draws from its own generator, so
/// ASR_FUZZ_SEED=S ASR_FUZZ_MUTANT=i replays one mutant a failure names.
@Suite struct MutationTests {
    @Test func mutatedImagesFailCleanly() throws {
        let environment = ProcessInfo.processInfo.environment
        let seconds = Double(environment["ASR_FUZZ_SECONDS"] ?? "") ?? 20
        let seed = UInt64(environment["ASR_FUZZ_SEED"] ?? "") ?? 20261127
        let only = environment["ASR_FUZZ_MUTANT"].flatMap { Int($0) }
        var corpus = try Fixtures.decodable.map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: $0.path))) }
        #expect(corpus.count == Fixtures.all.count && !corpus.isEmpty, "fixtures missing")
        let dir = TemporaryDirectory()
        try ImageWriter().write(from: MemorySource(bytes: sampleDisk(sectors: 3000)), to: dir.file("ours.dmg"))
        corpus.append(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir.file("ours.dmg")))))

        let deadline = Date().addingTimeInterval(seconds)
        var runs = 0, opened = 0, refused = 0, failures = 0
        let path = dir.file("mutant.dmg")
        var index = only ?? 0
        while only == nil ? Date() < deadline : runs == 0 {
            defer { index += 1 }
            var rng = SplitMix64(seed: seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15)
            var bytes = corpus[Int(rng.next() % UInt64(corpus.count))]
            mutate(&bytes, &rng)
            _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
            runs += 1
            let finding: String?
            do {
                let image = try UDIFImage(path: path)
                opened += 1
                finding = exercise(image)
            } catch {
                refused += 1
                finding = Self.unexpected(error, while: "opening")
            }
            if let finding {
                failures += 1
                if failures <= 5 { Issue.record("seed \(seed) mutant \(index): \(finding) (replay: ASR_FUZZ_SEED=\(seed) ASR_FUZZ_MUTANT=\(index))") }
            }
        }
        print("mutation test: \(runs) mutants, \(opened) still parsed, \(refused) refused, seed \(seed)")
        #expect(failures == 0, "seed \(seed): \(failures) mutants failed")
        #expect(only != nil || runs > 100, "seed \(seed): only \(runs) mutants in \(seconds) s")
        #expect(only != nil || refused > 0, "seed \(seed): no mutant was refused, so the mutations reach nothing")
    }

    /// Decodes every chunk, the region CRCs and the scan data; the first unexpected error.
    func exercise(_ image: UDIFImage) -> String? {
        for i in image.chunks.indices where image.chunks[i].type.hasStoredData {
            do { _ = try image.decodeChunk(i) } catch { if let f = Self.unexpected(error, while: "decoding chunk \(i)") { return f } }
        }
        do { _ = try image.computeRegionCRCs() } catch { if let f = Self.unexpected(error, while: "computing CRCs") { return f } }
        do { _ = try ScanData.stored(in: image) } catch { if let f = Self.unexpected(error, while: "reading scan data") { return f } }
        return nil
    }

    /// nil for an error a mutant may cause: UDIFError or SystemError, described in one line.
    static func unexpected(_ error: any Error, while doing: String) -> String? {
        let text: String
        switch error {
        case let e as UDIFError: text = e.description
        case let e as SystemError: text = e.description
        default: return "\(doing) threw \(type(of: error)): \(error)"
        }
        if text.isEmpty || text.contains("\n") { return "\(doing) threw an error that is not one line: \(text.debugDescription)" }
        return nil
    }

    /// Byte flips aimed at the structures (trailer, plist, block tables) as well as the data,
    /// plus truncation and splicing.
    func mutate(_ bytes: inout [UInt8], _ rng: inout SplitMix64) {
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
