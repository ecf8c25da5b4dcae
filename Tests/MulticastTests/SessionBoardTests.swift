import Foundation
import Imaging
import SystemSupport
import TestSupport
import Testing
import UDIF
@testable import Multicast

/// What the status page says about a client, from simulated reports at simulated times.
@Suite struct ClientRecordTests {
    typealias Report = ControlMessage.Report

    func report(_ received: UInt32, packets: UInt64 = 0, missing: [(UInt32, UInt32)] = [(0, 1)],
                fragments: [(chunk: UInt32, missing: [UInt16])] = [], position: (UInt32, UInt32)? = nil, quiet: Bool = false) -> Report {
        Report(received: received, writeRate: 1000, missing: missing, fragments: fragments, position: position, quiet: quiet, packets: packets)
    }

    @Test func aClientGoesFromJoiningThroughVerifyingToDone() {
        var c = ClientRecord(id: 1, name: "a", address: "10.0.0.2", joinedAt: 0)
        #expect(c.state == .joining)
        c.report(report(3), packetsSent: 0, progress: 0.3, at: 1)
        #expect(c.state == .restoring && c.chunks == 3 && c.progress == 0.3 && c.verifyProgress == nil)
        c.report(Report(received: 10, writeRate: 0, missing: [], verifying: true, verified: 25, verifyTotal: 100), packetsSent: 0, progress: 1, at: 2)
        #expect(c.state == .verifying && c.verifyProgress == 0.25)
        #expect(c.writeRate == 1000, "a verifying report's 0 does not hide the write rate")
        c.finish(failure: nil, at: 3)
        #expect(c.state == .done && c.verifyProgress == 1 && c.endedAt == 3 && c.eta == nil)
        c.drop(reason: "late", at: 4)
        c.report(report(1), packetsSent: 0, progress: 0.1, at: 5)
        #expect(c.state == .done && c.chunks == 10, "an ended client stays as it ended")
    }

    @Test func endingsCarryTheirReasons() {
        var failed = ClientRecord(id: 1, name: "a", address: "x", joinedAt: 0)
        failed.finish(failure: "interrupted", at: 1)
        #expect(failed.state == .failed && failed.reason == "interrupted")
        var dropped = ClientRecord(id: 2, name: "b", address: "x", joinedAt: 0)
        dropped.drop(reason: "no report for 15 s", at: 1)
        dropped.leave(at: 2)
        #expect(dropped.state == .dropped && dropped.reason == "no report for 15 s", "leaving after a drop changes nothing")
        var left = ClientRecord(id: 3, name: "c", address: "x", joinedAt: 0)
        left.leave(at: 1)
        #expect(left.state == .left && left.reason != nil)
    }

    /// Chunks held in part behind the stream's position are repairs asked, each counted once
    /// while it stays lacking; the chunk at or past the position is still arriving.
    @Test func repairsAskedCountEachLossOnce() {
        var c = ClientRecord(id: 1, name: "a", address: "x", joinedAt: 0)
        c.report(report(0, fragments: [(2, [1]), (9, [0, 1])], position: (0, 9)), packetsSent: 0, progress: 0, at: 1)
        #expect(c.repairsAsked == 1, "chunk 2 was passed; 9 is where the stream is")
        c.report(report(0, fragments: [(2, [1]), (5, [3]), (12, [0])], position: (0, 12)), packetsSent: 0, progress: 0, at: 2)
        #expect(c.repairsAsked == 2, "2 again is the same loss; 5 is new")
        c.report(report(0, fragments: [(12, [0])], quiet: true), packetsSent: 0, progress: 0, at: 3)
        #expect(c.repairsAsked == 3, "quiet: nothing is on its way, so 12 was lost too")
        c.report(report(0, fragments: [(2, [4])], position: (1, 8)), packetsSent: 0, progress: 0, at: 4)
        #expect(c.repairsAsked == 4, "2 lost again after its repair came")
    }

    /// Loss is what it did not take of what was sent since its first report, once enough was.
    @Test func lossComparesPacketsTakenWithPacketsSent() {
        var c = ClientRecord(id: 1, name: "a", address: "x", joinedAt: 0)
        c.report(report(0, packets: 40), packetsSent: 100, progress: 0, at: 1)
        #expect(c.loss == nil)
        c.report(report(1, packets: 140), packetsSent: 200, progress: 0.1, at: 2)
        #expect(c.loss == nil, "100 packets sent since say little")
        c.report(report(5, packets: 990), packetsSent: 1100, progress: 0.5, at: 3)
        #expect(c.loss.map { abs($0 - 0.05) < 1e-9 } == true, "950 of 1000")
        c.report(report(10, packets: 990, missing: []), packetsSent: 5000, progress: 1, at: 4)
        #expect(c.loss.map { abs($0 - 0.05) < 1e-9 } == true, "with every chunk it left the group: not a loss")
        var deaf = ClientRecord(id: 2, name: "b", address: "x", joinedAt: 0)
        deaf.report(report(0), packetsSent: 0, progress: 0, at: 1)
        deaf.report(report(0), packetsSent: 800, progress: 0, at: 2)
        #expect(deaf.loss == 1)
    }

    /// The ETA is what is left of the phase at its smoothed pace; verifying starts a new pace.
    @Test func etaFollowsThePace() {
        var c = ClientRecord(id: 1, name: "a", address: "x", joinedAt: 0)
        c.report(report(0), packetsSent: 0, progress: 0, at: 0)
        #expect(c.eta == nil, "no pace yet")
        c.report(report(1), packetsSent: 0, progress: 0.1, at: 1)
        #expect(c.eta.map { abs($0 - 9) < 1e-9 } == true, "0.1 a second, 0.9 to go")
        c.report(report(2), packetsSent: 0, progress: 0.1, at: 1.5)
        #expect(c.eta.map { abs($0 - 9) < 1e-9 } == true, "half a second is too short to sample")
        c.report(Report(received: 10, writeRate: 0, missing: [], verifying: true, verified: 0, verifyTotal: 100), packetsSent: 0, progress: 1, at: 3)
        #expect(c.eta == nil, "a new phase, a new pace")
        c.report(Report(received: 10, writeRate: 0, missing: [], verifying: true, verified: 50, verifyTotal: 100), packetsSent: 0, progress: 1, at: 4)
        #expect(c.eta.map { abs($0 - 1) < 1e-9 } == true)
    }
}

/// The board from a server's point of view: joins, reports and ends, then a snapshot.
@Suite struct SessionBoardTests {
    /// Three 1 MiB chunks, the middle one zeros (it never travels).
    static func feed() throws -> ImageFeed {
        let dir = TemporaryDirectory()
        var disk = [UInt8](repeating: 0, count: 3 << 20)
        var rng = SplitMix64(seed: 9)
        for i in 0..<(1 << 20) { disk[i] = UInt8(truncatingIfNeeded: rng.next()) }
        for i in (2 << 20)..<(3 << 20) { disk[i] = UInt8(truncatingIfNeeded: rng.next()) }
        let path = dir.file("disk.dmg")
        try ImageWriter().write(from: MemorySource(bytes: disk), to: path)
        _ = try ImageScanner(reporter: Reporter(.quiet)).scan(path)
        return try ImageFeed(source: ImageSource.open(path))
    }

    static let config = ServerConfig(dataRate: 1_000_000, multicastAddress: "239.1.2.3")

    @Test func theSnapshotHasEveryClientInJoinOrderAndCountsByState() throws {
        let board = SessionBoard(feed: try Self.feed(), path: "/srv/disk.img", config: Self.config, sessionID: 0xABC)
        board.joined(7, name: "b", address: "10.0.0.3")
        board.joined(3, name: "a", address: "10.0.0.2")
        board.joined(9, name: "c", address: "10.0.0.4")
        // It claims all 3 chunks; its need set still names one: the board shows what the server sees.
        board.reported(3, .init(received: 3, writeRate: 5, missing: [(0, 1)]), lacking: 1)
        board.finished(7, failure: nil)
        board.dropped(9, reason: "no report for 15 s")
        board.sent(bytes: 1432 * 44, packets: 44)
        board.sentChunk(repair: true, partFragments: 3)
        board.passEnded()
        board.stream(.sending)
        let s = board.snapshot()
        #expect(s.clients.map(\.name) == ["b", "a", "c"])
        #expect(s.clients.map(\.state) == ["done", "restoring", "dropped"])
        #expect(s.clients[1].progress == 0.5, "the zero chunk counts from the start: 1 of the 2 that travel")
        #expect(s.clients[2].reason == "no report for 15 s")
        #expect(s.counts["done"] == 1 && s.counts["restoring"] == 1 && s.counts["dropped"] == 1 && s.counts["failed"] == 0)
        #expect(s.stream.bytesSent == 1432 * 44 && s.stream.packetsSent == 44 && s.stream.repairsSent == 1)
        #expect(s.stream.fragmentRepairsSent == 3 && s.stream.passes == 1 && s.stream.state == "sending")
        #expect(s.image.name == "disk.img" && ["UDZO", "UDRO"].contains(s.image.format) && s.image.chunks == 3 && !s.image.signed)
        #expect(s.server.sessionID == "abc")
    }

    @Test func endedClientsPastTheBoundAreForgottenOldestFirst() throws {
        let board = SessionBoard(feed: try Self.feed(), path: "disk.img", config: Self.config, sessionID: 1)
        board.joined(0, name: "stays", address: "x")
        for id in 1...(SessionBoard.keptEnded + 5) {
            board.joined(id, name: "c\(id)", address: "x")
            board.finished(id, failure: nil)
        }
        let s = board.snapshot()
        #expect(s.clients.count == SessionBoard.keptEnded + 1)
        #expect(s.clients.first?.name == "stays", "clients still restoring are never forgotten")
        #expect(s.clients.dropFirst().first?.name == "c6")
    }
}
