import SystemSupport
import Crypto
import Foundation
import UDIF

/// Reads a restore's target back while it is still being written. Whenever the writers have
/// finished a stretch of consecutive ranges of at least `batchBytes`, anywhere on the disk, it
/// is flushed to the device, dropped from the page cache and checked against its digests, on
/// one thread beside the writers. Only what was written last (and stretches cut short by
/// ranges still missing) is left for the final pass, so a verified restore takes little
/// longer than an unverified one whenever the source (network, decoder) is slower than the
/// disk. Stretches need not start at the disk's beginning: a multicast client that joined
/// late, or lost a few chunks, gets its ranges out of order.
package final class TrailingVerifier: Sendable {
    /// Range `range` does not hold what it should.
    package struct RangeMismatch: Error { let range: Int }

    private enum Status: UInt8 { case pending, written, taken }

    private struct State {
        var status: [Status]
        /// Starts of stretches found long enough when a range was reported written.
        var ready: [Int] = []
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
    /// Signalled when the thread ends. A thread of its own, not a global queue's: those run
    /// only about as many blocks at once as there are cores, and the writers may hold them all.
    private let ended = DispatchSemaphore(value: 0)

    package init(file: FileIO, ranges: [ExpectedRange], holesAreZeros: Bool) {
        self.file = file
        self.ranges = ranges
        self.holesAreZeros = holesAreZeros
        state = Monitor(State(status: Array(repeating: .pending, count: ranges.count)))
        Thread { [self] in
            run()
            ended.signal()
        }.start()
    }

    /// Range `index` is final: nothing will write it again.
    package func written(_ index: Int) throws {
        try state.update { s in
            if s.status[index] == .pending { s.status[index] = .written }
            noteStretch(around: index, &s)
            if let failed = s.failed { throw RangeMismatch(range: failed) }
        }
    }

    /// Every range that ends at or before `offset` is final (for writers that go in disk order).
    package func written(upTo offset: UInt64) throws {
        try state.update { s in
            let before = s.markedByOffset
            while s.markedByOffset < ranges.count, end(s.markedByOffset) <= offset {
                if s.status[s.markedByOffset] == .pending { s.status[s.markedByOffset] = .written }
                s.markedByOffset += 1
            }
            if s.markedByOffset > before { noteStretch(around: s.markedByOffset - 1, &s) }
            if let failed = s.failed { throw RangeMismatch(range: failed) }
        }
    }

    /// Stops the thread (at once if called again). Returns the indices of the ranges not yet
    /// verified, in disk order; throws the index of a range that did not match.
    package func stop() throws -> [Int] {
        // A second call (after a failure, say) has nothing left to wait for.
        let first = state.update { s in
            defer { s.stopped = true }
            return !s.stopped
        }
        if first { ended.wait() }
        return try state.read { s in
            if let failed = s.failed { throw RangeMismatch(range: failed) }
            return s.status.indices.filter { s.status[$0] != .taken }
        }
    }

    /// Ranges read back and found good so far.
    package var verifiedCount: Int { state.read { $0.verified } }
    /// The range that was found bad, if one was.
    package var failedRange: Int? { state.read { $0.failed } }

    private func end(_ i: Int) -> UInt64 { ranges[i].offset + ranges[i].length }

    /// Queues the stretch of written ranges around `index` once it is a batch long. Looks at
    /// no more than a batch each way, so a report costs the same on any disk.
    private func noteStretch(around index: Int, _ s: inout State) {
        guard s.status[index] == .written else { return }
        var first = index, bytes = ranges[index].length
        while first > 0, s.status[first - 1] == .written, bytes < Self.batchBytes {
            first -= 1
            bytes += ranges[first].length
        }
        var last = index
        while last + 1 < ranges.count, s.status[last + 1] == .written, bytes < Self.batchBytes {
            last += 1
            bytes += ranges[last].length
        }
        if bytes >= Self.batchBytes { s.ready.append(first) }
    }

    private enum Work { case batch(Range<Int>), none, stop }

    private func run() {
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        let disk = RawSource(file: file, byteCount: ranges.last.map { $0.offset + $0.length } ?? 0)
        while true {
            let work: Work = state.wait(until: { $0.stopped || !$0.ready.isEmpty }) { s in
                if s.stopped { return .stop }
                guard let start = s.ready.popLast() else { return .none }
                // The whole stretch from its first written range, a batch at a time; the rest
                // of it is queued again.
                var first = start
                while first > 0, s.status[first - 1] == .written { first -= 1 }
                var last = first, bytes: UInt64 = 0
                while last < ranges.count, s.status[last] == .written, bytes < Self.batchBytes {
                    s.status[last] = .taken
                    bytes += ranges[last].length
                    last += 1
                }
                if last < ranges.count, s.status[last] == .written { s.ready.append(last) }
                return last > first ? .batch(first..<last) : .none
            }
            guard case .batch(let batch) = work else {
                if case .stop = work { return }
                continue
            }
            let start = ranges[batch.lowerBound].offset
            file.flushAndDrop(offset: start, length: end(batch.upperBound - 1) - start)
            for i in batch {
                let matches = (try? RangeVerifier.holds(ranges[i], disk, holes: holesAreZeros ? file : nil, buffer: &buffer)) ?? false
                state.update { s in
                    if matches { s.verified += 1 } else { s.failed = s.failed ?? i }
                }
                if !matches { return }
            }
        }
    }
}
