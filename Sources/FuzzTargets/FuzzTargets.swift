// FuzzTargets: one fuzz harness per parser of untrusted input.
//
// This module owns the harness entry points, the seed inputs they start from (made from real
// images and a few hand-made ones) and a seeded mutation loop. Both runners call the same
// entry points: libFuzzer (`Sources/Fuzz`, `make fuzz`) and the bounded pass CI runs
// (`Tests/FuzzTests`). A harness hands its bytes to the real parsing code, swallows the
// errors that code throws (rejecting bad input is its job), and checks what must hold of
// whatever it accepts. A broken property is a thrown `FuzzFailure`; a crash is a crash.

/// Each parser of untrusted bytes, and what a harness input is for it.
public enum FuzzTarget: String, CaseIterable, Sendable, CustomStringConvertible {
    /// A whole .dmg: koly trailer, resource plist, blkx tables, then every chunk read back.
    case udif
    /// One `mish` block table in binary (u16 length, table, data fork), placed in an image.
    case blkx
    /// The XML resource fork alone, with the blkx and asrc resources inside it.
    case plist
    /// Chunk codecs: u16 sector count (low 12 bits), then the stored bytes.
    case adc, zlib, bzip2, xz, lzfse
    /// One LZVN payload (u16 output size, then opcodes), wrapped in a `bvxn` block.
    case lzvn
    /// The multicast server's configuration plist.
    case config
    /// Multicast data packets (each u16 length, then the packet) fed to a chunk assembler.
    case packet
    /// Control-connection frames as they arrive on the socket (u32 length, type, payload),
    /// acted on as a client and a server would.
    case control
    /// A bmaptool `.bmap` file.
    case bmap
    /// A partition's bytes, as `FilesystemUsage.examine` identifies and maps them.
    case filesystem
    /// An HFS+ partition's tree, as volumes/ shows it (our catalog and B-tree reader).
    case hfsplus
    /// An ext2/3/4 partition's tree, as volumes/ shows it (libext2fs).
    case ext
    /// A FAT12/16/32 partition's tree, as volumes/ shows it (our directory and chain reader).
    case fat
    /// An APFS container's volumes' trees, as volumes/ shows them (our object maps, B-trees
    /// and file-system records).
    case apfs

    public var description: String { rawValue }

    /// Runs one input. Throws only `FuzzFailure`: a property the code promises did not hold.
    public func run(_ input: [UInt8]) throws {
        switch self {
        case .udif: try ImageHarness.image(input)
        case .blkx: try ImageHarness.blockTable(input)
        case .plist: try ImageHarness.resourceFork(input)
        case .adc: try CodecHarness.chunk(.adc, input)
        case .zlib: try CodecHarness.chunk(.zlib, input)
        case .bzip2: try CodecHarness.chunk(.bzip2, input)
        case .xz: try CodecHarness.chunk(.lzma, input)
        case .lzfse: try CodecHarness.lzfse(input)
        case .lzvn: try CodecHarness.lzvn(input)
        case .config: try MulticastHarness.config(input)
        case .packet: try MulticastHarness.packets(input)
        case .control: try MulticastHarness.control(input)
        case .bmap: try BlockMapHarness.bmap(input)
        case .filesystem: try FilesystemHarness.examine(input)
        case .hfsplus: try VolumeHarness.walk(input, filesystems: ["HFS+", "HFSX"])
        case .ext: try VolumeHarness.walk(input, filesystems: ["ext2", "ext3", "ext4"])
        case .fat: try VolumeHarness.walk(input, filesystems: ["FAT", "FAT12", "FAT16", "FAT32"])
        case .apfs: try VolumeHarness.apfs(input)
        }
    }
}

/// A property the parsing code promises, broken by some input.
public struct FuzzFailure: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

func check(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    guard condition else { throw FuzzFailure(message()) }
}

/// Big-endian fields of a harness input, read front to back; nil once the input runs out.
struct InputReader {
    private var bytes: ArraySlice<UInt8>
    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var remaining: Int { bytes.count }

    mutating func take(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, n <= bytes.count else { return nil }
        defer { bytes = bytes.dropFirst(n) }
        return bytes.prefix(n)
    }

    mutating func rest() -> [UInt8] {
        defer { bytes = bytes.suffix(0) }
        return Array(bytes)
    }

    mutating func u16() -> Int? { take(2).map { $0.reduce(0) { $0 << 8 | Int($1) } } }
    mutating func u32() -> Int? { take(4).map { $0.reduce(0) { $0 << 8 | Int($1) } } }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T) {
        for i in stride(from: MemoryLayout<T>.size - 1, through: 0, by: -1) {
            append(UInt8(truncatingIfNeeded: value >> (i * 8)))
        }
    }

    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        for i in 0..<MemoryLayout<T>.size { append(UInt8(truncatingIfNeeded: value >> (i * 8))) }
    }
}
