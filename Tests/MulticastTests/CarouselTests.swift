import SystemSupport
import Testing
import TestSupport
@testable import Multicast
import Imaging

/// The need-driven carousel on simulated clients: each holds a real `ChunkAssembler`, hears
/// what the carousel sends (less what its loss pattern drops) and reports what it lacks the
/// way the client does, after every chunk sent.
@Suite struct CarouselTests {
    static let fragmentsPerChunk = 8

    static func manifest(_ chunks: Int, zeros: Set<Int> = []) -> [ManifestEntry] {
        (0..<chunks).map { i in
            ManifestEntry(diskOffset: UInt64(i) << 20, length: 1 << 20,
                          storedLength: zeros.contains(i) ? 0 : UInt32(fragmentsPerChunk * DataPacket.maxPayload),
                          codec: 1, sha256: Array(repeating: 0, count: 32))
        }
    }

    struct Client {
        let id: Int
        /// The send (counting from 0) before which it joins.
        let joins: Int
        /// Drops a fragment with this chance, from its own seeded generator.
        var loss = 0.0
        var rng = SplitMix64(seed: 1)
        var assembler: ChunkAssembler
        var position: (pass: UInt32, chunk: Int)?
        /// The send after which it had every chunk.
        var finishedAfter: Int?
        /// Fragments it was sent that it already had.
        var duplicates = 0

        init(id: Int, joins: Int = 0, loss: Double = 0, manifest: [ManifestEntry]) {
            self.id = id
            self.joins = joins
            self.loss = loss
            rng = SplitMix64(seed: SplitMix64.seed(default: 0xCA40_5E1) &+ UInt64(id))
            assembler = ChunkAssembler(manifest: manifest)
        }

        func report(quiet: Bool = false) -> ControlMessage.Report {
            let need = assembler.need(from: (position?.chunk ?? -1) + 1)
            return .init(received: UInt32(assembler.completeCount), writeRate: 0, missing: need.missing, fragments: need.fragments,
                         position: position.map { ($0.pass, UInt32($0.chunk)) }, quiet: quiet)
        }

        mutating func hear(_ next: Carousel.Next, manifest: [ManifestEntry]) {
            let count = manifest[next.chunk].fragmentCount
            if next.pass > position?.pass ?? 0 || position == nil { position = (next.pass, -1) }
            if next.pass == position!.pass && next.chunk > position!.chunk { position!.chunk = next.chunk }
            for f in next.fragments ?? (0..<count).map(UInt16.init) {
                if assembler.received[next.chunk] { duplicates += 1; continue }
                if loss > 0 && Double.random(in: 0..<1, using: &rng) < loss { continue }
                let payload = ArraySlice(repeating: UInt8(0), count: DataPacket.maxPayload)
                let p = DataPacket(fragmentCount: UInt16(count), sessionID: 1, pass: next.pass, chunk: UInt32(next.chunk),
                                   fragment: f, storedLength: manifest[next.chunk].storedLength, payload: payload)
                if let (chunk, _) = assembler.accept(p) { assembler.markWritten(chunk) }
            }
        }
    }

    /// What the carousel sent, in order.
    struct Run {
        var sent: [Carousel.Next] = []
        var clients: [Client]
        var fragmentsSent: Int { sent.reduce(0) { $0 + ($1.fragments?.count ?? CarouselTests.fragmentsPerChunk) } }
    }

    /// Sends until nobody needs anything (or `limit` sends); clients join as their time
    /// comes, report after every send, and are forgotten when complete (their DONE).
    static func simulate(_ clients: [Client], manifest: [ManifestEntry], limit: Int = 100_000) -> Run {
        var carousel = Carousel(manifest: manifest)
        var run = Run(clients: clients)
        var joined = Set<Int>()
        func reportAll(_ carousel: inout Carousel, quiet: Bool = false) {
            for k in run.clients.indices where joined.contains(k) && run.clients[k].finishedAfter == nil {
                carousel.update(run.clients[k].id, with: run.clients[k].report(quiet: quiet))
                if run.clients[k].assembler.isComplete {
                    run.clients[k].finishedAfter = run.sent.count - 1
                    carousel.forget(run.clients[k].id)
                }
            }
        }
        while run.sent.count < limit {
            for k in run.clients.indices where !joined.contains(k) && run.clients[k].joins <= run.sent.count { joined.insert(k) }
            reportAll(&carousel)
            var next = carousel.next()
            if next == nil {
                // What is left may be the last chunk's lost fragments, which the carousel
                // takes for data on its way until a client hears nothing more.
                reportAll(&carousel, quiet: true)
                next = carousel.next()
            }
            guard let next else {
                // Idle: a client that has not joined yet will ask; otherwise the stream is over.
                guard let later = run.clients.indices.filter({ !joined.contains($0) }).min(by: { run.clients[$0].joins < run.clients[$1].joins })
                else { break }
                joined.insert(later)
                continue
            }
            run.sent.append(next)
            for k in run.clients.indices where joined.contains(k) && run.clients[k].finishedAfter == nil {
                run.clients[k].hear(next, manifest: manifest)
            }
        }
        reportAll(&carousel)
        return run
    }

    @Test func aLateJoinerNeverDelaysTheClientsAlreadyThere() {
        let manifest = Self.manifest(40, zeros: [7])
        let run = Self.simulate([Client(id: 1, manifest: manifest), Client(id: 2, manifest: manifest),
                                 Client(id: 3, joins: 15, manifest: manifest)], manifest: manifest)
        // 39 chunks with data: the early two finish after exactly those, in pass 0.
        #expect(run.clients[0].finishedAfter == 38 && run.clients[1].finishedAfter == 38)
        #expect(run.sent.prefix(39).map(\.chunk) == (0..<40).filter { $0 != 7 })
        #expect(run.sent.prefix(39).allSatisfy { $0.pass == 0 && $0.fragments == nil })
        // The late joiner took the rest of pass 0 and got the head (chunks 0-15) in pass 1.
        #expect(run.sent.dropFirst(39).map(\.chunk) == (0..<16).filter { $0 != 7 })
        #expect(run.sent.dropFirst(39).allSatisfy { $0.pass == 1 })
        #expect(run.clients[2].finishedAfter == run.sent.count - 1)
        #expect(run.clients.allSatisfy { $0.duplicates == 0 && $0.assembler.isComplete })
    }

    @Test func theStreamStopsWhenNobodyNeedsAnything() {
        let manifest = Self.manifest(10)
        var carousel = Carousel(manifest: manifest)
        #expect(carousel.next() == nil && carousel.isIdle, "nothing before anyone asks")
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(2, 2)]))
        #expect(carousel.next()?.chunk == 2)
        #expect(carousel.next()?.chunk == 3)
        carousel.update(1, with: .init(received: 10, writeRate: 0, missing: []))
        #expect(carousel.isIdle)
        for _ in 0..<5 { #expect(carousel.next() == nil) }
        #expect(carousel.pass == 0, "idling is no pass")
        // Whatever a client lacked goes with it.
        carousel.update(2, with: .init(received: 0, writeRate: 0, missing: [(0, 10)]))
        #expect(!carousel.isIdle)
        carousel.forget(2)
        #expect(carousel.isIdle && carousel.next() == nil)
        let run = Self.simulate((1...3).map { Client(id: $0, manifest: manifest) }, manifest: manifest)
        #expect(run.sent.count == 10, "one pass for three clients, then silence")
    }

    @Test func aLoneLossyClientReceivesOnlyItsGaps() {
        let manifest = Self.manifest(60)
        let run = Self.simulate([Client(id: 1, manifest: manifest), Client(id: 2, loss: 0.1, manifest: manifest)], manifest: manifest)
        let endOfPass = run.sent.firstIndex { $0.chunk == 59 && $0.fragments == nil }
        #expect(run.clients[0].finishedAfter == endOfPass, "the lossless client: one pass")
        let lossy = run.clients[1]
        #expect(lossy.assembler.isComplete)
        #expect(lossy.duplicates == 0, "after the first time round, only fragments it lacked were sent")
        #expect(run.sent.count > 60, "it lost some")
        // Lost fragments go out within the pass they were lost in, as fragments only.
        #expect(run.sent.filter { $0.pass == 0 && $0.fragments != nil }.count > 0)
        #expect(run.fragmentsSent < 60 * Self.fragmentsPerChunk * 13 / 10, "\(run.fragmentsSent) fragments")
    }

    @Test func manyClientsJoiningAtSlightlyDifferentTimesCostAboutOnePass() {
        let manifest = Self.manifest(200)
        let clients = (0..<30).map { Client(id: $0 + 1, joins: $0, manifest: manifest) }
        let run = Self.simulate(clients, manifest: manifest)
        #expect(run.clients.allSatisfy { $0.assembler.isComplete && $0.duplicates == 0 })
        // One pass, then the longest head once (it covers every other client's) - not a pass each.
        #expect(run.sent.count == 200 + 29, "\(run.sent.count) chunks sent")
        #expect(run.clients.dropLast().allSatisfy { $0.finishedAfter! < run.clients.last!.finishedAfter! })
        #expect(Set(run.sent.map(\.pass)) == [0, 1])
    }

    @Test func passNumbersAdvanceWhenTheCursorWraps() {
        var carousel = Carousel(manifest: Self.manifest(10))
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(5, 2)]))
        #expect(carousel.next().map { [$0.chunk, Int($0.pass)] } == [5, 0])
        carousel.update(2, with: .init(received: 0, writeRate: 0, missing: [(1, 1)]))
        #expect(carousel.next().map { [$0.chunk, Int($0.pass)] } == [6, 0], "on from the cursor, not back")
        #expect(carousel.next().map { [$0.chunk, Int($0.pass)] } == [1, 1], "the cursor wrapped: a new pass")
        #expect(carousel.next().map { [$0.chunk, Int($0.pass)] } == [5, 1], "client 1 has not said it got 5")
    }

    @Test func dataOnItsWayIsNotSentAgainUntilTheClientIsQuiet() {
        var carousel = Carousel(manifest: Self.manifest(4))
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 4)]))
        for c in 0..<4 { #expect(carousel.next()?.chunk == c) }
        // It has seen only chunk 1 of pass 0 so far: 1-3 are still on their way.
        carousel.update(1, with: .init(received: 1, writeRate: 0, missing: [(1, 3)], position: (0, 1)))
        #expect(carousel.next() == nil)
        #expect(!carousel.isIdle)
        // Chunk 3 came in part and then nothing more: the rest of it was lost.
        carousel.update(1, with: .init(received: 3, writeRate: 0, missing: [], fragments: [(3, [1, 2])], position: (0, 3), quiet: true))
        let next = carousel.next()
        #expect(next?.chunk == 3 && next?.fragments == [1, 2] && next?.pass == 0, "repaired at once, fragments only")
    }

    /// Pass and chunk numbers reach a client in unauthenticated packets, and a forged one can
    /// run its position ahead: the server takes it no further than its own stream, so a repair
    /// still on its way is not sent again on every report.
    @Test func aPositionPastTheStreamIsTakenNoFurtherThanTheStream() {
        var carousel = Carousel(manifest: Self.manifest(4))
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 4)]))
        #expect(carousel.next()?.chunk == 0)
        #expect(carousel.next()?.chunk == 1)
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(1, 3)], fragments: [(0, [3])], position: (0, 1)))
        let repair = carousel.next()
        #expect(repair?.chunk == 0 && repair?.fragments == [3])
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(1, 3)], fragments: [(0, [3])], position: (9, 0)))
        #expect(carousel.next()?.chunk == 2, "the repair is still on its way")
    }

    /// Lacking fragments of a chunk the cursor has passed go out at once, whether lost or the
    /// part before a client joined: a large burst waits for no one's head.
    @Test func whatIsLackingOfAChunkBehindTheCursorIsRepairedAtOnce() {
        var carousel = Carousel(manifest: Self.manifest(4))
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 4)]))
        #expect(carousel.next()?.chunk == 0)
        #expect(carousel.next()?.chunk == 1)
        // Client 1 lost a fragment of chunk 0; client 2 joined during it and lacks most of it.
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(1, 3)], fragments: [(0, [3])], position: (0, 1)))
        carousel.update(2, with: .init(received: 0, writeRate: 0, missing: [(1, 3)], fragments: [(0, [0, 1, 2, 4, 5])], position: (0, 1)))
        let repair = carousel.next()
        #expect(repair?.chunk == 0 && repair?.fragments == [0, 1, 2, 3, 4, 5] && repair?.pass == 0, "both, at once")
        #expect(carousel.next()?.chunk == 2)
        #expect(carousel.next()?.chunk == 3)
        carousel.update(1, with: .init(received: 4, writeRate: 0, missing: [], position: (0, 3), quiet: true))
        carousel.update(2, with: .init(received: 4, writeRate: 0, missing: [], position: (0, 3), quiet: true))
        #expect(carousel.next() == nil && carousel.isIdle)
    }

    /// A burst (GSO sends 64 KiB at a time, and a drop takes all of it) can cost a client most
    /// of a chunk. It is repaired within the pass, so a late joiner's head never holds it back.
    @Test func aBurstLossIsNotHeldBackByALateJoinersHead() {
        let manifest = Self.manifest(40)
        var carousel = Carousel(manifest: manifest)
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 40)]))
        for c in 0..<20 { #expect(carousel.next()?.chunk == c) }
        // Client 2 joined at chunk 10; client 1 lost six of eight fragments of chunk 15.
        carousel.update(2, with: .init(received: 0, writeRate: 0, missing: [(20, 20), (0, 10)], position: (0, 19)))
        carousel.update(1, with: .init(received: 19, writeRate: 0, missing: [(20, 20)], fragments: [(15, [0, 1, 2, 3, 4, 5])],
                                       position: (0, 19)))
        let repair = carousel.next()
        #expect(repair?.chunk == 15 && repair?.fragments == [0, 1, 2, 3, 4, 5] && repair?.pass == 0)
    }

    /// A small chunk fits in one GSO burst and can be lost whole. Lost after the client joined,
    /// it is repaired at once; a late joiner's head still waits for the cursor.
    @Test func aChunkLostWholeIsRepairedAtOnceButAHeadWaits() {
        var carousel = Carousel(manifest: Self.manifest(40))
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 40)]))
        for c in 0..<10 { #expect(carousel.next()?.chunk == c) }
        carousel.update(2, with: .init(received: 0, writeRate: 0, missing: [(10, 30), (0, 10)], position: (0, 9)))
        for c in 10..<20 { #expect(carousel.next()?.chunk == c) }
        carousel.update(1, with: .init(received: 19, writeRate: 0, missing: [(20, 20), (5, 1)], position: (0, 19)))
        carousel.update(2, with: .init(received: 9, writeRate: 0, missing: [(20, 20), (0, 10)], position: (0, 19)))
        let repair = carousel.next()
        #expect(repair?.chunk == 5 && repair?.fragments == nil && repair?.pass == 0, "client 1's loss, whole, at once")
        #expect(carousel.next()?.chunk == 20, "client 2's head waits for the cursor")
    }

    /// A client that hears nothing (no position: no packet of the session reached it; quiet at
    /// every report) gets no repairs: at a slow rate, repeating every chunk behind the cursor
    /// at each of its reports held a hearing client back for a minute (`aBrowserWatchesTheSession`).
    @Test func aClientThatHearsNothingGetsNoRepairs() {
        var carousel = Carousel(manifest: Self.manifest(20))
        let deaf = ControlMessage.Report(received: 0, writeRate: 0, missing: [(0, 20)], quiet: true)
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 20)]))
        carousel.update(2, with: deaf)
        var sent: [Carousel.Next] = []
        while sent.count < 40, let next = carousel.next() {
            sent.append(next)
            let k = UInt32(sent.count)
            carousel.update(2, with: deaf)
            carousel.update(1, with: .init(received: k, writeRate: 0, missing: k < 20 ? [(k, 20 - k)] : [], position: (0, k - 1)))
            if k == 20 { carousel.forget(1) }
        }
        #expect(sent.prefix(20).map(\.chunk) == Array(0..<20), "\(sent.map(\.chunk))")
        #expect(!sent.contains { $0.repair })
    }

    /// Nor does it make a hearing client's repair a whole chunk: the repair is the fragments
    /// the hearing one lacks.
    @Test func aClientThatHearsNothingDoesNotWidenRepairs() {
        var carousel = Carousel(manifest: Self.manifest(20))
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 20)]))
        carousel.update(2, with: .init(received: 0, writeRate: 0, missing: [(0, 20)], quiet: true))
        for c in 0..<10 { #expect(carousel.next()?.chunk == c) }
        carousel.update(1, with: .init(received: 8, writeRate: 0, missing: [(10, 10)], fragments: [(4, [2, 5])], position: (0, 9)))
        let repair = carousel.next()
        #expect(repair?.chunk == 4 && repair?.fragments == [2, 5] && repair?.repair == true)
    }

    /// A report is trusted no further than the manifest: chunks past its end or without data
    /// and fragments past a chunk's last are ignored, overlapping ranges count once.
    @Test func reportsAreBoundedByTheManifest() {
        let sha = [UInt8](repeating: 0, count: 32)
        let manifest = [100, 0, 3000, 100, 100].enumerated().map { i, stored in
            ManifestEntry(diskOffset: UInt64(i) << 20, length: 1 << 20, storedLength: UInt32(stored), codec: 1, sha256: sha)
        }
        func drain(_ report: ControlMessage.Report) -> [[Int]] {
            var s = Carousel(manifest: manifest)
            s.update(1, with: report)
            var out: [[Int]] = []
            while let n = s.next(), n.pass == 0 { out.append([n.chunk] + (n.fragments?.map(Int.init) ?? [-1])) }
            return out
        }
        #expect(drain(.init(received: 0, writeRate: 0, missing: [(3, 9), (0, 2), (1, 3), (70, 1)], fragments: [(99, [0])]))
                == [[0, -1], [2, -1], [3, -1], [4, -1]], "each once, no zero chunk")
        #expect(drain(.init(received: 0, writeRate: 0, missing: [], fragments: [(2, [1, 2, 9, 400, 1]), (4, [5])])) == [[2, 1, 2]],
                "chunk 2 has 3 fragments; chunk 4 has 1, so fragment 5 is nothing")
    }

    @Test func needsFollowTheLatestReport() {
        var carousel = Carousel(manifest: Self.manifest(10))
        carousel.update(1, with: .init(received: 3, writeRate: 0, missing: [(2, 3), (9, 100)], fragments: [(chunk: 7, missing: [1]), (chunk: 50, missing: [0])]))
        #expect((0..<10).filter { carousel.needs(1, chunk: $0) == true } == [2, 3, 4, 7, 9])
        #expect(carousel.wantedCount == 5)
        carousel.update(2, with: .init(received: 0, writeRate: 0, missing: [(4, 2)]))
        #expect(carousel.wantedCount == 6)
        carousel.update(1, with: .init(received: 9, writeRate: 0, missing: [(4, 1)]))
        #expect((0..<10).filter { carousel.needs(1, chunk: $0) == true } == [4])
        #expect(carousel.wantedCount == 2)
        carousel.forget(1)
        #expect(carousel.needs(1, chunk: 4) == nil && carousel.wantedCount == 2)
    }

    /// 30 clients reporting need sets over 100 000 chunks four times a second must stay cheap:
    /// a report costs a pass over bitset words and the chunks that changed.
    @Test func reportsOnAHugeImageAreCheap() {
        let sha = [UInt8](repeating: 0, count: 32)
        let manifest = (0..<100_000).map { ManifestEntry(diskOffset: UInt64($0) << 20, length: 1 << 20, storedLength: 1, codec: 1, sha256: sha) }
        var carousel = Carousel(manifest: manifest)
        let took = ContinuousClock().measure {
            carousel.update(99, with: .init(received: 0, writeRate: 0, missing: Array(repeating: (0, UInt32.max), count: 4096)))
            for round in 0..<4 {
                for id in 0..<30 {
                    let missing = (0..<4000).map { k in (UInt32((k * 25 + id + round) % 100_000), UInt32(20)) }
                    carousel.update(id, with: .init(received: 0, writeRate: 0, missing: missing))
                }
            }
            for i in 0..<manifest.count { precondition(carousel.next()?.chunk == i) }
        }
        #expect(carousel.next().map { [$0.chunk, Int($0.pass)] } == [0, 1], "then round again: nobody said they got it")
        #expect(took < .seconds(20), "\(took)")
    }
}

@Suite struct NeedReportTests {
    static func assembler(_ count: Int, received: Set<Int>, partial: [Int: [UInt16]] = [:]) -> ChunkAssembler {
        let manifest = CarouselTests.manifest(count)
        var a = ChunkAssembler(manifest: manifest)
        for c in 0..<count {
            let all = (0..<UInt16(CarouselTests.fragmentsPerChunk)).map { $0 }
            for f in received.contains(c) ? all : partial[c] ?? [] {
                let p = DataPacket(fragmentCount: UInt16(CarouselTests.fragmentsPerChunk), sessionID: 1, pass: 0, chunk: UInt32(c), fragment: f,
                                   storedLength: manifest[c].storedLength, payload: ArraySlice(repeating: 0, count: DataPacket.maxPayload))
                if let (chunk, _) = a.accept(p) { a.markWritten(chunk) }
            }
        }
        return a
    }

    @Test func theWholeImageInCarouselOrderFromTheStream() {
        let a = Self.assembler(10, received: [0, 4, 5, 9], partial: [2: [0], 7: [1, 2]])
        let need = a.need(from: 6)
        #expect(need.missing.map { [$0.0, $0.1] } == [[6, 1], [8, 1], [1, 1], [3, 1]])
        #expect(need.fragments.map(\.chunk) == [7, 2])
        #expect(need.fragments.map(\.missing) == [[0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]])
        #expect(a.need(from: 0).missing.map { [$0.0, $0.1] } == [[1, 1], [3, 1], [6, 1], [8, 1]])
        #expect(a.need(from: 10).missing.count == 4, "past the end is the start")
    }

    @Test func tooManyRangesEndOpenAndNeverClaimLess() {
        // Every other chunk lacking: 50 ranges from 100 chunks.
        let a = Self.assembler(100, received: Set(stride(from: 0, to: 100, by: 2)))
        let need = a.need(from: 41, maxRanges: 6)
        #expect(need.missing.map { [$0.0, $0.1] } == [[41, 1], [43, 1], [45, 1], [47, 1], [49, 51], [0, 41]])
        let wrapped = a.need(from: 95, maxRanges: 6)
        #expect(wrapped.missing.map { [$0.0, $0.1] } == [[95, 1], [97, 1], [99, 1], [1, 1], [3, 92]],
                "the cut is past the wrap: one open range to the stream position")
        // Partial chunks past their limit are claimed whole.
        let b = Self.assembler(6, received: [], partial: [1: [0], 3: [0], 5: [0]])
        let capped = b.need(from: 2, maxPartialChunks: 2)
        #expect(capped.fragments.map(\.chunk) == [3, 5])
        #expect(capped.missing.map { [$0.0, $0.1] } == [[2, 1], [4, 1], [0, 2]])
    }
}

/// The position a client reports lags what it has seen by `StreamPosition.settle` packets, so
/// a chunk's fragments that arrive just after the next chunk's first are not taken for lost.
@Suite struct StreamPositionTests {
    @Test func thePositionReportedSettlesBehindTheStream() {
        let manifest = CarouselTests.manifest(400)
        let assembler = ChunkAssembler(manifest: manifest)
        var progress = PassProgress(chunks: manifest.count, reporter: Reporter(.quiet))
        var position = StreamPosition()
        #expect(position.reported == nil, "nothing seen yet")
        func packet(_ chunk: Int, pass: UInt32 = 0, session: UInt64 = 1) -> DataPacket {
            DataPacket(fragmentCount: 8, sessionID: session, pass: pass, chunk: UInt32(chunk), fragment: 0,
                       storedLength: manifest[chunk].storedLength, payload: ArraySlice(repeating: 0, count: DataPacket.maxPayload))
        }
        for c in 10..<20 { position.follow(packet(c), progress: &progress, assembler) }
        #expect(position.reported.map { [$0.pass, $0.chunk] } == [0, 10], "fewer than settle packets: the first")
        for c in 20..<(20 + StreamPosition.settle) { position.follow(packet(c), progress: &progress, assembler) }
        #expect(position.reported.map { [$0.pass, $0.chunk] } == [0, UInt32(20 + StreamPosition.settle) - UInt32(StreamPosition.settle)])
        position.follow(packet(3), progress: &progress, assembler)  // a repair goes back: the stream does not
        #expect(position.highest == 19 + StreamPosition.settle)
        position.follow(packet(5, session: 2), progress: &progress, assembler)
        #expect(position.reported.map { [$0.pass, $0.chunk] } == [0, 5], "a restarted server starts over")
    }
}
