import UDIF

/// The chunk codecs, each given an output buffer the size a chunk of that many sectors has.
enum CodecHarness {
    /// Sector counts come from the low 12 bits of the input's first two bytes: up to 2 MiB
    /// out, twice hdiutil's and our chunk size.
    static func sectors(_ r: inout InputReader) -> Int? { r.u16().map { $0 & 0xFFF } }

    static func chunk(_ type: ChunkType, _ input: [UInt8]) throws {
        var r = InputReader(input)
        guard let sectors = sectors(&r) else { return }
        let stored = r.rest()
        var out = [UInt8](repeating: 0, count: sectors * 512)
        _ = try? stored.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try Codec.decode(type, s, into: $0) } }
    }

    /// LZFSE decoded twice: into exactly the chunk's size (the careful copy paths) and into a
    /// roomier buffer (the wide copies that may overrun into slack). Both must agree.
    static func lzfse(_ input: [UInt8]) throws {
        var r = InputReader(input)
        guard let sectors = sectors(&r) else { return }
        try decodeBothWays(r.rest(), capacity: sectors * 512)
    }

    /// Input: u16 output size, then an LZVN payload, which goes into a `bvxn` block.
    static func lzvn(_ input: [UInt8]) throws {
        var r = InputReader(input)
        guard let size = r.u16() else { return }
        let payload = r.rest()
        var stream = Array("bvxn".utf8)
        stream.appendLittleEndian(UInt32(size))
        stream.appendLittleEndian(UInt32(payload.count))
        stream += payload + Array("bvx$".utf8)
        try decodeBothWays(stream, capacity: size)
    }

    static func decodeBothWays(_ stream: [UInt8], capacity: Int) throws {
        func decode(_ room: Int) -> [UInt8]? {
            var out = [UInt8](repeating: 0xA5, count: room)
            guard let n = try? stream.withUnsafeBytes({ s in try out.withUnsafeMutableBytes { try LZFSE.decode(s, into: $0) } }) else {
                return nil
            }
            return Array(out.prefix(n))
        }
        let exact = decode(capacity)
        let roomy = decode(capacity + 64)
        if let exact {
            try check(exact.count <= capacity, "lzfse decoded \(exact.count) bytes into \(capacity)")
            try check(roomy == exact, "lzfse decodes differently with room to spare")
        }
    }
}
