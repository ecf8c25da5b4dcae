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
