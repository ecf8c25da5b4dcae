import Foundation
import Synchronization
import SystemSupport
import UDIF

/// What `asr server` is doing, for whoever watches (the status server). The send loop bumps
/// counters and sets the stream's state without a lock; control threads note each client's
/// joins, reports and ends under a lock of the board's own, which a reader holds only to take
/// a copy-on-write reference (the copy's cost falls on the next writer, at most once per
/// snapshot). Watching never takes the server's state lock, so it cannot slow the stream.
public final class SessionBoard: Sendable {
    /// Ended clients kept for the page; older ones are forgotten first.
    public static let keptEnded = 1000

    private let bytes = Atomic<UInt64>(0)
    private let packets = Atomic<UInt64>(0)
    private let chunks = Atomic<UInt64>(0)
    private let repairs = Atomic<UInt64>(0)
    private let fragmentRepairs = Atomic<UInt64>(0)
    private let passes = Atomic<UInt64>(0)
    private let streamState = Atomic<UInt8>(StreamState.waiting.code)
    private let live = Locked(Live())

    private let image: SessionStatus.Image
    private let stream: SessionStatus.Stream
    private let sessionID: UInt64
    private let chunkCount: Int
    /// Chunks that never travel (zero-fill, free space): every client holds them from the start.
    private let travelless: Int
    private let origin = ContinuousClock.now
    private let startedAt = Date()

    /// How the stream stands.
    package enum StreamState: String, Sendable, CaseIterable {
        case waiting, sending, idle, suspended, stopped

        var code: UInt8 { UInt8(Self.allCases.firstIndex(of: self)!) }
    }

    private struct Live {
        var clients: [Int: ClientRecord] = [:]
        var order: [Int] = []
        var ended = 0
    }

    package init(feed: ImageFeed, path: String, config: ServerConfig, sessionID: UInt64) {
        image = SessionStatus.Image(
            name: URL(fileURLWithPath: path).lastPathComponent, path: path, format: feed.format, diskBytes: feed.diskBytes,
            storedBytes: feed.manifest.reduce(0) { $0 + UInt64($1.storedLength) }, freeBytes: feed.freeBytes,
            chunks: feed.manifest.count, identity: hex(feed.identity), signed: feed.signature != nil,
            signer: feed.signature.map { hex($0.publicKey) })
        stream = SessionStatus.Stream(
            state: StreamState.waiting.rawValue, group: config.multicastAddress, port: Int(config.port), ttl: Int(config.multicastTTL),
            dataRate: config.dataRate, clientDataRate: config.clientDataRate, effectiveRate: config.effectiveRate,
            bytesSent: 0, packetsSent: 0, chunksSent: 0, repairsSent: 0, fragmentRepairsSent: 0, passes: 0)
        self.sessionID = sessionID
        chunkCount = feed.manifest.count
        travelless = feed.manifest.count { $0.storedLength == 0 }
    }

    /// UDP payload bytes sent so far.
    public var bytesSent: UInt64 { bytes.load(ordering: .relaxed) }

    /// Seconds since the board began: the clock every client record runs on.
    private func seconds() -> Double {
        let d = ContinuousClock.now - origin
        return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
    }

    private func unix(_ t: Double) -> Double { startedAt.timeIntervalSince1970 + t }

    // MARK: The send loop's: no lock.

    package func sent(bytes n: Int, packets count: Int) {
        bytes.add(UInt64(n), ordering: .relaxed)
        packets.add(UInt64(count), ordering: .relaxed)
    }

    /// A chunk went out: a repair or the cursor's, whole or only the fragments clients lacked.
    package func sentChunk(repair: Bool, partFragments: Int?) {
        chunks.add(1, ordering: .relaxed)
        if repair { repairs.add(1, ordering: .relaxed) }
        if let partFragments { fragmentRepairs.add(UInt64(partFragments), ordering: .relaxed) }
    }

    package func passEnded() { passes.add(1, ordering: .relaxed) }

    package func stream(_ state: StreamState) { streamState.store(state.code, ordering: .relaxed) }

    // MARK: Control threads' (and a drop's): the board's lock, briefly.

    package func joined(_ id: Int, name: String, address: String) {
        let t = seconds()
        live.withLock { l in
            l.clients[id] = ClientRecord(id: id, name: name, address: address, joinedAt: t)
            l.order.append(id)
        }
    }

    /// `lacking`: the chunks its need set names, as the server judged it (its own `received`
    /// count is only its word).
    package func reported(_ id: Int, _ report: ControlMessage.Report, lacking: Int) {
        let t = seconds(), sent = packets.load(ordering: .relaxed)
        let travelling = chunkCount - travelless
        let held = travelling - lacking
        let progress = travelling == 0 ? 1 : max(0, min(1, Double(held) / Double(travelling)))
        live.withLock { $0.clients[id]?.report(report, chunks: chunkCount - lacking, packetsSent: sent, progress: progress, at: t) }
    }

    package func finished(_ id: Int, failure: String?) { end(id) { $0.finish(failure: failure, at: $1) } }
    package func dropped(_ id: Int, reason: String) { end(id) { $0.drop(reason: reason, at: $1) } }
    package func left(_ id: Int) { end(id) { $0.leave(at: $1) } }

    private func end(_ id: Int, _ change: (inout ClientRecord, Double) -> Void) {
        let t = seconds()
        live.withLock { l in
            guard var c = l.clients[id], !c.state.ended else { return }
            change(&c, t)
            l.clients[id] = c
            l.ended += 1
            // Forget the oldest ended clients past the bound: a server may run for months.
            while l.ended > Self.keptEnded, let k = l.order.firstIndex(where: { l.clients[$0]?.state.ended ?? true }) {
                l.clients[l.order.remove(at: k)] = nil
                l.ended -= 1
            }
        }
    }

    // MARK: The reader's.

    /// A copy of everything: references taken under the board's lock, laid out outside it.
    public func snapshot() -> SessionStatus {
        let t = seconds()
        let (clientsByID, order) = live.withLock { ($0.clients, $0.order) }
        let records = order.compactMap { clientsByID[$0] }
        var stream = self.stream
        stream.state = StreamState.allCases[Int(streamState.load(ordering: .relaxed))].rawValue
        stream.bytesSent = bytes.load(ordering: .relaxed)
        stream.packetsSent = packets.load(ordering: .relaxed)
        stream.chunksSent = chunks.load(ordering: .relaxed)
        stream.repairsSent = repairs.load(ordering: .relaxed)
        stream.fragmentRepairsSent = fragmentRepairs.load(ordering: .relaxed)
        stream.passes = passes.load(ordering: .relaxed)
        var counts = Dictionary(uniqueKeysWithValues: ClientRecord.State.allCases.map { ($0.rawValue, 0) })
        let clients = records.map { c in
            counts[c.state.rawValue, default: 0] += 1
            return SessionStatus.Client(
                id: c.id, name: c.name, address: c.address, joinedAt: unix(c.joinedAt), state: c.state.rawValue, reason: c.reason,
                chunks: c.chunks, chunkCount: chunkCount, progress: c.progress, verifyProgress: c.verifyProgress,
                repairsAsked: c.repairsAsked, loss: c.loss, writeRate: c.writeRate, packetsReceived: c.packets, eta: c.eta,
                lastReportAt: c.lastReportAt.map(unix), endedAt: c.endedAt.map(unix))
        }
        return SessionStatus(
            server: .init(startedAt: startedAt.timeIntervalSince1970, now: unix(t), protocolVersion: Int(ControlMessage.protocolVersion),
                          sessionID: String(sessionID, radix: 16)),
            image: image, stream: stream, clients: clients, counts: counts)
    }
}
