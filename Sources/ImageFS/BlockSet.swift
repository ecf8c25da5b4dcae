/// A set of block numbers kept as sorted, disjoint, non-adjacent closed ranges: which blocks
/// of a writable disk its store file holds.
struct BlockSet: Sendable, Equatable {
    private(set) var ranges: [ClosedRange<UInt64>] = []

    init(_ ranges: [ClosedRange<UInt64>] = []) {
        for r in ranges { insert(r) }
    }

    var count: UInt64 { ranges.reduce(0) { $0 + $1.upperBound - $1.lowerBound + 1 } }

    func contains(_ block: UInt64) -> Bool {
        let i = firstIndex(endingAtOrAfter: block)
        return i < ranges.count && ranges[i].contains(block)
    }

    /// Index of the first range whose upper bound is at least `block`.
    private func firstIndex(endingAtOrAfter block: UInt64) -> Int {
        var lo = 0
        var hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].upperBound < block { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    mutating func insert(_ r: ClosedRange<UInt64>) {
        // Ranges touching or overlapping r (adjacent ones merge too).
        var lo = firstIndex(endingAtOrAfter: r.lowerBound == 0 ? 0 : r.lowerBound - 1)
        var merged = r
        var hi = lo
        while hi < ranges.count, ranges[hi].lowerBound <= r.upperBound &+ 1 {
            merged = min(merged.lowerBound, ranges[hi].lowerBound)...max(merged.upperBound, ranges[hi].upperBound)
            hi += 1
        }
        if lo > ranges.count { lo = ranges.count }
        ranges.replaceSubrange(lo..<hi, with: [merged])
    }

    mutating func remove(_ r: ClosedRange<UInt64>) {
        let lo = firstIndex(endingAtOrAfter: r.lowerBound)
        var hi = lo
        var kept: [ClosedRange<UInt64>] = []
        while hi < ranges.count, ranges[hi].lowerBound <= r.upperBound {
            let x = ranges[hi]
            if x.lowerBound < r.lowerBound { kept.append(x.lowerBound...(r.lowerBound - 1)) }
            if x.upperBound > r.upperBound { kept.append((r.upperBound + 1)...x.upperBound) }
            hi += 1
        }
        ranges.replaceSubrange(lo..<hi, with: kept)
    }

    /// The parts of `r` in the set (true) and not (false), in order.
    func split(_ r: ClosedRange<UInt64>) -> [(range: ClosedRange<UInt64>, inSet: Bool)] {
        var out: [(ClosedRange<UInt64>, Bool)] = []
        var at = r.lowerBound
        var i = firstIndex(endingAtOrAfter: at)
        while at <= r.upperBound {
            if i < ranges.count, ranges[i].lowerBound <= at {
                let end = min(ranges[i].upperBound, r.upperBound)
                out.append((at...end, true))
                i += 1
                if end == r.upperBound { break }
                at = end + 1
            } else {
                let end = i < ranges.count ? min(ranges[i].lowerBound - 1, r.upperBound) : r.upperBound
                out.append((at...end, false))
                if end == r.upperBound { break }
                at = end + 1
            }
        }
        return out
    }
}
