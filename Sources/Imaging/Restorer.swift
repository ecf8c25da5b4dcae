import SystemSupport
import Crypto
import Foundation
import UDIF

/// `asr restore`: writes a source disk onto a target device or file, then reads the target
/// back and checks it against the source's scan. Zero runs are not written to a new file
/// (it stays sparse) and are zeroed on devices with BLKZEROOUT. Free space (UDIF ignore
/// runs) is neither written nor verified: the target keeps what it held there, unless
/// `eraseFree`. Chunks of a scanned UDIF source are checked before they are written. If
/// anything fails after writing began, the target's first and last MiB are wiped so it cannot
/// pass for a good disk.
///
/// `incremental`: the target is read first (`TargetSurvey`) and every chunk it already holds
/// is neither fetched nor written; the target is never emptied, so what it held is kept
/// wherever it was right. Verification still reads back the whole disk.
public struct Restorer {
    public var reporter: Reporter
    public var verify = true
    /// The block map of a raw source or device, when it is not the source's sidecar.
    public var blockMapPath: String?
    /// Asked before erasing; nil means erase without asking (--noprompt).
    public var confirmErase: ((String) throws -> Bool)?
    /// Zero the image's free space on the target too, and verify it reads as zeros.
    public var eraseFree = false
    /// Keys one of which must have signed the source; with any (or a pin), `verify` is always
    /// on (a signature over chunk digests that nobody checks would vouch for nothing).
    public var trusted = TrustedKeys()
    /// The only image to accept, by identity.
    public var pin: IdentityPin?
    /// Keep what the target already holds: fetch and write only the chunks it lacks.
    public var incremental = false

    public init(reporter: Reporter) { self.reporter = reporter }

    private enum Unit {
        case chunk(Int)      // a UDIF chunk
        /// UDIF chunks whose stored bytes lie back to back, fetched with one read (one HTTP
        /// range request) by an incremental restore from a remote source.
        case chunks(Range<Int>)
        /// A raw source's chunk (`RawChunkDigests`), checked before it is written.
        case rawChunk(Int)
        /// Raw bytes: offset, length, and the index of the block map's range they belong to.
        case copy(UInt64, UInt64, range: Int?)
        case zero(UInt64, UInt64, range: Int?)
    }

    private enum Produced: Sendable {
        case data([UInt8])
        /// A decoded chunk in a pooled buffer: no page faults for a fresh 1 MiB each time.
        case decoded(DecodedChunk)
        /// Chunks of a merged read, each with its disk offset.
        case decodedRun([(offset: UInt64, chunk: DecodedChunk)])
        case zero
        /// Free space: left as it is, or zeroed with `eraseFree`.
        case free
    }

    /// Returns, for an incremental restore, what the target held and what was fetched.
    @discardableResult
    public func restore(source sourcePath: String, target targetPath: String) throws -> TargetComparison? {
        // Open the source first: the target check needs to know what the source is.
        let source = try ImageSource.open(sourcePath)
        var target = try reporter.step("Validating target") { try RestoreTarget.validate(targetPath, source: source) }
        // An incremental restore never empties the target: what it holds is what it reuses.
        target.keepsContents = incremental || (!eraseFree && (source.udif?.chunks.contains { $0.type == .ignore } ?? false))
        let diskBytes = source.bytes.byteCount
        reporter.step("Validating source") {}
        if let confirmErase, try !confirmErase(targetPath) { throw ImagingError.cancelled(target: targetPath) }
        let plan = try reporter.step("Retrieving scan information") { try VerificationPlan(ifScanned: source, blockMap: blockMapPath, eraseFree: eraseFree) }
        if plan == nil && incremental { throw ImagingError.cannotCompare(path: sourcePath) }
        let verify = self.verify || !trusted.isEmpty || pin != nil
        if plan == nil && verify {
            throw ImagingError.notScanned(path: sourcePath, restoring: trusted.isEmpty && pin == nil)
        }
        try plan?.check(pin: pin, trusted: trusted, source: sourcePath)
        var units = try reporter.step("Validating sizes") { () throws -> [Unit] in
            try target.checkFits(diskBytes)
            let units = workUnits(source, plan: plan)
            if !incremental { try checkSpace(for: units, source: source, target: target, plan: plan) }
            return units
        }
        var comparison: TargetComparison?
        if incremental, let plan {
            let found = try TargetSurvey(reporter: reporter).held(in: targetPath, ranges: plan.ranges)
            // What the target holds is left out of the work altogether: held units would fill
            // the pipeline's window and leave fewer fetches in flight.
            units.removeAll { Self.isHeld($0, found) }
            try checkSpace(for: units, source: source, target: target, plan: plan)
            if let image = source.udif, source.isRemote { units = Self.mergingReads(units, image: image) }
            let counts = TargetComparison(source: source, target: targetPath, plan: plan, held: found)
            reporter.info(counts.restorePlan)
            comparison = counts
        }

        // Chunks are checked against the table before they are written whether or not the
        // target is read back afterwards (building the plan made a UDIF source check itself).
        let check = verify ? plan.map { plan in (ranges: plan.ranges, mismatch: { @Sendable in plan.mismatch($0, .source) }) } : nil
        try target.restore(diskBytes: diskBytes, verifying: check, reporter: reporter) { file, verifier in
            try write(units, from: source, plan: plan, to: file, target: target, verifier: verifier)
        }
        return comparison
    }

    /// Refuses a file target whose filesystem cannot take the data the restore writes (zero
    /// runs become holes; chunks the target holds are not written).
    private func checkSpace(for units: [Unit], source: ImageSource, target: RestoreTarget, plan: VerificationPlan?) throws {
        let needed = units.reduce(UInt64(0)) { sum, unit in
            switch unit {
            case .chunk(let i): source.udif!.chunks[i].type.hasStoredData ? sum + source.udif!.chunks[i].length : sum
            case .chunks(let r): r.reduce(sum) { $0 + source.udif!.chunks[$1].length }
            case .copy(_, let n, _): sum + n
            case .rawChunk(let i): plan.flatMap { $0.table }.map { $0.records[i].kind == .data ? sum + $0.records[i].length : sum } ?? sum
            case .zero: sum
            }
        }
        if let free = target.availableBytes(), free < needed {
            throw ImagingError.unusableTarget(path: target.path, .notEnoughSpace(needed: needed, free: free))
        }
    }

    private static func isHeld(_ unit: Unit, _ held: [Bool]) -> Bool {
        switch unit {
        case .chunk(let i), .rawChunk(let i): return held[i]
        case .copy(_, _, let r?), .zero(_, _, let r?): return held[r]
        case .chunks, .copy, .zero: return false
        }
    }

    /// Runs of chunks to fetch whose stored bytes are back to back become one read, so a
    /// remote source gets one range request per run instead of one per chunk. A run stops at
    /// 8 chunks, 4 MiB stored or 8 MiB decoded: several runs stay in flight at once, and
    /// memory stays bounded.
    private static func mergingReads(_ units: [Unit], image: UDIFImage) -> [Unit] {
        var out: [Unit] = []
        var run: Range<Int>?
        func flush() {
            if let r = run { out.append(r.count == 1 ? .chunk(r.lowerBound) : .chunks(r)) }
            run = nil
        }
        for unit in units {
            guard case .chunk(let i) = unit, image.chunks[i].type.hasStoredData else {
                flush()
                out.append(unit)
                continue
            }
            if let r = run {
                let last = image.chunks[r.upperBound - 1], c = image.chunks[i]
                let stored = c.fileOffset + c.storedLength - image.chunks[r.lowerBound].fileOffset
                let decoded = c.diskOffset + c.length - image.chunks[r.lowerBound].diskOffset
                if r.upperBound == i, last.fileOffset + last.storedLength == c.fileOffset,
                   r.count < 8, stored <= 4 << 20, decoded <= 8 << 20 {
                    run = r.lowerBound..<(i + 1)
                    continue
                }
                flush()
            }
            run = i..<(i + 1)
        }
        flush()
        return out
    }

    /// The restore as work units in disk order.
    private func workUnits(_ source: ImageSource, plan: VerificationPlan?) -> [Unit] {
        if let image = source.udif { return image.chunks.indices.map { .chunk($0) } }
        if let table = plan?.table {
            return table.records.indices.map { table.records[$0].kind == .data ? .rawChunk($0) : .zero(table.records[$0].diskOffset, table.records[$0].length, range: $0) }
        }
        let blockMap = plan?.blockMap
        let size = source.bytes.byteCount
        var units: [Unit] = []
        func copy(_ offset: UInt64, _ length: UInt64, range: Int?) {
            var at = offset
            while at < offset + length {
                let n = min(1 << 20, offset + length - at)
                units.append(.copy(at, n, range: range))
                at += n
            }
        }
        if let blockMap {
            for (i, r) in blockMap.expectations.enumerated() {
                if r.sha256 == nil { units.append(.zero(r.offset, r.length, range: i)) } else { copy(r.offset, r.length, range: i) }
            }
        } else {
            copy(0, size, range: nil)
        }
        return units
    }

    private func write(_ units: [Unit], from source: ImageSource, plan: VerificationPlan?, to file: FileIO, target: RestoreTarget,
                       verifier: TrailingVerifier?) throws {
        let total = source.bytes.byteCount
        let reader = UnitReader(image: source.udif, bytes: source.bytes, plan: plan)
        var writer = TargetWriter(file: file, target: target)
        let remote = source.isRemote
        let workers = remote ? 8 : ProcessInfo.processInfo.activeProcessorCount
        // A remote source: few results wait beyond those in flight, so little is fetched and
        // not yet written when a restore is killed (and merged reads hold 8 chunks each).
        let window = remote ? workers + 2 : nil
        reporter.begin("\tRestoring  ", key: "restore")
        defer { reporter.abandon() }
        try orderedParallelMap(count: units.count, workers: workers, window: window, ownThreads: remote) { u in
            try reader.read(units[u])
        } consume: { u, produced in
            let (offset, length) = reader.span(units[u])
            switch produced {
            case .data(let d): try d.withUnsafeBytes { try writer.put($0, at: offset) }
            case .decoded(let d): try writer.put(d.bytes, at: offset)
            case .decodedRun(let run):
                for d in run { try writer.put(d.chunk.bytes, at: d.offset) }
            case .zero:
                try writer.zero(offset, length)
            case .free:
                if eraseFree { try writer.zero(offset, length) }
            }
            try verifier?.written(upTo: writer.pendingZeroStart ?? offset + length)
            reporter.update(offset + length, of: total)
        }
        try writer.flushZeros()
        try verifier?.written(upTo: total)
        reporter.end()
    }

    /// Reads one work unit from the source and checks it: what goes at the unit's place on the
    /// target. UDIF chunks are checked by the image itself (`UDIFImage.requireDigests`); a raw
    /// source's chunks against its table here.
    private struct UnitReader: Sendable {
        let image: UDIFImage?
        let bytes: any ByteSource
        let plan: VerificationPlan?

        /// Where `unit` lands on the disk.
        func span(_ unit: Unit) -> (offset: UInt64, length: UInt64) {
            switch unit {
            case .chunk(let i): return (image!.chunks[i].diskOffset, image!.chunks[i].length)
            case .chunks(let r):
                let first = image!.chunks[r.lowerBound], last = image!.chunks[r.upperBound - 1]
                return (first.diskOffset, last.diskOffset + last.length - first.diskOffset)
            case .copy(let o, let n, _), .zero(let o, let n, _): return (o, n)
            case .rawChunk(let i): return (plan!.table!.records[i].diskOffset, plan!.table!.records[i].length)
            }
        }

        func read(_ unit: Unit) throws -> Produced {
            do {
                switch unit {
                case .zero: return .zero
                case .chunk(let i): return try chunk(i)
                case .chunks(let run): return try chunks(run)
                case .rawChunk(let i): return try rawChunk(i)
                case .copy(let offset, let length, _):
                    let data = try bytes.read(at: offset, count: Int(length))
                    return data.withUnsafeBytes(isAllZero) ? .zero : .data(data)
                }
            } catch UDIFError.inChunk(let i, _, _, _, .digestMismatch) {
                throw ImagingError.damagedSource(image!.mismatch(inChunk: i, against: .scan))
            }
        }

        private func chunk(_ i: Int) throws -> Produced {
            switch image!.chunks[i].type {
            case .ignore: return .free  // nothing read: over HTTP, nothing fetched
            case .zeroFill: return .zero  // its digest was checked to be that of zeros
            default: return .decoded(try image!.decodedChunk(i))
            }
        }

        /// Chunks stored back to back, read at once (one range request) and decoded one by one.
        private func chunks(_ run: Range<Int>) throws -> Produced {
            let image = image!, chunks = image.chunks
            let start = chunks[run.lowerBound].fileOffset
            let end = chunks[run.upperBound - 1].fileOffset + chunks[run.upperBound - 1].storedLength
            return try ScratchBuffers.borrow(Int(end - start)) { stored in
                try image.file.read(into: stored, at: start)
                return .decodedRun(try run.map { i in
                    let at = Int(chunks[i].fileOffset - start)
                    let decoded = DecodedChunk(count: Int(chunks[i].length))
                    try image.decode(i, from: UnsafeRawBufferPointer(rebasing: stored[at..<(at + Int(chunks[i].storedLength))]),
                                     into: decoded.storage)
                    return (chunks[i].diskOffset, decoded)
                })
            }
        }

        private func rawChunk(_ i: Int) throws -> Produced {
            let plan = plan!, r = plan.table!.records[i]
            let chunk = DecodedChunk(count: Int(r.length))
            try bytes.read(into: chunk.storage, at: r.diskOffset)
            guard plan.table!.matches(i, chunk.bytes) else { throw ImagingError.damagedSource(plan.mismatch(i, .scan)) }
            return .decoded(chunk)
        }
    }

    /// Puts bytes on the target in disk order; runs of zeros are merged and zeroed at once
    /// (holes in a new file, BLKZEROOUT on a device) before the next bytes are written.
    private struct TargetWriter {
        let file: FileIO
        let target: RestoreTarget
        var writeback: WritebackTrigger
        private var pendingZero: (offset: UInt64, length: UInt64)?

        init(file: FileIO, target: RestoreTarget) {
            self.file = file
            self.target = target
            writeback = WritebackTrigger(file: file)
        }

        /// Where zeros not yet written begin: the target is not done before there.
        var pendingZeroStart: UInt64? { pendingZero?.offset }

        mutating func put(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
            try flushZeros()
            try file.write(bytes, at: offset)
            writeback.wrote(upTo: offset + UInt64(bytes.count))
        }

        mutating func zero(_ offset: UInt64, _ length: UInt64) throws {
            if let z = pendingZero, z.offset + z.length == offset {
                pendingZero = (z.offset, z.length + length)
            } else {
                try flushZeros()
                pendingZero = (offset, length)
            }
        }

        mutating func flushZeros() throws {
            if let z = pendingZero { try target.zero(file, offset: z.offset, length: z.length) }
            pendingZero = nil
        }
    }
}
