import Synchronization
import SystemSupport

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
    /// Assembled chunks handed on and not yet written or rejected: their buffers still count.
    private var handedOn: [Bool]
    /// Bytes held in unfinished chunks, partial or handed on.
    package private(set) var heldBytes = 0
    /// Bound on bytes held in unfinished chunks.
    package let memoryBudget: Int

    private struct Partial {
        let buffer: ChunkBuffer
        var have: [Bool]
        var count = 0

        /// Copies a fragment's payload into place; true when it was the chunk's last.
        mutating func add(_ fragment: Int, _ payload: UnsafeRawBufferPointer, at start: Int) -> Bool {
            guard !have[fragment] else { return false }
            have[fragment] = true
            count += 1
            UnsafeMutableRawBufferPointer(rebasing: buffer.storage[start..<(start + payload.count)]).copyMemory(from: payload)
            return count == have.count
        }
    }

    package init(manifest: [ManifestEntry], memoryBudget: Int = 96 << 20) {
        self.manifest = manifest
        self.memoryBudget = memoryBudget
        complete = manifest.map { $0.storedLength == 0 }
        completeCount = complete.filter { $0 }.count
        received = complete
        handedOn = [Bool](repeating: false, count: manifest.count)
    }

    package var isComplete: Bool { completeCount == manifest.count }

    /// Adds a packet; returns the chunk's stored bytes when this packet completed it. Those
    /// stay within the memory budget until `markWritten` or `reject` says what became of them.
    package mutating func accept(_ p: DataPacketHeader, payload: UnsafeRawBufferPointer) -> (chunk: Int, stored: ChunkBuffer)? {
        let index = Int(p.chunk)
        guard index < manifest.count, !received[index] else { return nil }
        let entry = manifest[index]
        guard p.storedLength == entry.storedLength, Int(p.fragmentCount) == entry.fragmentCount else { return nil }
        let fragment = Int(p.fragment)
        let start = fragment * DataPacket.maxPayload
        let expected = min(DataPacket.maxPayload, Int(entry.storedLength) - start)
        guard expected > 0, payload.count == expected else { return nil }
        if partial[index] == nil {
            // Over budget: drop it; the chunk comes round again.
            guard heldBytes + Int(entry.storedLength) <= memoryBudget else { return nil }
            heldBytes += Int(entry.storedLength)
            partial[index] = Partial(buffer: ChunkBuffer(count: Int(entry.storedLength)),
                                     have: [Bool](repeating: false, count: entry.fragmentCount))
        }
        // Changed in place: a copy of the entry would copy its bitmap on every packet.
        let done = partial[index]!.add(fragment, payload, at: start)
        guard done, let part = partial.removeValue(forKey: index) else { return nil }
        received[index] = true
        handedOn[index] = true
        return (index, part.buffer)
    }

    /// `accept` for a packet held as a value (tests, fuzzing).
    package mutating func accept(_ p: DataPacket) -> (chunk: Int, stored: ChunkBuffer)? {
        guard p.payload.count <= DataPacket.maxPayload else { return nil }
        let header = DataPacketHeader(fragmentCount: p.fragmentCount, sessionID: p.sessionID, pass: p.pass, chunk: p.chunk,
                                      fragment: p.fragment, payloadLength: UInt16(p.payload.count), storedLength: p.storedLength)
        return p.payload.withUnsafeBytes { accept(header, payload: $0) }
    }

    /// The chunk decoded and matched its SHA-256 and is on the target.
    package mutating func markWritten(_ chunk: Int) {
        release(chunk)
        guard !complete[chunk] else { return }
        received[chunk] = true
        complete[chunk] = true
        completeCount += 1
    }

    /// The chunk's bytes were wrong (forged or damaged): forget them, it will come again.
    package mutating func reject(_ chunk: Int) {
        release(chunk)
        if partial.removeValue(forKey: chunk) != nil { heldBytes -= Int(manifest[chunk].storedLength) }
        received[chunk] = complete[chunk]
    }

    /// A handed-on chunk's buffer no longer counts against the budget.
    private mutating func release(_ chunk: Int) {
        guard handedOn[chunk] else { return }
        handedOn[chunk] = false
        heldBytes -= Int(manifest[chunk].storedLength)
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

/// A chunk's stored bytes as its fragments arrive, at a fixed address: each payload is copied
/// once, straight from the receive buffer. Buffers are reused, as fresh ones would cost page
/// faults on every chunk.
package final class ChunkBuffer: @unchecked Sendable {  // owns raw memory; filled on one thread, then handed on whole
    let storage: UnsafeMutableRawBufferPointer
    package var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(storage) }

    private struct Spare: @unchecked Sendable { let memory: UnsafeMutableRawBufferPointer }  // memory no buffer is using
    private static let spare = Locked<[Spare]>([])
    private static let spareLimit = 32

    package init(count: Int) {
        let capacity = Self.capacity(count)
        let reused = Self.spare.withLock { list -> Spare? in
            guard let i = list.lastIndex(where: { $0.memory.count == capacity }) else { return nil }
            return list.remove(at: i)
        }
        let memory = reused?.memory ?? .allocate(byteCount: capacity, alignment: 64)
        storage = UnsafeMutableRawBufferPointer(rebasing: memory[0..<count])
    }

    deinit {
        let whole = Spare(memory: UnsafeMutableRawBufferPointer(start: storage.baseAddress, count: Self.capacity(storage.count)))
        let kept = Self.spare.withLock { list -> Bool in
            guard list.count < Self.spareLimit else { return false }
            list.append(whole)
            return true
        }
        if !kept { whole.memory.deallocate() }
    }

    /// Sizes rounded up to a power of two (64 KiB at least), so chunks of any size reuse buffers.
    static func capacity(_ count: Int) -> Int { max(64 << 10, 1 << (Int.bitWidth - max(0, count - 1).leadingZeroBitCount)) }
}
