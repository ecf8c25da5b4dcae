/// Decides what the server sends next: passes over every chunk that has data, in disk order,
/// with chunks that clients report missing sent first, so a loss is repaired within the
/// same pass rather than on the next one. No I/O: fed events, asked for the next chunk.
public struct PassScheduler: Sendable {
    /// Manifest indices of the chunks that travel (zero chunks do not).
    public let sendable: [Int]
    public private(set) var pass: UInt32 = 0
    private var cursor = 0
    private var repairQueue: [Int] = []
    /// Queued repairs by chunk: the fragments wanted, or nil for the whole chunk.
    private var queued: [Int: Set<UInt16>?] = [:]
    /// Passes completed since a client last asked for anything (for `Loop Suspend`).
    public private(set) var idlePasses: UInt64 = 0

    public init(manifest: [ManifestEntry]) {
        sendable = manifest.indices.filter { manifest[$0].storedLength > 0 }
    }

    /// Clients' reports of chunks they lack; each chunk is queued once however many ask.
    public mutating func requestRepair(_ chunks: some Sequence<Int>) {
        for c in chunks {
            if queued[c] == nil { repairQueue.append(c) }
            queued[c] = .some(nil)
        }
    }

    /// Just some fragments of a chunk: a loss costs those packets, not the whole chunk again.
    public mutating func requestRepair(chunk c: Int, fragments: some Sequence<UInt16>) {
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

    /// Someone is restoring: the pass count toward suspension starts again.
    public mutating func noteActivity() { idlePasses = 0 }

    /// The next chunk to send, the pass it belongs to, and which of its fragments (nil: all);
    /// nil when there is nothing at all.
    public mutating func next() -> (chunk: Int, pass: UInt32, fragments: [UInt16]?)? {
        guard !sendable.isEmpty else { return nil }
        if !repairQueue.isEmpty {
            let c = repairQueue.removeFirst()
            let wanted = queued.removeValue(forKey: c) ?? nil
            return (c, pass, wanted.map { $0.sorted() })
        }
        let sent = (chunk: sendable[cursor], pass: pass, fragments: [UInt16]?.none)
        cursor += 1
        if cursor == sendable.count {
            cursor = 0
            pass &+= 1
            idlePasses += 1
        }
        return sent
    }
}
