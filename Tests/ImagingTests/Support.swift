import Crypto
import Foundation
import Imaging
import SystemSupport
import TestSupport
import UDIF

/// A file read through another that shows each read's offset to `hook` first, until the hook
/// returns true: how a test makes something happen at a known point of a read pipeline.
final class HookedFile: RandomAccessFile, @unchecked Sendable {
    let base: any RandomAccessFile
    let hook: @Sendable (_ offset: UInt64) -> Bool
    private let lock = NSLock()
    private var fired = false

    init(_ base: any RandomAccessFile, hook: @escaping @Sendable (_ offset: UInt64) -> Bool) {
        self.base = base
        self.hook = hook
    }

    var path: String { base.path }
    func size() throws -> UInt64 { try base.size() }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        lock.lock()
        if !fired { fired = hook(offset) }
        lock.unlock()
        try base.read(into: buffer, at: offset)
    }
}

let mib = 1 << 20

/// A disk of `mebibytes` MiB, one kind of content per MiB so each 1 MiB chunk is one kind:
/// text (compresses), noise (stored raw), zeros (zero-fill). The first and last MiB hold noise,
/// so a wipe of the ends shows; `textAtEnd` makes the last text, for raw images: opening one
/// decodes its last MiB as a string, and invalid UTF-8 there throws internally once per byte,
/// which Swift Testing's backtrace capture makes take seconds.
func sampleDisk(mebibytes: Int, seed: UInt64 = 1, textAtEnd: Bool = false) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var bytes = [UInt8](repeating: 0, count: mebibytes * mib)
    let words = Array("the quick brown fox jumps over the lazy dog 0123456789\n".utf8)
    for m in 0..<mebibytes {
        let kind = m == mebibytes - 1 ? (textAtEnd ? 0 : 1) : m == 0 ? 1 : m % 3
        for i in (m * mib)..<((m + 1) * mib) {
            switch kind {
            case 0: bytes[i] = words[i % words.count]
            case 1: bytes[i] = UInt8(truncatingIfNeeded: rng.next())
            default: break
            }
        }
    }
    return bytes
}

/// Writes `disk` as an image in `dir` (one region: the sample has no partition map).
func makeImage(_ disk: [UInt8], in dir: TemporaryDirectory, name: String = "disk.dmg", format: ImageFormat = .udzo) throws -> String {
    let path = dir.file(name)
    try ImageWriter(format: format).write(from: MemorySource(bytes: disk), to: path)
    return path
}

func scannedImage(_ disk: [UInt8], in dir: TemporaryDirectory, name: String = "disk.dmg", format: ImageFormat = .udzo) throws -> String {
    let path = try makeImage(disk, in: dir, name: name, format: format)
    guard try ImageScanner(reporter: Reporter(.quiet)).scan(path) == .scanned else { throw TestFailure("\(path) was not scanned") }
    return path
}

func contents(_ path: String) throws -> [UInt8] { try [UInt8](Data(contentsOf: URL(fileURLWithPath: path))) }

func sha256(_ bytes: [UInt8]) -> [UInt8] { Array(SHA256.hash(data: bytes)) }

/// Flips one bit at `offset` of a file.
func flipBit(in path: String, at offset: UInt64) throws {
    let file = try FileIO(path: path, flags: O_RDWR)
    var byte = try file.read(at: offset, count: 1)
    byte[0] ^= 0x10
    try file.write(byte, at: offset)
}

/// Temporary files a failed scan or write may leave beside its output.
func partialFiles(in dir: TemporaryDirectory) throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".partial-") }
}

/// The first and last MiB of a restored target, which a failed restore must leave zero.
func endsAreZero(_ path: String) throws -> Bool {
    let bytes = try contents(path)
    guard bytes.count >= 2 * mib else { return bytes.allSatisfy { $0 == 0 } }
    return bytes[..<mib].allSatisfy { $0 == 0 } && bytes[(bytes.count - mib)...].allSatisfy { $0 == 0 }
}
