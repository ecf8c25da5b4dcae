import Crypto
import Foundation
@testable import Multicast
import NIOCore
import NIOEmbedded
import NIOHTTP1
@testable import StatusServer
import SystemSupport
import Testing

/// A session to serve, changed by the test.
final class FakeSource: StatusSource {
    let status: Locked<SessionStatus>
    init(_ status: SessionStatus) { self.status = Locked(status) }
    func snapshot() -> SessionStatus { status.withLock { $0 } }
    var bytesSent: UInt64 { status.withLock { $0.stream.bytesSent } }
}

enum Sample {
    static func client(_ id: Int, _ name: String, state: String = "restoring", progress: Double = 0.5, repairs: Int = 0) -> SessionStatus.Client {
        .init(id: id, name: name, address: "10.0.0.\(id)", joinedAt: 1_700_000_000, state: state, reason: state == "dropped" ? "too slow" : nil,
              chunks: Int(progress * 10), chunkCount: 10, progress: progress, verifyProgress: state == "verifying" ? 0.25 : nil,
              repairsAsked: repairs, loss: 0.05, writeRate: 40_000_000, packetsReceived: 1000, eta: state == "restoring" ? 12 : nil,
              lastReportAt: 1_700_000_010, endedAt: nil)
    }

    static func status(bytes: UInt64 = 1000, clients: [SessionStatus.Client] = [client(1, "lab-1")]) -> SessionStatus {
        SessionStatus(
            server: .init(startedAt: 1_700_000_000, now: 1_700_000_020, protocolVersion: 8, sessionID: "abc"),
            image: .init(name: "lab.dmg", path: "/srv/lab.dmg", format: "UDZO", diskBytes: 1 << 30, storedBytes: 1 << 29, freeBytes: 0,
                         chunks: 1024, identity: String(repeating: "ab", count: 32), signed: true, signer: String(repeating: "cd", count: 32)),
            stream: .init(state: "sending", group: "239.1.2.3", port: 7800, ttl: 3, dataRate: 6_000_000, clientDataRate: nil,
                          effectiveRate: 6_000_000, bytesSent: bytes, packetsSent: bytes / 1432, chunksSent: 10, repairsSent: 2,
                          fragmentRepairsSent: 7, passes: 1),
            clients: clients,
            counts: Dictionary(uniqueKeysWithValues: ["joining", "restoring", "verifying", "done", "failed", "dropped", "left"].map { state in
                (state, clients.count { $0.state == state })
            }))
    }
}

@Suite struct StatusRoutesTests {
    let routes = StatusRoutes(content: StatusContent(source: FakeSource(Sample.status())))

    @Test func servesThePageTheJSONAndTheMetrics() throws {
        let page = routes.response(method: .GET, uri: "/")
        #expect(page.status == .ok && page.contentType.hasPrefix("text/html"))
        #expect(page.headers.contains { $0.0 == "Content-Security-Policy" })
        let json = routes.response(method: .GET, uri: "/status.json?t=17")
        #expect(json.status == .ok && json.contentType == "application/json", "a query changes nothing")
        let decoded = try JSONDecoder().decode(SessionStatus.self, from: Data(json.body))
        #expect(decoded.clients.map(\.name) == ["lab-1"] && decoded.image.name == "lab.dmg")
        let metrics = routes.response(method: .HEAD, uri: "/metrics")
        #expect(metrics.status == .ok && metrics.contentType.hasPrefix("text/plain; version=0.0.4"))
    }

    @Test func refusesOtherMethodsAndPaths() {
        for method in [HTTPMethod.POST, .PUT, .DELETE, .OPTIONS, .PATCH, .TRACE, .CONNECT] {
            let r = routes.response(method: method, uri: "/status.json")
            #expect(r.status == .methodNotAllowed, "\(method)")
            #expect(r.headers.contains { $0 == ("Allow", "GET, HEAD") })
        }
        for path in ["/nowhere", "/status", "/metrics/x", "//status.json", "/../etc/passwd"] {
            #expect(routes.response(method: .GET, uri: path).status == .notFound, "\(path)")
        }
    }
}

/// The handler in NIO's pipeline, on an `EmbeddedChannel`: bytes in, bytes out, no socket.
@Suite struct StatusHTTPHandlerTests {
    func channel() throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try StatusServer.configure(channel.pipeline.syncOperations, routes: StatusRoutes(content: StatusContent(source: FakeSource(Sample.status()))))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 8080)).wait()  // active, as an accepted connection is
        return channel
    }

    /// Everything the server wrote, as text.
    func output(_ channel: EmbeddedChannel) throws -> String {
        var text = ""
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
        return text
    }

    func send(_ channel: EmbeddedChannel, _ text: String) -> (any Error)? {
        do { try channel.writeInbound(ByteBuffer(string: text)) } catch { return error }
        return nil
    }

    @Test func answersPipelinedRequestsInTurn() throws {
        let c = try channel()
        #expect(send(c, "GET /status.json HTTP/1.1\r\nHost: x\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n") == nil)
        let text = try output(c)
        let statuses = text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { "HTTP/1.1 " + $0.prefix(while: { !$0.isNewline }) }
        #expect(statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"], "\(text)")
        #expect(c.isActive, "keep-alive")
    }

    /// A socket whose peer does not read: writes (and their promises) stay here until
    /// `release`, and reads asked of the socket are counted.
    final class HeldWrites: ChannelOutboundHandler {
        typealias OutboundIn = IOData
        var held: [(NIOAny, EventLoopPromise<Void>?)] = []
        var reads = 0
        var context: ChannelHandlerContext?

        func handlerAdded(context: ChannelHandlerContext) { self.context = context }
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) { held.append((data, promise)) }
        func flush(context: ChannelHandlerContext) {}
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }

        /// The peer reads everything written so far.
        func release() {
            let out = held
            held = []
            for (data, promise) in out { context?.write(data, promise: promise) }
            context?.flush()
        }
    }

    func statuses(_ text: String) -> [String] {
        text.components(separatedBy: "HTTP/1.1 ").dropFirst().map { "HTTP/1.1 " + $0.prefix(while: { !$0.isNewline }) }
    }

    /// While a response is unflushed nothing more is read or answered; once it is, the next
    /// waiting request is answered, and reading resumes only when none waits.
    @Test func nothingIsReadWhileAnAnswerIsUnflushed() throws {
        let c = try channel()
        let socket = HeldWrites()
        try c.pipeline.syncOperations.addHandler(socket, position: .first)
        #expect(send(c, String(repeating: "GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n", count: 3)) == nil)
        c.read()
        #expect(socket.reads == 0, "held back: an answer is on its way")
        var answered = 0
        for _ in 0..<3 {
            #expect(!socket.held.isEmpty, "one answer at a time")
            socket.release()
            answered += statuses(try output(c)).count
            if answered < 3 { #expect(socket.reads == 0) }
        }
        #expect(answered == 3)
        #expect(socket.reads == 1, "the held read goes through once all is flushed")
        #expect(c.isActive)
    }

    /// A client pipelining far past `maxPipelined` without reading: the first
    /// `maxPipelined` are answered, the last with Connection: close, the rest dropped, and
    /// the connection closes.
    @Test func pipeliningPastTheCapIsAnsweredUpToItThenCloses() throws {
        let c = try channel()
        let socket = HeldWrites()
        try c.pipeline.syncOperations.addHandler(socket, position: .first)
        _ = send(c, String(repeating: "GET / HTTP/1.1\r\nHost: x\r\n\r\n", count: StatusRoutes.maxPipelined * 50))
        var text = ""
        for _ in 0..<(StatusRoutes.maxPipelined * 50) where c.isActive {
            socket.release()
            text += try output(c)
        }
        let answers = statuses(text)
        #expect(answers.count == StatusRoutes.maxPipelined, "\(answers)")
        #expect(answers.allSatisfy { $0 == "HTTP/1.1 200 OK" })
        #expect(text.components(separatedBy: "Connection: close").count == 2, "only the last says close")
        #expect(!c.isActive)
        #expect(socket.reads == 0)
    }

    @Test func aHeadPastTheLimitIs431AndTheConnectionCloses() throws {
        let c = try channel()
        _ = send(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Padding: \(String(repeating: "a", count: StatusRoutes.maxHead))\r\n\r\n")
        let text = try output(c)
        #expect(text.hasPrefix("HTTP/1.1 431 Request Header Fields Too Large"), "\(text)")
        #expect(!c.isActive)
    }

    @Test func aLongURLIs431Too() throws {
        let c = try channel()
        _ = send(c, "GET /\(String(repeating: "a", count: StatusRoutes.maxHead + 10)) HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try output(c).hasPrefix("HTTP/1.1 431 "))
    }

    @Test func aBodyPastTheLimitIs413AndTheConnectionCloses() throws {
        let c = try channel()
        let size = StatusRoutes.maxBody * 4
        _ = send(c, "GET /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: \(size)\r\n\r\n" + String(repeating: "b", count: size))
        let text = try output(c)
        #expect(text.hasPrefix("HTTP/1.1 413 Payload Too Large"), "\(text)")
        #expect(!c.isActive)
    }

    @Test func garbageIs400() throws {
        let c = try channel()
        _ = send(c, "\u{1}\u{2}NOT HTTP AT ALL\r\n\r\n")
        #expect(try output(c).hasPrefix("HTTP/1.1 400 Bad Request"))
        #expect(!c.isActive)
    }

    @Test func aPostIs405WithAllow() throws {
        let c = try channel()
        _ = send(c, "POST /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        let text = try output(c)
        #expect(text.hasPrefix("HTTP/1.1 405 Method Not Allowed") && text.contains("Allow: GET, HEAD"), "\(text)")
    }

    @Test func headHasTheLengthButNoBody() throws {
        let c = try channel()
        _ = send(c, "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let text = try output(c)
        #expect(text.contains("Content-Length: \(StatusPage.html.count)"))
        #expect(text.hasSuffix("\r\n\r\n"), "no body after the head")
    }
}

@Suite struct SessionMetricsTests {
    /// Series lines of one metric family: name{labels} value.
    static func series(_ text: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else { continue }
            values[String(line[..<space])] = value
        }
        return values
    }

    @Test func everyFamilyHasHelpAndTypeAndCountersEndInTotal() {
        let text = String(decoding: SessionMetrics().render(Sample.status()), as: UTF8.self)
        let types = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ") }
        #expect(types.count >= 15)
        for t in types {
            let name = String(t[2])
            #expect(name.hasPrefix("asr_"))
            #expect(text.contains("# HELP \(name) "), "\(name) has help")
            #expect((t[3] == "counter") == name.hasSuffix("_total"), "\(name) is a \(t[3])")
        }
    }

    @Test func countersFollowTheBoardAndClientsComeAndGo() {
        let metrics = SessionMetrics()
        let first = Self.series(String(decoding: metrics.render(Sample.status(bytes: 5000, clients: [Sample.client(1, "a", repairs: 2)])), as: UTF8.self))
        #expect(first["asr_server_sent_bytes_total"] == 5000)
        #expect(first["asr_client_repairs_asked_total{id=\"1\",client=\"a\",address=\"10.0.0.1\"}"] == 2)
        #expect(first["asr_server_clients{state=\"restoring\"}"] == 1)
        let second = Self.series(String(decoding: metrics.render(Sample.status(bytes: 9000, clients: [Sample.client(2, "b", state: "done", progress: 1)])), as: UTF8.self))
        #expect(second["asr_server_sent_bytes_total"] == 9000)
        #expect(second["asr_client_progress_ratio{id=\"2\",client=\"b\",address=\"10.0.0.2\"}"] == 1)
        #expect(!second.keys.contains { $0.contains("id=\"1\"") }, "a forgotten client's series go with it")
        #expect(second["asr_client_eta_seconds{id=\"2\",client=\"b\",address=\"10.0.0.2\"}"] == nil, "no ETA once done")
    }

    @Test func labelValuesAreEscaped() {
        let text = String(decoding: SessionMetrics().render(Sample.status(clients: [Sample.client(1, "evil\"} 1\nasr_x 2")])), as: UTF8.self)
        #expect(!text.contains("\nasr_x 2"), "\(text)")
    }
}

@Suite struct StatusPageContentTests {
    /// The CSP names the page's own script and style by hash: nothing else runs or applies.
    @Test func theContentSecurityPolicyHashesMatchThePage() {
        func hash(_ s: String) -> String { "sha256-" + Data(SHA256.hash(data: Array(s.utf8))).base64EncodedString() }
        #expect(StatusPage.contentSecurityPolicy.contains("script-src '\(hash(StatusPage.script))'"))
        #expect(StatusPage.contentSecurityPolicy.contains("style-src '\(hash(StatusPage.style))'"))
        let html = String(decoding: StatusPage.html, as: UTF8.self)
        #expect(html.contains("<script>\(StatusPage.script)</script>") && html.contains("<style>\(StatusPage.style)</style>"))
    }

    /// Self-contained: no CDN, no font, no external anything; network text only through textContent.
    @Test func thePageLoadsNothingFromElsewhere() {
        let html = String(decoding: StatusPage.html, as: UTF8.self)
        for forbidden in ["http://", "https://", "src=", "@import", "url(", "innerHTML", "insertAdjacentHTML", "document.write", "eval("] {
            #expect(!html.contains(forbidden), "\(forbidden)")
        }
    }
}

/// docs/STATUS.md documents every key of /status.json and every metric.
@Suite struct StatusDocumentationTests {
    static let doc = (try? String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../docs/STATUS.md").standardized, encoding: .utf8)) ?? ""

    /// Keys the documentation's tables name: `| \`key\` |` at the start of a row.
    static var documented: Set<String> {
        Set(doc.split(separator: "\n").compactMap { line -> String? in
            guard line.hasPrefix("| `"), let end = line.dropFirst(3).firstIndex(of: "`") else { return nil }
            return String(line[line.index(line.startIndex, offsetBy: 3)..<end])
        })
    }

    static func keys(_ value: Any, path: String = "") -> Set<String> {
        var found = Set<String>()
        if let object = value as? [String: Any] {
            for (k, v) in object {
                let name = path.isEmpty ? k : "\(path).\(k)"
                found.insert(name)
                if path == "counts" || name == "counts" { continue }  // its keys are the states
                found.formUnion(keys(v, path: name))
            }
        } else if let array = value as? [Any], let first = array.first {
            found.formUnion(keys(first, path: path + "[]"))
        }
        return found
    }

    @Test func everyJSONKeyIsDocumented() throws {
        var status = Sample.status()
        status.throughput = [.init(t: 1, bytesPerSecond: 2)]
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(status))
        let missing = Self.keys(json).subtracting(Self.documented)
        #expect(!Self.doc.isEmpty)
        #expect(missing.isEmpty, "undocumented: \(missing.sorted())")
    }

    @Test func everyMetricIsDocumented() {
        let missing = Set(SessionMetrics.help.keys).subtracting(Self.documented)
        #expect(missing.isEmpty, "undocumented: \(missing.sorted())")
    }
}
