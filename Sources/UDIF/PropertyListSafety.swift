/// Foundation's property-list decoder on Linux stops the process instead of throwing on some
/// inputs, so only the one form we fuzz and check reaches it: XML, valid UTF-8, nested at most
/// `maxDepth` deep. What the fuzz harnesses found: invalid UTF-8 inside an `<integer>` (an
/// assertion in its UTF-8 decoder); a binary plist with a string outside the file (a bounds
/// trap), and, read through CoreFoundation instead, one holding a set (a wild pointer). What
/// reading found: XML containers nested thousands deep (recursion until the stack runs out).
/// Every plist read from outside (image resource forks, the multicast configuration) passes
/// `check` before `PropertyListDecoder` sees it. hdiutil writes resource forks in XML; a binary
/// configuration converts with `plutil -convert xml1`.
public enum PropertyListSafety {
    /// Far deeper than any plist we read: a resource fork nests four containers.
    public static let maxDepth = 64

    public struct Rejection: Error, Sendable {
        /// Completes "the plist ...": "is not UTF-8 text", for example.
        public let reason: String
    }

    public static func check(_ bytes: [UInt8]) throws(Rejection) {
        if bytes.starts(with: Array("bplist".utf8)) {
            throw Rejection(reason: "is a binary property list; only XML is read (convert it: plutil -convert xml1 FILE)")
        }
        guard String(validating: bytes, as: UTF8.self) != nil else { throw Rejection(reason: "is not UTF-8 text") }
        // Anything else is the OpenStep text format, which has a parser of its own.
        let start = bytes.starts(with: [0xEF, 0xBB, 0xBF]) ? 3 : 0
        guard bytes[start...].first(where: { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }) == UInt8(ascii: "<") else {
            throw Rejection(reason: "is not an XML property list")
        }
        guard depth(of: bytes) <= maxDepth else { throw Rejection(reason: "nests containers more than \(maxDepth) deep") }
    }

    /// The deepest `<array>`/`<dict>` nesting, by tags alone: a tag inside a comment or a
    /// string counts too, which can only make the answer larger.
    static func depth(of bytes: [UInt8]) -> Int {
        let array = Array("array".utf8), dict = Array("dict".utf8)
        func names(_ name: [UInt8], at i: Int) -> Bool {
            guard bytes.count - i > name.count, bytes[i..<(i + name.count)].elementsEqual(name) else { return false }
            let next = bytes[i + name.count]
            return next == UInt8(ascii: ">") || next == UInt8(ascii: "/") || next == 0x20 || next == 0x09 || next == 0x0A || next == 0x0D
        }
        var depth = 0
        var deepest = 0
        var i = 0
        while i < bytes.count {
            defer { i += 1 }
            guard bytes[i] == UInt8(ascii: "<"), i + 1 < bytes.count else { continue }
            if bytes[i + 1] == UInt8(ascii: "/") {
                if names(array, at: i + 2) || names(dict, at: i + 2) { depth = max(0, depth - 1) }
                continue
            }
            guard names(array, at: i + 1) || names(dict, at: i + 1) else { continue }
            guard let close = bytes[(i + 1)...].firstIndex(of: UInt8(ascii: ">")) else { break }
            if bytes[close - 1] != UInt8(ascii: "/") {  // <array/> opens nothing
                depth += 1
                deepest = max(deepest, depth)
            }
            i = close
        }
        return deepest
    }
}
