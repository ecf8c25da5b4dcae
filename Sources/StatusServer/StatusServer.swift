// StatusServer: what `asr server --status` serves, so an admin can watch a deployment.
//
// This module owns the HTTP/1 side of a multicast session: the self-contained session page
// (`/`), the JSON status (`/status.json`, docs/STATUS.md) and Prometheus metrics (`/metrics`),
// on swift-nio's NIOHTTP1 with one event-loop thread of its own. It reads the server's
// `SessionBoard` (Multicast) through snapshots, never the server's own state, so watching
// cannot slow the stream; metrics are counted through swift-metrics into a swift-prometheus
// registry of this server's own. The request logic (`StatusRoutes`) does no I/O and is tested
// on its own; `StatusHTTPHandler` binds it to NIO.

import Multicast
import NIOCore
import NIOPosix
import NIOHTTP1
import SystemSupport

/// What the status server reads: the session's snapshot, and its byte count for the
/// throughput chart (sampled every second, so cheaper than a snapshot).
public protocol StatusSource: Sendable {
    func snapshot() -> SessionStatus
    var bytesSent: UInt64 { get }
}

extension SessionBoard: StatusSource {}

/// A status server failure; `description` is the one line a user reads.
public enum StatusServerError: UserFacingError, Equatable {
    case cannotListen(address: String, reason: String)

    public var description: String {
        switch self {
        case .cannotListen(let address, let reason): "cannot serve the status page on \(address): \(reason)"
        }
    }
}

/// Serves the session page, `/status.json` and `/metrics` on `address` until stopped.
public final class StatusServer: Sendable {
    public let address: StatusAddress
    private let group: MultiThreadedEventLoopGroup
    private let channel: any Channel
    private let sampler: RepeatedTask

    /// The connections this server may hold at once: `maxConnections` is its share of the
    /// process's descriptors (`DescriptorBudget`), apart from the control port's.
    public static let maxConnections = StatusRoutes.maxConnections

    /// Bound when this returns: a taken port or a bad address throws here, before the
    /// multicast server starts.
    public init(address: StatusAddress, source: any StatusSource, maxConnections: Int = StatusServer.maxConnections)
        throws(StatusServerError) {
        self.address = address
        let content = StatusContent(source: source)
        let routes = StatusRoutes(content: content)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let connections = ConnectionLimit(maxConnections, perAddress: StatusRoutes.maxConnectionsPerAddress)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Requests are small: a read takes at most a few heads' worth.
            .childChannelOption(.recvAllocator, value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 2048, maximum: 16384))
            .childChannelInitializer { channel in
                // Past a cap a connection is closed at once: each one costs a descriptor,
                // and the multicast server needs its own.
                let peer = channel.remoteAddress?.ipAddress ?? ""
                guard connections.admit(peer) else { return channel.close() }
                channel.closeFuture.whenComplete { _ in connections.release(peer) }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: StatusRoutes.idleTimeout))
                    try Self.configure(channel.pipeline.syncOperations, routes: routes)
                }
            }
        do {
            channel = try bootstrap.bind(host: address.host, port: Int(address.port)).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw .cannotListen(address: address.description, reason: Self.reason(error))
        }
        self.group = group
        sampler = group.next().scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(1)) { _ in content.sample() }
    }

    /// NIOHTTP1's server handlers with the head capped at `StatusRoutes.maxHead`, then ours.
    package static func configure(_ pipeline: ChannelPipeline.SynchronousOperations, routes: StatusRoutes) throws {
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = StatusRoutes.maxHead
        limits.maxHeaderListSize = StatusRoutes.maxHead
        limits.maxHeaderFieldCount = 64
        // Pipelined requests wait in `StatusHTTPHandler`, bounded, not in NIO's pipelining helper.
        try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: false,
                                                 withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
        try pipeline.addHandler(StatusHTTPHandler(routes: routes))
    }

    /// The URL of the session page.
    public var url: String { "http://\(address)/" }

    public func stop() {
        sampler.cancel()
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// An error's own words, without NIO's type names where it has plain ones.
    private static func reason(_ error: any Error) -> String {
        if let e = error as? IOError { return e.description }
        return String(describing: error)
    }
}

/// Connections open at once: at most `limit` in all and `perAddress` from one peer address.
final class ConnectionLimit: Sendable {
    private let open = Locked((total: 0, byPeer: [String: Int]()))
    private let limit: Int
    private let perAddress: Int

    init(_ limit: Int, perAddress: Int) {
        self.limit = limit
        self.perAddress = perAddress
    }

    func admit(_ peer: String) -> Bool {
        open.withLock { n in
            guard n.total < limit, n.byPeer[peer, default: 0] < perAddress else { return false }
            n.total += 1
            n.byPeer[peer, default: 0] += 1
            return true
        }
    }

    func release(_ peer: String) {
        open.withLock { n in
            n.total -= 1
            n.byPeer[peer, default: 1] -= 1
            if n.byPeer[peer] == 0 { n.byPeer[peer] = nil }
        }
    }
}
