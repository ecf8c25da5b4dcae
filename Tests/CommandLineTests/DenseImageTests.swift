import Foundation
import TestSupport
import Testing

/// ULMO and UDBZ images, and chunks larger than hdiutil's 1 MiB, read back by every reader.
extension InteropTests {
    static let largeDiskRegionBytes: UInt64 = 57344 * 512

    /// A 40 MiB GPT disk whose first partition (28 MiB) spans two 16 MiB chunks of text,
    /// noise and zeros; the second starts with 1 MiB of noise, a raw chunk at 1 MiB chunks.
    static func makeLargeDisk(at path: String) throws {
        try Run.shell("""
            truncate -s $((40 * 1048576 + 7 * 512)) '\(path)'
            printf 'label: gpt\\nstart=2048, size=57344, type=L, name=\"root fs\"\\nstart=61440, size=18000, type=U\\n' | sfdisk -q '\(path)'
            seq 1 250000 | dd of='\(path)' bs=512 seek=2100 conv=notrunc status=none
            head -c 1500000 /dev/urandom | dd of='\(path)' bs=512 seek=40000 conv=notrunc status=none
            head -c 1048576 /dev/urandom | dd of='\(path)' bs=512 seek=61440 conv=notrunc status=none
            """)
    }

    /// 7-Zip's extraction of `image`: one file per blkx, concatenated in ID order.
    static func sevenZipDisk(_ image: String, in dir: TemporaryDirectory) throws -> String {
        let out = dir.file("7z-" + URL(fileURLWithPath: image).lastPathComponent)
        try Run.shell("7zz x -tdmg -o'\(out)' '\(image)' >/dev/null")
        let parts = try FileManager.default.contentsOfDirectory(atPath: out)
            .sorted { Int($0.prefix { $0.isNumber }) ?? 0 < Int($1.prefix { $0.isNumber }) ?? 0 }
        try Run.shell("cat \(parts.map { "'\(out)/\($0)'" }.joined(separator: " ")) > '\(out).raw'")
        return out + ".raw"
    }

    @Test(arguments: [("ULMO", "16M"), ("UDBZ", "16M"), ("ULMO", "1M"), ("UDBZ", "1M"), ("UDZO", "64M"), ("UDZO", "64K")])
    func denseFormatsAndLargeChunksReadEverywhere(format: String, chunkSize: String) throws {
        let dir = TemporaryDirectory()
        let disk = dir.file("disk.raw")
        try Self.makeLargeDisk(at: disk)
        let want = try sha256(file: disk)
        let image = dir.file("disk.dmg")
        let created = try CLI.run(["create", "--source", disk, "--output", image, "--format", format, "--chunk-size", chunkSize])
        #expect(created.status == 0, "\(created.stderr)")

        let chunkBytes: UInt64 = try #require(["64K": 64 << 10, "1M": 1 << 20, "16M": 16 << 20, "64M": 64 << 20][chunkSize])
        let info = try CLI.run(["info", "--source", image, "--json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
        #expect(json["format"] as? String == format)
        #expect((json["chunkSize"] as? NSNumber)?.uint64Value == min(chunkBytes, Self.largeDiskRegionBytes))
        let codecs = (json["codecs"] as? [[String: Any]] ?? []).compactMap { $0["codec"] as? String }
        if chunkBytes <= 1 << 20 { #expect(codecs.contains("raw"), "the noise chunk is stored raw: \(codecs)") }

        let check = try Run.process("/usr/bin/env", ["python3", Fixtures.checker, image])
        #expect(check.status == 0, "udif_check: \(check.stdout)")
        #expect(try sha256(file: Self.sevenZipDisk(image, in: dir)) == want, "7-Zip")

        // dmg2img knows zlib and bzip2 but has no XZ decoder.
        let dmg2img = try Run.process("/usr/bin/dmg2img", ["-s", "-i", image, "-o", dir.file("dmg2img.raw")])
        if format == "ULMO" {
            #expect(dmg2img.status != 0 || (try? sha256(file: dir.file("dmg2img.raw"))) != want)
        } else {
            #expect(dmg2img.status == 0, "\(dmg2img.stderr)")
            #expect(try sha256(file: dir.file("dmg2img.raw")) == want, "dmg2img")
        }

        let back = try CLI.run(["convert", "--source", image, "--format", "RAW", "--output", dir.file("back.raw")])
        #expect(back.status == 0, "\(back.stderr)")
        #expect(try sha256(file: dir.file("back.raw")) == want)

        #expect(try CLI.run(["imagescan", "--source", image]).status == 0)
        let restored = try CLI.run(["restore", "--source", image, "--target", dir.file("target.raw"), "--erase", "--noprompt"])
        #expect(restored.status == 0, "\(restored.stderr)")
        #expect(try sha256(file: dir.file("target.raw")) == want)
    }

    @Test func convertBetweenDenseFormatsAndChunkSizes() throws {
        let dir = TemporaryDirectory()
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_lzma.dmg" })
        let steps = [(fixture.path, "a.dmg", "UDBZ", "4M"), ("a.dmg", "b.dmg", "ULMO", "2M"), ("b.dmg", "c.dmg", "ULMO", "1M"),
                     ("c.dmg", "d.raw", "RAW", "1M")]
        for (from, to, format, size) in steps {
            let source = from.hasPrefix("/") ? from : dir.file(from)
            let out = try CLI.run(["convert", "--source", source, "--format", format, "--chunk-size", size, "--output", dir.file(to)])
            #expect(out.status == 0, "\(out.stderr)")
        }
        #expect(try sha256(file: dir.file("d.raw")) == fixture.sha256)
        let info = try CLI.run(["info", "--source", dir.file("b.dmg")])
        #expect(info.stdout.contains("Format: ULMO"), "\(info.stdout)")
        #expect(info.stdout.contains("Chunk size: "), "\(info.stdout)")
        #expect(try Run.process("/usr/bin/env", ["python3", Fixtures.checker, dir.file("b.dmg")]).status == 0)
    }
}

extension BadInputTests {
    @Test(arguments: [["--chunk-size", "32K"], ["--chunk-size", "65M"], ["--chunk-size", "1048577"], ["--chunk-size", "lots"],
                      ["--chunk-size", "0"], ["--format", "LZMA"], ["--format", "UDZO2"], ["--zlib-level", "13"], ["--zlib-level", "x"]])
    func badFormatOrChunkSizeIsOneLine(option: [String]) throws {
        let dir = TemporaryDirectory()
        try Run.shell("seq 1 100000 > '\(dir.file("disk.raw"))'; truncate -s 2M '\(dir.file("disk.raw"))'")
        for verb in [["create", "--source", dir.file("disk.raw")], ["convert", "--source", dir.file("disk.raw")]] {
            var args = verb + ["--output", dir.file("out.dmg")] + option
            if verb[0] == "convert" && option[0] != "--format" { args += ["--format", "ULMO"] }
            let out = try CLI.run(args)
            #expect(out.status == 1, "\(args): status \(out.status)")
            #expect(out.stderrLines.count == 1, "\(args): \(out.stderr)")
            #expect(out.stderr.hasPrefix("asr: "), "\(out.stderr)")
            #expect(out.stderr.contains(option[1]), "\(out.stderr)")
            #expect(!FileManager.default.fileExists(atPath: dir.file("out.dmg")))
        }
    }
}
