/// Where the server's stream is: its pass, and the highest chunk seen in that pass. Reported,
/// so the server can tell what it sent after it (still on its way) from what was lost.
struct StreamPosition {
    private(set) var session: UInt64?
    private(set) var pass: UInt32?
    private(set) var highest = -1
    /// Where the stream was `settle` packets ago: packets that crossed on two CPUs (veth,
    /// bridges) arrive a little out of order, so a chunk's last fragments may still come
    /// after the next chunk's first. Reporting the older position keeps those "on their way".
    private var recent: [(pass: UInt32, chunk: Int)] = []
    private var next = 0
    static let settle = 128

    /// As a REPORT carries it; nil before any packet.
    var reported: (pass: UInt32, chunk: UInt32)? {
        guard !recent.isEmpty else { return nil }
        let p = recent.count < Self.settle ? recent[0] : recent[next]
        return (p.pass, UInt32(p.chunk))
    }

    /// Moves on with a packet and tells the progress line.
    mutating func follow(_ packet: DataPacket, progress: inout PassProgress, _ assembler: ChunkAssembler) {
        if session != packet.sessionID {
            // A restarted server counts passes from 0 again.
            session = packet.sessionID
            pass = nil
            recent.removeAll()
            next = 0
        }
        if pass.map({ packet.pass > $0 }) ?? true {
            pass = packet.pass
            highest = -1
            progress.startPass(packet.pass, assembler)
        }
        if packet.pass == pass, Int(packet.chunk) > highest {
            highest = Int(packet.chunk)
            progress.reached(highest, assembler)
        }
        if let pass, highest >= 0 {
            if recent.count < Self.settle { recent.append((pass, highest)) } else { recent[next] = (pass, highest) }
            next = (next + 1) % Self.settle
        }
    }
}
