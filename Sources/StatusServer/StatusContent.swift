import Foundation
import Multicast
import SystemSupport

/// The documents the routes serve, made from one snapshot of the session at a time and kept
/// for `freshFor`: two hundred pollers cost a few snapshots a second, not two hundred, and the
/// board's lock is taken only to copy. Also keeps the throughput history the chart draws.
package final class StatusContent: Sendable {
    /// How long one snapshot serves every request.
    package static let freshFor: Duration = .milliseconds(250)
    /// Throughput samples kept: one a second, five minutes.
    package static let historyLength = 300

    private let source: any StatusSource
    private let metrics = SessionMetrics()
    private let cache = Locked<Cached?>(nil)
    private let history = Locked(History())

    private struct Cached {
        var at: ContinuousClock.Instant
        var status: SessionStatus
        var json: [UInt8]?
        var metrics: [UInt8]?
    }

    private struct History {
        var samples: [SessionStatus.ThroughputSample] = []
        var last: (at: ContinuousClock.Instant, bytes: UInt64)?
    }

    package init(source: any StatusSource) { self.source = source }

    /// Takes a throughput sample: bytes sent since the last one, per second. Called every second.
    package func sample(now: ContinuousClock.Instant = .now, wall: Date = Date()) {
        let bytes = source.bytesSent
        history.withLock { h in
            defer { h.last = (now, bytes) }
            guard let last = h.last, now > last.at else { return }
            let seconds = Double((now - last.at) / .milliseconds(1)) / 1000
            h.samples.append(.init(t: wall.timeIntervalSince1970, bytesPerSecond: Double(bytes &- last.bytes) / seconds))
            if h.samples.count > Self.historyLength { h.samples.removeFirst(h.samples.count - Self.historyLength) }
        }
    }

    /// The session now (or at most `freshFor` ago), with its throughput history.
    package func status() -> SessionStatus { fresh { $0.status } }

    /// `/status.json`.
    package func json() -> [UInt8] {
        fresh { c in
            if let json = c.json { return json }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            // Every number is finite by construction; should one not be, the page still loads.
            encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
            let json = (try? encoder.encode(c.status)).map { [UInt8]($0) } ?? Array("{}".utf8)
            c.json = json
            return json
        }
    }

    /// `/metrics`: the snapshot counted into the registry, in Prometheus's text format.
    package func metricsText() -> [UInt8] {
        fresh { c in
            if let text = c.metrics { return text }
            let text = metrics.render(c.status)
            c.metrics = text
            return text
        }
    }

    private func fresh<R>(_ body: (inout Cached) -> R) -> R {
        cache.withLock { cached in
            let now = ContinuousClock.now
            if cached == nil || now - cached!.at > Self.freshFor {
                var status = source.snapshot()
                status.throughput = history.withLock { $0.samples }
                status.stream.rate = status.throughput.last?.bytesPerSecond ?? 0
                cached = Cached(at: now, status: status)
            }
            return body(&cached!)
        }
    }
}
