import Foundation
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
            """))
        #expect(c.effectiveRate == 5_000_000)
        #expect(!c.dnsServiceDiscovery)
        #expect(c.loopSuspend == 4)
        #expect(c.multicastTTL == 16)
        #expect(c.port == 7900)
    }

    @Test(arguments: [
        ("<key>Multicast Address</key><string>239.1.2.3</string>", "\"Data Rate\" is missing"),
        ("<key>Data Rate</key><integer>1</integer>", "\"Multicast Address\" is missing"),
        ("<key>Data Rate</key><string>fast</string><key>Multicast Address</key><string>239.1.2.3</string>", "\"Data Rate\" must be"),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>10.0.0.1</string>", "224.0.0.0/4"),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>240.0.0.1</string>", "224.0.0.0/4"),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2</string>", "224.0.0.0/4"),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><integer>5</integer>", "\"Multicast Address\" must be"),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2.3</string><key>Multicast TTL</key><integer>0</integer>", "\"Multicast TTL\""),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2.3</string><key>Port</key><integer>70000</integer>", "\"Port\""),
        ("<key>Data Rate</key><integer>1</integer><key>Multicast Address</key><string>239.1.2.3</string><key>DNS Service Discovery</key><string>yes</string>", "\"DNS Service Discovery\""),
        ("<key>Data Rate</key><integer>0</integer><key>Multicast Address</key><string>239.1.2.3</string>", "\"Data Rate\" must be a positive"),
    ])
    func badConfigsNameTheirKey(body: String, mention: String) {
        do {
            _ = try ServerConfig(plist: plist(body), name: "cfg.plist")
            Issue.record("accepted: \(body)")
        } catch let e as MulticastError {
            #expect(e.message.contains(mention), "\(e.message)")
            #expect(e.message.hasPrefix("cfg.plist"))
            #expect(!e.message.contains("\n"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func notAPlistAtAll() {
        #expect(throws: MulticastError.self) { try ServerConfig(plist: Data("hello".utf8)) }
        #expect(throws: MulticastError.self) { try ServerConfig(plist: Data("<plist><array/></plist>".utf8)) }
        #expect(throws: MulticastError.self) { try ServerConfig.load("/nonexistent/cfg.plist") }
    }
}

@Suite struct ConfigMutationTests {
    /// Randomized mutation of a valid plist: a clear error or a valid configuration, no crash.
    @Test func mutatedConfigsFailCleanly() {
        var rng = SystemRandomNumberGenerator()
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
            do {
                let c = try ServerConfig(plist: Data(bytes))
                #expect(c.dataRate > 0 && c.multicastTTL > 0 && c.port > 0)
            } catch let e as MulticastError {
                #expect(!e.message.contains("\n"))
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }
}
