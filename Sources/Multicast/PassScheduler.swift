/// Decides what the server sends next: passes over every chunk that has data, in disk order,
/// with chunks that clients report missing sent first, so a loss is repaired within the
/// same pass rather than on the next one. No I/O: fed events, asked for the next chunk.
/// Who is listening, and whether to send at all, is `ClientRoster`'s business.
package struct PassScheduler: Sendable {
    /// Manifest indices of the chunks that travel (zero chunks do not).
    package let sendable: [Int]
    package private(set) var pass: UInt32 = 0
    private var cursor = 0
    /// Repairs in the order asked for; those before `repairHead` are sent. Taken from the
    /// front by index: removing the first of a long queue each time made draining it quadratic.
    private var repairQueue: [Int] = []
    private var repairHead = 0
    /// Queued repairs by chunk: the fragments wanted, or nil for the whole chunk.
    private var queued: [Int: Set<UInt16>?] = [:]

    /// Fragments of each manifest chunk (0 for zero chunks, which never travel).
    private let fragmentCounts: [Int]
    package var chunkCount: Int { fragmentCounts.count }

    package init(manifest: [ManifestEntry]) {
        sendable = manifest.indices.filter { manifest[$0].storedLength > 0 }
        fragmentCounts = manifest.map(\.fragmentCount)
    }

    /// A client's report, trusted no further than the manifest: chunks past its end or without
    /// data, and fragments past a chunk's last, are dropped; overlapping ranges are queued once.
    /// So work and memory stay within the manifest's size whatever the report claims (4096
    /// ranges each naming the whole image once meant 4096 walks over it, under the lock).
    package mutating func requestRepair(from report: ControlMessage.Report) {
        let counts = fragmentCounts
        var covered = 0  // chunks below this came from an earlier range
        for (first, count) in report.missing.sorted(by: { $0.0 < $1.0 }) {
            let start = max(Int(first), covered)
            let end = min(Int(first) + Int(count), chunkCount)
            guard start < end else { continue }
            requestRepair((start..<end).lazy.filter { counts[$0] > 0 })
            covered = end
        }
        for (chunk, missing) in report.fragments where Int(chunk) < chunkCount {
            let wanted = missing.filter { Int($0) < counts[Int(chunk)] }
            if !wanted.isEmpty { requestRepair(chunk: Int(chunk), fragments: wanted) }
        }
    }

    /// Clients' reports of chunks they lack; each chunk is queued once however many ask.
    package mutating func requestRepair(_ chunks: some Sequence<Int>) {
        for c in chunks {
            if queued[c] == nil { repairQueue.append(c) }
            queued[c] = .some(nil)
        }
    }

    /// Just some fragments of a chunk: a loss costs those packets, not the whole chunk again.
    package mutating func requestRepair(chunk c: Int, fragments: some Sequence<UInt16>) {
        switch queued[c] {
        case nil:
            repairQueue.append(c)
            queued[c] = .some(Set(fragments))
        case .some(.some(let wanted)):
            queued[c] = .some(wanted.union(fragments))
        case .some(.none):
            break  // the whole chunk is coming anyway
        }
    }

    /// The next chunk to send, the pass it belongs to, and which of its fragments (nil: all);
    /// nil when there is nothing at all.
    package mutating func next() -> (chunk: Int, pass: UInt32, fragments: [UInt16]?)? {
        guard !sendable.isEmpty else { return nil }
        if repairHead < repairQueue.count {
            let c = repairQueue[repairHead]
            repairHead += 1
            if repairHead == repairQueue.count {
                repairQueue.removeAll(keepingCapacity: true)
                repairHead = 0
            }
            let wanted = queued.removeValue(forKey: c) ?? nil
            return (c, pass, wanted.map { $0.sorted() })
        }
        let sent = (chunk: sendable[cursor], pass: pass, fragments: [UInt16]?.none)
        cursor += 1
        if cursor == sendable.count {
            cursor = 0
            pass &+= 1
        }
        return sent
    }
}
