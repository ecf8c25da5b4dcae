// TargetComparison: how a target differs from an image, chunk by chunk: the counts `asr compare`
// prints and an incremental restore reports.

import SystemSupport
import Foundation
import UDIF

/// What a target holds of an image, in the image's own units (UDIF chunks, or a raw image's
/// block-map ranges): the same, different, or free space, which is not compared. Of the
/// different ones, data must be fetched from the source (`fetch*`, with its stored size) and
/// zeros are written without fetching anything (`zero*`). Invariants: chunks = same +
/// different + free, different = fetch + zero; bytes likewise.
///
/// The JSON (`asr compare --json`) has exactly these keys.
public struct TargetComparison: Sendable, Codable, Equatable {
    public var source: String
    public var target: String
    /// "chunk" (a UDIF image) or "range" (a raw image's block map).
    public var unit: String
    public var diskBytes: UInt64
    public var chunks: Int
    public var bytes: UInt64
    public var sameChunks = 0
    public var sameBytes: UInt64 = 0
    public var differentChunks = 0
    public var differentBytes: UInt64 = 0
    public var fetchChunks = 0
    /// On-disk (decoded) bytes of the chunks to fetch.
    public var fetchBytes: UInt64 = 0
    /// What fetching them reads from the source: their stored (compressed) bytes.
    public var fetchStoredBytes: UInt64 = 0
    public var zeroChunks = 0
    public var zeroBytes: UInt64 = 0
    public var freeChunks = 0
    public var freeBytes: UInt64 = 0

    /// `held[i]`: the target holds `plan.ranges[i]`.
    init(source: ImageSource, target: String, plan: VerificationPlan, held: [Bool]) {
        let image = source.udif
        self.init(source: source.path, target: target, unit: image == nil ? "range" : "chunk", diskBytes: source.bytes.byteCount,
                  ranges: plan.ranges, held: held) { i in image.map { $0.chunks[i].storedLength } ?? plan.ranges[i].length }
    }

    /// `storedLength(i)`: what fetching range `i` reads from the source.
    package init(source: String, target: String, unit: String, diskBytes: UInt64, ranges: [ExpectedRange], held: [Bool],
                 storedLength: (Int) -> UInt64) {
        self.source = source
        self.target = target
        self.unit = unit
        self.diskBytes = diskBytes
        chunks = ranges.count
        bytes = ranges.reduce(0) { $0 + $1.length }
        for (i, r) in ranges.enumerated() {
            if r.unchecked {
                freeChunks += 1
                freeBytes += r.length
            } else if held[i] {
                sameChunks += 1
                sameBytes += r.length
            } else {
                differentChunks += 1
                differentBytes += r.length
                if r.sha256 == nil {
                    zeroChunks += 1
                    zeroBytes += r.length
                } else {
                    fetchChunks += 1
                    fetchBytes += r.length
                    fetchStoredBytes += storedLength(i)
                }
            }
        }
    }

    /// "1 chunk", "1,020 chunks".
    private func counted(_ n: Int) -> String { "\(grouped(n)) \(unit)\(n == 1 ? "" : "s")" }

    /// The last line of an incremental restore: what was reused and what was fetched.
    public var restoreSummary: String { describe(reused: "reused", fetched: "fetched", zeroed: "zeroed") }

    /// What an incremental restore is about to do, once the target has been read.
    public var restorePlan: String { describe(reused: "Reusing", fetched: "fetching", zeroed: "zeroing") }

    private func describe(reused: String, fetched: String, zeroed: String) -> String {
        var text = "\(reused) \(counted(sameChunks)) (\(ByteSize.format(sameBytes))); "
            + "\(fetched) \(counted(fetchChunks)) (\(ByteSize.format(fetchStoredBytes)) stored, \(ByteSize.format(fetchBytes)) on disk)"
        if zeroChunks > 0 { text += "; \(zeroed) \(counted(zeroChunks)) (\(ByteSize.format(zeroBytes)))" }
        return text
    }

    /// What `asr compare` prints.
    public func text() -> String {
        var lines = [
            "\tSame: \(counted(sameChunks)) (\(ByteSize.format(sameBytes)))",
            "\tDifferent: \(counted(differentChunks)) (\(ByteSize.format(differentBytes))): "
                + "\(grouped(fetchChunks)) to fetch (\(ByteSize.format(fetchStoredBytes)) stored), \(grouped(zeroChunks)) of zeros",
        ]
        if freeChunks > 0 { lines.append("\tFree space: \(counted(freeChunks)) (\(ByteSize.format(freeBytes))), not compared") }
        lines.append("asr: \"\(target)\" differs from \"\(source)\" in \(grouped(differentChunks)) of \(counted(chunks)); "
            + "a restore with --incremental would fetch \(ByteSize.format(fetchStoredBytes))")
        return lines.joined(separator: "\n") + "\n"
    }
}

/// 1,234,567: counts as people read them, whatever the locale.
func grouped(_ n: Int) -> String {
    let digits = Array(String(n))
    var out = ""
    for (i, d) in digits.enumerated() {
        if i > 0, (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(d)
    }
    return out
}
