import SystemSupport
import Foundation
import TestSupport
import Testing
import UDIF

/// Damaged and hostile images: one line on stderr, exit status 1, nothing written, no hang.
@Suite struct BadInputTests {
    /// A valid image of ours to damage.
    static func goodImage(in dir: TemporaryDirectory) throws -> String {
        try Run.shell("seq 1 300000 > '\(dir.file("disk.raw"))'; truncate -s 3M '\(dir.file("disk.raw"))'")
        let out = try CLI.run(["create", "--source", dir.file("disk.raw"), "--output", dir.file("good.dmg")])
        guard out.status == 0 else { throw TestFailure(out.stderr) }
        return dir.file("good.dmg")
    }

    /// Rewrites the block tables of an image of ours (its plist follows the data fork).
    static func rewrite(_ path: String, to output: String, edit: (inout [BlockTable]) -> Void) throws {
        let image = try UDIFImage(path: path)
        var tables = image.regions.map(\.table)
        edit(&tables)
        var fork = image.resourceFork
        fork.resources["blkx"] = zip(fork.blkx, tables).map { entry, table in
            var e = entry
            e.data = table.serialized()
            return e
        }
        try writeImage(dataFork: image.file.read(at: 0, count: Int(image.trailer.dataForkLength)), fork: fork,
                       trailer: image.trailer, to: output)
    }

    static func writeImage(dataFork: [UInt8], fork: ResourceFork, trailer: Trailer, to path: String) throws {
        let xml = fork.xml()
        var t = trailer
        t.dataForkLength = UInt64(dataFork.count)
        t.xmlOffset = UInt64(dataFork.count)
        t.xmlLength = UInt64(xml.count)
        _ = FileManager.default.createFile(atPath: path, contents: Data(dataFork + xml + t.serialized()))
    }

    /// One zlib chunk holding `payload` that claims `sectors` sectors.
    static func handMade(payload: [UInt8], sectors: UInt64, to path: String) throws {
        let z = try #require(payload.withUnsafeBytes { Codec.compressZlib($0, level: 6) })
        let table = BlockTable(firstSector: 0, sectorCount: sectors, buffersNeeded: 2056, blockDescriptor: 0, checksum: .crc32(0),
                               chunks: [BlockChunk(type: .zlib, sectorStart: 0, sectorCount: sectors, storedOffset: 0, storedLength: UInt64(z.count))])
        let fork = ResourceFork(resources: ["blkx": [ResourceEntry(cfName: "x", data: table.serialized(), id: "0", name: "x")],
                                            "plst": [ResourceFork.defaultPlst()]])
        var t = Trailer()
        t.sectorCount = sectors
        try writeImage(dataFork: z, fork: fork, trailer: t, to: path)
    }

    static func expectCleanFailure(_ image: String, mentions: String, in dir: TemporaryDirectory,
                                   sourceLocation: SourceLocation = #_sourceLocation) throws {
        for args in [["convert", "--source", image, "--format", "RAW", "--output", dir.file("out.raw")],
                     ["convert", "--source", image, "--format", "UDZO", "--output", dir.file("out.dmg")],
                     ["info", "--source", image]] {
            let out = try CLI.run(args, timeout: 60)
            #expect(!out.timedOut, "hung: \(args)", sourceLocation: sourceLocation)
            #expect(out.status == 1, "\(args): status \(out.status)", sourceLocation: sourceLocation)
            #expect(out.stderrLines.count == 1, "\(args): \(out.stderr)", sourceLocation: sourceLocation)
            #expect(out.stderr.hasPrefix("asr: "), sourceLocation: sourceLocation)
            #expect(out.stderr.contains(mentions), "\(args): \(out.stderr)", sourceLocation: sourceLocation)
            #expect(!FileManager.default.fileExists(atPath: dir.file("out.raw")), sourceLocation: sourceLocation)
            #expect(!FileManager.default.fileExists(atPath: dir.file("out.dmg")), sourceLocation: sourceLocation)
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("partial") }
        #expect(leftovers.isEmpty, "\(leftovers)", sourceLocation: sourceLocation)
    }

    @Test func truncatedImage() throws {
        let dir = TemporaryDirectory()
        let good = try Self.goodImage(in: dir)
        try Run.shell("head -c $(( $(stat -c %s '\(good)') / 2 )) '\(good)' > '\(dir.file("bad.dmg"))'")
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "koly", in: dir)
    }

    @Test func wrongTrailer() throws {
        let dir = TemporaryDirectory()
        let good = try Self.goodImage(in: dir)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))
        bytes[bytes.count - 512 + 8] = 9  // header size no longer 512
        _ = FileManager.default.createFile(atPath: dir.file("bad.dmg"), contents: Data(bytes))
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "koly", in: dir)

        bytes[bytes.count - 512 + 8] = 0
        bytes[bytes.count - 512 + 216] = 0x7F  // XML offset far past the end
        _ = FileManager.default.createFile(atPath: dir.file("bad2.dmg"), contents: Data(bytes))
        try Self.expectCleanFailure(dir.file("bad2.dmg"), mentions: "past the end", in: dir)
    }

    @Test func chunkOffsetPastTheEnd() throws {
        let dir = TemporaryDirectory()
        let good = try Self.goodImage(in: dir)
        try Self.rewrite(good, to: dir.file("bad.dmg")) { tables in
            let i = tables[0].chunks.firstIndex { $0.type == .zlib }!
            tables[0].chunks[i].storedOffset = 1 << 40
        }
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "past the end of the data fork", in: dir)
    }

    @Test func chunkDecompressesToMoreThanItsSectors() throws {
        let dir = TemporaryDirectory()
        try Self.handMade(payload: [UInt8](repeating: 65, count: 4096), sectors: 4, to: dir.file("bad.dmg"))
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "more than 2048 bytes", in: dir)
    }

    @Test func chunkDecompressesToLessThanItsSectors() throws {
        let dir = TemporaryDirectory()
        try Self.handMade(payload: [UInt8](repeating: 65, count: 1024), sectors: 4, to: dir.file("bad.dmg"))
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "decompresses to 1024 bytes, want 2048", in: dir)
    }

    @Test func malformedPlist() throws {
        let dir = TemporaryDirectory()
        let good = try Self.goodImage(in: dir)
        let image = try UDIFImage(path: good)
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))
        let start = Int(image.trailer.xmlOffset) + 300
        for i in start..<(start + 40) { bytes[i] = UInt8(ascii: "<") }
        _ = FileManager.default.createFile(atPath: dir.file("bad.dmg"), contents: Data(bytes))
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "resource plist is malformed", in: dir)
    }

    @Test func regionsThatDoNotCoverTheDisk() throws {
        let dir = TemporaryDirectory()
        let good = try Self.goodImage(in: dir)
        try Self.rewrite(good, to: dir.file("bad.dmg")) { tables in tables[0].chunks.removeLast() }
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "cover", in: dir)
    }

    @Test func corruptChunkData() throws {
        let dir = TemporaryDirectory()
        let good = try Self.goodImage(in: dir)
        let image = try UDIFImage(path: good)
        let chunk = try #require(image.chunks.first { $0.type == .zlib })
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: good)))
        for i in 0..<64 { bytes[Int(chunk.fileOffset) + 10 + i] ^= 0x5A }
        _ = FileManager.default.createFile(atPath: dir.file("bad.dmg"), contents: Data(bytes))
        try Self.expectCleanFailure(dir.file("bad.dmg"), mentions: "chunk 0", in: dir)
    }

    @Test func missingAndWrongKindsOfSource() throws {
        let dir = TemporaryDirectory()
        for (args, mention) in [
            (["info", "--source", dir.file("nope.dmg")], "No such file"),
            (["convert", "--source", dir.path, "--format", "RAW", "--output", dir.file("x")], "directory"),
            (["create", "--source", "/dev/null", "--output", dir.file("x.dmg")], "neither a file nor a block device"),
            (["create", "--srcfolder", dir.file("missing"), "--output", dir.file("x.dmg")], "does not exist"),
            (["create", "--srcfolder", dir.path, "--output", dir.file("x.dmg"), "--size", "12Q"], "invalid size"),
        ] {
            let out = try CLI.run(args, timeout: 60)
            #expect(out.status == 1, "\(args)")
            #expect(out.stderrLines.count == 1, "\(args): \(out.stderr)")
            #expect(out.stderr.contains(mention), "\(args): \(out.stderr)")
        }
    }

    @Test func existingOutputIsNotReplacedWithoutOverwrite() throws {
        let dir = TemporaryDirectory()
        let good = try Self.goodImage(in: dir)
        let out = try CLI.run(["convert", "--source", good, "--format", "RAW", "--output", dir.file("disk.raw")])
        #expect(out.status == 1)
        #expect(out.stderr.contains("--overwrite"))
        let again = try CLI.run(["convert", "--source", good, "--format", "RAW", "--output", dir.file("disk.raw"), "--overwrite"])
        #expect(again.status == 0)
    }
}
