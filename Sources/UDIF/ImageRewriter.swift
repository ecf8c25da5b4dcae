import Foundation

/// Writes an existing image anew: its chunks copied without recompression, optionally
/// moved into logical order (what lets a server stream it front to back), with resources
/// added or replaced. The result replaces `path` only when complete and flushed.
public enum ImageRewriter {
    public static func rewrite(_ image: UDIFImage, to path: String, reorder: Bool,
                               replacingResources extra: [String: [ResourceEntry]]) throws {
        let partial = try TemporaryOutput(finalPath: path)
        defer { partial.discard() }
        let out = partial.file
        let t = image.trailer
        var offset: UInt64 = 0
        var dataCRC: UInt32 = 0
        var tables = image.regions.map(\.table)

        func append(_ bytes: [UInt8]) throws {
            if Interruption.requested { throw UDIFError("interrupted") }
            try out.write(bytes, at: offset)
            dataCRC = CRC32.update(dataCRC, bytes)
            offset += UInt64(bytes.count)
        }

        if reorder {
            for r in tables.indices {
                var moved: [BlockChunk] = []
                for var c in tables[r].chunks where c.type != .comment {
                    if c.type.hasStoredData {
                        let at = t.dataForkOffset + tables[r].dataOffset + c.storedOffset
                        let bytes = try image.file.read(at: at, count: Int(c.storedLength))
                        c.storedOffset = offset
                        try append(bytes)
                    } else {
                        c.storedOffset = offset
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
                try append(image.file.read(at: t.dataForkOffset + copied, count: n))
                copied += UInt64(n)
            }
        }

        var fork = image.resourceFork
        fork.resources["blkx"] = zip(fork.blkx, tables).map { entry, table in
            var e = entry
            e.data = table.serialized()
            return e
        }
        for (key, entries) in extra { fork.resources[key] = entries }
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
        try out.write(xml, at: offset)
        try out.write(trailer.serialized(), at: offset + UInt64(xml.count))
        var st = stat()
        if stat(path, &st) == 0 { fchmod(out.fd, st.st_mode & 0o7777) }
        try partial.commit()
    }
}
