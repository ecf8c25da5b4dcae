import Testing
@testable import UDIF

/// The scan resource's two layouts and the image identity derived from it.
@Suite struct ScanDataTests {
    let entries = (0..<4).map { i in
        ScanData.Entry(diskOffset: UInt64(i) << 20, length: 1 << 20, sha256: [UInt8](repeating: UInt8(i + 1), count: 32))
    }

    @Test func currentVersionRoundTripsWithAndWithoutTheLinearDigest() throws {
        let linear = [UInt8](repeating: 0x5A, count: 32)
        for digest in [linear, nil] {
            let scan = ScanData(diskBytes: 4 << 20, diskSHA256: digest, chunks: entries)
            let bytes = scan.serialized()
            #expect(Array(bytes[0..<8]) == Array("ASRSCAN3".utf8))
            #expect(try ScanData(parsing: bytes) == scan)
        }
    }

    /// Scans by an earlier asr are still read, as version 1, with or without the linear digest.
    @Test func earlierScansReadAsVersionOne() throws {
        for (magic, linear) in [("ASRSCAN1", true), ("ASRSCAN2", false)] {
            var bytes = ScanData(diskBytes: 4 << 20, diskSHA256: [UInt8](repeating: 7, count: 32), chunks: entries).serialized()
            bytes.replaceSubrange(0..<8, with: Array(magic.utf8))
            bytes.replaceSubrange(12..<16, with: [0, 0, 0, 0])
            let scan = try ScanData(parsing: bytes)
            #expect(scan.version == 1)
            #expect((scan.diskSHA256 != nil) == linear)
        }
    }

    @Test func appleDigestResourceOnlyWhenComputed() {
        let without = ScanData(diskBytes: 4 << 20, diskSHA256: nil, chunks: entries).resources(diskSHA1: nil, masterCRC: 0)
        #expect(without.keys.sorted() == [ScanData.resourceKey])
        let with = ScanData(diskBytes: 4 << 20, diskSHA256: [UInt8](repeating: 1, count: 32), chunks: entries)
            .resources(diskSHA1: [UInt8](repeating: 2, count: 20), masterCRC: 0)
        #expect(with.keys.sorted() == [ScanData.resourceKey, "nsiz"])
    }

    static func data(_ i: Int, sha: UInt8) -> ChunkRecord {
        ChunkRecord(diskOffset: UInt64(i) << 20, length: 1 << 20, kind: .data, codec: ChunkType.zlib.rawValue,
                    storedOffset: UInt64(i) * 1000, storedLength: 1000, sha256: [UInt8](repeating: sha, count: 32))
    }

    /// Any change to what decides the bytes written (an offset, a length, a kind, a codec, a
    /// stored offset or length, a digest, the disk's size) gives another identity.
    @Test func identityCoversEverythingThatDecidesTheBytesWritten() throws {
        let records = (0..<4).map { Self.data($0, sha: UInt8($0 + 1)) }
        let base = try ChunkTable(diskBytes: 4 << 20, records: records).identity
        #expect(base == (try ChunkTable(diskBytes: 4 << 20, records: records).identity))
        var variants: [[UInt8]] = []
        for field in 0..<6 {
            var changed = records
            switch field {
            case 0: changed[1].codec = ChunkType.bzip2.rawValue
            case 1: changed[2].storedOffset += 1
            case 2: changed[2].storedLength += 1
            case 3: changed[3].sha256[31] ^= 1
            case 4: changed[1] = .zeros(at: 1 << 20, length: 1 << 20)
            default: changed[1] = .free(at: 1 << 20, length: 1 << 20)
            }
            variants.append(try ChunkTable(diskBytes: 4 << 20, records: changed).identity)
        }
        var moved = records
        moved[3].diskOffset += 512
        moved[3].length -= 512
        moved[2].length += 512
        variants.append(try ChunkTable(diskBytes: 4 << 20, records: moved).identity)
        #expect(Set(variants + [base]).count == variants.count + 1)
    }

    /// The rule the identity rests on: a chunk without stored bytes must carry the digest of
    /// its zeros, free space carries none, and the chunks tile the disk.
    @Test func tablesBreakingTheRuleAreRefused() {
        var records = (0..<4).map { Self.data($0, sha: UInt8($0 + 1)) }
        records[1].kind = .zeros  // a data chunk's digest under a zero-fill type
        records[1].codec = ChunkType.zeroFill.rawValue
        records[1].storedOffset = 0
        records[1].storedLength = 0
        #expect(throws: UDIFError.self) { try ChunkTable(diskBytes: 4 << 20, records: records) }
        records[1] = .zeros(at: 1 << 20, length: 1 << 20)
        #expect((try? ChunkTable(diskBytes: 4 << 20, records: records)) != nil)
        var free = records
        free[2] = .free(at: 2 << 20, length: 1 << 20)
        free[2].sha256 = records[2].sha256
        #expect(throws: UDIFError.self) { try ChunkTable(diskBytes: 4 << 20, records: free) }
        var unstored = records
        unstored[3].storedLength = 0  // data with nothing stored: what a rogue relay sends
        #expect(throws: UDIFError.self) { try ChunkTable(diskBytes: 4 << 20, records: unstored) }
        var swapped = records
        swapped.swapAt(0, 2)
        #expect(throws: UDIFError.self) { try ChunkTable(diskBytes: 4 << 20, records: swapped) }
        #expect(throws: UDIFError.self) { try ChunkTable(diskBytes: 5 << 20, records: records) }
    }
}
