import UDIF

// Filesystems owns reading filesystem structures out of raw bytes: which filesystem a
// partition holds and which of its bytes it has allocated. Everything here takes hostile
// input: every offset is bounds-checked and every allocation capped.

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
        .unknown
    }
}
