import SystemSupport
import Crypto
import Foundation
import Synchronization
import UDIF

/// SHA-256 of the whole disk, of each partition and of each block-map range, made in one
/// ordered pass over the disk (chunks decoded on all cores). For a UDIF image the same pass
/// checks every chunk against its CRC-32 and, for a scanned image, its stored SHA-256.
struct DiskDigests: Sendable, Equatable {
    var disk: [UInt8]
    var partitions: [[UInt8]]
    var ranges: [[UInt8]]
    /// Region CRC-32s computed from the data (UDIF only).
    var regionCRCs: [UInt32]?

    /// Byte ranges the pass hashes besides the whole disk; each list sorted, non-overlapping.
    struct Plan: Sendable {
        var diskBytes: UInt64
        var partitions: [(offset: UInt64, length: UInt64)]
        var ranges: [(offset: UInt64, length: UInt64)]
    }

    static let placeholder = [UInt8](repeating: 0, count: 32)

    /// Stand-ins of the right shape, to size files before the pass has run.
    static func placeholders(for plan: Plan) -> DiskDigests {
        DiskDigests(disk: placeholder, partitions: plan.partitions.map { _ in placeholder },
                    ranges: plan.ranges.map { _ in placeholder }, regionCRCs: nil)
    }

    static func compute(_ plan: Plan, disk: any ByteSource, udif: UDIFImage?, scan: ScanData?) throws -> DiskDigests {
        var sink = DigestSink(plan)
        if let udif {
            var crcs = [UInt32](repeating: 0, count: udif.regions.count)
            try orderedParallelMap(count: udif.chunks.count) { i -> [UInt8]? in
                let c = udif.chunks[i]
                guard c.type.hasStoredData else { return nil }
                let bytes = try udif.decodeChunk(i)
                if let expected = scan?.chunks[i].sha256, Array(SHA256.hash(data: bytes)) != expected {
                    throw ImageFSError.chunkSHA256Mismatch(index: i, chunk: udif.describe(chunk: i))
                }
                return bytes
            } consume: { i, bytes in
                udif.addRegionCRC(udif.regionCRC(of: i, decoded: bytes), of: i, to: &crcs)
                if let bytes { sink.feed(bytes) } else { sink.feedZeros(udif.chunks[i].length) }
            }
            var result = sink.finish()
            result.regionCRCs = crcs
            if let expected = scan?.diskSHA256, result.disk != expected {
                throw ImageFSError.diskSHA256Mismatch
            }
            return result
        }
        let piece: UInt64 = 1 << 20
        let count = Int((plan.diskBytes + piece - 1) / piece)
        try orderedParallelMap(count: count) { p -> [UInt8] in
            let offset = UInt64(p) * piece
            return try disk.read(at: offset, count: Int(min(piece, plan.diskBytes - offset)))
        } consume: { _, bytes in
            sink.feed(bytes)
        }
        return sink.finish()
    }
}

/// Feeds the disk's bytes, in order, to the whole-disk hasher and to the hasher of whichever
/// partition and block-map range each byte falls in.
struct DigestSink {
    private var disk = SHA256()
    private var groups: [RangeHashers]
    private var position: UInt64 = 0
    private static let zeros = [UInt8](repeating: 0, count: 1 << 20)

    init(_ plan: DiskDigests.Plan) {
        groups = [RangeHashers(plan.partitions), RangeHashers(plan.ranges)]
    }

    mutating func feed(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { feed($0) }
    }

    mutating func feedZeros(_ count: UInt64) {
        var left = count
        while left > 0 {
            let n = Int(min(left, UInt64(Self.zeros.count)))
            Self.zeros.withUnsafeBytes { feed(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            left -= UInt64(n)
        }
    }

    private mutating func feed(_ bytes: UnsafeRawBufferPointer) {
        disk.update(bufferPointer: bytes)
        for g in groups.indices { groups[g].feed(bytes, at: position) }
        position += UInt64(bytes.count)
    }

    mutating func finish() -> DiskDigests {
        DiskDigests(disk: Array(disk.finalize()), partitions: groups[0].finish(), ranges: groups[1].finish(), regionCRCs: nil)
    }
}

/// Hashers for a sorted list of non-overlapping byte ranges, fed in disk order.
struct RangeHashers {
    private let ranges: [(offset: UInt64, length: UInt64)]
    private var digests: [[UInt8]] = []
    private var current = SHA256()
    private var index = 0

    init(_ ranges: [(offset: UInt64, length: UInt64)]) { self.ranges = ranges }

    mutating func feed(_ bytes: UnsafeRawBufferPointer, at start: UInt64) {
        let end = start + UInt64(bytes.count)
        while index < ranges.count {
            let r = ranges[index]
            let lo = max(start, r.offset)
            let hi = min(end, r.offset + r.length)
            if lo < hi { current.update(bufferPointer: UnsafeRawBufferPointer(rebasing: bytes[Int(lo - start)..<Int(hi - start)])) }
            guard r.offset + r.length <= end else { return }
            digests.append(Array(current.finalize()))
            current = SHA256()
            index += 1
        }
    }

    mutating func finish() -> [[UInt8]] {
        // Ranges of length zero, or past the fed bytes, still get a digest of what they saw.
        while digests.count < ranges.count {
            digests.append(Array(current.finalize()))
            current = SHA256()
        }
        return digests
    }
}

/// A value computed once, on first use, by whichever thread asks first; others wait.
final class Once<Value: Sendable>: Sendable {
    /// Held while computing, so the others wait for the one result.
    private let result: Locked<Result<Value, any Error>?>
    private let make: @Sendable () throws -> Value

    init(_ make: @escaping @Sendable () throws -> Value) {
        self.make = make
        result = Locked(nil)
    }

    init(ready value: Value) {
        make = { value }
        result = Locked(.success(value))
    }

    func value() throws -> Value {
        try result.withLock { slot in
            if slot == nil { slot = Result { try make() } }
            return slot!
        }.get()
    }
}
