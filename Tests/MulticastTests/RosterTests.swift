import Testing
@testable import Multicast

/// The server's client rules on simulated clients and a simulated clock.
@Suite struct ClientRosterTests {
    let t0 = ContinuousClock.now
    func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .seconds(seconds) }
    func report(_ received: UInt32, missing: [(UInt32, UInt32)] = [], fragments: [(chunk: UInt32, missing: [UInt16])] = []) -> ControlMessage.Report {
        .init(received: received, writeRate: 0, missing: missing, fragments: fragments)
    }

    @Test func aClientThatKeepsGainingStays() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let id = roster.join(name: "a", peer: "10.0.0.2", at: at(0))
        for pass in 1...20 {
            roster.report(report(UInt32(pass)), from: id, at: at(Double(pass)))
            #expect(roster.passEnded(at: at(Double(pass) + 0.5)).isEmpty, "pass \(pass)")
        }
        #expect(roster.clients[id]?.received == 20)
    }

    /// A client reading its target for an incremental restore says so every second: it is
    /// neither silent nor stalled, and still counts as joining until its first real report.
    @Test func aSurveyingClientIsAliveAndStillJoining() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let busy = roster.join(name: "busy", peer: "10.0.0.5", at: at(0))
        let other = roster.join(name: "other", peer: "10.0.0.6", at: at(0))
        for second in 1...60 {
            let counted = roster.report(.init(received: 0, writeRate: 0, missing: [], surveying: true), from: busy, at: at(Double(second)))
            #expect(!counted)
            roster.report(report(UInt32(second)), from: other, at: at(Double(second)))
            #expect(roster.passEnded(at: at(Double(second) + 0.5)).isEmpty, "second \(second)")
        }
        #expect(roster.joining == 1)
        roster.report(report(0, missing: [(0, 100)]), from: busy, at: at(61))
        #expect(roster.joining == 0)
    }

    @Test func aStalledClientIsDroppedAfterPassesAndTime() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let slow = roster.join(name: "slow", peer: "10.0.0.3", at: at(0))
        let fast = roster.join(name: "fast", peer: "10.0.0.4", at: at(0))
        roster.report(report(5), from: slow, at: at(0.1))
        #expect(roster.passEnded(at: at(0.2)).isEmpty, "it gained 5 chunks this pass")
        // Short passes: three without progress, but not yet 10 s of them.
        for pass in 1...3 {
            roster.report(report(5), from: slow, at: at(Double(pass)))
            roster.report(report(UInt32(10 * pass)), from: fast, at: at(Double(pass)))
            #expect(roster.passEnded(at: at(Double(pass) + 0.2)).isEmpty)
        }
        #expect(roster.clients[slow]?.stalledPasses == 3)
        roster.report(report(5), from: slow, at: at(10))
        roster.report(report(40), from: fast, at: at(10))
        let drops = roster.passEnded(at: at(10.3))
        #expect(drops.map(\.id) == [slow])
        #expect(drops.first?.reason == .stalled(passes: 4, time: .seconds(10), received: 5, of: 100))
        #expect(drops.first?.reason.description == "no progress in 4 passes and 10 s (5 of 100 chunks)")
        #expect(roster.clients[slow] == nil && roster.clients[fast] != nil)
    }

    @Test func passesWithoutAReportAreNotJudged() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let id = roster.join(name: "a", peer: "p", at: at(0))
        roster.report(report(5), from: id, at: at(0))
        _ = roster.passEnded(at: at(0.1))
        for k in 1...50 { #expect(roster.passEnded(at: at(0.1 + Double(k) * 0.2)).isEmpty) }
        #expect(roster.clients[id]?.stalledPasses == 0)
    }

    @Test func aSilentClientIsDropped() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let id = roster.join(name: "quiet", peer: "p", at: at(0))
        roster.report(report(1), from: id, at: at(1))
        #expect(roster.passEnded(at: at(16)).isEmpty, "15 s is the limit, not past it")
        let drops = roster.passEnded(at: at(16.5))
        #expect(drops.map(\.reason) == [.silent(limit: .seconds(15))])
        #expect(drops.first?.reason.description == "no report for 15 s")
    }

    @Test func finishedAndVerifyingClientsAreNeverDropped() {
        var roster = ClientRoster(chunkCount: 10, rules: .init())
        let verifying = roster.join(name: "v", peer: "p", at: at(0))
        let done = roster.join(name: "d", peer: "q", at: at(0))
        roster.report(report(10), from: verifying, at: at(0))
        roster.report(report(10), from: done, at: at(0))
        #expect(roster.finish(done)?.name == "d")
        for k in 1...10 { #expect(roster.passEnded(at: at(Double(k) * 100)).isEmpty) }
        #expect(roster.restoring == 1)
        #expect(roster.leave(done)?.done == true)
        #expect(roster.leave(done) == nil)
    }

    @Test func loopSuspendWaitsForIdlePassesWithNobodyRestoring() {
        var roster = ClientRoster(chunkCount: 10, rules: .init(loopSuspend: 2))
        #expect(!roster.streaming, "nothing is sent until someone asks")
        let id = roster.join(name: "a", peer: "p", at: at(0))
        roster.report(report(0), from: id, at: at(0))
        #expect(roster.streaming)
        for k in 1...5 { _ = roster.passEnded(at: at(Double(k))) }
        var suspended = roster.suspendIfIdle()
        #expect(!suspended, "a client is restoring")
        _ = roster.finish(id)
        _ = roster.leave(id)
        suspended = roster.suspendIfIdle()
        #expect(suspended, "idle passes count from the last report")
        #expect(!roster.streaming)
        suspended = roster.suspendIfIdle()
        #expect(!suspended, "suspends once")
        roster.report(report(0), from: 99, at: at(6))
        #expect(roster.streaming && roster.idlePasses == 0, "any request resumes")
        _ = roster.passEnded(at: at(7))
        suspended = roster.suspendIfIdle()
        #expect(!suspended)
        _ = roster.passEnded(at: at(8))
        suspended = roster.suspendIfIdle()
        #expect(suspended)
    }

    @Test func withoutLoopSuspendItNeverPauses() {
        var roster = ClientRoster(chunkCount: 10, rules: .init())
        roster.report(report(0), from: 1, at: at(0))
        for k in 1...100 { _ = roster.passEnded(at: at(Double(k))) }
        let suspended = roster.suspendIfIdle()
        #expect(!suspended)
        #expect(roster.streaming)
    }

    @Test func clientsThatHaveNotReportedAreStillJoining() {
        var roster = ClientRoster(chunkCount: 10, rules: .init())
        let a = roster.join(name: "a", peer: "p", at: at(0))
        let b = roster.join(name: "b", peer: "q", at: at(0))
        #expect(roster.joining == 2)
        let counts = roster.report(report(0), from: a, at: at(0.1))
        #expect(counts, "on the roster and restoring: its need counts")
        #expect(roster.joining == 1)
        _ = roster.leave(b)
        #expect(roster.joining == 0)
        _ = roster.finish(a)
        let afterDone = roster.report(report(10), from: a, at: at(0.2))
        #expect(!afterDone, "done: asks for nothing")
        let stranger = roster.report(report(0), from: 42, at: at(0.3))
        #expect(!stranger, "not on the roster")
    }
}
