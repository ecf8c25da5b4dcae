import SystemSupport
import Crypto
import Foundation
import Imaging
import UDIF

/// What a server sends: the manifest of a scanned source and each chunk's stored bytes.
/// A scanned UDIF image travels as its own compressed chunks; a raw image (with its chunk
/// digests, or its .bmap) or a block device travels as 1 MiB raw chunks. Either way the
/// manifest is the source's `ChunkTable`, so its identity is the one a file restore of the
/// same source checks, and every chunk was checked against it before anything is served.
public struct ImageFeed: Sendable {
    package let manifest: [ManifestEntry]
    /// The image's identity (`ChunkTable`), which clients check the manifest against.
    public let identity: [UInt8]
    /// The image's signature over `identity`, if it has one.
    public let signature: ImageSignature?
    public let diskBytes: UInt64
    /// hdiutil's name for a UDIF image's format (UDZO, ULMO, ...), RAW or DEVICE.
    public let format: String
    /// Free space (ignore chunks): never sent, and no client waits for it.
    public var freeBytes: UInt64 { manifest.reduce(0) { $0 + ($1.isFree ? $1.length : 0) } }
    private let stored: @Sendable (Int) throws -> [UInt8]

    package func storedBytes(_ chunk: Int) throws -> [UInt8] { try stored(chunk) }

    /// The first `ControlMessage.fragmentDigestBytes` of each fragment's SHA-256, as the chunk
    /// is cut into data packets.
    package func fragmentDigests(_ chunk: Int) throws -> [UInt8] {
        let bytes = try stored(chunk)
        return stride(from: 0, to: bytes.count, by: DataPacket.maxPayload).flatMap { start in
            SHA256.hash(data: bytes[start..<min(start + DataPacket.maxPayload, bytes.count)]).prefix(ControlMessage.fragmentDigestBytes)
        }
    }

    public init(source: ImageSource) throws {
        diskBytes = source.bytes.byteCount
        if let image = source.udif {
            format = ImageInfo.formatName(Set(image.chunks.map(\.type)))
            guard let table = try TrustedKeys().check(source, pin: nil) else { throw MulticastError.sourceNotScanned(path: source.path) }
            guard image.isOrdered else { throw MulticastError.sourceNotOrdered(path: source.path) }
            // Every chunk against the scan before anything is served: a damaged image would be
            // refused by every client, after each had spent the time to receive it.
            try ImageVerifier(reporter: Reporter(.quiet)).verify(source)
            manifest = table.records.map(ManifestEntry.init)
            identity = table.identity
            signature = try ImageSignature.stored(in: image)
            stored = { try image.storedBytes(of: $0) }
            return
        }
        format = source.kind == .blockDevice ? "DEVICE" : "RAW"
        let bytes = source.bytes
        // A raw image must be scanned and match its scan; a device is read as it is.
        let recorded = try source.kind == .raw ? Self.recordedTable(source) : nil
        // Read once, in 1 MiB chunks: each checked against the recorded digests, or hashed.
        let cells = RawChunkDigests.grid(bytes.byteCount)
        var digests: [[UInt8]] = []
        try orderedParallelMap(count: cells.count) { i -> [UInt8] in
            let cell = cells[i]
            if let recorded, recorded.records[i].kind == .zeros, let file = (bytes as? RawSource)?.file as? FileIO,
               file.isHole(offset: cell.offset, length: cell.length) {
                return recorded.records[i].sha256
            }
            return Array(SHA256.hash(data: try bytes.read(at: cell.offset, count: Int(cell.length))))
        } consume: { i, digest in
            if let recorded, recorded.records[i].sha256 != digest {
                throw ImagingError.damagedSource(Mismatch(firstByte: cells[i].offset, lastByte: cells[i].offset + cells[i].length - 1,
                                                          reference: .scan))
            }
            digests.append(digest)
        }
        let table = try RawChunkDigests.table(diskBytes: bytes.byteCount, digests: digests)
        manifest = table.records.map(ManifestEntry.init)
        identity = table.identity
        signature = try recorded == nil ? nil : Self.detachedSignature(source)
        stored = { i in try bytes.read(at: cells[i].offset, count: Int(cells[i].length)) }
    }

    /// A raw image's recorded chunk digests; one with only a bmaptool map is checked against it.
    private static func recordedTable(_ source: ImageSource) throws -> ChunkTable? {
        if let path = RawChunkDigests.sidecar(for: source.path, blockMap: nil) {
            return try RawChunkDigests.load(path, diskBytes: source.bytes.byteCount, sourcePath: source.path)
        }
        guard let mapPath = BlockMap.sidecar(for: source.path) else { throw MulticastError.sourceNotScanned(path: source.path) }
        let map = try BlockMap.load(mapPath)
        guard map.imageSize == source.bytes.byteCount else { throw MulticastError.blockMapMismatch(map: mapPath, source: source.path) }
        let expectations = map.expectations
        try RangeVerifier(reporter: Reporter(.quiet)).verify(source.bytes, expectations) { i in
            let r = expectations[i]
            return Mismatch(firstByte: r.offset, lastByte: r.offset + r.length - 1, shouldBeZeros: r.sha256 == nil, reference: .blockMap)
        }
        return nil
    }

    private static func detachedSignature(_ source: ImageSource) throws -> ImageSignature? {
        guard let path = RawChunkDigests.sidecar(for: source.path, blockMap: nil) else { return nil }
        let sig = RawChunkDigests.signaturePath(forDigests: path)
        guard let bytes = try? FileIO.readSmallFile(sig, limit: 4096) else { return nil }
        return try ImageSignature(parsing: bytes)
    }
}
