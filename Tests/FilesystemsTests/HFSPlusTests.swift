import Filesystems
import Foundation
import Testing
import TestSupport
import UDIF

/// The HFS+ volumes hdiutil made (the UDIF fixtures), read through the decoded image.
@Suite struct HFSPlusTests {
    /// The fixture's HFS+ partition: the blkx region hdiutil named Apple_HFS.
    static func partition(_ image: UDIFImage) throws -> (offset: UInt64, length: UInt64) {
        let region = try #require(image.regions.first { $0.name.contains("Apple_HFS") })
        return (region.table.firstSector * 512, region.table.sectorCount * 512)
    }

    static func partitionBytes(_ name: String = "hfsplus_zlib.dmg") throws -> [UInt8] {
        let image = try UDIFImage(path: Fixtures.directory.appendingPathComponent(name).path)
        let p = try partition(image)
        return try image.read(at: p.offset, count: Int(p.length))
    }

    @Test(arguments: Fixtures.decodable.map(\.name))
    func mapIsTheAllocationFile(_ name: String) throws {
        let image = try UDIFImage(path: Fixtures.directory.appendingPathComponent(name).path)
        let p = try Self.partition(image)
        let finding = FilesystemUsage.examine(image, offset: p.offset, length: p.length)
        guard case .mapped(let map) = finding else { Issue.record("\(finding)"); return }
        try checkWellFormed(map, length: p.length)
        #expect(map.filesystem == "HFS+")
        #expect(map.method == "allocation file")
        // The volume header's own count of free blocks is the truth the bitmap must agree with.
        let bytes = try image.read(at: p.offset, count: Int(p.length))
        let header = Array(bytes[1024..<1536])
        let be32 = { (at: Int) in header[at..<(at + 4)].reduce(UInt64(0)) { $0 << 8 | UInt64($1) } }
        let blockSize = be32(40), freeBlocks = be32(48)
        #expect(freeBlocks > 0)
        #expect(map.length - map.allocatedBytes == freeBlocks * blockSize)
        #expect(map.covers(0..<1536))
        #expect(map.covers(p.length - 1024..<p.length))
        // The files' text (the Apache license, an extended attribute) lies in allocated blocks.
        for text in ["Apache License", "My 1st extended attribute", "Keramics"] {
            let needle = Array(text.utf8)
            let at = try #require(find(needle, in: bytes), "\(text) is not in the volume")
            #expect(map.covers(UInt64(at)..<UInt64(at + needle.count)), "\(text) at \(at)")
        }
    }

    func find(_ needle: [UInt8], in bytes: [UInt8]) -> Int? {
        guard let first = needle.first else { return nil }
        var i = 0
        while i + needle.count <= bytes.count {
            if bytes[i] == first, bytes[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }

    @Test func damagedHeadersAreUnreadable() throws {
        let bytes = try Self.partitionBytes()
        func reason(_ edit: (inout [UInt8]) -> Void) -> String? {
            var b = bytes
            edit(&b)
            guard case .unreadable("HFS+", let reason) = examine(b) else { return nil }
            return reason
        }
        let fork = 1024 + 112
        // The allocation file's first extent emptied: its bitmap is nowhere in the header's
        // extents (it would be in the extents overflow file).
        #expect(reason { b in for k in 20..<24 { b[fork + k] = 0 } }?.contains("extents overflow") == true)
        // Its extent starting past the volume.
        #expect(reason { b in b[fork + 16] = 0x7F }?.contains("past the volume") == true)
        // Not cleanly unmounted.
        #expect(reason { b in b[1024 + 6] &= ~0x01 }?.contains("cleanly unmounted") == true)
        // More blocks than the partition holds.
        #expect(reason { b in b[1024 + 44] = 0x10 }?.contains("partition") == true)
        // Journaled, with the journal info block outside the volume.
        #expect(reason { b in b[1024 + 6] |= 0x20; for k in 12..<16 { b[1024 + k] = 0xFF } }?.contains("journal") == true)
    }

    @Test func classicHFSIsRecognisedNotMapped() throws {
        var bytes = [UInt8](repeating: 0, count: 1 << 20)
        (bytes[1024], bytes[1025]) = (0x42, 0x44)
        #expect(examine(bytes) == .unmapped(filesystem: "HFS"))
    }
}
