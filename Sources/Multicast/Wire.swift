import UDIF

/// The bytes on the wire (docs/PROTOCOL.md). Decoding never trusts a length it has not
/// checked against the bytes it has: every malformed input is a `nil` or a thrown error.

/// A UDP data packet: one fragment of one compressed chunk.
package struct DataPacket: Sendable, Equatable {
    package static let magic: [UInt8] = Array("ASRD".utf8)
    package static let version: UInt8 = 1
    package static let headerSize = 32
    /// Payload per packet: 32 + 1400 bytes + IP and UDP headers fit a 1500-byte MTU.
    package static let maxPayload = 1400

    package var fragmentCount: UInt16
    package var sessionID: UInt64
    package var pass: UInt32
    package var chunk: UInt32
    package var fragment: UInt16
    package var storedLength: UInt32
    package var payload: ArraySlice<UInt8>

    package init(fragmentCount: UInt16, sessionID: UInt64, pass: UInt32, chunk: UInt32, fragment: UInt16,
                storedLength: UInt32, payload: ArraySlice<UInt8>) {
        self.fragmentCount = fragmentCount
        self.sessionID = sessionID
        self.pass = pass
        self.chunk = chunk
        self.fragment = fragment
        self.storedLength = storedLength
        self.payload = payload
    }

    package func encode(into out: inout [UInt8]) {
        out.removeAll(keepingCapacity: true)
        out += Self.magic
        out.append(Self.version)
        out.append(0)
        out.appendBE(fragmentCount)
        out.appendBE(sessionID)
        out.appendBE(pass)
        out.appendBE(chunk)
        out.appendBE(fragment)
        out.appendBE(UInt16(payload.count))
        out.appendBE(storedLength)
        out += payload
    }

    package init(_ header: DataPacketHeader, payload: ArraySlice<UInt8> = []) {
        self.init(fragmentCount: header.fragmentCount, sessionID: header.sessionID, pass: header.pass, chunk: header.chunk,
                  fragment: header.fragment, storedLength: header.storedLength, payload: payload)
    }

    /// nil for anything that is not a well-formed packet of this version.
    package static func decode(_ bytes: ArraySlice<UInt8>) -> DataPacket? {
        guard let header = bytes.withUnsafeBytes({ DataPacketHeader($0) }) else { return nil }
        return DataPacket(header, payload: bytes.suffix(Int(header.payloadLength)))
    }
}

/// A data packet's header read where the packet lies: the receive path parses and copies
/// nothing but the payload, once, into its chunk.
package struct DataPacketHeader: Sendable, Equatable {
    package var fragmentCount: UInt16
    package var sessionID: UInt64
    package var pass: UInt32
    package var chunk: UInt32
    package var fragment: UInt16
    package var payloadLength: UInt16
    package var storedLength: UInt32

    package init(fragmentCount: UInt16, sessionID: UInt64, pass: UInt32, chunk: UInt32, fragment: UInt16,
                 payloadLength: UInt16, storedLength: UInt32) {
        self.fragmentCount = fragmentCount
        self.sessionID = sessionID
        self.pass = pass
        self.chunk = chunk
        self.fragment = fragment
        self.payloadLength = payloadLength
        self.storedLength = storedLength
    }

    /// nil unless `bytes` is exactly one well-formed packet of this version; its payload is
    /// then the last `payloadLength` bytes.
    package init?(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count >= DataPacket.headerSize,
              bytes.loadUnaligned(as: UInt32.self) == DataPacketHeader.magic, bytes[4] == DataPacket.version else { return nil }
        func load<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T { T(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: T.self)) }
        fragmentCount = load(6, UInt16.self)
        sessionID = load(8, UInt64.self)
        pass = load(16, UInt32.self)
        chunk = load(20, UInt32.self)
        fragment = load(24, UInt16.self)
        payloadLength = load(26, UInt16.self)
        storedLength = load(28, UInt32.self)
        guard fragmentCount > 0, fragment < fragmentCount, Int(payloadLength) <= DataPacket.maxPayload,
              bytes.count - DataPacket.headerSize == Int(payloadLength),
              UInt64(storedLength) <= UInt64(fragmentCount) * UInt64(DataPacket.maxPayload) else { return nil }
    }

    /// "ASRD" as the first four bytes load in this machine's order.
    private static let magic = DataPacket.magic.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
}

/// One entry of the manifest: a chunk of the disk as the server sends it.
package struct ManifestEntry: Sendable, Equatable {
    package var diskOffset: UInt64
    package var length: UInt64
    /// Bytes on the wire; 0 for chunks the client fills with zeros itself (and free space).
    package var storedLength: UInt32
    /// UDIF chunk type of the stored bytes (raw, zlib, ...); zero-fill or ignore without them.
    package var codec: UInt32
    /// Where the source stores the chunk (`ChunkRecord.storedOffset`): part of the identity,
    /// so the manifest names the same image a file restore of the source would.
    package var storedOffset: UInt64
    /// SHA-256 of the decoded bytes: checked before a chunk is written.
    package var sha256: [UInt8]

    package init(diskOffset: UInt64, length: UInt64, storedLength: UInt32, codec: UInt32, sha256: [UInt8], storedOffset: UInt64 = 0) {
        self.diskOffset = diskOffset
        self.length = length
        self.storedLength = storedLength
        self.codec = codec
        self.storedOffset = storedOffset
        self.sha256 = sha256
    }

    /// The entry that sends `record`.
    package init(_ record: ChunkRecord) {
        self.init(diskOffset: record.diskOffset, length: record.length, storedLength: UInt32(record.storedLength), codec: record.codec,
                  sha256: record.sha256, storedOffset: record.storedOffset)
    }

    /// What this entry puts on a disk, by the one rule every source is held to.
    package var record: ChunkRecord {
        let kind: ChunkRecord.Kind = isFree ? .free : storedLength == 0 ? .zeros : .data
        return ChunkRecord(diskOffset: diskOffset, length: length, kind: kind, codec: codec, storedOffset: storedOffset,
                           storedLength: UInt64(storedLength), sha256: sha256)
    }

    /// A client's check of the server's manifest: it must be a valid `ChunkTable` (chunks tile
    /// the disk; one sent without stored bytes carries the digest of its zeros), whose
    /// identity the caller then compares with WELCOME's, a pin and a signature.
    package static func table(of manifest: [ManifestEntry], diskBytes: UInt64) throws(MulticastError) -> ChunkTable {
        do {
            return try ChunkTable(diskBytes: diskBytes, records: manifest.map(\.record))
        } catch {
            throw .malformedManifest(error.description)
        }
    }

    package var fragmentCount: Int { (Int(storedLength) + DataPacket.maxPayload - 1) / DataPacket.maxPayload }

    /// Free space (a UDIF ignore chunk): never sent, never verified; the client leaves it as
    /// it is unless told to erase it.
    package var isFree: Bool { codec == ChunkType.ignore.rawValue }
}

/// Messages on the TCP control connection, each framed as u32 length, u8 type, payload.
package enum ControlMessage: Sendable, Equatable {
    case hello(version: UInt16, client: String)
    case welcome(Welcome)
    case manifest([ManifestEntry])
    case report(Report)
    /// The client's restore ended: every chunk written and verified (`failure` nil), or it
    /// failed, and why (protocol 8).
    case done(failure: String?)
    case drop(reason: String)
    /// The image's signature over its identity (`ImageSignature`, 104 bytes, or nothing when
    /// it has none); sent after MANIFEST.
    case signature(signed: [UInt8])
    /// A client asks for a chunk's fragment digests: the chunk failed its SHA-256, so some
    /// fragment of it was forged or damaged.
    case fragmentDigestsWanted(chunk: UInt32)
    /// The first `fragmentDigestBytes` of each fragment's SHA-256, in fragment order: the
    /// client then keeps only fragments that match.
    case fragmentDigests(chunk: UInt32, digests: [UInt8])

    /// 2: REPORT carries the whole need set and the stream position. 3: manifest entries
    /// of codec 2 (ignore) are free space, whose SHA-256 field is not a digest. 4: WELCOME
    /// names the image's identity. 5: SIGNATURE follows MANIFEST. 6: WELCOME names the data's
    /// source address. 7: SIGNATURE starts with the stored layout it signs; FRAGMENT DIGESTS.
    /// 8: REPORT carries the packets heard, the read-back's progress and whether the client is
    /// still surveying its target; DONE says whether the restore succeeded. 9: manifest entries
    /// carry their stored offset and follow the chunk-table rule (identity version 2);
    /// SIGNATURE is the signature alone (docs/PROTOCOL.md).
    package static let protocolVersion: UInt16 = 9
    package static let fragmentDigestBytes = 16
    package static let maxFrame = 64 << 20
    package static let maxManifestEntries = (maxFrame - 8) / manifestEntryBytes
    static let manifestEntryBytes = 64

    package struct Welcome: Sendable, Equatable {
        package var version: UInt16
        package var sessionID: UInt64
        package var identity: [UInt8]
        package var diskBytes: UInt64
        package var group: [UInt8]  // IPv4, 4 bytes
        package var dataPort: UInt16
        package var dataRate: UInt64
        /// The IPv4 address the server's data comes from (4 bytes; zeros when unknown): the
        /// client hears the group from that source only.
        package var dataSource: [UInt8]
        package init(version: UInt16, sessionID: UInt64, identity: [UInt8], diskBytes: UInt64, group: [UInt8], dataPort: UInt16, dataRate: UInt64,
                     dataSource: [UInt8] = [0, 0, 0, 0]) {
            self.dataSource = dataSource
            self.version = version
            self.sessionID = sessionID
            self.identity = identity
            self.diskBytes = diskBytes
            self.group = group
            self.dataPort = dataPort
            self.dataRate = dataRate
        }
    }

    /// Everything a client lacks (protocol version 2): every chunk it has nothing of, over the
    /// whole image, and the fragments it lacks of chunks it has in part, with where it is in
    /// the stream so the server can tell a loss from data still on its way.
    package struct Report: Sendable, Equatable {
        package var received: UInt32
        /// The client's measured write rate, bytes/s (0 if not yet known).
        package var writeRate: UInt64
        /// Chunk ranges the client has nothing of, as (first, count), in carousel order from
        /// its stream position; when there were more than `maxRanges`, the last ones are open
        /// (they claim everything after the last exact range, round to the stream position).
        package var missing: [(UInt32, UInt32)]
        /// Chunks the client has in part: just the fragments it lacks.
        package var fragments: [(chunk: UInt32, missing: [UInt16])]
        /// The pass of the latest data packet the client took, and the highest chunk it has
        /// seen in that pass (fragment repairs do not move it); nil before any.
        package var position: (pass: UInt32, chunk: UInt32)?
        /// No data had arrived for a while when it reported: nothing is on its way to it.
        package var quiet: Bool
        /// Data packets of this session it has taken so far (duplicates included): against what
        /// the server sent meanwhile, its loss.
        package var packets: UInt64
        /// Every chunk is written; it is reading the target back: `verified` of `verifyTotal`
        /// bytes so far (both 0 until the read-back starts).
        package var verifying: Bool
        package var verified: UInt64
        package var verifyTotal: UInt64
        /// Still reading its target (an incremental restore): alive, its need not yet known.
        /// The rest of the report means nothing.
        package var surveying: Bool
        package init(received: UInt32, writeRate: UInt64, missing: [(UInt32, UInt32)], fragments: [(chunk: UInt32, missing: [UInt16])] = [],
                     position: (pass: UInt32, chunk: UInt32)? = nil, quiet: Bool = false, packets: UInt64 = 0,
                     verifying: Bool = false, verified: UInt64 = 0, verifyTotal: UInt64 = 0, surveying: Bool = false) {
            self.surveying = surveying
            self.received = received
            self.writeRate = writeRate
            self.missing = missing
            self.fragments = fragments
            self.position = position
            self.quiet = quiet
            self.packets = packets
            self.verifying = verifying
            self.verified = verified
            self.verifyTotal = verifyTotal
        }
        package static let maxRanges = 4096
        package static let maxPartialChunks = 1024
        static let hasPosition: UInt8 = 1, isQuiet: UInt8 = 2, isVerifying: UInt8 = 4, isSurveying: UInt8 = 8
        package static func == (a: Report, b: Report) -> Bool {
            a.received == b.received && a.writeRate == b.writeRate && a.missing.elementsEqual(b.missing) { $0 == $1 }
                && a.fragments.elementsEqual(b.fragments) { $0.chunk == $1.chunk && $0.missing == $1.missing }
                && a.position?.pass == b.position?.pass && a.position?.chunk == b.position?.chunk && a.quiet == b.quiet
                && a.packets == b.packets && a.verifying == b.verifying && a.verified == b.verified && a.verifyTotal == b.verifyTotal
                && a.surveying == b.surveying
        }
    }

    var type: UInt8 {
        switch self {
        case .hello: 1
        case .welcome: 2
        case .manifest: 3
        case .report: 4
        case .done: 5
        case .drop: 6
        case .signature: 7
        case .fragmentDigestsWanted: 8
        case .fragmentDigests: 9
        }
    }

    /// The framed bytes.
    package func encoded() -> [UInt8] {
        var p: [UInt8] = []
        switch self {
        case .hello(let version, let client):
            p += Array("ASRC".utf8)
            p.appendBE(version)
            p.appendString(client)
        case .welcome(let w):
            p.appendBE(w.version)
            p.appendBE(w.sessionID)
            p += w.identity
            p.appendBE(w.diskBytes)
            p += w.group
            p.appendBE(w.dataPort)
            p.appendBE(w.dataRate)
            p += w.dataSource
        case .manifest(let entries):
            p.appendBE(UInt32(entries.count))
            for e in entries {
                p.appendBE(e.diskOffset)
                p.appendBE(e.length)
                p.appendBE(e.storedOffset)
                p.appendBE(e.storedLength)
                p.appendBE(e.codec)
                p += e.sha256
            }
        case .report(let r):
            p.appendBE(r.received)
            p.appendBE(r.writeRate)
            p.append((r.position == nil ? 0 : Report.hasPosition) | (r.quiet ? Report.isQuiet : 0) | (r.verifying ? Report.isVerifying : 0)
                     | (r.surveying ? Report.isSurveying : 0))
            p.appendBE(r.position?.pass ?? 0)
            p.appendBE(r.position?.chunk ?? 0)
            p.appendBE(r.packets)
            p.appendBE(r.verified)
            p.appendBE(r.verifyTotal)
            p.appendBE(UInt32(r.missing.count))
            for (first, count) in r.missing {
                p.appendBE(first)
                p.appendBE(count)
            }
            p.appendBE(UInt32(r.fragments.count))
            for (chunk, missing) in r.fragments {
                p.appendBE(chunk)
                p.appendBE(UInt16(missing.count))
                for f in missing { p.appendBE(f) }
            }
        case .done(let failure):
            p.append(failure == nil ? 0 : 1)
            p.appendString(failure ?? "")
        case .drop(let reason):
            p.appendString(reason)
        case .signature(let signed):
            p += signed
        case .fragmentDigestsWanted(let chunk):
            p.appendBE(chunk)
        case .fragmentDigests(let chunk, let digests):
            p.appendBE(chunk)
            p += digests
        }
        var frame: [UInt8] = []
        frame.appendBE(UInt32(p.count + 1))
        frame.append(type)
        return frame + p
    }

    /// Decodes one frame body (type byte and payload, without the length prefix).
    package static func decode(_ body: ArraySlice<UInt8>) throws(MulticastError) -> ControlMessage {
        guard let type = body.first else { throw .emptyMessage }
        var r = WireReader(body.dropFirst())
        let bad = MulticastError.malformedMessage(type: type)
        let message: ControlMessage
        switch type {
        case 1:
            guard r.bytes(4)?.elementsEqual(Array("ASRC".utf8)) == true, let version = r.u16(), let client = r.string() else { throw bad }
            message = .hello(version: version, client: client)
        case 2:
            guard let version = r.u16(), let session = r.u64(), let sha = r.bytes(32), let disk = r.u64(), let group = r.bytes(4),
                  let port = r.u16(), let rate = r.u64(), let source = r.bytes(4) else { throw bad }
            message = .welcome(Welcome(version: version, sessionID: session, identity: Array(sha), diskBytes: disk,
                                       group: Array(group), dataPort: port, dataRate: rate, dataSource: Array(source)))
        case 3:
            guard let count = r.u32(), Int(count) <= maxManifestEntries, r.remaining == Int(count) * manifestEntryBytes else { throw bad }
            var entries: [ManifestEntry] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let offset = r.u64(), let length = r.u64(), let storedOffset = r.u64(), let stored = r.u32(), let codec = r.u32(),
                      let sha = r.bytes(32) else { throw bad }
                entries.append(ManifestEntry(diskOffset: offset, length: length, storedLength: stored, codec: codec, sha256: Array(sha),
                                             storedOffset: storedOffset))
            }
            message = .manifest(entries)
        case 4:
            let known = Report.hasPosition | Report.isQuiet | Report.isVerifying | Report.isSurveying
            guard let received = r.u32(), let rate = r.u64(), let flags = r.bytes(1)?.first, flags & ~known == 0,
                  let pass = r.u32(), let chunk = r.u32(), let packets = r.u64(), let verified = r.u64(), let verifyTotal = r.u64(),
                  let count = r.u32(), Int(count) <= Report.maxRanges, r.remaining >= Int(count) * 8 else { throw bad }
            var missing: [(UInt32, UInt32)] = []
            for _ in 0..<count {
                guard let first = r.u32(), let n = r.u32() else { throw bad }
                missing.append((first, n))
            }
            guard let partialCount = r.u32(), Int(partialCount) <= Report.maxPartialChunks else { throw bad }
            var fragments: [(chunk: UInt32, missing: [UInt16])] = []
            for _ in 0..<partialCount {
                guard let chunk = r.u32(), let n = r.u16(), r.remaining >= Int(n) * 2 else { throw bad }
                fragments.append((chunk, (0..<n).compactMap { _ in r.u16() }))
            }
            message = .report(Report(received: received, writeRate: rate, missing: missing, fragments: fragments,
                                     position: flags & Report.hasPosition != 0 ? (pass, chunk) : nil, quiet: flags & Report.isQuiet != 0,
                                     packets: packets, verifying: flags & Report.isVerifying != 0, verified: verified, verifyTotal: verifyTotal,
                                     surveying: flags & Report.isSurveying != 0))
        case 5:
            // 0: verified; 1: failed, with a reason (which success must not carry).
            guard let result = r.bytes(1)?.first, result <= 1, let reason = r.string(), result == 1 || reason.isEmpty else { throw bad }
            message = .done(failure: result == 1 ? reason : nil)
        case 6:
            guard let reason = r.string() else { throw bad }
            message = .drop(reason: reason)
        case 7:
            guard let signed = r.bytes(r.remaining), signed.isEmpty || signed.count == ImageSignature.size else { throw bad }
            message = .signature(signed: Array(signed))
        case 8:
            guard let chunk = r.u32() else { throw bad }
            message = .fragmentDigestsWanted(chunk: chunk)
        case 9:
            guard let chunk = r.u32(), r.remaining % fragmentDigestBytes == 0, let digests = r.bytes(r.remaining) else { throw bad }
            message = .fragmentDigests(chunk: chunk, digests: Array(digests))
        default:
            throw .unknownMessage(type: type)
        }
        guard r.remaining == 0 else { throw bad }
        return message
    }
}

/// Bounds-checked big-endian reads over a slice.
struct WireReader {
    private var bytes: ArraySlice<UInt8>
    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    var remaining: Int { bytes.count }

    mutating func skip(_ n: Int) { bytes = bytes.dropFirst(n) }

    mutating func bytes(_ n: Int) -> ArraySlice<UInt8>? {
        guard n >= 0, bytes.count >= n else { return nil }
        defer { bytes = bytes.dropFirst(n) }
        return bytes.prefix(n)
    }

    mutating func rest() -> ArraySlice<UInt8> {
        defer { bytes = bytes.suffix(0) }
        return bytes
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard let b = bytes(MemoryLayout<T>.size) else { return nil }
        return b.reduce(T(0)) { $0 << 8 | T($1) }
    }

    mutating func u16() -> UInt16? { integer(UInt16.self) }
    mutating func u32() -> UInt32? { integer(UInt32.self) }
    mutating func u64() -> UInt64? { integer(UInt64.self) }

    mutating func string() -> String? {
        guard let n = u16(), let b = bytes(Int(n)) else { return nil }
        return String(decoding: b, as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    mutating func appendBE<T: FixedWidthInteger>(_ v: T) {
        for i in stride(from: MemoryLayout<T>.size - 1, through: 0, by: -1) { append(UInt8(truncatingIfNeeded: v >> (i * 8))) }
    }

    mutating func appendString(_ s: String) {
        let utf8 = Array(s.utf8.prefix(Int(UInt16.max)))
        appendBE(UInt16(utf8.count))
        self += utf8
    }
}
