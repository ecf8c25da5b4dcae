import SystemSupport
import Foundation

/// The formats we write. UDZO: zlib chunks; UDRO: raw chunks. Both store all-zero chunks as
/// zero-fill entries with no data.
public enum ImageFormat: String, Sendable, CaseIterable {
    case udzo = "UDZO"
    case udro = "UDRO"
}

public struct WriteSummary: Sendable {
    public var fileSize: UInt64
    public var diskBytes: UInt64
    public var chunkCounts: [ChunkType: Int]
    public var regionCRCs: [UInt32]
}

/// Writes a UDIF image from any `ByteSource`: chunks are read and compressed on all cores,
/// then written in logical order, so the data fork is always ordered. The image appears
/// under its final name only once complete (temporary file, fsync, rename).
public struct ImageWriter: Sendable {
    public var format: ImageFormat = .udzo
    /// libdeflate level; 6 matches gzip -6's ratio.
    public var zlibLevel: Int32 = 6
    /// hdiutil's chunk size: 2048 sectors = 1 MiB.
    public var chunkSectors: UInt64 = 2048
    /// Regions to lay out; nil means detect the partition map.
    public var regions: [RegionPlan]?
    /// Extra resources to store beside blkx and plst (scan data, for example).
    public var extraResources: [String: [ResourceEntry]] = [:]
    public var workers = ProcessInfo.processInfo.activeProcessorCount

    public init(format: ImageFormat = .udzo) { self.format = format }

    private struct Job {
        var region: Int
        var sectorStart: UInt64  // relative to the region
        var sectorCount: UInt64
        var diskOffset: UInt64
    }

    private struct Encoded: Sendable {
        var type: ChunkType
        var payload: [UInt8]
        var crc: UInt32
    }

    @discardableResult
    public func write(from source: some ByteSource, to path: String,
                      progress: ((_ done: UInt64, _ total: UInt64) -> Void)? = nil) throws -> WriteSummary {
        guard source.byteCount % sectorSize == 0 else {
            throw UDIFError.unusableSource("source is \(source.byteCount) bytes, not a whole number of 512-byte sectors")
        }
        guard source.byteCount > 0 else { throw UDIFError.unusableSource("source is empty") }
        let plans = try regions ?? PartitionMap.regions(of: source)
        let sectors = source.byteCount / sectorSize
        guard plans.reduce(0, { $0 + $1.sectorCount }) == sectors else {
            throw UDIFError.unusableSource("regions do not cover the source's \(sectors) sectors")
        }
        var jobs: [Job] = []
        for (r, plan) in plans.enumerated() {
            var s: UInt64 = 0
            while s < plan.sectorCount {
                let n = min(chunkSectors, plan.sectorCount - s)
                jobs.append(Job(region: r, sectorStart: s, sectorCount: n, diskOffset: (plan.firstSector + s) * sectorSize))
                s += n
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
        var done: UInt64 = 0
        var writeback = WritebackTrigger(file: out)
        let format = self.format
        let level = zlibLevel
        let jobList = jobs

        try orderedParallelMap(count: jobList.count, workers: workers) { i -> Encoded in
            let job = jobList[i]
            var raw = [UInt8](repeating: 0, count: Int(job.sectorCount * sectorSize))
            try raw.withUnsafeMutableBytes { try source.read(into: $0, at: job.diskOffset) }
            return raw.withUnsafeBytes { buf in
                let crc = CRC32.update(0, buf)
                if isAllZero(buf) { return Encoded(type: .zeroFill, payload: [], crc: crc) }
                if format == .udzo, let z = Codec.compressZlib(buf, level: level) {
                    return Encoded(type: .zlib, payload: z, crc: crc)
                }
                return Encoded(type: .raw, payload: raw, crc: crc)
            }
        } consume: { i, encoded in
            let job = jobList[i]
            if !encoded.payload.isEmpty {
                try out.write(encoded.payload, at: offset)
                dataCRC = CRC32.update(dataCRC, encoded.payload)
                writeback.wrote(upTo: offset + UInt64(encoded.payload.count))
            }
            tables[job.region].append(BlockChunk(type: encoded.type, sectorStart: job.sectorStart, sectorCount: job.sectorCount,
                                                 storedOffset: offset, storedLength: UInt64(encoded.payload.count)))
            offset += UInt64(encoded.payload.count)
            let length = job.sectorCount * sectorSize
            regionCRCs[job.region] = CRC32.combine(regionCRCs[job.region], encoded.crc, lengthOfB: length)
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
        return WriteSummary(fileSize: fileSize, diskBytes: source.byteCount, chunkCounts: counts, regionCRCs: regionCRCs)
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
