/// HFS+ and HFSX (Apple TN1150), from the volume header and the allocation file's bitmap.
/// The first 1536 bytes, the alternate volume header and the tail past the last allocation
/// block are always allocated. The allocation file is read through the volume header's eight
/// extents; one fragmented beyond them (its rest in the extents B-tree) is not mapped.
enum HFSPlus {
    static let headerOffset: UInt64 = 1024

    static func recognise(_ partition: Partition) -> Recognised? {
        guard partition.length >= 1536, let header = try? partition.bytes(at: headerOffset, count: 512) else { return nil }
        let name: String
        switch (header.be16(0), header.be16(2)) {
        case (0x482B, 4): name = "HFS+"
        case (0x4858, 5): name = "HFSX"
        default: return nil
        }
        return .mapped(name) { () throws(FilesystemError) in try map(partition, header: header, name: name) }
    }

    /// Classic HFS ('BD'), possibly wrapping an HFS+ volume: recognised, imaged whole.
    static func recogniseStandardHFS(_ partition: Partition) -> Recognised? {
        guard partition.length >= 1536, (try? partition.bytes(at: headerOffset, count: 2)) == [0x42, 0x44] else { return nil }
        return .whole("HFS")
    }

    // Volume attribute bits (TN1150).
    static let unmountedBit: UInt64 = 1 << 8
    static let bootVolumeInconsistentBit: UInt64 = 1 << 11
    static let journaledBit: UInt64 = 1 << 13

    /// Bitmap bytes read at a time.
    static let step: UInt64 = 1 << 20

    static func map(_ partition: Partition, header h: [UInt8], name: String) throws(FilesystemError) -> UsageMap {
        let blockSize = h.be32(40), blocks = h.be32(44)
        guard blockSize.isPowerOfTwo, blockSize >= 512, blocks > 0, let volumeBytes = blocks.times(blockSize) else {
            throw .inconsistent("its volume header gives \(blocks) blocks of \(blockSize) bytes")
        }
        guard volumeBytes <= partition.length, volumeBytes >= 2048 else {
            throw .inconsistent("it is \(volumeBytes) bytes, for a \(partition.length)-byte partition")
        }
        let attributes = h.be32(4)
        guard attributes & unmountedBit != 0, attributes & bootVolumeInconsistentBit == 0 else {
            throw .unsafeState("it was not cleanly unmounted (run fsck_hfs)")
        }
        if attributes & journaledBit != 0 { try checkJournalEmpty(partition, block: h.be32(12), blockSize: blockSize, blocks: blocks) }

        // The allocation file's fork: logical size, clump size, total blocks, then 8 extents.
        let bitmapBytes = (blocks + 7) / 8
        guard h.be64(112) >= bitmapBytes else {
            throw .inconsistent("its allocation file is \(h.be64(112)) bytes, less than \(bitmapBytes) for \(blocks) blocks")
        }
        var extents: [(start: UInt64, count: UInt64)] = []
        var covered: UInt64 = 0
        for i in 0..<8 where covered < bitmapBytes {
            let start = h.be32(128 + 8 * i), count = h.be32(132 + 8 * i)
            guard count > 0 else { break }
            guard start < blocks, count <= blocks - start else {
                throw .inconsistent("its allocation file's extent \(i) (blocks \(start)+\(count)) is past the volume's \(blocks) blocks")
            }
            extents.append((start, count))
            covered += count * blockSize
        }
        guard covered >= bitmapBytes else {
            throw .inconsistent("its allocation file continues past the volume header's 8 extents (in the extents overflow file)")
        }

        var allocation = Allocation(length: partition.length)
        allocation.add(0, count: 1536)
        var block: UInt64 = 0
        var runStart: UInt64? = nil
        for extent in extents {
            var at = extent.start * blockSize
            var left = min(extent.count * blockSize, bitmapBytes - block / 8)
            while left > 0 {
                let n = min(left, step)
                let bytes = try partition.bytes(at: at, count: Int(n))
                for byte in bytes {
                    for bit in 0..<8 where block < blocks {
                        let used = byte & (0x80 >> UInt8(bit)) != 0
                        if used, runStart == nil { runStart = block }
                        if !used, let start = runStart {
                            allocation.add(start * blockSize, count: (block - start) * blockSize)
                            runStart = nil
                        }
                        block += 1
                    }
                }
                at += n
                left -= n
            }
        }
        if let start = runStart { allocation.add(start * blockSize, count: (blocks - start) * blockSize) }
        // The alternate volume header: 1024 bytes before the end of the volume and of the partition.
        allocation.add(volumeBytes - 1024, count: 1024)
        allocation.add(volumeBytes, count: partition.length - volumeBytes)
        allocation.add(partition.length - 1024, count: 1024)
        return UsageMap(filesystem: name, method: "allocation file", length: partition.length, allocated: allocation.ranges)
    }

    /// A journal with transactions still in it is replayed at the next mount, and may allocate
    /// blocks the bitmap does not show yet.
    static func checkJournalEmpty(_ partition: Partition, block: UInt64, blockSize: UInt64, blocks: UInt64) throws(FilesystemError) {
        guard block > 0, block < blocks else { throw .inconsistent("its journal info block \(block) is outside the volume") }
        let info = try partition.bytes(at: block * blockSize, count: 52)
        let flags = info.be32(0)
        if flags & 2 != 0 { throw .unsafeState("its journal is on another device") }
        guard flags & 1 != 0, flags & 4 == 0 else { return }  // no journal in the volume, or one never used
        let offset = info.be64(36)
        guard offset < partition.length, partition.length - offset >= 24 else {
            throw .inconsistent("its journal is at byte \(offset), outside the partition")
        }
        let journal = try partition.bytes(at: offset, count: 24)
        // The header is in the byte order of the Mac that wrote it.
        let bigEndian: Bool
        switch (journal.be32(0), journal.le32(0)) {
        case (0x4A4E_4C78, _): bigEndian = true
        case (_, 0x4A4E_4C78): bigEndian = false
        default: throw .inconsistent("its journal header has no JNLx magic")
        }
        let start = bigEndian ? journal.be64(8) : journal.le64(8)
        let end = bigEndian ? journal.be64(16) : journal.le64(16)
        if start != end { throw .unsafeState("its journal holds transactions not yet replayed") }
    }
}
