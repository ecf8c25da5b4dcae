import SystemSupport
import SystemPackage
import Foundation
import Glibc
import UDIF

/// `asr server`: serves one image to every client that asks, over UDP multicast, until
/// interrupted. TCP control on the configured port; data to the group on the same port.
/// What to send is the `Carousel`'s call, whom to serve and when to pause `ClientRoster`'s;
/// this class runs the sockets and threads around them, and keeps `board` up to date for
/// whoever watches.
public final class MulticastServer: Sendable {
    public let feed: ImageFeed
    public let config: ServerConfig
    package let sessionID = UInt64.random(in: 1...UInt64.max)
    private let interface: in_addr
    /// Where the data comes from, as clients see it (`DataSender.sourceAddress`).
    private let dataSource: [UInt8]
    private let log: @Sendable (String) -> Void
    /// The send loop waits on it for a request; control threads change it.
    private let state: Monitor<SharedState>
    /// The manifest as reports are judged against it: need sets are built outside `state`.
    private let shape: Carousel.Shape
    /// The session as the status server shows it: counters and each client's latest state,
    /// apart from `state` so that watching never holds the stream up.
    public let board: SessionBoard

    struct SharedState {
        var carousel: Carousel
        var roster: ClientRoster
        var connections: [ClientRoster.ID: ControlConnection] = [:]
        /// Open control connections by peer address, HELLO or not.
        var open: [String: Int] = [:]
        var openTotal = 0
        var stopped = false
        var bytesSent: UInt64 = 0
        /// Counts reports, arrivals and departures: the idle send loop waits for it to move.
        var generation: UInt64 = 0
        /// Something was sent since the carousel last had nobody to serve.
        var sending = false
        /// When a stream about to start began waiting for clients still joining.
        var gathering: ContinuousClock.Instant?

        /// True while a stream about to start waits for clients still joining.
        mutating func gather(_ now: ContinuousClock.Instant) -> Bool {
            guard !sending, !carousel.isIdle, roster.joining > 0 else {
                gathering = nil
                return false
            }
            let since = gathering ?? now
            gathering = since
            return now - since < MulticastServer.gatherTime
        }
    }

    /// `path`: the source as given, for the status page.
    public init(feed: ImageFeed, path: String, config: ServerConfig, interfaceName: String?, log: @escaping @Sendable (String) -> Void) throws {
        self.feed = feed
        self.config = config
        self.log = log
        board = SessionBoard(feed: feed, path: path, config: config, sessionID: sessionID)
        interface = try interfaceName.map(interfaceAddress) ?? in_addr(s_addr: INADDR_ANY)
        dataSource = DataSender.sourceAddress(group: config.multicastAddress, port: config.port, interface: interface)
        let carousel = Carousel(manifest: feed.manifest)
        shape = carousel.shape
        state = Monitor(SharedState(carousel: carousel,
                                    roster: ClientRoster(chunkCount: feed.manifest.count, rules: .init(loopSuspend: config.loopSuspend))))
    }

    package var bytesSent: UInt64 { state.read { $0.bytesSent } }

    /// Runs until `Interruption` is requested; returns normally then.
    public func run() throws {
        let listener = try listen()
        defer { close(listener) }
        let sender = try DataSender(group: config.multicastAddress, port: config.port, ttl: config.multicastTTL, interface: interface)
        let stored = feed.manifest.reduce(UInt64(0)) { $0 + UInt64($1.storedLength) }
        log("serving \(feed.manifest.count) chunks (\(feed.diskBytes) bytes, \(stored) stored) to \(config.multicastAddress):\(config.port) at \(config.effectiveRate) bytes/s; waiting for clients")
        if feed.freeBytes > 0 { log("skipping \(feed.freeBytes) bytes of free space: never sent, clients leave it as it is") }
        let acceptor = Thread { [self] in acceptLoop(listener) }
        acceptor.start()
        try sendLoop(sender)
        state.update { $0.stopped = true }
        board.stream(.stopped)
        shutdown(listener, Int32(SHUT_RDWR))
        log("stopped after \(bytesSent) bytes")
    }

    private func listen() throws(MulticastError) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .socket(.create, lastErrno()) }
        setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        do throws(Errno) {
            try bind(fd, in_addr(s_addr: INADDR_ANY), config.port)
            guard Glibc.listen(fd, 64) == 0 else { throw lastErrno() }
        } catch {
            close(fd)
            throw .socket(.listen(port: config.port), error)
        }
        setTimeout(fd, SO_RCVTIMEO, 0.2)
        return fd
    }

    /// Bytes of partly received control frames, all connections together.
    static let frameBudget = 16 << 20
    /// The largest frame a client needs for anything but a REPORT: HELLO with the longest name.
    static let otherFrameLimit = 1 + 8 + Int(UInt16.max)
    static let reportType = ControlMessage.report(.init(received: 0, writeRate: 0, missing: [])).type
    /// How long a connection may stay open without saying HELLO.
    static let helloDeadline: Duration = .seconds(10)
    /// How long a send to a client may block: a client that does not read is given up on.
    static let sendTimeout: TimeInterval = 5

    private func acceptLoop(_ listener: Int32) {
        let budget = FrameBudget(limit: Self.frameBudget)
        var lastRefusal: ContinuousClock.Instant?
        while !Interruption.requested && !state.read({ $0.stopped }) {
            var addr = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let fd = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listener, $0, &len) } }
            guard fd >= 0 else {
                // Out of descriptors or memory: accepting again at once would spin a core.
                if [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(errno) { usleep(100_000) }
                continue  // else the 0.2 s timeout, or a signal: look at the flags again
            }
            var text = [CChar](repeating: 0, count: 32)
            inet_ntop(AF_INET, &addr.sin_addr, &text, 32)
            let peer = string(fromCBuffer: text)
            let admitted = state.update { s in
                guard s.openTotal < config.maxConnections, s.open[peer, default: 0] < config.maxConnectionsPerAddress else { return false }
                s.openTotal += 1
                s.open[peer, default: 0] += 1
                return true
            }
            guard admitted else {
                close(fd)
                let now = ContinuousClock.now
                if lastRefusal.map({ now - $0 > .seconds(10) }) ?? true {
                    lastRefusal = now
                    log("refusing control connections from \(peer) and others: at most \(config.maxConnections) open, "
                        + "\(config.maxConnectionsPerAddress) per address")
                }
                continue
            }
            setTimeout(fd, SO_SNDTIMEO, Self.sendTimeout)
            // A REPORT can name no more than the image has: a larger one is refused before its
            // bytes are read. Every other message a client sends holds at most one short string.
            let reportLimit = shape.maxReportBytes
            let connection = ControlConnection(fd: fd, peer: peer, budget: budget) { type in
                type == Self.reportType ? reportLimit : Self.otherFrameLimit
            }
            Thread { [self] in
                serve(connection)
                state.update { s in
                    s.openTotal -= 1
                    s.open[peer, default: 1] -= 1
                    if s.open[peer] == 0 { s.open[peer] = nil }
                }
            }.start()
        }
    }

    /// One client's control conversation.
    private func serve(_ connection: ControlConnection) {
        connection.setReceiveTimeout(1)
        let opened = ContinuousClock.now
        var id: ClientRoster.ID?
        var clientName = ""
        var hasEverything = false
        var digestsSent = Set<Int>()
        defer {
            if let id {
                let client = state.update { s in
                    s.connections[id] = nil
                    s.carousel.forget(id)
                    s.generation += 1
                    return s.roster.leave(id)
                }
                board.left(id)  // a no-op for a client that finished or was dropped
                if let client, !client.done { log("client \(client.name) (\(client.peer)) left before finishing") }
            }
        }
        /// A protocol error from a client on the roster: off it, told why, and the reason logged.
        func drop(_ reason: String) {
            guard let id else { return }
            let client = state.update { s in
                s.connections[id] = nil
                s.carousel.forget(id)
                s.generation += 1
                return s.roster.leave(id)
            }
            guard let client else { return }
            board.dropped(id, reason: reason)
            log("dropped client \(client.name) (\(client.peer)): \(reason)")
            try? connection.send(.drop(reason: reason))
        }
        do {
            while !Interruption.requested && !state.read({ $0.stopped }) {
                guard let message = try connection.receive() else {
                    if id == nil && ContinuousClock.now - opened > Self.helloDeadline { return }
                    continue
                }
                switch message {
                case .hello(let version, let claimedName):
                    let name = displayable(claimedName, limit: 64)  // it goes into every log line about this client
                    guard version == ControlMessage.protocolVersion else {
                        try connection.send(.drop(reason: "protocol version \(version) is not supported (server speaks \(ControlMessage.protocolVersion))"))
                        return
                    }
                    try connection.send(.welcome(.init(
                        version: ControlMessage.protocolVersion, sessionID: sessionID, identity: feed.identity,
                        diskBytes: feed.diskBytes, group: ipv4(config.multicastAddress).map { withUnsafeBytes(of: $0.s_addr) { Array($0) } } ?? [],
                        dataPort: config.port, dataRate: config.effectiveRate, dataSource: dataSource)))
                    try connection.send(.manifest(feed.manifest))
                    try connection.send(.signature(signed: feed.signature?.serialized() ?? []))
                    if id == nil {
                        let now = ContinuousClock.now
                        id = state.update { s in
                            let id = s.roster.join(name: name, peer: connection.peer, at: now)
                            s.connections[id] = connection
                            s.generation += 1
                            board.joined(id, name: name, address: connection.peer)  // on the board before anything can end it
                            return id
                        }
                        clientName = name
                        log("client \(name) (\(connection.peer)) joined")
                    }
                case .report(let report):
                    guard let id else { continue }
                    // Built here, outside the lock: the stream never waits on a client's report.
                    let need: Carousel.NeedSet
                    do { need = try shape.need(from: report) } catch {
                        drop("protocol error: \(error)")
                        return
                    }
                    let now = ContinuousClock.now
                    let (accepted, sent) = state.update { s in
                        // A dropped or finished client's late report asks for nothing.
                        let accepted = s.roster.report(report, lacking: need.chunks, from: id, at: now)
                        if accepted { s.carousel.update(id, with: need) }
                        s.generation += 1
                        return (accepted, s.bytesSent)
                    }
                    if accepted { board.reported(id, report, lacking: need.chunks) }
                    // When its data was all in, apart from when its verify ended (its DONE).
                    if accepted, !hasEverything, report.missing.isEmpty, report.fragments.isEmpty {
                        hasEverything = true
                        log("client \(clientName) (\(connection.peer)) has every chunk; \(sent) bytes sent so far")
                    }
                case .done(let failure):
                    guard let id else { continue }
                    let (client, sent) = state.update { s in
                        s.carousel.forget(id)
                        s.generation += 1
                        return (s.roster.finish(id), s.bytesSent)
                    }
                    guard let client else { continue }  // dropped meanwhile: its word comes too late
                    // The client's own words: cut and escaped like its name.
                    let reason = failure.map { displayable($0, limit: 200) }
                    board.finished(id, failure: reason)
                    if let reason {
                        log("client \(client.name) (\(connection.peer)) failed: \(reason); \(sent) bytes sent so far")
                    } else {
                        log("client \(client.name) (\(connection.peer)) finished; \(sent) bytes sent so far")
                    }
                case .fragmentDigestsWanted(let chunk):
                    // Once per chunk and connection: what a client can make us hash is bounded
                    // by the image.
                    let c = Int(chunk)
                    guard id != nil, c < feed.manifest.count, feed.manifest[c].storedLength > 0,
                          digestsSent.insert(c).inserted else { continue }
                    if digestsSent.count == 1 {
                        log("client \(clientName) (\(connection.peer)): chunk \(c) failed its SHA-256 (forged or damaged fragments); sending fragment digests")
                    }
                    try connection.send(.fragmentDigests(chunk: chunk, digests: try feed.fragmentDigests(c)))
                default:
                    return  // a client has no business sending anything else
                }
            }
        } catch MulticastError.frameTooLarge(_, let type, let length, let limit) where id != nil {
            drop("protocol error: a message of type \(type) and \(length) bytes, more than the \(limit) this image allows")
        } catch {
            return
        }
    }

    typealias Next = Carousel.Next

    /// Clients that connect together (a lab booting at once) should not each cost a head:
    /// a stream about to start waits for clients that said HELLO to report, up to this long.
    static let gatherTime: Duration = .seconds(3)

    /// The next chunk to send, with the roster's rules applied where a pass ends; nil while
    /// nobody needs anything (or nothing not already on its way), or sending is suspended.
    /// `generation` is the state's when it answered.
    private func nextChunk() -> (next: Next?, generation: UInt64) {
        let now = ContinuousClock.now
        let (next, generation, suspended, transitions, drops) = state.update { s in
            let suspended = s.roster.suspendIfIdle()
            var next: Next?
            var drops: [(ClientRoster.Drop, ControlConnection?)] = []
            if s.roster.streaming && !s.gather(now) {
                let pass = s.carousel.pass
                next = s.carousel.next()
                if s.carousel.pass != pass {
                    board.passEnded()
                    drops = s.roster.passEnded(at: now).map { drop in
                        s.carousel.forget(drop.id)
                        return (drop, s.connections.removeValue(forKey: drop.id))
                    }
                }
            }
            // Log once each time the stream stops for want of anyone to serve.
            var idle: UInt64?
            var started: Int?
            if next != nil {
                if !s.sending { started = s.roster.restoring }
                s.sending = true
            } else if s.sending && s.carousel.isIdle {
                s.sending = false
                idle = s.bytesSent
            }
            return (next, s.generation, suspended, (started, idle), drops)
        }
        if suspended {
            board.stream(.suspended)
            log("suspended after \(config.loopSuspend) passes with no client restoring; waiting for a request")
        }
        let (started, idle) = transitions
        if let started {
            board.stream(.sending)
            log("sending what \(started) restoring clients lack")
        }
        if let idle {
            board.stream(.idle)
            log("idle: no client needs anything; \(idle) bytes sent")
        }
        // The dropped client is told why; the others carry on at the same rate.
        for (drop, connection) in drops {
            board.dropped(drop.id, reason: drop.reason.description)
            log("dropped client \(drop.client.name) (\(drop.client.peer)): \(drop.reason)")
            // On a thread of its own: a client that does not read would block this one, the
            // stream's, for the send timeout.
            if let connection {
                Thread {
                    try? connection.send(.drop(reason: drop.reason.description))
                    connection.shutDown()
                }.start()
            }
        }
        return (next, generation)
    }

    private func sendLoop(_ sender: DataSender) throws {
        var pacer = Pacer(rate: config.effectiveRate)
        // A GSO batch leaves in one burst: at most about 10 ms of the rate, so a slow stream
        // is smooth and a client that hears nothing for 100 ms knows nothing is on its way.
        let segment = DataPacket.headerSize + DataPacket.maxPayload
        let batchSegments = max(1, min(DataSender.maxSegments, Int(config.effectiveRate / 100) / segment))
        var packet: [UInt8] = []
        var batch: [UInt8] = []
        batch.reserveCapacity(64 * 1024)
        var cachedChunk: (index: Int, bytes: [UInt8])?
        while !Interruption.requested {
            let (next, generation) = nextChunk()
            guard let next else {
                // Nothing to send until a report (or arrival, or departure) changes what
                // clients need; look at the flag again meanwhile.
                state.wait(until: { $0.generation != generation }, deadline: Date().addingTimeInterval(0.2)) { _, _ in }
                pacer.reset()
                continue
            }
            let entry = feed.manifest[next.chunk]
            let stored: [UInt8]
            if let c = cachedChunk, c.index == next.chunk { stored = c.bytes } else {
                stored = try feed.storedBytes(next.chunk)
                cachedChunk = (next.chunk, stored)
            }
            let fragments = entry.fragmentCount
            let toSend = next.fragments.map { $0.map(Int.init).filter { $0 < fragments } } ?? Array(0..<fragments)
            board.sentChunk(repair: next.repair, partFragments: next.fragments == nil ? nil : toSend.count)
            var k = 0
            while k < toSend.count {
                batch.removeAll(keepingCapacity: true)
                var inBatch = 0
                // A GSO batch is equal-size segments: only the chunk's last fragment may be short.
                while k < toSend.count && inBatch < batchSegments {
                    let f = toSend[k]
                    let start = f * DataPacket.maxPayload
                    let end = min(start + DataPacket.maxPayload, stored.count)
                    DataPacket(fragmentCount: UInt16(fragments), sessionID: sessionID, pass: next.pass, chunk: UInt32(next.chunk),
                               fragment: UInt16(f), storedLength: entry.storedLength, payload: stored[start..<end]).encode(into: &packet)
                    batch += packet
                    k += 1
                    inBatch += 1
                    if end - start < DataPacket.maxPayload { break }
                }
                pacer.wait(for: batch.count)
                try sender.send(batch, segment: segment)
                let sent = batch.count
                state.update { $0.bytesSent += UInt64(sent) }
                board.sent(bytes: sent, packets: inBatch)
            }
        }
    }
}

/// Keeps the send rate at or below `rate` bytes/s over any one-second window: a token bucket
/// one hundredth of a second deep, refilled at 99% of the rate.
struct Pacer {
    let rate: Double
    private var tokens: Double
    private var last: UInt64
    private let depth: Double

    init(rate: UInt64) {
        self.rate = Double(rate) * 0.99
        depth = max(Double(rate) * 0.01, 64 * 1024)
        tokens = 0
        last = Pacer.now()
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    mutating func reset() {
        tokens = 0
        last = Pacer.now()
    }

    mutating func wait(for bytes: Int) {
        while true {
            let now = Pacer.now()
            tokens = min(depth, tokens + Double(now - last) / 1e9 * rate)
            last = now
            if tokens >= Double(bytes) {
                tokens -= Double(bytes)
                return
            }
            let needed = (Double(bytes) - tokens) / rate
            var ts = timespec(tv_sec: Int(needed), tv_nsec: Int((needed - needed.rounded(.down)) * 1e9))
            nanosleep(&ts, nil)
        }
    }
}

/// The multicast data socket. Sends a batch of equal-size packets in one call with UDP
/// generic segmentation offload where the kernel has it, one sendto per packet otherwise.
final class DataSender {
    static let maxSegments = 44  // 44 x 1432 bytes stays under the 64 KiB a GSO send allows
    private let fd: Int32
    private var destination: sockaddr_in
    private var gso = true

    init(group: String, port: UInt16, ttl: UInt8, interface: in_addr) throws(MulticastError) {
        guard let groupAddress = ipv4(group) else { throw .badMulticastAddress(group) }
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw .socket(.create, lastErrno()) }
        destination = sockaddrIn(groupAddress, port)
        setOption(fd, Int32(IPPROTO_IP), IP_MULTICAST_TTL, Int32(ttl))
        setOption(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, 1)  // clients on this host (and the loopback demo) hear it too
        var iface = interface
        if iface.s_addr != INADDR_ANY {
            setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &iface, socklen_t(MemoryLayout<in_addr>.size))
        }
        setOption(fd, SOL_SOCKET, SO_SNDBUF, 4 << 20)
    }

    deinit { close(fd) }

    /// The source address the kernel gives datagrams to the group (through `interface` if
    /// set), found by connecting a throwaway socket there; zeros when it cannot tell. Clients
    /// take data from that address only.
    static func sourceAddress(group: String, port: UInt16, interface: in_addr) -> [UInt8] {
        guard let groupAddress = ipv4(group) else { return [0, 0, 0, 0] }
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return [0, 0, 0, 0] }
        defer { close(fd) }
        var iface = interface
        if iface.s_addr != INADDR_ANY {
            setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &iface, socklen_t(MemoryLayout<in_addr>.size))
        }
        var to = sockaddrIn(groupAddress, port)
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let found = withUnsafeMutablePointer(to: &to) { to in
            withUnsafeMutablePointer(to: &local) { local in
                to.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } == 0
                    && local.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } == 0
            }
        }
        guard found else { return [0, 0, 0, 0] }
        return withUnsafeBytes(of: local.sin_addr.s_addr) { Array($0) }
    }

    func send(_ batch: [UInt8], segment: Int) throws(MulticastError) {
        if gso && batch.count > segment {
            if setOption(fd, Int32(IPPROTO_UDP), Kernel.udpSegment, Int32(segment)) {
                defer { setOption(fd, Int32(IPPROTO_UDP), Kernel.udpSegment, 0) }
                if (try? sendOne(batch[...])) != nil { return }
            }
            gso = false  // not supported here: fall back for good
        }
        var at = 0
        while at < batch.count {
            let end = min(at + segment, batch.count)
            do { try sendOne(batch[at..<end]) } catch { throw .socket(.send, error) }
            at = end
        }
    }

    /// One datagram (or GSO batch); a full socket buffer is waited out, not an error.
    private func sendOne(_ bytes: ArraySlice<UInt8>) throws(Errno) {
        while true {
            do throws(Errno) {
                try retryingInterrupts {
                    bytes.withUnsafeBytes { buf in
                        withUnsafePointer(to: &destination) {
                            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                                sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                            }
                        }
                    }
                }
                return
            } catch where error == .noBufferSpace || error == .resourceTemporarilyUnavailable {
                usleep(200)
            }
        }
    }
}
