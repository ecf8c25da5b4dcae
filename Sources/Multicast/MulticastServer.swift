import SystemSupport
import Foundation
import Glibc
import Synchronization
import UDIF

/// `asr server`: serves one image to every client that asks, over UDP multicast, until
/// interrupted. TCP control on the configured port; data to the group on the same port.
public final class MulticastServer: @unchecked Sendable {
    public let feed: ImageFeed
    public let config: ServerConfig
    public let sessionID = UInt64.random(in: 1...UInt64.max)
    private let interface: in_addr
    private let log: @Sendable (String) -> Void
    private let state: Mutex<SharedState>
    private let wake = NSCondition()

    struct ClientRecord {
        var name: String
        var connection: ControlConnection
        var received: UInt32 = 0
        var done = false
        var lastReport = Date()
        /// Chunks it had at the last pass boundary, and passes since it gained one.
        var receivedAtPass: UInt32 = 0
        var stalledPasses = 0
        /// A pass is judged only if the client reported during it (short passes outrun reports).
        var reportedSincePass = false
        var lastProgress = Date()
        var peer: String { connection.peer }
    }

    /// The slow-client rule: a client that gains no chunk over `stallLimit` whole passes and
    /// at least `stallTime` seconds, or sends no report for `silenceLimit` seconds, is dropped
    /// and told why. (Passes of a small image take a fraction of a second: time matters too.)
    static let stallLimit = 3
    static let stallTime: TimeInterval = 10
    static let silenceLimit: TimeInterval = 15

    struct SharedState {
        var scheduler: PassScheduler
        var clients: [Int: ClientRecord] = [:]
        var nextClient = 0
        var stopped = false
        /// Off until a client asks, and again after `Loop Suspend` idle passes.
        var streaming = false
        var bytesSent: UInt64 = 0
        init(scheduler: PassScheduler) { self.scheduler = scheduler }
        var restoring: Int { clients.values.filter { !$0.done }.count }
    }

    public init(feed: ImageFeed, config: ServerConfig, interfaceName: String?, log: @escaping @Sendable (String) -> Void) throws {
        self.feed = feed
        self.config = config
        self.log = log
        interface = try interfaceName.map(interfaceAddress) ?? in_addr(s_addr: INADDR_ANY)
        state = Mutex(SharedState(scheduler: PassScheduler(manifest: feed.manifest)))
    }

    public var bytesSent: UInt64 { state.withLock { $0.bytesSent } }

    /// Runs until `Interruption` is requested; returns normally then.
    public func run() throws {
        let listener = try listen()
        defer { close(listener) }
        let sender = try DataSender(group: config.multicastAddress, port: config.port, ttl: config.multicastTTL, interface: interface)
        log("serving \(feed.manifest.count) chunks (\(feed.diskBytes) bytes) to \(config.multicastAddress):\(config.port) at \(config.effectiveRate) bytes/s; waiting for clients")
        let acceptor = Thread { [self] in acceptLoop(listener) }
        acceptor.start()
        try sendLoop(sender)
        state.withLock { $0.stopped = true }
        shutdown(listener, Int32(SHUT_RDWR))
        log("stopped after \(bytesSent) bytes")
    }

    private func listen() throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw socketError("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddrIn(in_addr(s_addr: INADDR_ANY), config.port)
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, Glibc.listen(fd, 64) == 0 else {
            let e = socketError("cannot listen on port \(config.port)")
            close(fd)
            throw e
        }
        var tv = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    private func acceptLoop(_ listener: Int32) {
        while !Interruption.requested && !state.withLock({ $0.stopped }) {
            var addr = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let fd = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listener, $0, &len) } }
            guard fd >= 0 else { continue }
            var text = [CChar](repeating: 0, count: 32)
            inet_ntop(AF_INET, &addr.sin_addr, &text, 32)
            let connection = ControlConnection(fd: fd, peer: String(cString: text))
            Thread { [self] in serve(connection) }.start()
        }
    }

    /// One client's control conversation.
    private func serve(_ connection: ControlConnection) {
        connection.setReceiveTimeout(1)
        var id: Int?
        defer {
            if let id {
                let record = state.withLock { $0.clients.removeValue(forKey: id) }
                if let record, !record.done { log("client \(record.name) (\(record.peer)) left before finishing") }
            }
        }
        do {
            while !Interruption.requested {
                guard let message = try connection.receive() else { continue }
                switch message {
                case .hello(let version, let name):
                    guard version == ControlMessage.protocolVersion else {
                        try connection.send(.drop(reason: "protocol version \(version) is not supported (server speaks \(ControlMessage.protocolVersion))"))
                        return
                    }
                    try connection.send(.welcome(.init(
                        version: ControlMessage.protocolVersion, sessionID: sessionID, imageSHA256: feed.imageSHA256,
                        diskBytes: feed.diskBytes, group: ipv4(config.multicastAddress).map { withUnsafeBytes(of: $0.s_addr) { Array($0) } } ?? [],
                        dataPort: config.port, dataRate: config.effectiveRate)))
                    try connection.send(.manifest(feed.manifest))
                    if id == nil {
                        id = state.withLock { s in
                            s.nextClient += 1
                            s.clients[s.nextClient] = ClientRecord(name: name, connection: connection)
                            return s.nextClient
                        }
                        log("client \(name) (\(connection.peer)) joined")
                    }
                case .report(let report):
                    guard let id else { continue }
                    // A report means the client has joined the group and is ready: stream.
                    state.withLock { s in
                        s.clients[id]?.received = report.received
                        s.clients[id]?.lastReport = Date()
                        s.clients[id]?.reportedSincePass = true
                        s.scheduler.noteActivity()
                        s.streaming = true
                        s.scheduler.requestRepair(from: report)
                    }
                    wake.lock(); wake.broadcast(); wake.unlock()
                case .done:
                    guard let id else { continue }
                    let name = state.withLock { s -> String in
                        s.clients[id]?.done = true
                        return s.clients[id]?.name ?? "?"
                    }
                    log("client \(name) (\(connection.peer)) finished; \(bytesSent) bytes sent so far")
                default:
                    return  // a client has no business sending anything else
                }
            }
        } catch {
            return
        }
    }

    private func sendLoop(_ sender: DataSender) throws {
        var pacer = Pacer(rate: config.effectiveRate)
        var packet: [UInt8] = []
        var batch: [UInt8] = []
        batch.reserveCapacity(64 * 1024)
        var cachedChunk: (index: Int, bytes: [UInt8])?
        var lastPass: UInt32 = 0
        while !Interruption.requested {
            // Nothing is sent until someone asks; with Loop Suspend, sending stops after that
            // many passes with nobody restoring, until the next request.
            let next: (chunk: Int, pass: UInt32, fragments: [UInt16]?)? = state.withLock { s in
                if s.streaming, config.loopSuspend > 0, s.restoring == 0, s.scheduler.idlePasses >= config.loopSuspend {
                    s.streaming = false
                    log("suspended after \(config.loopSuspend) passes with no client restoring; waiting for a request")
                }
                return s.streaming ? s.scheduler.next() : nil
            }
            guard let next else {
                wake.lock()
                _ = wake.wait(until: Date().addingTimeInterval(0.2))
                wake.unlock()
                pacer.reset()
                continue
            }
            if next.pass != lastPass {
                lastPass = next.pass
                dropStragglers()
            }
            let entry = feed.manifest[next.chunk]
            let stored: [UInt8]
            if let c = cachedChunk, c.index == next.chunk { stored = c.bytes } else {
                stored = try feed.storedBytes(next.chunk)
                cachedChunk = (next.chunk, stored)
            }
            let fragments = entry.fragmentCount
            let toSend = next.fragments.map { $0.map(Int.init).filter { $0 < fragments } } ?? Array(0..<fragments)
            var k = 0
            while k < toSend.count {
                batch.removeAll(keepingCapacity: true)
                var inBatch = 0
                // A GSO batch is equal-size segments: only the chunk's last fragment may be short.
                while k < toSend.count && inBatch < DataSender.maxSegments {
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
                try sender.send(batch, segment: DataPacket.headerSize + DataPacket.maxPayload)
                let sent = batch.count
                state.withLock { $0.bytesSent += UInt64(sent) }
            }
        }
    }
}

extension MulticastServer {
    /// Applies the slow-client rule at a pass boundary. The dropped client is told why; the
    /// others carry on at the same rate.
    func dropStragglers() {
        let dropped: [(ClientRecord, String)] = state.withLock { s in
            var out: [(ClientRecord, String)] = []
            // Clients with every chunk are verifying: they owe us nothing but DONE.
            for (id, var c) in s.clients where !c.done && Int(c.received) < feed.manifest.count {
                if c.reportedSincePass {
                    if c.received > c.receivedAtPass {
                        c.stalledPasses = 0
                        c.lastProgress = Date()
                    } else {
                        c.stalledPasses += 1
                    }
                    c.receivedAtPass = c.received
                    c.reportedSincePass = false
                }
                s.clients[id] = c
                let silent = Date().timeIntervalSince(c.lastReport) > Self.silenceLimit
                let stalled = c.stalledPasses >= Self.stallLimit && Date().timeIntervalSince(c.lastProgress) >= Self.stallTime
                if stalled || silent {
                    let why = silent ? "no report for \(Int(Self.silenceLimit)) s"
                        : "no progress in \(c.stalledPasses) passes and \(Int(Self.stallTime)) s (\(c.received) of \(feed.manifest.count) chunks)"
                    out.append((c, why))
                    s.clients[id] = nil
                }
            }
            return out
        }
        for (client, why) in dropped {
            log("dropped client \(client.name) (\(client.peer)): \(why)")
            try? client.connection.send(.drop(reason: why))
            shutdown(client.connection.fd, Int32(SHUT_RDWR))
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

    init(group: String, port: UInt16, ttl: UInt8, interface: in_addr) throws {
        guard let groupAddress = ipv4(group) else { throw MulticastError("bad multicast address \(group)") }
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw socketError("socket") }
        destination = sockaddrIn(groupAddress, port)
        var t = Int32(ttl)
        setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_TTL, &t, socklen_t(MemoryLayout<Int32>.size))
        var loop: Int32 = 1  // clients on this host (and the loopback demo) hear it too
        setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_LOOP, &loop, socklen_t(MemoryLayout<Int32>.size))
        var iface = interface
        if iface.s_addr != INADDR_ANY {
            setsockopt(fd, Int32(IPPROTO_IP), IP_MULTICAST_IF, &iface, socklen_t(MemoryLayout<in_addr>.size))
        }
        var buffer: Int32 = 4 << 20
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    func send(_ batch: [UInt8], segment: Int) throws {
        if gso && batch.count > segment {
            var seg = Int32(segment)
            if setsockopt(fd, Int32(IPPROTO_UDP), 103 /* UDP_SEGMENT */, &seg, socklen_t(MemoryLayout<Int32>.size)) == 0 {
                defer { seg = 0; setsockopt(fd, Int32(IPPROTO_UDP), 103, &seg, socklen_t(MemoryLayout<Int32>.size)) }
                if sendOne(batch[...]) { return }
            }
            gso = false  // not supported here: fall back for good
        }
        var at = 0
        while at < batch.count {
            let end = min(at + segment, batch.count)
            if !sendOne(batch[at..<end]) { throw socketError("cannot send to the multicast group") }
            at = end
        }
    }

    private func sendOne(_ bytes: ArraySlice<UInt8>) -> Bool {
        while true {
            let n = bytes.withUnsafeBytes { buf in
                withUnsafePointer(to: &destination) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            if n >= 0 { return true }
            if errno == EINTR { continue }
            if errno == ENOBUFS || errno == EAGAIN { usleep(200); continue }
            return false
        }
    }
}
