import Testing
@testable import Imaging

@Suite struct ByteSizeTests {
    @Test func parsesPlainAndSuffixedSizes() throws {
        #expect(try ByteSize.parse("512") == 512)
        #expect(try ByteSize.parse("4K") == 4096)
        #expect(try ByteSize.parse("64m") == 64 << 20)
        #expect(try ByteSize.parse("2G") == 2 << 30)
        #expect(try ByteSize.parse("1T") == 1 << 40)
        #expect(try ByteSize.parse("10MiB") == 10 << 20)
        #expect(try ByteSize.parse("3GB") == 3 << 30)
    }

    @Test(arguments: ["", "0", "-5", "abc", "12Q", "1.5G", "99999999999999999999", "16777216T"])
    func rejectsNonsense(_ text: String) {
        let e = #expect(throws: ImagingError.self) { try ByteSize.parse(text) }
        guard case .invalidSize(text, _)? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
    }
}

@Suite struct MountEntryTests {
    @Test func mountinfoEscapesAreDecoded() {
        #expect(MountEntry.unescape("/mnt/with\\040space") == "/mnt/with space")
        #expect(MountEntry.unescape("/plain") == "/plain")
    }

    @Test func rootIsMounted() throws {
        #expect(try MountEntry.at("/") != nil)
    }
}
