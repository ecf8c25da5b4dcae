import NIOCore
import NIOHTTP1

/// Binds `StatusRoutes` to a connection: NIOHTTP1 parses, this answers each request in turn
/// and refuses what is too large (431 for a head past `StatusRoutes.maxHead`, which NIO's
/// decoder limits catch; 413 for a body past `maxBody`) or malformed (400), closing the
/// connection after a refusal.
///
/// Memory per connection is bounded whatever the client does: one response is written at a
/// time, the next only once the last has gone to the socket, and nothing more is read while a
/// response is unflushed or requests wait. A client that never reads its answers therefore
/// stops being read (the kernel's buffers fill, not ours). At most `StatusRoutes.maxPipelined`
/// requests wait; requests past that, already read in the same burst, are dropped, the waiting
/// ones answered and the connection closed.
final class StatusHTTPHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Pending {
        case request(HTTPRequestHead)
        case refusal(StatusResponse, HTTPVersion)
    }

    private let routes: StatusRoutes
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    /// Answers still to write, oldest first.
    private var waiting: [Pending] = []
    /// A response is on its way to the socket.
    private var writing = false
    /// The channel asked to read while we held reading back.
    private var readHeld = false
    /// Nothing more is taken from this connection: it closes once `waiting` is answered
    /// (a refusal, or pipelining past the cap).
    private var ending = false

    init(routes: StatusRoutes) { self.routes = routes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !ending else { return }
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            bodyBytes = 0
        case .body(let part):
            bodyBytes += part.readableBytes
            if bodyBytes > StatusRoutes.maxBody {
                refuse(context, .refusal(.payloadTooLarge, "request body over \(StatusRoutes.maxBody) bytes"))
            }
        case .end:
            guard let h = head else { return }
            head = nil
            if waiting.count + (writing ? 1 : 0) >= StatusRoutes.maxPipelined {
                ending = true  // more ahead of its reading than any browser or scraper sends
            } else {
                waiting.append(.request(h))
            }
            answerNext(context)
        }
    }

    /// Reads go through only while nothing is unflushed or waiting: the backpressure.
    func read(context: ChannelHandlerContext) {
        if writing || !waiting.isEmpty || ending {
            readHeld = true
        } else {
            context.read()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parse = error as? HTTPParserError, !ending else {
            context.close(promise: nil)
            return
        }
        if case .headerOverflow = parse {
            refuse(context, .refusal(.requestHeaderFieldsTooLarge, "request head over \(StatusRoutes.maxHead) bytes"))
        } else {
            refuse(context, .refusal(.badRequest, "malformed request"))
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    private func refuse(_ context: ChannelHandlerContext, _ response: StatusResponse) {
        ending = true
        waiting.append(.refusal(response, head?.version ?? .http1_1))
        answerNext(context)
    }

    /// Writes the oldest waiting answer unless one is still on its way; once all are out,
    /// closes (if ending) or lets a held read through.
    private func answerNext(_ context: ChannelHandlerContext) {
        guard !writing else { return }
        guard !waiting.isEmpty else {
            if ending {
                context.close(promise: nil)
            } else if readHeld {
                readHeld = false
                context.read()
            }
            return
        }
        let next = waiting.removeFirst()
        let last = ending && waiting.isEmpty
        let written: EventLoopFuture<Void>
        switch next {
        case .request(let h):
            written = write(context, routes.response(method: h.method, uri: h.uri), includeBody: h.method != .HEAD,
                            keepAlive: h.isKeepAlive && !last, version: h.version)
            if !h.isKeepAlive { ending = true; waiting.removeAll() }
        case .refusal(let response, let version):
            written = write(context, response, includeBody: true, keepAlive: false, version: version)
        }
        writing = true
        written.assumeIsolated().whenComplete { [self] result in
            writing = false
            if case .failure = result {
                context.close(promise: nil)
            } else {
                answerNext(context)
            }
        }
    }

    private func write(_ context: ChannelHandlerContext, _ response: StatusResponse, includeBody: Bool, keepAlive: Bool,
                       version: HTTPVersion) -> EventLoopFuture<Void> {
        var headers = HTTPHeaders([
            ("Content-Type", response.contentType),
            ("Content-Length", String(response.body.count)),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ])
        headers.add(contentsOf: response.headers)
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))), promise: nil)
        if includeBody && !response.body.isEmpty {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        return context.writeAndFlush(wrapOutboundOut(.end(nil)))
    }
}
