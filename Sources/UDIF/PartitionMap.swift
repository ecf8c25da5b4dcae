import Foundation

/// A contiguous run of sectors that becomes one blkx region, named as hdiutil names them.
public struct RegionPlan: Sendable, Equatable {
    /// What a region is on the disk: whose bytes a filesystem may own.
    public enum Role: Sendable, Equatable {
        /// The partition map itself (MBR, GPT headers and tables).
        case mapStructure
        /// A gap between partitions.
        case free
        /// A map entry, by its number in the map (1 for the first GPT entry or MBR slot).
        case partition(Int)
        /// A disk without a partition map: it may hold a filesystem of its own.
        case wholeDisk
    }

    public var name: String
    public var firstSector: UInt64
    public var sectorCount: UInt64
    public var role: Role

    public init(name: String, firstSector: UInt64, sectorCount: UInt64, role: Role = .mapStructure) {
        self.name = name
        self.firstSector = firstSector
        self.sectorCount = sectorCount
        self.role = role
    }
}

/// Splits a disk into partition-map regions (GPT or MBR), the way hdiutil lays out blkx:
/// map structures, each partition, and the free gaps between them. A disk without a valid
/// map is a single whole-disk region.
public enum PartitionMap {
    public static func regions(of source: some ByteSource) throws -> [RegionPlan] {
        let sectors = source.byteCount / sectorSize
        guard sectors >= 2 else { return [wholeDisk(sectors, source: source)] }
        let head = try source.read(at: 0, count: Int(min(source.byteCount, 2 * sectorSize)))
        if head.count >= 1024, Array(head[512..<520]) == Array("EFI PART".utf8),
           let gpt = try? gptRegions(source, sectors: sectors) {
            return gpt
        }
        if let mbr = mbrRegions(head, sectors: sectors) { return mbr }
        return [wholeDisk(sectors, source: source)]
    }

    private struct Extent {
        var name: String
        var first: UInt64
        var count: UInt64
        var role: RegionPlan.Role = .mapStructure
    }

    /// Orders extents, fills the gaps with Apple_Free and numbers them as hdiutil does.
    private static func layout(_ extents: [Extent], sectors: UInt64) -> [RegionPlan]? {
        var sorted = extents.filter { $0.count > 0 }.sorted { $0.first < $1.first }
        var out: [Extent] = []
        var pos: UInt64 = 0
        for e in sorted {
            guard e.first >= pos, e.first <= sectors, e.count <= sectors - e.first else { return nil }
            if e.first > pos { out.append(Extent(name: "", first: pos, count: e.first - pos, role: .free)) }
            out.append(e)
            pos = e.first + e.count
        }
        if pos < sectors { out.append(Extent(name: "", first: pos, count: sectors - pos, role: .free)) }
        sorted = out
        return sorted.enumerated().map { i, e in
            let label = e.name.isEmpty ? " (Apple_Free : \(i))" : e.name.replacingPlaceholder(with: i)
            return RegionPlan(name: label, firstSector: e.first, sectorCount: e.count, role: e.role)
        }
    }

    private static func gptRegions(_ source: some ByteSource, sectors: UInt64) throws -> [RegionPlan]? {
        let header = try source.read(at: sectorSize, count: Int(sectorSize))
        let h = ByteReader(header)
        let le32 = { (at: Int) -> UInt32 in h.u32(at).byteSwapped }
        let le64 = { (at: Int) -> UInt64 in h.u64(at).byteSwapped }
        let backupLBA = le64(32)
        let entriesLBA = le64(72)
        let entryCount = UInt64(le32(80))
        let entrySize = UInt64(le32(84))
        guard entrySize >= 128, entrySize <= 4096, entryCount <= 16384, entriesLBA >= 2, entriesLBA < sectors else { return nil }
        let tableBytes = entryCount * entrySize
        let tableSectors = (tableBytes + sectorSize - 1) / sectorSize
        guard entriesLBA + tableSectors <= sectors else { return nil }
        let table = try source.read(at: entriesLBA * sectorSize, count: Int(tableBytes))
        var extents = [
            Extent(name: "Protective Master Boot Record (MBR : #)", first: 0, count: 1),
            Extent(name: "GPT Header (Primary GPT Header : #)", first: 1, count: 1),
            Extent(name: "GPT Partition Data (Primary GPT Table : #)", first: entriesLBA, count: tableSectors),
        ]
        for i in 0..<Int(entryCount) {
            let e = ByteReader(table, base: i * Int(entrySize))
            let typeGUID = Array(table[(i * Int(entrySize))..<(i * Int(entrySize) + 16)])
            if typeGUID.allSatisfy({ $0 == 0 }) { continue }
            let first = e.u64(32).byteSwapped
            let last = e.u64(40).byteSwapped
            guard last >= first else { return nil }
            var nameUnits: [UInt16] = []
            for k in 0..<36 {
                let at = i * Int(entrySize) + 56 + 2 * k
                let unit = UInt16(table[at]) | UInt16(table[at + 1]) << 8
                if unit == 0 { break }
                nameUnits.append(unit)
            }
            let name = String(decoding: nameUnits, as: UTF16.self)
            extents.append(Extent(name: "\(name) (\(gptTypeName(typeGUID)) : #)", first: first, count: last - first + 1, role: .partition(i + 1)))
        }
        if backupLBA == sectors - 1, backupLBA >= tableSectors + 1 {
            extents.append(Extent(name: "GPT Partition Data (Backup GPT Table : #)", first: backupLBA - tableSectors, count: tableSectors))
            extents.append(Extent(name: "GPT Header (Backup GPT Header : #)", first: backupLBA, count: 1))
        }
        return layout(extents, sectors: sectors)
    }

    private static func mbrRegions(_ head: [UInt8], sectors: UInt64) -> [RegionPlan]? {
        guard head.count >= 512, head[510] == 0x55, head[511] == 0xAA else { return nil }
        var extents = [Extent(name: "Master Boot Record (MBR : #)", first: 0, count: 1)]
        for i in 0..<4 {
            let at = 446 + 16 * i
            guard head[at] == 0 || head[at] == 0x80 else { return nil }
            let type = head[at + 4]
            let first = UInt64(head[at + 8]) | UInt64(head[at + 9]) << 8 | UInt64(head[at + 10]) << 16 | UInt64(head[at + 11]) << 24
            let count = UInt64(head[at + 12]) | UInt64(head[at + 13]) << 8 | UInt64(head[at + 14]) << 16 | UInt64(head[at + 15]) << 24
            guard type != 0, count > 0 else { continue }
            if type == 0xEE { return nil }  // protective MBR without a valid GPT
            extents.append(Extent(name: " (\(mbrTypeName(type)) : #)", first: first, count: count, role: .partition(i + 1)))
        }
        guard extents.count > 1 else { return nil }
        return layout(extents, sectors: sectors)
    }

    private static func wholeDisk(_ sectors: UInt64, source: some ByteSource) -> RegionPlan {
        RegionPlan(name: "whole disk (\(filesystemName(source)) : 0)", firstSector: 0, sectorCount: sectors, role: .wholeDisk)
    }

    /// The partition type names hdiutil uses, by filesystem signature.
    static func filesystemName(_ source: some ByteSource) -> String {
        if source.byteCount >= 1082, let m = try? source.read(at: 1080, count: 2), m == [0x53, 0xEF] { return "Linux" }
        if source.byteCount >= 1026, let m = try? source.read(at: 1024, count: 2) {
            if m == Array("H+".utf8) { return "Apple_HFS" }
            if m == Array("HX".utf8) { return "Apple_HFSX" }
        }
        if source.byteCount >= 512, let b = try? source.read(at: 0, count: 512) {
            if Array(b[82..<87]) == Array("FAT32".utf8) { return "DOS_FAT_32" }
            if Array(b[54..<59]) == Array("FAT16".utf8) { return "DOS_FAT_16" }
            if Array(b[54..<59]) == Array("FAT12".utf8) { return "DOS_FAT_12" }
            if Array(b[3..<7]) == Array("NTFS".utf8) { return "Windows_NTFS" }
        }
        if source.byteCount >= 36, let m = try? source.read(at: 32, count: 4), m == Array("NXSB".utf8) { return "Apple_APFS" }
        return "Apple_Free"
    }

    static func gptTypeName(_ guid: [UInt8]) -> String {
        let s = guidString(guid)
        switch s {
        case "48465300-0000-11AA-AA11-00306543ECAC": return "Apple_HFS"
        case "7C3457EF-0000-11AA-AA11-00306543ECAC": return "Apple_APFS"
        case "426F6F74-0000-11AA-AA11-00306543ECAC": return "Apple_Boot"
        case "C12A7328-F81F-11D2-BA4B-00A0C93EC93B": return "EFI"
        case "0FC63DAF-8483-4772-8E79-3D69D8477DE4": return "Linux Filesystem"
        case "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F": return "Linux Swap"
        case "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7": return "Microsoft Basic Data"
        case "21686148-6449-6E6F-744E-656564454649": return "BIOS Boot"
        default: return s
        }
    }

    static func guidString(_ g: [UInt8]) -> String {
        func hex(_ bytes: [UInt8]) -> String {
            bytes.map { String($0, radix: 16, uppercase: true).leftPadded(2) }.joined()
        }
        return [hex(g[0..<4].reversed()), hex(g[4..<6].reversed()), hex(g[6..<8].reversed()),
                hex(Array(g[8..<10])), hex(Array(g[10..<16]))].joined(separator: "-")
    }

    static func mbrTypeName(_ type: UInt8) -> String {
        switch type {
        case 0x01: "DOS_FAT_12"
        case 0x04, 0x06, 0x0E: "DOS_FAT_16"
        case 0x0B, 0x0C: "DOS_FAT_32"
        case 0x05, 0x0F, 0x85: "DOS_Extended"
        case 0x07: "Windows_NTFS"
        case 0x82: "Linux_Swap"
        case 0x83: "Linux"
        case 0xAF: "Apple_HFS"
        case 0xEF: "EFI"
        default: "0x" + String(type, radix: 16, uppercase: true).leftPadded(2)
        }
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
    fileprivate func replacingPlaceholder(with n: Int) -> String {
        guard let r = range(of: "#)", options: .backwards) else { return self }
        return replacingCharacters(in: r, with: "\(n))")
    }
}
