import Foundation
import Imaging
import Multicast
import UDIF

/// Starting inputs for every harness: the real hdiutil images taken apart (whole images, their
/// plists, each block table with the data its chunks use, each stored chunk), plus small
/// hand-made inputs for what those images lack: LZVN opcodes, raw, ADC and stored-LZFSE chunks
/// beside scan data in one image, multicast messages, block maps.
public struct Seeds: Sendable {
    public let images: [[UInt8]]
    /// Raw filesystems (the fs fixtures: apfs.raw), for the harnesses of their kind.
    public let filesystems: [[UInt8]]

    /// `images`: whole UDIF files (the fixtures). Seeds from them come first, then ours.
    public init(images: [[UInt8]], filesystems: [[UInt8]] = []) {
        self.images = images + [Self.handMadeImage()]
        self.filesystems = filesystems
    }

    public func inputs(for target: FuzzTarget) -> [[UInt8]] {
        switch target {
        case .udif: images
        case .blkx: images.flatMap(Self.regionSeeds)
        case .plist: images.compactMap(Self.plist)
        case .adc: chunks(.adc) + [Self.framed(sectors: 1, Self.handMadeADC)]
        case .zlib: chunks(.zlib)
        case .bzip2: chunks(.bzip2)
        case .xz: chunks(.lzma)
        case .lzfse: chunks(.lzfse) + [Self.framed(sectors: 1, Self.handMadeLZFSE)]
        case .lzvn: Self.lzvnSeeds
        case .config: Self.configSeeds
        case .packet: Self.packetSeeds
        case .control: Self.controlSeeds
        case .bmap: Self.bmapSeeds
        case .filesystem: FilesystemSeeds.all(images: images)
        case .hfsplus: images.compactMap(FilesystemSeeds.hfsPartition)
        case .ext: FilesystemSeeds.extTrees
        case .apfs: filesystems.filter { $0.count > 4096 && $0[32..<36].elementsEqual("NXSB".utf8) }
        case .fat: FilesystemSeeds.made.filter { $0.count > 512 && $0[510] == 0x55 && $0[511] == 0xAA && $0[3..<11].elementsEqual("mkfs.fat".utf8) }
        }
    }

    // MARK: From images

    static func open(_ bytes: [UInt8]) -> UDIFImage? { try? UDIFImage(file: MemoryFile(bytes)) }

    static func plist(_ bytes: [UInt8]) -> [UInt8]? {
        guard let image = open(bytes) else { return nil }
        let start = Int(image.trailer.xmlOffset)
        return Array(bytes[start..<(start + Int(image.trailer.xmlLength))])
    }

    /// Each region as the blkx harness takes it: the table moved to sector 0, its chunks'
    /// stored bytes packed into a data fork of their own.
    static func regionSeeds(_ bytes: [UInt8]) -> [[UInt8]] {
        guard let image = open(bytes) else { return [] }
        return image.regions.compactMap { region in
            var table = region.table
            var fork: [UInt8] = []
            for k in table.chunks.indices where table.chunks[k].type.hasStoredData {
                let c = table.chunks[k]
                let start = Int(image.trailer.dataForkOffset + region.table.dataOffset + c.storedOffset)
                table.chunks[k].storedOffset = UInt64(fork.count)
                fork += bytes[start..<(start + Int(c.storedLength))]
            }
            table.firstSector = 0
            table.dataOffset = 0
            let serialized = table.serialized()
            guard serialized.count <= Int(UInt16.max) else { return nil }
            var seed: [UInt8] = []
            seed.appendBigEndian(UInt16(serialized.count))
            return seed + serialized + fork
        }
    }

    /// Stored chunks of one codec, smallest first, framed as the codec harnesses take them.
    func chunks(_ type: ChunkType) -> [[UInt8]] {
        var found: [(sectors: Int, stored: [UInt8])] = []
        for bytes in images {
            guard let image = Self.open(bytes) else { continue }
            for (i, c) in image.chunks.enumerated() where c.type == type && c.length / 512 <= 0xFFF {
                if let stored = try? image.storedBytes(of: i) { found.append((Int(c.length / 512), stored)) }
            }
        }
        return found.sorted { $0.stored.count < $1.stored.count }.prefix(8).map { Self.framed(sectors: $0.sectors, $0.stored) }
    }

    static func framed(sectors: Int, _ stored: [UInt8]) -> [UInt8] {
        var seed: [UInt8] = []
        seed.appendBigEndian(UInt16(sectors))
        return seed + stored
    }

    // MARK: Hand-made

    static let text = Array(String(repeating: "asr restores disk images; ", count: 400).utf8)

    /// One sector: the literal "asr!", then copies from 4 back (7 of 67 bytes, one of 39).
    static let handMadeADC: [UInt8] = {
        var s: [UInt8] = [0x83] + Array("asr!".utf8)
        for _ in 0..<7 { s += [0x40 | 63, 0, 3] }
        s += [0x40 | 35, 0, 3]
        return s
    }()

    /// One sector in a stored (`bvx-`) block.
    static let handMadeLZFSE: [UInt8] = {
        var s = Array("bvx-".utf8)
        s.appendLittleEndian(UInt32(512))
        return s + Array(text.prefix(512)) + Array("bvx$".utf8)
    }()

    /// An image with a chunk of every kind we can make here, and scan data (asrc, nsiz).
    static func handMadeImage() -> [UInt8] {
        var fork: [UInt8] = []
        var chunks: [BlockChunk] = []
        var sector: UInt64 = 0
        func add(_ type: ChunkType, sectors: UInt64, stored: [UInt8] = []) {
            chunks.append(BlockChunk(type: type, sectorStart: sector, sectorCount: sectors,
                                     storedOffset: UInt64(fork.count), storedLength: UInt64(stored.count)))
            fork += stored
            sector += sectors
        }
        add(.raw, sectors: 1, stored: Array(text.prefix(512)))
        add(.zeroFill, sectors: 8)
        let zlibInput = Array(text.prefix(16 * 512))
        add(.zlib, sectors: 16, stored: zlibInput.withUnsafeBytes { Codec.compressZlib($0, level: 6) } ?? [])
        add(.ignore, sectors: 4)
        add(.adc, sectors: 1, stored: handMadeADC)
        add(.lzfse, sectors: 1, stored: handMadeLZFSE)
        let table = BlockTable(firstSector: 0, sectorCount: sector, buffersNeeded: 0, blockDescriptor: 0,
                               checksum: .none, chunks: chunks)
        // The chunk list the scan data must match: every chunk that covers sectors.
        var entries: [ScanData.Entry] = []
        for c in chunks {
            entries.append(ScanData.Entry(diskOffset: c.sectorStart * 512, length: c.sectorCount * 512,
                                          sha256: [UInt8](repeating: 0x5A, count: 32)))
        }
        let scan = ScanData(diskBytes: sector * 512, diskSHA256: [UInt8](repeating: 0xA5, count: 32), chunks: entries)
        return ImageHarness.assemble(dataFork: fork, blkx: [table.serialized()],
                                     extra: scan.resources(diskSHA1: [UInt8](repeating: 0, count: 20), masterCRC: 0),
                                     sectorCount: sector)
    }

    /// LZVN payloads using every opcode form, each ending with the end-of-stream opcode.
    static let lzvnSeeds: [[UInt8]] = {
        let end: [UInt8] = [0x06, 0, 0, 0, 0, 0, 0, 0]
        // "abc", then 3 bytes from 3 back (small distance).
        let small: [UInt8] = [0xE3] + Array("abc".utf8) + [0x00, 3] + end
        // A 20-byte literal; 10 from 20 back (medium distance); 5 more from there (match only);
        // two no-ops; "z" and 3 from 25 back (large distance); "y" and 3 more from 25 back
        // (previous distance); 20 more (large match).
        var mixed: [UInt8] = [0xE0, 4] + Array(text.prefix(20))
        mixed += [0xA1, 20 << 2 | 3, 0, 0xF5, 0x0E, 0x16, 0x47, 25, 0] + Array("z".utf8)
        mixed += [0x46] + Array("y".utf8) + [0xF0, 4] + end
        // A literal longer than 16 + 255 cannot be one opcode: two large literals.
        let long: [UInt8] = [0xE0, 255] + Array(text.prefix(271)) + [0xE0, 0] + Array(text.suffix(16)) + end
        return [(6, small), (63, mixed), (287, long)].map { size, payload in
            var seed: [UInt8] = []
            seed.appendBigEndian(UInt16(size))
            return seed + payload
        }
    }()

    static let configSeeds: [[UInt8]] = {
        let minimal = """
            <?xml version="1.0" encoding="UTF-8"?>
            <plist version="1.0"><dict><key>Data Rate</key><integer>6000000</integer>
            <key>Multicast Address</key><string>239.1.2.3</string></dict></plist>
            """
        let every: [String: Any] = [
            "Data Rate": 6_000_000, "Multicast Address": "224.0.0.251", "Client Data Rate": 2_000_000,
            "DNS Service Discovery": false, "Loop Suspend": 3, "Multicast TTL": 8, "Port": 7801,
        ]
        // XML only: a binary plist is refused at its first bytes.
        let xml = try? PropertyListSerialization.data(fromPropertyList: every, format: .xml, options: 0)
        return [Array(minimal.utf8)] + (xml.map { [[UInt8]($0)] } ?? [])
    }()

    static let packetSeeds: [[UInt8]] = {
        func datagrams(_ chunk: Int) -> [[UInt8]] {
            let stored = Int(MulticastHarness.manifest[chunk].storedLength)
            let count = (stored + DataPacket.maxPayload - 1) / DataPacket.maxPayload
            return (0..<count).map { f in
                let start = f * DataPacket.maxPayload
                let payload = (start..<min(start + DataPacket.maxPayload, stored)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ chunk) }
                var out: [UInt8] = []
                DataPacket(fragmentCount: UInt16(count), sessionID: 7, pass: 1, chunk: UInt32(chunk), fragment: UInt16(f),
                           storedLength: UInt32(stored), payload: payload[...]).encode(into: &out)
                return out
            }
        }
        func framed(_ datagrams: [[UInt8]]) -> [UInt8] {
            var seed: [UInt8] = []
            for d in datagrams {
                seed.appendBigEndian(UInt16(d.count))
                seed += d
            }
            return seed
        }
        let perChunk = MulticastHarness.manifest.indices.map(datagrams).filter { !$0.isEmpty }
        // Every chunk whole, and fragments of several chunks interleaved and out of order.
        return perChunk.map(framed) + [framed([perChunk[3][2], perChunk[2][1], perChunk[3][0], perChunk[4][5], perChunk[2][0]])]
    }()

    static let controlSeeds: [[UInt8]] = {
        let entries = (0..<6).map { (i: Int) -> ManifestEntry in
            let stored: UInt32 = i == 4 ? 0 : UInt32(1000 * (i + 1))
            return ManifestEntry(diskOffset: UInt64(i) << 20, length: 1 << 20, storedLength: stored,
                                 codec: ChunkType.zlib.rawValue, sha256: [UInt8](repeating: UInt8(i), count: 32))
        }
        let welcome = ControlMessage.Welcome(version: 1, sessionID: 99, identity: [UInt8](repeating: 1, count: 32),
                                             diskBytes: 6 << 20, group: [239, 1, 2, 3], dataPort: 7800, dataRate: 6_000_000)
        let session: [ControlMessage] = [
            .welcome(welcome), .manifest(entries),
            .report(.init(received: 2, writeRate: 5_000_000, missing: [(0, 2), (3, 1)], fragments: [(5, [0, 3])], position: (1, 4),
                          packets: 1234)),
            .report(.init(received: 6, writeRate: 0, missing: [], packets: 5000, verifying: true, verified: 3 << 20, verifyTotal: 6 << 20)),
            .done(failure: nil), .done(failure: "the target does not match the image at bytes 0-1048575"),
            .signature(signed: [UInt8](repeating: 8, count: 104)),
            .fragmentDigestsWanted(chunk: 3), .fragmentDigests(chunk: 3, digests: [UInt8](repeating: 9, count: 32)),
            .report(.init(received: 0, writeRate: 0, missing: [], surveying: true)),
        ]
        return [
            ControlMessage.hello(version: 1, client: "lab-mac-3").encoded(),
            session.flatMap { $0.encoded() },
            ControlMessage.drop(reason: "protocol version 2 is not supported").encoded(),
        ]
    }()

    static let bmapSeeds: [[UInt8]] = [
        BlockMap(imageSize: 10 * 4096 + 100, ranges: [
            .init(first: 0, last: 1, sha256: [UInt8](repeating: 1, count: 32)),
            .init(first: 5, last: 5, sha256: [UInt8](repeating: 2, count: 32)),
            .init(first: 8, last: 10, sha256: [UInt8](repeating: 3, count: 32)),
        ]),
        BlockMap(imageSize: 1 << 20, blockSize: 512, ranges: []),
        BlockMap(imageSize: 4096, ranges: [.init(first: 0, last: 0, sha256: [UInt8](repeating: 0xFE, count: 32))]),
    ].map { Array($0.xml().utf8) }
}

// MARK: libFuzzer dictionaries

extension FuzzTarget {
    /// Tokens libFuzzer splices into inputs: magics and keywords a byte mutation rarely makes.
    public var dictionary: [String] {
        let plist = ["<key>", "</key>", "<string>", "</string>", "<data>", "</data>", "<dict>", "</dict>", "<array>",
                     "</array>", "<integer>", "</integer>", "<true/>", "<false/>", "<plist version=\"1.0\">", "&#"]
        let resources = ["resource-fork", "blkx", "plst", "nsiz", "asrc", "Attributes", "CFName", "Data", "ID", "Name"]
        let chunkTypes = ["\u{80}\0\0\u{04}", "\u{80}\0\0\u{05}", "\u{80}\0\0\u{06}", "\u{80}\0\0\u{07}", "\u{80}\0\0\u{08}",
                          "\u{7F}\u{FF}\u{FF}\u{FE}", "\u{FF}\u{FF}\u{FF}\u{FF}"]
        // Counts and sizes at the edges of what fits: 2^54 sectors is 2^63 bytes.
        let bigSectors = ["\0\u{3F}\u{FF}\u{FF}\u{FF}\u{FF}\u{FF}\u{FF}", "\0\u{40}\0\0\0\0\0\0", "\0\u{7F}\u{FF}\u{FF}\u{FF}\u{FF}\u{FF}\u{FF}"]
        let bigNumbers = ["18446744073709551615", "9223372036854775807", "9223372036854775808", "4294967296", "-1"]
        switch self {
        case .udif: return ["koly", "mish", "bvx2", "bvx$"] + plist + resources
        case .blkx: return ["mish"] + chunkTypes + bigSectors
        case .plist: return plist + resources + ["bWlzaA", "ASRSCAN1"]
        case .lzfse, .lzvn: return ["bvx1", "bvx2", "bvxn", "bvx-", "bvx$"]
        case .adc, .zlib, .bzip2, .xz: return []
        case .config:
            return plist + ["Data Rate", "Multicast Address", "Client Data Rate", "DNS Service Discovery", "Loop Suspend",
                            "Multicast TTL", "Port", "<real>", "239.", "224.0.0."] + bigNumbers
        case .packet: return ["ASRD\u{01}\0"]
        case .control: return ["ASRC", "\0\0\0\u{01}\u{05}"]
        case .filesystem:
            // Magics of every filesystem examine knows, and JNLx (an HFS+ journal header).
            return ["\u{53}\u{EF}", "NTFS    ", "FAT32   ", "FAT16   ", "FAT12   ", "\u{55}\u{AA}", "H+\0\u{04}", "HX\0\u{05}",
                    "SWAPSPACE2", "S1SUSPEND", "XFSB", "_BHRfS_M", "NXSB", "JNLx", "\u{FF}\u{FF}\u{FF}\u{0F}"]
        case .hfsplus:
            // Catalog record types, B-tree node kinds, hard link and compression markers.
            return ["H+\0\u{04}", "HX\0\u{05}", "\0\u{01}", "\0\u{02}", "\0\u{03}", "\u{FF}\u{01}", "hlnkhfs+", "fdrpMACS", "iNode",
                    "fpmc", "com.apple.decmpfs", "com.apple.ResourceFork", "\0\0\0\u{10}", "\0\0\0\u{20}", "\0\0\0\u{30}"]
        case .fat:
            // Long-name entries (attribute 0x0F), the end-of-chain and free-entry markers, "." entries.
            return ["\u{0F}\0", "\u{FF}\u{FF}\u{FF}\u{0F}", "\u{F8}\u{FF}", "\u{E5}", ".          ", "..         ", "\u{41}", "\u{10}"]
        case .apfs:
            return ["NXSB", "APSB", "com.apple.fs.symlink", "com.apple.decmpfs", "com.apple.ResourceFork", "fpmc",
                    "\u{02}\0\0\u{40}", "\u{03}\0\0\u{40}", "\u{02}\0\0\0", "\u{03}\0\0\0", "\u{0B}\0\0\0", "\u{0E}\0\0\0"]
        case .ext:
            return ["\u{53}\u{EF}", "\u{0A}\u{F3}", "user.", "security.", "system.data", "\0\0\u{02}\u{EA}"]
        case .bmap:
            return ["<bmap version=\"2.0\">", "<ImageSize>", "</ImageSize>", "<BlockSize>", "</BlockSize>", "<BlocksCount>",
                    "</BlocksCount>", "<MappedBlocksCount>", "</MappedBlocksCount>", "<ChecksumType>", "sha256",
                    "<BmapFileChecksum>", "</BmapFileChecksum>", "<Range chksum=\"", "</Range>", "<BlockMap>", "</BlockMap>"] + bigNumbers
        }
    }

    /// The dictionary in libFuzzer's file format: one quoted token a line, bytes as \xNN.
    /// Tokens are byte strings: a scalar below 256 stands for that byte.
    public var dictionaryFile: String {
        dictionary.map { token in
            "\"" + token.unicodeScalars.map { s -> String in
                let v = s.value
                if v >= 0x20 && v < 0x7F && s != "\"" && s != "\\" { return String(s) }
                return String(format: "\\x%02X", v & 0xFF)
            }.joined() + "\""
        }.joined(separator: "\n") + "\n"
    }
}
