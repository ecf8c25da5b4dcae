import CoreMetrics
import Multicast
import Prometheus
import SystemSupport

/// The session's numbers as Prometheus metrics: each snapshot is counted through swift-metrics
/// (counters go up by what the board's counters gained since the last one, gauges are set)
/// into a swift-prometheus registry of this server's own, which writes the text format.
/// Names follow Prometheus's conventions: `asr_` first, base units (bytes, seconds), `_total`
/// on counters, `_ratio` on shares of 1 (docs/STATUS.md lists them).
package final class SessionMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    private let factory: DescribedFactory
    private let state: Locked<Instruments>

    package init() {
        factory = DescribedFactory(registry: registry, help: Self.help)
        state = Locked(Instruments(factory: factory))
    }

    /// Counts `status` in and writes every metric.
    package func render(_ status: SessionStatus) -> [UInt8] {
        state.withLock { $0.update(status) }
        return registry.emitToBuffer()
    }

    /// Every metric's HELP line.
    static let help: [String: String] = [
        "asr_server_sent_bytes_total": "UDP payload bytes sent to the multicast group, data packet headers included.",
        "asr_server_sent_packets_total": "Data packets (datagrams) sent to the multicast group.",
        "asr_server_sent_chunks_total": "Chunk sends, whole or in part.",
        "asr_server_repairs_sent_total": "Chunk sends that were repairs: behind the cursor, for clients that lost them.",
        "asr_server_fragment_repairs_sent_total": "Fragments sent as part-chunks: only the fragments clients lacked.",
        "asr_server_passes_total": "Times the cursor went round the image.",
        "asr_server_clients": "Clients the session has seen, by state.",
        "asr_server_configured_rate_bytes_per_second": "The configuration's Data Rate.",
        "asr_server_effective_rate_bytes_per_second": "The rate the server sends at: Data Rate, capped by Client Data Rate.",
        "asr_server_send_rate_bytes_per_second": "Bytes sent over the last second.",
        "asr_server_image_disk_bytes": "The image's disk size.",
        "asr_server_image_stored_bytes": "Bytes of the image that travel (its stored chunks).",
        "asr_server_start_time_seconds": "When the server started, in Unix seconds.",
        "asr_client_progress_ratio": "Share of the chunks that travel the client holds.",
        "asr_client_verify_progress_ratio": "Share of the client's read-back done.",
        "asr_client_chunks": "Chunks the client holds, written and checked.",
        "asr_client_repairs_asked_total": "Chunks the client held in part after the stream had passed them: repairs it asked for.",
        "asr_client_loss_ratio": "Share of the packets sent since the client's first report that it did not take.",
        "asr_client_write_rate_bytes_per_second": "The client's write rate, as it reports it.",
        "asr_client_eta_seconds": "Seconds until the client's present phase (restoring or verifying) ends, at its recent pace.",
    ]

    /// The instruments, and what the counters stood at when last counted.
    private struct Instruments {
        let factory: DescribedFactory
        var counted: [String: UInt64] = [:]
        var server: [String: CoreMetrics.Counter] = [:]
        var gauges: [String: CoreMetrics.Gauge] = [:]
        var clients: [Int: ClientInstruments] = [:]

        init(factory: DescribedFactory) { self.factory = factory }

        mutating func update(_ s: SessionStatus) {
            count("asr_server_sent_bytes_total", s.stream.bytesSent)
            count("asr_server_sent_packets_total", s.stream.packetsSent)
            count("asr_server_sent_chunks_total", s.stream.chunksSent)
            count("asr_server_repairs_sent_total", s.stream.repairsSent)
            count("asr_server_fragment_repairs_sent_total", s.stream.fragmentRepairsSent)
            count("asr_server_passes_total", s.stream.passes)
            for (state, n) in s.counts { set("asr_server_clients", [("state", state)], Double(n)) }
            set("asr_server_configured_rate_bytes_per_second", [], Double(s.stream.dataRate))
            set("asr_server_effective_rate_bytes_per_second", [], Double(s.stream.effectiveRate))
            set("asr_server_send_rate_bytes_per_second", [], s.stream.rate)
            set("asr_server_image_disk_bytes", [], Double(s.image.diskBytes))
            set("asr_server_image_stored_bytes", [], Double(s.image.storedBytes))
            set("asr_server_start_time_seconds", [], s.server.startedAt)
            var seen = Set<Int>()
            for c in s.clients {
                seen.insert(c.id)
                clients[c.id, default: ClientInstruments(c, factory: factory)].update(c)
            }
            // Clients the board forgot take their series with them.
            for id in clients.keys where !seen.contains(id) { clients.removeValue(forKey: id)?.destroy() }
        }

        private mutating func count(_ name: String, _ value: UInt64) {
            let counter = server[name] ?? CoreMetrics.Counter(label: name, dimensions: [], factory: factory)
            server[name] = counter
            let before = counted[name] ?? 0
            if value > before { counter.increment(by: Int64(clamping: value - before)) }
            counted[name] = max(before, value)
        }

        private mutating func set(_ name: String, _ dimensions: [(String, String)], _ value: Double) {
            let key = ([name] + dimensions.map { "\($0.0)=\($0.1)" }).joined(separator: ",")
            let gauge = gauges[key] ?? CoreMetrics.Gauge(label: name, dimensions: dimensions, factory: factory)
            gauges[key] = gauge
            gauge.record(value)
        }
    }

    /// One client's series, labelled with its id (names may repeat), name and address.
    private struct ClientInstruments {
        let factory: DescribedFactory
        let dimensions: [(String, String)]
        let progress: CoreMetrics.Gauge
        let chunks: CoreMetrics.Gauge
        let writeRate: CoreMetrics.Gauge
        let repairs: CoreMetrics.Counter
        var repairsCounted = 0
        var optional: [String: CoreMetrics.Gauge] = [:]

        init(_ c: SessionStatus.Client, factory: DescribedFactory) {
            self.factory = factory
            dimensions = [("id", String(c.id)), ("client", c.name), ("address", c.address)]
            progress = CoreMetrics.Gauge(label: "asr_client_progress_ratio", dimensions: dimensions, factory: factory)
            chunks = CoreMetrics.Gauge(label: "asr_client_chunks", dimensions: dimensions, factory: factory)
            writeRate = CoreMetrics.Gauge(label: "asr_client_write_rate_bytes_per_second", dimensions: dimensions, factory: factory)
            repairs = CoreMetrics.Counter(label: "asr_client_repairs_asked_total", dimensions: dimensions, factory: factory)
        }

        mutating func update(_ c: SessionStatus.Client) {
            progress.record(c.progress)
            chunks.record(c.chunks)
            writeRate.record(c.writeRate)
            if c.repairsAsked > repairsCounted {
                repairs.increment(by: c.repairsAsked - repairsCounted)
                repairsCounted = c.repairsAsked
            }
            setOptional("asr_client_verify_progress_ratio", c.verifyProgress)
            setOptional("asr_client_loss_ratio", c.loss)
            setOptional("asr_client_eta_seconds", c.eta)
        }

        /// A series that exists only while its value is known.
        private mutating func setOptional(_ name: String, _ value: Double?) {
            guard let value else {
                optional.removeValue(forKey: name)?.destroy()
                return
            }
            let gauge = optional[name] ?? CoreMetrics.Gauge(label: name, dimensions: dimensions, factory: factory)
            optional[name] = gauge
            gauge.record(value)
        }

        func destroy() {
            for gauge in [progress, chunks, writeRate] + Array(optional.values) { gauge.destroy() }
            repairs.destroy()
        }
    }
}

/// swift-prometheus's factory for swift-metrics, with a HELP line for each metric (the stock
/// `PrometheusMetricsFactory` gives none, and Prometheus's lint asks for one).
struct DescribedFactory: MetricsFactory, Sendable {
    let registry: PrometheusCollectorRegistry
    let help: [String: String]

    /// The whole name goes in `metricName`: swift-metrics labels are already Prometheus names.
    private func describe(_ label: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: label, unitName: "", helpText: help[label] ?? "")
    }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: describe(label), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: describe(label), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        // Gauges only: the session has no distributions worth a histogram.
        registry.makeGauge(descriptor: describe(label), labels: dimensions)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: describe(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: describe(label), labels: dimensions,
                                       buckets: [.milliseconds(10), .milliseconds(100), .seconds(1), .seconds(10)])
    }

    func destroyCounter(_ handler: any CounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) {
        if let counter = handler as? Prometheus.Counter { registry.unregisterCounter(counter) }
    }

    func destroyRecorder(_ handler: any RecorderHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyMeter(_ handler: any MeterHandler) {
        if let gauge = handler as? Prometheus.Gauge { registry.unregisterGauge(gauge) }
    }

    func destroyTimer(_ handler: any TimerHandler) {
        if let histogram = handler as? DurationHistogram { registry.unregisterDurationHistogram(histogram) }
    }
}
