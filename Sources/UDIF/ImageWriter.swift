import SystemSupport
import Foundation

/// The formats we write, by hdiutil's names. UDZO: zlib chunks; UDBZ: bzip2; ULMO: XZ
/// (hdiutil's "LZMA" chunk type); UDRO: raw. All store all-zero chunks as zero-fill entries
/// with no data, and a chunk that does not shrink as raw.
public enum ImageFormat: String, Sendable, CaseIterable {
    case udzo = "UDZO"
    case udbz = "UDBZ"
    case ulmo = "ULMO"
    case udro = "UDRO"

    /// The chunk type compressed chunks get; raw for UDRO.
    public var chunkType: ChunkType {
        switch self {
        case .udzo: .zlib
        case .udbz: .bzip2
        case .ulmo: .lzma
        case .udro: .raw
        }
    }
}

public struct WriteSummary: Sendable {
    public var fileSize: UInt64
    public var diskBytes: UInt64
    public var chunkCounts: [ChunkType: Int]
    public var regionCRCs: [UInt32]
    /// Disk bytes left out as ignore chunks (free space): never read, never stored.
    public var ignoredBytes: UInt64 = 0
}

/// Writes a UDIF image from any `ByteSource`: chunks are read and compressed on all cores,
/// then written in logical order, so the data fork is always ordered. The image appears
/// under its final name only once complete (temporary file, fsync, rename).
public struct ImageWriter: Sendable {
    public var format: ImageFormat = .udzo
    /// libdeflate level; 6 matches gzip -6's ratio.
    public var zlibLevel: Int32 = 6
    /// bzip2 block size in 100 kB; 9 is the densest.
    public var bzip2Level: Int32 = 9
    /// XZ preset for ULMO; the dictionary is set to the chunk size when writing.
    public var xzPreset: UInt32 = 9
    public var xzExtreme = true
    /// hdiutil's chunk size: 2048 sectors = 1 MiB. At most `UDIFImage.maxChunkBytes`.
    public var chunkSectors: UInt64 = 2048
    /// Chunk bytes (read and encoded) in flight at once; bigger chunks mean fewer at a time.
    public var memoryBudget = 256 << 20
    /// Regions to lay out; nil means detect the partition map.
    public var regions: [RegionPlan]?
    /// Where the source holds data, sorted (a sparse file's extents); nil: everywhere. A chunk
    /// wholly outside is zero-fill without a read, and of the others only the parts inside are
    /// read, so holes cost nothing.
    public var dataExtents: [Range<UInt64>]?
    /// Disk byte ranges written as ignore chunks: free space, never read and never stored.
    /// Whole sectors, sorted and disjoint. Data chunks still keep to the grid of
    /// `chunkSectors` cells from each region's start; a cell cut by free space becomes pieces.
    public var ignore: [Range<UInt64>] = []
    /// Extra resources to store beside blkx and plst (scan data, for example).
    public var extraResources: [String: [ResourceEntry]] = [:]
    public var workers = ProcessInfo.processInfo.activeProcessorCount

    public init(format: ImageFormat = .udzo) { self.format = format }

    private struct Job {
        var region: Int
        var sectorStart: UInt64  // relative to the region
        var sectorCount: UInt64
        var diskOffset: UInt64
        var ignore = false
    }

    /// One chunk of a region's table, in sectors relative to the region.
    public struct Piece: Sendable, Equatable {
        public var sectorStart: UInt64
        public var sectorCount: UInt64
        public var ignore: Bool

        public init(sectorStart: UInt64, sectorCount: UInt64, ignore: Bool) {
            self.sectorStart = sectorStart
            self.sectorCount = sectorCount
            self.ignore = ignore
        }
    }

    /// The chunks of a region of `sectorCount` sectors: grid cells of `chunkSectors` from its
    /// start, cut where `free` runs (sectors relative to the region, sorted, disjoint) begin
    /// and end. Free runs become one ignore chunk each, however long: like a zero-fill run,
    /// an ignore run costs a table entry, not one per cell.
    public static func pieces(sectorCount: UInt64, chunkSectors: UInt64, free: [Range<UInt64>]) -> [Piece] {
        var out: [Piece] = []
        func data(_ from: UInt64, _ to: UInt64) {
            var s = from
            while s < to {
                let e = min((s / chunkSectors + 1) * chunkSectors, to)
                out.append(Piece(sectorStart: s, sectorCount: e - s, ignore: false))
                s = e
            }
        }
        var pos: UInt64 = 0
        for run in free {
            let lower = max(run.lowerBound, pos), upper = min(run.upperBound, sectorCount)
            guard lower < upper else { continue }
            data(pos, lower)
            if let last = out.last, last.ignore, last.sectorStart + last.sectorCount == lower {
                out[out.count - 1].sectorCount += upper - lower
            } else {
                out.append(Piece(sectorStart: lower, sectorCount: upper - lower, ignore: true))
            }
            pos = upper
        }
        data(pos, sectorCount)
        return out
    }

    private struct Encoded: Sendable {
        var type: ChunkType
        /// The stored bytes: the first `length` of `buffer` (none for zero-fill).
        var buffer: PageBuffer?
        var length: Int
        var crc: UInt32
    }

    /// The XZ settings used for chunks of `chunkSectors`.
    public var xzSettings: Codec.XZSettings {
        Codec.XZSettings(preset: xzPreset, extreme: xzExtreme, dictionarySize: UInt32(chunkSectors * sectorSize))
    }

    /// Workers and window for `orderedParallelMap`: a chunk holds at most two buffers while
    /// encoding and one while waiting, so `window + workers` buffers stay within the memory
    /// budget; XZ encoders (about ten times the dictionary each) are held to a quarter of RAM.
    public func parallelism() -> (workers: Int, window: Int) {
        let chunkBytes = Int(chunkSectors * sectorSize)
        var workers = max(1, min(self.workers, memoryBudget / (2 * chunkBytes)))
        if format == .ulmo {
            let each = max(xzSettings.encoderMemory, 1)
            let allowed = max(1, ProcessInfo.processInfo.physicalMemory / 4 / each)
            workers = min(workers, Int(min(allowed, UInt64(Int.max))))
        }
        let window = max(workers, min(workers * 3, memoryBudget / chunkBytes - workers))
        return (workers, window)
    }

    @discardableResult
    public func write(from source: some ByteSource, to path: String,
                      progress: ((_ done: UInt64, _ total: UInt64) -> Void)? = nil) throws -> WriteSummary {
        guard source.byteCount % sectorSize == 0 else {
            throw UDIFError.unusableSource("source is \(source.byteCount) bytes, not a whole number of 512-byte sectors")
        }
        guard source.byteCount > 0 else { throw UDIFError.unusableSource("source is empty") }
        precondition(chunkSectors > 0 && chunkSectors * sectorSize <= UDIFImage.maxChunkBytes, "chunk size out of range")
        let plans = try regions ?? PartitionMap.regions(of: source)
        let sectors = source.byteCount / sectorSize
        guard plans.reduce(0, { $0 + $1.sectorCount }) == sectors else {
            throw UDIFError.unusableSource("regions do not cover the source's \(sectors) sectors")
        }
        var previous: UInt64 = 0
        for run in ignore {
            guard run.lowerBound % sectorSize == 0, run.upperBound % sectorSize == 0, run.lowerBound >= previous,
                  run.upperBound <= source.byteCount else {
                throw UDIFError.unusableSource("free space runs must be whole sectors, sorted, within the source")
            }
            previous = run.upperBound
        }
        var jobs: [Job] = []
        var nextRun = 0
        for (r, plan) in plans.enumerated() {
            let end = plan.firstSector + plan.sectorCount
            // Free runs that reach into this region, relative to it; a run may span regions.
            while nextRun < ignore.count, ignore[nextRun].upperBound / sectorSize <= plan.firstSector { nextRun += 1 }
            var free: [Range<UInt64>] = []
            var k = nextRun
            while k < ignore.count, ignore[k].lowerBound / sectorSize < end {
                let lower = max(ignore[k].lowerBound / sectorSize, plan.firstSector), upper = min(ignore[k].upperBound / sectorSize, end)
                if lower < upper { free.append((lower - plan.firstSector)..<(upper - plan.firstSector)) }
                k += 1
            }
            for p in Self.pieces(sectorCount: plan.sectorCount, chunkSectors: chunkSectors, free: free) {
                jobs.append(Job(region: r, sectorStart: p.sectorStart, sectorCount: p.sectorCount,
                                diskOffset: (plan.firstSector + p.sectorStart) * sectorSize, ignore: p.ignore))
            }
        }

        let partial = try TemporaryOutput(finalPath: path)
        defer { partial.discard() }
        let out = partial.file
        var offset: UInt64 = 0
        var dataCRC: UInt32 = 0
        var regionCRCs = [UInt32](repeating: 0, count: plans.count)
        var tables = [[BlockChunk]](repeating: [], count: plans.count)
        var counts: [ChunkType: Int] = [:]
        var ignored: UInt64 = 0
        var done: UInt64 = 0
        var writeback = WritebackTrigger(file: out)
        let format = self.format
        let level = zlibLevel
        let jobList = jobs

        let extents = dataExtents
        let xz = xzSettings
        let bzip2Level = self.bzip2Level
        let (workerCount, window) = parallelism()
        let pool = BufferPool(bufferSize: Int(chunkSectors * sectorSize), keep: window + workerCount)

        try orderedParallelMap(count: jobList.count, workers: workerCount, window: window) { i -> Encoded in
            let job = jobList[i]
            if job.ignore { return Encoded(type: .ignore, buffer: nil, length: 0, crc: 0) }
            let count = Int(job.sectorCount * sectorSize)
            let span = job.diskOffset..<(job.diskOffset + UInt64(count))
            let parts = extents.map { Self.parts(of: span, in: $0) } ?? [span]
            if parts.isEmpty { return Encoded(type: .zeroFill, buffer: nil, length: 0, crc: CRC32.updateZeros(0, count: UInt64(count))) }
            let raw = pool.take()
            let input = raw.prefix(count)
            if parts != [span] { input.initializeMemory(as: UInt8.self, repeating: 0) }
            for part in parts {
                let at = Int(part.lowerBound - span.lowerBound)
                try source.read(into: UnsafeMutableRawBufferPointer(rebasing: input[at..<(at + part.count)]), at: part.lowerBound)
            }
            let crc = CRC32.update(0, UnsafeRawBufferPointer(input))
            if isAllZero(UnsafeRawBufferPointer(input)) {
                pool.giveBack(raw)
                return Encoded(type: .zeroFill, buffer: nil, length: 0, crc: crc)
            }
            if format != .udro && !Codec.looksIncompressible(UnsafeRawBufferPointer(input)) {
                let out = pool.take()
                let bytes = UnsafeRawBufferPointer(input)
                let n: Int? = switch format {
                case .udzo: Codec.compressZlib(bytes, level: level, into: out.prefix(count))
                case .udbz: Codec.compressBzip2(bytes, level: bzip2Level, into: out.prefix(count))
                case .ulmo: Codec.compressXZ(bytes, xz, into: out.prefix(count))
                case .udro: nil
                }
                if let n {
                    pool.giveBack(raw)
                    return Encoded(type: format.chunkType, buffer: out, length: n, crc: crc)
                }
                pool.giveBack(out)
            }
            return Encoded(type: .raw, buffer: raw, length: count, crc: crc)
        } consume: { i, encoded in
            let job = jobList[i]
            let stored = UInt64(encoded.length)
            if let buffer = encoded.buffer {
                let payload = UnsafeRawBufferPointer(buffer.prefix(encoded.length))
                try out.write(payload, at: offset)
                dataCRC = CRC32.update(dataCRC, payload)
                writeback.wrote(upTo: offset + stored)
                pool.giveBack(buffer)
            }
            tables[job.region].append(BlockChunk(type: encoded.type, sectorStart: job.sectorStart, sectorCount: job.sectorCount,
                                                 storedOffset: offset, storedLength: stored))
            offset += stored
            let length = job.sectorCount * sectorSize
            if encoded.type == .ignore {
                ignored += length  // outside the region's CRC-32, as UDIF defines it
            } else {
                regionCRCs[job.region] = CRC32.combine(regionCRCs[job.region], encoded.crc, lengthOfB: length)
            }
            counts[encoded.type, default: 0] += 1
            done += length
            progress?(done, source.byteCount)
        }

        let hasMBRFirst = plans.count > 1 && plans[0].name.contains("(MBR :")
        var blkx: [ResourceEntry] = []
        for (r, plan) in plans.enumerated() {
            let table = BlockTable(firstSector: plan.firstSector, sectorCount: plan.sectorCount,
                                   buffersNeeded: UInt32(chunkSectors + 8), blockDescriptor: UInt32(r),
                                   checksum: .crc32(regionCRCs[r]), chunks: tables[r])
            blkx.append(ResourceEntry(cfName: plan.name, data: table.serialized(), id: String(hasMBRFirst ? r - 1 : r), name: plan.name))
        }
        var resources = extraResources
        resources["blkx"] = blkx
        resources["plst"] = [ResourceFork.defaultPlst()]
        let xml = ResourceFork(resources: resources).xml()

        var trailer = Trailer()
        trailer.dataForkLength = offset
        trailer.dataForkChecksum = .crc32(dataCRC)
        trailer.xmlOffset = offset
        trailer.xmlLength = UInt64(xml.count)
        trailer.segmentID = withUnsafeBytes(of: UUID().uuid) { Array($0) }
        trailer.masterChecksum = .crc32(UDIFImage.masterCRC(of: regionCRCs))
        trailer.imageVariant = plans.count > 1 ? 1 : 2
        trailer.sectorCount = sectors
        try out.write(xml, at: offset)
        try out.write(trailer.serialized(), at: offset + UInt64(xml.count))
        let fileSize = offset + UInt64(xml.count) + UInt64(Trailer.size)
        try partial.commit()
        return WriteSummary(fileSize: fileSize, diskBytes: source.byteCount, chunkCounts: counts, regionCRCs: regionCRCs,
                            ignoredBytes: ignored)
    }
}

extension ImageWriter {
    /// The parts of `span` inside `extents` (sorted, disjoint).
    static func parts(of span: Range<UInt64>, in extents: [Range<UInt64>]) -> [Range<UInt64>] {
        var low = 0, high = extents.count
        while low < high {  // the first extent ending after the span starts
            let mid = (low + high) / 2
            if extents[mid].upperBound <= span.lowerBound { low = mid + 1 } else { high = mid }
        }
        var parts: [Range<UInt64>] = []
        while low < extents.count, extents[low].lowerBound < span.upperBound {
            parts.append(max(extents[low].lowerBound, span.lowerBound)..<min(extents[low].upperBound, span.upperBound))
            low += 1
        }
        return parts
    }
}

/// True when every byte is zero; word-wise, since it runs over every chunk.
public func isAllZero(_ buffer: UnsafeRawBufferPointer) -> Bool {
    let words = buffer.count / 8
    if words > 0 {
        let w = UnsafeRawBufferPointer(rebasing: buffer[0..<(words * 8)]).bindMemory(to: UInt64.self)
        var acc: UInt64 = 0
        var i = 0
        while i < words {
            acc |= w[i]
            if i & 1023 == 1023, acc != 0 { return false }
            i += 1
        }
        if acc != 0 { return false }
    }
    for i in (words * 8)..<buffer.count where buffer[i] != 0 { return false }
    return true
}
