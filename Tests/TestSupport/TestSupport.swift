// What every test target shares: the shared fixtures and temporary folders.

import Foundation
import SystemSupport
import UDIF

public enum Fixtures {
    /// ../shared beside the checkout, as CI lays it out.
    public static let shared: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("shared")
    public static let directory = shared.appendingPathComponent("fixtures/udif")
    /// Raw filesystems (apfs.raw), with a README naming their contents.
    public static let filesystems = shared.appendingPathComponent("fixtures/fs")

    /// A raw filesystem fixture's path; a missing one is a failure (never a skip), as CI
    /// always has ../shared.
    public static func filesystem(_ name: String) throws -> String {
        let path = filesystems.appendingPathComponent(name).path
        guard FileManager.default.fileExists(atPath: path) else { throw TestFailure("fixture \(path) is missing (../shared/fixtures/fs)") }
        return path
    }
    /// The independent UDIF checker.
    public static let checker = shared.appendingPathComponent("tools/udif_check.py").path

    public struct Expected: Sendable {
        public let name: String
        public let sha256: String
        public let size: UInt64
        public var path: String { Fixtures.directory.appendingPathComponent(name).path }
    }

    /// From raw.sha256: "SHA256  SIZE  NAME" per line.
    public static let all: [Expected] = {
        let text = (try? String(contentsOf: directory.appendingPathComponent("raw.sha256"), encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count == 3, let size = UInt64(f[1]) else { return nil }
            return Expected(name: String(f[2]), sha256: String(f[0]), size: size)
        }
    }()

    /// The fixtures the reader decodes: all of them, LZFSE included.
    public static var decodable: [Expected] { all }
}

/// A fresh folder under the temporary directory, removed with its contents when released.
public final class TemporaryDirectory {
    public let path: String

    public init() {
        path = NSTemporaryDirectory() + "asr-test-" + UUID().uuidString
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    public func file(_ name: String) -> String { path + "/" + name }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A test's own failure: something a test helper found wrong, not an error of the code under test.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

extension SplitMix64 {
    /// The seed a randomized test starts from: $ASR_TEST_SEED when set (to replay a failure),
    /// else the test's own fixed default.
    package static func seed(default value: UInt64) -> UInt64 {
        ProcessInfo.processInfo.environment["ASR_TEST_SEED"].flatMap { UInt64($0) } ?? value
    }
}

/// A disk or partition held in memory.
package struct MemorySource: ByteSource {
    package let bytes: [UInt8]
    package var byteCount: UInt64 { UInt64(bytes.count) }

    package init(bytes: [UInt8]) { self.bytes = bytes }

    package func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        guard offset <= byteCount, UInt64(buffer.count) <= byteCount - offset else { throw TestFailure("read past the end") }
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<(Int(offset) + buffer.count)])) }
    }
}

/// Where an HFS+ volume's catalog B-tree is, read from its bytes (the volume header's first
/// catalog extent): for tests that damage it on purpose.
package struct HFSCatalogLayout {
    package let blockSize: Int
    package let totalBlocks: Int
    /// Byte offset of the catalog file in the volume.
    package let start: Int
    package let nodeSize: Int
    package let rootNode: Int
    package let firstLeaf: Int
    package let depth: Int

    package init(_ volume: [UInt8]) {
        func be(_ at: Int, _ n: Int) -> Int { volume[at..<(at + n)].reduce(0) { $0 << 8 | Int($1) } }
        blockSize = be(1024 + 40, 4)
        totalBlocks = be(1024 + 44, 4)
        start = be(1024 + 288, 4) * blockSize
        depth = be(start + 14, 2)
        rootNode = be(start + 16, 4)
        firstLeaf = be(start + 24, 4)
        nodeSize = be(start + 32, 2)
    }

    package func node(_ n: Int) -> Int { start + n * nodeSize }
}

/// 7-Zip's `7zz l -slt` output: one block per item (the archive's own header first), each
/// "Key = value" line a field.
public enum SevenZipListing {
    public static func items(_ text: String) -> [[String: String]] {
        text.components(separatedBy: "\n\n").map { block in
            var fields: [String: String] = [:]
            for line in block.split(separator: "\n") {
                guard let eq = line.range(of: " = ") else { continue }
                fields[String(line[..<eq.lowerBound])] = String(line[eq.upperBound...])
            }
            return fields
        }
    }
}
