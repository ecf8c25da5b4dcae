import Foundation
import Glibc
import Testing
import UDIF
@testable import Multicast

/// Inputs the fuzz harnesses (Sources/FuzzTargets) found crashing or misbehaving, and what the
/// bounds review beside them found, kept so the fixes stay fixed.
@Suite struct MulticastFuzzRegressionTests {
    func refused(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        let e = #expect(throws: MulticastError.self, sourceLocation: sourceLocation) { try ServerConfig(plist: Data(bytes)) }
        #expect(e.map { !$0.description.contains("\n") } == true, "\(e.map(String.init(describing:)) ?? "")", sourceLocation: sourceLocation)
    }

    /// Foundation's XML plist decoder asserted (process killed) on invalid UTF-8 in an integer.
    @Test func invalidUTF8InAnIntegerIsRefused() {
        refused(Array("<plist version=\"1.0\"><dict><key>Data Rate</key><integer>".utf8) + [0xFD]
            + Array("000000</integer><key>Multicast Address</key><string>239.1.2.3</string></dict></plist>".utf8))
    }

    /// Binary plists crashed both decoders on Linux (libFuzzer, config harness, each from our
    /// binary seed with bytes shuffled): Foundation's trapped on a key string lying outside the
    /// file, and CoreFoundation's, tried instead, made a set holding a wild pointer. Only XML
    /// is read now; a binary config is refused with the conversion to run.
    @Test func binaryPlistsAreRefused() throws {
        let crashes = [
            "YnBsaXN0MDDXAQIDBAUGBwgJCgsMDQ5UUEN0cm8QbF8QaWVudCBEYXRhIFJhdGVdTXVsdGljYXN0IFRUTF8QEU11bHRpY2FzdCBBZGRyZXNzWURhdGEgUmF0ZV8QFUROUyBTZXJ2aXNjIGllRGNvdmVyeVxMb29wIFN1c3BlbmQRHnkSAB6EgBAIWzAyNTIxLi4wLjUwEgBbjYAIEAMIFxwvPVFbc4CDiIqWm5wAAAAAAAABAQAAAAAAAAAPAAAAAAAAAAAAAAAAAAAAng==",
            "YnBsaXN0MDDHAQIDBAUGBwgJCgsMDQ5UUG9ydF8QEENsaWVudCBEYXRhIFJhdGVdTXVsdGljYXN0IFRUTF8QEU11bHRpY2FzdCBBZGRyZXNzWURhdGEgUmF0ZV8QFUROUyBTZXJ2aWNlIERpc2NvdmVyeVxMb29wIFN1c3BlbmQRHnkSAB6EgBAIWzAyNTIxLi4wLjUwEgBbjYAIEAMIFxwvPVFbc4CDiIqWm5wAAAAAAAABAQAAAAAAAAAPAAAAAAAAAAAAAAAAAAAAng==",
        ]
        for crash in crashes { refused([UInt8](try #require(Data(base64Encoded: crash)))) }
        let dict: [String: Any] = ["Data Rate": 6_000_000, "Multicast Address": "239.1.2.3"]
        let binary = try PropertyListSerialization.data(fromPropertyList: dict, format: .binary, options: 0)
        let e = #expect(throws: MulticastError.self) { try ServerConfig(plist: binary, name: "cfg.plist") }
        guard case .configNotXML(name: "cfg.plist", let reason)? = e else { Issue.record("\(String(describing: e))"); return }
        #expect(reason.contains("plutil -convert xml1"))
        let xml = try PropertyListSerialization.data(fromPropertyList: dict, format: .xml, options: 0)
        #expect(try ServerConfig(plist: xml).dataRate == 6_000_000)
    }

    /// Text that is not XML would reach the OpenStep-format parser, which nothing fuzzes.
    @Test func openStepTextIsRefused() {
        refused(Array("{ \"Data Rate\" = 6000000; \"Multicast Address\" = \"239.1.2.3\"; }".utf8))
    }

    /// Containers nested thousands deep overflowed the stack in Foundation's XML parser.
    @Test func deeplyNestedPlistIsRefused() {
        let deep = String(repeating: "<array>", count: 20_000) + String(repeating: "</array>", count: 20_000)
        refused(Array("<plist version=\"1.0\"><dict><key>Port</key>\(deep)</dict></plist>".utf8))
    }

    /// The address went into the error as it was, line break and all (libFuzzer, config).
    @Test func addressWithALineBreakGivesAOneLineError() {
        refused(Array("""
            <plist version="1.0"><dict><key>Data Rate</key><integer>6000000</integer>
            <key>Multicast Address</key><string>478239.ient
            239.</string></dict></plist>
            """.utf8))
    }

    /// Zero chunks may be long: two whose lengths sum past 2^64 made the client's manifest
    /// check trap on overflow instead of refusing the manifest (libFuzzer, control harness).
    /// A zero run past `ZeroDigests.maxLength` is refused before its digest is computed.
    @Test func manifestWhoseLengthsWrapIsRefused() {
        let sha = ZeroDigests.shared.sha256(of: 0)
        let manifest = [
            ManifestEntry(diskOffset: 0, length: 1 << 63, storedLength: 0, codec: 0, sha256: sha),
            ManifestEntry(diskOffset: 1 << 63, length: 1 << 63, storedLength: 0, codec: 0, sha256: sha),
            ManifestEntry(diskOffset: 0, length: 4096, storedLength: 100, codec: 1, sha256: sha),
        ]
        #expect(throws: MulticastError.self) { try ManifestEntry.table(of: manifest, diskBytes: 4096) }
        #expect(throws: MulticastError.self) { try ManifestEntry.table(of: Array(manifest.prefix(1)), diskBytes: 1 << 63) }
        let fine = [ManifestEntry(diskOffset: 0, length: 4 << 20, storedLength: 0, codec: 0, sha256: ZeroDigests.shared.sha256(of: 4 << 20))]
        #expect(throws: Never.self) { try ManifestEntry.table(of: fine, diskBytes: 4 << 20) }
    }

    /// 4096 ranges each naming everything cost a walk over the whole manifest each (found by
    /// review): overlapping ranges now count once, so a report is linear in the manifest.
    @Test func hugeReportsCostLinearWork() {
        let sha = [UInt8](repeating: 0, count: 32)
        let manifest = (0..<300_000).map { ManifestEntry(diskOffset: UInt64($0) << 20, length: 1 << 20, storedLength: 1, codec: 1, sha256: sha) }
        var s = Carousel(manifest: manifest)
        let took = ContinuousClock().measure {
            s.update(1, with: .init(received: 0, writeRate: 0, missing: Array(repeating: (0, UInt32.max), count: 4096)))
        }
        #expect(s.wantedCount == manifest.count)
        #expect(took < .seconds(10), "\(took)")
    }

    /// A frame's length is only the peer's claim: the read buffer grows with the bytes that
    /// arrive instead of being allocated at the claimed size up front (found by review). A
    /// frame larger than one read still arrives whole; one cut short is an error.
    @Test func framesAreReadAsTheyArrive() throws {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let reader = ControlConnection(fd: fds[0], peer: "test")
        let sha = [UInt8](repeating: 3, count: 32)
        let manifest = ControlMessage.manifest((0..<3000).map {
            ManifestEntry(diskOffset: UInt64($0) << 20, length: 1 << 20, storedLength: 9, codec: 1, sha256: sha)
        })
        // 168 KB of manifest, then a frame claiming 64 MiB that brings 10 bytes and hangs up.
        let bytes = manifest.encoded() + [0x04, 0, 0, 0, 3] + [UInt8](repeating: 0, count: 10)
        let writer = fds[1]
        let wrote = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            var done = 0
            while done < bytes.count {
                let n = bytes.withUnsafeBytes { write(writer, $0.baseAddress! + done, bytes.count - done) }
                guard n > 0 else { break }
                done += n
            }
            close(writer)
            wrote.signal()
        }
        #expect(try reader.receive() == manifest)
        #expect(throws: MulticastError.closed(peer: "test")) { try reader.receive() }
        wrote.wait()
    }

    /// The configuration was read whole before its size was checked: /dev/zero (or any huge
    /// file or pipe) never finished (found by review). Now reading stops past the limit.
    @Test func endlessConfigFileIsRefused() {
        #expect(throws: MulticastError.configTooLarge(path: "/dev/zero")) { try ServerConfig.load("/dev/zero") }
    }
}
