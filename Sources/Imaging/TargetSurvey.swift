// TargetSurvey: what a target already holds of an image, found by reading it. It owns the
// hashing pass of an incremental restore and of `asr compare`.

import SystemPackage
import SystemSupport
import Crypto
import Foundation
import UDIF

/// Reads each range a scan expects from the target and checks it (SHA-256, or zeros for a
/// range of zeros), on a thread per core. A target that does not exist, and bytes past its
/// end, hold nothing; a range that cannot be read is not held (the restore writes it, and
/// verification has the last word). Free space (`unchecked` ranges) is never held: the
/// restore leaves it alone anyway. A regular file's holes are not read.
package struct TargetSurvey {
    package var reporter: Reporter
    package var workers = ProcessInfo.processInfo.activeProcessorCount

    package init(reporter: Reporter) { self.reporter = reporter }

    /// One read-and-check job: a whole range with a digest, or up to 8 MiB of a zero range
    /// (zero ranges can be gigabytes long and split freely; a digest cannot).
    private struct Piece: Sendable {
        var range: Int
        var offset: UInt64
        var length: UInt64
        var sha256: [UInt8]?
    }

    private struct State {
        var held: [Bool]
        var next = 0
        var done: UInt64 = 0
        var running: Int
    }

    /// For each of `ranges`, whether `path` holds it already. Progress goes to the reporter as
    /// the phase `label`/`key`.
    package func held(in path: String, ranges: [ExpectedRange], label: String = "\tComparing  ", key: String = "compare") throws -> [Bool] {
        guard let (file, size, isFile) = try Self.open(path) else { return [Bool](repeating: false, count: ranges.count) }
        // Held until a piece of it is found wanting; free space never.
        let initial = ranges.map { !$0.unchecked }
        var pieces: [Piece] = []
        for (i, r) in ranges.enumerated() where !r.unchecked {
            guard r.sha256 == nil else {
                pieces.append(Piece(range: i, offset: r.offset, length: r.length, sha256: r.sha256))
                continue
            }
            var at = r.offset
            while at < r.offset + r.length {
                let n = min(8 << 20, r.offset + r.length - at)
                pieces.append(Piece(range: i, offset: at, length: n, sha256: nil))
                at += n
            }
        }
        let total = pieces.reduce(0) { $0 + $1.length }
        let count = max(1, min(workers, pieces.count))
        let state = Monitor(State(held: initial, running: count))
        let list = pieces, reporter = self.reporter
        reporter.begin(label, key: key)
        defer { reporter.abandon() }
        // Threads of their own: a global queue's threads are shared with whatever else the
        // process runs, and this pass blocks on reads for as long as the disk takes.
        for _ in 0..<count {
            Thread {
                var buffer = [UInt8](repeating: 0, count: 1 << 20)
                while !Interruption.requested {
                    // The next piece, and whether its range is still in question (another
                    // piece of a long zero range may have settled it already).
                    let taken: (Int, Bool)? = state.update { s in
                        guard s.next < list.count else { return nil }
                        s.next += 1
                        return (s.next - 1, s.held[list[s.next - 1].range])
                    }
                    guard let (index, open) = taken else { break }
                    let piece = list[index]
                    let holds = open && Self.holds(piece, file, size: size, isFile: isFile, buffer: &buffer)
                    let done = state.update { s in
                        if !holds { s.held[piece.range] = false }
                        s.done += piece.length
                        return s.done
                    }
                    reporter.update(done, of: total)
                }
                state.update { $0.running -= 1 }
            }.start()
        }
        let held = state.wait(until: { $0.running == 0 }) { $0.held }
        if Interruption.requested { throw SystemError.interrupted }
        reporter.end()
        return held
    }

    /// The target opened for reading with its size, and whether it is a regular file; nil
    /// when it does not exist.
    private static func open(_ path: String) throws -> (FileIO, UInt64, Bool)? {
        var st = stat()
        guard stat(path, &st) == 0 else {
            if errno == ENOENT { return nil }
            throw SystemError.stat(path: path, Errno(rawValue: errno))
        }
        let file = try FileIO(path: path, flags: O_RDONLY)
        switch st.st_mode & S_IFMT {
        case S_IFBLK: return (file, try blockDeviceSize(file), false)
        case S_IFREG: return (file, UInt64(st.st_size), true)
        default: throw ImagingError.unusableTarget(path: path, .notDiskOrFile)
        }
    }

    private static func holds(_ piece: Piece, _ file: FileIO, size: UInt64, isFile: Bool, buffer: inout [UInt8]) -> Bool {
        guard piece.offset <= size, piece.length <= size - piece.offset else { return false }  // not there: not held
        if isFile, file.isHole(offset: piece.offset, length: piece.length) {
            return piece.sha256.map { $0 == zeroDigest(piece.length) } ?? true
        }
        var hasher = SHA256()
        var at = piece.offset
        while at < piece.offset + piece.length {
            let n = Int(min(UInt64(buffer.count), piece.offset + piece.length - at))
            let ok = buffer.withUnsafeMutableBytes { whole -> Bool in
                let part = UnsafeMutableRawBufferPointer(rebasing: whole[0..<n])
                guard (try? file.read(into: part, at: at)) != nil else { return false }
                if piece.sha256 == nil { return isAllZero(UnsafeRawBufferPointer(part)) }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(part))
                return true
            }
            if !ok { return false }
            at += UInt64(n)
        }
        return piece.sha256.map { Array(hasher.finalize()) == $0 } ?? true
    }

    /// The SHA-256 of `length` zeros, computed once per length (chunks share a few lengths).
    private static func zeroDigest(_ length: UInt64) -> [UInt8] {
        if let known = zeroDigests.withLock({ $0[length] }) { return known }
        var hasher = SHA256()
        hashZeros(&hasher, count: length)
        let digest = Array(hasher.finalize())
        zeroDigests.withLock { $0[length] = digest }
        return digest
    }

    private static let zeroDigests = Locked<[UInt64: [UInt8]]>([:])
}
