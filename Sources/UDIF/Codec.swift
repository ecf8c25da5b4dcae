import CBzip2
import CDeflate
import CLzma

/// Decoding and encoding of chunk payloads. Every decoder produces exactly the chunk's
/// sector count in bytes or fails; none allocates more than that.
public enum Codec {
    public static func decode(_ type: ChunkType, _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        switch type {
        case .zlib: try inflateZlib(input, into: output)
        case .bzip2: try decodeBzip2(input, into: output)
        case .lzma: try decodeXZ(input, into: output)
        case .adc: try ADC.decode(input, into: output)
        case .raw:
            guard input.count == output.count else {
                throw UDIFError.corruptChunk(codec: "raw", .wrongLength(got: input.count, want: output.count))
            }
            output.copyMemory(from: input)
        case .lzfse:
            let n = try LZFSE.decode(input, into: output)
            guard n == output.count else { throw sizeError("lzfse", got: n, want: output.count) }
        default: throw UDIFError.unsupportedChunkType(type)
        }
    }

    static func sizeError(_ codec: String, got: Int, want: Int) -> UDIFError {
        UDIFError.corruptChunk(codec: codec, .wrongLength(got: got, want: want))
    }

    static func inflateZlib(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        guard let d = libdeflate_alloc_decompressor() else { throw UDIFError.corruptChunk(codec: "zlib", .outOfMemory) }
        defer { libdeflate_free_decompressor(d) }
        var produced = 0
        let r = libdeflate_zlib_decompress(d, input.baseAddress, input.count, output.baseAddress, output.count, &produced)
        switch r {
        case LIBDEFLATE_SUCCESS:
            guard produced == output.count else { throw sizeError("zlib", got: produced, want: output.count) }
        case LIBDEFLATE_INSUFFICIENT_SPACE:
            throw UDIFError.corruptChunk(codec: "zlib", .overflows(capacity: output.count))
        default:
            throw UDIFError.corruptChunk(codec: "zlib", .corrupt)
        }
    }

    static func decodeBzip2(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        guard input.count <= Int(UInt32.max), output.count <= Int(UInt32.max) else { throw UDIFError.corruptChunk(codec: "bzip2", .tooLarge) }
        var produced = UInt32(output.count)
        let r = BZ2_bzBuffToBuffDecompress(
            output.baseAddress?.assumingMemoryBound(to: CChar.self), &produced,
            UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: CChar.self)),
            UInt32(input.count), 0, 0)
        switch r {
        case BZ_OK:
            guard Int(produced) == output.count else { throw sizeError("bzip2", got: Int(produced), want: output.count) }
        case BZ_OUTBUFF_FULL: throw UDIFError.corruptChunk(codec: "bzip2", .overflows(capacity: output.count))
        case BZ_MEM_ERROR: throw UDIFError.corruptChunk(codec: "bzip2", .outOfMemory)
        default: throw UDIFError.corruptChunk(codec: "bzip2", .corrupt)
        }
    }

    static func decodeXZ(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer) throws {
        var memlimit: UInt64 = 256 << 20
        var inPos = 0
        var outPos = 0
        let r = lzma_stream_buffer_decode(
            &memlimit, 0, nil,
            input.baseAddress?.assumingMemoryBound(to: UInt8.self), &inPos, input.count,
            output.baseAddress?.assumingMemoryBound(to: UInt8.self), &outPos, output.count)
        switch r {
        case LZMA_OK:
            guard outPos == output.count else { throw sizeError("xz", got: outPos, want: output.count) }
        case LZMA_BUF_ERROR where outPos == output.count:
            throw UDIFError.corruptChunk(codec: "xz", .overflows(capacity: output.count))
        case LZMA_BUF_ERROR: throw UDIFError.corruptChunk(codec: "xz", .truncated)
        case LZMA_MEMLIMIT_ERROR, LZMA_MEM_ERROR: throw UDIFError.corruptChunk(codec: "xz", .outOfMemory)
        default: throw UDIFError.corruptChunk(codec: "xz", .corrupt)
        }
    }

    /// A zlib stream at `level` (libdeflate levels 1...12), or nil when it would not be
    /// smaller than the input.
    public static func compressZlib(_ input: UnsafeRawBufferPointer, level: Int32) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: input.count)
        guard let n = out.withUnsafeMutableBytes({ compressZlib(input, level: level, into: $0) }) else { return nil }
        out.removeSubrange(n...)
        return out
    }

    /// Whether a chunk looks incompressible (media, archives, encrypted or random data): three
    /// 16 KiB samples, from its start, middle and end, that libdeflate's fastest level cannot
    /// shrink by 2%. Such a chunk is stored raw without a full compression at the image's level,
    /// which on random data costs about as much as compressing text and saves nothing.
    public static func looksIncompressible(_ input: UnsafeRawBufferPointer) -> Bool {
        let sample = 16 << 10
        guard input.count >= 4 * sample, let c = libdeflate_alloc_compressor(1) else { return false }
        defer { libdeflate_free_compressor(c) }
        var out = [UInt8](repeating: 0, count: sample)
        return out.withUnsafeMutableBytes { out in
            [0, input.count / 2 - sample / 2, input.count - sample].allSatisfy { at in
                let n = libdeflate_deflate_compress(c, input.baseAddress! + at, sample, out.baseAddress, out.count)
                return n == 0 || n * 100 >= sample * 98
            }
        }
    }

    /// Compresses into `output`; the stream's length, or nil when it would not be smaller
    /// than the input (the chunk is then stored raw).
    public static func compressZlib(_ input: UnsafeRawBufferPointer, level: Int32, into output: UnsafeMutableRawBufferPointer) -> Int? {
        guard let c = libdeflate_alloc_compressor(level) else { return nil }
        defer { libdeflate_free_compressor(c) }
        let room = min(output.count, input.count)
        let n = libdeflate_zlib_compress(c, input.baseAddress, input.count, output.baseAddress, room)
        return n > 0 && n < input.count ? n : nil
    }

    /// A bzip2 stream at `level` (block size, 1...9 × 100 kB) into `output`; nil as for zlib.
    public static func compressBzip2(_ input: UnsafeRawBufferPointer, level: Int32 = 9, into output: UnsafeMutableRawBufferPointer) -> Int? {
        guard input.count < Int(UInt32.max) else { return nil }
        var produced = UInt32(min(output.count, input.count))
        let r = BZ2_bzBuffToBuffCompress(
            output.baseAddress?.assumingMemoryBound(to: CChar.self), &produced,
            UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: CChar.self)),
            UInt32(input.count), level, 0, 0)
        return r == BZ_OK && Int(produced) < input.count ? Int(produced) : nil
    }

    /// How ULMO chunks are encoded: one XZ stream each, one LZMA2 block, no integrity check
    /// (hdiutil's chunks carry none; the blkx CRC-32 covers the data).
    public struct XZSettings: Sendable, Equatable {
        /// liblzma preset 0...9.
        public var preset: UInt32
        public var extreme: Bool
        /// The LZMA2 dictionary; a dictionary larger than the chunk buys nothing.
        public var dictionarySize: UInt32

        public init(preset: UInt32 = 9, extreme: Bool = true, dictionarySize: UInt32 = 1 << 20) {
            self.preset = preset
            self.extreme = extreme
            self.dictionarySize = dictionarySize
        }

        func options() -> lzma_options_lzma? {
            var options = lzma_options_lzma()
            guard lzma_lzma_preset(&options, preset | (extreme ? asr_LZMA_PRESET_EXTREME : 0)) == 0 else { return nil }
            options.dict_size = max(dictionarySize, 4096)
            return options
        }

        /// Bytes one encoder allocates, to bound how many run at once.
        public var encoderMemory: UInt64 {
            guard var options = options() else { return 0 }
            return withUnsafeMutablePointer(to: &options) { p in
                var filters = [lzma_filter(id: asr_LZMA_FILTER_LZMA2, options: p), lzma_filter(id: asr_LZMA_VLI_UNKNOWN, options: nil)]
                return lzma_raw_encoder_memusage(&filters)
            }
        }
    }

    /// An XZ stream (check type none, as hdiutil writes) into `output`; nil as for zlib.
    public static func compressXZ(_ input: UnsafeRawBufferPointer, _ settings: XZSettings, into output: UnsafeMutableRawBufferPointer) -> Int? {
        guard var options = settings.options() else { return nil }
        var produced = 0
        let r = withUnsafeMutablePointer(to: &options) { p in
            var filters = [lzma_filter(id: asr_LZMA_FILTER_LZMA2, options: p), lzma_filter(id: asr_LZMA_VLI_UNKNOWN, options: nil)]
            return lzma_stream_buffer_encode(
                &filters, LZMA_CHECK_NONE, nil,
                input.baseAddress?.assumingMemoryBound(to: UInt8.self), input.count,
                output.baseAddress?.assumingMemoryBound(to: UInt8.self), &produced, min(output.count, input.count))
        }
        return r == LZMA_OK && produced < input.count ? produced : nil
    }
}
