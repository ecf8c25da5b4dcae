import SystemSupport
import CCurl
import Foundation
import Synchronization
import UDIF

/// An image on a web server, read with HTTP range requests through libcurl. Many reads may
/// run at once (each borrows its own connection); transient failures (connection errors,
/// timeouts, stalls, 408/429/5xx) are retried with backoff before a read gives up. A server
/// that says it is busy (429, 503) gets fewer requests at once: half as many after each such
/// answer, one more again after as many successes as are allowed at once.
public final class HTTPFile: RandomAccessFile, Sendable {
    public let path: String
    private let knownLength = Atomic<UInt64>(0)  // set once by init, then only read
    private var length: UInt64 { knownLength.load(ordering: .relaxed) }
    private let handles = Locked<[CurlHandle]>([])
    private let gate = Monitor(Gate())
    static let attempts = 6

    /// Requests in flight, and how many may be.
    private struct Gate {
        static let most = 64
        var inFlight = 0
        var limit = most
        var successes = 0

        mutating func finished(busy: Bool) {
            inFlight -= 1
            if busy {
                limit = max(1, min(limit, inFlight + 1) / 2)
                successes = 0
            } else if limit < Self.most {
                successes += 1
                if successes >= limit { limit += 1; successes = 0 }
            }
        }
    }

    private static let globalInit: Void = { curl_global_init(Int(CURL_GLOBAL_DEFAULT)) }()

    public init(url: String) throws {
        _ = Self.globalInit
        path = url
        // The size comes from the Content-Range of a one-byte range request: it proves the
        // server honours ranges, which a HEAD request would not.
        var probe = [UInt8](repeating: 0, count: 1)
        let total = try probe.withUnsafeMutableBytes { try fetch(into: $0, at: 0) }
        guard let total, total > 0 else { throw ImagingError.http(url: url, .noRangeSupport) }
        knownLength.store(total, ordering: .relaxed)
    }

    deinit {
        handles.withLock { list in list.forEach { curl_easy_cleanup($0.raw) } }
    }

    public func size() throws -> UInt64 { length }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard buffer.count > 0 else { return }
        guard offset + UInt64(buffer.count) <= length else {
            throw ImagingError.http(url: path, .pastEnd(offset: offset, count: buffer.count, length: length))
        }
        _ = try fetch(into: buffer, at: offset)
    }

    /// Fills `buffer` from `offset`; returns the resource's total size from Content-Range.
    /// A server that says it is busy (429, 503) is answering: its refusals do not use up the
    /// attempts, only up to `busyPatience` of waiting, with a jittered backoff of at most 4 s
    /// (without jitter, every waiting request comes back at once and is refused again).
    private func fetch(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> UInt64? {
        var delay = 0.2
        var lastError = ""
        var failures = 0
        var busyWaited = 0.0
        var tries = 0
        while true {
            tries += 1
            gate.wait(until: { $0.inFlight < $0.limit }) { $0.inFlight += 1 }
            let outcome = Result { try fetchOnce(into: buffer, at: offset) }
            gate.update { g in
                if case .success(.transient(_, busy: true)) = outcome { g.finished(busy: true) } else { g.finished(busy: false) }
            }
            switch try outcome.get() {
            case .success(let total): return total
            case .transient(let why, let busy):
                lastError = why
                if busy { busyWaited += delay } else { failures += 1 }
                guard failures < Self.attempts, busyWaited <= Self.busyPatience else {
                    throw ImagingError.http(url: path, .gaveUp(attempts: tries, last: lastError))
                }
                Thread.sleep(forTimeInterval: delay * Double.random(in: 0.5...1.5))
                delay = min(delay * 2, 4)
            }
        }
    }

    /// How long one read waits for a busy server before it gives up.
    static let busyPatience = 120.0

    /// `busy`: the server said so (429, 503).
    private enum Attempt { case success(UInt64?), transient(String, busy: Bool) }

    private func fetchOnce(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Attempt {
        guard let handle = handles.withLock({ $0.popLast()?.raw }) ?? curl_easy_init() else {
            throw ImagingError.http(url: path, .clientUnavailable)
        }
        defer { handles.withLock { $0.append(CurlHandle(raw: handle)) } }
        let sink = Sink(buffer)
        let context = Unmanaged.passUnretained(sink).toOpaque()
        let range = "\(offset)-\(offset + UInt64(buffer.count) - 1)"
        asr_curl_set_string(handle, CURLOPT_URL, path)
        asr_curl_set_string(handle, CURLOPT_RANGE, range)
        asr_curl_set_long(handle, CURLOPT_FOLLOWLOCATION, 1)
        asr_curl_set_long(handle, CURLOPT_CONNECTTIMEOUT, 15)
        asr_curl_set_long(handle, CURLOPT_LOW_SPEED_LIMIT, 1)   // a stalled transfer...
        asr_curl_set_long(handle, CURLOPT_LOW_SPEED_TIME, 30)   // ...is dropped and retried
        asr_curl_set_long(handle, CURLOPT_NOSIGNAL, 1)
        asr_curl_set_string(handle, CURLOPT_USERAGENT, "asr")
        asr_curl_set_pointer(handle, CURLOPT_WRITEDATA, context)
        asr_curl_set_pointer(handle, CURLOPT_HEADERDATA, context)
        asr_curl_set_write(handle) { data, size, count, context in
            let sink = Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue()
            let n = size * count
            guard sink.written + n <= sink.buffer.count else { sink.overflow = true; return 0 }
            sink.buffer.baseAddress!.advanced(by: sink.written).copyMemory(from: data!, byteCount: n)
            sink.written += n
            return n
        }
        asr_curl_set_header(handle, headerCallback)
        let code = curl_easy_perform(handle)
        var status = 0
        asr_curl_get_long(handle, CURLINFO_RESPONSE_CODE, &status)
        if code != CURLE_OK && !(code == CURLE_WRITE_ERROR && sink.overflow) {
            let message = String(cString: curl_easy_strerror(code))
            switch code {
            case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT, CURLE_COULDNT_RESOLVE_HOST:
                throw ImagingError.http(url: path, .unreachable(message))
            default:
                return .transient(message, busy: false)
            }
        }
        switch status {
        case 206:
            guard !sink.overflow, sink.written == buffer.count else {
                return .transient("short response: \(sink.written) of \(buffer.count) bytes", busy: false)
            }
            return .success(sink.headerTotal)
        case 200:
            throw ImagingError.http(url: path, .ignoresRanges)
        case 408, 429, 500...599:
            return .transient("HTTP \(status)", busy: status == 429 || status == 503)
        case 404: throw ImagingError.http(url: path, .notFound)
        case 416: throw ImagingError.http(url: path, .rangeNotSatisfiable(range))
        default: throw ImagingError.http(url: path, .status(status))
        }
    }
}

/// A libcurl easy handle; each is used by one read at a time.
private struct CurlHandle: @unchecked Sendable {  // a raw libcurl handle, used by one read at a time
    let raw: UnsafeMutableRawPointer
}

/// Where one transfer's body goes, and what its headers said.
private final class Sink {
    let buffer: UnsafeMutableRawBufferPointer
    var written = 0
    var overflow = false
    var headerTotal: UInt64?
    init(_ buffer: UnsafeMutableRawBufferPointer) { self.buffer = buffer }
}

/// Reads the total size from `Content-Range: bytes a-b/TOTAL` as headers arrive.
private let headerCallback: asr_curl_write_fn = { data, size, count, context in
    let n = size * count
    let line = String(decoding: UnsafeRawBufferPointer(start: data, count: n), as: UTF8.self).lowercased()
    if line.hasPrefix("content-range:"), let slash = line.lastIndex(of: "/") {
        let total = line[line.index(after: slash)...].trimmingCharacters(in: .whitespacesAndNewlines)
        Unmanaged<Sink>.fromOpaque(context!).takeUnretainedValue().headerTotal = UInt64(total)
    }
    return n
}
