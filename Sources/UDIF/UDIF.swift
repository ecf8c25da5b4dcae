// UDIF: Apple's Universal Disk Image Format (.dmg), read and written.
//
// This module owns the on-disk format and nothing else: the `koly` trailer, the XML resource
// fork, the `mish` block tables, the chunk codecs (zlib, bzip2, XZ, LZFSE/LZVN, ADC), CRC-32 checksums,
// partition-map regions for new images, a random-access reader (`UDIFImage`) and a streaming
// parallel writer (`ImageWriter`). It does no terminal output and knows nothing of devices,
// networks or the command line; `Imaging` builds sources, targets and workflows on top of it.

import Synchronization

/// Every failure of this module: one line a user can read, naming what is wrong.
public struct UDIFError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    /// Text from a file as a message may show it: as it is, or quoted with escapes when it
    /// holds control characters (a line break in a name must not break the message's line).
    public static func displayable(_ text: String) -> String {
        text.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F } ? text : text.debugDescription
    }
}

/// Reusable buffers for reads served one after another (FUSE requests): a fresh 1 MiB buffer
/// costs 256 page faults and a kernel memset each time, more than the read itself.
public enum ScratchBuffers {
    /// A buffer handed between threads; only one borrower holds it at a time.
    private struct Buffer: @unchecked Sendable { let memory: UnsafeMutableRawBufferPointer }
    private static let spare = Mutex<[Buffer]>([])
    private static let capacity = 1 << 20
    private static let spareLimit = 32

    public static func borrow<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        guard count <= capacity else {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
            defer { memory.deallocate() }
            return try body(memory)
        }
        let buffer = spare.withLock { $0.popLast() } ?? Buffer(memory: .allocate(byteCount: capacity, alignment: 4096))
        defer {
            let kept = spare.withLock { list -> Bool in
                guard list.count < spareLimit else { return false }
                list.append(buffer)
                return true
            }
            if !kept { buffer.memory.deallocate() }
        }
        return try body(UnsafeMutableRawBufferPointer(rebasing: buffer.memory[0..<count]))
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
