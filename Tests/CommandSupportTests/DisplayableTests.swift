import Foundation
import SystemSupport
import Testing

/// The one escaping rule for text from the network or an image shown on a terminal or in a
/// log, and its JSON counterpart.
@Suite struct DisplayableTests {
    @Test func plainTextIsLeftAsItIs() {
        #expect(displayable("image-one@host") == "image-one@host")
        #expect(displayable("Macintosh HD — été 日本") == "Macintosh HD — été 日本")
        #expect(displayable(#"C:\dir "x""#) == #"C:\dir "x""#)
    }

    @Test func controlsAndBidiOverridesBecomeVisibleEscapesInQuotes() {
        #expect(displayable("a\u{1B}[2Jb") == #""a\x1b[2Jb""#)
        #expect(displayable("a\u{0}b\u{7}c\u{7F}") == #""a\x00b\x07c\x7f""#)
        #expect(displayable("line\nnext\r\tx") == #""line\nnext\r\tx""#)
        #expect(displayable("csi\u{9B}31m nel\u{85} c1\u{80}") == #""csi\u{9B}31m nel\u{85} c1\u{80}""#)
        for scalar: UInt32 in [0x202A, 0x202B, 0x202C, 0x202D, 0x202E, 0x2066, 0x2067, 0x2068, 0x2069, 0x200E, 0x200F, 0x061C, 0x2028, 0x2029] {
            let text = "x" + String(Unicode.Scalar(scalar)!) + "y"
            #expect(displayable(text) == "\"x\\u{\(String(scalar, radix: 16, uppercase: true))}y\"", "\(scalar)")
        }
        #expect(displayable("gpj.exe\u{202E}") == #""gpj.exe\u{202E}""#)
    }

    /// Quoted text escapes its quotes and backslashes, and plain text never begins with a quote:
    /// no name can pass for the escaped form of another.
    @Test func escapesAreUnambiguous() {
        #expect(displayable("a\\x1b\u{1B}") == #""a\\x1b\x1b""#)
        #expect(displayable("\"a\\x1b\"") == #""\"a\\x1b\"""#)
        #expect(displayable("\"a\\x1b\"") != displayable("a\u{1B}"))
        #expect(displayable("say \"hi\"\n") == #""say \"hi\"\n""#)
    }

    @Test func nothingIsDroppedAndLongTextIsCut() {
        let hostile = "\u{1B}\u{9B}\u{202E}"
        #expect(displayable(hostile) == #""\x1b\u{9B}\u{202E}""#)
        let long = String(repeating: "a", count: 300)
        #expect(displayable(long) == String(repeating: "a", count: 256) + "...(44 more)")
        #expect(displayable(String(repeating: "\u{1B}", count: 10), limit: 2) == #""\x1b\x1b...(8 more)""#)
    }

    @Test func jsonKeepsTheExactStringButNothingATerminalActsOn() throws {
        let name = "evil\u{1B}[31m\u{9B}2J\u{202E}gpj.exe\u{2066}\u{7F}"
        let json = terminalSafeJSON(String(decoding: try JSONEncoder().encode(["name": name]), as: UTF8.self))
        #expect(!json.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) || (0x2000...0x206F).contains($0.value) },
                "\(json.debugDescription)")
        #expect(json.contains("\\u009B") && json.contains("\\u202E") && json.contains("\\u2066") && json.contains("\\u007F"), "\(json)")
        let back = try JSONDecoder().decode([String: String].self, from: Data(json.utf8))
        #expect(back["name"] == name)
    }
}
