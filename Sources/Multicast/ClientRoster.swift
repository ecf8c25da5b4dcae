/// The server's clients and the rules that follow from them: the slow-client rule (a client
/// that gains nothing for a while, or stops reporting, is dropped and told why) and Loop
/// Suspend (sending pauses after so many passes with nobody restoring, until a request).
/// No I/O and no clock: the server passes the time in, tests pass simulated times.
///
/// Each client's latest report is kept, so the roster can say which chunks a client still
/// lacks (`needs`): what a need-driven sender will go by.
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
        /// Chunks it has written, as it last said.
        package fileprivate(set) var received: UInt32 = 0
        /// It has every chunk and said DONE after verifying.
        package fileprivate(set) var done = false
        /// What its latest report said it lacks: chunks it has nothing of, and fragments of
        /// those it has in part (only chunks the stream had gone past when it reported).
        package fileprivate(set) var missing: [Range<Int>] = []
        package fileprivate(set) var partial: [Int: [UInt16]] = [:]
        /// Whole passes without a new chunk, counted only over passes it reported in.
        package fileprivate(set) var stalledPasses = 0
        fileprivate var receivedAtPass: UInt32 = 0
        /// A pass is judged only if the client reported during it (short passes outrun reports).
        fileprivate var reportedSincePass = false
        fileprivate var lastProgress: Instant
    }

    package enum DropReason: Sendable, Equatable, CustomStringConvertible {
        case silent(limit: Duration)
        case stalled(passes: Int, time: Duration, received: UInt32, of: Int)

        package var description: String {
            switch self {
            case .silent(let limit): "no report for \(limit.components.seconds) s"
            case .stalled(let passes, let time, let received, let total):
                "no progress in \(passes) passes and \(time.components.seconds) s (\(received) of \(total) chunks)"
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
    /// Passes completed since a client last reported.
    package private(set) var idlePasses: UInt64 = 0
    /// Off until a client asks, and again after `loopSuspend` idle passes.
    package private(set) var streaming = false

    package init(chunkCount: Int, rules: Rules) {
        self.chunkCount = chunkCount
        self.rules = rules
    }

    /// Clients not yet done: verifying ones count, they may still ask for nothing.
    package var restoring: Int { clients.values.count { !$0.done } }

    package mutating func join(name: String, peer: String, at now: Instant) -> ID {
        lastID += 1
        clients[lastID] = Client(name: name, peer: peer, joined: now, lastReport: now, lastProgress: now)
        return lastID
    }

    /// A report means its sender has joined the group and is ready: stream. It may come
    /// from a client already dropped, whose connection is closing; it still counts as a request.
    package mutating func report(_ report: ControlMessage.Report, from id: ID, at now: Instant) {
        streaming = true
        idlePasses = 0
        guard var c = clients[id] else { return }
        c.received = report.received
        c.lastReport = now
        c.reportedSincePass = true
        c.missing = report.missing.compactMap { first, count in
            let start = Int(first), end = min(Int(first) + Int(count), chunkCount)
            return start < end ? start..<end : nil
        }
        c.partial = Dictionary(report.fragments.filter { Int($0.chunk) < chunkCount }.map { (Int($0.chunk), $0.missing) },
                               uniquingKeysWith: { a, _ in a })
        clients[id] = c
    }

    /// The client verified what it wrote and said DONE.
    package mutating func finish(_ id: ID) -> Client? {
        clients[id]?.done = true
        return clients[id]
    }

    /// The client's connection ended; nil if it was not (or no longer) on the roster.
    package mutating func leave(_ id: ID) -> Client? { clients.removeValue(forKey: id) }

    /// Whether the client's latest report said it lacks some or all of `chunk`; nil for a
    /// client not on the roster.
    package func needs(_ id: ID, chunk: Int) -> Bool? {
        guard let c = clients[id] else { return nil }
        if c.done { return false }
        return c.partial[chunk] != nil || c.missing.contains { $0.contains(chunk) }
    }

    /// A pass ended at `now`: counts it toward Loop Suspend and applies the slow-client rule.
    /// The clients returned are off the roster; the server tells each why.
    package mutating func passEnded(at now: Instant) -> [Drop] {
        idlePasses += 1
        var drops: [Drop] = []
        // Clients with every chunk are verifying: they owe us nothing but DONE.
        for (id, var c) in clients.sorted(by: { $0.key < $1.key }) where !c.done && Int(c.received) < chunkCount {
            if c.reportedSincePass {
                if c.received > c.receivedAtPass {
                    c.stalledPasses = 0
                    c.lastProgress = now
                } else {
                    c.stalledPasses += 1
                }
                c.receivedAtPass = c.received
                c.reportedSincePass = false
            }
            clients[id] = c
            let silent = now - c.lastReport > rules.silenceLimit
            let stalled = c.stalledPasses >= rules.stallPasses && now - c.lastProgress >= rules.stallTime
            guard silent || stalled else { continue }
            let reason: DropReason = silent ? .silent(limit: rules.silenceLimit)
                : .stalled(passes: c.stalledPasses, time: rules.stallTime, received: c.received, of: chunkCount)
            drops.append(Drop(id: id, client: c, reason: reason))
            clients[id] = nil
        }
        return drops
    }

    /// The Loop Suspend rule, asked before each send: true when sending stops now (it starts
    /// again on the next report).
    package mutating func suspendIfIdle() -> Bool {
        guard streaming, rules.loopSuspend > 0, restoring == 0, idlePasses >= rules.loopSuspend else { return false }
        streaming = false
        return true
    }
}
