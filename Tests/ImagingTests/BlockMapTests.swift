import SystemSupport
import Foundation
import TestSupport
import Testing
@testable import Imaging

@Suite struct BlockMapTests {
    static let sample = BlockMap(imageSize: 10 * 4096 + 100, ranges: [
        .init(first: 0, last: 1, sha256: Array(repeating: 1, count: 32)),
        .init(first: 5, last: 5, sha256: Array(repeating: 2, count: 32)),
        .init(first: 8, last: 10, sha256: Array(repeating: 3, count: 32)),
    ])

    @Test func roundTripsAndCoversTheImage() throws {
        let parsed = try BlockMap(parsing: Self.sample.xml())
        #expect(parsed == Self.sample)
        let ranges = parsed.expectations
        #expect(ranges.first?.offset == 0)
        #expect(ranges.last.map { $0.offset + $0.length } == Self.sample.imageSize, "the last block is short")
        #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.offset + $0.length == $1.offset })
    }

    @Test func editedMapIsRefused() {
        let edited = Self.sample.xml().replacingOccurrences(of: "> 5 <", with: "> 6 <")
        let e = #expect(throws: ImagingError.self) { try BlockMap(parsing: edited) }
        guard case .badBlockMap? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
    }

    /// Randomized mutation of a valid map: parsing yields a consistent map or throws
    /// ImagingError in one line. Seeded (ASR_TEST_SEED replays a failure).
    @Test func mutatedMapsFailCleanly() {
        let seed = SplitMix64.seed(default: 20261201)
        var rng = SplitMix64(seed: seed)
        let original = Array(Self.sample.xml().utf8)
        let alphabet = Array("0123456789-<>/\" abcdefRange".utf8)
        var refused = 0
        for mutant in 0..<5000 {
            var bytes = original
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = alphabet.randomElement(using: &rng)!
            }
            if Bool.random(using: &rng) { bytes.removeLast(Int.random(in: 0..<bytes.count, using: &rng)) }
            do {
                let map = try BlockMap(parsing: String(decoding: bytes, as: UTF8.self))
                #expect(map.expectations.reduce(0) { $0 + $1.length } == map.imageSize, "seed \(seed) mutant \(mutant)")
            } catch let e as ImagingError {
                refused += 1
                #expect(!e.description.contains("\n"), "seed \(seed) mutant \(mutant): \(e.description.debugDescription)")
            } catch {
                Issue.record("seed \(seed) mutant \(mutant): \(type(of: error)): \(error)")
            }
        }
        #expect(refused > 0, "seed \(seed): no mutant was refused")
    }
}
