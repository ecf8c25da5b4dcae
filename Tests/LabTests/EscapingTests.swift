import Foundation
import SystemSupport
import TestSupport
import Testing
import UDIF

/// Names from an image printed by `asr info`: controls and bidi overrides as visible escapes in
/// the text, the exact string in JSON. (Names from the network: ServiceDiscoveryTests.)
@Suite struct EscapingTests {
    /// ESC starting a colour sequence, a C1 CSI (U+009B) and a right-to-left override.
    static let hostile = "evil\u{1B}[31m\u{9B}2J\u{202E}gpj.exe"
    static let shown = #""evil\x1b[31m\u{9B}2J\u{202E}gpj.exe""#

    /// True when `text` holds nothing a terminal acts on or reorders by.
    static func isInert(_ text: String) -> Bool {
        !text.unicodeScalars.contains { $0.value < 0x20 && $0 != "\n" && $0 != "\t" || (0x7F...0x9F).contains($0.value)
            || (0x202A...0x202E).contains($0.value) || (0x2066...0x2069).contains($0.value) || $0.value == 0x200E || $0.value == 0x200F }
    }

    @Test func aBlkxNameIsPrintedEscapedByInfoAndExactInJSON() throws {
        let dir = TemporaryDirectory()
        let raw = dir.file("disk.raw"), image = dir.file("disk.dmg")
        try Run.shell("head -c 1M /dev/urandom > '\(raw)'; truncate -s 2M '\(raw)'")
        #expect(try CLI.run(["create", "--source", raw, "--output", image]).status == 0)
        let udif = try UDIFImage(path: image)
        var blkx = udif.resourceFork.blkx
        blkx[0].name = Self.hostile
        try ImageRewriter(udif, replacing: image, reorder: false).finish(replacingResources: ["blkx": blkx])

        let text = try CLI.run(["info", "--source", image])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.contains("\t" + Self.shown), "\(text.stdout)")
        #expect(Self.isInert(text.stdout), "\(text.stdout.debugDescription)")

        let json = try CLI.run(["info", "--source", image, "--json"])
        #expect(json.status == 0, "\(json.stderr)")
        #expect(Self.isInert(json.stdout), "\(json.stdout.debugDescription)")
        let info = try #require(try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any])
        let names = (info["regions"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
        #expect(names.contains(Self.hostile), "\(names)")
    }
}
