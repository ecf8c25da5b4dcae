import Foundation
import SystemSupport

/// Mutants of a seed corpus, for where libFuzzer is not: the CI pass, and a plain build of
/// `Fuzz`. Blind, but aimed at what these formats get wrong: big-endian counts and lengths
/// set to extremes or nudged by one, text digits, the harness's own dictionary tokens,
/// truncation, and splices of two seeds.
public struct Mutator {
    public let seeds: [[UInt8]]
    let tokens: [[UInt8]]
    var rng: SplitMix64

    public init(seeds: [[UInt8]], dictionary: [String] = [], seed: UInt64) {
        self.seeds = seeds.isEmpty ? [[]] : seeds
        tokens = dictionary.map { $0.unicodeScalars.map { UInt8(truncatingIfNeeded: $0.value) } }
        rng = SplitMix64(seed: seed)
    }

    mutating func below(_ n: Int) -> Int { n <= 0 ? 0 : Int(rng.next() % UInt64(n)) }

    /// The next mutant: a random seed with one to four mutations.
    public mutating func next() -> [UInt8] {
        var bytes = seeds[below(seeds.count)]
        for _ in 0...below(4) { mutate(&bytes) }
        return bytes
    }

    mutating func mutate(_ bytes: inout [UInt8]) {
        guard !bytes.isEmpty else {
            bytes = (0..<below(64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            return
        }
        let n = bytes.count
        let at = below(n)
        switch below(10) {
        case 0:
            bytes[at] ^= 1 << UInt8(below(8))
        case 1:
            bytes[at] = UInt8(truncatingIfNeeded: rng.next())
        case 2:  // a big-endian field of 2, 4 or 8 bytes set to an extreme
            let width = [2, 4, 8][below(3)]
            let extremes: [UInt64] = [0, 1, .max, .max >> 1, 1 << 63, 0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0xFFFF, 0x1_0000]
            let value = extremes[below(extremes.count)]
            for k in 0..<width where at + k < n { bytes[at + k] = UInt8(truncatingIfNeeded: value >> UInt64(8 * (width - 1 - k))) }
        case 3:  // a big-endian u32 nudged by a little
            let start = min(at, max(0, n - 4))
            var v = bytes[start..<min(n, start + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            v = v &+ UInt32(bitPattern: Int32(below(33) - 16))
            for k in 0..<min(4, n - start) { bytes[start + k] = UInt8(truncatingIfNeeded: v >> UInt32(8 * (min(4, n - start) - 1 - k))) }
        case 4:  // text: digits and markup characters
            let alphabet = Array("0123456789-+.x<>/=\" \n&#;ABCDEFabcdef".utf8)
            bytes[at] = alphabet[below(alphabet.count)]
        case 5:
            bytes.removeLast(below(n) + 1)
        case 6:  // delete a run
            bytes.removeSubrange(at..<min(n, at + 1 + below(32)))
        case 7:  // duplicate a run of the input inside itself
            let start = below(n)
            let run = Array(bytes[start..<min(n, start + 1 + below(64))])
            bytes.insert(contentsOf: run, at: at)
        case 8:  // splice: this input's head, another seed's tail
            let other = seeds[below(seeds.count)]
            bytes = Array(bytes.prefix(at)) + other.suffix(below(other.count + 1))
        default:  // a dictionary token, inserted or written over
            guard !tokens.isEmpty else { bytes[at] = 0; return }
            let token = tokens[below(tokens.count)]
            if rng.next() & 1 == 0 {
                bytes.insert(contentsOf: token, at: at)
            } else {
                for (k, b) in token.enumerated() where at + k < n { bytes[at + k] = b }
            }
        }
    }
}

/// What a bounded mutation run did.
public struct MutationRun: Sendable {
    public var target: FuzzTarget
    public var executions = 0
    public var seconds = 0.0
    /// The slowest single input, in seconds: a stand-in for libFuzzer's timeout.
    public var slowest = 0.0
    public var slowestInput: [UInt8] = []
    public var failures: [(input: [UInt8], failure: FuzzFailure)] = []

    /// Runs every seed as it is, then mutants until `seconds` pass or `limit` inputs ran.
    /// Runs the seeds, then mutants until `seconds` have passed, but at least `minimumMutants`
    /// of them however slow the machine is.
    public static func run(_ target: FuzzTarget, seeds: [[UInt8]], seed: UInt64, seconds: Double,
                           limit: Int = .max, minimumMutants: Int = 0) -> MutationRun {
        var result = MutationRun(target: target)
        var mutator = Mutator(seeds: seeds, dictionary: target.dictionary, seed: seed)
        let start = Date()
        let deadline = start.addingTimeInterval(seconds)
        var queue = seeds
        while result.executions < limit
                && (!queue.isEmpty || Date() < deadline || result.executions < seeds.count + minimumMutants) {
            let input = queue.isEmpty ? mutator.next() : queue.removeFirst()
            let began = Date()
            do {
                try target.run(input)
            } catch let failure as FuzzFailure {
                result.failures.append((input, failure))
            } catch {
                result.failures.append((input, FuzzFailure("threw \(error)")))
            }
            let took = Date().timeIntervalSince(began)
            if took > result.slowest {
                result.slowest = took
                result.slowestInput = input
            }
            result.executions += 1
        }
        result.seconds = Date().timeIntervalSince(start)
        return result
    }
}
