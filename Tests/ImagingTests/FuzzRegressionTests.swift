import Foundation
import Testing
@testable import Imaging

/// What the bounds review beside the fuzz harnesses found in the block-map reader, kept so the
/// fixes stay fixed.
@Suite struct ImagingFuzzRegressionTests {
    /// An ImageSize near UInt64.max overflowed the blocks-count arithmetic (a trap, before the
    /// file checksum is even looked at); the bmap harness replays it as a crash.
    @Test func impossibleImageSizeIsRefused() throws {
        let text = BlockMapTests.sample.xml()
        for size in ["18446744073709551615", "9223372036854775808"] {
            let huge = text.replacingOccurrences(of: "<ImageSize> 41060 </ImageSize>", with: "<ImageSize> \(size) </ImageSize>")
            #expect(huge != text)
            let e = #expect(throws: ImagingError.self) { try BlockMap(parsing: huge) }
            guard case .badBlockMap? = e else { Issue.record("\(size): wrong error \(String(describing: e))"); continue }
        }
        let largest = BlockMap(imageSize: UInt64(Int64.max), ranges: [.init(first: 1 << 40, last: 1 << 40, sha256: Array(repeating: 7, count: 32))])
        #expect(try BlockMap(parsing: largest.xml()) == largest)
        #expect(largest.expectations.reduce(0) { $0 + $1.length } == largest.imageSize)
    }

    /// The block map was read whole before its size was checked: /dev/zero never finished
    /// (found by review). Now reading stops past 256 MiB.
    @Test func endlessBlockMapFileIsRefused() {
        let e = #expect(throws: ImagingError.self) { try BlockMap.load("/dev/zero") }
        guard case .badBlockMap? = e else { Issue.record("wrong error: \(String(describing: e))"); return }
    }
}
