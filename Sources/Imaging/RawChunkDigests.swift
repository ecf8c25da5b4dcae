import Foundation
import SystemSupport
import UDIF

/// A raw image's chunk digests: what `imagescan` records beside a raw image's `.bmap` (as
/// `IMAGE.asrc`) so that a raw source is checked chunk by chunk before anything is written,
/// as a UDIF image is. The disk is cut on a 1 MiB grid from byte 0; a chunk is data (stored
/// raw at its own disk offset) or, when it holds only zeros, zeros. The file holds `ScanData`
/// (the layout of a UDIF image's `asrc` resource); its identity is the `ChunkTable`'s, and
/// `IMAGE.sig` beside it signs that.
public enum RawChunkDigests {
    public static let chunkBytes: UInt64 = 1 << 20

    /// The digests file of a raw source: beside its block map when one is named, else beside
    /// the image; nil when there is none.
    public static func sidecar(for imagePath: String, blockMap mapPath: String?) -> String? {
        var candidates = [imagePath + ".asrc", (imagePath as NSString).deletingPathExtension + ".asrc"]
        if let mapPath { candidates.insert(path(forMap: mapPath), at: 0) }
        return candidates.first { FileManager.default.fileExists(atPath: $0) }
    }

    /// X.asrc for X.bmap.
    public static func path(forMap mapPath: String) -> String {
        (mapPath.hasSuffix(".bmap") ? String(mapPath.dropLast(5)) : mapPath) + ".asrc"
    }

    /// X.sig for X.asrc.
    public static func signaturePath(forDigests path: String) -> String {
        (path.hasSuffix(".asrc") ? String(path.dropLast(5)) : path) + ".sig"
    }

    /// The grid a raw disk of `diskBytes` is cut into.
    public static func grid(_ diskBytes: UInt64) -> [(offset: UInt64, length: UInt64)] {
        stride(from: UInt64(0), to: diskBytes, by: Int(chunkBytes)).map { ($0, min(chunkBytes, diskBytes - $0)) }
    }

    /// The table of a raw disk from its chunks' digests, in grid order.
    public static func table(diskBytes: UInt64, digests: [[UInt8]]) throws(UDIFError) -> ChunkTable {
        let cells = grid(diskBytes)
        guard cells.count == digests.count else {
            throw .badChunkRecord(index: min(cells.count, digests.count), firstByte: 0, "count differs from the disk's 1 MiB grid")
        }
        let records = zip(cells, digests).map { cell, sha in
            sha == ZeroDigests.shared.sha256(of: cell.length)
                ? ChunkRecord.zeros(at: cell.offset, length: cell.length)
                : ChunkRecord(diskOffset: cell.offset, length: cell.length, kind: .data, codec: ChunkType.raw.rawValue,
                              storedOffset: cell.offset, storedLength: cell.length, sha256: sha)
        }
        return try ChunkTable(diskBytes: diskBytes, records: records)
    }

    public static func load(_ path: String, diskBytes: UInt64, sourcePath: String) throws -> ChunkTable {
        guard let bytes = try? FileIO.readSmallFile(path, limit: 1 << 30) else {
            throw ImagingError.unusableSource(path: path, "cannot be read")
        }
        let scan = try ScanData(parsing: bytes)
        guard scan.diskBytes == diskBytes, scan.version == ScanData.currentVersion,
              zip(scan.chunks, grid(diskBytes)).allSatisfy({ $0.diskOffset == $1.offset && $0.length == $1.length })
        else {
            throw ImagingError.unusableSource(path: path, "does not describe \(sourcePath) (\(diskBytes) bytes in 1 MiB chunks); run asr imagescan again")
        }
        return try table(diskBytes: diskBytes, digests: scan.chunks.map(\.sha256))
    }

    public static func serialized(_ table: ChunkTable) -> [UInt8] {
        ScanData(diskBytes: table.diskBytes, diskSHA256: nil,
                 chunks: table.records.map { ScanData.Entry(diskOffset: $0.diskOffset, length: $0.length, sha256: $0.sha256) }).serialized()
    }
}
