import CFilesystemIO

/// ext2, ext3 and ext4: the superblock is checked here, then libext2fs reads the block bitmaps
/// (it knows BLOCK_UNINIT groups, flex_bg, meta_bg and bigalloc).
enum Ext2 {
    static let superblockOffset: UInt64 = 1024

    static func recognise(_ partition: Partition) -> Recognised? {
        guard partition.length >= 2048,
              let sb = try? partition.bytes(at: superblockOffset, count: 1024),
              sb.le16(56) == 0xEF53, sb.le32(24) <= 6 else { return nil }
        if sb.le32(96) & incompatJournalDevice != 0 { return .whole("ext journal device") }
        let name = self.name(sb)
        return .mapped(name) { () throws(FilesystemError) in try map(partition, superblock: sb, name: name) }
    }

    // Feature bits (e2fsprogs' ext2_fs.h).
    static let compatHasJournal: UInt64 = 0x4
    static let incompatRecover: UInt64 = 0x4
    static let incompatJournalDevice: UInt64 = 0x8
    static let incompat64Bit: UInt64 = 0x80
    static let readOnlyCompatBigalloc: UInt64 = 0x200
    /// What ext3 may have; anything beyond makes it ext4 (blkid's rule).
    static let ext3Incompat: UInt64 = 0x2 | incompatRecover | 0x10
    static let ext3ReadOnlyCompat: UInt64 = 0x1 | 0x2 | 0x4

    static func name(_ sb: [UInt8]) -> String {
        if sb.le32(96) & ~ext3Incompat != 0 || sb.le32(100) & ~ext3ReadOnlyCompat != 0 { return "ext4" }
        return sb.le32(92) & compatHasJournal != 0 ? "ext3" : "ext2"
    }

    static func map(_ partition: Partition, superblock sb: [UInt8], name: String) throws(FilesystemError) -> UsageMap {
        let blockSize = UInt64(1024) << sb.le32(24)
        let blocks = sb.le32(4) | (sb.le32(96) & incompat64Bit != 0 ? sb.le32(0x150) << 32 : 0)
        let firstDataBlock = sb.le32(20)
        guard blocks > firstDataBlock, let bytes = blocks.times(blockSize) else {
            throw .inconsistent("its superblock gives \(blocks) blocks of \(blockSize) bytes, the first data block \(firstDataBlock)")
        }
        guard bytes <= partition.length else {
            throw .inconsistent("it is \(bytes) bytes, larger than its \(partition.length)-byte partition")
        }
        // A group's block bitmap is one block: a bit per block, or per cluster with bigalloc.
        let perGroup = sb.le32(100) & readOnlyCompatBigalloc != 0 ? sb.le32(36) : sb.le32(32)
        guard perGroup > 0, perGroup <= 8 * blockSize, sb.le32(32) > 0, sb.le32(40) > 0 else {
            throw .inconsistent("its superblock gives \(perGroup) bitmap bits and \(sb.le32(40)) inodes per group")
        }
        if sb.le32(96) & incompatRecover != 0 { throw .unsafeState("its journal needs recovery (run e2fsck)") }
        // s_state: bit 0 cleanly unmounted, bit 1 errors found. Either way the bitmaps may be wrong.
        let state = sb.le16(58)
        if state & 2 != 0 { throw .unsafeState("it has errors recorded (run e2fsck)") }
        if state & 1 == 0 { throw .unsafeState("it was not cleanly unmounted (run e2fsck)") }
        let ranges = try LibraryReader.map(partition) { asr_ext2_map($0) }
        return UsageMap(filesystem: name, method: "block bitmaps (libext2fs)", length: partition.length, allocated: ranges)
    }
}
