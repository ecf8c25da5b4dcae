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

    public init(reporter: Reporter) { self.reporter = reporter }

    private enum Unit {
        case chunk(Int)      // a UDIF chunk
        case copy(UInt64, UInt64)   // raw bytes: offset, length
        case zero(UInt64, UInt64)
    }

    private enum Produced: Sendable {
        case data([UInt8])
        /// A decoded chunk in a pooled buffer: no page faults for a fresh 1 MiB each time.
        case decoded(DecodedChunk)
        case zero
        /// Free space: left as it is, or zeroed with `eraseFree`.
        case free
    }

    public func restore(source sourcePath: String, target targetPath: String) throws {
        // Open the source first: the target check needs to know what the source is.
        let source = try ImageSource.open(sourcePath)
        var target = try reporter.step("Validating target") { try RestoreTarget.validate(targetPath, source: source) }
        target.keepsContents = !eraseFree && (source.udif?.chunks.contains { $0.type == .ignore } ?? false)
        let diskBytes = source.bytes.byteCount
        reporter.step("Validating source") {}
        if let confirmErase, try !confirmErase(targetPath) { throw ImagingError.cancelled(target: targetPath) }
        let plan = try reporter.step("Retrieving scan information") { try VerificationPlan(ifScanned: source, blockMap: blockMapPath, eraseFree: eraseFree) }
        let verify = self.verify || !trusted.isEmpty || pin != nil
        if plan == nil && verify {
            throw ImagingError.notScanned(path: sourcePath, restoring: trusted.isEmpty && pin == nil)
        }
        try plan?.check(pin: pin, trusted: trusted, source: sourcePath)
        let units = try reporter.step("Validating sizes") { () throws -> [Unit] in
            try target.checkFits(diskBytes)
            let units = workUnits(source, blockMap: plan?.blockMap)
            let needed = units.reduce(UInt64(0)) { sum, unit in
                switch unit {
                case .chunk(let i): source.udif!.chunks[i].type.hasStoredData ? sum + source.udif!.chunks[i].length : sum
                case .copy(_, let n): sum + n
                case .zero: sum
                }
            }
            if let free = target.availableBytes(), free < needed {
                throw ImagingError.unusableTarget(path: targetPath, .notEnoughSpace(needed: needed, free: free))
            }
            return units
        }

        let checked = verify ? plan : nil
        let check = checked.map { plan in (ranges: plan.ranges, mismatch: { @Sendable in plan.mismatch($0, .source) }) }
        try target.restore(diskBytes: diskBytes, verifying: check, reporter: reporter) { file, verifier in
            try write(units, from: source, scan: checked?.scan, to: file, target: target, verifier: verifier)
        }
    }

    /// The restore as work units in disk order.
    private func workUnits(_ source: ImageSource, blockMap: BlockMap?) -> [Unit] {
        if let image = source.udif { return image.chunks.indices.map { .chunk($0) } }
        let size = source.bytes.byteCount
        var units: [Unit] = []
        func copy(_ offset: UInt64, _ length: UInt64) {
            var at = offset
            while at < offset + length {
                let n = min(1 << 20, offset + length - at)
                units.append(.copy(at, n))
                at += n
            }
        }
        if let blockMap {
            for r in blockMap.expectations {
                if r.sha256 == nil { units.append(.zero(r.offset, r.length)) } else { copy(r.offset, r.length) }
            }
        } else {
            copy(0, size)
        }
        return units
    }

    private func write(_ units: [Unit], from source: ImageSource, scan: ScanData?, to file: FileIO, target: RestoreTarget,
                       verifier: TrailingVerifier?) throws {
        let total = source.bytes.byteCount
        var writeback = WritebackTrigger(file: file)
        var pendingZero: (offset: UInt64, length: UInt64)?
        func flushZeros() throws {
            if let z = pendingZero { try target.zero(file, offset: z.offset, length: z.length) }
            pendingZero = nil
        }
        func zero(_ offset: UInt64, _ length: UInt64) throws {
            if let z = pendingZero, z.offset + z.length == offset {
                pendingZero = (z.offset, z.length + length)
            } else {
                try flushZeros()
                pendingZero = (offset, length)
            }
        }
        let image = source.udif
        let bytes = source.bytes
        let workers = source.path.contains("://") ? 8 : ProcessInfo.processInfo.activeProcessorCount
        reporter.begin("\tRestoring  ", key: "restore")
        defer { reporter.abandon() }
        try orderedParallelMap(count: units.count, workers: workers) { u -> Produced in
            switch units[u] {
            case .zero: return .zero
            case .chunk(let i):
                let c = image!.chunks[i]
                if c.type == .ignore { return .free }  // nothing read: over HTTP, nothing fetched
                if c.type == .zeroFill { return .zero }
                let decoded = try image!.decodedChunk(i)
                if let scan, Array(SHA256.hash(data: decoded.bytes)) != scan.chunks[i].sha256 {
                    throw ImagingError.damagedSource(image!.mismatch(inChunk: i, against: .scan))
                }
                return .decoded(decoded)
            case .copy(let offset, let length):
                let data = try bytes.read(at: offset, count: Int(length))
                return data.withUnsafeBytes(isAllZero) ? .zero : .data(data)
            }
        } consume: { u, produced in
            let (offset, length): (UInt64, UInt64) = switch units[u] {
            case .chunk(let i): (image!.chunks[i].diskOffset, image!.chunks[i].length)
            case .copy(let o, let n), .zero(let o, let n): (o, n)
            }
            func put(_ bytes: UnsafeRawBufferPointer) throws {
                try flushZeros()
                try file.write(bytes, at: offset)
                writeback.wrote(upTo: offset + length)
            }
            switch produced {
            case .data(let d): try d.withUnsafeBytes(put)
            case .decoded(let d): try put(d.bytes)
            case .zero:
                try zero(offset, length)
            case .free:
                if eraseFree { try zero(offset, length) }
            }
            try verifier?.written(upTo: pendingZero?.offset ?? offset + length)
            reporter.update(offset + length, of: total)
        }
        try flushZeros()
        try verifier?.written(upTo: total)
        reporter.end()
    }
}
