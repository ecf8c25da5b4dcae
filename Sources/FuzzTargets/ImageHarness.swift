import Foundation
import UDIF

/// An image held in memory, read through the same interface as a file.
public struct MemoryFile: RandomAccessFile {
    public let bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var path: String { "(fuzz input)" }
    public func size() throws -> UInt64 { UInt64(bytes.count) }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= UInt64(bytes.count), UInt64(buffer.count) <= UInt64(bytes.count) - offset else {
            throw UDIFError.outOfRange(offset: offset, count: buffer.count, diskBytes: UInt64(bytes.count))
        }
        let start = Int(offset)
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[start..<(start + buffer.count)])) }
    }
}

/// The UDIF structure: trailer, resource plist, block tables, and reading the disk they describe.
enum ImageHarness {
    /// Decoded bytes per input at most: a crafted table may repeat one large chunk many times.
    static let decodeBudget = 8 << 20

    static func image(_ input: [UInt8]) throws {
        guard let image = try rejecting({ try UDIFImage(file: MemoryFile(input), cacheChunks: 4) }) else { return }
        try exercise(image)
    }

    /// The value, or nil when the code rejected the input as it should: with a UDIFError of
    /// one line (the command line prints it as the whole error report).
    static func rejecting<T>(_ body: () throws -> T) throws -> T? {
        do {
            return try body()
        } catch let e as UDIFError {
            try check(!e.description.contains("\n") && !e.description.contains("\r"), "error is not one line: \(e)")
            return nil
        } catch {
            throw FuzzFailure("threw \(type(of: error)), not UDIFError: \(error)")
        }
    }

    /// Input: u16 table length, the `mish` table, then the data fork its chunks point into.
    static func blockTable(_ input: [UInt8]) throws {
        var r = InputReader(input)
        guard let length = r.u16(), let tableBytes = r.take(length).map(Array.init) else { return }
        let dataFork = r.rest()
        guard let table = try? BlockTable(parsing: tableBytes) else { return }
        try check((try? BlockTable(parsing: table.serialized())) == table, "block table does not survive serialized()")
        let bytes = assemble(dataFork: dataFork, blkx: [tableBytes], sectorCount: table.sectorCount)
        guard let image = try rejecting({ try UDIFImage(file: MemoryFile(bytes), cacheChunks: 4) }) else { return }
        try exercise(image)
    }

    static func resourceFork(_ input: [UInt8]) throws {
        guard let fork = try rejecting({ try ResourceFork(parsing: input) }) else { return }
        for entry in fork.blkx { _ = try? BlockTable(parsing: entry.data) }
        for entry in fork.resources[ScanData.resourceKey] ?? [] { _ = try? ScanData(parsing: entry.data) }
        for entry in fork.resources[UsageData.resourceKey] ?? [] {
            if let usage = try? UsageData(parsing: entry.data) {
                try check((try? UsageData(parsing: usage.serialized())) == usage, "usage data does not survive serialized()")
            }
        }
        // imagescan writes every resource it read back out: what we write must read back the same.
        try check((try? ResourceFork(parsing: fork.xml())) == fork, "resource fork does not survive xml()")
    }

    /// Everything a reader of an opened image may do, with what must hold of the answers.
    static func exercise(_ image: UDIFImage) throws {
        try check((try? Trailer(parsing: image.trailer.serialized())) == image.trailer, "koly trailer does not survive serialized()")
        var at: UInt64 = 0
        for (i, c) in image.chunks.enumerated() {
            try check(c.diskOffset == at && c.length > 0, "chunk \(i) does not follow the one before it")
            at += c.length
        }
        try check(at == image.byteCount, "chunks cover \(at) bytes of a \(image.byteCount)-byte disk")

        var crcs = [UInt32](repeating: 0, count: image.regions.count)
        var decoded = 0
        for (i, c) in image.chunks.enumerated() {
            _ = image.describe(chunk: i)
            if c.type.hasStoredData {
                guard decoded < decodeBudget else { continue }
                decoded += Int(c.length)
                var bytes: [UInt8] = []
                let read: Void? = try rejecting {
                    try image.withBytes(at: c.diskOffset, count: Int(c.length)) { pieces in
                        for piece in pieces { bytes += piece }
                    }
                }
                guard read != nil else { continue }
                try check(UInt64(bytes.count) == c.length, "chunk \(i) read as \(bytes.count) bytes, not \(c.length)")
                image.addRegionCRC(image.regionCRC(of: i, decoded: bytes), of: i, to: &crcs)
            } else {
                for offset in [c.diskOffset, c.diskOffset + c.length - 1] {
                    let byte = try? image.read(at: offset, count: 1)
                    try check(byte == [0], "zero chunk \(i) reads \(String(describing: byte)) at \(offset)")
                }
                image.addRegionCRC(image.regionCRC(of: i, decoded: nil), of: i, to: &crcs)
            }
            // A read across the boundary with the next chunk.
            if i + 1 < image.chunks.count, decoded < decodeBudget {
                _ = try? image.read(at: c.diskOffset + c.length - 1, count: 2)
            }
        }
        _ = UDIFImage.masterCRC(of: crcs)
        _ = image.isOrdered
        // The chunk table a scan gives (zero runs kept short: their digest costs their length),
        // and reads through it: a chunk either matches its record or fails, one line.
        if let scan = try rejecting({ try ScanData.stored(in: image) }) ?? nil,
           !image.chunks.contains(where: { $0.type == .zeroFill && $0.length > 16 << 20 }),
           let table = try rejecting({ try scan.table(of: image) }) {
            try check(table.records.count == image.chunks.count && table.identity.count == 32, "a table that does not match its image")
            image.requireDigests(table)
            for i in image.chunks.indices.prefix(4) where image.chunks[i].type.hasStoredData {
                _ = try rejecting { try image.decodedChunk(i) }
            }
        }
        try check((try? image.read(at: image.byteCount, count: 1)) == nil, "a read past the end of the disk succeeded")
    }

    /// A minimal image around the given block tables: data fork, XML plist, trailer.
    static func assemble(dataFork: [UInt8], blkx: [[UInt8]], extra: [String: [ResourceEntry]] = [:],
                         sectorCount: UInt64) -> [UInt8] {
        var resources = extra
        resources["blkx"] = blkx.enumerated().map { i, table in
            ResourceEntry(data: table, id: String(i - 1), name: "region \(i)")
        }
        let xml = ResourceFork(resources: resources).xml()
        var trailer = Trailer()
        trailer.dataForkLength = UInt64(dataFork.count)
        trailer.xmlOffset = UInt64(dataFork.count)
        trailer.xmlLength = UInt64(xml.count)
        trailer.sectorCount = sectorCount
        return dataFork + xml + trailer.serialized()
    }
}
