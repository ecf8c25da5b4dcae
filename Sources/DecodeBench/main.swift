// DecodeBench: chunk decoding speed, for bench/lzfse.sh (never run by the tests, which assert
// no timings). Decodes every LZFSE chunk of the LZFSE fixture and every zlib chunk of the zlib
// fixture over and over for SECONDS each, and prints MB/s of decoded output, one thread.
// With a PREFIX, also PREFIX.lzfse and PREFIX.zlib: per chunk, 32-bit little-endian decoded
// and stored sizes, then the stored bytes.
//
//     DecodeBench FIXTURES_DIR SECONDS [PREFIX]

import Foundation
import UDIF

typealias Chunk = (stored: [UInt8], size: Int)

let args = CommandLine.arguments
guard args.count >= 3, let seconds = Double(args[2]) else {
    FileHandle.standardError.write(Data("usage: DecodeBench FIXTURES_DIR SECONDS [PREFIX]\n".utf8))
    exit(1)
}

func fixture(_ name: String, _ type: ChunkType) throws -> [Chunk] {
    let image = try UDIFImage(path: args[1] + "/" + name)
    return try image.chunks.indices.filter { image.chunks[$0].type == type }.map {
        (try image.storedBytes(of: $0), Int(image.chunks[$0].length))
    }
}

func file(_ path: String) throws -> [Chunk] {
    let b = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
    func u32(_ at: Int) -> Int { (0..<4).reduce(0) { $0 | Int(b[at + $1]) << (8 * $1) } }
    var chunks: [Chunk] = []
    var i = 0
    while i + 8 <= b.count {
        let size = u32(i), stored = u32(i + 4)
        chunks.append((Array(b[(i + 8)..<(i + 8 + stored)]), size))
        i += 8 + stored
    }
    return chunks
}

func rate(_ type: ChunkType, _ set: [Chunk]) throws -> Double {
    var out = [UInt8](repeating: 0, count: set.map(\.size).max() ?? 0)
    var bytes = 0
    let start = Date()
    repeat {
        for c in set {
            try c.stored.withUnsafeBytes { s in
                try out.withUnsafeMutableBytes { try Codec.decode(type, s, into: UnsafeMutableRawBufferPointer(rebasing: $0[..<c.size])) }
            }
            bytes += c.size
        }
    } while Date().timeIntervalSince(start) < seconds
    return Double(bytes) / 1e6 / Date().timeIntervalSince(start)
}

do {
    var sets = [("fixture chunks", try fixture("hfsplus_lzfse.dmg", .lzfse), try fixture("hfsplus_zlib.dmg", .zlib))]
    if args.count > 3 { sets.append(("corpus chunks", try file(args[3] + ".lzfse"), try file(args[3] + ".zlib"))) }
    for (label, lzfse, zlib) in sets {
        let l = try rate(.lzfse, lzfse), z = try rate(.zlib, zlib)
        let mb = Double(lzfse.map(\.size).reduce(0, +)) / 1e6
        print(String(format: "%@ (%.1f MB decoded per round): lzfse %.0f MB/s, zlib %.0f MB/s, lzfse/zlib %.2f", label, mb, l, z, l / z))
    }
} catch {
    FileHandle.standardError.write(Data("DecodeBench: \(error)\n".utf8))
    exit(1)
}
