import SystemSupport
import UDIF

/// A filesystem's tree, read-only, as `asr mount` shows it under `volumes/`: nodes by the
/// filesystem's own numbers (ext inode numbers, HFS+ catalog node IDs), so hard links share one.
/// Methods are called from many threads at once; readers keep their own locks and caches.
public protocol VolumeReader: AnyObject, Sendable {
    /// "ext4", "HFS+", ...
    var filesystem: String { get }
    /// The volume's own name (label); may be empty.
    var label: String { get }
    var rootNode: UInt64 { get }
    func attributes(of node: UInt64) throws(VolumeError) -> NodeAttributes
    /// A directory's entries, without "." and "..".
    func entries(of directory: UInt64) throws(VolumeError) -> [NodeEntry]
    /// Fills `buffer` from `offset` of a file's content; returns the bytes filled, fewer only at its end.
    func read(_ node: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(VolumeError) -> Int
    /// Where a file's byte `offset` is stored, relative to the partition, when it is stored
    /// plainly (for read-ahead); nil for holes, inline and compressed data.
    func storedOffset(of node: UInt64, at offset: UInt64) -> UInt64?
    func linkTarget(of node: UInt64) throws(VolumeError) -> [UInt8]
    /// Names as Linux shows them ("user.NAME", ...).
    func extendedAttributeNames(of node: UInt64) throws(VolumeError) -> [String]
    /// An attribute's value; throws `.noAttribute` when the node has none of that name.
    func extendedAttribute(_ name: String, of node: UInt64) throws(VolumeError) -> [UInt8]
}

public enum NodeKind: Sendable, Equatable {
    case file, directory, symbolicLink, fifo, socket, characterDevice, blockDevice

    /// The kind a POSIX mode's S_IFMT bits name; nil when they name none.
    public init?(mode: UInt32) {
        switch mode & 0o170000 {
        case 0o100000: self = .file
        case 0o040000: self = .directory
        case 0o120000: self = .symbolicLink
        case 0o010000: self = .fifo
        case 0o140000: self = .socket
        case 0o020000: self = .characterDevice
        case 0o060000: self = .blockDevice
        default: return nil
        }
    }
}

public struct Timestamp: Sendable, Equatable {
    public var seconds: Int64
    public var nanoseconds: UInt32
    public init(seconds: Int64, nanoseconds: UInt32 = 0) {
        self.seconds = seconds
        self.nanoseconds = nanoseconds
    }
}

/// What `stat` shows for a node of a volume.
public struct NodeAttributes: Sendable, Equatable {
    public var kind: NodeKind
    /// Permission bits, setuid, setgid and sticky included (07777).
    public var permissions: UInt32
    public var uid: UInt32
    public var gid: UInt32
    /// Bytes of content (a symlink's: its target's length).
    public var size: UInt64
    public var linkCount: UInt32
    public var accessed: Timestamp
    public var modified: Timestamp
    public var changed: Timestamp
    /// Device nodes' major and minor numbers.
    public var deviceMajor: UInt32 = 0
    public var deviceMinor: UInt32 = 0
    /// Bytes the filesystem holds for the content, for `du`; nil means `size`.
    public var allocatedBytes: UInt64?

    public init(kind: NodeKind, permissions: UInt32, uid: UInt32, gid: UInt32, size: UInt64, linkCount: UInt32,
                accessed: Timestamp, modified: Timestamp, changed: Timestamp) {
        self.kind = kind
        self.permissions = permissions
        self.uid = uid
        self.gid = gid
        self.size = size
        self.linkCount = linkCount
        self.accessed = accessed
        self.modified = modified
        self.changed = changed
    }
}

public struct NodeEntry: Sendable, Equatable {
    public var name: String
    public var node: UInt64
    public var kind: NodeKind
    public init(name: String, node: UInt64, kind: NodeKind) {
        self.name = name
        self.node = node
        self.kind = kind
    }
}

/// Why a node of a volume cannot be shown. `damaged` is the filesystem's fault; the others
/// are the caller's (a name that is not there).
public enum VolumeError: UserFacingError, Equatable {
    case notFound
    case notDirectory
    case isDirectory
    case notSymbolicLink
    case noAttribute
    /// An extended attribute larger than Linux takes (64 KiB).
    case tooLarge
    /// The structures contradict themselves or cannot be read; the reason in one line.
    case damaged(String)

    public var description: String {
        switch self {
        case .notFound: "no such node"
        case .notDirectory: "not a directory"
        case .isDirectory: "a directory"
        case .notSymbolicLink: "not a symbolic link"
        case .noAttribute: "no such extended attribute"
        case .tooLarge: "an extended attribute larger than 64 KiB"
        case .damaged(let why): displayable(why)
        }
    }
}

/// What opening a partition's filesystem tree gave.
public enum VolumeOpening: Sendable {
    case opened(any VolumeReader)
    /// A filesystem we read, whose structures cannot be trusted; `reason` is one line.
    case failed(filesystem: String, reason: String)
}

/// One volume of a partition: the partition's only one, or one of an APFS container's.
public struct ContainedVolume: Sendable {
    /// The volume's place in its container (APFS: its slot in nx_fs_oid, from 1); nil for a
    /// partition holding one filesystem, or a container that could not be read at all.
    public var position: Int?
    public var opening: VolumeOpening
}

/// Opens the trees of the filesystems we can read: ext2/3/4 (libext2fs), HFS+/HFSX, FAT and
/// APFS (each unencrypted volume of a container).
public enum Volumes {
    /// The filesystem in the `length` bytes at `offset` of `source`, opened and checked; nil
    /// when it is none we read. An APFS container gives its first volume.
    public static func open(_ source: any ByteSource, offset: UInt64, length: UInt64) -> VolumeOpening? {
        openAll(source, offset: offset, length: length).first?.opening
    }

    /// Every volume of the partition: one for most filesystems, one per volume of an APFS
    /// container (encrypted or damaged ones as `.failed`); empty when it is none we read.
    public static func openAll(_ source: any ByteSource, offset: UInt64, length: UInt64) -> [ContainedVolume] {
        guard length > 0, offset <= source.byteCount, length <= source.byteCount - offset else { return [] }
        let partition = Partition(source: source, offset: offset, length: length)
        if partition.matches("NXSB", at: 32) { return APFSVolumes.open(partition) }
        return openOne(partition).map { [ContainedVolume(position: nil, opening: $0)] } ?? []
    }

    static func openOne(_ partition: Partition) -> VolumeOpening? {
        let length = partition.length
        if let sb = try? partition.bytes(at: Ext2.superblockOffset, count: 1024), length >= 2048,
           sb.le16(56) == 0xEF53, sb.le32(24) <= 6, sb.le32(96) & Ext2.incompatJournalDevice == 0 {
            let name = Ext2.name(sb)
            do throws(VolumeError) {
                return .opened(try Ext2Volume(partition, filesystem: name))
            } catch {
                return .failed(filesystem: name, reason: error.description)
            }
        }
        if case .some(let fat) = FAT.recognise(partition), let boot = try? partition.bytes(at: 0, count: 512) {
            do throws(VolumeError) {
                return .opened(try FATVolume(partition, boot: boot))
            } catch {
                return .failed(filesystem: fat.name, reason: error.description)
            }
        }
        if let header = try? partition.bytes(at: HFSPlus.headerOffset, count: 512) {
            let name: String? = switch (header.be16(0), header.be16(2)) {
            case (0x482B, 4): "HFS+"
            case (0x4858, 5): "HFSX"
            default: nil
            }
            if let name {
                do throws(VolumeError) {
                    return .opened(try HFSPlusVolume(partition, header: header, filesystem: name))
                } catch {
                    return .failed(filesystem: name, reason: error.description)
                }
            }
        }
        return nil
    }
}

/// The volumes of an APFS container, in nx_fs_oid order.
enum APFSVolumes {
    static func open(_ partition: Partition) -> [ContainedVolume] {
        let container: APFSContainer
        do throws(VolumeError) {
            container = try APFSContainer(partition)
        } catch {
            return [ContainedVolume(position: nil, opening: .failed(filesystem: "APFS", reason: error.description))]
        }
        return container.volumeSlots.map { slot in
            do throws(VolumeError) {
                let address = try container.omap.address(of: slot.oid, xid: container.xid)
                let sb = try container.blocks.object(at: address, type: APFSContainer.ObjectType.fs, oid: slot.oid)
                return ContainedVolume(position: slot.position, opening: .opened(try APFSVolume(container, superblock: sb)))
            } catch {
                return ContainedVolume(position: slot.position, opening: .failed(filesystem: "APFS", reason: error.description))
            }
        }
    }
}
