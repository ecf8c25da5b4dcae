/// The client's bookkeeping: collects fragments into chunks, says when a chunk is complete,
/// and which chunks are still missing. No I/O. Packets for unknown chunks, with sizes that
/// disagree with the manifest, or beyond the memory budget are dropped, never trusted.
package struct ChunkAssembler: Sendable {
    package let manifest: [ManifestEntry]
    /// Written and verified on the target.
    package private(set) var complete: [Bool]
    package private(set) var completeCount = 0
    /// Assembled (being decoded and written, or done): not to be asked for again.
    package private(set) var received: [Bool]
    private var partial: [Int: Partial] = [:]
    private var partialBytes = 0
    /// Bound on bytes held in unfinished chunks.
    package let memoryBudget: Int

    private struct Partial {
        var bytes: [UInt8]
        var have: [Bool]
        var count = 0
    }

    package init(manifest: [ManifestEntry], memoryBudget: Int = 96 << 20) {
        self.manifest = manifest
        self.memoryBudget = memoryBudget
        complete = manifest.map { $0.storedLength == 0 }
        completeCount = complete.filter { $0 }.count
        received = complete
    }

    package var isComplete: Bool { completeCount == manifest.count }

    /// Adds a packet; returns the chunk's stored bytes when this packet completed it.
    package mutating func accept(_ p: DataPacket) -> (chunk: Int, stored: [UInt8])? {
        let index = Int(p.chunk)
        guard index < manifest.count, !received[index] else { return nil }
        let entry = manifest[index]
        guard p.storedLength == entry.storedLength, Int(p.fragmentCount) == entry.fragmentCount else { return nil }
        let start = Int(p.fragment) * DataPacket.maxPayload
        let expected = min(DataPacket.maxPayload, Int(entry.storedLength) - start)
        guard expected > 0, p.payload.count == expected else { return nil }
        var part: Partial
        if let existing = partial[index] {
            part = existing
        } else {
            // Over budget: drop it; the chunk comes round again.
            guard partialBytes + Int(entry.storedLength) <= memoryBudget else { return nil }
            partialBytes += Int(entry.storedLength)
            part = Partial(bytes: [UInt8](repeating: 0, count: Int(entry.storedLength)),
                           have: [Bool](repeating: false, count: entry.fragmentCount))
        }
        guard !part.have[Int(p.fragment)] else { return nil }
        part.bytes.replaceSubrange(start..<(start + expected), with: p.payload)
        part.have[Int(p.fragment)] = true
        part.count += 1
        if part.count == entry.fragmentCount {
            partial[index] = nil
            partialBytes -= Int(entry.storedLength)
            received[index] = true
            return (index, part.bytes)
        }
        partial[index] = part
        return nil
    }

    /// The chunk decoded and matched its SHA-256 and is on the target.
    package mutating func markWritten(_ chunk: Int) {
        guard !complete[chunk] else { return }
        received[chunk] = true
        complete[chunk] = true
        completeCount += 1
    }

    /// The chunk's bytes were wrong (forged or damaged): forget them, it will come again.
    package mutating func reject(_ chunk: Int) {
        if let p = partial.removeValue(forKey: chunk) { partialBytes -= p.bytes.count }
        received[chunk] = complete[chunk]
    }

    /// Fragments still missing of chunks received in part, below `limit`.
    package func missingFragments(below limit: Int, maxChunks: Int = ControlMessage.Report.maxPartialChunks) -> [(chunk: UInt32, missing: [UInt16])] {
        var out: [(chunk: UInt32, missing: [UInt16])] = []
        for (index, part) in partial.sorted(by: { $0.key < $1.key }) where index < limit && out.count < maxChunks {
            out.append((UInt32(index), part.have.indices.filter { !part.have[$0] }.map { UInt16($0) }))
        }
        return out
    }

    /// Chunks of which nothing has arrived, below `limit` (those the server has already sent
    /// this pass), as (first, count) ranges, at most `maxRanges` of them.
    package func missing(below limit: Int, maxRanges: Int = ControlMessage.Report.maxRanges) -> [(UInt32, UInt32)] {
        var ranges: [(UInt32, UInt32)] = []
        var i = 0
        let end = min(limit, manifest.count)
        while i < end && ranges.count < maxRanges {
            if received[i] || partial[i] != nil { i += 1; continue }
            let first = i
            while i < end && !received[i] && partial[i] == nil { i += 1 }
            ranges.append((UInt32(first), UInt32(i - first)))
        }
        return ranges
    }
}
