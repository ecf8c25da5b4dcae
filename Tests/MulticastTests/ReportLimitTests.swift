import Testing
@testable import Multicast

/// What a client can make the server do with its REPORTs: need sets bounded by the image, and
/// repairs bounded by the progress the server can see.
@Suite struct ReportLimitTests {
    /// 12 chunks of 8 fragments, like `CarouselTests`.
    let manifest = CarouselTests.manifest(12)

    /// A client that lacks every fragment of every chunk, listed chunk by chunk: the largest
    /// report a client of this image can need. It fits the frame limit exactly; one more
    /// fragment, one more range or one more partial chunk is refused.
    @Test func theLargestHonestReportFitsAndAnyMoreIsRefused() throws {
        let shape = Carousel.Shape(manifest: manifest)
        let all = (0..<UInt16(CarouselTests.fragmentsPerChunk)).map { $0 }
        let largest = ControlMessage.Report(received: 0, writeRate: 0, missing: (0..<12).map { (UInt32($0), 1) },
                                            fragments: (0..<12).map { (UInt32($0), all) }, position: (0, 3))
        #expect(ControlMessage.report(largest).encoded().count - 4 == shape.maxReportBytes)
        let need = try shape.need(from: largest)
        #expect(need.chunks == 12 && need.fragments == 96)

        var extraFragment = largest
        extraFragment.fragments[0].missing.append(0)
        var extraRange = largest
        extraRange.missing.append((0, 1))
        var extraChunk = largest
        extraChunk.fragments.append((0, [1]))
        for report in [extraFragment, extraRange, extraChunk] {
            #expect(ControlMessage.report(report).encoded().count - 4 > shape.maxReportBytes)
            #expect(throws: Carousel.OversizedReport.self) { try shape.need(from: report) }
        }
        var carousel = Carousel(manifest: manifest)
        let taken = carousel.update(1, with: extraRange)
        #expect(!taken)
        #expect(carousel.isIdle, "a refused report asks for nothing")
    }

    /// The 8 MB REPORT of the review (1024 partial chunks of 4000 fragments each) against a
    /// 12-chunk image: refused by its size before any of it is read, and by its counts.
    @Test func aHugeReportIsRefused() {
        let shape = Carousel.Shape(manifest: manifest)
        let huge = ControlMessage.Report(received: 0, writeRate: 0, missing: [],
                                         fragments: (0..<1024).map { (UInt32($0 % 12), Array(repeating: 0, count: 4000)) })
        #expect(ControlMessage.report(huge).encoded().count > 8_000_000)
        #expect(shape.maxReportBytes < 2000)
        #expect(throws: Carousel.OversizedReport.self) { try shape.need(from: huge) }
    }

    /// The need set the server sees: chunks and fragments, whatever `received` says.
    @Test func theNeedSetCountsWhatIsAskedFor() throws {
        let shape = Carousel.Shape(manifest: CarouselTests.manifest(12, zeros: [3]))
        let need = try shape.need(from: .init(received: 12, writeRate: 0, missing: [(0, 6)], fragments: [(8, [0, 1]), (9, [7])]))
        #expect(need.chunks == 7, "chunks 0-5 but the zero chunk 3, and 8 and 9 in part")
        #expect(need.fragments == 5 * 8 + 3)
    }

    /// The endless-claims client with a position, quiet at every report: it says it lost
    /// every chunk behind the cursor, many times a pass. Before, each report queued all of
    /// them as repairs, and the cursor never moved on while it kept reporting. Now its
    /// repairs stop at what it is owed, and a client beside it is served in one pass.
    @Test func aClientThatNeverShrinksGetsNoStreamOfRepairs() {
        var carousel = Carousel(manifest: manifest)
        let all = ControlMessage.Report(received: 0, writeRate: 0, missing: [(0, 12)])
        carousel.update(1, with: all)
        carousel.update(2, with: all)
        var sent: [Carousel.Next] = []
        var honestNeed = 12
        var heard: (pass: UInt32, chunk: UInt32) = (0, 0)
        while sent.count < 200, let next = carousel.next() {
            sent.append(next)
            if !next.repair {
                honestNeed -= 1
                heard = (next.pass, UInt32(next.chunk))
            }
            carousel.update(2, with: .init(received: UInt32(sent.count), writeRate: 0,
                                           missing: honestNeed > 0 ? [(UInt32(12 - honestNeed), UInt32(honestNeed))] : [], position: heard))
            for _ in 0..<10 {
                carousel.update(1, with: .init(received: UInt32(sent.count), writeRate: 0, missing: [(0, 12)],
                                               position: (next.pass, UInt32(next.chunk)), quiet: true))
            }
            if honestNeed == 0 { break }
        }
        let repairs = sent.filter(\.repair)
        #expect(honestNeed == 0, "the honest client got every chunk")
        #expect(repairs.reduce(0) { $0 + ($1.fragments?.count ?? CarouselTests.fragmentsPerChunk) } <= Carousel.repairFloor,
                "repairs for the claimant: \(repairs.map(\.chunk))")
        #expect(sent.count <= 12 + Carousel.repairFloor / CarouselTests.fragmentsPerChunk)
    }

    /// A client that stops asking for chunks earns repairs: one fragment for each four.
    @Test func repairsAreEarnedByProgress() {
        let manifest = CarouselTests.manifest(40)
        var carousel = Carousel(manifest: manifest)
        carousel.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 40)]))
        for c in 0..<30 { #expect(carousel.next()?.chunk == c) }
        // It lost fragments 0-5 of chunks 0-19: 120 fragments.
        let lost = (0..<20).map { (chunk: UInt32($0), missing: [UInt16](0..<6)) }
        carousel.update(1, with: .init(received: 10, writeRate: 0, missing: [(30, 10)], fragments: lost, position: (0, 29)))
        var repaired = 0
        while let next = carousel.next(), next.repair { repaired += next.fragments?.count ?? 8 }
        // It asked for 320 fragments, now 80 + 120 = 200: 30 earned and 64 on the floor are 15
        // chunks' 6; the other 5 chunks wait for the cursor.
        #expect(repaired == 90, "\(repaired)")
    }
}
