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
        guard let c = libdeflate_alloc_compressor(level) else { return nil }
        defer { libdeflate_free_compressor(c) }
        var out = [UInt8](repeating: 0, count: input.count)
        let n = out.withUnsafeMutableBytes { libdeflate_zlib_compress(c, input.baseAddress, input.count, $0.baseAddress, $0.count) }
        guard n > 0, n < input.count else { return nil }
        out.removeSubrange(n...)
        return out
    }
}
