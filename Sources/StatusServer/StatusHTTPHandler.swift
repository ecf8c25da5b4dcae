import NIOCore
import NIOHTTP1

/// Binds `StatusRoutes` to a connection: NIOHTTP1 parses, this answers each request in turn
/// and refuses what is too large (431 for a head past `StatusRoutes.maxHead`, which NIO's
/// decoder limits catch; 413 for a body past `maxBody`) or malformed (400), closing the
/// connection after a refusal.
final class StatusHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let routes: StatusRoutes
    private var head: HTTPRequestHead?
    private var bodyBytes = 0
    /// A refusal went out: the rest of this connection is ignored until it closes.
    private var refused = false

    init(routes: StatusRoutes) { self.routes = routes }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !refused else { return }
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
            let response = routes.response(method: h.method, uri: h.uri)
            write(context, response, includeBody: h.method != .HEAD, keepAlive: h.isKeepAlive, version: h.version)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let parse = error as? HTTPParserError, !refused else {
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
        refused = true
        write(context, response, includeBody: true, keepAlive: false, version: head?.version ?? .http1_1)
    }

    private func write(_ context: ChannelHandlerContext, _ response: StatusResponse, includeBody: Bool, keepAlive: Bool,
                       version: HTTPVersion) {
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
        let written = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            written.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}
