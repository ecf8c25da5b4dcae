import SystemSupport
import Foundation

/// Writes an existing image anew: its chunks copied without recompression, in logical order
/// (what lets a server stream it front to back) or as they were, with resources added or
/// replaced. The result replaces the original only when complete and flushed.
///
/// In logical order, the caller feeds the stored bytes of each data chunk in disk order
/// (`append`), typically while it reads them anyway, so the copy costs no second read.
public final class ImageRewriter {
    public let image: UDIFImage
    public let reorder: Bool
    private let partial: TemporaryOutput
    private var offset: UInt64 = 0
    private var dataCRC: UInt32 = 0
    private var newOffsets: [UInt64] = []
    private var cursor = 0
    private var writeback: WritebackTrigger

    public init(_ image: UDIFImage, replacing path: String, reorder: Bool) throws {
        self.image = image
        self.reorder = reorder
        partial = try TemporaryOutput(finalPath: path)
        writeback = WritebackTrigger(file: partial.file)
        var st = stat()
        if stat(path, &st) == 0 { fchmod(partial.file.fd, st.st_mode & 0o7777) }
    }

    deinit { partial.discard() }

    /// The stored bytes of the next data chunk (in `image.chunks` order) when reordering.
    public func append(storedBytesOf chunk: Int, _ bytes: [UInt8]) throws {
        while cursor < image.chunks.count && !image.chunks[cursor].type.hasStoredData { cursor += 1 }
        precondition(reorder && chunk == cursor, "data chunks must be appended in disk order")
        cursor += 1
        newOffsets.append(offset)
        try write(bytes)
    }

    private func write(_ bytes: [UInt8]) throws {
        if Interruption.requested { throw SystemError.interrupted }
        try partial.file.write(bytes, at: offset)
        dataCRC = CRC32.update(dataCRC, bytes)
        offset += UInt64(bytes.count)
        writeback.wrote(upTo: offset)
    }

    /// Writes the plist and trailer and puts the new image in place. `signed` gives resources
    /// that depend on where the new image stores each chunk (a signature over its identity):
    /// it is handed each chunk's stored offset in the new file, in `image.chunks` order.
    public func finish(replacingResources extra: [String: [ResourceEntry]],
                       signed: ((_ storedOffsets: [UInt64]) throws -> [String: [ResourceEntry]])? = nil) throws {
        let t = image.trailer
        var tables = image.regions.map(\.table)
        if reorder {
            guard newOffsets.count == image.chunks.filter({ $0.type.hasStoredData }).count else {
                preconditionFailure("not every chunk was copied")
            }
            // Walk the tables in the same order as image.chunks to give each chunk its place.
            var next = 0
            for r in tables.indices {
                var moved: [BlockChunk] = []
                for var c in tables[r].chunks where c.type != .comment {
                    if c.type.hasStoredData && c.sectorCount > 0 {
                        c.storedOffset = newOffsets[next]
                        next += 1
                    } else if c.type.hasStoredData {
                        continue  // a data chunk covering no sectors holds nothing
                    } else {
                        c.storedOffset = next < newOffsets.count ? newOffsets[next] : offset
                        c.storedLength = 0
                    }
                    moved.append(c)
                }
                tables[r].chunks = moved
                tables[r].dataOffset = 0
            }
        } else {
            var copied: UInt64 = 0
            while copied < t.dataForkLength {
                let n = Int(min(4 << 20, t.dataForkLength - copied))
                try write(image.file.read(at: t.dataForkOffset + copied, count: n))
                copied += UInt64(n)
            }
        }

        var fork = image.resourceFork
        fork.resources["blkx"] = zip(fork.blkx, tables).map { entry, table in
            var e = entry
            e.data = table.serialized()
            return e
        }
        for (key, entries) in extra { fork.resources[key] = entries.isEmpty ? nil : entries }  // empty: remove
        if let signed {
            // The new data fork starts at 0: reordered chunks sit at their new offsets (tables'
            // data offsets are 0), the others where they were within the copied fork.
            var moved = newOffsets.makeIterator()
            let stored = image.chunks.map { c -> UInt64 in
                guard c.type.hasStoredData else { return 0 }
                return reorder ? moved.next()! : c.fileOffset - t.dataForkOffset
            }
            for (key, entries) in try signed(stored) { fork.resources[key] = entries }
        }
        let xml = fork.xml()

        var trailer = t
        trailer.runningDataForkOffset = 0
        trailer.dataForkOffset = 0
        trailer.dataForkLength = offset
        trailer.dataForkChecksum = .crc32(dataCRC)
        trailer.resourceForkOffset = 0
        trailer.resourceForkLength = 0
        trailer.xmlOffset = offset
        trailer.xmlLength = UInt64(xml.count)
        trailer.codeSignatureOffset = 0  // a signature would no longer match
        trailer.codeSignatureLength = 0
        try partial.file.write(xml, at: offset)
        try partial.file.write(trailer.serialized(), at: offset + UInt64(xml.count))
        try partial.commit()
    }
}
