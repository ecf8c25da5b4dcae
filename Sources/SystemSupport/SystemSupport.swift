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

/// Text from a file, an image or the network as a terminal or a log may show it: the one
/// escaping rule for all of them. Text is shown as it is, or, when it holds anything a
/// terminal acts on or that reorders the text around it (C0 and C1 controls, DEL, bidi
/// embeddings, overrides, isolates and marks, line and paragraph separators), quoted with
/// those as visible escapes (`\x1b`, `\u{9B}`, `\u{202E}`) and `\` and `"` escaped. Nothing
/// is dropped, and a quoted form cannot be mistaken for plain text (which is quoted too when
/// it begins with a quote). Cut to `limit` characters (a 64 KiB name must not flood a log).
/// JSON output keeps the exact string instead (`terminalSafeJSON`).
public func displayable(_ text: String, limit: Int = 256) -> String {
    let scalars = text.unicodeScalars
    let cut = scalars.count > limit ? String(scalars.prefix(limit)) + "...(\(scalars.count - limit) more)" : text
    guard cut.unicodeScalars.contains(where: needsEscape) || cut.hasPrefix("\"") else { return cut }
    var out = "\""
    for scalar in cut.unicodeScalars {
        switch scalar.value {
        case 0x5C: out += "\\\\"
        case 0x22: out += "\\\""
        case 0x09: out += "\\t"
        case 0x0A: out += "\\n"
        case 0x0D: out += "\\r"
        case 0x00..<0x20, 0x7F: out += "\\x" + hexDigits(scalar.value, width: 2)
        case _ where needsEscape(scalar): out += "\\u{" + hexDigits(scalar.value, width: 1) + "}"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// JSON text (from JSONEncoder) made safe for a terminal without changing what it decodes to:
/// the scalars `displayable` escapes that JSONEncoder writes raw (C1 controls, DEL, bidi
/// overrides and isolates, separators) become `\uXXXX`. They can only occur inside strings.
public func terminalSafeJSON(_ json: String) -> String {
    var out = ""
    for scalar in json.unicodeScalars {
        if scalar.value >= 0x7F, needsEscape(scalar) {
            out += "\\u" + hexDigits(scalar.value, width: 4)
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// Scalars a terminal acts on or that reorder or break the text around them.
private func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
    switch scalar.value {
    case 0x00..<0x20, 0x7F...0x9F: true                // C0, DEL, C1 (U+009B is a CSI)
    case 0x061C, 0x200E, 0x200F: true                   // bidi marks
    case 0x2028, 0x2029: true                           // line and paragraph separators
    case 0x202A...0x202E, 0x2066...0x2069: true         // bidi embeddings, overrides, isolates
    default: false
    }
}

private func hexDigits(_ value: UInt32, width: Int) -> String {
    let digits = String(value, radix: 16, uppercase: width == 1 || width == 4)
    return String(repeating: "0", count: max(0, width - digits.count)) + digits
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
