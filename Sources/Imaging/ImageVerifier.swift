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

    public func verify(_ path: String) throws {
        try verify(ImageSource.open(path))
    }

    public func verify(_ source: ImageSource) throws {
        let plan = try VerificationPlan(for: source, blockMap: blockMapPath)
        try plan.check(pin: pin, trusted: trusted, source: source.path)
        reporter.begin("\tVerifying  ", key: "verify")
        defer { reporter.abandon() }
        var ranges = plan.ranges
        if let image = source.udif {
            // A zero-fill chunk decodes to zeros by its type: nothing to read.
            for i in ranges.indices where ranges[i].sha256 == nil && image.chunks[i].type == .zeroFill { ranges[i].unchecked = true }
        }
        var verifier = RangeVerifier(reporter: reporter)
        verifier.holes = source.kind == .raw ? (source.bytes as? RawSource)?.file as? FileIO : nil
        try verifier.verify(source.bytes, ranges, mismatch: { plan.mismatch($0, .scan) })
        reporter.end()
    }
}

/// What a disk must hold according to a source's scan: from its UDIF scan data or its block map.
struct VerificationPlan: Sendable {
    var ranges: [ExpectedRange]
    /// Locates a mismatch in range `i`, against what the caller compared it with.
    var mismatch: @Sendable (Int, Mismatch.Reference) -> Mismatch
    var blockMap: BlockMap?
    var scan: ScanData?
    /// What the scan or block map says the image is (`ImageIdentity`), where a UDIF image
    /// stores its chunks (`StoredLayout`), and its signature over both.
    var identity: [UInt8] = []
    var layout = StoredLayout.none
    var signature: ImageSignature?

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
            self.scan = scan
            // Ignore chunks are told by their type: their scan entries hold no digest to check.
            ranges = zip(scan.chunks, image.chunks).map { entry, chunk in
                ExpectedRange.chunk(offset: entry.diskOffset, length: entry.length, sha256: entry.sha256,
                                    isFree: chunk.type == .ignore, isZeros: chunk.type == .zeroFill, eraseFree: eraseFree)
            }
            mismatch = { i, reference in image.mismatch(inChunk: i, against: reference) }
            identity = scan.identity(of: image)
            layout = StoredLayout.digest(of: image)
            signature = try ImageSignature.stored(in: image)
            return
        }
        guard source.kind != .udif, let path = mapPath ?? BlockMap.sidecar(for: source.path) else { return nil }
        let map = try BlockMap.load(path)
        guard map.imageSize == source.bytes.byteCount else {
            throw ImagingError.blockMapSizeMismatch(path: path, mapBytes: map.imageSize, sourcePath: source.path, sourceBytes: source.bytes.byteCount)
        }
        blockMap = map
        identity = map.identity
        let signaturePath = BlockMap.signaturePath(forMap: path)
        if FileManager.default.fileExists(atPath: signaturePath) {
            guard let bytes = try? FileIO.readSmallFile(signaturePath, limit: 4096) else {
                throw ImagingError.unusableSource(path: signaturePath, "cannot be read")
            }
            signature = try ImageSignature(parsing: bytes)
        }
        let expectations = map.expectations
        ranges = expectations
        mismatch = { i, _ in
            let r = expectations[i]
            return Mismatch(firstByte: r.offset, lastByte: r.offset + r.length - 1, shouldBeZeros: r.sha256 == nil, reference: .blockMap)
        }
    }

    /// Throws unless this is the pinned image and a trusted key signed it (nothing to check
    /// when neither is asked for).
    func check(pin: IdentityPin?, trusted: TrustedKeys, source: String) throws(ImagingError) {
        try pin?.check(identity: identity, source: source)
        try trusted.check(identity: identity, layout: layout, signature: signature, source: source)
    }
}
