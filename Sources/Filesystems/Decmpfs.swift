import SystemSupport
import UDIF

/// A file compressed by macOS (its com.apple.decmpfs attribute): a 16-byte header (magic
/// "fpmc", compression type, uncompressed size, little-endian) and the data, in the attribute
/// itself (types 1, 3, 7, 11) or in the resource fork in 64 KiB blocks (types 4, 8, 12), by
/// zlib (3, 4), LZVN (7, 8) or LZFSE (11, 12). Sizes and block tables are checked before any
/// buffer is made, and every block must decode to exactly its size.
struct Decmpfs: Sendable {
    enum Storage: Sendable { case attribute, resourceFork }
    enum Method: Sendable { case raw, zlib, lzvn, lzfse }

    static let blockSize: UInt64 = 65536
    static let maxInlineSize: UInt64 = 16 << 20
    /// 64 GiB: a block table of at most 1 Mi entries (8 MiB read).
    static let maxSize: UInt64 = 1 << 36
    static let maxStoredBlock = 1 << 20

    let type: UInt32
    let size: UInt64
    let storage: Storage
    let method: Method
    let inline: [UInt8]
    /// Each block's place in the resource fork.
    private(set) var blocks: [(offset: UInt64, length: Int)] = []

    init(_ attribute: [UInt8]) throws(VolumeError) {
        guard attribute.count >= 16, attribute.le32(0) == 0x636D_7066 else { throw .damaged("a com.apple.decmpfs header without its magic") }
        type = UInt32(attribute.le32(4))
        size = attribute.le64(8)
        inline = Array(attribute[16...])
        switch type {
        case 1: (storage, method) = (.attribute, .raw)
        case 3: (storage, method) = (.attribute, .zlib)
        case 4: (storage, method) = (.resourceFork, .zlib)
        case 7: (storage, method) = (.attribute, .lzvn)
        case 8: (storage, method) = (.resourceFork, .lzvn)
        case 11: (storage, method) = (.attribute, .lzfse)
        case 12: (storage, method) = (.resourceFork, .lzfse)
        default: throw .damaged("compression type \(type) is not supported")
        }
        guard size <= (storage == .attribute ? Self.maxInlineSize : Self.maxSize) else {
            throw .damaged("a compressed file of \(size) bytes (type \(type))")
        }
    }

    var blockCount: Int { Int((size + Self.blockSize - 1) / Self.blockSize) }

    /// Reads the resource fork's block table through `read(offset, count)`.
    mutating func readTable(_ read: (UInt64, Int) throws(VolumeError) -> [UInt8]) throws(VolumeError) {
        let count = blockCount
        var found: [(UInt64, Int)] = []
        found.reserveCapacity(count)
        if method == .zlib {
            // A resource fork holding one 'cmpf' resource: its data starts at the header's offset.
            let dataOffset = try read(0, 16).be32(0)
            let head = try read(dataOffset + 4, 4)
            guard head.le32(0) == UInt64(count) else { throw .damaged("a compressed file's table has \(head.le32(0)) blocks, not \(count)") }
            let table = try read(dataOffset + 8, 8 * count)
            for i in 0..<count {
                found.append((dataOffset + 4 + table.le32(8 * i), Int(table.le32(8 * i + 4))))
            }
        } else {
            let first = try read(0, 4).le32(0)
            guard first == UInt64(4 * (count + 1)) else { throw .damaged("a compressed file's table is \(first) bytes for \(count) blocks") }
            let table = try read(0, Int(first))
            for i in 0..<count {
                let start = table.le32(4 * i), end = table.le32(4 * i + 4)
                guard end >= start else { throw .damaged("a compressed file's block table is out of order") }
                found.append((start, Int(end - start)))
            }
        }
        guard found.allSatisfy({ $0.1 > 0 && $0.1 <= Self.maxStoredBlock }) else { throw .damaged("a compressed block of an impossible size") }
        blocks = found
    }

    func decodeInline() throws(VolumeError) -> [UInt8] {
        try decode(inline, size: Int(size))
    }

    func decodeBlock(_ index: Int, _ read: (UInt64, Int) throws(VolumeError) -> [UInt8]) throws(VolumeError) -> [UInt8] {
        guard index < blocks.count else { throw .damaged("a read past a compressed file's last block") }
        let out = Int(min(Self.blockSize, size - UInt64(index) * Self.blockSize))
        return try decode(try read(blocks[index].offset, blocks[index].length), size: out)
    }

    /// One stored unit to exactly `size` bytes. A first byte of 0x0F (zlib's low nibble), 0x06
    /// (LZVN) or 0xFF (LZFSE) marks bytes kept uncompressed.
    func decode(_ stored: [UInt8], size: Int) throws(VolumeError) -> [UInt8] {
        let rawMarker: Bool = switch method {
        case .raw: false
        case .zlib: (stored.first ?? 0) & 0x0F == 0x0F
        case .lzvn: stored.first == 0x06
        case .lzfse: stored.first == 0xFF
        }
        if method == .raw || rawMarker {
            let body = method == .raw ? stored[...] : stored.dropFirst()
            guard body.count >= size else { throw .damaged("a compressed file's stored block is short") }
            return Array(body.prefix(size))
        }
        var out = [UInt8](repeating: 0, count: size)
        do {
            let produced: Int = try out.withUnsafeMutableBytes { o in
                switch method {
                case .zlib:
                    try stored.withUnsafeBytes { try Codec.decode(.zlib, $0, into: o) }
                    return size
                case .lzvn:
                    // A bare LZVN payload: framed as an LZFSE stream's `bvxn` block.
                    var stream = Array("bvxn".utf8)
                    stream.appendLE(UInt32(size))
                    stream.appendLE(UInt32(stored.count))
                    stream += stored + Array("bvx$".utf8)
                    return try stream.withUnsafeBytes { try LZFSE.decode($0, into: o) }
                default:
                    return try stored.withUnsafeBytes { try LZFSE.decode($0, into: o) }
                }
            }
            guard produced == size else { throw VolumeError.damaged("a compressed block decoded to \(produced) bytes, not \(size)") }
        } catch let error as VolumeError {
            throw error
        } catch {
            throw .damaged("a compressed block cannot be decoded: \(error)")
        }
        return out
    }
}

/// A compressed file as a reader reads it, shared by the readers with decmpfs (HFS+ and APFS):
/// the header and block table checked once, then reads served from 64 KiB blocks decoded once
/// and kept in a small cache. The resource fork is reached through `fork(offset, count)`,
/// every request checked against `forkSize` first.
final class DecmpfsReader: Sendable {
    private let blocks = Locked<[BlockKey: [UInt8]]>([:])
    static let maxCachedBlocks = 64

    struct BlockKey: Hashable { var file: UInt64; var index: Int }

    typealias Fork = (UInt64, Int) throws(VolumeError) -> [UInt8]

    static func checked(_ forkSize: UInt64, _ fork: @escaping Fork) -> Fork {
        { (offset, count) throws(VolumeError) in
            guard count >= 0, offset <= forkSize, UInt64(count) <= forkSize - offset else {
                throw .damaged("a compressed file's block table points past its resource fork")
            }
            return try fork(offset, count)
        }
    }

    /// The header of `attribute`, with its block table when the data is in the resource fork.
    static func header(_ attribute: [UInt8], forkSize: UInt64, fork: @escaping Fork) throws(VolumeError) -> Decmpfs {
        var d = try Decmpfs(attribute)
        if d.storage == .resourceFork { try d.readTable(checked(forkSize, fork)) }
        return d
    }

    /// Fills `buffer` from `offset` of file `file`'s decoded content; fewer bytes only at its end.
    func read(_ d: Decmpfs, file: UInt64, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer,
              forkSize: UInt64, fork: @escaping Fork) throws(VolumeError) -> Int {
        guard offset < d.size, buffer.count > 0 else { return 0 }
        let count = Int(min(UInt64(buffer.count), d.size - offset))
        var done = 0
        while done < count {
            let at = offset + UInt64(done)
            let index = Int(at / Decmpfs.blockSize)
            let block = try decoded(d, file: file, index, forkSize: forkSize, fork: fork)
            let within = Int(at % Decmpfs.blockSize)
            guard within < block.count else { throw .damaged("compressed file \(file)'s block \(index) is short") }
            let n = min(count - done, block.count - within)
            block.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: buffer[done..<(done + n)]).copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[within..<(within + n)])) }
            done += n
        }
        return count
    }

    private func decoded(_ d: Decmpfs, file: UInt64, _ index: Int, forkSize: UInt64, fork: @escaping Fork) throws(VolumeError) -> [UInt8] {
        let key = BlockKey(file: file, index: index)
        if let hit = blocks.withLock({ $0[key] }) { return hit }
        let block: [UInt8]
        if d.storage == .attribute {
            let whole = try d.decodeInline()
            let start = index * Int(Decmpfs.blockSize)
            block = Array(whole[min(start, whole.count)..<min(start + Int(Decmpfs.blockSize), whole.count)])
        } else {
            block = try d.decodeBlock(index, Self.checked(forkSize, fork))
        }
        blocks.withLock { c in
            if c.count >= Self.maxCachedBlocks { c.removeAll() }
            c[key] = block
        }
        return block
    }
}

extension Array where Element == UInt8 {
    mutating func appendLE(_ v: UInt32) {
        for i in 0..<4 { append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
    }
}
