import Foundation
import TestSupport
import Testing

@Suite struct FixtureCommandTests {
    @Test(arguments: Fixtures.decodable.map(\.name))
    func convertToRawGivesPublishedDigest(_ name: String) throws {
        let fixture = try #require(Fixtures.all.first { $0.name == name })
        let dir = TemporaryDirectory()
        let out = try CLI.run(["convert", "--source", fixture.path, "--format", "RAW", "--output", dir.file("disk.raw")])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(fileSize(dir.file("disk.raw")) == fixture.size)
        #expect(try sha256(file: dir.file("disk.raw")) == fixture.sha256)
    }

    @Test(arguments: Fixtures.decodable.map(\.name))
    func infoListsRegionsAndVerifiesChecksums(_ name: String) throws {
        let fixture = try #require(Fixtures.all.first { $0.name == name })
        let out = try CLI.run(["info", "--source", fixture.path, "--json"])
        #expect(out.status == 0, "\(out.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
        let regions = try #require(json["regions"] as? [[String: Any]])
        #expect(regions.count == 8)
        #expect(regions.allSatisfy { $0["checksumValid"] as? Bool == true })
        #expect(json["masterChecksumValid"] as? Bool == true)
        #expect(json["checksumsVerified"] as? Bool == true)
        #expect(json["diskBytes"] as? Int == Int(fixture.size))
        #expect(json["ordered"] as? Bool == false)
        let text = try CLI.run(["info", "--source", fixture.path])
        #expect(text.stdout.contains("Regions: 8"))
        #expect(text.stdout.contains("disk image (Apple_HFS : 4)"))
        let plist = try CLI.run(["info", "--source", fixture.path, "--plist"])
        #expect(try PropertyListSerialization.propertyList(from: Data(plist.stdout.utf8), format: nil) is [String: Any])
    }

    /// Every codec, LZFSE included, restores to the published disk: scanned, then verified.
    @Test(arguments: Fixtures.decodable.map(\.name))
    func restoreGivesPublishedDigest(_ name: String) throws {
        let fixture = try #require(Fixtures.all.first { $0.name == name })
        let dir = TemporaryDirectory()
        let image = dir.file(name)
        try FileManager.default.copyItem(atPath: fixture.path, toPath: image)
        #expect(try CLI.run(["imagescan", "--source", image]).status == 0)
        let out = try CLI.run(["restore", "--source", image, "--target", dir.file("disk.raw"), "--erase", "--noprompt"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: dir.file("disk.raw")) == fixture.sha256)
    }
}
