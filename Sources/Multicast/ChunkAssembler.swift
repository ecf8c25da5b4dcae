import Crypto
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
    /// Fragment digests the server sent for chunks that failed their SHA-256: from then on
    /// only matching fragments of them are kept, so forged copies that got in first (their
    /// source address spoofed) cannot spoil the chunk again.
    private var fragmentDigests: [Int: [UInt8]] = [:]
    /// Chunks that failed their SHA-256, whose fragment digests are still to be asked for
    /// (once each).
    private var suspects: [Int] = []
    private var suspected: Set<Int> = []

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
        if let digests = fragmentDigests[index], !Self.matches(payload, digests, fragment) { return nil }
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
        if fragmentDigests[chunk] == nil, suspected.insert(chunk).inserted { suspects.append(chunk) }
    }

    /// Chunks whose fragment digests to ask the server for, each once.
    package mutating func takeSuspects() -> [Int] {
        defer { suspects.removeAll() }
        return suspects
    }

    /// The server's fragment digests of `chunk`; fragments already held that do not match are
    /// dropped. Digests of a chunk not asked for, or of the wrong count, are ignored.
    package mutating func trust(_ chunk: Int, fragmentDigests digests: [UInt8]) {
        guard suspected.contains(chunk), chunk < manifest.count,
              digests.count == manifest[chunk].fragmentCount * ControlMessage.fragmentDigestBytes else { return }
        fragmentDigests[chunk] = digests
        guard var part = partial[chunk] else { return }
        for f in part.have.indices where part.have[f] {
            let start = f * DataPacket.maxPayload
            let end = min(start + DataPacket.maxPayload, Int(manifest[chunk].storedLength))
            if !Self.matches(UnsafeRawBufferPointer(rebasing: part.buffer.storage[start..<end]), digests, f) {
                part.have[f] = false
                part.count -= 1
            }
        }
        partial[chunk] = part
    }

    private static func matches(_ payload: UnsafeRawBufferPointer, _ digests: [UInt8], _ fragment: Int) -> Bool {
        let n = ControlMessage.fragmentDigestBytes
        return SHA256.hash(data: payload).withUnsafeBytes { $0.prefix(n).elementsEqual(digests[(fragment * n)..<((fragment + 1) * n)]) }
    }

    /// A handed-on chunk's buffer no longer counts against the budget.
    private mutating func release(_ chunk: Int) {
        guard handedOn[chunk] else { return }
        handedOn[chunk] = false
        heldBytes -= Int(manifest[chunk].storedLength)
    }

    /// Everything still lacking, for a report: the fragments lacked of chunks received in part
    /// and ranges of chunks of which nothing has arrived, over the whole image, each list in
    /// carousel order from `start` (the next chunk the stream will reach), wrapping. Past
    /// `maxPartialChunks`, a chunk in part is claimed whole. Past `maxRanges`, the last one or
    /// two ranges are open: they claim everything from the end of the last exact range round
    /// to `start`. A report may claim more than is lacking (what is sent again is dropped as
    /// a duplicate), never less, or the server would stop sending what we still need.
    package func need(from start: Int, maxRanges: Int = ControlMessage.Report.maxRanges,
                      maxPartialChunks: Int = ControlMessage.Report.maxPartialChunks)
        -> (missing: [(UInt32, UInt32)], fragments: [(chunk: UInt32, missing: [UInt16])]) {
        let n = manifest.count
        let s = start > 0 && start < n ? start : 0
        let order = { (c: Int) in c >= s ? c - s : c + n - s }
        let inPart = partial.keys.sorted { order($0) < order($1) }
        let listed = Set(inPart.prefix(maxPartialChunks))
        let fragments = inPart.prefix(maxPartialChunks).map { c in
            let have = partial[c]!.have
            return (chunk: UInt32(c), missing: have.indices.filter { !have[$0] }.map { UInt16($0) })
        }
        let lacking = { (c: Int) in !received[c] && !listed.contains(c) }
        var ranges: [(UInt32, UInt32)] = []
        // Two stretches in carousel order: start to the end, then the beginning to start.
        for stretch in [s..<n, 0..<s] {
            var i = stretch.lowerBound
            while i < stretch.upperBound {
                guard lacking(i) else { i += 1; continue }
                let first = i
                while i < stretch.upperBound && lacking(i) { i += 1 }
                ranges.append((UInt32(first), UInt32(i - first)))
            }
        }
        guard ranges.count > maxRanges, maxRanges >= 2 else { return (ranges, fragments) }
        // Open from the first range left out: the rest of its stretch, and the next one whole.
        let cut = Int(ranges[maxRanges - 2].0)
        ranges.removeLast(ranges.count - (maxRanges - 2))
        if cut >= s {
            ranges.append((UInt32(cut), UInt32(n - cut)))
            if s > 0 { ranges.append((0, UInt32(s))) }
        } else {
            ranges.append((UInt32(cut), UInt32(s - cut)))
        }
        return (ranges, fragments)
    }
}

/// A chunk's stored bytes as its fragments arrive, at a fixed address: each payload is copied
/// once, straight from the receive buffer.
package typealias ChunkBuffer = PooledBuffer
