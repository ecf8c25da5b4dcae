/// Decides what the server sends next: passes over every chunk that has data, in disk order,
/// with chunks that clients report missing sent first, so a loss is repaired within the
/// same pass rather than on the next one. No I/O: fed events, asked for the next chunk.
public struct PassScheduler: Sendable {
    /// Manifest indices of the chunks that travel (zero chunks do not).
    public let sendable: [Int]
    public private(set) var pass: UInt32 = 0
    private var cursor = 0
    private var repairQueue: [Int] = []
    private var queued: Set<Int> = []
    /// Passes completed since a client last asked for anything (for `Loop Suspend`).
    public private(set) var idlePasses: UInt64 = 0

    public init(manifest: [ManifestEntry]) {
        sendable = manifest.indices.filter { manifest[$0].storedLength > 0 }
    }

    /// Clients' reports of chunks they lack; each chunk is queued once however many ask.
    public mutating func requestRepair(_ chunks: some Sequence<Int>) {
        for c in chunks where !queued.contains(c) {
            queued.insert(c)
            repairQueue.append(c)
        }
    }

    /// Someone is restoring: the pass count toward suspension starts again.
    public mutating func noteActivity() { idlePasses = 0 }

    /// The next chunk to send and the pass it belongs to; nil when there is nothing at all.
    public mutating func next() -> (chunk: Int, pass: UInt32)? {
        guard !sendable.isEmpty else { return nil }
        if !repairQueue.isEmpty {
            let c = repairQueue.removeFirst()
            queued.remove(c)
            return (c, pass)
        }
        let sent = (chunk: sendable[cursor], pass: pass)
        cursor += 1
        if cursor == sendable.count {
            cursor = 0
            pass &+= 1
            idlePasses += 1
        }
        return sent
    }
}
