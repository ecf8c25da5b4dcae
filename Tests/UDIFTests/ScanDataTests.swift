import Testing
@testable import UDIF

/// The scan resource's two layouts and the image identity derived from it.
@Suite struct ScanDataTests {
    let entries = (0..<4).map { i in
        ScanData.Entry(diskOffset: UInt64(i) << 20, length: 1 << 20, sha256: [UInt8](repeating: UInt8(i + 1), count: 32))
    }

    @Test func bothLayoutsRoundTrip() throws {
        let linear = [UInt8](repeating: 0x5A, count: 32)
        for digest in [linear, nil] {
            let scan = ScanData(diskBytes: 4 << 20, diskSHA256: digest, chunks: entries)
            let bytes = scan.serialized()
            #expect(Array(bytes[0..<8]) == Array((digest == nil ? "ASRSCAN2" : "ASRSCAN1").utf8))
            #expect(try ScanData(parsing: bytes) == scan)
        }
    }

    @Test func appleDigestResourceOnlyWhenComputed() {
        let without = ScanData(diskBytes: 4 << 20, diskSHA256: nil, chunks: entries).resources(diskSHA1: nil, masterCRC: 0)
        #expect(without.keys.sorted() == [ScanData.resourceKey])
        let with = ScanData(diskBytes: 4 << 20, diskSHA256: [UInt8](repeating: 1, count: 32), chunks: entries)
            .resources(diskSHA1: [UInt8](repeating: 2, count: 20), masterCRC: 0)
        #expect(with.keys.sorted() == [ScanData.resourceKey, "nsiz"])
    }

    /// Any change to the table (an offset, a length, a digest, a chunk becoming free, the
    /// disk's size) gives another identity; the same table gives the same one.
    @Test func identityCoversTheWholeTable() {
        let scan = ScanData(diskBytes: 4 << 20, diskSHA256: nil, chunks: entries)
        let base = scan.identity { _ in false }
        #expect(base == ScanData(diskBytes: 4 << 20, diskSHA256: [UInt8](repeating: 9, count: 32), chunks: entries).identity { _ in false },
                "the linear digest is not part of it")
        var variants: [[UInt8]] = [scan.identity { $0 == 2 }, ScanData(diskBytes: 5 << 20, diskSHA256: nil, chunks: entries).identity { _ in false }]
        for field in 0..<3 {
            var changed = entries
            switch field {
            case 0: changed[1].diskOffset += 512
            case 1: changed[3].length -= 512
            default: changed[2].sha256[31] ^= 1
            }
            variants.append(ScanData(diskBytes: 4 << 20, diskSHA256: nil, chunks: changed).identity { _ in false })
        }
        #expect(Set(variants + [base]).count == variants.count + 1)
    }
}
