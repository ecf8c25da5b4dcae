import SystemSupport
import Crypto
import Foundation
import Synchronization
import UDIF

/// `asr imagescan`: records checksums so an image can be verified, restored with
/// verification and served by multicast.
/// - UDIF: SHA-256 per chunk, after checking the blkx CRC-32s, and (unless `appleDigests` is
///   off) Apple's linear whole-disk SHA-1 and SHA-256 in `nsiz`; the data fork is rewritten in
///   logical order unless `reorder` is off. The new image replaces the old only when complete.
/// - Raw image or block device: a bmaptool 2.0 `.bmap` sidecar.
public struct ImageScanner {
    public enum Outcome: Sendable, Equatable {
        case scanned
        case alreadyScanned
        case wroteBlockMap(String)
    }

    public var reporter: Reporter
    public var reorder = true
    /// Apple's linear whole-disk digests, for images that go back to a Mac. They hash every
    /// byte of the disk, free space included; nothing of ours needs them.
    public var appleDigests = true
    /// Where to write the block map of a raw source; default IMAGE.bmap (./NAME.bmap for devices).
    public var blockMapPath: String?
    /// Signs the image's identity: into the image, or for a raw source into a detached .sig
    /// beside its block map.
    public var signingKey: SigningKey?

    public init(reporter: Reporter) { self.reporter = reporter }

    public func scan(_ path: String) throws -> Outcome {
        if path.contains("://") { throw ImagingError.unusableSource(path: path, "is remote: scan an image where it is stored, not over the network") }
        let source = try ImageSource.open(path)
        guard let image = source.udif else {
            // An `asr mount`'s disk.img comes with its block map, kept up to date by the mount.
            if blockMapPath == nil, signingKey == nil, let map = BlockMap.servedSidecar(for: path),
               (try? BlockMap.load(map))?.imageSize == source.bytes.byteCount {
                return .alreadyScanned
            }
            let (mapPath, table) = try writeBlockMap(source)
            let digestsPath = RawChunkDigests.path(forMap: mapPath)
            try Self.writeSmallFile(digestsPath, RawChunkDigests.serialized(table))
            let signaturePath = RawChunkDigests.signaturePath(forDigests: digestsPath)
            if let signingKey {
                try Self.writeSmallFile(signaturePath, try signingKey.sign(table.identity).serialized())
            } else if FileManager.default.fileExists(atPath: signaturePath) {
                // A signature over what the image held before would now be refused: drop it.
                try FileManager.default.removeItem(atPath: signaturePath)
            }
            return .wroteBlockMap(mapPath)
        }
        // A scan without Apple's digests, or by an earlier asr, is done again.
        if let stored = try? ScanData.stored(in: image), stored.version == ScanData.currentVersion,
           image.isOrdered || !reorder, stored.diskSHA256 != nil || !appleDigests {
            guard let signingKey else { return .alreadyScanned }
            // Rewritten as it is (reorder: false): each chunk's stored offset moves by the same
            // amount, and the signature covers the new ones.
            if let old = try? ImageSignature.stored(in: image), let table = try? stored.table(of: image),
               old == (try signingKey.sign(table.identity)) {
                return .alreadyScanned
            }
            let rewriter = try ImageRewriter(image, replacing: path, reorder: false)
            try reporter.step("Writing signature") {
                try rewriter.finish(replacingResources: [:], signed: { offsets in
                    try signingKey.sign(stored.table(of: image, storedOffsets: offsets).identity).resources()
                })
            }
            return .scanned
        }
        let rewriter = try ImageRewriter(image, replacing: path, reorder: reorder)
        let (scan, sha1) = try computeScan(image, copyingInto: reorder ? rewriter : nil, appleDigests: appleDigests)
        let resources = scan.resources(diskSHA1: sha1, masterCRC: image.trailer.masterChecksum.crc32Value ?? 0)
        var dropped = resources
        if signingKey == nil { dropped[ImageSignature.resourceKey] = [] }  // a new scan outdates any signature
        try reporter.step("Writing scan data") {
            try rewriter.finish(replacingResources: dropped, signed: signingKey.map { key in
                { offsets in try key.sign(scan.table(of: image, storedOffsets: offsets).identity).resources() }
            })
        }
        return .scanned
    }

    private struct ChunkDigest: Sendable {
        var sha256: [UInt8]
        var crc: UInt32?
        var bytes: [UInt8]?
        var stored: [UInt8]?
    }

    /// Decodes and hashes every chunk on all cores; Apple's linear SHA-256 and SHA-1 each run
    /// on a thread of their own from the decoded bytes as they pass (free and zero runs from a
    /// shared zero buffer), and the stored bytes go to `rewriter`.
    func computeScan(_ image: UDIFImage, copyingInto rewriter: ImageRewriter?,
                     appleDigests: Bool = true) throws -> (ScanData, [UInt8]?) {
        let linear = appleDigests ? (sha256: BackgroundHasher<SHA256>(), sha1: BackgroundHasher<Insecure.SHA1>()) : nil
        let keepStored = rewriter != nil
        var crcs = [UInt32](repeating: 0, count: image.regions.count)
        var entries: [ScanData.Entry] = []
        entries.reserveCapacity(image.chunks.count)
        reporter.begin("Block checksum: ", key: "imagescan")
        defer { reporter.abandon() }
        try orderedParallelMap(count: image.chunks.count) { i -> ChunkDigest in
            let c = image.chunks[i]
            // Free space is not hashed: verify and restore skip ignore chunks by their type,
            // so the entry holds zeros in place of a digest.
            if c.type == .ignore { return ChunkDigest(sha256: ChunkTable.noDigest, crc: nil, bytes: nil) }
            if c.type == .zeroFill {
                return ChunkDigest(sha256: ZeroDigests.shared.sha256(of: c.length),
                                   crc: image.regionCRC(of: i, decoded: nil), bytes: nil)
            }
            let stored = try image.storedBytes(of: i)
            var bytes = c.type == .raw ? stored : [UInt8](repeating: 0, count: Int(c.length))
            if c.type != .raw { try bytes.withUnsafeMutableBytes { try image.decode(i, from: stored, into: $0) } }
            return ChunkDigest(sha256: Array(SHA256.hash(data: bytes)), crc: image.regionCRC(of: i, decoded: bytes), bytes: bytes,
                               stored: keepStored ? stored : nil)
        } consume: { i, d in
            let c = image.chunks[i]
            if let linear {
                if let bytes = d.bytes {
                    linear.sha256.update(bytes)
                    linear.sha1.update(bytes)
                } else {
                    // Apple's whole-disk digests read ignore runs as zeros, as every UDIF reader does.
                    linear.sha256.updateZeros(c.length)
                    linear.sha1.updateZeros(c.length)
                }
            }
            if let stored = d.stored { try rewriter?.append(storedBytesOf: i, stored) }
            image.addRegionCRC(d.crc, of: i, to: &crcs)
            entries.append(ScanData.Entry(diskOffset: c.diskOffset, length: c.length, sha256: d.sha256))
            reporter.update(c.diskOffset + c.length, of: image.byteCount)
        }
        reporter.end()
        for (r, region) in image.regions.enumerated() {
            if let stored = region.table.checksum.crc32Value, stored != crcs[r] {
                throw ImagingError.regionChecksumMismatch(id: region.id, name: region.name)
            }
        }
        return (ScanData(diskBytes: image.byteCount, diskSHA256: linear?.sha256.finalize(), chunks: entries), linear?.sha1.finalize())
    }

    // MARK: raw images and devices

    private struct CellDigest: Sendable {
        var runs: [(first: UInt64, last: UInt64)]
        var bytes: [UInt8]
        var sha256: [UInt8]
    }

    /// Writes a raw source's bmaptool block map (4 KiB blocks that are not all zeros, with
    /// each run's SHA-256) and returns it with the source's chunk table (`RawChunkDigests`),
    /// both from one read of every 1 MiB cell that holds data; a cell that is all hole is
    /// zeros without a read.
    func writeBlockMap(_ source: ImageSource) throws -> (String, ChunkTable) {
        let output = blockMapPath ?? (source.kind == .blockDevice
            ? FileManager.default.currentDirectoryPath + "/" + (source.path as NSString).lastPathComponent + ".bmap"
            : source.path + ".bmap")
        let disk = source.bytes
        let block: UInt64 = 4096
        let cells = RawChunkDigests.grid(disk.byteCount)
        var holdsData = [Bool](repeating: false, count: cells.count)
        for extent in try source.dataExtents() where extent.length > 0 {
            let first = Int(extent.offset / RawChunkDigests.chunkBytes), last = Int((extent.offset + extent.length - 1) / RawChunkDigests.chunkBytes)
            for c in first...min(last, cells.count - 1) { holdsData[c] = true }
        }
        var ranges: [BlockMap.Range] = []
        var digests: [[UInt8]] = []
        digests.reserveCapacity(cells.count)
        var open: (first: UInt64, last: UInt64, hasher: SHA256)?
        let cellList = cells, dataCells = holdsData
        reporter.begin("Block checksum: ", key: "imagescan")
        defer { reporter.abandon() }
        try orderedParallelMap(count: cellList.count) { p -> CellDigest in
            let cell = cellList[p]
            guard dataCells[p] else { return CellDigest(runs: [], bytes: [], sha256: ZeroDigests.shared.sha256(of: cell.length)) }
            let bytes = try disk.read(at: cell.offset, count: Int(cell.length))
            var runs: [(UInt64, UInt64)] = []
            bytes.withUnsafeBytes { buf in
                var at = 0
                while at < buf.count {
                    let n = min(Int(block), buf.count - at)
                    if !isAllZero(UnsafeRawBufferPointer(rebasing: buf[at..<(at + n)])) {
                        let number = (cell.offset + UInt64(at)) / block
                        if let last = runs.last, last.1 + 1 == number { runs[runs.count - 1].1 = number } else { runs.append((number, number)) }
                    }
                    at += n
                }
            }
            return CellDigest(runs: runs, bytes: runs.isEmpty ? [] : bytes, sha256: Array(SHA256.hash(data: bytes)))
        } consume: { p, cell in
            digests.append(cell.sha256)
            for run in cell.runs {
                let start = Int(run.first * block - cellList[p].offset)
                let end = min(Int((run.last + 1) * block - cellList[p].offset), cell.bytes.count)
                if var current = open, current.last + 1 == run.first {
                    current.hasher.update(data: cell.bytes[start..<end])
                    current.last = run.last
                    open = current
                } else {
                    if let done = open { ranges.append(BlockMap.Range(first: done.first, last: done.last, sha256: Array(done.hasher.finalize()))) }
                    var hasher = SHA256()
                    hasher.update(data: cell.bytes[start..<end])
                    open = (run.first, run.last, hasher)
                }
            }
            reporter.update(cellList[p].offset + cellList[p].length, of: disk.byteCount)
        }
        if let done = open { ranges.append(BlockMap.Range(first: done.first, last: done.last, sha256: Array(done.hasher.finalize()))) }
        reporter.end()
        let map = BlockMap(imageSize: disk.byteCount, blockSize: block, ranges: ranges)
        try Self.writeSmallFile(output, Array(map.xml().utf8))
        return (output, try RawChunkDigests.table(diskBytes: disk.byteCount, digests: digests))
    }

    /// Writes `bytes` to `path` through a temporary file renamed into place.
    static func writeSmallFile(_ path: String, _ bytes: [UInt8]) throws {
        let out = try TemporaryOutput(finalPath: path)
        defer { out.discard() }
        try out.file.write(bytes, at: 0)
        try out.commit()
    }
}

/// A hash computed on a thread of its own from buffers handed over in order, so two sequential
/// digests of the same stream (SHA-256 and SHA-1) run side by side. At most 16 buffers wait.
final class BackgroundHasher<H: HashFunction & SendableMetatype>: Sendable {
    private enum Piece: Sendable {
        case bytes([UInt8])
        case zeros(UInt64)
        case end
    }

    private let pending = Monitor<[Piece]>([])
    private let digest = Monitor<[UInt8]?>(nil)

    init() {
        Thread { [self] in
            var hasher = H()
            while true {
                let piece = pending.wait(until: { !$0.isEmpty }) { $0.removeFirst() }
                switch piece {
                case .bytes(let bytes): hasher.update(data: bytes)
                case .zeros(let count): hashZeros(&hasher, count: count)
                case .end:
                    let result = Array(hasher.finalize())
                    digest.update { $0 = result }
                    return
                }
            }
        }.start()
    }

    private func hand(_ piece: Piece) {
        pending.wait(until: { $0.count < 16 }) { $0.append(piece) }
    }

    func update(_ bytes: [UInt8]) { hand(.bytes(bytes)) }

    func updateZeros(_ count: UInt64) { hand(.zeros(count)) }

    func finalize() -> [UInt8] {
        hand(.end)
        return digest.wait(until: { $0 != nil }) { $0! }
    }
}
