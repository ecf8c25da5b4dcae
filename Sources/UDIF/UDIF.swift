// UDIF: Apple's Universal Disk Image Format (.dmg), read and written.
//
// This module owns the on-disk format and nothing else: the `koly` trailer, the XML resource
// fork, the `mish` block tables, the chunk codecs (zlib, bzip2, XZ, LZFSE/LZVN, ADC), CRC-32 checksums,
// partition-map regions for new images, a random-access reader (`UDIFImage`) and a streaming
// parallel writer (`ImageWriter`). It does no terminal output and knows nothing of devices,
// networks or the command line; `Imaging` builds sources, targets and workflows on top of it.

import SystemSupport

/// Every failure of this module, by what is wrong; each reads as one line.
public enum UDIFError: UserFacingError, Equatable {
    /// The file is not a UDIF image, or its `koly` trailer is damaged.
    case notAnImage(String)
    /// The resource fork (XML plist) is missing, malformed or contradicts the file.
    case badResourceFork(String)
    /// A `mish` block table, or the chunk table it forms, is inconsistent.
    case badBlockTable(String)
    /// A chunk's stored bytes do not decode to its length.
    case corruptChunk(codec: String, CodecFailure)
    /// A chunk type this reader does not know.
    case unsupportedChunkType(ChunkType)
    /// A failure inside one chunk, located on the disk.
    indirect case inChunk(index: Int, firstByte: UInt64, lastByte: UInt64, region: String, UDIFError)
    /// A read outside the disk.
    case outOfRange(offset: UInt64, count: Int, diskBytes: UInt64)
    /// The imagescan data is damaged, or stale against the chunk table.
    case badScanData(String)
    case staleScanData
    /// A chunk's record breaks the chunk-table rule (`ChunkTable`): the image or manifest was
    /// altered, or is damaged.
    case badChunkRecord(index: Int, firstByte: UInt64, String)
    /// A chunk's decoded bytes are not what its scan digest says.
    case digestMismatch
    case badSignatureData
    /// A source that cannot become an image (empty, not whole sectors, regions not covering it).
    case unusableSource(String)
    /// The file beneath failed.
    case system(SystemError)

    /// How a chunk's bytes failed to decode.
    public enum CodecFailure: Sendable, Equatable {
        case corrupt
        case truncated
        case tooLarge
        case outOfMemory
        /// Decodes to more than the chunk's `capacity` bytes.
        case overflows(capacity: Int)
        case wrongLength(got: Int, want: Int)
        /// A codec-specific finding (an LZFSE table, an ADC back-reference).
        case invalid(String)
    }

    public var description: String {
        switch self {
        case .notAnImage(let why): why
        case .badResourceFork(let why): "resource plist \(why)"
        case .badBlockTable(let why): why
        case .corruptChunk(let codec, let failure):
            switch failure {
            case .corrupt: "\(codec) chunk is corrupt"
            case .truncated: "\(codec) chunk is truncated"
            case .tooLarge: "\(codec) chunk too large"
            case .outOfMemory: "\(codec) chunk needs too much memory"
            case .overflows(let capacity): "\(codec) chunk decompresses to more than \(capacity) bytes"
            case .wrongLength(let got, let want): "\(codec) chunk decompresses to \(got) bytes, want \(want)"
            case .invalid(let what): "\(codec) chunk \(what)"
            }
        case .unsupportedChunkType(let type): "unsupported chunk type \(type)"
        case .inChunk(let index, let first, let last, let region, let error):
            "chunk \(index) (bytes \(first)-\(last), blkx \(displayable(region))): \(error)"
        case .outOfRange(let offset, let count, let diskBytes):
            "read of \(count) bytes at \(offset) is past the end of the \(diskBytes)-byte disk"
        case .badScanData(let why): "scan data is damaged (\(why))"
        case .staleScanData: "the image's scan data does not match its chunk table; run asr imagescan again"
        case .badChunkRecord(let index, let first, let why): "chunk \(index) (at byte \(first)) \(why): the image was altered or is damaged"
        case .digestMismatch: "decoded bytes do not match the SHA-256 in the image's scan"
        case .badSignatureData: "the image's signature resource is damaged"
        case .unusableSource(let why): why
        case .system(let error): error.description
        }
    }
}

/// UDIF sectors are always 512 bytes.
public let sectorSize: UInt64 = 512

/// Anything that can be read at random offsets from many threads at once: a raw image,
/// a block device, a decoded UDIF image.
public protocol ByteSource: Sendable {
    var byteCount: UInt64 { get }
    /// Fills `buffer` exactly with the bytes at `offset`; throws past the end.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
    /// Calls `body` with the `count` bytes at `offset` as consecutive buffers that are valid
    /// only during the call. Sources holding decoded data lend it without copying.
    func withBytes(at offset: UInt64, count: Int, _ body: ([UnsafeRawBufferPointer]) -> Void) throws
}

/// Random-access bytes an image is read from: a local file, or an HTTP resource.
public protocol RandomAccessFile: Sendable {
    var path: String { get }
    func size() throws -> UInt64
    /// Fills `buffer` exactly from `offset`, or throws.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws
}

extension RandomAccessFile {
    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }
}

extension ByteSource {
    /// `read(into:at:)` for sources whose natural read is `withBytes`: copies the lent pieces.
    public func readLentBytes(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        try withBytes(at: offset, count: buffer.count) { pieces in
            for piece in pieces {
                UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + piece.count)]).copyMemory(from: piece)
                done += piece.count
            }
        }
    }

    public func withBytes(at offset: UInt64, count: Int, _ body: ([UnsafeRawBufferPointer]) -> Void) throws {
        try ScratchBuffers.borrow(count) { buffer in
            try read(into: buffer, at: offset)
            body([UnsafeRawBufferPointer(buffer)])
        }
    }

    public func read(at offset: UInt64, count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try bytes.withUnsafeMutableBytes { try read(into: $0, at: offset) }
        return bytes
    }
}

extension FileIO: RandomAccessFile {}
