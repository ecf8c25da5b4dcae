import Foundation
import TestSupport
import Testing

/// Our images read by independent readers (7-Zip, dmg2img, the shared Python checker) and
/// round trips through our own reader, for partitioned and unpartitioned disks.
@Suite struct InteropTests {
    enum Layout: String, CaseIterable { case gpt, mbr, none }

    /// A disk made with the real sfdisk, sized off the 1 MiB grid, filled with text, noise
    /// and zero runs so zlib, raw and zero-fill chunks all appear.
    static func makeDisk(_ layout: Layout, at path: String) throws {
        try Run.shell("""
            truncate -s $((9 * 1048576 + 7 * 512)) '\(path)'
            case \(layout.rawValue) in
              gpt) printf 'label: gpt\\nstart=2048, size=8192, type=L, name=\"root fs\"\\nstart=10240, size=6000, type=U\\n' | sfdisk -q '\(path)' ;;
              mbr) printf 'label: dos\\nstart=2048, size=8192, type=83\\nstart=10240, size=6000, type=c\\n' | sfdisk -q '\(path)' ;;
              none) ;;
            esac
            seq 1 300000 | dd of='\(path)' bs=512 seek=2100 conv=notrunc status=none
            head -c 1500000 /dev/urandom | dd of='\(path)' bs=512 seek=10300 conv=notrunc status=none
            """)
    }

    @Test(arguments: Layout.allCases, ["UDZO", "UDRO"])
    func independentReadersAgree(layout: Layout, format: String) throws {
        let dir = TemporaryDirectory()
        let disk = dir.file("disk.raw")
        try Self.makeDisk(layout, at: disk)
        let want = try sha256(file: disk)
        let image = dir.file("disk.dmg")
        let created = try CLI.run(["create", "--source", disk, "--output", image, "--format", format])
        #expect(created.status == 0, "\(created.stderr)")

        let check = try Run.process("/usr/bin/env", ["python3", Fixtures.checker, image])
        #expect(check.status == 0, "udif_check: \(check.stdout)")
        #expect(check.stdout.contains("ordered=True"))

        // 7-Zip extracts one numbered file per blkx; in ID order they are the disk.
        try Run.shell("7zz x -tdmg -o'\(dir.file("7z"))' '\(image)' >/dev/null")
        let parts = try FileManager.default.contentsOfDirectory(atPath: dir.file("7z"))
            .sorted { Int($0.prefix { $0.isNumber }) ?? 0 < Int($1.prefix { $0.isNumber }) ?? 0 }
        let info = try CLI.run(["info", "--source", image, "--json"])
        let json = try #require(try JSONSerialization.jsonObject(with: Data(info.stdout.utf8)) as? [String: Any])
        let regions = try #require(json["regions"] as? [[String: Any]])
        #expect(parts.count == regions.count, "\(parts)")
        #expect(regions.count == (layout == .none ? 1 : layout == .gpt ? 9 : 5))
        let quoted = parts.map { "'\(dir.file("7z/" + $0))'" }.joined(separator: " ")
        try Run.shell("cat \(quoted) > '\(dir.file("7z.raw"))'")
        #expect(try sha256(file: dir.file("7z.raw")) == want)

        try Run.shell("dmg2img -s -i '\(image)' -o '\(dir.file("dmg2img.raw"))'")
        #expect(try sha256(file: dir.file("dmg2img.raw")) == want)

        let back = try CLI.run(["convert", "--source", image, "--format", "RAW", "--output", dir.file("back.raw")])
        #expect(back.status == 0, "\(back.stderr)")
        #expect(fileSize(dir.file("back.raw")) == fileSize(disk))
        #expect(try sha256(file: dir.file("back.raw")) == want)
    }

    @Test func regionsAreNamedAsHdiutilNamesThem() throws {
        let dir = TemporaryDirectory()
        try Self.makeDisk(.gpt, at: dir.file("gpt.raw"))
        try Self.makeDisk(.mbr, at: dir.file("mbr.raw"))
        let gpt = try CLI.run(["info", "--source", dir.file("gpt.raw")])
        #expect(gpt.stdout.contains("Protective Master Boot Record (MBR : 0)"))
        #expect(gpt.stdout.contains("GPT Partition Data (Primary GPT Table : 2)"))
        #expect(gpt.stdout.contains("root fs (Linux Filesystem : 4)"))
        #expect(gpt.stdout.contains("GPT Header (Backup GPT Header : "))
        let mbr = try CLI.run(["info", "--source", dir.file("mbr.raw")])
        #expect(mbr.stdout.contains("Master Boot Record (MBR : 0)"))
        #expect(mbr.stdout.contains(" (Linux : 2)"))
        #expect(mbr.stdout.contains(" (DOS_FAT_32 : "))
    }

    @Test func convertBetweenFormatsKeepsTheDisk() throws {
        let dir = TemporaryDirectory()
        let fixture = try #require(Fixtures.all.first { $0.name == "hfsplus_bzip2.dmg" })
        for (from, to, format) in [(fixture.path, "a.dmg", "UDRO"), ("a.dmg", "b.dmg", "UDZO"), ("b.dmg", "c.raw", "RAW")] {
            let source = from.hasPrefix("/") ? from : dir.file(from)
            let out = try CLI.run(["convert", "--source", source, "--format", format, "--output", dir.file(to)])
            #expect(out.status == 0, "\(out.stderr)")
        }
        #expect(try sha256(file: dir.file("c.raw")) == fixture.sha256)
    }
}
