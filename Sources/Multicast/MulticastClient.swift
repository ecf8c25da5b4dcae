import SystemSupport
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
/// verify it, and tells the server it is done.
public struct MulticastClient {
    public var reporter: Reporter
    /// Give up when no data (or no server) has been heard for this long.
    public var timeout: TimeInterval = 60
    public var interfaceName: String?
    public var verify = true
    public var confirmErase: ((String) throws -> Bool)?
    public var name = ProcessInfo.processInfo.hostName

    public init(reporter: Reporter) { self.reporter = reporter }

    /// "asr://host[:port]" into host and port.
    public static func parse(_ url: String) throws -> (host: String, port: UInt16) {
        guard url.lowercased().hasPrefix("asr://") else { throw MulticastError("\(url) is not an asr:// address") }
        let rest = url.dropFirst(6).split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        guard let host = parts.first, !host.isEmpty, parts.count <= 2 else { throw MulticastError("\(url): no server name") }
        guard parts.count == 2 else { return (String(host), 7800) }
        guard let port = UInt16(parts[1]), port > 0 else { throw MulticastError("\(url): bad port") }
        return (String(host), port)
    }

    /// A host name or address as given; otherwise the name of a session announced through
    /// DNS Service Discovery (`asr list` shows them).
    static func locate(_ url: String, timeout: Double) throws -> (host: String, port: UInt16) {
        let (host, port) = try parse(url)
        var hints = addrinfo()
        hints.ai_family = AF_INET
        var result: UnsafeMutablePointer<addrinfo>?
        if getaddrinfo(host, nil, &hints, &result) == 0 {
            freeaddrinfo(result)
            return (host, port)
        }
        let found = try ServiceBrowser().browse(timeout: min(timeout, 10)) { $0.name == host }
        guard let session = found.first(where: { $0.name == host }) else {
            throw MulticastError("\(host) is neither a host nor an asr session announced on the network (see asr list)")
        }
        return (session.address, session.port)
    }

    public func restore(source url: String, target targetPath: String) throws {
        let (host, port) = try Self.locate(url, timeout: timeout)
        let target = try reporter.step("Validating target") { try RestoreTarget.validate(targetPath, source: nil) }
        var session = try reporter.step("Validating source") { try Session.connect(host: host, port: port, name: name, timeout: timeout) }
        if let confirmErase, try !confirmErase(targetPath) { throw MulticastError("restore cancelled; \(targetPath) was not changed") }
        let manifest = session.manifest
        let diskBytes = session.welcome.diskBytes
        try reporter.step("Validating sizes") { try target.checkFits(diskBytes) }
        let ranges = manifest.map { ExpectedRange(offset: $0.diskOffset, length: $0.length, sha256: $0.sha256) }
        let mismatch: @Sendable (Int) -> Mismatch = {
            Mismatch(firstByte: ranges[$0].offset, lastByte: ranges[$0].offset + ranges[$0].length - 1, reference: .image)
        }
        try target.restore(diskBytes: diskBytes, verifying: verify ? (ranges, mismatch) : nil, reporter: reporter) { file in
            try receive(&session, into: file, target: target)
        }
        try? session.connection.send(.done)
    }

    /// The control connection and what the server said on it.
    struct Session {
        var connection: ControlConnection
        var welcome: ControlMessage.Welcome
        var manifest: [ManifestEntry]
        let host: String
        let port: UInt16
        let name: String

        static func connect(host: String, port: UInt16, name: String, timeout: TimeInterval) throws -> Session {
            let deadline = Date().addingTimeInterval(timeout)
            var lastError: Error = MulticastError("no answer from \(host):\(port)")
            while Date() < deadline && !Interruption.requested {
                do {
                    let connection = try ControlConnection.connect(host: host, port: port, timeout: 5)
                    connection.setReceiveTimeout(min(timeout, 30))
                    try connection.send(.hello(version: ControlMessage.protocolVersion, client: name))
                    guard case .welcome(let welcome)? = try connection.receive() else { throw MulticastError("\(host) did not welcome us") }
                    guard case .manifest(let manifest)? = try connection.receive() else { throw MulticastError("\(host) sent no manifest") }
                    guard welcome.imageSHA256.count == 32, welcome.group.count == 4, welcome.group[0] >= 224, welcome.group[0] <= 239 else {
                        throw MulticastError("\(host) sent a malformed welcome")
                    }
                    try ManifestEntry.check(manifest, diskBytes: welcome.diskBytes)
                    connection.setReceiveTimeout(0.05)
                    return Session(connection: connection, welcome: welcome, manifest: manifest, host: host, port: port, name: name)
                } catch let e as MulticastError where e.message.contains("cannot connect") || e.message.contains("closed") {
                    lastError = e
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
            throw lastError
        }

        /// After the server restarted: the same image carries on under its new session.
        mutating func reconnect(timeout: TimeInterval) throws {
            let again = try Session.connect(host: host, port: port, name: name, timeout: timeout)
            guard again.welcome.imageSHA256 == welcome.imageSHA256, again.manifest == manifest else {
                throw MulticastError("the server at \(host) now serves a different image")
            }
            self = again
        }
    }

    /// What the decode workers hand back to the receive loop.
    private final class Results: @unchecked Sendable {
        let lock = NSLock()
        var written: [Int] = []
        var rejected: [Int] = []
        var failure: Error?
        var bytesWritten: UInt64 = 0

        func record(_ change: (Results) -> Void) {
            lock.lock()
            change(self)
            lock.unlock()
        }
    }

    /// A chunk's decoded bytes, exactly its length, or throws.
    private static func decode(_ stored: [UInt8], _ entry: ManifestEntry) throws -> [UInt8] {
        if entry.codec == ChunkType.raw.rawValue {
            guard stored.count == Int(entry.length) else { throw MulticastError("raw chunk of the wrong size") }
            return stored
        }
        var out = [UInt8](repeating: 0, count: Int(entry.length))
        try stored.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try Codec.decode(ChunkType(rawValue: entry.codec), s, into: $0) } }
        return out
    }

    private func receive(_ session: inout Session, into file: FileIO, target: RestoreTarget) throws {
        let manifest = session.manifest
        var assembler = ChunkAssembler(manifest: manifest)
        // Zero chunks are never sent: make them zeros here.
        var zeroStart: UInt64?
        var zeroEnd: UInt64 = 0
        for e in manifest {
            if e.storedLength == 0 {
                if zeroStart == nil { zeroStart = e.diskOffset }
                zeroEnd = e.diskOffset + e.length
            } else if let start = zeroStart {
                try target.zero(file, offset: start, length: zeroEnd - start)
                zeroStart = nil
            }
        }
        if let start = zeroStart { try target.zero(file, offset: start, length: zeroEnd - start) }

        let socket = try DataReceiver(group: session.welcome.group, port: session.welcome.dataPort, interfaceName: interfaceName)
        let results = Results()
        let workers = DispatchQueue(label: "asr.client.decode", attributes: .concurrent)
        let slots = DispatchSemaphore(value: ProcessInfo.processInfo.activeProcessorCount * 2)
        let group = DispatchGroup()
        var progress = PassProgress(chunks: manifest.count, reporter: reporter)
        var currentPass: UInt32?
        var highestInPass = -1
        var lastData = Date()
        var lastReport = Date.distantPast
        let started = Date()
        defer { progress.finish(assembler) }

        while !assembler.isComplete {
            if Interruption.requested { throw MulticastError("interrupted") }
            results.lock.lock()
            let written = results.written, rejected = results.rejected, failure = results.failure
            results.written.removeAll()
            results.rejected.removeAll()
            results.lock.unlock()
            if let failure { throw failure }
            for c in written { assembler.markWritten(c) }
            for c in rejected { assembler.reject(c) }
            if !written.isEmpty { progress.completed(assembler.completeCount) }
            if assembler.isComplete { break }

            if let packet = socket.receive(), packet.sessionID == session.welcome.sessionID {
                lastData = Date()
                if currentPass.map({ packet.pass > $0 }) ?? true {
                    currentPass = packet.pass
                    highestInPass = -1
                    progress.startPass(packet.pass, assembler)
                }
                if packet.pass == currentPass, Int(packet.chunk) > highestInPass {
                    highestInPass = Int(packet.chunk)
                    progress.reached(highestInPass, assembler)
                }
                if let (index, stored) = assembler.accept(packet) {
                    slots.wait()
                    let entry = manifest[index]
                    workers.async(group: group) {
                        defer { slots.signal() }
                        // A chunk that does not decode or match its SHA-256 is a bad copy
                        // (damage or forgery): forget it and fetch it again.
                        guard let decoded = try? Self.decode(stored, entry), Array(SHA256.hash(data: decoded)) == entry.sha256 else {
                            results.record { $0.rejected.append(index) }
                            return
                        }
                        do {
                            try file.write(decoded, at: entry.diskOffset)
                            results.record { $0.written.append(index); $0.bytesWritten += entry.length }
                        } catch {
                            results.record { $0.failure = error }
                        }
                    }
                }
            }

            let now = Date()
            if now.timeIntervalSince(lastReport) > 0.25 {
                lastReport = now
                let rate = UInt64(Double(results.bytesWritten) / max(0.001, now.timeIntervalSince(started)))
                let missing = assembler.missing(below: highestInPass)
                let partial = assembler.missingFragments(below: highestInPass)
                do {
                    try session.connection.send(.report(.init(received: UInt32(assembler.completeCount), writeRate: rate,
                                                              missing: missing, fragments: partial)))
                    if case .drop(let reason)? = try session.connection.receive() {
                        throw MulticastError("the server dropped this client: \(reason)")
                    }
                } catch let e as MulticastError where e.message.hasPrefix("the server dropped") {
                    throw e
                } catch {
                    // The server went away: reconnect, keeping every chunk we have.
                    progress.note("lost the server; reconnecting")
                    try session.reconnect(timeout: timeout)
                    lastData = Date()
                }
            }
            if now.timeIntervalSince(lastData) > timeout {
                throw MulticastError("no data from the server for \(Int(timeout)) s")
            }
        }
        group.wait()
        if let failure = results.failure { throw failure }
        socket.leave()
        // Everything is in: the server hears so before the (possibly long) verify.
        try? session.connection.send(.report(.init(received: UInt32(assembler.completeCount), writeRate: 0, missing: [])))
    }
}

/// The multicast data socket of a client: joined to the group, short receive timeouts so the
/// loop can report and notice silence.
final class DataReceiver {
    private let fd: Int32
    private var membership = ip_mreq()
    private var buffer = [UInt8](repeating: 0, count: 2048)  // a packet is at most 1432 bytes; small, since each decoded packet copies it
    private var joined = false

    init(group: [UInt8], port: UInt16, interfaceName: String?) throws {
        let groupAddress = in_addr(s_addr: group.withUnsafeBytes { $0.load(as: UInt32.self) })
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw socketError("socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, socklen_t(MemoryLayout<Int32>.size))
        var size: Int32 = 16 << 20
        if setsockopt(fd, SOL_SOCKET, 33 /* SO_RCVBUFFORCE */, &size, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var addr = sockaddrIn(groupAddress, port)  // bound to the group: only its traffic arrives
        let bound = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0 else {
            let e = socketError("cannot bind the multicast port \(port)")
            close(fd)
            throw e
        }
        membership.imr_multiaddr = groupAddress
        membership.imr_interface = try interfaceName.map(interfaceAddress) ?? in_addr(s_addr: INADDR_ANY)
        guard setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &membership, socklen_t(MemoryLayout<ip_mreq>.size)) == 0 else {
            let e = socketError("cannot join the multicast group")
            close(fd)
            throw e
        }
        joined = true
        var tv = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        leave()
        close(fd)
    }

    /// The next well-formed packet, or nil after a short wait.
    func receive() -> DataPacket? {
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return nil }
        return DataPacket.decode(buffer[0..<n])
    }

    /// Leaves the group: the stream stops reaching this host's interface for us.
    func leave() {
        guard joined else { return }
        joined = false
        setsockopt(fd, Int32(IPPROTO_IP), IP_DROP_MEMBERSHIP, &membership, socklen_t(MemoryLayout<ip_mreq>.size))
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

    private func emit(_ s: String) { FileHandle.standardOutput.write(Data(s.utf8)) }
}
