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
            let mapPath = try writeBlockMap(source)
            if let signingKey {
                let signature = try signingKey.sign(try BlockMap.load(mapPath).identity, layout: StoredLayout.none)
                let out = try TemporaryOutput(finalPath: BlockMap.signaturePath(forMap: mapPath))
                defer { out.discard() }
                try out.file.write(signature.serialized(), at: 0)
                try out.commit()
            }
            return .wroteBlockMap(mapPath)
        }
        // A scan without Apple's digests is done again when they are asked for.
        if let stored = try? ScanData.stored(in: image), image.isOrdered || !reorder, stored.diskSHA256 != nil || !appleDigests {
            guard let signingKey else { return .alreadyScanned }
            // Rewritten as it is (reorder: false): the stored layout stays.
            let signature = try signingKey.sign(stored.identity(of: image), layout: StoredLayout.digest(of: image))
            if (try? ImageSignature.stored(in: image)) == signature { return .alreadyScanned }
            let rewriter = try ImageRewriter(image, replacing: path, reorder: false)
            try reporter.step("Writing signature") { try rewriter.finish(replacingResources: signature.resources()) }
            return .scanned
        }
        let rewriter = try ImageRewriter(image, replacing: path, reorder: reorder)
        let (scan, sha1) = try computeScan(image, copyingInto: reorder ? rewriter : nil, appleDigests: appleDigests)
        let resources = scan.resources(diskSHA1: sha1, masterCRC: image.trailer.masterChecksum.crc32Value ?? 0)
        let identity = scan.identity(of: image)
        try reporter.step("Writing scan data") {
            try rewriter.finish(replacingResources: resources, signed: signingKey.map { key in
                { layout in try key.sign(identity, layout: layout).resources() }
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
            if c.type == .ignore { return ChunkDigest(sha256: ScanData.unhashed, crc: nil, bytes: nil) }
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

    private struct PieceRuns: Sendable {
        var runs: [(first: UInt64, last: UInt64)]
        var bytes: [UInt8]
        var offset: UInt64
    }

    func writeBlockMap(_ source: ImageSource) throws -> String {
        let output = blockMapPath ?? (source.kind == .blockDevice
            ? FileManager.default.currentDirectoryPath + "/" + (source.path as NSString).lastPathComponent + ".bmap"
            : source.path + ".bmap")
        let disk = source.bytes
        let block: UInt64 = 4096
        let pieceSize: UInt64 = 1 << 20
        var pieces: [(offset: UInt64, length: UInt64)] = []
        for extent in try source.dataExtents() {
            var at = extent.offset
            while at < extent.offset + extent.length {
                let end = min((at / pieceSize + 1) * pieceSize, extent.offset + extent.length)
                pieces.append((at, end - at))
                at = end
            }
        }
        var ranges: [BlockMap.Range] = []
        var open: (first: UInt64, last: UInt64, hasher: SHA256)?
        let pieceList = pieces
        reporter.begin("Block checksum: ", key: "imagescan")
        defer { reporter.abandon() }
        try orderedParallelMap(count: pieceList.count) { p -> PieceRuns in
            let piece = pieceList[p]
            let bytes = try disk.read(at: piece.offset, count: Int(piece.length))
            var runs: [(UInt64, UInt64)] = []
            bytes.withUnsafeBytes { buf in
                var at = 0
                while at < buf.count {
                    let n = min(Int(block), buf.count - at)
                    if !isAllZero(UnsafeRawBufferPointer(rebasing: buf[at..<(at + n)])) {
                        let number = (piece.offset + UInt64(at)) / block
                        if let last = runs.last, last.1 + 1 == number { runs[runs.count - 1].1 = number } else { runs.append((number, number)) }
                    }
                    at += n
                }
            }
            return PieceRuns(runs: runs, bytes: runs.isEmpty ? [] : bytes, offset: piece.offset)
        } consume: { p, piece in
            for run in piece.runs {
                let start = Int(run.first * block - piece.offset)
                let end = min(Int((run.last + 1) * block - piece.offset), piece.bytes.count)
                if var current = open, current.last + 1 == run.first {
                    current.hasher.update(data: piece.bytes[start..<end])
                    current.last = run.last
                    open = current
                } else {
                    if let done = open { ranges.append(BlockMap.Range(first: done.first, last: done.last, sha256: Array(done.hasher.finalize()))) }
                    var hasher = SHA256()
                    hasher.update(data: piece.bytes[start..<end])
                    open = (run.first, run.last, hasher)
                }
            }
            reporter.update(pieceList[p].offset + pieceList[p].length, of: disk.byteCount)
        }
        if let done = open { ranges.append(BlockMap.Range(first: done.first, last: done.last, sha256: Array(done.hasher.finalize()))) }
        reporter.end()
        let map = BlockMap(imageSize: disk.byteCount, blockSize: block, ranges: ranges)
        let out = try TemporaryOutput(finalPath: output)
        defer { out.discard() }
        try out.file.write(Array(map.xml().utf8), at: 0)
        try out.commit()
        return output
    }
}

/// SHA-256 of runs of zeros, remembered by length: images have many equal zero chunks.
final class ZeroDigests: Sendable {
    static let shared = ZeroDigests()
    private let known = Locked<[UInt64: [UInt8]]>([:])

    func sha256(of length: UInt64) -> [UInt8] {
        if let d = known.withLock({ $0[length] }) { return d }
        var h = SHA256()
        hashZeros(&h, count: length)
        let digest = Array(h.finalize())
        known.withLock { $0[length] = digest }
        return digest
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
