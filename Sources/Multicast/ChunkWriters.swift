import SystemSupport
import Foundation
import Imaging
import UDIF

/// Decodes, checks and writes assembled chunks on a thread per core, in any order, each at
/// its offset. `submit` never waits, so the receiving thread never stalls on a decode: the
/// queue is bounded by the assembler's memory budget, which counts every chunk handed on
/// until `collect` reports it written or rejected.
package final class ChunkWriters: Sendable {
    private struct Job {
        let index: Int
        let stored: ChunkBuffer
        let entry: ManifestEntry
    }

    private struct Queue {
        var jobs: [Job] = []
        var head = 0
        var stopped = false

        mutating func take() -> Job? {
            guard head < jobs.count, !stopped else { return nil }
            defer {
                head += 1
                if head == jobs.count { jobs.removeAll(keepingCapacity: true); head = 0 }
            }
            return jobs[head]
        }
    }

    private struct Outcome {
        var written: [Int] = []
        var rejected: [Int] = []
        var failure: (any Error)?
        var bytesWritten: UInt64 = 0
    }

    private let queue = Monitor(Queue())
    private let outcome = Monitor(Outcome())
    private let file: FileIO
    private let table: ChunkTable
    /// Reads each written chunk back while the rest arrive.
    private let verifier: TrailingVerifier?
    private let group = DispatchGroup()

    package init(file: FileIO, table: ChunkTable, workers: Int, verifier: TrailingVerifier? = nil) {
        self.file = file
        self.table = table
        self.verifier = verifier
        // Threads of their own, not a global queue's: those run only about as many blocks at
        // once as there are cores, and other work in the process may hold them all.
        for _ in 0..<max(1, workers) {
            group.enter()
            Thread { [self] in
                work()
                group.leave()
            }.start()
        }
    }

    package var bytesWritten: UInt64 { outcome.read { $0.bytesWritten } }

    /// Queues a chunk's stored bytes for a worker.
    package func submit(_ index: Int, _ stored: ChunkBuffer, _ entry: ManifestEntry) {
        queue.update { $0.jobs.append(Job(index: index, stored: stored, entry: entry)) }
    }

    /// Marks what the workers finished since the last call; true if a chunk was written.
    /// Throws the first write failure.
    package func collect(into assembler: inout ChunkAssembler) throws -> Bool {
        let (written, rejected, failure) = outcome.update { o in
            defer {
                o.written.removeAll(keepingCapacity: true)
                o.rejected.removeAll(keepingCapacity: true)
            }
            return (o.written, o.rejected, o.failure)
        }
        if let failure { throw failure }
        for c in written { assembler.markWritten(c) }
        for c in rejected { assembler.reject(c) }
        return !written.isEmpty
    }

    /// Waits until a worker finished a chunk not yet collected, or `seconds` pass.
    package func waitForOutcome(seconds: TimeInterval) {
        outcome.wait(until: { !$0.written.isEmpty || !$0.rejected.isEmpty || $0.failure != nil },
                     deadline: Date().addingTimeInterval(seconds)) { _, _ in }
    }

    /// Waits for the queue to empty and the workers to end; throws the first write failure.
    package func finish() throws {
        queue.wait(until: { $0.head == $0.jobs.count }) { $0.stopped = true }
        group.wait()
        if let failure = outcome.read({ $0.failure }) { throw failure }
    }

    /// Ends the workers, dropping what is queued: nothing is written after this returns.
    package func stop() {
        queue.update { $0.stopped = true }
        group.wait()
    }

    private func work() {
        // One output buffer per worker, reused: a fresh one would fault in its pages per chunk.
        var output = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        defer { output.deallocate() }
        while let job = queue.wait(until: { $0.stopped || $0.head < $0.jobs.count }, then: { $0.take() }) {
            let length = Int(job.entry.length)
            if job.entry.codec != ChunkType.raw.rawValue && output.count < length {
                output.deallocate()
                output = .allocate(byteCount: length, alignment: 4096)
            }
            // A chunk that does not decode or match its SHA-256 is a bad copy (damage or
            // forgery): forget it and fetch it again.
            guard let decoded = Self.decode(job.stored.bytes, job.entry, into: output), table.matches(job.index, decoded) else {
                outcome.update { $0.rejected.append(job.index) }
                continue
            }
            do {
                try file.write(decoded, at: job.entry.diskOffset)
                try verifier?.written(job.index)
                outcome.update {
                    $0.written.append(job.index)
                    $0.bytesWritten += job.entry.length
                }
            } catch {
                outcome.update { $0.failure = $0.failure ?? error }
            }
        }
    }

    /// A chunk's decoded bytes, exactly its length (in `output` unless raw), or nil.
    private static func decode(_ stored: UnsafeRawBufferPointer, _ entry: ManifestEntry,
                               into output: UnsafeMutableRawBufferPointer) -> UnsafeRawBufferPointer? {
        let length = Int(entry.length)
        if entry.codec == ChunkType.raw.rawValue { return stored.count == length ? stored : nil }
        let out = UnsafeMutableRawBufferPointer(rebasing: output[0..<length])
        guard (try? Codec.decode(ChunkType(rawValue: entry.codec), stored, into: out)) != nil else { return nil }
        return UnsafeRawBufferPointer(out)
    }
}
