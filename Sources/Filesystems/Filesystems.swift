import SystemSupport
import UDIF

// Filesystems owns reading filesystem structures out of raw bytes: which filesystem a
// partition holds and which of its bytes it has allocated. Everything here takes hostile
// input: every offset is bounds-checked and every allocation capped.
//
// ext2/3/4 are read through libext2fs and NTFS through libntfs-3g (each over a read callback,
// CFilesystemIO): their bitmaps hide enough special cases (BLOCK_UNINIT groups, bigalloc,
// meta_bg; runlists, compressed and sparse metadata) that the filesystems' own libraries are
// the safer readers. FAT, HFS+ and swap are small, documented and have no Debian library that
// reads a buffer, so they are parsed here. XFS, btrfs, APFS and exFAT are recognised only.
// The rule above all others: never report as free a byte the filesystem needs.

/// What a filesystem has allocated, as byte ranges relative to the partition's start.
/// Ranges are sorted, disjoint, merged when adjacent and within `0..<length`. They include
/// everything the filesystem needs that its own bitmap does not cover (boot sectors, backup
/// boot sectors, alternate volume headers, the tail past the last whole block).
public struct UsageMap: Sendable, Equatable {
    /// "ext4", "FAT32", "NTFS", "swap", "HFS+", ...
    public var filesystem: String
    /// How the map was found, for `asr info`: "block bitmaps (libext2fs)", "$Bitmap (libntfs-3g)".
    public var method: String
    /// Bytes of the partition examined.
    public var length: UInt64
    public var allocated: [Range<UInt64>]

    public init(filesystem: String, method: String, length: UInt64, allocated: [Range<UInt64>]) {
        self.filesystem = filesystem
        self.method = method
        self.length = length
        self.allocated = allocated
    }

    public var allocatedBytes: UInt64 { allocated.reduce(0) { $0 + ($1.upperBound - $1.lowerBound) } }
}

/// What examining a partition found.
public enum FilesystemFinding: Sendable, Equatable {
    /// A filesystem whose allocation we read.
    case mapped(UsageMap)
    /// A filesystem we recognise but do not map (XFS, btrfs, APFS): imaged whole.
    case unmapped(filesystem: String)
    /// A filesystem we map, but its structures are damaged or inconsistent: imaged whole.
    case unreadable(filesystem: String, reason: String)
    /// Nothing recognised: imaged whole.
    case unknown
}

public enum FilesystemUsage {
    /// Identifies the filesystem in the `length` bytes at `offset` of `source` and reads which
    /// of its bytes are allocated. Never throws: anything doubtful means "image it whole".
    public static func examine(_ source: some ByteSource, offset: UInt64, length: UInt64) -> FilesystemFinding {
        guard length > 0, offset <= source.byteCount, length <= source.byteCount - offset else { return .unknown }
        let partition = Partition(source: source, offset: offset, length: length)
        let found = Recognised.all(in: partition)
        guard let first = found.first else { return .unknown }
        // Two signatures mean one is left over from an earlier filesystem, and nothing here says
        // which: mapping the wrong one would drop the other's data.
        if found.count > 1 {
            let others = found.dropFirst().map(\.name).joined(separator: " and a ")
            return .unreadable(filesystem: first.name, reason: "it also carries a \(others) signature")
        }
        return first.finding()
    }
}

/// A filesystem whose signature a partition carries, and how to read its allocation.
struct Recognised {
    var name: String
    var finding: () -> FilesystemFinding

    /// A recognised filesystem whose allocation we do not read.
    static func whole(_ name: String) -> Recognised { Recognised(name: name) { .unmapped(filesystem: name) } }

    /// A mapped filesystem: its map, or why it cannot be trusted.
    static func mapped(_ name: String, _ map: @escaping () throws(FilesystemError) -> UsageMap) -> Recognised {
        Recognised(name: name) {
            do throws(FilesystemError) {
                return .mapped(try map())
            } catch {
                return .unreadable(filesystem: name, reason: error.description)
            }
        }
    }

    /// Every signature the partition carries; a bare HFS signature (two bytes) only when
    /// nothing else matched.
    static func all(in partition: Partition) -> [Recognised] {
        let strong = [Ext2.recognise(partition), NTFS.recognise(partition), FAT.recognise(partition),
                      HFSPlus.recognise(partition), Swap.recognise(partition), recogniseWhole(partition)].compactMap { $0 }
        if strong.isEmpty, let hfs = HFSPlus.recogniseStandardHFS(partition) { return [hfs] }
        return strong
    }

    /// Filesystems we know but do not map: imaged whole.
    static func recogniseWhole(_ partition: Partition) -> Recognised? {
        if partition.matches("XFSB", at: 0) { return .whole("XFS") }
        if partition.matches("_BHRfS_M", at: 0x10040) { return .whole("btrfs") }
        if partition.matches("NXSB", at: 32) { return .whole("APFS") }
        if partition.matches("EXFAT   ", at: 3) { return .whole("exFAT") }
        return nil
    }
}
