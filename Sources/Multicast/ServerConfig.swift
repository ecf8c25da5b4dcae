import SystemSupport
import Foundation
import UDIF

/// The multicast configuration plist, with Apple's key names:
/// `Data Rate` (bytes/s, required), `Multicast Address` (required, in 224.0.0.0/4),
/// `Client Data Rate`, `DNS Service Discovery` (default true), `Loop Suspend` (passes with no
/// client before pausing; 0 = never), `Multicast TTL` (default 3, never 0), `Port` (7800);
/// and asr's own `Max Connections` (1024: a lab of hundreds, each with one connection) and `Max Connections Per Address` (8), the control
/// connections the server keeps open at once.
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

    enum CodingKeys: String, CodingKey, CaseIterable {
        case dataRate = "Data Rate", multicastAddress = "Multicast Address", clientDataRate = "Client Data Rate"
        case dnsServiceDiscovery = "DNS Service Discovery", loopSuspend = "Loop Suspend"
        case multicastTTL = "Multicast TTL", port = "Port"
        case maxConnections = "Max Connections", maxConnectionsPerAddress = "Max Connections Per Address"
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
    }
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
