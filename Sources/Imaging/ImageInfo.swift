import Foundation
import SystemSupport
import UDIF

/// What `asr info` reports, in a shape that encodes to text, JSON and a property list.
public struct ImageInfo: Codable, Sendable {
    public struct RegionInfo: Codable, Sendable {
        public var id: String
        public var name: String
        public var firstSector: UInt64
        public var sectorCount: UInt64
        public var checksum: String?
        public var checksumValid: Bool?
    }

    /// How much of a partition is in use: from the record `asr create` stored, or, for
    /// images without one (hdiutil's), from the region's ignore chunks.
    public struct UsageInfo: Codable, Sendable {
        /// Number in the partition map (0: a disk without a map); nil when derived.
        public var partition: Int?
        /// The blkx region, when derived from its ignore chunks.
        public var region: String?
        public var firstSector: UInt64
        public var sectorCount: UInt64
        public var filesystem: String?
        /// How the allocation was read; "unknown" when derived from ignore chunks.
        public var method: String?
        public var inUseBytes: UInt64
        public var ignoredBytes: UInt64
        /// Why the partition was imaged whole, if it was.
        public var imagedWhole: String?
    }

    public struct CodecUse: Codable, Sendable {
        public var codec: String
        public var chunks: Int
        public var diskBytes: UInt64
        public var storedBytes: UInt64
    }

    public var path: String
    public var format: String
    public var sourceKind: String
    public var fileSize: UInt64
    public var diskBytes: UInt64
    public var sectorCount: UInt64
    public var storedBytes: UInt64
    /// Decoded bytes of the largest chunk that stores data (hdiutil: 1 MiB; zero-fill runs
    /// can be longer and do not count); nil for raw sources and images of zeros only.
    public var chunkSize: UInt64?
    public var codecs: [CodecUse]
    public var regions: [RegionInfo]
    public var masterChecksum: String?
    public var masterChecksumValid: Bool?
    public var dataForkChecksum: String?
    public var checksumsVerified: Bool
    public var scanned: Bool
    /// The image's identity (hex; `ChunkTable`), from its scan and chunk table; nil when
    /// unscanned or when the two break the chunk-table rule.
    public var identity: String?
    /// The scan's version (`ScanData`): pins and signatures hold only for the current one.
    public var scanVersion: Int?
    /// Whether the scan holds Apple's linear whole-disk digests (`nsiz`).
    public var appleDigests: Bool?
    /// The image's Ed25519 signature over its identity (hex), and its key's fingerprint.
    public var signature: String?
    public var signer: String?
    public var ordered: Bool
    /// Per partition, how much is in use; nil when the image records nothing and has no free space.
    public var usage: [UsageInfo]?
    /// Whether `usage` comes from a record `asr create` stored (not derived from ignore chunks).
    public var usageRecorded: Bool?

    /// True unless a stored checksum was checked and found wrong.
    public var checksumsOK: Bool {
        masterChecksumValid != false && regions.allSatisfy { $0.checksumValid != false }
    }

    /// Reads the image's structure; with `verify`, decodes every chunk to check the CRC-32s.
    public static func inspect(_ path: String, verify: Bool = true) throws -> ImageInfo {
        let source = try ImageSource.open(path)
        return try describe(source, computedCRCs: verify ? source.udif?.computeRegionCRCs() : nil)
    }

    /// The report for an opened source; `computedCRCs` are the region CRC-32s of its decoded
    /// data when the caller has checked them (UDIF only), nil when not checked.
    public static func describe(_ source: ImageSource, computedCRCs computed: [UInt32]?) throws -> ImageInfo {
        let path = source.path
        guard let image = source.udif else {
            let plans = try PartitionMap.regions(of: source.bytes)
            let size = source.bytes.byteCount
            let digests = RawChunkDigests.sidecar(for: path, blockMap: nil)
            let table = digests.flatMap { try? RawChunkDigests.load($0, diskBytes: size, sourcePath: path) }
            let signature = digests.flatMap { try? FileIO.readSmallFile(RawChunkDigests.signaturePath(forDigests: $0), limit: 4096) }
                .flatMap { try? ImageSignature(parsing: $0) }
            return ImageInfo(
                path: path, format: "RAW", sourceKind: source.kind.rawValue, fileSize: size, diskBytes: size,
                sectorCount: size / sectorSize, storedBytes: size, chunkSize: nil, codecs: [],
                regions: plans.enumerated().map { i, p in
                    RegionInfo(id: String(i), name: p.name, firstSector: p.firstSector, sectorCount: p.sectorCount)
                },
                checksumsVerified: false, scanned: BlockMap.sidecar(for: path) != nil || table != nil,
                identity: table.map { hex($0.identity) }, scanVersion: table.map { _ in ScanData.currentVersion },
                signature: signature.map { hex($0.signature) }, signer: signature.map { Ed25519PEM.fingerprint($0.publicKey) }, ordered: true)
        }
        var uses: [ChunkType: CodecUse] = [:]
        var largest: UInt64 = 0
        for c in image.chunks {
            if c.type != .zeroFill && c.type != .ignore { largest = max(largest, c.length) }
            uses[c.type, default: CodecUse(codec: c.type.description, chunks: 0, diskBytes: 0, storedBytes: 0)].chunks += 1
            uses[c.type]!.diskBytes += c.length
            uses[c.type]!.storedBytes += c.storedLength
        }
        var regions: [RegionInfo] = []
        for (i, r) in image.regions.enumerated() {
            let stored = r.table.checksum.crc32Value
            regions.append(RegionInfo(
                id: r.id, name: r.name, firstSector: r.firstSector, sectorCount: r.sectorCount,
                checksum: r.table.checksum.type == UDIFChecksum.typeNone ? nil : r.table.checksum.description,
                checksumValid: stored.flatMap { s in computed.map { $0[i] == s } }))
        }
        var masterValid: Bool?
        if let stored = image.trailer.masterChecksum.crc32Value {
            let fromTables = UDIFImage.masterCRC(of: image.regions.map { $0.table.checksum.crc32Value ?? 0 })
            let fromData = computed.map { UDIFImage.masterCRC(of: $0) }
            masterValid = stored == fromTables && (fromData.map { $0 == stored } ?? true)
        }
        let t = image.trailer
        let (usage, recorded) = usageInfo(image)
        let scan = try? ScanData.stored(in: image)
        let signature = try? ImageSignature.stored(in: image)
        return ImageInfo(
            path: path, format: formatName(uses.keys), sourceKind: source.kind.rawValue, fileSize: image.fileSize,
            diskBytes: image.byteCount, sectorCount: t.sectorCount, storedBytes: t.dataForkLength,
            chunkSize: largest > 0 ? largest : nil, codecs: uses.values.sorted { $0.diskBytes > $1.diskBytes }, regions: regions,
            masterChecksum: t.masterChecksum.type == UDIFChecksum.typeNone ? nil : t.masterChecksum.description,
            masterChecksumValid: masterValid,
            dataForkChecksum: t.dataForkChecksum.type == UDIFChecksum.typeNone ? nil : t.dataForkChecksum.description,
            checksumsVerified: computed != nil, scanned: scan != nil || image.resourceFork.resources["nsiz"] != nil,
            identity: scan.flatMap { try? hex($0.table(of: image).identity) }, scanVersion: scan?.version,
            appleDigests: scan.map { _ in image.resourceFork.resources["nsiz"] != nil },
            signature: signature.map { hex($0.signature) }, signer: signature.map { Ed25519PEM.fingerprint($0.publicKey) }, ordered: image.isOrdered,
            usage: usage, usageRecorded: usage == nil ? nil : recorded)
    }

    /// The stored usage record; else, per region with ignore chunks, what they leave in use.
    /// A damaged record is passed over for what the chunks say.
    static func usageInfo(_ image: UDIFImage) -> ([UsageInfo]?, Bool) {
        if let data = try? UsageData.stored(in: image) {
            return (data.records.map { r in
                let bytes = r.sectorCount * sectorSize
                return UsageInfo(partition: Int(r.partition), region: nil, firstSector: r.firstSector, sectorCount: r.sectorCount,
                                 filesystem: r.filesystem.isEmpty ? nil : r.filesystem, method: r.method.isEmpty ? nil : r.method,
                                 inUseBytes: r.finding == .mapped ? min(r.allocatedBytes, bytes) : bytes, ignoredBytes: r.ignoredBytes,
                                 imagedWhole: r.finding == .mapped ? nil : r.reason)
            }, true)
        }
        var derived: [UsageInfo] = []
        for region in image.regions {
            let ignored = image.chunks[region.chunkRange].reduce(UInt64(0)) { $0 + ($1.type == .ignore ? $1.length : 0) }
            guard ignored > 0 else { continue }
            let bytes = region.sectorCount * sectorSize
            derived.append(UsageInfo(partition: nil, region: region.id, firstSector: region.firstSector, sectorCount: region.sectorCount,
                                     filesystem: nil, method: "unknown", inUseBytes: bytes - ignored, ignoredBytes: ignored,
                                     imagedWhole: nil))
        }
        return (derived.isEmpty ? nil : derived, false)
    }

    /// hdiutil's format name from the codecs in use.
    package static func formatName(_ types: some Sequence<ChunkType>) -> String {
        let compressed = types.filter(\.isCompressed)
        if compressed.count > 1 { return "mixed" }
        switch compressed.first {
        case .zlib?: return "UDZO"
        case .bzip2?: return "UDBZ"
        case .lzfse?: return "ULFO"
        case .lzma?: return "ULMO"
        case .adc?: return "UDCO"
        case nil: return "UDRO"
        case let other?: return "UDIF (\(other))"
        }
    }

    public func text() -> String {
        var s = ""
        s += "Image: \(displayable(path))\n"
        s += "Format: \(format) (\(sourceKind))\n"
        s += "Disk size: \(diskBytes) bytes (\(sectorCount) sectors, \(ByteSize.format(diskBytes)))\n"
        if format != "RAW" {
            let ratio = diskBytes > 0 ? Double(storedBytes) / Double(diskBytes) * 100 : 0
            s += "Stored data: \(storedBytes) bytes (\(String(format: "%.1f", ratio))% of the disk), file \(fileSize) bytes\n"
            if let chunkSize { s += "Chunk size: \(chunkSize) bytes (\(ByteSize.format(chunkSize)))\n" }
            s += "Codecs:\n"
            for c in codecs {
                s += "\t\(c.codec): \(c.chunks) chunks, \(c.diskBytes) bytes on disk, \(c.storedBytes) stored\n"
            }
        }
        s += "Regions: \(regions.count)\n"
        for r in regions {
            var line = "\t\(displayable(r.id))\t\(r.firstSector)+\(r.sectorCount)\t\(displayable(r.name))"
            if let c = r.checksum {
                line += "\t\(c)"
                if let ok = r.checksumValid { line += ok ? " ok" : " MISMATCH" }
            }
            s += line + "\n"
        }
        if let usage {
            s += usageRecorded == true ? "Filesystems:\n" : "Free space (ignore runs; no usage record):\n"
            for u in usage {
                let size = u.sectorCount * sectorSize
                var label = u.region.map { "blkx \(displayable($0))" } ?? (u.partition == 0 ? "disk" : "partition \(u.partition ?? 0)")
                if let fs = u.filesystem { label += " (\(displayable(fs)))" }
                if let why = u.imagedWhole {
                    s += "\t\(label): \(ByteSize.format(size)), imaged whole: \(displayable(why))\n"
                } else {
                    s += "\t\(label): \(ByteSize.format(u.inUseBytes)) of \(ByteSize.format(size)) in use (\(u.method.map { $0 == "unknown" ? "method unknown" : "found from \($0)" } ?? "method unknown"))\n"
                }
            }
        }
        if let m = masterChecksum {
            s += "Master checksum: \(m)" + (masterChecksumValid.map { $0 ? " ok" : " MISMATCH" } ?? "") + "\n"
        }
        if let d = dataForkChecksum { s += "Data fork checksum: \(d)\n" }
        if format != "RAW" {
            s += "Checksums verified: \(checksumsVerified ? (checksumsOK ? "yes" : "NO, the image is corrupt") : "not checked")\n"
        }
        s += "Scanned: \(scanned ? "yes" : "no")" + (appleDigests == false ? " (without Apple's whole-disk digests)" : "") + "\n"
        if let identity { s += "Identity: \(identity)\n" }
        if let scanVersion, scanVersion != ScanData.currentVersion {
            s += "Scan version: \(scanVersion) (an earlier asr's: pins and signatures need a rescan)\n"
        }
        if let signature, let signer { s += "Signature: \(signature) (Ed25519 key \(signer))\n" }
        s += "Ordered: \(ordered ? "yes" : "no")\n"
        return s
    }
}
