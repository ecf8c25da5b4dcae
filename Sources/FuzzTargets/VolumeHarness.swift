import Filesystems
import Foundation
import UDIF

/// A filesystem's tree as `asr mount` shows it under volumes/: `Volumes.openAll` (every volume
/// of an APFS container), then every directory listed, every node's attributes, file contents, link targets and extended
/// attributes read, within a budget. What must hold: a refusal is one line; reads fill no
/// more than asked, and fewer only at a file's end; a walk ends.
enum VolumeHarness {
    /// Nodes visited per input, so one input stays fast whatever its tree.
    static let budget = 400

    /// An APFS container with its objects' checksums resealed first, so mutants reach the
    /// parsers behind them (the checks themselves are tested on damaged containers in
    /// FilesystemsTests' APFSTests).
    static func apfs(_ input: [UInt8]) throws {
        var sealed = input
        APFSChecksum.reseal(&sealed)
        try walk(sealed, filesystems: ["APFS"])
    }

    static func walk(_ input: [UInt8], filesystems: Set<String>) throws {
        let found = Volumes.openAll(MemoryBytes(input), offset: 0, length: UInt64(input.count))
        try check(found.count <= 100, "\(found.count) volumes in one partition")
        for v in found { try walk(v.opening, filesystems: filesystems) }
    }

    static func walk(_ opening: VolumeOpening, filesystems: Set<String>) throws {
        let reader: any VolumeReader
        switch opening {
        case .failed(let name, let reason):
            try check(filesystems.contains(name), "a \(name) refusal from the \(filesystems) harness")
            try check(!reason.isEmpty && !reason.contains("\n"), "reason \(reason.debugDescription) for \(name)")
            return
        case .opened(let opened):
            reader = opened
        }
        try check(filesystems.contains(reader.filesystem), "opened as \(reader.filesystem)")
        var queue: [UInt64] = [reader.rootNode]
        var listed = Set<UInt64>()
        var visited = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        while let directory = queue.popLast(), visited < budget {
            guard listed.insert(directory).inserted, let entries = try? reader.entries(of: directory) else { continue }
            for e in entries where visited < budget {
                visited += 1
                try check(!e.name.isEmpty && !e.name.contains("/") && !e.name.unicodeScalars.contains("\0"), "entry name \(e.name.debugDescription)")
                guard let a = try? reader.attributes(of: e.node) else { continue }
                _ = try? reader.extendedAttributeNames(of: e.node).map { try? reader.extendedAttribute($0, of: e.node) }
                switch a.kind {
                case .directory:
                    queue.append(e.node)
                case .symbolicLink:
                    if let target = try? reader.linkTarget(of: e.node) { try check(target.count <= 1 << 16, "a \(target.count)-byte link target") }
                case .file:
                    // The start and the end of the file, and one piece in the middle.
                    for offset in Set([0, a.size / 2, a.size > 65536 ? a.size - 65536 : 0]) {
                        guard let n = try? buffer.withUnsafeMutableBytes({ try reader.read(e.node, at: offset, into: $0) }) else { continue }
                        try check(UInt64(n) == min(65536, a.size - min(offset, a.size)), "read \(n) bytes at \(offset) of \(a.size)")
                    }
                default:
                    break
                }
            }
        }
    }
}
