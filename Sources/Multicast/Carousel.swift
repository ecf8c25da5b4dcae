/// Decides what the server sends next: a need-driven carousel. A cursor goes round the
/// manifest in disk order, wrapping (each wrap starts a new pass), and stops only at chunks
/// some connected client still lacks; chunks nobody needs are skipped, and when nobody needs
/// anything nothing is sent. A client that joins late takes the stream from where it is and
/// gets the head when the cursor comes round to it, so the clients already there never wait
/// for it. What a client lost of chunks already behind the cursor goes first: lacking
/// fragments however many, and whole chunks sent since it joined (a burst can take a large
/// part of a chunk, or all of a small one, and a client that waited for the cursor for it
/// would wait behind a late joiner's head). A late joiner's head waits for the cursor. No I/O and no clock: fed reports, asked for the
/// next chunk. Who is connected, and whether to send at all, is `ClientRoster`'s business.
package struct Carousel: Sendable {
    package typealias ClientID = Int
    /// A chunk to send, the pass it belongs to, which of its fragments (nil: all), and whether
    /// it is a repair (sent behind the cursor, for a client that lost it) rather than the cursor's.
    package typealias Next = (chunk: Int, pass: UInt32, fragments: [UInt16]?, repair: Bool)

    /// What one client lacks, as its latest report said, and where it was in the stream.
    struct Need: Sendable {
        /// Chunks it has nothing of.
        var whole: Bits
        /// Chunks it has in part: the fragments it lacks, sorted.
        var partial: [Int: [UInt16]] = [:]
        var position: (pass: UInt32, chunk: Int)?
        /// It had heard nothing for a while when it reported: nothing is on its way to it.
        var quiet = false
        /// Where the cursor was when it first reported: what the cursor sent from there on and
        /// it lacks whole was lost (a small chunk fits in one GSO burst), not a head.
        var joined: (pass: UInt32, cursor: Int) = (0, 0)
        /// Fragments it asked for in its first report and the fewest since, and repairs sent
        /// for it (fragments): it is owed repairs for what it stopped asking for, never for
        /// what it says it has.
        var first = 0
        var fewest = 0
        var spent = 0
        var credit: Int { Carousel.repairFloor + (first - fewest) / Carousel.repairShare - spent }
    }

    /// A report as the server takes it: what the client lacks, checked against the manifest.
    /// Built by `Shape` outside the server's lock; applied under it by `update(_:with:)`.
    package struct NeedSet: Sendable {
        var whole: Bits
        var partial: [Int: [UInt16]]
        package let position: (pass: UInt32, chunk: UInt32)?
        package let quiet: Bool
        /// Chunks it asks for (whole or in part) and fragments in all: what the server can see
        /// of its progress.
        package let chunks: Int
        package let fragments: Int
    }

    /// A report naming more than the image has: a protocol error.
    package struct OversizedReport: Error, Sendable, CustomStringConvertible {
        package let description: String
    }

    /// The manifest as reports are judged against it: immutable, so need sets are built
    /// outside the server's lock, each at a cost bounded by the image.
    package struct Shape: Sendable {
        let fragmentCounts: [Int]
        let hasData: Bits
        package var chunkCount: Int { fragmentCounts.count }
        /// Fragments of every chunk that travels.
        package let totalFragments: Int
        /// The largest REPORT frame (type byte and payload) a client of this image can need to
        /// send: each chunk in at most one range and one partial entry, each fragment listed
        /// at most once. A larger one is refused before its bytes are read.
        package let maxReportBytes: Int

        package init(manifest: [ManifestEntry]) {
            let n = manifest.count
            fragmentCounts = manifest.map { $0.storedLength > 0 ? $0.fragmentCount : 0 }
            var data = Bits(count: n)
            for c in manifest.indices where manifest[c].storedLength > 0 { data.insert(c) }
            hasData = data
            totalFragments = fragmentCounts.reduce(0, +)
            let partial = min(n, ControlMessage.Report.maxPartialChunks)
            let listed = min(totalFragments, partial * (fragmentCounts.max() ?? 0))
            maxReportBytes = 1 + 53 + 8 * min(n, ControlMessage.Report.maxRanges) + 6 * partial + 2 * listed
        }

        /// What `report` says its client lacks. Chunks past the end or without data and
        /// fragments past a chunk's last are ignored and overlapping ranges count once, but a
        /// report with more ranges, partial chunks or fragments than the image has is refused.
        package func need(from report: ControlMessage.Report) throws(OversizedReport) -> NeedSet {
            let n = chunkCount
            guard report.missing.count <= n, report.fragments.count <= n else {
                throw OversizedReport(description: "a REPORT of \(report.missing.count) ranges and \(report.fragments.count) partial chunks for an image of \(n) chunks")
            }
            let listed = report.fragments.reduce(0) { $0 + $1.missing.count }
            guard listed <= totalFragments else {
                throw OversizedReport(description: "a REPORT listing \(listed) fragments for an image of \(totalFragments)")
            }
            var whole = Bits(count: n)
            var covered = 0  // chunks below this came from an earlier range
            for (first, count) in report.missing.sorted(by: { $0.0 < $1.0 }) {
                let start = max(Int(first), covered)
                let end = min(Int(first) + Int(count), n)
                guard start < end else { continue }
                whole.insert(start..<end)
                covered = end
            }
            whole.formIntersection(hasData)
            var lacking: [Int: Set<UInt16>] = [:]
            for (chunk, missing) in report.fragments {
                let c = Int(chunk)
                guard c < n, !whole.contains(c) else { continue }
                let valid = missing.filter { Int($0) < fragmentCounts[c] }
                if !valid.isEmpty { lacking[c, default: []].formUnion(valid) }
            }
            var fragments = lacking.values.reduce(0) { $0 + $1.count }
            var at = 0
            while let c = whole.first(from: at, below: n) {
                fragments += fragmentCounts[c]
                at = c + 1
            }
            return NeedSet(whole: whole, partial: lacking.mapValues { $0.sorted() }, position: report.position, quiet: report.quiet,
                           chunks: whole.population + lacking.count, fragments: fragments)
        }
    }

    /// Repairs a client may ask for before it has shown progress, in fragments (about 90 KB):
    /// enough for a few lost bursts. Beyond that, one fragment of repair is earned by each
    /// four it stops asking for; what it is not owed waits for the cursor.
    static let repairFloor = 64
    static let repairShare = 4

    /// Manifest indices of the chunks that travel (zero chunks do not).
    package let sendable: [Int]
    package let shape: Shape
    private var fragmentCounts: [Int] { shape.fragmentCounts }
    package var chunkCount: Int { fragmentCounts.count }
    package private(set) var pass: UInt32 = 0
    /// The next chunk the cursor looks at.
    package private(set) var cursor = 0
    private var needs: [ClientID: Need] = [:]
    /// Per chunk: clients that lack all of it, and clients that lack some of its fragments.
    private var wholeCount: [Int32]
    private var partCount: [Int32]
    /// Chunks some client lacks (a count above is not zero), and how many there are.
    private var wanted: Bits
    package private(set) var wantedCount = 0
    /// The pass in which the cursor last sent each chunk (`never` if it has not).
    private var sentPass: [UInt32]
    private static let never = UInt32.max
    /// Repairs to send before the cursor moves on, each for the clients that earned it, and
    /// for chunks repaired since the cursor last sent them, the last chunk the cursor had sent
    /// then: a client that has seen nothing after that may not have the repair yet.
    private var repairs: [Int: Set<ClientID>] = [:]
    private var repairedAt: [Int: (pass: UInt32, chunk: Int)] = [:]
    /// The chunk last handed out: the server is sending it until it asks for the next one.
    private var inFlight: Int?

    package init(manifest: [ManifestEntry]) {
        let n = manifest.count
        sendable = manifest.indices.filter { manifest[$0].storedLength > 0 }
        shape = Shape(manifest: manifest)
        wholeCount = Array(repeating: 0, count: n)
        partCount = Array(repeating: 0, count: n)
        wanted = Bits(count: n)
        sentPass = Array(repeating: Self.never, count: n)
    }

    /// Nobody connected lacks anything: the stream stops.
    package var isIdle: Bool { wantedCount == 0 }

    /// Whether the client's latest report said it lacks some or all of `chunk`; nil for a
    /// client the carousel does not know.
    package func needs(_ id: ClientID, chunk: Int) -> Bool? {
        guard let need = needs[id] else { return nil }
        return need.whole.contains(chunk) || need.partial[chunk] != nil
    }

    /// A client's report replaces what it lacked before (see `Shape.need`); false if it was
    /// refused as larger than the image allows. For tests: the server builds the need set
    /// outside its lock and calls `update(_:with:)` with it.
    @discardableResult
    package mutating func update(_ id: ClientID, with report: ControlMessage.Report) -> Bool {
        guard let need = try? shape.need(from: report) else { return false }
        update(id, with: need)
        return true
    }

    /// A client's need set replaces what it lacked before. The work under the server's lock
    /// is linear in the manifest's bitset words and the chunks the client has in part.
    package mutating func update(_ id: ClientID, with set: NeedSet) {
        var need = Need(whole: set.whole, partial: set.partial)
        // Pass and chunk numbers come from unauthenticated packets: a position past the stream
        // (a forged one) is taken no further than where the stream is.
        need.position = set.position.map { p in
            p.pass > pass || (p.pass == pass && Int(p.chunk) >= cursor) ? (pass, cursor - 1) : (p.pass, Int(p.chunk))
        }
        need.quiet = set.quiet
        let old = needs[id]
        need.joined = old?.joined ?? (pass, cursor)
        // Repairs are earned by progress the server can see: fragments it stopped asking for.
        need.first = old?.first ?? set.fragments
        need.fewest = min(old?.fewest ?? .max, set.fragments)
        need.spent = old?.spent ?? 0
        var credit = need.credit
        func repair(_ c: Int, costing cost: Int) {
            guard cost <= credit else { return }  // the cursor brings it
            credit -= cost
            need.spent += cost
            repairs[c, default: []].insert(id)
        }
        // What it lost of chunks the cursor has gone past is repaired now, not a round later:
        // lacking fragments, and whole chunks sent since it joined.
        for (c, lacking) in set.partial.sorted(by: { $0.key < $1.key })
        where behindCursor(c) && !pending(need, c) && !repairPending(need, c) {
            repair(c, costing: lacking.count)
        }
        // A client that has heard no packet of the session (no position) gets no repairs: none
        // would reach it, and quiet at every report, it would have every chunk behind the
        // cursor sent again each time, holding back the clients that hear.
        let sinceJoining = need.position == nil ? 0..<0
            : need.joined.pass == pass ? need.joined.cursor..<max(cursor, need.joined.cursor) : 0..<chunkCount
        var at = sinceJoining.lowerBound
        while credit > 0, let c = need.whole.first(from: at, below: sinceJoining.upperBound) {
            if lost(need, c) && behindCursor(c) && !pending(need, c) && !repairPending(need, c) { repair(c, costing: fragmentCounts[c]) }
            at = c + 1
        }
        replace(id, with: need)
    }

    /// The cursor sent `c` after the client joined, and the client lacks it.
    private func lost(_ need: Need, _ c: Int) -> Bool {
        let sent = sentPass[c]
        guard sent != Self.never else { return false }
        return sent > need.joined.pass || (sent == need.joined.pass && c >= need.joined.cursor)
    }

    /// The client left, was dropped or is done: it lacks nothing any more.
    package mutating func forget(_ id: ClientID) {
        replace(id, with: nil)
    }

    /// The next chunk to send, its pass and fragments (nil: all); nil when no connected
    /// client lacks anything that is not already on its way to it.
    package mutating func next() -> Next? {
        inFlight = nil
        while let c = repairs.keys.min() {
            let clients = repairs.removeValue(forKey: c) ?? []
            let fragments: [UInt16]?
            switch plan(c, repair: clients) {
            case .nothing: continue
            case .all: fragments = nil
            case .fragments(let some): fragments = some
            }
            repairedAt[c] = (pass, cursor - 1)
            inFlight = c
            return (c, pass, fragments, true)
        }
        guard wantedCount > 0 else { return nil }
        if let (c, fragments) = firstEligible(from: cursor, to: chunkCount) {
            return send(c, fragments)
        }
        if let (c, fragments) = firstEligible(from: 0, to: min(cursor, chunkCount)) {
            pass &+= 1  // the cursor wrapped
            repairs.removeAll()
            return send(c, fragments)
        }
        return nil
    }

    private mutating func send(_ c: Int, _ fragments: [UInt16]?) -> Next {
        cursor = c + 1
        inFlight = c
        sentPass[c] = pass
        repairedAt[c] = nil
        return (c, pass, fragments, false)
    }

    private func firstEligible(from start: Int, to end: Int) -> (Int, [UInt16]?)? {
        var at = start
        while let c = wanted.first(from: at, below: end) {
            switch plan(c, repair: nil) {
            case .all: return (c, nil)
            case .fragments(let fragments): return (c, fragments)
            case .nothing: at = c + 1
            }
        }
        return nil
    }

    private enum Plan { case nothing, all, fragments([UInt16]) }

    /// What to send of chunk `c` for the clients it is not already on its way to. A repair
    /// (`repair`: the clients that earned it) serves them alone and sends only fragments unless
    /// one of them lost the whole chunk; the others get it when the cursor comes round.
    private func plan(_ c: Int, repair clients: Set<ClientID>?) -> Plan {
        let repair = clients != nil
        var fragments = Set<UInt16>()
        for (id, need) in needs where !pending(need, c) && clients?.contains(id) ?? true {
            if need.whole.contains(c) {
                // A client that hears nothing gets no repairs (see `update`), whole or not.
                if !repair || (lost(need, c) && need.position != nil) { return .all }
            } else if let lacking = need.partial[c] {
                fragments.formUnion(lacking)
            }
        }
        return fragments.isEmpty ? .nothing : .fragments(fragments.sorted())
    }

    /// The cursor sent `c` since it was last at the cursor's place: its next time round is a
    /// whole round away.
    private func behindCursor(_ c: Int) -> Bool {
        let sent = sentPass[c]
        guard sent != Self.never else { return false }
        return (sent == pass && c < cursor) || (sent &+ 1 == pass && c >= cursor)
    }

    /// The last repair of `c` may still be on its way to this client: it has heard nothing the
    /// cursor sent after it, and was still hearing data.
    private func repairPending(_ need: Need, _ c: Int) -> Bool {
        guard let at = repairedAt[c], !need.quiet else { return false }
        guard let position = need.position else { return true }
        return position.pass < at.pass || (position.pass == at.pass && position.chunk <= at.chunk)
    }

    /// What the cursor last sent of `c` may still be on its way to this client: it is being
    /// sent now, or it was sent after (or at) the last chunk the client had seen when it
    /// reported and the client was still hearing data. Asking for it again now would send it twice.
    private func pending(_ need: Need, _ c: Int) -> Bool {
        if c == inFlight { return true }
        guard !need.quiet, let position = need.position else { return false }
        let sent = sentPass[c]
        guard sent != Self.never else { return false }
        return sent > position.pass || (sent == position.pass && c >= position.chunk)
    }

    /// Swaps a client's need set and brings the per-chunk counts along, touching only what
    /// changed: a report costs a pass over the bitset words, not over every client.
    private mutating func replace(_ id: ClientID, with new: Need?) {
        let old = needs[id]
        let empty = Bits(count: chunkCount)
        let before = old?.whole ?? empty, after = new?.whole ?? empty
        var changes: [(chunk: Int, whole: Bool, delta: Int32)] = []
        before.forEachDifference(after) { c, added in changes.append((c, true, added ? 1 : -1)) }
        let oldPartial = old?.partial ?? [:], newPartial = new?.partial ?? [:]
        for c in oldPartial.keys where newPartial[c] == nil { changes.append((c, false, -1)) }
        for c in newPartial.keys where oldPartial[c] == nil { changes.append((c, false, 1)) }
        for change in changes { adjust(change.chunk, whole: change.whole, by: change.delta) }
        needs[id] = new
    }

    private mutating func adjust(_ c: Int, whole: Bool, by delta: Int32) {
        let was = wholeCount[c] + partCount[c] > 0
        if whole { wholeCount[c] += delta } else { partCount[c] += delta }
        let now = wholeCount[c] + partCount[c] > 0
        if was != now {
            if now { wanted.insert(c); wantedCount += 1 } else { wanted.remove(c); wantedCount -= 1 }
        }
    }
}

/// A fixed-size set of chunk indices, 64 to a word: unions, differences and "next member
/// from here" cost a word at a time.
struct Bits: Sendable, Equatable {
    private(set) var words: [UInt64]
    let count: Int

    init(count: Int) {
        self.count = count
        words = Array(repeating: 0, count: (count + 63) / 64)
    }

    /// How many members.
    var population: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    func contains(_ i: Int) -> Bool { i >= 0 && i < count && words[i >> 6] & (1 << UInt64(i & 63)) != 0 }
    mutating func insert(_ i: Int) { words[i >> 6] |= 1 << UInt64(i & 63) }
    mutating func remove(_ i: Int) { words[i >> 6] &= ~(1 << UInt64(i & 63)) }

    /// Every index in `range`, a word at a time.
    mutating func insert(_ range: Range<Int>) {
        var i = range.lowerBound
        while i < range.upperBound {
            let bit = i & 63
            let n = min(64 - bit, range.upperBound - i)
            let mask: UInt64 = n == 64 ? ~0 : ((1 << UInt64(n)) - 1) << UInt64(bit)
            words[i >> 6] |= mask
            i += n
        }
    }

    mutating func formIntersection(_ other: Bits) {
        for w in words.indices { words[w] &= other.words[w] }
    }

    /// The first member at or after `start` and below `end`.
    func first(from start: Int, below end: Int) -> Int? {
        guard start < end else { return nil }
        var w = start >> 6
        var word = words[w] & (~0 << UInt64(start & 63))
        while true {
            if word != 0 {
                let i = w << 6 + word.trailingZeroBitCount
                return i < end ? i : nil
            }
            w += 1
            guard w << 6 < end else { return nil }
            word = words[w]
        }
    }

    /// Calls `body` with each index in exactly one of the two sets, and whether it is in `other`.
    func forEachDifference(_ other: Bits, _ body: (Int, Bool) -> Void) {
        for w in words.indices {
            var changed = words[w] ^ other.words[w]
            while changed != 0 {
                let bit = changed.trailingZeroBitCount
                changed &= changed - 1
                body(w << 6 + bit, other.words[w] & (1 << UInt64(bit)) != 0)
            }
        }
    }
}
