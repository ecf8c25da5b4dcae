import SystemSupport
import UDIF

/// Why a filesystem's allocation cannot be trusted; becomes `.unreadable(reason:)`.
enum FilesystemError: UserFacingError {
    /// A structure contradicts itself or the partition.
    case inconsistent(String)
    /// A read the structures ask for failed (past the partition, or the source failed).
    case unreadableBytes(offset: UInt64, count: UInt64, String)
    /// The filesystem is in a state its bitmap does not fully describe (a journal to replay).
    case unsafeState(String)
    /// libext2fs or libntfs-3g refused it; their words.
    case library(String)

    var description: String {
        switch self {
        case .inconsistent(let why): why
        case .unreadableBytes(let offset, let count, let why): "cannot read \(count) bytes at \(offset) of the partition: \(why)"
        case .unsafeState(let why): why
        case .library(let why): displayable(why)
        }
    }
}

/// The bytes of one partition: reads are relative to its start and never leave it.
struct Partition: Sendable {
    let source: any ByteSource
    let offset: UInt64
    let length: UInt64

    func read(into buffer: UnsafeMutableRawBufferPointer, at position: UInt64) throws(FilesystemError) {
        let count = UInt64(buffer.count)
        guard position <= length, count <= length - position else {
            throw .unreadableBytes(offset: position, count: count, "past the end of the \(length)-byte partition")
        }
        guard count > 0 else { return }
        do {
            try source.read(into: buffer, at: offset + position)
        } catch {
            throw .unreadableBytes(offset: position, count: count, "\(error)")
        }
    }

    func bytes(at position: UInt64, count: Int) throws(FilesystemError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: FilesystemError? = nil
        bytes.withUnsafeMutableBytes { buffer in
            do throws(FilesystemError) { try read(into: buffer, at: position) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Whether `text` is at `position`; false when the bytes cannot be read.
    func matches(_ text: String, at position: UInt64) -> Bool {
        let want = Array(text.utf8)
        return (try? bytes(at: position, count: want.count)) == want
    }
}

/// Allocated runs as they are found, then sorted, merged and cut to the partition.
struct Allocation {
    let length: UInt64
    private var runs: [Range<UInt64>] = []

    init(length: UInt64) { self.length = length }

    mutating func add(_ start: UInt64, count: UInt64) {
        guard start < length, count > 0 else { return }
        let end = count > length - start ? length : start + count
        if let last = runs.last, start >= last.lowerBound, start <= last.upperBound {
            runs[runs.count - 1] = last.lowerBound..<max(last.upperBound, end)
        } else {
            runs.append(start..<end)
        }
    }

    var ranges: [Range<UInt64>] {
        var merged: [Range<UInt64>] = []
        for r in runs.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, r.lowerBound <= last.upperBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        return merged
    }
}

/// Fields of on-disk structures. Callers read a fixed-size structure first; an index past
/// its end reads as zero rather than trapping.
extension Array where Element == UInt8 {
    func le(_ at: Int, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in stride(from: width - 1, through: 0, by: -1) { v = v << 8 | UInt64(at + k < count ? self[at + k] : 0) }
        return v
    }

    func be(_ at: Int, _ width: Int) -> UInt64 {
        var v: UInt64 = 0
        for k in 0..<width { v = v << 8 | UInt64(at + k < count ? self[at + k] : 0) }
        return v
    }

    func le16(_ at: Int) -> UInt64 { le(at, 2) }
    func le32(_ at: Int) -> UInt64 { le(at, 4) }
    func le64(_ at: Int) -> UInt64 { le(at, 8) }
    func be16(_ at: Int) -> UInt64 { be(at, 2) }
    func be32(_ at: Int) -> UInt64 { be(at, 4) }
    func be64(_ at: Int) -> UInt64 { be(at, 8) }
}

extension UInt64 {
    var isPowerOfTwo: Bool { self != 0 && self & (self - 1) == 0 }

    /// `self * other`, or nil past 2^64.
    func times(_ other: UInt64) -> UInt64? {
        let (v, overflow) = multipliedReportingOverflow(by: other)
        return overflow ? nil : v
    }
}
