// Imaging: the workflows built on the UDIF format.
//
// This module owns sources and targets (UDIF images, raw image files, block devices, mounted
// filesystems resolved to their device, HTTP range requests), `create` (from a device, image
// or folder tree), `convert`, `info`, `imagescan`, `verify`, the unicast `restore` pipeline,
// block maps, size parsing and progress reporting. It prints only through the `Reporter` it
// is handed; the `asr` executable maps its errors to exit codes.

import SystemSupport
import UDIF

/// A failure of a workflow, by what went wrong; each reads as one line.
public enum ImagingError: UserFacingError {
    case invalidSize(String, tooLarge: Bool)
    /// A `--format` value that is not one of `allowed`.
    case unknownFormat(String, allowed: [String])
    /// A `--chunk-size` outside 64K...64M or not whole sectors.
    case invalidChunkSize(String)
    case invalidZlibLevel(String)
    /// A source that cannot be read as a disk, and why.
    case unusableSource(path: String, String)
    /// An output that cannot be written, and why.
    case unusableOutput(path: String, String)
    /// A restore target that must not or cannot be written.
    case unusableTarget(path: String, TargetProblem)
    case mountedReadWrite(path: String, device: String)
    case notScanned(path: String, restoring: Bool)
    /// `--incremental` or `compare` with a source that has no scan (or block map) to compare by.
    case cannotCompare(path: String)
    /// A key file for `--sign` or `--trust` that cannot be used, and why.
    case unusableKey(path: String, String)
    case unsigned(path: String)
    case untrustedSigner(path: String, fingerprint: String)
    case badSignature(path: String)
    case badPin(String)
    case notThePinnedImage(path: String, found: String)
    /// A pin or key was asked for, but the scan predates identities that cover stored ranges.
    case olderScan(path: String)
    /// A pin or key was asked for, but a raw source has only a bmaptool block map.
    case noChunkDigests(path: String)
    case cancelled(target: String)
    /// Bytes that differ from what the scan, block map or source says they hold.
    case mismatch(Mismatch)
    /// A source chunk that does not match its own scan: the image is damaged.
    case damagedSource(Mismatch)
    case regionChecksumMismatch(id: String, name: String)
    case badBlockMap(String)
    case blockMapSizeMismatch(path: String, mapBytes: UInt64, sourcePath: String, sourceBytes: UInt64)
    /// An HTTP source failed for good.
    case http(url: String, HTTPFailure)
    /// A folder tree that cannot become the filesystem asked for.
    case folder(String)
    /// An external tool (mke2fs, mkfs.vfat, mcopy) failed.
    case tool(name: String, ToolFailure)
    /// A restore failed after writing began; the target was wiped so it cannot pass for good.
    case targetErased(path: String, cause: any Error)
    case system(SystemError)

    public enum TargetProblem: Sendable, Equatable {
        case folderMissing, missing, mounted(device: String?, at: String?), notDiskOrFile, isSource, loopOfSource
        /// A link that does not lead to a block device; what was opened is not what was checked.
        case symbolicLink, changed
        case swap(String), inUse(by: [String]), tooSmall(capacity: UInt64, needed: UInt64)
        case cannotResize(to: UInt64, String), notEnoughSpace(needed: UInt64, free: UInt64)
    }

    public enum HTTPFailure: Sendable, Equatable {
        case noRangeSupport, ignoresRanges, notFound, rangeNotSatisfiable(String), status(Int)
        case pastEnd(offset: UInt64, count: Int, length: UInt64)
        case unreachable(String), gaveUp(attempts: Int, last: String), clientUnavailable
    }

    public enum ToolFailure: Sendable, Equatable {
        case notInstalled, cannotRun(String), noSpace, failed(String)
    }

    public var description: String {
        switch self {
        case .invalidSize(let text, false): "invalid size \"\(text)\": use bytes or a K, M, G or T suffix"
        case .invalidSize(let text, true): "size \"\(text)\" is too large"
        case .unknownFormat(let text, let allowed):
            "unknown format \"\(displayable(text))\": use \(allowed.dropLast().joined(separator: ", ")) or \(allowed.last ?? "")"
        case .invalidZlibLevel(let text): "zlib level \"\(displayable(text))\" is not 1 to 12"
        case .invalidChunkSize(let text):
            "invalid chunk size \"\(displayable(text))\": use a multiple of 512 bytes from 64K to 64M"
        case .unusableSource(let path, let why), .unusableOutput(let path, let why): "\(path) \(why)"
        case .unusableTarget(let path, let problem):
            switch problem {
            case .folderMissing: "target \(path): its folder does not exist"
            case .missing: "target \(path) does not exist"
            case .mounted(let device?, let at?): "target \(path) is mounted (\(device) on \(at)); unmount it first"
            case .mounted: "target \(path) is mounted"
            case .notDiskOrFile: "target \(path) is neither a block device nor a regular file"
            case .symbolicLink: "target \(path) is a symbolic link, and only a link to a block device is followed; give the file's own path"
            case .changed: "target \(path) changed while it was being checked; nothing was written"
            case .isSource: "target \(path) is the source"
            case .loopOfSource: "target \(path) is a loop device backed by the source"
            case .swap(let device): "target \(path) is in use as swap (\(device))"
            case .inUse(let holders): "target \(path) is in use by \(holders.joined(separator: ", "))"
            case .tooSmall(let capacity, let needed): "target \(path) holds \(capacity) bytes, less than the image's \(needed)"
            case .cannotResize(let size, let why): "target \(path) cannot be made \(size) bytes long: \(why)"
            case .notEnoughSpace(let needed, let free): "not enough space for \(path): \(needed) bytes needed, \(free) free"
            }
        case .mountedReadWrite(let path, let device): "\(path) is mounted read-write from \(device); remount it read-only or pass --force"
        case .notScanned(let path, let restoring):
            "\(path) is not scanned; run asr imagescan --source \(path) first" + (restoring ? ", or restore with --noverify" : "")
        case .cannotCompare(let path):
            "\(path) is not scanned, so there are no chunk checksums to compare the target with; run asr imagescan --source \(path) first"
        case .unusableKey(let path, let why): "\(path) \(why)"
        case .unsigned(let path): "\(path) is not signed, and only signed images are trusted here (--trust, \(TrustedKeys.directory))"
        case .untrustedSigner(let path, let fingerprint): "\(path) is signed by key \(fingerprint), which is not trusted here"
        case .badSignature(let path): "\(path): its signature does not match its contents; the image was changed after it was signed"
        case .badPin(let text): "\"\(displayable(text))\" is not an image identity: give the 64 hex digits asr info prints as Identity"
        case .notThePinnedImage(let path, let found):
            "\(path) is not the pinned image: its identity is \(found) (identities changed in scan version 3: take pins from asr info again)"
        case .olderScan(let path):
            "\(path) was scanned by an earlier asr, whose identity did not cover how chunks are stored; rescan and re-sign it: asr imagescan --source \(path) --sign KEY.pem"
        case .noChunkDigests(let path):
            "\(path) has only a bmaptool block map, which names no identity; run asr imagescan --source \(path) to record its chunk digests"
        case .cancelled(let target): "restore cancelled; \(target) was not changed"
        case .mismatch(let mismatch): mismatch.description
        case .damagedSource(let mismatch): "source \(mismatch): the image is damaged"
        case .regionChecksumMismatch(let id, let name):
            "blkx \(displayable(id)) (\(displayable(name))) does not match its CRC-32: the image is damaged and was not scanned"
        case .badBlockMap(let why): "block map is invalid: \(why)"
        case .blockMapSizeMismatch(let path, let mapBytes, let sourcePath, let sourceBytes):
            "block map \(path) describes \(mapBytes) bytes but \(sourcePath) has \(sourceBytes)"
        case .http(let url, let failure):
            switch failure {
            case .noRangeSupport: "\(url): the server does not support range requests"
            case .ignoresRanges: "\(url): the server ignores range requests (HTTP 200 for a range)"
            case .notFound: "\(url): not found (HTTP 404)"
            case .rangeNotSatisfiable(let range): "\(url): range \(range) not satisfiable (HTTP 416)"
            case .status(let status): "\(url): HTTP \(status)"
            case .pastEnd(let offset, let count, let length): "\(url): read of \(count) bytes at \(offset) is past the end (\(length) bytes)"
            case .unreachable(let why): "\(url): \(why)"
            case .gaveUp(let attempts, let last): "\(url): \(last) (gave up after \(attempts) attempts)"
            case .clientUnavailable: "cannot start an HTTP client"
            }
        case .folder(let why): why
        case .tool(let name, let failure):
            switch failure {
            case .notInstalled: "\(name) is not installed"
            case .cannotRun(let why): "cannot run \(name): \(why)"
            case .noSpace: "\(name): no space left in the filesystem"
            case .failed(let last): "\(name) failed: \(last)"
            }
        case .targetErased(let path, let cause): "\(cause); the first and last MiB of \(path) were erased so it cannot pass for a good disk"
        case .system(let error): error.description
        }
    }
}

/// Where a disk differs from what it should hold.
public struct Mismatch: Sendable, Equatable, CustomStringConvertible {
    /// What the bytes were checked against.
    public enum Reference: Sendable, Equatable { case scan, source, blockMap, image }
    public var firstByte: UInt64
    public var lastByte: UInt64
    /// The UDIF chunk and its blkx region, when the range is one.
    public var chunk: (index: Int, region: String)?
    /// The range should hold only zeros (unmapped in a block map).
    public var shouldBeZeros = false
    public var reference: Reference
    /// Found when reading a written target back.
    public var afterWriting = false

    public init(firstByte: UInt64, lastByte: UInt64, chunk: (index: Int, region: String)? = nil,
                shouldBeZeros: Bool = false, reference: Reference) {
        self.firstByte = firstByte
        self.lastByte = lastByte
        self.chunk = chunk
        self.shouldBeZeros = shouldBeZeros
        self.reference = reference
    }

    public static func == (a: Mismatch, b: Mismatch) -> Bool {
        a.firstByte == b.firstByte && a.lastByte == b.lastByte && a.chunk?.index == b.chunk?.index
            && a.chunk?.region == b.chunk?.region && a.shouldBeZeros == b.shouldBeZeros && a.reference == b.reference
            && a.afterWriting == b.afterWriting
    }

    public var description: String {
        let span = "bytes \(firstByte)-\(lastByte)"
        let place = chunk.map { "chunk \($0.index) (\(span), blkx \(displayable($0.region)))" } ?? span
        let plural = chunk == nil
        let reference = switch reference {
        case .scan: "its scan checksum"
        case .source: "the source's checksum"
        case .blockMap: "the block map's checksum"
        case .image: "the image"
        }
        let finding = shouldBeZeros
            ? "\(place) should be zeros (unmapped in the block map) but \(plural ? "are" : "is") not"
            : "\(place) \(plural ? "do" : "does") not match \(reference)"
        return (afterWriting ? "verification failed: " : "") + finding
    }
}

extension UDIFImage {
    /// A mismatch in chunk `index`, against `reference`.
    public func mismatch(inChunk index: Int, against reference: Mismatch.Reference) -> Mismatch {
        let c = chunks[index]
        return Mismatch(firstByte: c.diskOffset, lastByte: c.diskOffset + c.length - 1,
                        chunk: (index, regions[c.region].id), reference: reference)
    }
}
