import SystemSupport
import Crypto
import Foundation
import TestSupport
import UDIF

/// A disk held in memory, for writer and reader tests without files.
func sha256Hex(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}

/// Reads a whole source through its random-access interface in odd-sized pieces.
func readAll(_ source: some ByteSource, piece: Int = 300_007) throws -> [UInt8] {
    var out: [UInt8] = []
    var at: UInt64 = 0
    while at < source.byteCount {
        let n = Int(min(UInt64(piece), source.byteCount - at))
        out += try source.read(at: at, count: n)
        at += UInt64(n)
    }
    return out
}

/// Deterministic test data: text-like runs, zero runs and noise, so every chunk kind appears.
func sampleDisk(sectors: Int, seed: UInt64 = 1) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var bytes = [UInt8](repeating: 0, count: sectors * 512)
    var i = 0
    while i < bytes.count {
        let run = min(bytes.count - i, Int(rng.next() % 900_000) + 512)
        switch rng.next() % 3 {
        case 0:
            let words = Array("the quick brown fox jumps over the lazy dog 0123456789\n".utf8)
            for k in 0..<run { bytes[i + k] = words[(k + i) % words.count] }
        case 1:
            for k in 0..<run { bytes[i + k] = UInt8(truncatingIfNeeded: rng.next()) }
        default:
            break
        }
        i += run
    }
    return bytes
}
