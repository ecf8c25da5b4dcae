import CommandSupport
import Testing

/// Apple's single-dash command lines become ours; ours pass through unchanged.
struct LegacySyntaxTests {
    @Test func restoreWithoutAVerb() {
        #expect(LegacySyntax.modernize(["-source", "a.dmg", "-target", "/dev/sdb", "-erase", "-noprompt"])
            == ["restore", "--source", "a.dmg", "--target", "/dev/sdb", "--erase", "--noprompt"])
    }

    @Test func verbsTakenFromTheirOption() {
        #expect(LegacySyntax.modernize(["-imagescan", "a.dmg"]) == ["imagescan", "--source", "a.dmg"])
        #expect(LegacySyntax.modernize(["-imagescan", "a.dmg", "-nostream"]) == ["imagescan", "--source", "a.dmg", "--nostream"])
        #expect(LegacySyntax.modernize(["-verify", "a.dmg"]) == ["verify", "--source", "a.dmg"])
        #expect(LegacySyntax.modernize(["-server", "c.plist", "-source", "a.dmg"]) == ["server", "--config", "c.plist", "--source", "a.dmg"])
    }

    @Test func nocheckIsNoverify() {
        #expect(LegacySyntax.modernize(["restore", "-source", "a", "-target", "b", "-nocheck"])
            == ["restore", "--source", "a", "--target", "b", "--noverify"])
    }

    @Test func modernLinesAndShortFlagsAreLeftAlone() {
        let modern = ["restore", "--source", "a", "--target", "b", "--erase"]
        #expect(LegacySyntax.modernize(modern) == modern)
        #expect(LegacySyntax.modernize(["mount", "-o", "ro", "-f", "a", "b"]) == ["mount", "-o", "ro", "-f", "a", "b"])
        // Values that look like options but are not words are kept: paths, numbers, "-".
        #expect(LegacySyntax.modernize(["convert", "-source", "x.dmg", "-output", "-"]) == ["convert", "--source", "x.dmg", "--output", "-"])
        #expect(LegacySyntax.modernize([]) == [])
        // -verify with a target is restore's option, not the verify verb.
        #expect(LegacySyntax.modernize(["-source", "a", "-target", "b", "-verify"]).first == "restore")
    }
}
