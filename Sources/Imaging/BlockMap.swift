import SystemSupport
import Crypto
import Foundation
import Synchronization
import UDIF

/// A bmaptool block map (format 2.0): which blocks of a raw image hold data, with a SHA-256
/// per mapped range. We write it for raw images and devices (`imagescan`) and read it to
/// restore and verify them; the real `bmaptool copy` accepts what we write.
public struct BlockMap: Sendable, Equatable {
    public struct Range: Sendable, Equatable {
        public var first: UInt64
        public var last: UInt64
        public var sha256: [UInt8]

        public init(first: UInt64, last: UInt64, sha256: [UInt8]) {
            self.first = first
            self.last = last
            self.sha256 = sha256
        }
    }

    public var imageSize: UInt64
    public var blockSize: UInt64 = 4096
    public var ranges: [Range]

    public var blocksCount: UInt64 { (imageSize + blockSize - 1) / blockSize }
    public var mappedBlocks: UInt64 { ranges.reduce(0) { $0 + $1.last - $1.first + 1 } }

    public init(imageSize: UInt64, blockSize: UInt64 = 4096, ranges: [Range]) {
        self.imageSize = imageSize
        self.blockSize = blockSize
        self.ranges = ranges
    }

    /// The bytes a range covers (the last block may be short).
    public func byteRange(_ r: Range) -> (offset: UInt64, length: UInt64) {
        let start = r.first * blockSize
        return (start, min((r.last + 1) * blockSize, imageSize) - start)
    }

    /// What a verifier checks: mapped ranges by SHA-256, and the gaps, which must be zeros.
    public var expectations: [ExpectedRange] {
        var out: [ExpectedRange] = []
        var pos: UInt64 = 0
        for r in ranges {
            let (offset, length) = byteRange(r)
            if offset > pos { out.append(ExpectedRange(offset: pos, length: offset - pos, sha256: nil)) }
            out.append(ExpectedRange(offset: offset, length: length, sha256: r.sha256))
            pos = offset + length
        }
        if pos < imageSize { out.append(ExpectedRange(offset: pos, length: imageSize - pos, sha256: nil)) }
        return out
    }

    // MARK: XML

    public func xml() -> String {
        let mapped = mappedBlocks * blockSize
        let percent = blocksCount == 0 ? 0 : Double(mappedBlocks) * 100 / Double(blocksCount)
        var body = """
            <?xml version="1.0" ?>
            <!-- Block map of an image: the blocks that hold data, with a SHA-256 of each
                 range. Written by asr imagescan; bmaptool 2.0 format. Blocks not listed
                 read as zeros. -->

            <bmap version="2.0">
                <!-- Image size in bytes: \(ByteSize.format(imageSize)) -->
                <ImageSize> \(imageSize) </ImageSize>

                <!-- Size of a block in bytes -->
                <BlockSize> \(blockSize) </BlockSize>

                <!-- Count of blocks in the image file -->
                <BlocksCount> \(blocksCount) </BlocksCount>

                <!-- Count of mapped blocks: \(ByteSize.format(mapped)) or \(String(format: "%.1f", percent))% -->
                <MappedBlocksCount> \(mappedBlocks) </MappedBlocksCount>

                <!-- Type of checksum used in this file -->
                <ChecksumType> sha256 </ChecksumType>

                <!-- The checksum of this bmap file, computed with this value all zeros -->
                <BmapFileChecksum> \(String(repeating: "0", count: 64)) </BmapFileChecksum>

                <!-- The mapped block ranges and the SHA-256 of each -->
                <BlockMap>

            """
        for r in ranges {
            let span = r.first == r.last ? "\(r.first)" : "\(r.first)-\(r.last)"
            body += "        <Range chksum=\"\(hex(r.sha256))\"> \(span) </Range>\n"
        }
        body += "    </BlockMap>\n</bmap>\n"
        let digest = hex(Array(SHA256.hash(data: Data(body.utf8))))
        return body.replacingOccurrences(of: String(repeating: "0", count: 64) + " </BmapFileChecksum>", with: digest + " </BmapFileChecksum>")
    }

    public init(parsing text: String) throws {
        func fail(_ why: String) -> ImagingError { .badBlockMap(why) }
        func element(_ name: String) throws -> String {
            guard let open = text.range(of: "<\(name)>"), let close = text.range(of: "</\(name)>", range: open.upperBound..<text.endIndex) else {
                throw fail("no <\(name)>")
            }
            return text[open.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines)
        }
        func number(_ name: String) throws -> UInt64 {
            guard let v = UInt64(try element(name)) else { throw fail("<\(name)> is not a number") }
            return v
        }
        guard let version = text.range(of: "<bmap version=\"") else { throw fail("no <bmap version=...>") }
        guard text[version.upperBound...].hasPrefix("2.") else { throw fail("only version 2.x is supported") }
        guard try element("ChecksumType").lowercased() == "sha256" else { throw fail("only sha256 checksums are supported") }
        imageSize = try number("ImageSize")
        // No device is larger, and the block arithmetic below would overflow near UInt64.max.
        guard imageSize <= UInt64(Int64.max) else { throw fail("image size \(imageSize) is impossible") }
        blockSize = try number("BlockSize")
        guard blockSize >= 512, blockSize <= 1 << 24, blockSize % 512 == 0 else { throw fail("block size \(blockSize)") }
        let count = try number("BlocksCount")
        guard count == (imageSize + blockSize - 1) / blockSize else { throw fail("BlocksCount does not match ImageSize") }

        let stated = try element("BmapFileChecksum")
        let zeroed = text.replacingOccurrences(of: stated + " </BmapFileChecksum>", with: String(repeating: "0", count: stated.count) + " </BmapFileChecksum>")
        guard hex(Array(SHA256.hash(data: Data(zeroed.utf8)))) == stated.lowercased() else {
            throw fail("BmapFileChecksum does not match the file (damaged or edited)")
        }

        var ranges: [Range] = []
        var cursor = text.startIndex
        var nextFree: UInt64 = 0
        while let open = text.range(of: "<Range", range: cursor..<text.endIndex) {
            guard let tagEnd = text.range(of: ">", range: open.upperBound..<text.endIndex),
                  let close = text.range(of: "</Range>", range: tagEnd.upperBound..<text.endIndex) else { throw fail("unterminated <Range>") }
            let attributes = text[open.upperBound..<tagEnd.lowerBound]
            guard let q1 = attributes.range(of: "chksum=\""), let q2 = attributes[q1.upperBound...].firstIndex(of: "\"") else {
                throw fail("a range has no chksum")
            }
            guard let sha = unhex(String(attributes[q1.upperBound..<q2])), sha.count == 32 else { throw fail("a range's chksum is not SHA-256") }
            let span = text[tagEnd.upperBound..<close.lowerBound].trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "-")
            guard (1...2).contains(span.count), let first = UInt64(span[0]), let last = UInt64(span.last!) else { throw fail("bad range") }
            guard first <= last, first >= nextFree, last < count else { throw fail("ranges overlap, are out of order or past the end") }
            ranges.append(Range(first: first, last: last, sha256: sha))
            nextFree = last + 1
            cursor = close.upperBound
        }
        self.ranges = ranges
        guard try number("MappedBlocksCount") == mappedBlocks else { throw fail("MappedBlocksCount does not match the ranges") }
    }

    /// Where a raw image's block map lives: IMAGE.bmap, IMAGE with its extension replaced, or
    /// what the served-block-map lookup says (an `asr mount`'s disk.img has its mount's).
    public static func sidecar(for imagePath: String) -> String? {
        let candidates = [imagePath + ".bmap", (imagePath as NSString).deletingPathExtension + ".bmap"]
        return candidates.first { FileManager.default.fileExists(atPath: $0) } ?? servedSidecar(for: imagePath)
    }

    /// Finds the block map that whatever serves an image keeps current beside it, or nil.
    public typealias SidecarLookup = @Sendable (_ imagePath: String) -> String?

    /// Imaging knows no mount's file names; the program sets the lookup once at start-up.
    private static let servedLookup = Locked<SidecarLookup?>(nil)

    public static func setServedSidecarLookup(_ lookup: SidecarLookup?) {
        servedLookup.withLock { $0 = lookup }
    }

    /// The block map kept current by what serves `imagePath` (it needs no scan of its own).
    public static func servedSidecar(for imagePath: String) -> String? {
        servedLookup.withLock { $0 }?(imagePath)
    }

    public static func load(_ path: String) throws -> BlockMap {
        guard let bytes = try? FileIO.readSmallFile(path, limit: 256 << 20), bytes.count <= 256 << 20 else {
            throw ImagingError.badBlockMap("cannot read \(path)")
        }
        return try BlockMap(parsing: String(decoding: bytes, as: UTF8.self))
    }
}

/// One span of a disk and what it must hold: bytes with this SHA-256, or (nil) only zeros;
/// or, for free space (`unchecked`), anything: it is neither read nor checked.
public struct ExpectedRange: Sendable, Equatable {
    public var offset: UInt64
    public var length: UInt64
    public var sha256: [UInt8]?
    /// Free space (a UDIF ignore run) the target keeps as it was: not read, not checked.
    public var unchecked: Bool

    public init(offset: UInt64, length: UInt64, sha256: [UInt8]?, unchecked: Bool = false) {
        self.offset = offset
        self.length = length
        self.sha256 = sha256
        self.unchecked = unchecked
    }
}

func unhex(_ s: String) -> [UInt8]? {
    let chars = Array(s.utf8)
    guard chars.count % 2 == 0 else { return nil }
    var out: [UInt8] = []
    for i in stride(from: 0, to: chars.count, by: 2) {
        guard let v = UInt8(String(decoding: chars[i..<(i + 2)], as: UTF8.self), radix: 16) else { return nil }
        out.append(v)
    }
    return out
}

extension ExpectedRange {
    /// What a chunk of a scan asks of the disk: nothing for free space (zeros with
    /// `eraseFree`), zeros for a chunk of zeros (by its type: a check that needs no hashing,
    /// even of a zero run gigabytes long, and reads none of a file's holes), its digest otherwise.
    public static func chunk(offset: UInt64, length: UInt64, sha256: [UInt8], isFree: Bool, isZeros: Bool, eraseFree: Bool) -> ExpectedRange {
        if isFree { return ExpectedRange(offset: offset, length: length, sha256: nil, unchecked: !eraseFree) }
        return ExpectedRange(offset: offset, length: length, sha256: isZeros ? nil : sha256)
    }
}
