import SystemSupport
import Crypto
import Foundation
import UDIF

/// Reads a restore's target back while it is still being written. Ranges the writers have
/// finished are flushed to the device, dropped from the page cache and checked against their
/// digests, in disk order, on one thread beside the writers. Only what was written last is
/// left for the final pass, so a verified restore takes little longer than an unverified one
/// whenever the source (network, decoder) is slower than the disk.
package final class TrailingVerifier: Sendable {
    /// Range `range` does not hold what it should.
    package struct RangeMismatch: Error { let range: Int }

    private struct State {
        var written: [Bool]
        /// Ranges below this are written (all of them).
        var frontier = 0
        /// Ranges below this are verified.
        var verified = 0
        /// For `written(upTo:)`: ranges below this were marked by offset.
        var markedByOffset = 0
        var failed: Int?
        var stopped = false
    }

    /// Bytes read back at a time: large enough that flushing costs few calls, small enough
    /// that the final pass has little left.
    static let batchBytes: UInt64 = 32 << 20

    private let state: Monitor<State>
    private let file: FileIO
    private let ranges: [ExpectedRange]
    /// A regular file: holes read as zeros, so a zero range that is all hole needs no read.
    private let holesAreZeros: Bool
    private let thread = DispatchGroup()

    package init(file: FileIO, ranges: [ExpectedRange], holesAreZeros: Bool) {
        self.file = file
        self.ranges = ranges
        self.holesAreZeros = holesAreZeros
        state = Monitor(State(written: [Bool](repeating: false, count: ranges.count)))
        DispatchQueue.global().async(group: thread) { [self] in run() }
    }

    /// Range `index` is final: nothing will write it again.
    package func written(_ index: Int) throws {
        try state.update { s in
            s.written[index] = true
            advance(&s)
            if let failed = s.failed { throw RangeMismatch(range: failed) }
        }
    }

    /// Every range that ends at or before `offset` is final (for writers that go in disk order).
    package func written(upTo offset: UInt64) throws {
        try state.update { s in
            while s.markedByOffset < ranges.count, ranges[s.markedByOffset].offset + ranges[s.markedByOffset].length <= offset {
                s.written[s.markedByOffset] = true
                s.markedByOffset += 1
            }
            advance(&s)
            if let failed = s.failed { throw RangeMismatch(range: failed) }
        }
    }

    /// Stops the thread. Returns the first range not yet verified; throws the index of a range
    /// that did not match.
    package func stop() throws -> Int {
        try state.update { s in
            s.stopped = true
            if let failed = s.failed { throw RangeMismatch(range: failed) }
        }
        thread.wait()
        return try state.read { s in
            if let failed = s.failed { throw RangeMismatch(range: failed) }
            return s.verified
        }
    }

    /// Ranges read back and found good so far, from the first.
    package var verifiedCount: Int { state.read { $0.verified } }
    /// The range that was found bad, if one was.
    package var failedRange: Int? { state.read { $0.failed } }

    private func advance(_ s: inout State) {
        while s.frontier < ranges.count, s.written[s.frontier] { s.frontier += 1 }
    }

    private func end(_ i: Int) -> UInt64 { ranges[i].offset + ranges[i].length }

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let batch: Range<Int>? = state.wait(until: { s in
                s.stopped || (s.frontier > s.verified && end(s.frontier - 1) - ranges[s.verified].offset >= Self.batchBytes)
            }) { s in s.stopped ? nil : s.verified..<s.frontier }
            guard let batch else { return }
            let start = ranges[batch.lowerBound].offset
            file.flushAndDrop(offset: start, length: end(batch.upperBound - 1) - start)
            for i in batch {
                let matches = (try? check(ranges[i], &buffer)) ?? false
                let keepGoing = state.update { s -> Bool in
                    if matches { s.verified = i + 1 } else { s.failed = i }
                    return matches && !s.stopped
                }
                if !keepGoing { return }
            }
        }
    }

    /// Whether the target holds what the range expects.
    private func check(_ range: ExpectedRange, _ buffer: inout [UInt8]) throws -> Bool {
        if range.sha256 == nil, holesAreZeros, file.isHole(offset: range.offset, length: range.length) { return true }
        var hasher = SHA256()
        var at = range.offset
        while at < range.offset + range.length {
            let n = Int(min(UInt64(buffer.count), range.offset + range.length - at))
            let ok = try buffer.withUnsafeMutableBytes { whole -> Bool in
                let part = UnsafeMutableRawBufferPointer(rebasing: whole[0..<n])
                try file.read(into: part, at: at)
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
