import SystemSupport
import Crypto
import Foundation
import UDIF

/// Checks that a disk holds what its scan says: each range's SHA-256 (or, for ranges that
/// must be empty, only zeros), on all cores, reporting the first bad range in disk order.
/// Free space (`unchecked` ranges) is not read. Optionally also the SHA-256 of the whole disk.
public struct RangeVerifier {
    public var reporter: Reporter
    public var workers = ProcessInfo.processInfo.activeProcessorCount

    public init(reporter: Reporter) { self.reporter = reporter }

    private enum Outcome: Sendable {
        case bytes([UInt8])
        case zeros(UInt64)
        case mismatch
    }

    /// `mismatch(i)` locates range `i` in the error for its mismatch.
    public func verify(_ disk: some ByteSource, _ ranges: [ExpectedRange], wholeDiskSHA256: [UInt8]? = nil,
                       mismatch: @escaping @Sendable (Int) -> Mismatch) throws {
        // Zero ranges may be long: split them so they spread over the workers.
        var units: [(range: Int, offset: UInt64, length: UInt64)] = []
        for (i, r) in ranges.enumerated() {
            if r.sha256 == nil && !r.unchecked {
                var at = r.offset
                while at < r.offset + r.length {
                    let n = min(8 << 20, r.offset + r.length - at)
                    units.append((i, at, n))
                    at += n
                }
            } else {
                units.append((i, r.offset, r.length))
            }
        }
        let total = ranges.last.map { $0.offset + $0.length } ?? 0
        let keepBytes = wholeDiskSHA256 != nil
        let unitList = units
        var whole = SHA256()
        try orderedParallelMap(count: unitList.count, workers: workers) { u -> Outcome in
            let unit = unitList[u]
            if ranges[unit.range].unchecked { return .zeros(unit.length) }
            let expected = ranges[unit.range].sha256
            var hasher = SHA256()
            var kept: [UInt8] = []
            var allZero = true
            var nonZeroInZeroRange = false
            var at = unit.offset
            var piece = [UInt8](repeating: 0, count: Int(min(1 << 20, unit.length)))
            while at < unit.offset + unit.length && !nonZeroInZeroRange {
                let n = Int(min(UInt64(piece.count), unit.offset + unit.length - at))
                try piece.withUnsafeMutableBytes { try disk.read(into: UnsafeMutableRawBufferPointer(rebasing: $0[0..<n]), at: at) }
                piece.withUnsafeBytes { buf in
                    let part = UnsafeRawBufferPointer(rebasing: buf[0..<n])
                    let zero = isAllZero(part)
                    allZero = allZero && zero
                    if expected == nil {
                        nonZeroInZeroRange = !zero
                    } else {
                        hasher.update(bufferPointer: part)
                        if keepBytes && unit.length <= 64 << 20 { kept.append(contentsOf: part) }
                    }
                }
                at += UInt64(n)
            }
            if nonZeroInZeroRange { return .mismatch }
            if let expected, Array(hasher.finalize()) != expected { return .mismatch }
            if expected == nil || (allZero && kept.isEmpty) { return .zeros(unit.length) }
            return .bytes(kept)
        } consume: { u, outcome in
            let unit = unitList[u]
            switch outcome {
            case .mismatch: throw ImagingError.mismatch(mismatch(unit.range))
            case .bytes(let b) where keepBytes:
                guard UInt64(b.count) == unit.length else { throw ImagingError.mismatch(mismatch(unit.range)) }
                whole.update(data: b)
            case .zeros(let n) where keepBytes: hashZeros(&whole, count: n)
            default: break
            }
            reporter.update(unit.offset + unit.length, of: total)
        }
        if let wholeDiskSHA256, Array(whole.finalize()) != wholeDiskSHA256 {
            throw ImagingError.diskDigestMismatch
        }
    }
}

private let zeroMiB = [UInt8](repeating: 0, count: 1 << 20)

func hashZeros<H: HashFunction>(_ hasher: inout H, count: UInt64) {
    var left = count
    while left > 0 {
        let n = Int(min(left, UInt64(zeroMiB.count)))
        zeroMiB.withUnsafeBytes { hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
        left -= UInt64(n)
    }
}
