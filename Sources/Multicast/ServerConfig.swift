import SystemSupport
import Foundation
import UDIF

/// The multicast configuration plist, with Apple's key names:
/// `Data Rate` (bytes/s, required), `Multicast Address` (required, in 224.0.0.0/4),
/// `Client Data Rate`, `DNS Service Discovery` (default true), `Loop Suspend` (passes with no
/// client before pausing; 0 = never), `Multicast TTL` (default 3, never 0), `Port` (7800);
/// and asr's own `Max Connections` (1024: a lab of hundreds, each with one connection) and `Max Connections Per Address` (8), the control
/// connections the server keeps open at once, and `Status Address` (off unless set: where the
/// session page, JSON status and metrics are served).
public struct ServerConfig: Sendable, Equatable {
    public var dataRate: UInt64
    public var multicastAddress: String
    public var clientDataRate: UInt64?
    public var dnsServiceDiscovery = true
    public var loopSuspend: UInt64 = 0
    public var multicastTTL: UInt8 = 3
    public var port: UInt16 = 7800
    public var maxConnections = 1024
    public var maxConnectionsPerAddress = 8
    public var statusAddress: StatusAddress?

    public init(dataRate: UInt64, multicastAddress: String) {
        self.dataRate = dataRate
        self.multicastAddress = multicastAddress
    }

    /// The rate the server sends at: the data rate, capped by the slowest client's.
    public var effectiveRate: UInt64 { min(dataRate, clientDataRate ?? .max) }

    public static func load(_ path: String) throws(MulticastError) -> ServerConfig {
        guard let bytes = try? FileIO.readSmallFile(path, limit: 1 << 20) else { throw .unreadableConfig(path: path) }
        guard bytes.count <= 1 << 20 else { throw .configTooLarge(path: path) }
        return try ServerConfig(plist: Data(bytes), name: path)
    }

    public init(plist data: Data, name: String = "configuration") throws(MulticastError) {
        do { try PropertyListSafety.check([UInt8](data)) } catch { throw .configNotXML(name: name, reason: error.reason) }
        let raw: RawConfig
        do {
            raw = try PropertyListDecoder().decode(RawConfig.self, from: data)
        } catch let error as RawConfig.WrongType {
            throw .configKey(name: name, key: error.key.rawValue, .wrongType(expected: error.expected))
        } catch {
            throw .configNotDictionary(name: name)
        }
        func problem(_ key: RawConfig.CodingKeys, _ problem: MulticastError.ConfigProblem) -> MulticastError {
            .configKey(name: name, key: key.rawValue, problem)
        }
        guard let rate = raw.dataRate else { throw problem(.dataRate, .missing) }
        guard rate > 0 else { throw problem(.dataRate, .notPositive) }
        guard let address = raw.multicastAddress else { throw problem(.multicastAddress, .missing) }
        guard let octets = IPv4.parse(address), (224...239).contains(octets[0]) else {
            throw problem(.multicastAddress, .notMulticast(address: address))
        }
        self.init(dataRate: rate, multicastAddress: address)
        if let r = raw.clientDataRate {
            guard r > 0 else { throw problem(.clientDataRate, .notPositive) }
            clientDataRate = r
        }
        dnsServiceDiscovery = raw.dnsServiceDiscovery ?? true
        loopSuspend = raw.loopSuspend ?? 0
        /// A key's value if present, refused outside `range`.
        func within(_ value: UInt64?, _ key: RawConfig.CodingKeys, _ range: ClosedRange<UInt64>) throws(MulticastError) -> UInt64? {
            guard let value else { return nil }
            guard range.contains(value) else { throw problem(key, .outOfRange(value, range)) }
            return value
        }
        if let ttl = try within(raw.multicastTTL, .multicastTTL, 1...255) { multicastTTL = UInt8(ttl) }
        if let p = try within(raw.port, .port, 1...65535) { port = UInt16(p) }
        if let n = try within(raw.maxConnections, .maxConnections, 1...65536) { maxConnections = Int(n) }
        if let n = try within(raw.maxConnectionsPerAddress, .maxConnectionsPerAddress, 1...65536) { maxConnectionsPerAddress = Int(n) }
        if let text = raw.statusAddress {
            guard let address = StatusAddress(parsing: text) else { throw problem(.statusAddress, .notAnAddress(text)) }
            statusAddress = address
        }
    }
}

/// The plist as written, each key checked for its type and named in the error.
private struct RawConfig: Decodable {
    var dataRate: UInt64?
    var multicastAddress: String?
    var clientDataRate: UInt64?
    var dnsServiceDiscovery: Bool?
    var loopSuspend: UInt64?
    var multicastTTL: UInt64?
    var port: UInt64?
    var maxConnections: UInt64?
    var maxConnectionsPerAddress: UInt64?
    var statusAddress: String?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case dataRate = "Data Rate", multicastAddress = "Multicast Address", clientDataRate = "Client Data Rate"
        case dnsServiceDiscovery = "DNS Service Discovery", loopSuspend = "Loop Suspend"
        case multicastTTL = "Multicast TTL", port = "Port"
        case maxConnections = "Max Connections", maxConnectionsPerAddress = "Max Connections Per Address"
        case statusAddress = "Status Address"
    }

    /// A key present with the wrong type; `ServerConfig` names the file.
    struct WrongType: Error {
        let key: CodingKeys
        let expected: String
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func value<T: Decodable>(_ key: CodingKeys, _ kind: String) throws -> T? {
            guard c.contains(key) else { return nil }
            do { return try c.decode(T.self, forKey: key) } catch { throw WrongType(key: key, expected: kind) }
        }
        dataRate = try value(.dataRate, "a non-negative integer (bytes per second)")
        multicastAddress = try value(.multicastAddress, "a string")
        clientDataRate = try value(.clientDataRate, "a non-negative integer (bytes per second)")
        dnsServiceDiscovery = try value(.dnsServiceDiscovery, "a boolean")
        loopSuspend = try value(.loopSuspend, "a non-negative integer")
        multicastTTL = try value(.multicastTTL, "an integer")
        port = try value(.port, "an integer")
        maxConnections = try value(.maxConnections, "an integer")
        maxConnectionsPerAddress = try value(.maxConnectionsPerAddress, "an integer")
        statusAddress = try value(.statusAddress, "a string (PORT or ADDRESS:PORT)")
    }
}

/// Where the status server listens (`--status`, `Status Address`): `PORT` (on 127.0.0.1, this
/// host only), `ADDRESS:PORT` with an IPv4 address (`0.0.0.0:PORT`: every interface) or
/// `localhost`, or `[IPv6]:PORT`.
public struct StatusAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String = "127.0.0.1", port: UInt16) {
        self.host = host
        self.port = port
    }

    public init?(parsing text: String) {
        func port(_ digits: Substring) -> UInt16? {
            guard !digits.isEmpty, digits.count <= 5, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
                  let p = UInt16(digits), p > 0 else { return nil }
            return p
        }
        if let p = port(text[...]) {
            self.init(port: p)
        } else if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            var v6 = in6_addr()
            guard rest.hasPrefix(":"), let p = port(rest.dropFirst()), inet_pton(AF_INET6, host, &v6) == 1 else { return nil }
            self.init(host: host, port: p)
        } else if let colon = text.lastIndex(of: ":"), let p = port(text[text.index(after: colon)...]) {
            let host = String(text[..<colon])
            if host == "localhost" {
                self.init(port: p)
            } else {
                guard IPv4.parse(host) != nil else { return nil }
                self.init(host: host, port: p)
            }
        } else {
            return nil
        }
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

enum IPv4 {
    static func parse(_ text: String) -> [Int]? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        let octets = parts.compactMap { p -> Int? in
            guard !p.isEmpty, p.count <= 3, p.allSatisfy(\.isNumber), let v = Int(p), v <= 255 else { return nil }
            return v
        }
        return octets.count == 4 ? octets : nil
    }
}
