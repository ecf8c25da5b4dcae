import SystemSupport
import Crypto
import Foundation
import UDIF

/// Checks that a disk holds what its scan says: each range's SHA-256 (or, for ranges that
/// must be empty, only zeros), on all cores, reporting the first bad range in disk order.
/// Free space (`unchecked` ranges) is not read. Every byte the scan covers is checked once;
/// no whole-disk digest is needed on top (see `ImageIdentity`).
public struct RangeVerifier {
    public var reporter: Reporter
    public var workers = ProcessInfo.processInfo.activeProcessorCount
    /// The regular file behind the disk, whose holes read as zeros: a zero range that is all
    /// hole needs no read.
    public var holes: FileIO?

    public init(reporter: Reporter) { self.reporter = reporter }

    /// `mismatch(i)` locates range `i` in the error for its mismatch.
    public func verify(_ disk: some ByteSource, _ ranges: [ExpectedRange], mismatch: @escaping @Sendable (Int) -> Mismatch) throws {
        // Zero ranges may be long: split them so they spread over the workers.
        var units: [(range: Int, check: ExpectedRange)] = []
        for (i, r) in ranges.enumerated() where !r.unchecked {
            guard r.sha256 == nil else {
                units.append((i, r))
                continue
            }
            var at = r.offset
            while at < r.offset + r.length {
                let n = min(8 << 20, r.offset + r.length - at)
                units.append((i, ExpectedRange(offset: at, length: n, sha256: nil)))
                at += n
            }
        }
        let total = ranges.last.map { $0.offset + $0.length } ?? 0
        let unitList = units, holes = self.holes
        try orderedParallelMap(count: unitList.count, workers: workers) { u -> Bool in
            var buffer = [UInt8](repeating: 0, count: Int(min(1 << 20, unitList[u].check.length)))
            return try Self.holds(unitList[u].check, disk, holes: holes, buffer: &buffer)
        } consume: { u, holds in
            guard holds else { throw ImagingError.mismatch(mismatch(unitList[u].range)) }
            reporter.update(unitList[u].check.offset + unitList[u].check.length, of: total)
        }
    }

    /// Whether `disk` holds what `range` expects, read through `buffer`. `holes`: see above.
    static func holds(_ range: ExpectedRange, _ disk: some ByteSource, holes: FileIO?, buffer: inout [UInt8]) throws -> Bool {
        if range.unchecked { return true }  // free space: whatever the target held stays
        if range.sha256 == nil, let holes, holes.isHole(offset: range.offset, length: range.length) { return true }
        var hasher = SHA256()
        var at = range.offset
        while at < range.offset + range.length {
            let n = Int(min(UInt64(buffer.count), range.offset + range.length - at))
            let ok = try buffer.withUnsafeMutableBytes { whole -> Bool in
                let part = UnsafeMutableRawBufferPointer(rebasing: whole[0..<n])
                try disk.read(into: part, at: at)
                if range.sha256 == nil { return isAllZero(UnsafeRawBufferPointer(part)) }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(part))
                return true
            }
            if !ok { return false }
            at += UInt64(n)
        }
        return range.sha256.map { Array(hasher.finalize()) == $0 } ?? true
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
