import Crypto
import SystemSupport

/// One chunk as far as the bytes it puts on a disk go: where it lands, what kind it is, where
/// its stored bytes are and how they are coded, and the SHA-256 of what it decodes to.
public struct ChunkRecord: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        /// Stored bytes, decoded by `codec` and checked against `sha256`.
        case data = 0
        /// Free space (a UDIF ignore chunk): never written as data, never verified.
        case free = 1
        /// No stored bytes; decodes to zeros, and `sha256` must be the digest of that many zeros.
        case zeros = 2
    }

    public var diskOffset: UInt64
    public var length: UInt64
    public var kind: Kind
    /// UDIF chunk type of the stored bytes (raw, zlib, ...); zero-fill for zeros, ignore for free.
    public var codec: UInt32
    /// Where the stored bytes are: in a UDIF image's file, or on a raw disk (its disk offset).
    public var storedOffset: UInt64
    public var storedLength: UInt64
    /// SHA-256 of the decoded bytes; 32 zero bytes for free space.
    public var sha256: [UInt8]

    public init(diskOffset: UInt64, length: UInt64, kind: Kind, codec: UInt32, storedOffset: UInt64, storedLength: UInt64, sha256: [UInt8]) {
        self.diskOffset = diskOffset
        self.length = length
        self.kind = kind
        self.codec = codec
        self.storedOffset = storedOffset
        self.storedLength = storedLength
        self.sha256 = sha256
    }

    /// A stretch of zeros without stored bytes, with its digest.
    public static func zeros(at offset: UInt64, length: UInt64) -> ChunkRecord {
        ChunkRecord(diskOffset: offset, length: length, kind: .zeros, codec: ChunkType.zeroFill.rawValue,
                    storedOffset: 0, storedLength: 0, sha256: ZeroDigests.shared.sha256(of: length))
    }

    public static func free(at offset: UInt64, length: UInt64) -> ChunkRecord {
        ChunkRecord(diskOffset: offset, length: length, kind: .free, codec: ChunkType.ignore.rawValue,
                    storedOffset: 0, storedLength: 0, sha256: ChunkTable.noDigest)
    }
}

/// The rule that makes "byte-identical or loudly not" hold against a hostile source: an
/// image's identity (and so every pin and signature) covers everything that decides the bytes
/// written, and every chunk is checked against it before its bytes are used. Built once per
/// source (UDIF scan, raw chunk sidecar, multicast manifest), validated here, and consulted by
/// every consumer through `matches`: restore, verify, compare, multicast and mount.
///
/// Validation: the records tile the disk; a data chunk has stored bytes and a codec that
/// carries them; a zero chunk carries the SHA-256 of that many zeros (checked, never assumed);
/// free space carries no digest and no stored bytes.
///
/// Identity (version 2), the SHA-256 of, big-endian: "asr image identity 2" (20), disk bytes
/// u64, chunk count u64, then per chunk: disk offset u64, length u64, kind u8, codec u32,
/// stored offset u64, stored length u64, SHA-256 (32).
public struct ChunkTable: Sendable {
    public static let identityLabel = Array("asr image identity 2".utf8)
    public static let noDigest = [UInt8](repeating: 0, count: 32)

    public let diskBytes: UInt64
    public let records: [ChunkRecord]
    public let identity: [UInt8]

    public init(diskBytes: UInt64, records: [ChunkRecord]) throws(UDIFError) {
        var at: UInt64 = 0
        for (i, r) in records.enumerated() {
            let (end, wrapped) = r.diskOffset.addingReportingOverflow(r.length)
            func bad(_ why: String) -> UDIFError { .badChunkRecord(index: i, firstByte: r.diskOffset, why) }
            guard r.diskOffset == at, r.length > 0, !wrapped, end <= diskBytes else {
                throw bad("does not follow the chunk before it on the disk")
            }
            guard r.sha256.count == 32 else { throw bad("has no 32-byte digest") }
            let codec = ChunkType(rawValue: r.codec)
            switch r.kind {
            case .data:
                guard codec.hasStoredData, r.storedLength > 0, r.length <= UDIFImage.maxChunkBytes,
                      r.storedLength <= UDIFImage.maxChunkBytes + (1 << 20), codec != .raw || r.storedLength == r.length
                else { throw bad("is data but its codec \(codec) or stored length \(r.storedLength) cannot carry \(r.length) bytes") }
            case .zeros:
                guard r.storedLength == 0, r.storedOffset == 0, codec == .zeroFill else { throw bad("is zeros but has stored bytes") }
                guard r.length <= ZeroDigests.maxLength else { throw bad("is a zero run of \(r.length) bytes, longer than the \(ZeroDigests.maxLength) checked") }
                guard r.sha256 == ZeroDigests.shared.sha256(of: r.length) else {
                    throw bad("is zero-fill but its digest is not that of \(r.length) zero bytes")
                }
            case .free:
                guard r.storedLength == 0, r.storedOffset == 0, codec == .ignore, r.sha256 == Self.noDigest else {
                    throw bad("is free space but carries stored bytes or a digest")
                }
            }
            at = end
        }
        guard at == diskBytes else { throw .badChunkRecord(index: records.count, firstByte: at, "chunks end before the disk does") }
        self.diskBytes = diskBytes
        self.records = records
        identity = Self.identity(diskBytes: diskBytes, records: records)
    }

    static func identity(diskBytes: UInt64, records: [ChunkRecord]) -> [UInt8] {
        var hasher = SHA256()
        var head = ByteWriter(count: identityLabel.count + 16)
        head.put(0, identityLabel)
        head.u64(identityLabel.count, diskBytes)
        head.u64(identityLabel.count + 8, UInt64(records.count))
        hasher.update(data: head.bytes)
        var e = ByteWriter(count: 69)
        for r in records {
            e.u64(0, r.diskOffset)
            e.u64(8, r.length)
            e.put(16, [r.kind.rawValue])
            e.u32(17, r.codec)
            e.u64(21, r.storedOffset)
            e.u64(29, r.storedLength)
            e.put(37, r.sha256)
            hasher.update(data: e.bytes)
        }
        return Array(hasher.finalize())
    }

    /// Whether `decoded` is what chunk `index` must put on the disk. Free space has no bytes
    /// to compare, so it never matches: callers never write it as data.
    public func matches(_ index: Int, _ decoded: UnsafeRawBufferPointer) -> Bool {
        let r = records[index]
        guard r.kind != .free, UInt64(decoded.count) == r.length else { return false }
        return Array(SHA256.hash(data: decoded)) == r.sha256
    }

    public func matches(_ index: Int, _ decoded: [UInt8]) -> Bool {
        decoded.withUnsafeBytes { matches(index, $0) }
    }
}

/// SHA-256 of runs of zeros, remembered by length: images have many equal zero chunks. The
/// hash state after every 64 MiB of zeros is kept too, so a table of many long runs costs its
/// longest run once, not each run again (a hostile table cannot make the check quadratic).
public final class ZeroDigests: Sendable {
    public static let shared = ZeroDigests()
    /// Longest zero run a table may hold: its digest costs about 40 s of hashing once.
    public static let maxLength: UInt64 = 64 << 30
    static let step: UInt64 = 64 << 20
    private let known = Locked<[UInt64: [UInt8]]>([:])
    private let states = Locked<[UInt64: HashState]>([0: HashState(hasher: SHA256())])

    /// swift-crypto's SHA256 is a plain value of hash state, not marked Sendable on Linux;
    /// it is only ever copied in and out under the lock, never shared.
    private struct HashState: @unchecked Sendable { var hasher: SHA256 }

    public func sha256(of length: UInt64) -> [UInt8] {
        if let d = known.withLock({ $0[length] }) { return d }
        var at = min(length / Self.step, states.withLock { $0.keys.max() ?? 0 } / Self.step) * Self.step
        let saved = states.withLock { $0[at] }
        var h = saved?.hasher ?? SHA256()
        if saved == nil { at = 0 }
        while at < length {
            let n = min(Self.step - at % Self.step, length - at)
            var left = n
            while left > 0 {
                let k = Int(min(left, UInt64(sharedZeroBytes.count)))
                h.update(bufferPointer: UnsafeRawBufferPointer(rebasing: sharedZeroBytes[0..<k]))
                left -= UInt64(k)
            }
            at += n
            if at % Self.step == 0 {
                let state = HashState(hasher: h), key = at
                states.withLock { $0[key] = state }
            }
        }
        let digest = Array(h.finalize())
        known.withLock { $0[length] = digest }
        return digest
    }
}
