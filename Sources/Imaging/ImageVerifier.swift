import Foundation
import SystemSupport
import UDIF

/// `asr verify`: every chunk (UDIF) or mapped range (raw image with a .bmap) against the
/// checksums `imagescan` recorded. A UDIF image's zero-fill and free chunks hold no bytes to
/// check: their entries are checked against the table alone.
public struct ImageVerifier {
    public var reporter: Reporter
    /// The block map of a raw image or device, when it is not the image's sidecar.
    public var blockMapPath: String?
    /// Keys one of which must have signed the image; none: unsigned images are fine.
    public var trusted = TrustedKeys()
    /// The only image to accept, by identity.
    public var pin: IdentityPin?

    public init(reporter: Reporter) { self.reporter = reporter }

    /// Returns the bytes of free space, which hold no data and were not verified.
    @discardableResult
    public func verify(_ path: String) throws -> UInt64 {
        try verify(ImageSource.open(path))
    }

    @discardableResult
    public func verify(_ source: ImageSource) throws -> UInt64 {
        let plan = try VerificationPlan(for: source, blockMap: blockMapPath)
        try plan.check(pin: pin, trusted: trusted, source: source.path)
        reporter.begin("\tVerifying  ", key: "verify")
        defer { reporter.abandon() }
        if let image = source.udif, let table = plan.table {
            try Self.decodeEveryChunk(image, table, reporter: reporter)
        } else {
            var verifier = RangeVerifier(reporter: reporter)
            verifier.holes = source.kind == .raw ? (source.bytes as? RawSource)?.file as? FileIO : nil
            try verifier.verify(source.bytes, plan.ranges, mismatch: { plan.mismatch($0, .scan) })
        }
        reporter.end()
        return plan.table?.records.reduce(0) { $0 + ($1.kind == .free ? $1.length : 0) } ?? 0
    }

    /// A UDIF image checks every chunk it decodes against its table (`requireDigests`), so
    /// decoding each data chunk once is the whole check; zero-fill chunks were checked to
    /// carry the digest of zeros when the table was built, and free space holds nothing.
    static func decodeEveryChunk(_ image: UDIFImage, _ table: ChunkTable, reporter: Reporter) throws {
        let data = table.records.indices.filter { table.records[$0].kind == .data }
        try orderedParallelMap(count: data.count) { k -> Void in
            do {
                _ = try image.decodedChunk(data[k])
            } catch UDIFError.inChunk(let i, _, _, _, .digestMismatch) {
                throw ImagingError.mismatch(image.mismatch(inChunk: i, against: .scan))
            }
        } consume: { k, _ in
            let r = table.records[data[k]]
            reporter.update(r.diskOffset + r.length, of: table.diskBytes)
        }
    }
}

/// What a disk must hold according to a source's scan: its `ChunkTable` (UDIF scan data, or a
/// raw image's chunk digests beside it), or for a raw image with only a bmaptool block map,
/// that map's ranges. Building it for a UDIF source makes the image check every chunk it
/// decodes from then on (`UDIFImage.requireDigests`), so no consumer can skip the check.
struct VerificationPlan: Sendable {
    var ranges: [ExpectedRange]
    /// Locates a mismatch in range `i`, against what the caller compared it with.
    var mismatch: @Sendable (Int, Mismatch.Reference) -> Mismatch
    var blockMap: BlockMap?
    /// Every chunk's kind, stored range, codec and digest; nil for a bmaptool-only raw source.
    var table: ChunkTable?
    /// The scan's version: pins and signatures hold only for `ScanData.currentVersion`.
    var scanVersion = ScanData.currentVersion
    var signature: ImageSignature?

    var identity: [UInt8]? { table?.identity }

    /// Throws when the source has no scan: it must be scanned before it can be verified.
    init(for source: ImageSource, blockMap mapPath: String? = nil) throws {
        guard let plan = try VerificationPlan(ifScanned: source, blockMap: mapPath) else {
            throw ImagingError.notScanned(path: source.path, restoring: false)
        }
        self = plan
    }

    /// `eraseFree`: free space (ignore chunks) must read as zeros; otherwise it is not checked.
    init?(ifScanned source: ImageSource, blockMap mapPath: String? = nil, eraseFree: Bool = false) throws {
        if let image = source.udif {
            guard let scan = try ScanData.stored(in: image) else { return nil }
            let table = try scan.table(of: image)
            self.table = table
            scanVersion = scan.version
            ranges = table.records.map { ExpectedRange(record: $0, eraseFree: eraseFree) }
            mismatch = { i, reference in image.mismatch(inChunk: i, against: reference) }
            signature = try ImageSignature.stored(in: image)
            image.requireDigests(table)
            return
        }
        guard source.kind != .udif else { return nil }
        if let chunksPath = RawChunkDigests.sidecar(for: source.path, blockMap: mapPath) {
            let table = try RawChunkDigests.load(chunksPath, diskBytes: source.bytes.byteCount, sourcePath: source.path)
            self.table = table
            ranges = table.records.map { ExpectedRange(record: $0, eraseFree: eraseFree) }
            let records = table.records
            mismatch = { i, reference in
                Mismatch(firstByte: records[i].diskOffset, lastByte: records[i].diskOffset + records[i].length - 1,
                         shouldBeZeros: records[i].kind == .zeros, reference: .blockMap)
            }
            signature = try Self.detachedSignature(RawChunkDigests.signaturePath(forDigests: chunksPath))
            return
        }
        guard let path = mapPath ?? BlockMap.sidecar(for: source.path) else { return nil }
        let map = try BlockMap.load(path)
        guard map.imageSize == source.bytes.byteCount else {
            throw ImagingError.blockMapSizeMismatch(path: path, mapBytes: map.imageSize, sourcePath: source.path, sourceBytes: source.bytes.byteCount)
        }
        blockMap = map
        let expectations = map.expectations
        ranges = expectations
        mismatch = { i, _ in
            let r = expectations[i]
            return Mismatch(firstByte: r.offset, lastByte: r.offset + r.length - 1, shouldBeZeros: r.sha256 == nil, reference: .blockMap)
        }
    }

    private static func detachedSignature(_ path: String) throws -> ImageSignature? {
        guard FileManager.default.fileExists(atPath: path) else { return nil }
        guard let bytes = try? FileIO.readSmallFile(path, limit: 4096) else {
            throw ImagingError.unusableSource(path: path, "cannot be read")
        }
        return try ImageSignature(parsing: bytes)
    }

    /// Throws unless this is the pinned image and a trusted key signed it (nothing to check
    /// when neither is asked for). Only a scan by this version of asr names an identity that
    /// covers every chunk's kind, stored range and codec: anything else is refused here.
    func check(pin: IdentityPin?, trusted: TrustedKeys, source: String) throws(ImagingError) {
        guard pin != nil || !trusted.isEmpty else { return }
        guard let identity else { throw .noChunkDigests(path: source) }
        guard scanVersion == ScanData.currentVersion else { throw .olderScan(path: source) }
        try pin?.check(identity: identity, source: source)
        try trusted.check(identity: identity, signature: signature, source: source)
    }
}

extension ExpectedRange {
    /// What a disk holds where `record` lands: its digest, zeros, or (free space) whatever the
    /// target held, unless `eraseFree` makes it zeros.
    public init(record r: ChunkRecord, eraseFree: Bool) {
        switch r.kind {
        case .data: self.init(offset: r.diskOffset, length: r.length, sha256: r.sha256)
        case .zeros: self.init(offset: r.diskOffset, length: r.length, sha256: nil)
        case .free: self.init(offset: r.diskOffset, length: r.length, sha256: nil, unchecked: !eraseFree)
        }
    }
}
