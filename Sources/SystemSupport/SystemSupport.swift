// SystemSupport: the operating-system layer every other module stands on.
//
// This module owns what is Linux rather than format or workflow: files read and written by
// offset (`FileIO`, on swift-system's `FileDescriptor`), holes and SEEK_DATA, outputs renamed
// into place only when complete (`TemporaryOutput`), the SIGINT/SIGTERM flag (`Interruption`),
// the ordered thread pool (`orderedParallelMap`), reusable I/O buffers, one EINTR retry, the
// kernel constants taken by name from the C shim, and the one protocol every user-facing error
// follows (`UserFacingError`). It knows nothing of disk images.

import CLinux
import SystemPackage
#if canImport(Glibc)
import Glibc
#endif

/// An error a person reads: `description` is one line saying what failed and where. The
/// command line prints it after "asr: " and exits with status 1; code branches on the cases.
public protocol UserFacingError: Error, CustomStringConvertible, Sendable {}

/// Text from a file or the network as a message may show it: as it is, or quoted with escapes
/// when it holds control characters (a line break in a name must not break the message's line),
/// and cut to `limit` characters (a 64 KiB name must not flood a log).
public func displayable(_ text: String, limit: Int = 256) -> String {
    let cut = text.count > limit ? String(text.prefix(limit)) + "...(\(text.count - limit) more)" : text
    return cut.unicodeScalars.allSatisfy { $0.value >= 0x20 && $0.value != 0x7F } ? cut : cut.debugDescription
}

/// Bytes as lowercase hex digits (digests, keys, identities).
public func hex(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8]()
    out.reserveCapacity(bytes.count * 2)
    for b in bytes {
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// What a system call said, as a user reads it.
public func errnoString(_ code: Int32 = errno) -> String { Errno(rawValue: code).description }

/// Runs a system call until it is not interrupted; -1 becomes the `Errno` it set.
@discardableResult
package func retryingInterrupts<T: FixedWidthInteger>(_ call: () -> T) throws(Errno) -> T {
    while true {
        let result = call()
        if result != -1 { return result }
        if errno != EINTR { throw Errno(rawValue: errno) }
    }
}

/// Kernel constants by name; Glibc's overlay hides them (see CLinux/shim.c).
package enum Kernel {
    package static let seekData = FileDescriptor.SeekOrigin(rawValue: asr_SEEK_DATA)
    package static let seekHole = FileDescriptor.SeekOrigin(rawValue: asr_SEEK_HOLE)
    package static let punchHoleKeepSize = asr_FALLOC_FL_PUNCH_HOLE | asr_FALLOC_FL_KEEP_SIZE
    package static let keepSize = asr_FALLOC_FL_KEEP_SIZE
    package static let udpSegment = asr_UDP_SEGMENT
    package static let udpGRO = asr_UDP_GRO
    package static let receiveBufferForce = asr_SO_RCVBUFFORCE
    package static let spawnSetSID = asr_POSIX_SPAWN_SETSID
    package static let blockZeroOut = asr_BLKZEROOUT
    package static let blockGetSize64 = asr_BLKGETSIZE64
}

/// A failed system call on a file or descriptor, with the path and offset it concerned.
public enum SystemError: UserFacingError, Equatable {
    case open(path: String, Errno)
    case stat(path: String, Errno)
    case read(path: String, offset: UInt64, Errno)
    /// The file ended before the bytes wanted: a short file is an error, never zeros.
    case endOfFile(path: String, offset: UInt64, wanted: Int, start: UInt64)
    case write(path: String, offset: UInt64, Errno)
    case resize(path: String, Errno)
    case flush(path: String, Errno)
    case rename(to: String, Errno)
    /// Any other call: `what` says what was being done ("create a pipe").
    case call(what: String, Errno)
    case interrupted

    public var description: String {
        switch self {
        case .open(let path, let e): "cannot open \(path): \(e)"
        case .stat(let path, let e): "cannot stat \(path): \(e)"
        case .read(let path, let offset, let e): "cannot read \(path) at byte \(offset): \(e)"
        case .endOfFile(let path, let offset, let wanted, let start):
            "\(path) ends at byte \(offset), before the \(wanted) bytes wanted at \(start)"
        case .write(let path, let offset, let e): "cannot write \(path) at byte \(offset): \(e)"
        case .resize(let path, let e): "cannot set size of \(path): \(e)"
        case .flush(let path, let e): "cannot flush \(path): \(e)"
        case .rename(let to, let e): "cannot move the finished file to \(to): \(e)"
        case .call(let what, let e): "cannot \(what): \(e)"
        case .interrupted: "interrupted"
        }
    }

    /// The errno behind the failure, where there is one.
    public var errno: Errno? {
        switch self {
        case .open(_, let e), .stat(_, let e), .read(_, _, let e), .write(_, _, let e), .resize(_, let e),
             .flush(_, let e), .rename(_, let e), .call(_, let e): e
        case .endOfFile, .interrupted: nil
        }
    }
}
