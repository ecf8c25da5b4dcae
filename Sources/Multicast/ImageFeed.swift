import SystemSupport
import Crypto
import Foundation
import Imaging
import UDIF

/// What a server sends: the manifest of a scanned source and each chunk's stored bytes.
/// A scanned UDIF image travels as its own compressed chunks; a raw image (with its .bmap)
/// or a block device travels as 1 MiB raw chunks, hashed when the server starts.
public struct ImageFeed: Sendable {
    package let manifest: [ManifestEntry]
    /// The image's identity (`ImageIdentity`), which clients check the manifest against.
    public let identity: [UInt8]
    /// Where the image stores its chunks (`StoredLayout`), and its signature over that and
    /// `identity`, if it has one (a scanned, signed UDIF image).
    public let layout: [UInt8]
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
            guard let scan = try ScanData.stored(in: image) else { throw MulticastError.sourceNotScanned(path: source.path) }
            guard image.isOrdered else { throw MulticastError.sourceNotOrdered(path: source.path) }
            // Every chunk against the scan before anything is served: a damaged image would be
            // refused by every client, after each had spent the time to receive it.
            try ImageVerifier(reporter: Reporter(.quiet)).verify(source)
            manifest = image.chunks.enumerated().map { i, c in
                ManifestEntry(diskOffset: c.diskOffset, length: c.length,
                              storedLength: c.type.hasStoredData ? UInt32(c.storedLength) : 0,
                              codec: c.type.rawValue, sha256: scan.chunks[i].sha256)
            }
            identity = scan.identity(of: image)
            layout = StoredLayout.digest(of: image)
            signature = try ImageSignature.stored(in: image)
            stored = { try image.storedBytes(of: $0) }
            return
        }
        // A raw image must be scanned (its .bmap) and match its scan; a device is read as is.
        format = source.kind == .blockDevice ? "DEVICE" : "RAW"
        let bytes = source.bytes
        if source.kind == .raw {
            guard let mapPath = BlockMap.sidecar(for: source.path) else { throw MulticastError.sourceNotScanned(path: source.path) }
            let map = try BlockMap.load(mapPath)
            guard map.imageSize == bytes.byteCount else { throw MulticastError.blockMapMismatch(map: mapPath, source: source.path) }
            let expectations = map.expectations
            try RangeVerifier(reporter: Reporter(.quiet)).verify(bytes, expectations) { i in
                let r = expectations[i]
                return Mismatch(firstByte: r.offset, lastByte: r.offset + r.length - 1, shouldBeZeros: r.sha256 == nil, reference: .blockMap)
            }
        }
        // Hashed once, in 1 MiB chunks; zero chunks do not travel.
        let size = bytes.byteCount
        let step: UInt64 = 1 << 20
        let count = Int((size + step - 1) / step)
        var entries: [ManifestEntry] = []
        try orderedParallelMap(count: count) { i -> ([UInt8], Bool) in
            let at = UInt64(i) * step
            let data = try bytes.read(at: at, count: Int(min(step, size - at)))
            return (data, data.withUnsafeBytes(isAllZero))
        } consume: { i, result in
            let (data, zero) = result
            entries.append(ManifestEntry(diskOffset: UInt64(i) * step, length: UInt64(data.count),
                                         storedLength: zero ? 0 : UInt32(data.count), codec: ChunkType.raw.rawValue,
                                         sha256: Array(SHA256.hash(data: data))))
        }
        manifest = entries
        identity = ManifestEntry.identity(of: entries, diskBytes: size)
        layout = StoredLayout.none
        signature = nil
        stored = { i in try bytes.read(at: UInt64(i) * step, count: Int(min(step, size - UInt64(i) * step))) }
    }
}
