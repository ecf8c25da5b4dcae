import SystemSupport
import Foundation
import TestSupport
import Multicast
import Testing

@Suite struct ConfigTests {
    func plist(_ body: String) -> Data {
        Data("""
            <?xml version="1.0" encoding="UTF-8"?>
            <!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
            <plist version="1.0"><dict>\(body)</dict></plist>
            """.utf8)
    }

    @Test func appleKeysWithDefaults() throws {
        let c = try ServerConfig(plist: plist("<key>Data Rate</key><integer>6000000</integer><key>Multicast Address</key><string>239.1.2.3</string>"))
        #expect(c.dataRate == 6_000_000)
        #expect(c.multicastAddress == "239.1.2.3")
        #expect(c.port == 7800)
        #expect(c.multicastTTL == 3)
        #expect(c.dnsServiceDiscovery)
        #expect(c.loopSuspend == 0)
        #expect(c.clientDataRate == nil)
        #expect(c.maxConnections == 1024 && c.maxConnectionsPerAddress == 8)
    }

    @Test func everyKey() throws {
        let c = try ServerConfig(plist: plist("""
            <key>Data Rate</key><integer>12000000</integer>
            <key>Multicast Address</key><string>224.0.0.200</string>
            <key>Client Data Rate</key><integer>5000000</integer>
            <key>DNS Service Discovery</key><false/>
            <key>Loop Suspend</key><integer>4</integer>
            <key>Multicast TTL</key><integer>16</integer>
            <key>Port</key><integer>7900</integer>
            <key>Max Connections</key><integer>300</integer>
            <key>Max Connections Per Address</key><integer>2</integer>
            """))
        #expect(c.maxConnections == 300 && c.maxConnectionsPerAddress == 2)
        #expect(c.effectiveRate == 5_000_000)
        #expect(!c.dnsServiceDiscovery)
        #expect(c.loopSuspend == 4)
        #expect(c.multicastTTL == 16)
        #expect(c.port == 7900)
    }

    static let rateKind = "a non-negative integer (bytes per second)"

    @Test(arguments: [
        ("<key>Multicast Address</key><string>239.1.2.3</string>", "Data Rate", MulticastError.ConfigProblem.missing),
        ("<key>Data Rate</key><integer>1</integer>", "Multicast Address", .missing),
        ("<key>Data Rate</key><string>fast</string><key>Multicast Address</key><string>239.1.2.3</string>", "Data Rate", .wrongType(expected: rateKind)),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>10.0.0.1</string>", "Multicast Address", .notMulticast(address: "10.0.0.1")),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>240.0.0.1</string>", "Multicast Address", .notMulticast(address: "240.0.0.1")),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2</string>", "Multicast Address", .notMulticast(address: "239.1.2")),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><integer>5</integer>", "Multicast Address", .wrongType(expected: "a string")),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2.3</string><key>Multicast TTL</key><integer>0</integer>", "Multicast TTL", .outOfRange(0, 1...255)),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2.3</string><key>Port</key><integer>70000</integer>", "Port", .outOfRange(70000, 1...65535)),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2.3</string><key>DNS Service Discovery</key><string>yes</string>", "DNS Service Discovery", .wrongType(expected: "a boolean")),
        ("<key>Data Rate</key><integer>0</integer><key>Multicast Address</key><string>239.1.2.3</string>", "Data Rate", .notPositive),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2.3</string><key>Client Data Rate</key><integer>0</integer>", "Client Data Rate", .notPositive),
    ])
    func badConfigsNameTheirKey(body: String, key: String, problem: MulticastError.ConfigProblem) {
        let e = #expect(throws: MulticastError.self) { try ServerConfig(plist: plist(body), name: "cfg.plist") }
        #expect(e == .configKey(name: "cfg.plist", key: key, problem), "\(body)")
        #expect(e?.description.hasPrefix("cfg.plist: \"\(key)\"") == true || e?.description.hasPrefix("cfg.plist: required key \"\(key)\"") == true,
                "\(e.map(String.init(describing:)) ?? "")")
        #expect(e?.description.contains("\n") == false)
    }

    @Test func notAPlistAtAll() {
        #expect(throws: MulticastError.configNotXML(name: "configuration", reason: "is not an XML property list")) {
            try ServerConfig(plist: Data("hello".utf8))
        }
        #expect(throws: MulticastError.configNotDictionary(name: "configuration")) { try ServerConfig(plist: Data("<plist><array/></plist>".utf8)) }
        #expect(throws: MulticastError.unreadableConfig(path: "/nonexistent/cfg.plist")) { try ServerConfig.load("/nonexistent/cfg.plist") }
    }
}

@Suite struct ConfigMutationTests {
    /// Randomized mutation of a valid plist: a clear error or a valid configuration, no crash.
    @Test func mutatedConfigsFailCleanly() {
        let seed = SplitMix64.seed(default: 0x5EED_0F_C0F1)
        var rng = SplitMix64(seed: seed)
        let original = Array("""
            <?xml version="1.0" encoding="UTF-8"?>
            <plist version="1.0"><dict><key>Data Rate</key><integer>6000000</integer>
            <key>Multicast Address</key><string>239.1.2.3</string><key>Port</key><integer>7800</integer>
            <key>Multicast TTL</key><integer>3</integer><key>DNS Service Discovery</key><true/></dict></plist>
            """.utf8)
        let alphabet = Array("0123456789.<>/ -abcdefgikrstuy".utf8)
        for _ in 0..<5000 {
            var bytes = original
            for _ in 0..<Int.random(in: 1...4, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = alphabet.randomElement(using: &rng)!
            }
            do throws(MulticastError) {
                let c = try ServerConfig(plist: Data(bytes))
                #expect(c.dataRate > 0 && c.multicastTTL > 0 && c.port > 0, "seed \(seed)")
            } catch {
                #expect(!error.description.contains("\n"), "seed \(seed): \(error)")
            }
        }
    }
}
