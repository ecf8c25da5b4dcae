import Filesystems
import Foundation
import SystemSupport
import Testing
import TestSupport
import UDIF

/// The filesystem tools, run as a user would. They are required (`make deps` installs them):
/// a missing tool fails the test that needs it.
enum Tool {
    static let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    static func exists(_ name: String) -> Bool {
        path.split(separator: ":").contains { FileManager.default.isExecutableFile(atPath: "\($0)/\(name)") }
    }

    struct Output {
        var status: Int32
        var text: String
    }

    /// Runs a tool with stdout and stderr together; throws unless it exits with one of `accept`.
    @discardableResult
    static func run(_ arguments: [String], accept: Set<Int32> = [0]) throws -> String {
        let out = try output(arguments)
        guard accept.contains(out.status) else {
            throw TestFailure("\(arguments.joined(separator: " ")) exited \(out.status): \(out.text)")
        }
        return out.text
    }

    static func output(_ arguments: [String]) throws -> Output {
        guard exists(arguments[0]) else { throw TestFailure("\(arguments[0]) is not installed (make deps installs it)") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["PATH"] = path
        environment["LC_ALL"] = "C.UTF-8"
        environment["MTOOLS_SKIP_CHECK"] = "1"
        p.environment = environment
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, text: String(decoding: data, as: UTF8.self))
    }
}

func contents(_ path: String) throws -> [UInt8] { try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) }
func write(_ bytes: [UInt8], to path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

func randomBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    return (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
}

/// An empty file of `size` bytes (sparse).
func emptyFile(_ path: String, size: Int) throws {
    guard FileManager.default.createFile(atPath: path, contents: nil) else { throw TestFailure("cannot create \(path)") }
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try handle.truncate(atOffset: UInt64(size))
    try handle.close()
}

func examine(_ bytes: [UInt8]) -> FilesystemFinding {
    FilesystemUsage.examine(MemorySource(bytes: bytes), offset: 0, length: UInt64(bytes.count))
}

/// The map of a whole partition, which must be mapped and well formed.
func mapped(_ bytes: [UInt8]) throws -> UsageMap {
    let finding = examine(bytes)
    guard case .mapped(let map) = finding else { throw TestFailure("not mapped: \(finding)") }
    try checkWellFormed(map, length: UInt64(bytes.count))
    return map
}

/// Sorted, disjoint, merged, non-empty ranges inside the partition.
func checkWellFormed(_ map: UsageMap, length: UInt64) throws {
    guard map.length == length else { throw TestFailure("map length \(map.length), partition \(length)") }
    var end: UInt64? = nil
    for r in map.allocated {
        guard !r.isEmpty, r.upperBound <= length else { throw TestFailure("range \(r) outside the partition") }
        if let end, r.lowerBound <= end { throw TestFailure("ranges overlap, touch or are unsorted at \(r)") }
        end = r.upperBound
    }
}

extension UsageMap {
    /// Whether every byte of `range` is allocated.
    func covers(_ range: Range<UInt64>) -> Bool {
        allocated.contains { $0.lowerBound <= range.lowerBound && range.upperBound <= $0.upperBound }
    }

    /// Whether any byte of `range` is allocated.
    func touches(_ range: Range<UInt64>) -> Bool {
        allocated.contains { $0.overlaps(range) }
    }
}

/// Overwrites every byte the map leaves out with 0xA5; returns how many it overwrote.
@discardableResult
func wipeUnallocated(_ bytes: inout [UInt8], _ map: UsageMap) -> Int {
    var wiped = 0
    var position = 0
    for r in map.allocated + [map.length..<map.length] {
        for i in position..<Int(r.lowerBound) { bytes[i] = 0xA5 }
        wiped += Int(r.lowerBound) - position
        position = Int(r.upperBound)
    }
    return wiped
}

/// Where each whole 512-byte piece of `content` lies in `image` (at 512-byte boundaries), as
/// found by its bytes: the truth of where a file's data is, whatever the filesystem says.
/// Throws when a piece is not in the image. `content` must be random (every piece unique).
func locate(_ content: [UInt8], in image: [UInt8]) throws -> [Range<UInt64>] {
    func key(_ bytes: ArraySlice<UInt8>) -> UInt64 { bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) } }
    var index: [UInt64: [Int]] = [:]
    for at in stride(from: 0, to: image.count - 511, by: 512) { index[key(image[at..<(at + 512)]), default: []].append(at) }
    var found: [Range<UInt64>] = []
    for piece in stride(from: 0, to: content.count - 511, by: 512) {
        let want = content[piece..<(piece + 512)]
        guard let at = index[key(want)]?.first(where: { image[$0..<($0 + 512)] == want }) else {
            throw TestFailure("bytes \(piece)..<\(piece + 512) of the file are not in the image")
        }
        found.append(UInt64(at)..<UInt64(at + 512))
    }
    return found
}

/// A folder of files to put in a filesystem: random data (so `locate` finds each piece), a text
/// file and a nested one.
struct SampleFiles {
    let keep = randomBytes(300 << 10, seed: 11)
    let big = randomBytes(1 << 20, seed: 12)
    let nested = randomBytes(64 << 10, seed: 13)
    let notes = Array(String(repeating: "asr images only what the filesystem uses.\n", count: 40).utf8)
}
