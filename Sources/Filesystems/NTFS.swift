import CFilesystemIO

/// NTFS: the boot sector's geometry is checked here, then libntfs-3g mounts the volume
/// read-only and reads $Bitmap (it knows runlists, attribute lists and the MFT's fixups).
enum NTFS {
    static func recognise(_ partition: Partition) -> Recognised? {
        guard partition.length >= 512, let boot = try? partition.bytes(at: 0, count: 512),
              boot[3..<11].elementsEqual("NTFS    ".utf8), boot.le16(510) == 0xAA55 else { return nil }
        return .mapped("NTFS") { () throws(FilesystemError) in try map(partition, boot: boot) }
    }

    static func map(_ partition: Partition, boot: [UInt8]) throws(FilesystemError) -> UsageMap {
        let sectorSize = boot.le16(11)
        guard sectorSize.isPowerOfTwo, (256...4096).contains(sectorSize) else {
            throw .inconsistent("its boot sector gives \(sectorSize)-byte sectors")
        }
        // Sectors per cluster: up to 128 as they are; above, 2^(256 - n) (clusters past 64 KiB).
        let code = boot[13]
        let sectorsPerCluster: UInt64 = code <= 0x80 ? UInt64(code) : (code >= 0xF4 ? 1 << (256 - UInt64(code)) : 0)
        let clusterSize = sectorsPerCluster * sectorSize
        guard sectorsPerCluster.isPowerOfTwo, clusterSize <= 2 << 20 else {
            throw .inconsistent("its boot sector gives \(sectorsPerCluster) sectors per cluster")
        }
        let sectors = boot.le64(40)
        guard let bytes = sectors.times(sectorSize), bytes <= partition.length, bytes >= clusterSize else {
            throw .inconsistent("its boot sector gives \(sectors) sectors of \(sectorSize) bytes for a \(partition.length)-byte partition")
        }
        let clusters = bytes / clusterSize
        let mft = boot.le64(48), mirror = boot.le64(56)
        guard mft < clusters, mirror < clusters else {
            throw .inconsistent("its boot sector puts $MFT at cluster \(mft) and $MFTMirr at \(mirror) of \(clusters)")
        }
        // Clusters per MFT record: a count, or (negative) the log2 of the record's bytes.
        let record = Int8(bitPattern: boot[64])
        let recordBytes: UInt64 = record > 0 ? UInt64(record) * clusterSize : (record <= -9 && record >= -16 ? 1 << UInt64(-Int(record)) : 0)
        guard (256...65536).contains(recordBytes), recordBytes.isPowerOfTwo else {
            throw .inconsistent("its boot sector gives \(record) for the MFT record size")
        }
        let ranges = try LibraryReader.map(partition) { asr_ntfs_map($0) }
        return UsageMap(filesystem: "NTFS", method: "$Bitmap (libntfs-3g)", length: partition.length, allocated: ranges)
    }
}
