/// The server's clients and the rules that follow from them: the slow-client rule (a client
/// that gains nothing for a while, or stops reporting, is dropped and told why) and Loop
/// Suspend (sending pauses after so many passes with nobody restoring, until a request).
/// Progress is what the server can see: the chunks a client stops asking for (its need set,
/// built by `Carousel.Shape`, falling below its smallest yet), never the count a client
/// claims. No I/O and no clock: the server passes the time in, tests pass simulated times.
/// What each client lacks is the `Carousel`'s business.
package struct ClientRoster: Sendable {
    package typealias ID = Int
    package typealias Instant = ContinuousClock.Instant

    package struct Rules: Sendable, Equatable {
        /// A client that gains no chunk over `stallPasses` whole passes and at least
        /// `stallTime` is dropped (passes of a small image take a fraction of a second: time
        /// matters too); so is one that sends no report for `silenceLimit`.
        package var stallPasses = 3
        package var stallTime: Duration = .seconds(10)
        package var silenceLimit: Duration = .seconds(15)
        /// Passes with nobody restoring before sending pauses; 0: never.
        package var loopSuspend: UInt64 = 0

        package init(loopSuspend: UInt64 = 0) { self.loopSuspend = loopSuspend }
    }

    package struct Client: Sendable {
        package let name: String
        package let peer: String
        package let joined: Instant
        package fileprivate(set) var lastReport: Instant
        /// Chunks it asked for (whole or in part) in its latest report, and the fewest it ever
        /// asked for: that falling is progress.
        package fileprivate(set) var lacking: Int
        package fileprivate(set) var fewest: Int
        /// Reports it has sent: none yet means it is still getting ready to join the group.
        package fileprivate(set) var reports = 0
        /// It has every chunk and said DONE after verifying.
        package fileprivate(set) var done = false
        /// Whole passes without a new chunk, counted only over passes it reported in.
        package fileprivate(set) var stalledPasses = 0
        fileprivate var fewestAtPass = Int.max
        /// It restarted a suspended stream without progress since: it may not do so again.
        fileprivate var resumedIdle = false
        /// A pass is judged only if the client reported during it (short passes outrun reports).
        fileprivate var reportedSincePass = false
        fileprivate var lastProgress: Instant
    }

    package enum DropReason: Sendable, Equatable, CustomStringConvertible {
        case silent(limit: Duration)
        case stalled(passes: Int, time: Duration, lacking: Int, of: Int)

        package var description: String {
            switch self {
            case .silent(let limit): "no report for \(limit.components.seconds) s"
            case .stalled(let passes, let time, let lacking, let total):
                "no progress in \(passes) passes and \(time.components.seconds) s (still asks for \(lacking) of \(total) chunks)"
            }
        }
    }

    package struct Drop: Sendable {
        package let id: ID
        package let client: Client
        package let reason: DropReason
    }

    package let chunkCount: Int
    package let rules: Rules
    package private(set) var clients: [ID: Client] = [:]
    private var lastID: ID = 0
    /// Passes completed since a report last showed progress (or came from a new client).
    package private(set) var idlePasses: UInt64 = 0
    /// Off until a client asks, and again after `loopSuspend` idle passes.
    package private(set) var streaming = false

    package init(chunkCount: Int, rules: Rules) {
        self.chunkCount = chunkCount
        self.rules = rules
    }

    /// Clients that said HELLO but have not reported yet: they are about to join the group.
    package var joining: Int { clients.values.count { $0.reports == 0 } }

    /// Clients not yet done: verifying ones count, they may still ask for nothing.
    package var restoring: Int { clients.values.count { !$0.done } }

    package mutating func join(name: String, peer: String, at now: Instant) -> ID {
        lastID += 1
        clients[lastID] = Client(name: name, peer: peer, joined: now, lastReport: now, lacking: chunkCount, fewest: .max, lastProgress: now)
        return lastID
    }

    /// A report means its sender has joined the group and is ready. `lacking`: the chunks its
    /// need set names (`Carousel.NeedSet.chunks`). A client's first report, and one that asks
    /// for fewer chunks than ever, is a request: stream. One that shows no progress restarts a
    /// suspended stream once, then not again until it shows progress: a client that only
    /// claims keeps nothing running. True if the sender is on the roster and still restoring:
    /// what it lacks counts.
    @discardableResult
    package mutating func report(_ report: ControlMessage.Report, lacking: Int, from id: ID, at now: Instant) -> Bool {
        guard !report.surveying else {
            // Still reading its target: alive, but not ready (it still counts as joining).
            clients[id]?.lastReport = now
            return false
        }
        guard var c = clients[id] else { return false }  // dropped: its connection is closing
        if c.reports == 0 || lacking < c.fewest {
            c.resumedIdle = false
            streaming = true
            idlePasses = 0
        } else if !streaming && !c.resumedIdle {
            c.resumedIdle = true
            streaming = true
            idlePasses = 0
        }
        c.lacking = lacking
        c.fewest = min(c.fewest, lacking)
        c.lastReport = now
        c.reportedSincePass = true
        c.reports += 1
        clients[id] = c
        return !c.done
    }

    /// The client verified what it wrote and said DONE.
    package mutating func finish(_ id: ID) -> Client? {
        clients[id]?.done = true
        return clients[id]
    }

    /// The client's connection ended; nil if it was not (or no longer) on the roster.
    package mutating func leave(_ id: ID) -> Client? { clients.removeValue(forKey: id) }

    /// A pass ended at `now`: counts it toward Loop Suspend and applies the slow-client rule.
    /// The clients returned are off the roster; the server tells each why.
    package mutating func passEnded(at now: Instant) -> [Drop] {
        idlePasses += 1
        var drops: [Drop] = []
        // Clients with every chunk are verifying: they owe us nothing but DONE.
        for (id, var c) in clients.sorted(by: { $0.key < $1.key }) where !c.done && c.lacking > 0 {
            if c.reportedSincePass {
                if c.fewest < c.fewestAtPass {
                    c.stalledPasses = 0
                    c.lastProgress = now
                } else {
                    c.stalledPasses += 1
                }
                c.fewestAtPass = c.fewest
                c.reportedSincePass = false
            }
            clients[id] = c
            let silent = now - c.lastReport > rules.silenceLimit
            let stalled = c.stalledPasses >= rules.stallPasses && now - c.lastProgress >= rules.stallTime
            guard silent || stalled else { continue }
            let reason: DropReason = silent ? .silent(limit: rules.silenceLimit)
                : .stalled(passes: c.stalledPasses, time: rules.stallTime, lacking: c.lacking, of: chunkCount)
            drops.append(Drop(id: id, client: c, reason: reason))
            clients[id] = nil
        }
        return drops
    }

    /// Clients still gaining: not done, and not stalled over as many passes as Loop Suspend
    /// waits (passes they reported in; short passes outrun reports).
    package var gaining: Int {
        clients.values.count { !$0.done && $0.stalledPasses < max(1, Int(clamping: rules.loopSuspend)) }
    }

    /// The Loop Suspend rule, asked before each send: true when sending stops now, after
    /// `loopSuspend` passes in which no client asked for fewer chunks (it starts again on a
    /// request, see `report`).
    package mutating func suspendIfIdle() -> Bool {
        guard streaming, rules.loopSuspend > 0, gaining == 0, idlePasses >= rules.loopSuspend else { return false }
        streaming = false
        return true
    }
}
