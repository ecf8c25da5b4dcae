import SystemSupport
import Foundation
import Glibc
import Synchronization

/// One blkx region of an image, with its place in the image's chunk index.
public struct Region: Sendable {
    public var id: String
    public var name: String
    public var table: BlockTable
    /// Range of this region's chunks in `UDIFImage.chunks`.
    public var chunkRange: Range<Int>

    public var firstSector: UInt64 { table.firstSector }
    public var sectorCount: UInt64 { table.sectorCount }
}

/// A chunk placed on the whole disk, in bytes.
public struct DiskChunk: Sendable {
    public var type: ChunkType
    public var diskOffset: UInt64
    public var length: UInt64
    /// Absolute offset in the image file.
    public var fileOffset: UInt64
    public var storedLength: UInt64
    public var region: Int
}

/// A UDIF image opened for random access. Parsing validates the whole structure up front
/// (bounds, coverage, sizes), so later reads fail only on corrupt chunk payloads.
public final class UDIFImage: ByteSource, Sendable {
    /// Largest decoded chunk accepted; hdiutil writes 1 MiB, ours too.
    public static let maxChunkBytes: UInt64 = 64 << 20

    public let file: any RandomAccessFile
    public let fileSize: UInt64
    public let trailer: Trailer
    /// Where the trailer was found: the end (normal) or offset 0.
    public let trailerOffset: UInt64
    public let resourceFork: ResourceFork
    public let regions: [Region]
    /// Every data-bearing, zero and ignore chunk, in disk order, contiguous.
    public let chunks: [DiskChunk]
    public let byteCount: UInt64
    private let cache: ChunkCache
    /// Once set, every chunk decoded or read raw is checked against it before its bytes are
    /// handed out (`requireDigests`).
    private let required = Locked<ChunkTable?>(nil)

    public convenience init(path: String, cacheChunks: Int = 32) throws {
        try self.init(file: FileIO(path: path, flags: O_RDONLY), cacheChunks: cacheChunks)
    }

    /// `cacheChunks`: decoded chunks kept for random reads, counted in 1 MiB chunks.
    public init(file: any RandomAccessFile, cacheChunks: Int = 32) throws {
        self.file = file
        fileSize = try file.size()
        (trailer, trailerOffset) = try Self.findTrailer(file, fileSize: fileSize)
        let t = trailer
        guard t.xmlLength > 0 else { throw UDIFError.badResourceFork("is missing: the image has none") }
        guard t.xmlOffset <= fileSize, t.xmlLength <= fileSize - t.xmlOffset else {
            throw UDIFError.badResourceFork("at \(t.xmlOffset)+\(t.xmlLength) lies past the end of the file (\(fileSize) bytes)")
        }
        guard t.dataForkOffset <= fileSize, t.dataForkLength <= fileSize - t.dataForkOffset else {
            throw UDIFError.badBlockTable("data fork at \(t.dataForkOffset)+\(t.dataForkLength) lies past the end of the file (\(fileSize) bytes)")
        }
        guard t.xmlLength <= 256 << 20 else { throw UDIFError.badResourceFork("claims \(t.xmlLength) bytes, too large") }
        resourceFork = try ResourceFork(parsing: file.read(at: t.xmlOffset, count: Int(t.xmlLength)))
        let entries = resourceFork.blkx
        guard !entries.isEmpty else { throw UDIFError.badBlockTable("image has no blkx regions") }
        // Disk offsets and lengths must fit an Int (and Linux's off_t): reads and zero-run CRCs
        // count in Int, and a zero-fill chunk may claim the whole disk.
        guard t.sectorCount <= UInt64(Int64.max) / sectorSize else { throw UDIFError.notAnImage("koly sector count \(t.sectorCount) is impossible") }

        var regions: [Region] = []
        var chunks: [DiskChunk] = []
        var nextSector: UInt64 = 0
        let dataEnd = t.dataForkOffset + t.dataForkLength
        for (index, entry) in entries.enumerated() {
            let where_ = "blkx \(displayable(entry.id))"
            let table: BlockTable
            do { table = try BlockTable(parsing: entry.data) } catch let e as UDIFError { throw UDIFError.badBlockTable("\(where_): \(e)") }
            guard table.firstSector == nextSector else {
                throw UDIFError.badBlockTable("\(where_) starts at sector \(table.firstSector), want \(nextSector): regions are not contiguous")
            }
            guard table.sectorCount <= t.sectorCount - min(nextSector, t.sectorCount) else {
                throw UDIFError.badBlockTable("\(where_) runs past the image's \(t.sectorCount) sectors")
            }
            let first = chunks.count
            var pos: UInt64 = 0
            for (ci, c) in table.chunks.enumerated() where c.type != .comment {
                let at = "\(where_) chunk \(ci)"
                guard c.sectorStart == pos else { throw UDIFError.badBlockTable("\(at) starts at sector \(c.sectorStart), want \(pos)") }
                guard c.sectorCount <= table.sectorCount - pos else { throw UDIFError.badBlockTable("\(at) runs past its region") }
                let length = c.sectorCount * sectorSize
                var fileOffset: UInt64 = 0
                if c.type.hasStoredData {
                    guard length <= Self.maxChunkBytes else { throw UDIFError.badBlockTable("\(at) claims \(length) bytes, more than \(Self.maxChunkBytes)") }
                    let (o1, ov1) = t.dataForkOffset.addingReportingOverflow(table.dataOffset)
                    let (o2, ov2) = o1.addingReportingOverflow(c.storedOffset)
                    let (end, ov3) = o2.addingReportingOverflow(c.storedLength)
                    guard !ov1, !ov2, !ov3, end <= dataEnd else {
                        throw UDIFError.badBlockTable("\(at) data at \(c.storedOffset)+\(c.storedLength) lies past the end of the data fork")
                    }
                    if c.type == .raw, c.storedLength != length {
                        throw UDIFError.badBlockTable("\(at) is raw with \(c.storedLength) bytes stored for \(length)")
                    }
                    guard c.storedLength <= Self.maxChunkBytes + (1 << 20) else { throw UDIFError.badBlockTable("\(at) claims \(c.storedLength) stored bytes, too many") }
                    fileOffset = o2
                } else if c.type != .zeroFill && c.type != .ignore {
                    throw UDIFError.badBlockTable("\(at) has unknown chunk type \(c.type)")
                }
                if length > 0 {
                    chunks.append(DiskChunk(type: c.type, diskOffset: (nextSector + pos) * sectorSize, length: length,
                                            fileOffset: fileOffset, storedLength: c.storedLength, region: index))
                }
                pos += c.sectorCount
            }
            guard pos == table.sectorCount else {
                throw UDIFError.badBlockTable("\(where_) chunks cover \(pos) sectors, want \(table.sectorCount)")
            }
            regions.append(Region(id: entry.id, name: entry.name, table: table, chunkRange: first..<chunks.count))
            nextSector += table.sectorCount
        }
        guard nextSector == t.sectorCount else {
            throw UDIFError.badBlockTable("blkx regions cover \(nextSector) sectors, koly says \(t.sectorCount)")
        }
        self.regions = regions
        self.chunks = chunks
        byteCount = t.sectorCount * sectorSize
        // `cacheChunks` counts 1 MiB chunks: images with larger chunks cache fewer (at least
        // four), so a 64 MiB-chunk image holds 256 MiB decoded, not gigabytes.
        let largest = chunks.lazy.filter { $0.type.hasStoredData }.map(\.length).max() ?? 0
        let megabytes = max(1, Int((largest + (1 << 20) - 1) >> 20))
        cache = ChunkCache(capacity: max(min(cacheChunks, 4), cacheChunks / megabytes))
    }

    private static func findTrailer(_ file: any RandomAccessFile, fileSize: UInt64) throws -> (Trailer, UInt64) {
        guard fileSize >= UInt64(Trailer.size) else { throw UDIFError.notAnImage("file is \(fileSize) bytes, too small for a UDIF image") }
        let end = fileSize - UInt64(Trailer.size)
        if let t = try? Trailer(parsing: file.read(at: end, count: Trailer.size)) { return (t, end) }
        if let t = try? Trailer(parsing: file.read(at: 0, count: Trailer.size)) { return (t, 0) }
        throw UDIFError.notAnImage("no koly trailer at the end or start: not a UDIF image, or truncated")
    }

    /// Quick test without a full parse.
    public static func looksLikeUDIF(_ file: any RandomAccessFile) -> Bool {
        guard let size = try? file.size(), size >= 512 else { return false }
        for at in [size - 512, 0] {
            if let magic = try? file.read(at: at, count: 4), magic == [0x6B, 0x6F, 0x6C, 0x79] { return true }
        }
        return false
    }

    // MARK: reading

    /// Index of the chunk holding disk byte `offset`.
    public func chunkIndex(containing offset: UInt64) -> Int? {
        guard offset < byteCount else { return nil }
        var lo = 0
        var hi = chunks.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if chunks[mid].diskOffset + chunks[mid].length <= offset { lo = mid + 1 } else { hi = mid }
        }
        return lo < chunks.count ? lo : nil
    }

    /// The stored (compressed) bytes of a chunk.
    public func storedBytes(of index: Int) throws -> [UInt8] {
        let c = chunks[index]
        return try file.read(at: c.fileOffset, count: Int(c.storedLength))
    }

    /// From now on every chunk this image decodes, or reads raw, must match its record in
    /// `table` (the image's own, from its scan) before anyone sees its bytes; a chunk that does
    /// not throws `digestMismatch` for that read. Zero-fill chunks were checked when the table
    /// was built; free space has no bytes to check.
    public func requireDigests(_ table: ChunkTable) {
        precondition(table.records.count == chunks.count)
        required.withLock { $0 = table }
    }

    /// The table chunks are checked against, if any.
    public var requiredDigests: ChunkTable? { required.withLock { $0 } }

    private func check(_ index: Int, _ decoded: UnsafeRawBufferPointer) throws {
        guard let table = required.withLock({ $0 }), table.records[index].kind == .data else { return }
        guard table.matches(index, decoded) else { throw located(index, .digestMismatch) }
    }

    private func located(_ index: Int, _ error: UDIFError) -> UDIFError {
        let c = chunks[index]
        return .inChunk(index: index, firstByte: c.diskOffset, lastByte: c.diskOffset + c.length - 1, region: regions[c.region].id, error)
    }

    /// Decodes chunk `index` into `output`, which must be exactly the chunk's length.
    public func decodeChunk(_ index: Int, into output: UnsafeMutableRawBufferPointer) throws {
        let c = chunks[index]
        precondition(UInt64(output.count) == c.length)
        switch c.type {
        case .zeroFill, .ignore:
            output.initializeMemory(as: UInt8.self, repeating: 0)
        case .raw:
            try file.read(into: output, at: c.fileOffset)
            try check(index, UnsafeRawBufferPointer(output))
        default:
            // Read into a reused buffer: a fresh one per chunk costs a page fault per 4 KiB.
            try ScratchBuffers.borrow(Int(c.storedLength)) { stored in
                try file.read(into: stored, at: c.fileOffset)
                try decode(index, from: UnsafeRawBufferPointer(stored), into: output)
            }
        }
    }

    /// Decodes chunk `index` from stored bytes the caller already read.
    public func decode(_ index: Int, from stored: [UInt8], into output: UnsafeMutableRawBufferPointer) throws {
        try stored.withUnsafeBytes { try decode(index, from: $0, into: output) }
    }

    public func decode(_ index: Int, from stored: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        do {
            try Codec.decode(chunks[index].type, stored, into: output)
        } catch let e as UDIFError {
            throw located(index, e)
        }
        try check(index, UnsafeRawBufferPointer(output))
    }

    public func decodeChunk(_ index: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(chunks[index].length))
        try out.withUnsafeMutableBytes { try decodeChunk(index, into: $0) }
        return out
    }

    public func describe(chunk index: Int) -> String {
        let c = chunks[index]
        return "chunk \(index) (bytes \(c.diskOffset)-\(c.diskOffset + c.length - 1), blkx \(displayable(regions[c.region].id)))"
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        try readLentBytes(into: buffer, at: offset)
    }

    /// Lends cached decoded chunks, and shared zeros for zero runs, without copying them.
    public func withBytes(at offset: UInt64, count: Int, _ body: ([UnsafeRawBufferPointer]) -> Void) throws {
        guard offset <= byteCount, UInt64(count) <= byteCount - offset else {
            throw UDIFError.outOfRange(offset: offset, count: count, diskBytes: byteCount)
        }
        var pieces: [UnsafeRawBufferPointer] = []
        var held: [DecodedChunk] = []
        var done = 0
        while done < count {
            let pos = offset + UInt64(done)
            guard let index = chunkIndex(containing: pos) else { throw UDIFError.badBlockTable("no chunk covers byte \(pos)") }
            let c = chunks[index]
            let within = Int(pos - c.diskOffset)
            let n = min(count - done, Int(c.length) - within)
            switch c.type {
            case .zeroFill, .ignore:
                pieces += sharedZeros(n)
            case .raw where requiredDigests == nil:
                let chunk = DecodedChunk(count: n)
                try file.read(into: chunk.storage, at: c.fileOffset + UInt64(within))
                held.append(chunk)
                pieces.append(chunk.bytes)
            default:
                // A checked raw chunk is read whole, checked and cached like a decoded one.
                let chunk = try cachedChunk(index)
                held.append(chunk)
                pieces.append(UnsafeRawBufferPointer(rebasing: chunk.bytes[within..<(within + n)]))
            }
            done += n
        }
        withExtendedLifetime(held) { body(pieces) }
    }

    private func cachedChunk(_ index: Int) throws -> DecodedChunk {
        try cache.value(of: index) { try decodedChunk(index) }
    }

    /// Chunk `index` decoded into a pooled buffer, for callers that decode many chunks in turn.
    public func decodedChunk(_ index: Int) throws -> DecodedChunk {
        let chunk = DecodedChunk(count: Int(chunks[index].length))
        try decodeChunk(index, into: chunk.storage)
        return chunk
    }

    /// Starts decoding chunk `index` on another core unless it is cached or already on its way,
    /// so a sequential reader finds it ready. Failures are left for the real read to report.
    public func prefetch(_ index: Int) {
        guard chunks.indices.contains(index), chunks[index].type.hasStoredData,
              chunks[index].type != .raw || requiredDigests != nil, cache.claim(index) else { return }
        DispatchQueue.global().async {
            self.cache.fulfil(index, with: try? self.decodedChunk(index))
        }
    }

    // MARK: checksums

    /// The CRC-32 of each region's data as UDIF defines it (ignore runs excluded),
    /// decoding chunks on all cores.
    public func computeRegionCRCs() throws -> [UInt32] {
        var crcs = [UInt32](repeating: 0, count: regions.count)
        try orderedParallelMap(count: chunks.count) { i -> UInt32? in
            let c = self.chunks[i]
            return self.regionCRC(of: i, decoded: c.type.hasStoredData ? try self.decodeChunk(i) : nil)
        } consume: { i, crc in
            self.addRegionCRC(crc, of: i, to: &crcs)
        }
        return crcs
    }

    /// What chunk `index` adds to its region's CRC-32: nil for ignore runs, which do not
    /// count. `decoded` is needed only for chunks with stored data.
    public func regionCRC(of index: Int, decoded: [UInt8]?) -> UInt32? {
        let c = chunks[index]
        switch c.type {
        case .ignore: return nil
        case .zeroFill: return CRC32.updateZeros(0, count: c.length)
        default: return CRC32.update(0, decoded ?? [])
        }
    }

    /// Appends a chunk's CRC-32 (from `regionCRC`) to its region's, in disk order.
    public func addRegionCRC(_ crc: UInt32?, of index: Int, to crcs: inout [UInt32]) {
        guard let crc else { return }
        let c = chunks[index]
        crcs[c.region] = CRC32.combine(crcs[c.region], crc, lengthOfB: c.length)
    }

    /// Master checksum as UDIF defines it: CRC-32 over the blkx CRC-32 values, big-endian.
    public static func masterCRC(of regionCRCs: [UInt32]) -> UInt32 {
        var bytes: [UInt8] = []
        for crc in regionCRCs { bytes += UDIFChecksum.crc32(crc).value }
        return CRC32.update(0, bytes)
    }

    /// True when every stored chunk sits after the one before it in disk order.
    public var isOrdered: Bool {
        var last: UInt64 = 0
        for c in chunks where c.type.hasStoredData {
            if c.fileOffset < last { return false }
            last = c.fileOffset
        }
        return true
    }
}

/// One chunk's decoded bytes at a fixed address, so readers can be lent them without a copy.
public typealias DecodedChunk = PooledBuffer

/// Zeros lent for zero-fill and ignore runs. Written once so its pages are really mapped:
/// the kernel then copies from them on its fast path instead of faulting in the zero page.
nonisolated(unsafe) let sharedZeroBytes: UnsafeRawBufferPointer = {  // a pointer, never written after this
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    return UnsafeRawBufferPointer(buffer)
}()

/// `count` zeros as pieces of the shared zero buffer, for `withBytes` callers.
public func sharedZeros(_ count: Int) -> [UnsafeRawBufferPointer] {
    stride(from: 0, to: count, by: sharedZeroBytes.count).map {
        UnsafeRawBufferPointer(rebasing: sharedZeroBytes[0..<min(sharedZeroBytes.count, count - $0)])
    }
}

/// A small LRU of decoded chunks, shared by all readers of one image. A chunk being decoded
/// is marked in flight, so concurrent readers and read-ahead wait for it instead of decoding
/// it twice.
final class ChunkCache: Sendable {
    private struct State {
        var entries: [Int: (chunk: DecodedChunk, stamp: UInt64)] = [:]
        var inFlight: Set<Int> = []
        var clock: UInt64 = 0
    }
    private let state = Monitor(State())
    let capacity: Int

    init(capacity: Int) { self.capacity = max(1, capacity) }

    /// The cached bytes of `index`, decoding them with `decode` when no one else is.
    func value(of index: Int, decode: () throws -> DecodedChunk) throws -> DecodedChunk {
        let cached = state.wait(until: { $0.entries[index] != nil || !$0.inFlight.contains(index) }) { s -> DecodedChunk? in
            if let e = s.entries[index] {
                s.clock += 1
                s.entries[index] = (e.chunk, s.clock)
                return e.chunk
            }
            s.inFlight.insert(index)
            return nil
        }
        if let cached { return cached }
        do {
            let chunk = try decode()
            fulfil(index, with: chunk)
            return chunk
        } catch {
            fulfil(index, with: nil)
            throw error
        }
    }

    /// Marks `index` in flight for a background decoder; false when cached or already claimed.
    func claim(_ index: Int) -> Bool {
        state.update { s in
            guard s.entries[index] == nil, !s.inFlight.contains(index) else { return false }
            s.inFlight.insert(index)
            return true
        }
    }

    /// Ends a claim: stores the bytes (nil when decoding failed) and wakes waiting readers.
    func fulfil(_ index: Int, with chunk: DecodedChunk?) {
        state.update { s in
            s.inFlight.remove(index)
            guard let chunk else { return }
            s.clock += 1
            s.entries[index] = (chunk, s.clock)
            if s.entries.count > capacity, let oldest = s.entries.min(by: { $0.value.stamp < $1.value.stamp })?.key {
                s.entries[oldest] = nil
            }
        }
    }
}
