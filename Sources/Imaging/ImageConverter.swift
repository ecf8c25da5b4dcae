import SystemPackage
import SystemSupport
import Foundation
import UDIF

/// `asr convert`: any source to UDZO, UDBZ, ULMO, UDRO or a raw disk image.
public struct ImageConverter {
    public enum Target: String, Sendable, CaseIterable {
        case udzo = "UDZO", udbz = "UDBZ", ulmo = "ULMO", udro = "UDRO", raw = "RAW"

        /// A `--format` value, in any case.
        public init(parsing text: String) throws(ImagingError) {
            guard let target = Target(rawValue: text.uppercased()) else {
                throw .unknownFormat(text, allowed: Self.allCases.map(\.rawValue))
            }
            self = target
        }

        /// The image format written; nil for a raw disk.
        public var imageFormat: ImageFormat? { ImageFormat(rawValue: rawValue) }
    }

    public var overwrite = false
    /// Chunk size of UDIF output (see `ImageCreator.chunkSizes`).
    public var chunkSize: UInt64 = 1 << 20
    public var zlibLevel: Int32 = 6
    public var reporter = Reporter(.quiet)

    public init() {}

    public func convert(source path: String, to target: Target, output: String) throws {
        var creator = ImageCreator()
        creator.overwrite = overwrite
        try creator.checkOutput(output, source: path, allowStreams: target == .raw)
        let source = try ImageSource.open(path)
        // A scanned source is decoded through its chunk table: a chunk that fails its digest
        // stops the conversion rather than going into the output.
        if source.udif != nil { try TrustedKeys().check(source, pin: nil) }
        if let format = target.imageFormat {
            creator.format = format
            creator.chunkSize = chunkSize
            creator.zlibLevel = zlibLevel
            creator.reporter = reporter
            // Free space stays free: the source's ignore chunks are neither read nor stored,
            // and what create found in each partition goes along.
            var free: [Range<UInt64>] = []
            for c in source.udif?.chunks ?? [] where c.type == .ignore {
                if let last = free.last, last.upperBound == c.diskOffset {
                    free[free.count - 1] = last.lowerBound..<(c.diskOffset + c.length)
                } else {
                    free.append(c.diskOffset..<(c.diskOffset + c.length))
                }
            }
            let usage = source.udif.flatMap { try? UsageData.stored(in: $0) }  // a damaged record is only lost
            _ = try creator.write(source.bytes, to: output, ignore: free, usage: usage)
        } else {
            reporter.begin("\tConverting  ", key: "convert")
            defer { reporter.abandon() }
            try RawWriter(reporter: reporter).write(source, to: output)
            reporter.end()
        }
    }
}

/// Writes a whole disk to a raw file or device. Chunks are decoded on all cores and written
/// in order; zero runs are left as holes in a new regular file instead of being written.
public struct RawWriter {
    public var reporter: Reporter

    public init(reporter: Reporter = Reporter(.quiet)) { self.reporter = reporter }

    public func write(_ source: ImageSource, to output: String) throws {
        var st = stat()
        let exists = stat(output, &st) == 0
        let type = st.st_mode & S_IFMT
        let total = source.bytes.byteCount
        if output == "-" || (exists && (type == S_IFIFO || type == S_IFCHR || type == S_IFSOCK)) {
            // A pipe or terminal: written front to back, zeros included.
            let file = output == "-" ? try FileIO(path: "/dev/stdout", flags: O_WRONLY) : try FileIO(path: output, flags: O_WRONLY)
            let stream = StreamWriter(file: file)
            try copy(source, into: stream, sparse: false)
        } else if exists && type == S_IFBLK {
            let file = try FileIO(path: output, flags: O_WRONLY)
            if try blockDeviceSize(file) < total {
                throw ImagingError.unusableOutput(path: output, "is smaller than the \(total)-byte disk")
            }
            try copy(source, into: file, sparse: false)
            try file.sync()
        } else {
            let partial = try TemporaryOutput(finalPath: output)
            defer { partial.discard() }
            try copy(source, into: partial.file, sparse: true, writeback: WritebackTrigger(file: partial.file))
            try partial.file.truncate(to: total)
            try partial.commit()
        }
    }

    private func copy(_ source: ImageSource, into file: some PositionalWriter, sparse: Bool,
                      writeback: WritebackTrigger? = nil) throws {
        var writeback = writeback
        let total = source.bytes.byteCount
        if let image = source.udif {
            // Decoded chunks wait in the window: large chunks (up to 64 MiB) mean fewer of them.
            let largest = image.chunks.lazy.filter { $0.type != .zeroFill && $0.type != .ignore }.map(\.length).max() ?? 1
            let workers = ProcessInfo.processInfo.activeProcessorCount
            let window = max(workers, min(workers * 3, Int((256 << 20) / max(largest, 1))))
            try orderedParallelMap(count: image.chunks.count, workers: workers, window: window) { i -> DecodedChunk? in
                let c = image.chunks[i]
                if c.type == .zeroFill || c.type == .ignore { return nil }
                return try image.decodedChunk(i)
            } consume: { i, decoded in
                let c = image.chunks[i]
                if let decoded {
                    try file.write(decoded.bytes, at: c.diskOffset)
                    writeback?.wrote(upTo: c.diskOffset + c.length)
                } else if !sparse {
                    try file.writeZeros(at: c.diskOffset, count: c.length)
                }
                reporter.update(c.diskOffset + c.length, of: total)
            }
        } else {
            let step: UInt64 = 1 << 20
            let count = Int((total + step - 1) / step)
            let bytes = source.bytes
            try orderedParallelMap(count: count) { i -> [UInt8]? in
                let at = UInt64(i) * step
                let chunk = try bytes.read(at: at, count: Int(min(step, total - at)))
                return sparse && chunk.withUnsafeBytes(isAllZero) ? nil : chunk
            } consume: { i, chunk in
                if let chunk {
                    try file.write(chunk, at: UInt64(i) * step)
                    writeback?.wrote(upTo: UInt64(i) * step + UInt64(chunk.count))
                }
                reporter.update(min(UInt64(i + 1) * step, total), of: total)
            }
        }
    }
}

/// Where decoded bytes go: a file or device at any offset, or a stream front to back.
protocol PositionalWriter {
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws
}

extension PositionalWriter {
    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Zeros written out, for outputs that cannot be left sparse.
    func writeZeros(at offset: UInt64, count: UInt64) throws {
        let zeros = [UInt8](repeating: 0, count: Int(min(count, 1 << 20)))
        var done: UInt64 = 0
        while done < count {
            let n = Int(min(UInt64(zeros.count), count - done))
            try zeros.withUnsafeBytes { try write(UnsafeRawBufferPointer(rebasing: $0[0..<n]), at: offset + done) }
            done += UInt64(n)
        }
    }
}

extension FileIO: PositionalWriter {}

/// Sequential output; callers write in order, so the offset only checks that.
final class StreamWriter: PositionalWriter {
    let file: FileIO
    private var position: UInt64 = 0

    init(file: FileIO) { self.file = file }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws {
        precondition(offset == position, "stream output must be written in order")
        var done = 0
        while done < buffer.count {
            do {
                done += try file.descriptor.write(UnsafeRawBufferPointer(rebasing: buffer[done...]))
            } catch { throw SystemError.write(path: file.path, offset: position + UInt64(done), error as? Errno ?? .ioError) }
        }
        position += UInt64(buffer.count)
    }
}
