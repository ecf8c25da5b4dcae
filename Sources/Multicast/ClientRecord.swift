/// One client as the session page shows it: its latest report, and what follows from its
/// reports over time (its pace and ETA, its loss, the repairs it asked for). No clock and no
/// I/O: times are seconds on the board's clock, passed in.
package struct ClientRecord: Sendable {
    package enum State: String, CaseIterable, Sendable {
        case joining, restoring, verifying, done, failed, dropped, left

        package var ended: Bool { self == .done || self == .failed || self == .dropped || self == .left }
    }

    package let id: Int
    package let name: String
    package let address: String
    package let joinedAt: Double
    package private(set) var state = State.joining
    package private(set) var reason: String?
    package private(set) var chunks = 0
    package private(set) var writeRate: UInt64 = 0
    package private(set) var packets: UInt64 = 0
    package private(set) var verified: UInt64 = 0
    package private(set) var verifyTotal: UInt64 = 0
    package private(set) var repairsAsked = 0
    package private(set) var loss: Double?
    package private(set) var eta: Double?
    package private(set) var lastReportAt: Double?
    package private(set) var endedAt: Double?
    /// Share of the travelling chunks held, as of the last report.
    package private(set) var progress = 0.0
    /// Packets the server had sent and the client had taken at its first report needing data.
    private var lossBase: (sent: UInt64, taken: UInt64)?
    /// Chunks held in part behind the stream at the last report: each new one is a repair asked.
    private var behind: Set<UInt32> = []
    /// The phase's share at the last pace sample, and its smoothed rate (share per second).
    private var pace: (at: Double, share: Double, perSecond: Double?)?

    /// Packets sent since the first report before a loss is told: fewer say little.
    package static let lossMinimum: UInt64 = 500
    /// Seconds over which the pace is smoothed.
    package static let paceTime = 10.0

    package init(id: Int, name: String, address: String, joinedAt: Double) {
        self.id = id
        self.name = name
        self.address = address
        self.joinedAt = joinedAt
    }

    /// Share of its read-back done; nil before it verifies (and after, unless it got that far).
    package var verifyProgress: Double? {
        if state == .done { return 1 }
        guard state == .verifying || (state.ended && verifyTotal > 0) else { return nil }
        return verifyTotal == 0 ? 0 : min(1, Double(verified) / Double(verifyTotal))
    }

    /// A report arrived at `t`, when the server had sent `packetsSent` packets; `chunks`: those
    /// it holds as the server judges them (its own `received` count when not given);
    /// `progress`: the share of the travelling chunks they stand for.
    package mutating func report(_ r: ControlMessage.Report, chunks held: Int? = nil, packetsSent: UInt64, progress: Double, at t: Double) {
        guard !state.ended else { return }
        let phase: State = r.verifying ? .verifying : .restoring
        if phase != state { pace = nil }
        state = phase
        chunks = held ?? Int(r.received)
        self.progress = progress
        if r.writeRate > 0 { writeRate = r.writeRate }  // its last word while writing stands
        packets = r.packets
        verified = r.verified
        verifyTotal = r.verifyTotal
        lastReportAt = t
        // Chunks held in part that the stream has passed (or any, when nothing is on its way):
        // fragments were lost there, and the report asks for them again.
        let lost = Set(r.fragments.lazy.map(\.chunk).filter { c in r.quiet || r.position.map { c < $0.chunk } ?? false })
        repairsAsked += lost.subtracting(behind).count
        behind = lost
        // Loss counts only while it needs data: a client with every chunk has left the group.
        let needs = !r.missing.isEmpty || !r.fragments.isEmpty
        if needs && !r.verifying {
            if let base = lossBase {
                let sent = packetsSent &- base.sent
                if packetsSent >= base.sent, sent >= Self.lossMinimum {
                    let taken = r.packets >= base.taken ? r.packets - base.taken : 0
                    loss = max(0, min(1, 1 - Double(taken) / Double(sent)))
                }
            } else {
                lossBase = (packetsSent, r.packets)
            }
        }
        let share = r.verifying ? (verifyProgress ?? 0) : progress
        if let p = pace {
            let dt = t - p.at
            if dt >= 1 {
                let now = max(0, share - p.share) / dt
                let smoothed = p.perSecond.map { $0 + (now - $0) * min(1, dt / Self.paceTime) } ?? now
                pace = (t, share, smoothed)
            }
        } else {
            pace = (t, share, nil)
        }
        if share >= 1 { eta = 0 } else if let rate = pace?.perSecond, rate > 0 { eta = (1 - share) / rate } else { eta = nil }
    }

    /// DONE: verified (`failure` nil) or failed, in the client's words.
    package mutating func finish(failure: String?, at t: Double) {
        guard !state.ended else { return }
        state = failure == nil ? .done : .failed
        reason = failure
        if failure == nil {
            progress = 1
            verified = verifyTotal
        }
        end(at: t)
    }

    package mutating func drop(reason: String, at t: Double) {
        guard !state.ended else { return }
        state = .dropped
        self.reason = reason
        end(at: t)
    }

    /// Its connection ended; a client that had not finished left.
    package mutating func leave(at t: Double) {
        guard !state.ended else { return }
        state = .left
        reason = "connection closed before finishing"
        end(at: t)
    }

    private mutating func end(at t: Double) {
        endedAt = t
        eta = nil
        pace = nil
    }
}
