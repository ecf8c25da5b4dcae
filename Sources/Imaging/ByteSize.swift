import Foundation

/// Sizes as users write them: plain bytes or a K/M/G/T suffix (powers of 1024), with an
/// optional trailing "B" or "iB".
public enum ByteSize {
    public static func parse(_ text: String) throws -> UInt64 {
        var s = text.trimmingCharacters(in: .whitespaces).uppercased()
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("B"), s.count > 1 { s.removeLast() }
        var shift: UInt64 = 0
        if let last = s.last, let p = "KMGTP".firstIndex(of: last) {
            shift = UInt64("KMGTP".distance(from: "KMGTP".startIndex, to: p) + 1) * 10
            s.removeLast()
        }
        guard let value = UInt64(s), value > 0 else { throw ImagingError.invalidSize(text, tooLarge: false) }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { throw ImagingError.invalidSize(text, tooLarge: true) }
        return bytes
    }

    /// "1.5 GiB" style, for humans.
    public static func format(_ bytes: UInt64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var v = Double(bytes)
        var u = 0
        while v >= 1024, u < units.count - 1 { v /= 1024; u += 1 }
        return u == 0 ? "\(bytes) bytes" : String(format: "%.1f %@", v, units[u])
    }
}
