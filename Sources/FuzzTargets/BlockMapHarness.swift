import SystemSupport
import Crypto
import Foundation
import Imaging

/// The `.bmap` reader. A mutated map almost never keeps a valid BmapFileChecksum, which the
/// reader checks before the ranges, so each input is parsed as it is and again with its
/// checksum recomputed: the second parse reaches the range parsing.
enum BlockMapHarness {
    static func bmap(_ input: [UInt8]) throws {
        let text = String(decoding: input, as: UTF8.self)
        for candidate in [text, resigned(text)].compactMap({ $0 }) {
            guard let map = try? BlockMap(parsing: candidate) else { continue }
            try exercise(map)
        }
    }

    static func exercise(_ map: BlockMap) throws {
        var pos: UInt64 = 0
        for e in map.expectations {
            try check(e.offset == pos && e.length > 0, "block map expectations leave a gap or overlap at \(e.offset)")
            pos += e.length
        }
        try check(pos == map.imageSize, "block map expectations cover \(pos) of \(map.imageSize) bytes")
        try check((try? BlockMap(parsing: map.xml())) == map, "block map does not survive xml()")
    }

    /// The text with its BmapFileChecksum replaced by the right one, as the reader computes it
    /// (SHA-256 of the file with the checksum's digits zeroed); nil without the element.
    static func resigned(_ text: String) -> String? {
        guard let open = text.range(of: "<BmapFileChecksum>"),
              let close = text.range(of: "</BmapFileChecksum>", range: open.upperBound..<text.endIndex) else { return nil }
        let zeroed = text[..<open.upperBound] + " " + String(repeating: "0", count: 64) + " " + text[close.lowerBound...]
        let digest = hex(Array(SHA256.hash(data: Data(zeroed.utf8))))
        return text[..<open.upperBound] + " " + digest + " " + text[close.lowerBound...]
    }
}
