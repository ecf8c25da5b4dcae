import Testing
@testable import Multicast

/// The server's client rules on simulated clients and a simulated clock.
@Suite struct ClientRosterTests {
    let t0 = ContinuousClock.now
    func at(_ seconds: Double) -> ContinuousClock.Instant { t0 + .seconds(seconds) }
    /// A report claiming `received` chunks; the roster goes by `lacking`, what its need set names.
    func report(_ received: UInt32 = 0) -> ControlMessage.Report { .init(received: received, writeRate: 0, missing: []) }

    @Test func aClientThatKeepsGainingStays() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let id = roster.join(name: "a", peer: "10.0.0.2", at: at(0))
        for pass in 1...20 {
            roster.report(report(), lacking: 100 - pass, from: id, at: at(Double(pass)))
            #expect(roster.passEnded(at: at(Double(pass) + 0.5)).isEmpty, "pass \(pass)")
        }
        #expect(roster.clients[id]?.lacking == 80)
    }

    /// A client reading its target for an incremental restore says so every second: it is
    /// neither silent nor stalled, and still counts as joining until its first real report.
    @Test func aSurveyingClientIsAliveAndStillJoining() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let busy = roster.join(name: "busy", peer: "10.0.0.5", at: at(0))
        let other = roster.join(name: "other", peer: "10.0.0.6", at: at(0))
        for second in 1...60 {
            let counted = roster.report(.init(received: 0, writeRate: 0, missing: [], surveying: true), lacking: 0, from: busy, at: at(Double(second)))
            #expect(!counted)
            roster.report(report(), lacking: 100 - second, from: other, at: at(Double(second)))
            #expect(roster.passEnded(at: at(Double(second) + 0.5)).isEmpty, "second \(second)")
        }
        #expect(roster.joining == 1)
        roster.report(report(), lacking: 100, from: busy, at: at(61))
        #expect(roster.joining == 0)
    }

    @Test func aStalledClientIsDroppedAfterPassesAndTime() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let slow = roster.join(name: "slow", peer: "10.0.0.3", at: at(0))
        let fast = roster.join(name: "fast", peer: "10.0.0.4", at: at(0))
        roster.report(report(5), lacking: 95, from: slow, at: at(0.1))
        #expect(roster.passEnded(at: at(0.2)).isEmpty, "its first report")
        // Short passes: three without progress, but not yet 10 s of them.
        for pass in 1...3 {
            roster.report(report(5), lacking: 95, from: slow, at: at(Double(pass)))
            roster.report(report(), lacking: 100 - 10 * pass, from: fast, at: at(Double(pass)))
            #expect(roster.passEnded(at: at(Double(pass) + 0.2)).isEmpty)
        }
        #expect(roster.clients[slow]?.stalledPasses == 3)
        roster.report(report(5), lacking: 95, from: slow, at: at(10))
        roster.report(report(), lacking: 60, from: fast, at: at(10))
        let drops = roster.passEnded(at: at(10.3))
        #expect(drops.map(\.id) == [slow])
        #expect(drops.first?.reason == .stalled(passes: 4, time: .seconds(10), lacking: 95, of: 100))
        #expect(drops.first?.reason.description == "no progress in 4 passes and 10 s (still asks for 95 of 100 chunks)")
        #expect(roster.clients[slow] == nil && roster.clients[fast] != nil)
    }

    @Test func passesWithoutAReportAreNotJudged() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let id = roster.join(name: "a", peer: "p", at: at(0))
        roster.report(report(5), lacking: 95, from: id, at: at(0))
        _ = roster.passEnded(at: at(0.1))
        for k in 1...50 { #expect(roster.passEnded(at: at(0.1 + Double(k) * 0.2)).isEmpty) }
        #expect(roster.clients[id]?.stalledPasses == 0)
    }

    @Test func aSilentClientIsDropped() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let id = roster.join(name: "quiet", peer: "p", at: at(0))
        roster.report(report(1), lacking: 99, from: id, at: at(1))
        #expect(roster.passEnded(at: at(16)).isEmpty, "15 s is the limit, not past it")
        let drops = roster.passEnded(at: at(16.5))
        #expect(drops.map(\.reason) == [.silent(limit: .seconds(15))])
        #expect(drops.first?.reason.description == "no report for 15 s")
    }

    @Test func finishedAndVerifyingClientsAreNeverDropped() {
        var roster = ClientRoster(chunkCount: 10, rules: .init())
        let verifying = roster.join(name: "v", peer: "p", at: at(0))
        let done = roster.join(name: "d", peer: "q", at: at(0))
        roster.report(report(10), lacking: 0, from: verifying, at: at(0))
        roster.report(report(10), lacking: 0, from: done, at: at(0))
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
        roster.report(report(), lacking: 10, from: id, at: at(0))
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
        roster.report(report(), lacking: 10, from: 99, at: at(6))
        #expect(!roster.streaming, "a client no longer on the roster asks for nothing")
        let b = roster.join(name: "b", peer: "q", at: at(6))
        roster.report(report(), lacking: 10, from: b, at: at(6))
        #expect(roster.streaming && roster.idlePasses == 0, "a new client's request resumes")
        _ = roster.finish(b)
        _ = roster.passEnded(at: at(7))
        suspended = roster.suspendIfIdle()
        #expect(!suspended)
        _ = roster.passEnded(at: at(8))
        suspended = roster.suspendIfIdle()
        #expect(suspended)
    }

    @Test func withoutLoopSuspendItNeverPauses() {
        var roster = ClientRoster(chunkCount: 10, rules: .init())
        let id = roster.join(name: "a", peer: "p", at: at(0))
        roster.report(report(), lacking: 10, from: id, at: at(0))
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
        let counts = roster.report(report(), lacking: 10, from: a, at: at(0.1))
        #expect(counts, "on the roster and restoring: its need counts")
        #expect(roster.joining == 1)
        _ = roster.leave(b)
        #expect(roster.joining == 0)
        _ = roster.finish(a)
        let afterDone = roster.report(report(10), lacking: 0, from: a, at: at(0.2))
        #expect(!afterDone, "done: asks for nothing")
        let stranger = roster.report(report(), lacking: 10, from: 42, at: at(0.3))
        #expect(!stranger, "not on the roster")
    }

    /// The endless-claims client: its `received` grows at every report while its need set
    /// names every chunk. The server goes by the need set: no progress, dropped by the
    /// slow-client rule; one that grows and shrinks by a chunk gains only its first dip.
    @Test func claimsWithoutAShrinkingNeedAreNoProgress() {
        var roster = ClientRoster(chunkCount: 100, rules: .init())
        let liar = roster.join(name: "liar", peer: "10.0.0.9", at: at(0))
        let seesaw = roster.join(name: "seesaw", peer: "10.0.0.8", at: at(0))
        var drops: [ClientRoster.Drop] = []
        var pass = 0
        while drops.isEmpty && pass < 100 {
            pass += 1
            roster.report(report(UInt32(pass)), lacking: 100, from: liar, at: at(Double(pass)))
            roster.report(report(UInt32(pass)), lacking: pass % 2 == 0 ? 100 : 99, from: seesaw, at: at(Double(pass)))
            drops = roster.passEnded(at: at(Double(pass) + 0.5))
        }
        #expect(Set(drops.map(\.id)) == [liar, seesaw], "both, at the same pass")
        #expect(pass == 11, "the first judged pass, then 10 s of no progress: \(pass)")
        #expect(drops.first?.reason == .stalled(passes: 10, time: .seconds(10), lacking: 100, of: 100))
    }

    /// Loop Suspend against the same client: passes in which nobody asked for fewer chunks
    /// count; its report restarts a suspended stream once, then no more until it shows
    /// progress. A new client's request still starts it.
    @Test func loopSuspendStopsForAClientThatOnlyClaims() {
        var roster = ClientRoster(chunkCount: 10, rules: .init(loopSuspend: 2))
        let liar = roster.join(name: "liar", peer: "p", at: at(0))
        var restarts = 0
        var passes = 0
        for k in 1...200 {
            let t = Double(k) * 0.1
            roster.report(report(UInt32(k)), lacking: 10, from: liar, at: at(t))
            if !roster.streaming { continue }
            if roster.suspendIfIdle() { restarts += 1; continue }
            passes += 1
            #expect(roster.passEnded(at: at(t + 0.05)).isEmpty)
        }
        #expect(!roster.streaming, "stopped")
        #expect(restarts == 2 && passes <= 6, "suspended twice after \(passes) passes")
        let b = roster.join(name: "b", peer: "q", at: at(30))
        roster.report(report(), lacking: 10, from: b, at: at(30))
        #expect(roster.streaming)
        // Progress by the first restores the right to restart once more.
        roster.report(report(), lacking: 9, from: liar, at: at(30))
        #expect(roster.clients[liar]?.fewest == 9)
    }
}
