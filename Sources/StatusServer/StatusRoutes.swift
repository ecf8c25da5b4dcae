import NIOCore
import NIOHTTP1

/// A response, before NIO writes it.
package struct StatusResponse: Sendable {
    package var status: HTTPResponseStatus
    package var contentType: String
    package var body: [UInt8]
    package var headers: [(String, String)] = []

    /// A refusal: a status and a line of text saying why.
    package static func refusal(_ status: HTTPResponseStatus, _ why: String, headers: [(String, String)] = []) -> StatusResponse {
        StatusResponse(status: status, contentType: "text/plain; charset=utf-8", body: Array((why + "\n").utf8), headers: headers)
    }
}

/// What each request gets: GET (or HEAD) `/`, `/status.json` and `/metrics`; 404 for other
/// paths, 405 for other methods. No I/O: `StatusHTTPHandler` reads requests and writes these.
package struct StatusRoutes: Sendable {
    /// A request's head (request line and headers) past this is refused with 431; a body
    /// past it with 413 (nothing here takes a body).
    package static let maxHead = 8192
    package static let maxBody = 8192
    /// Open connections at most: 200 pollers and room to spare. Counted apart from the
    /// control port's (`DescriptorBudget`), so that neither can take the other's descriptors.
    package static let maxConnections = 256
    /// Open connections from one address at most: one host cannot take them all.
    package static let maxConnectionsPerAddress = 16
    /// Requests one connection may have waiting for their answers. Browsers and scrapers
    /// send one at a time; more than this ahead of reading is a flood, and closes.
    package static let maxPipelined = 8
    /// A connection that sends nothing for this long is closed.
    package static let idleTimeout: TimeAmount = .seconds(30)

    let content: StatusContent

    package init(content: StatusContent) { self.content = content }

    package func response(method: HTTPMethod, uri: String) -> StatusResponse {
        guard method == .GET || method == .HEAD else {
            return .refusal(.methodNotAllowed, "only GET and HEAD", headers: [("Allow", "GET, HEAD")])
        }
        // A query (a cache-buster) changes nothing.
        switch uri.prefix(while: { $0 != "?" && $0 != "#" }) {
        case "/", "/index.html":
            return StatusResponse(status: .ok, contentType: "text/html; charset=utf-8", body: StatusPage.html,
                                  headers: [("Content-Security-Policy", StatusPage.contentSecurityPolicy), ("Referrer-Policy", "no-referrer")])
        case "/status.json":
            return StatusResponse(status: .ok, contentType: "application/json", body: content.json())
        case "/metrics":
            return StatusResponse(status: .ok, contentType: "text/plain; version=0.0.4; charset=utf-8", body: content.metricsText())
        default:
            return .refusal(.notFound, "not found: the status server has /, /status.json and /metrics")
        }
    }
}
