import SystemSupport
import Foundation
import Imaging
import UDIF

/// A generated JSON file: pretty, keys sorted, one trailing newline. Encoding plain numbers
/// and strings cannot fail.
func jsonDocument(_ value: some Encodable) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return Array(try! encoder.encode(value)) + [UInt8(ascii: "\n")]
}

/// The text of the view's metadata files, rendered from the image's digests.
struct ViewFiles: Sendable {
    let map: BlockMap
    let regions: [ImageView.PartitionFile]
    let udif: UDIFImage?
    let scan: ScanData?
    let info: ImageInfo

    func bmap(_ digests: DiskDigests) -> [UInt8] {
        var filled = map
        for i in filled.ranges.indices { filled.ranges[i].sha256 = digests.ranges[i] }
        return Array(filled.xml().utf8)
    }

    func checksums(_ digests: DiskDigests) -> [UInt8] {
        var text = "\(hex(digests.disk))  disk.img\n"
        for (r, digest) in zip(regions, digests.partitions) { text += "\(hex(digest))  partitions/\(r.fileName)\n" }
        return Array(text.utf8)
    }

    struct BlockMapJSON: Encodable {
        struct Range: Encodable {
            var firstBlock: UInt64
            var lastBlock: UInt64
            var offset: UInt64
            var length: UInt64
            var sha256: String
        }
        struct Chunk: Encodable {
            var type: String
            var offset: UInt64
            var length: UInt64
            var storedOffset: UInt64
            var storedLength: UInt64
            /// Only what imagescan stored; never computed here. None for ignore chunks (free space).
            var sha256: String?
        }
        var imageSize: UInt64
        var blockSize: UInt64
        var blocksCount: UInt64
        var mappedBlocksCount: UInt64
        var diskSHA256: String
        var scanned: Bool
        var ranges: [Range]
        var chunks: [Chunk]?
    }

    func json(_ digests: DiskDigests) -> [UInt8] {
        let ranges = zip(map.ranges, digests.ranges).map { r, digest in
            let (offset, length) = map.byteRange(r)
            return BlockMapJSON.Range(firstBlock: r.first, lastBlock: r.last, offset: offset, length: length, sha256: hex(digest))
        }
        let chunks = udif.map { image in
            image.chunks.enumerated().map { i, c in
                BlockMapJSON.Chunk(type: c.type.description, offset: c.diskOffset, length: c.length,
                                   storedOffset: c.fileOffset, storedLength: c.storedLength,
                                   sha256: c.type == .ignore ? nil : scan.map { hex($0.chunks[i].sha256) })  // free space has no digest
            }
        }
        let document = BlockMapJSON(
            imageSize: map.imageSize, blockSize: map.blockSize, blocksCount: map.blocksCount,
            mappedBlocksCount: map.mappedBlocks, diskSHA256: hex(digests.disk), scanned: info.scanned,
            ranges: ranges, chunks: chunks)
        return jsonDocument(document)
    }

    func infoPlist() throws -> [UInt8] {
        let encoder = PropertyListEncoder()
        encoder.outputFormat = .xml
        return Array(try encoder.encode(info))
    }
}
