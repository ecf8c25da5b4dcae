/// FAT12, FAT16 and FAT32 (EFI system partitions too), from the BPB and the FAT itself:
/// the reserved sectors, every FAT copy and the FAT12/16 root directory are always allocated;
/// a cluster is allocated when its entry is non-zero in any copy of the FAT.
enum FAT {
    struct Geometry {
        var kind: String
        var entryBits: UInt64
        var sectorSize: UInt64
        var sectorsPerCluster: UInt64
        var reservedSectors: UInt64
        var fatCount: UInt64
        var fatSectors: UInt64
        var rootDirectorySectors: UInt64
        var totalSectors: UInt64
        var clusters: UInt64

        var firstDataSector: UInt64 { reservedSectors + fatCount * fatSectors + rootDirectorySectors }
        var clusterBytes: UInt64 { sectorsPerCluster * sectorSize }
    }

    /// A boot sector with a plausible BPB; the geometry is checked against the partition later.
    static func recognise(_ partition: Partition) -> Recognised? {
        guard partition.length >= 512, let boot = try? partition.bytes(at: 0, count: 512),
              boot[0] == 0xEB || boot[0] == 0xE9, boot.le16(510) == 0xAA55,
              [512, 1024, 2048, 4096].contains(boot.le16(11)),
              boot[13] != 0, UInt64(boot[13]).isPowerOfTwo,
              boot.le16(14) >= 1, boot[16] >= 1, boot[21] >= 0xF0 else { return nil }
        let name = (try? geometry(boot, partitionLength: partition.length))?.kind ?? (boot.le16(22) == 0 ? "FAT32" : "FAT")
        return .mapped(name) { () throws(FilesystemError) in try map(partition, boot: boot) }
    }

    /// The geometry the BPB describes, by Microsoft's rules (the cluster count decides the type).
    static func geometry(_ boot: [UInt8], partitionLength: UInt64) throws(FilesystemError) -> Geometry {
        let sectorSize = boot.le16(11), sectorsPerCluster = UInt64(boot[13])
        let reserved = boot.le16(14), fats = UInt64(boot[16]), rootEntries = boot.le16(17)
        let total = boot.le16(19) != 0 ? boot.le16(19) : boot.le32(32)
        let fatSectors = boot.le16(22) != 0 ? boot.le16(22) : boot.le32(36)
        let rootSectors = (rootEntries * 32 + sectorSize - 1) / sectorSize
        let firstData = reserved + fats * fatSectors + rootSectors
        guard fatSectors > 0, total > firstData else {
            throw .inconsistent("its BPB gives \(total) sectors, \(fatSectors) per FAT and data from sector \(firstData)")
        }
        guard total * sectorSize <= partitionLength else {
            throw .inconsistent("it is \(total * sectorSize) bytes, larger than its \(partitionLength)-byte partition")
        }
        let clusters = (total - firstData) / sectorsPerCluster
        var g = Geometry(kind: "FAT32", entryBits: 32, sectorSize: sectorSize, sectorsPerCluster: sectorsPerCluster,
                         reservedSectors: reserved, fatCount: fats, fatSectors: fatSectors,
                         rootDirectorySectors: rootSectors, totalSectors: total, clusters: clusters)
        if clusters < 4085 {
            (g.kind, g.entryBits) = ("FAT12", 12)
        } else if clusters < 65525 {
            (g.kind, g.entryBits) = ("FAT16", 16)
        }
        guard clusters > 0, clusters <= 0x0FFF_FFF5 else { throw .inconsistent("it has \(clusters) clusters") }
        // FAT32 keeps its root directory in clusters and its FAT size at offset 36.
        guard (g.entryBits == 32) == (boot.le16(22) == 0), g.entryBits != 32 || rootEntries == 0 else {
            throw .inconsistent("its BPB mixes FAT32 and FAT12/16 fields for \(clusters) clusters")
        }
        guard ((clusters + 2) * g.entryBits + 7) / 8 <= fatSectors * sectorSize else {
            throw .inconsistent("its \(fatSectors)-sector FAT is too small for \(clusters) clusters")
        }
        return g
    }

    /// FAT entries read per step, so the FAT is never held whole (a FAT32 FAT can be 1 GiB).
    static let entriesPerStep: UInt64 = 1 << 18

    static func map(_ partition: Partition, boot: [UInt8]) throws(FilesystemError) -> UsageMap {
        let g = try geometry(boot, partitionLength: partition.length)
        var allocation = Allocation(length: partition.length)
        let dataStart = g.firstDataSector * g.sectorSize
        allocation.add(0, count: dataStart)
        // Entries 0 and 1 are reserved; cluster n's entry is entry n.
        var first: UInt64 = 0
        let entries = g.clusters + 2
        var runStart: UInt64? = nil
        while first < entries {
            let count = min(g.entryBits == 12 ? entries : entriesPerStep, entries - first)
            let used = try usedEntries(partition, g, first: first, count: count)
            for (k, isUsed) in used.enumerated() {
                let n = first + UInt64(k)
                guard n >= 2 else { continue }
                if isUsed, runStart == nil { runStart = n }
                if !isUsed, let start = runStart {
                    allocation.add(dataStart + (start - 2) * g.clusterBytes, count: (n - start) * g.clusterBytes)
                    runStart = nil
                }
            }
            first += count
        }
        if let start = runStart {
            allocation.add(dataStart + (start - 2) * g.clusterBytes, count: (entries - start) * g.clusterBytes)
        }
        // Sectors past the last whole cluster and past the filesystem.
        let dataEnd = dataStart + g.clusters * g.clusterBytes
        allocation.add(dataEnd, count: partition.length - dataEnd)
        return UsageMap(filesystem: g.kind, method: "file allocation table", length: partition.length, allocated: allocation.ranges)
    }

    /// Whether entries `first..<first+count` are non-zero in any copy of the FAT.
    static func usedEntries(_ partition: Partition, _ g: Geometry, first: UInt64, count: UInt64) throws(FilesystemError) -> [Bool] {
        var used = [Bool](repeating: false, count: Int(count))
        // FAT12 is read whole from its start: 12-bit entries straddle bytes.
        let byteStart = g.entryBits == 12 ? 0 : first * g.entryBits / 8
        let byteCount = g.entryBits == 12 ? ((first + count) * 12 + 7) / 8 : count * g.entryBits / 8
        for copy in 0..<g.fatCount {
            let fatStart = (g.reservedSectors + copy * g.fatSectors) * g.sectorSize
            let bytes = try partition.bytes(at: fatStart + byteStart, count: Int(byteCount))
            for k in 0..<Int(count) {
                let n = Int(first) + k
                let value: UInt64
                switch g.entryBits {
                case 12:
                    let v = bytes.le16(n + n / 2)
                    value = n & 1 == 0 ? v & 0xFFF : v >> 4
                case 16: value = bytes.le16(2 * k)
                default: value = bytes.le32(4 * k) & 0x0FFF_FFFF
                }
                if value != 0 { used[k] = true }
            }
        }
        return used
    }
}
