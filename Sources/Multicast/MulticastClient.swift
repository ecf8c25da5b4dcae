import SystemSupport
import SystemPackage
import Crypto
import Foundation
import Glibc
import Imaging
import Synchronization
import UDIF

/// `asr restore --source asr://HOST[:PORT]`: joins a server's multicast stream and writes the
/// image onto a target. Chunks arrive in any order, each decoded and checked against the
/// manifest's SHA-256 before it is written; what is missing is reported to the server, which
/// resends it. When every chunk is in, the client leaves the group, reads the target back to
/// verify it (telling the server how far it got), and tells the server how it ended.
public struct MulticastClient {
    public var reporter: Reporter
    /// Give up when no data (or no server) has been heard for this long.
    public var timeout: TimeInterval = 60
    public var interfaceName: String?
    public var verify = true
    /// Zero the image's free space (ignore chunks) on the target and verify it; otherwise the
    /// target keeps what it held there.
    public var eraseFree = false
    public var confirmErase: ((String) throws -> Bool)?
    public var name = ProcessInfo.processInfo.hostName
    /// Keys one of which must have signed the image the server offers (checked before the
    /// target is touched); none: any image is taken.
    public var trusted = TrustedKeys()
    /// The only image to accept, by identity (`--image-sha256`, or `?sha256=` in the URL).
    public var pin: IdentityPin?
    /// Read the target first and report the chunks it already holds as received: the server
    /// sends only what some client lacks.
    public var incremental = false

    public init(reporter: Reporter) { self.reporter = reporter }

    /// "asr://host[:port][/][?sha256=HEX]" into host and port.
    package static func parse(_ url: String) throws(MulticastError) -> (host: String, port: UInt16) {
        guard url.lowercased().hasPrefix("asr://") else { throw .notAnASRAddress(url) }
        let address = url.dropFirst(6).prefix { $0 != "?" }
        let rest = address.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        guard let host = parts.first, !host.isEmpty, parts.count <= 2 else { throw .noServerName(url: url) }
        guard parts.count == 2 else { return (String(host), 7800) }
        guard let port = UInt16(parts[1]), port > 0 else { throw .badPort(url: url) }
        return (String(host), port)
    }

    /// The identity `?sha256=HEX` in an asr:// URL pins, if any.
    package static func pin(in url: String) throws -> IdentityPin? {
        guard let q = url.firstIndex(of: "?") else { return nil }
        for pair in url[url.index(after: q)...].split(separator: "&") where pair.hasPrefix("sha256=") {
            return try IdentityPin(hex: String(pair.dropFirst(7)))
        }
        return nil
    }

    /// Where to connect: a host name or address as given, or the servers of a session announced
    /// through DNS Service Discovery (`asr list` shows them), each with the identity its
    /// announcement names (nil for a host).
    /// Servers announcing the same name (a rogue one may announce first and push the real one
    /// to "NAME #2") are told apart by `pin`, which must equal the announced identity in all 64
    /// digits: a missing, empty or short one never matches. Without a pin, several are an error,
    /// not a guess. With one, every announcement naming it is a candidate: anyone can copy an
    /// identity into a TXT record, but only a server of that image passes the WELCOME checks.
    static func locate(_ url: String, timeout: Double, pin: IdentityPin?) throws -> [(host: String, port: UInt16, announced: String?)] {
        let (host, port) = try parse(url)
        var hints = addrinfo()
        hints.ai_family = AF_INET
        var result: UnsafeMutablePointer<addrinfo>?
        if getaddrinfo(host, nil, &hints, &result) == 0 {
            freeaddrinfo(result)
            return [(host, port, nil)]
        }
        func sameName(_ s: ServiceDiscovery.Session) -> Bool {
            s.name == host || (s.name.hasPrefix(host + " #") && s.name.dropFirst(host.count + 2).allSatisfy(\.isNumber))
        }
        func pinned(_ s: ServiceDiscovery.Session) -> Bool { pin.map { s.identity?.lowercased() == $0.hex } ?? true }
        // Browse a second past the first answer, so a second server of that name is seen too.
        var firstAnswer: Date?
        let found = try ServiceBrowser().browse(timeout: min(timeout, 10)) { s in
            guard sameName(s), pinned(s) else { return false }
            firstAnswer = firstAnswer ?? Date()
            return Date().timeIntervalSince(firstAnswer!) > 1
        }.filter { sameName($0) && pinned($0) }
        guard !found.isEmpty else { throw MulticastError.unknownSession(host) }
        guard found.count == 1 || pin != nil else {
            throw MulticastError.severalSessions(name: host, identities: found.map { String(($0.identity ?? "?").prefix(16)) })
        }
        return found.map { ($0.address, $0.port, $0.identity) }
    }

    /// The first candidate whose server sends the image its announcement names (all of the
    /// identity) and the pin names; the last failure when none does. With several, each gets
    /// at most 5 s, so one that copied the identity and points nowhere only delays.
    private func connect(_ candidates: [(host: String, port: UInt16, announced: String?)], pin: IdentityPin?, url: String) throws -> Session {
        var failure: any Error = MulticastError.unknownSession(url)
        for c in candidates {
            do {
                let session = try Session.connect(host: c.host, port: c.port, name: name, timeout: candidates.count > 1 ? min(timeout, 5) : timeout)
                if let announced = c.announced, hex(session.welcome.identity) != announced.lowercased() {
                    throw MulticastError.notTheAnnouncedImage(host: c.host)
                }
                try pin?.check(identity: session.welcome.identity, source: url)
                return session
            } catch {
                failure = error
            }
        }
        throw failure
    }

    /// With `incremental`, returns what the target held and what came from the server.
    @discardableResult
    public func restore(source url: String, target targetPath: String) throws -> TargetComparison? {
        let pin = try Self.pin(in: url) ?? self.pin
        let candidates = try Self.locate(url, timeout: timeout, pin: pin)
        var target = try reporter.step("Validating target") { try RestoreTarget.validate(targetPath, source: nil) }
        var session = try reporter.step("Validating source") { try connect(candidates, pin: pin, url: url) }
        if let confirmErase, try !confirmErase(targetPath) { throw ImagingError.cancelled(target: targetPath) }
        let identity = session.welcome.identity
        try trusted.check(identity: identity, signature: session.signature, source: url)
        let manifest = session.manifest
        let diskBytes = session.welcome.diskBytes
        try reporter.step("Validating sizes") { try target.checkFits(diskBytes) }
        let eraseFree = self.eraseFree
        // An incremental restore never empties the target: what it holds is what it reuses.
        target.keepsContents = incremental || (!eraseFree && manifest.contains { $0.isFree })
        // A chunk that does not travel is zeros (its digest was checked to be theirs): this
        // client writes it so.
        let ranges = session.table.records.map { ExpectedRange(record: $0, eraseFree: eraseFree) }
        let mismatch: @Sendable (Int) -> Mismatch = {
            Mismatch(firstByte: ranges[$0].offset, lastByte: ranges[$0].offset + ranges[$0].length - 1, reference: .image)
        }
        var comparison: TargetComparison?
        if incremental {
            // Reading a large disk takes longer than the server waits for a silent client: say
            // every second that we are still at it.
            let surveying = Heartbeat(connection: session.connection, interval: 1) {
                .report(.init(received: 0, writeRate: 0, missing: [], surveying: true))
            }
            let surveyed = Result { try TargetSurvey(reporter: reporter).held(in: targetPath, ranges: ranges) }
            surveying.stop()
            let held = try surveyed.get()
            comparison = TargetComparison(source: url, target: targetPath, unit: "chunk", diskBytes: diskBytes, ranges: ranges, held: held) {
                UInt64(manifest[$0].storedLength)
            }
            reporter.info(comparison!.restorePlan)
            session.held = held
        }
        // The read-back's progress, for the reports sent while it runs.
        let readBack = Locked<(done: UInt64, total: UInt64)>((0, 0))
        let outer = reporter.observer
        let watched = Reporter(reporter.style) { key, done, total in
            if key == "verify" { readBack.withLock { $0 = (done, total) } }
            outer?(key, done, total)
        }
        var heartbeat: Heartbeat?
        do {
            try target.restore(diskBytes: diskBytes, verifying: verify ? (ranges, mismatch) : nil, reporter: watched) { file, verifier in
                let packets = try receive(&session, into: file, target: target, verifier: verifier)
                // The flush and read-back may take long: the server hears how they go.
                let count = UInt32(manifest.count)
                heartbeat = Heartbeat(connection: session.connection, interval: Self.verifyReportInterval) {
                    let (done, total) = readBack.withLock { $0 }
                    return .report(.init(received: count, writeRate: 0, missing: [], packets: packets, verifying: true,
                                         verified: done, verifyTotal: total))
                }
            }
        } catch {
            heartbeat?.stop()
            try? session.connection.send(.done(failure: String(describing: error)))
            throw error
        }
        heartbeat?.stop()
        try? session.connection.send(.done(failure: nil))
        return comparison
    }

    /// How often a verifying client tells the server how far its read-back got.
    static let verifyReportInterval: TimeInterval = 0.5

    /// The control connection and what the server said on it.
    struct Session {
        var connection: ControlConnection
        var welcome: ControlMessage.Welcome
        var manifest: [ManifestEntry]
        /// The manifest as a chunk table: its identity is WELCOME's, and every chunk is checked
        /// against it before it is written.
        var table: ChunkTable
        var signature: ImageSignature?
        /// Chunks the target held before anything was written (an incremental restore).
        var held: [Bool]?
        let host: String
        let port: UInt16
        let name: String

        /// Connects, asking again while the server is not there, until `timeout`.
        static func connect(host: String, port: UInt16, name: String, timeout: TimeInterval) throws(MulticastError) -> Session {
            let deadline = Date().addingTimeInterval(timeout)
            var lastError = MulticastError.noAnswer(host: host, port: port)
            while Date() < deadline && !Interruption.requested {
                do {
                    return try handshake(host: host, port: port, name: name, timeout: timeout)
                } catch where error.serverAway {
                    lastError = error
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
            throw lastError
        }

        /// HELLO, then the server's WELCOME and manifest, both checked.
        private static func handshake(host: String, port: UInt16, name: String, timeout: TimeInterval) throws(MulticastError) -> Session {
            let connection = try ControlConnection.connect(host: host, port: port, timeout: 5)
            connection.setReceiveTimeout(min(timeout, 30))
            try connection.send(.hello(version: ControlMessage.protocolVersion, client: name))
            guard case .welcome(let welcome)? = try connection.receive() else { throw .notWelcomed(host: host) }
            guard case .manifest(let manifest)? = try connection.receive() else { throw .noManifest(host: host) }
            guard case .signature(let signed)? = try connection.receive() else { throw .noManifest(host: host) }
            guard welcome.identity.count == 32, welcome.group.count == 4, welcome.group[0] >= 224, welcome.group[0] <= 239 else {
                throw .malformedWelcome(host: host)
            }
            let table = try ManifestEntry.table(of: manifest, diskBytes: welcome.diskBytes)
            guard table.identity == welcome.identity else { throw .manifestNotOfIdentity(host: host) }
            connection.setReceiveTimeout(0.05)
            let signature = signed.isEmpty ? nil : try? ImageSignature(parsing: signed)
            return Session(connection: connection, welcome: welcome, manifest: manifest, table: table, signature: signature,
                           host: host, port: port, name: name)
        }

        /// After the server restarted: the same image carries on under its new session.
        mutating func reconnect(timeout: TimeInterval) throws(MulticastError) {
            let again = try Session.connect(host: host, port: port, name: name, timeout: timeout)
            guard again.welcome.identity == welcome.identity, again.manifest == manifest else {
                throw .differentImage(host: host)
            }
            let held = self.held
            self = again
            self.held = held
        }
    }

    /// Receives every chunk with data and writes it; zero chunks (and free space, with
    /// `eraseFree`) are written as zeros first. Returns the data packets of the session taken.
    private func receive(_ session: inout Session, into file: FileIO, target: RestoreTarget, verifier: TrailingVerifier?) throws -> UInt64 {
        let held = session.held ?? [Bool](repeating: false, count: session.manifest.count)
        try Self.writeZeroChunks(session.manifest, held: held, into: file, target: target, eraseFree: eraseFree)
        var assembler = ChunkAssembler(manifest: session.manifest)
        for (i, e) in session.manifest.enumerated() where e.storedLength == 0 || held[i] {
            if held[i] { assembler.markWritten(i) }
            try verifier?.written(i)
        }
        let socket = try DataReceiver(group: session.welcome.group, source: session.welcome.dataSource, port: session.welcome.dataPort,
                                      interfaceName: interfaceName,
                                      rate: session.welcome.dataRate)
        let writers = ChunkWriters(file: file, table: session.table, workers: ProcessInfo.processInfo.activeProcessorCount, verifier: verifier)
        defer { writers.stop() }
        var progress = PassProgress(chunks: session.manifest.count, reporter: reporter)
        defer { progress.finish(assembler) }
        var position = StreamPosition()
        var lastData = Date()
        var lastReport = Date.distantPast
        let started = Date()
        let manifest = session.manifest
        var packets: UInt64 = 0

        while !assembler.isComplete {
            if Interruption.requested { throw MulticastError.interrupted }
            if try writers.collect(into: &assembler) { progress.completed(assembler.completeCount) }
            if assembler.isComplete { break }
            var heard = false
            if assembler.received.contains(false) {
                try socket.join()
                let sessionID = session.welcome.sessionID
                socket.receive { header, payload in
                    guard header.sessionID == sessionID else { return }
                    heard = true
                    packets += 1
                    position.follow(DataPacket(header), progress: &progress, assembler)
                    if let (index, stored) = assembler.accept(header, payload: payload) { writers.submit(index, stored, manifest[index]) }
                }
                if heard { lastData = Date() }
            } else {
                // Every chunk is in and only being written: the stream's later passes would
                // cost copies for nothing. A rejected chunk joins us again.
                socket.leave()
                writers.waitForOutcome(seconds: 0.05)
                lastData = Date()
            }
            let now = Date()
            if now.timeIntervalSince(lastReport) > 0.25 {
                lastReport = now
                let rate = UInt64(Double(writers.bytesWritten) / max(0.001, now.timeIntervalSince(started)))
                let quiet = !heard && now.timeIntervalSince(lastData) > Self.quietAfter
                if try report(&session, &assembler, at: position, quiet: quiet, writeRate: rate, packets: packets, progress: &progress) {
                    lastData = Date()
                }
            }
            if now.timeIntervalSince(lastData) > timeout { throw MulticastError.noData(seconds: Int(timeout)) }
        }
        try writers.finish()
        socket.leave()
        // Everything is in: the server hears so before the (possibly long) verify.
        try? session.connection.send(.report(.init(received: UInt32(assembler.completeCount), writeRate: 0, missing: [], packets: packets,
                                                   verifying: true)))
        return packets
    }

    /// Zero chunks are never sent: each run of them becomes zeros on the target here, unless
    /// the target held them already. Free space is never sent either, and is left as it is
    /// unless `eraseFree`.
    private static func writeZeroChunks(_ manifest: [ManifestEntry], held: [Bool], into file: FileIO, target: RestoreTarget,
                                        eraseFree: Bool) throws {
        var run: Range<UInt64>?
        for (i, e) in manifest.enumerated() {
            if e.storedLength == 0 && (eraseFree || !e.isFree) && !held[i] {
                run = (run?.lowerBound ?? e.diskOffset)..<(e.diskOffset + e.length)
            } else if let r = run {
                try target.zero(file, offset: r.lowerBound, length: UInt64(r.count))
                run = nil
            }
        }
        if let r = run { try target.zero(file, offset: r.lowerBound, length: UInt64(r.count)) }
    }

    /// No data of ours for this long, and the socket just had none (a long write does not
    /// count): nothing is on its way to us, and the server may take what we lack as lost.
    static let quietAfter: TimeInterval = 0.1

    /// Tells the server everything we lack, from where the stream is, asks for the fragment
    /// digests of chunks that failed their SHA-256, and hears what it says: a DROP, or digests.
    /// A server that went away is reconnected to, keeping every chunk we have; returns true then.
    private func report(_ session: inout Session, _ assembler: inout ChunkAssembler, at position: StreamPosition, quiet: Bool,
                        writeRate: UInt64, packets: UInt64, progress: inout PassProgress) throws -> Bool {
        let (missing, fragments) = assembler.need(from: position.highest + 1)
        let report = ControlMessage.Report(received: UInt32(assembler.completeCount), writeRate: writeRate, missing: missing,
                                           fragments: fragments, position: position.reported, quiet: quiet, packets: packets)
        var dropped: String?
        do {
            try session.connection.send(.report(report))
            for chunk in assembler.takeSuspects() { try session.connection.send(.fragmentDigestsWanted(chunk: UInt32(chunk))) }
            while dropped == nil, let reply = try session.connection.receive() {
                if case .drop(let reason) = reply { dropped = reason }
                if case .fragmentDigests(let chunk, let digests) = reply { assembler.trust(Int(chunk), fragmentDigests: digests) }
            }
        } catch {
            progress.note("lost the server; reconnecting")
            try session.reconnect(timeout: timeout)
            return true
        }
        if let dropped { throw MulticastError.droppedByServer(reason: dropped) }
        return false
    }
}

/// Sends a message every `interval` from a thread of its own until stopped: the server hears
/// how a client's read-back goes while the restoring thread verifies. A failed send ends it.
final class Heartbeat: Sendable {
    private let stopped = Monitor(false)
    private let ended = Monitor(false)

    init(connection: ControlConnection, interval: TimeInterval, message: @escaping @Sendable () -> ControlMessage) {
        Thread { [stopped, ended] in
            defer { ended.update { $0 = true } }
            while true {
                do { try connection.send(message()) } catch { return }
                let stop = stopped.wait(until: { $0 }, deadline: Date().addingTimeInterval(interval)) { stop, _ in stop }
                if stop { return }
            }
        }.start()
    }

    /// Returns once the last message is sent: nothing follows what the caller sends next.
    func stop() {
        stopped.update { $0 = true }
        ended.wait(until: { $0 }) { _ in }
    }
}

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

/// Decodes, checks and writes assembled chunks on a thread per core, in any order, each at
/// its offset. `submit` never waits, so the receiving thread never stalls on a decode: the
/// queue is bounded by the assembler's memory budget, which counts every chunk handed on
/// until `collect` reports it written or rejected.
package final class ChunkWriters: Sendable {
    private struct Job {
        let index: Int
        let stored: ChunkBuffer
        let entry: ManifestEntry
    }

    private struct Queue {
        var jobs: [Job] = []
        var head = 0
        var stopped = false

        mutating func take() -> Job? {
            guard head < jobs.count, !stopped else { return nil }
            defer {
                head += 1
                if head == jobs.count { jobs.removeAll(keepingCapacity: true); head = 0 }
            }
            return jobs[head]
        }
    }

    private struct Outcome {
        var written: [Int] = []
        var rejected: [Int] = []
        var failure: (any Error)?
        var bytesWritten: UInt64 = 0
    }

    private let queue = Monitor(Queue())
    private let outcome = Monitor(Outcome())
    private let file: FileIO
    private let table: ChunkTable
    /// Reads each written chunk back while the rest arrive.
    private let verifier: TrailingVerifier?
    private let group = DispatchGroup()

    package init(file: FileIO, table: ChunkTable, workers: Int, verifier: TrailingVerifier? = nil) {
        self.file = file
        self.table = table
        self.verifier = verifier
        // Threads of their own, not a global queue's: those run only about as many blocks at
        // once as there are cores, and other work in the process may hold them all.
        for _ in 0..<max(1, workers) {
            group.enter()
            Thread { [self] in
                work()
                group.leave()
            }.start()
        }
    }

    package var bytesWritten: UInt64 { outcome.read { $0.bytesWritten } }

    /// Queues a chunk's stored bytes for a worker.
    package func submit(_ index: Int, _ stored: ChunkBuffer, _ entry: ManifestEntry) {
        queue.update { $0.jobs.append(Job(index: index, stored: stored, entry: entry)) }
    }

    /// Marks what the workers finished since the last call; true if a chunk was written.
    /// Throws the first write failure.
    package func collect(into assembler: inout ChunkAssembler) throws -> Bool {
        let (written, rejected, failure) = outcome.update { o in
            defer {
                o.written.removeAll(keepingCapacity: true)
                o.rejected.removeAll(keepingCapacity: true)
            }
            return (o.written, o.rejected, o.failure)
        }
        if let failure { throw failure }
        for c in written { assembler.markWritten(c) }
        for c in rejected { assembler.reject(c) }
        return !written.isEmpty
    }

    /// Waits until a worker finished a chunk not yet collected, or `seconds` pass.
    package func waitForOutcome(seconds: TimeInterval) {
        outcome.wait(until: { !$0.written.isEmpty || !$0.rejected.isEmpty || $0.failure != nil },
                     deadline: Date().addingTimeInterval(seconds)) { _, _ in }
    }

    /// Waits for the queue to empty and the workers to end; throws the first write failure.
    package func finish() throws {
        queue.wait(until: { $0.head == $0.jobs.count }) { $0.stopped = true }
        group.wait()
        if let failure = outcome.read({ $0.failure }) { throw failure }
    }

    /// Ends the workers, dropping what is queued: nothing is written after this returns.
    package func stop() {
        queue.update { $0.stopped = true }
        group.wait()
    }

    private func work() {
        // One output buffer per worker, reused: a fresh one would fault in its pages per chunk.
        var output = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        defer { output.deallocate() }
        while let job = queue.wait(until: { $0.stopped || $0.head < $0.jobs.count }, then: { $0.take() }) {
            let length = Int(job.entry.length)
            if job.entry.codec != ChunkType.raw.rawValue && output.count < length {
                output.deallocate()
                output = .allocate(byteCount: length, alignment: 4096)
            }
            // A chunk that does not decode or match its SHA-256 is a bad copy (damage or
            // forgery): forget it and fetch it again.
            guard let decoded = Self.decode(job.stored.bytes, job.entry, into: output), table.matches(job.index, decoded) else {
                outcome.update { $0.rejected.append(job.index) }
                continue
            }
            do {
                try file.write(decoded, at: job.entry.diskOffset)
                try verifier?.written(job.index)
                outcome.update {
                    $0.written.append(job.index)
                    $0.bytesWritten += job.entry.length
                }
            } catch {
                outcome.update { $0.failure = $0.failure ?? error }
            }
        }
    }

    /// A chunk's decoded bytes, exactly its length (in `output` unless raw), or nil.
    private static func decode(_ stored: UnsafeRawBufferPointer, _ entry: ManifestEntry,
                               into output: UnsafeMutableRawBufferPointer) -> UnsafeRawBufferPointer? {
        let length = Int(entry.length)
        if entry.codec == ChunkType.raw.rawValue { return stored.count == length ? stored : nil }
        let out = UnsafeMutableRawBufferPointer(rebasing: output[0..<length])
        guard (try? Codec.decode(ChunkType(rawValue: entry.codec), stored, into: out)) != nil else { return nil }
        return UnsafeRawBufferPointer(out)
    }
}

/// The multicast data socket of a client: joined to the group for the server's source address
/// only (source-specific: the kernel drops what other hosts send to the group), short receive
/// timeouts so the loop can report and notice silence. Datagrams arrive in batches
/// (`recvmmsg`, UDP GRO) into a fixed ring and are parsed where they lie.
final class DataReceiver {
    private let fd: Int32
    private var membership = ip_mreq_source()
    private let ring = DatagramRing()
    private var joined = false
    private let group: [UInt8]
    /// A server that could not name its source (zeros): any source is heard.
    private let anySource: Bool

    /// `rate`: the stream's bytes/s, to size the socket's buffer.
    init(group: [UInt8], source: [UInt8], port: UInt16, interfaceName: String?, rate: UInt64) throws(MulticastError) {
        let groupAddress = in_addr(s_addr: group.withUnsafeBytes { $0.load(as: UInt32.self) })
        let interface = try interfaceName.map(interfaceAddress) ?? in_addr(s_addr: INADDR_ANY)
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw .socket(.create, lastErrno()) }
        setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1)
        // A second of data (the kernel doubles it for its overhead), so a moment when this
        // process is not scheduled loses nothing. Past the rmem_max limit where we may (root).
        let size = Int32(clamping: max(16 << 20, min(rate, 1 << 30)))
        if !setOption(fd, SOL_SOCKET, Kernel.receiveBufferForce, size) { setOption(fd, SOL_SOCKET, SO_RCVBUF, size) }
        // The server's GSO runs arrive whole where the kernel can keep them so; if it cannot,
        // datagrams arrive one by one, as before.
        setOption(fd, Int32(IPPROTO_UDP), Kernel.udpGRO, 1)
        do throws(Errno) {
            try bind(fd, groupAddress, port)  // bound to the group: only its traffic arrives
        } catch {
            close(fd)
            throw .socket(.bind(port: port), error)
        }
        membership.imr_multiaddr = groupAddress
        membership.imr_interface = interface
        membership.imr_sourceaddr = in_addr(s_addr: source.count == 4 ? source.withUnsafeBytes { $0.load(as: UInt32.self) } : 0)
        anySource = membership.imr_sourceaddr.s_addr == 0
        self.group = group
        do throws(MulticastError) {
            try join()
        } catch {
            close(fd)
            throw error
        }
        setTimeout(fd, SO_RCVTIMEO, 0.05)
    }

    /// Joins the group, unless joined.
    func join() throws(MulticastError) {
        guard !joined else { return }
        var any = ip_mreq(imr_multiaddr: membership.imr_multiaddr, imr_interface: membership.imr_interface)
        let result = anySource
            ? setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &any, socklen_t(MemoryLayout<ip_mreq>.size))
            : setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_SOURCE_MEMBERSHIP, &membership, socklen_t(MemoryLayout<ip_mreq_source>.size))
        guard result == 0 else {
            throw .socket(.join(group: group.map(String.init).joined(separator: ".")), lastErrno())
        }
        joined = true
    }

    deinit {
        leave()
        close(fd)
    }

    /// Hands `body` every well-formed packet queued, header parsed and payload in place (valid
    /// only during the call), after a short wait for the first.
    func receive(_ body: (DataPacketHeader, UnsafeRawBufferPointer) -> Void) {
        _ = try? ring.receive(from: fd) { datagram in
            guard let header = DataPacketHeader(datagram) else { return }
            body(header, UnsafeRawBufferPointer(rebasing: datagram[DataPacket.headerSize...]))
        }
    }

    /// Leaves the group: the stream stops reaching this host's interface for us.
    func leave() {
        guard joined else { return }
        joined = false
        var any = ip_mreq(imr_multiaddr: membership.imr_multiaddr, imr_interface: membership.imr_interface)
        _ = anySource
            ? setsockopt(fd, Int32(IPPROTO_IP), IP_DROP_MEMBERSHIP, &any, socklen_t(MemoryLayout<ip_mreq>.size))
            : setsockopt(fd, Int32(IPPROTO_IP), IP_DROP_SOURCE_MEMBERSHIP, &membership, socklen_t(MemoryLayout<ip_mreq_source>.size))
    }
}

/// One line per pass: `\tPass 2  ....x.....`, a mark per 2% of the chunks as the pass goes
/// by it: `.` when every chunk of that section is in, `x` when some were missed. With
/// --puppetstrings: PPRG lines of the share of chunks written.
struct PassProgress {
    let chunks: Int
    let reporter: Reporter
    let sections = 50
    private var marks = 0
    private var open = false

    init(chunks: Int, reporter: Reporter) {
        self.chunks = chunks
        self.reporter = reporter
        if case .puppet = reporter.style { reporter.begin("", key: "receive") }
    }

    private var human: Bool { if case .human = reporter.style { true } else { false } }

    /// Last chunk index of a section.
    private func end(of section: Int) -> Int { max((section + 1) * chunks / sections, section * chunks / sections + 1) - 1 }

    mutating func startPass(_ pass: UInt32, _ assembler: ChunkAssembler) {
        closeLine(assembler)
        // Everything is in and only being written: no pass left to show.
        guard human, assembler.received.contains(false) else { return }
        emit("\tPass \(pass + 1)  ")
        open = true
        marks = 0
    }

    /// The pass has gone past chunk `index`: mark every section it finished.
    mutating func reached(_ index: Int, _ assembler: ChunkAssembler) {
        guard human, open else { return }
        while marks < sections && end(of: marks) < index { mark(assembler) }
    }

    mutating func completed(_ count: Int) {
        if case .puppet = reporter.style { reporter.update(UInt64(count), of: UInt64(chunks)) }
    }

    mutating func note(_ text: String) {
        if open { emit("\n"); open = false }
        reporter.info(text)
    }

    mutating func finish(_ assembler: ChunkAssembler) {
        closeLine(assembler)
        if case .puppet = reporter.style { reporter.end() }
    }

    private mutating func closeLine(_ assembler: ChunkAssembler) {
        guard open else { return }
        while marks < sections { mark(assembler) }
        emit("\n")
        open = false
    }

    private mutating func mark(_ assembler: ChunkAssembler) {
        let lo = marks * chunks / sections
        let hi = min(end(of: marks), chunks - 1)
        emit(lo > hi || (lo...hi).allSatisfy { assembler.received[$0] } ? "." : "x")
        marks += 1
    }

    private func emit(_ s: String) { reporter.write(s) }
}
