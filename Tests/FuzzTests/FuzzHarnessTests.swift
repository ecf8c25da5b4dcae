import Filesystems
import Foundation
@testable import FuzzTargets
import Testing
import TestSupport
import UDIF

/// CI's bounded pass over every fuzz harness: the seeds from the fixtures as they are, then
/// seeded mutants for a short time each (ASR_FUZZ_HARNESS_SECONDS, default 0.4; seed
/// ASR_FUZZ_SEED). `make fuzz` runs the same harnesses under libFuzzer for longer.
@Suite struct FuzzHarnessTests {
    static let seeds: Seeds = {
        let images = Fixtures.decodable.compactMap { FileManager.default.contents(atPath: $0.path).map { [UInt8]($0) } }
        // apfs.raw: a missing fixture leaves the apfs harness without seeds, which fails.
        let raw = (try? Fixtures.filesystem("apfs.raw")).flatMap { FileManager.default.contents(atPath: $0) }.map { [[UInt8]($0)] } ?? []
        return Seeds(images: images, filesystems: raw)
    }()

    static let environment = ProcessInfo.processInfo.environment
    static let seconds = Double(environment["ASR_FUZZ_HARNESS_SECONDS"] ?? "") ?? 0.4
    static let seed = UInt64(environment["ASR_FUZZ_SEED"] ?? "") ?? 20261127

    @Test(arguments: FuzzTarget.allCases)
    func harnessSurvivesMutants(_ target: FuzzTarget) {
        let seeds = Self.seeds.inputs(for: target)
        #expect(!seeds.isEmpty, "\(target) has no seeds")
        let index = UInt64(FuzzTarget.allCases.firstIndex(of: target)!)
        let run = MutationRun.run(target, seeds: seeds, seed: Self.seed &+ index, seconds: Self.seconds, minimumMutants: 50)
        print("fuzz \(target): \(run.executions) inputs in \(String(format: "%.2f", run.seconds)) s, slowest \(String(format: "%.3f", run.slowest)) s")
        for (input, failure) in run.failures.prefix(3) {
            Issue.record("\(target): \(failure); input (base64) \(Data(input).base64EncodedString())")
        }
        // A hang shows as one input taking far longer than the rest.
        #expect(run.slowest < 5, "\(target): an input took \(run.slowest) s; base64 \(Data(run.slowestInput).base64EncodedString())")
        #expect(run.executions >= seeds.count + 50, "mutants ran as well as the seeds")
    }

    /// Every input that once crashed a harness now passes through it: Regressions/ holds
    /// libFuzzer's finds as it saved them (<harness>-<hash>) and the two crashes found by
    /// review in a form the harness replays. Each also has a focused test in its module.
    @Test func savedCrashesStayFixed() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Regressions")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
        #expect(names.count >= 7)
        for name in names {
            let target = try #require(FuzzTarget(rawValue: String(name.prefix { $0 != "-" })), "\(name)")
            let input = try [UInt8](Data(contentsOf: dir.appendingPathComponent(name)))
            #expect(throws: Never.self, "\(name)") { try target.run(input) }
        }
    }

    /// The fixtures are real: their seeds must get past the first check of every harness
    /// that takes them, or the mutants start from nowhere.
    @Test func fixtureSeedsAreFound() {
        #expect(Self.seeds.images.count == Fixtures.decodable.count + 1)
        for target in [FuzzTarget.blkx, .plist, .adc, .zlib, .bzip2, .xz, .lzfse] {
            #expect(Self.seeds.inputs(for: target).count >= 2, "\(target)")
        }
    }

    /// The hand-made seeds are valid, so mutants start from inputs that reach deep.
    @Test func handMadeSeedsAreValid() throws {
        let image = try UDIFImage(file: MemoryFile(Seeds.handMadeImage()))
        #expect(Set(image.chunks.map(\.type)) == [.raw, .zeroFill, .zlib, .ignore, .adc, .lzfse])
        for (i, c) in image.chunks.enumerated() where c.type.hasStoredData {
            let want = c.type == .adc ? Array(String(repeating: "asr!", count: 128).utf8) : Array(Seeds.text.prefix(Int(c.length)))
            #expect(try image.decodeChunk(i) == want, "\(c.type)")
        }
        #expect(try ScanData.stored(in: image) != nil)
        for seed in Seeds.lzvnSeeds {
            let size = Int(seed[0]) << 8 | Int(seed[1])
            var stream = Array("bvxn".utf8)
            stream.appendLittleEndian(UInt32(size))
            stream.appendLittleEndian(UInt32(seed.count - 2))
            stream += seed.dropFirst(2) + Array("bvx$".utf8)
            var out = [UInt8](repeating: 0, count: size)
            let n = try stream.withUnsafeBytes { s in try out.withUnsafeMutableBytes { try LZFSE.decode(s, into: $0) } }
            #expect(n == size)
        }
        for seed in Seeds.bmapSeeds { #expect(throws: Never.self) { try BlockMapHarness.bmap(seed) } }
    }

    /// Every filesystem seed is made (the tools are installed by `make deps`) and mapped, so
    /// the mutants start from inputs that reach the bitmaps.
    @Test func filesystemSeedsAreMapped() {
        let seeds = Self.seeds.inputs(for: .filesystem)
        var names: [String] = []
        for seed in seeds {
            guard case .mapped(let map) = FilesystemUsage.examine(MemoryBytes(seed), offset: 0, length: UInt64(seed.count)) else {
                Issue.record("a \(seed.count)-byte seed is not mapped: \(FilesystemUsage.examine(MemoryBytes(seed), offset: 0, length: UInt64(seed.count)))")
                continue
            }
            names.append(map.filesystem)
        }
        #expect(names.sorted() == ["FAT12", "FAT16", "HFS+", "NTFS", "ext2", "ext4", "swap"])
    }
}
