import Crypto
import SystemSupport
import Foundation
import TestSupport
import Multicast
import Testing

@Suite struct WireTests {
    @Test func dataPacketRoundTrips() throws {
        let payload = Array(repeating: UInt8(7), count: 1000)[...]
        let p = DataPacket(fragmentCount: 3, sessionID: 0xDEAD_BEEF_0102, pass: 9, chunk: 42, fragment: 2, storedLength: 3800, payload: payload)
        var bytes: [UInt8] = []
        p.encode(into: &bytes)
        #expect(bytes.count == DataPacket.headerSize + 1000)
        #expect(DataPacket.decode(bytes[...]) == p)
    }

    @Test func malformedDataPacketsAreRejected() {
        var bytes: [UInt8] = []
        DataPacket(fragmentCount: 1, sessionID: 1, pass: 0, chunk: 0, fragment: 0, storedLength: 10, payload: Array(repeating: 1, count: 10)[...]).encode(into: &bytes)
        #expect(DataPacket.decode(bytes.dropLast()) == nil, "truncated")
        var wrongMagic = bytes
        wrongMagic[0] = 0
        #expect(DataPacket.decode(wrongMagic[...]) == nil)
        var badFragment = bytes
        badFragment[25] = 5  // fragment index past the count
        #expect(DataPacket.decode(badFragment[...]) == nil)
        #expect(DataPacket.decode([][...]) == nil)
    }

    @Test func reportFlagsBeyondTheKnownAreRefused() {
        var framed = ControlMessage.report(.init(received: 1, writeRate: 2, missing: [], quiet: true)).encoded()
        framed[4 + 1 + 12] |= 0x80  // the flags byte, after length, type, received and write rate
        #expect(throws: MulticastError.malformedMessage(type: 4)) { try ControlMessage.decode(framed.dropFirst(4)) }
    }

    /// DONE (protocol 8): 0 and no reason, or 1 and the client's reason; nothing else.
    @Test func doneCarriesSuccessOrAReason() {
        let failed = ControlMessage.done(failure: "no space").encoded()
        #expect(failed.suffix(11) == [1, 0, 8] + Array("no space".utf8))
        var successWithReason = failed
        successWithReason[5] = 0
        #expect(throws: MulticastError.malformedMessage(type: 5)) { try ControlMessage.decode(successWithReason.dropFirst(4)) }
        var unknownResult = failed
        unknownResult[5] = 2
        #expect(throws: MulticastError.malformedMessage(type: 5)) { try ControlMessage.decode(unknownResult.dropFirst(4)) }
        #expect(throws: MulticastError.malformedMessage(type: 5)) { try ControlMessage.decode([5][...]) }
    }

    /// A report's fixed part (protocol 8) is 45 bytes after the type, then two counts: anything shorter is refused.
    @Test func aReportCutShortIsRefused() throws {
        let framed = ControlMessage.report(.init(received: 1, writeRate: 2, missing: [], packets: 3, verifying: true, verified: 4, verifyTotal: 5)).encoded()
        #expect(framed.count == 4 + 1 + 45 + 4 + 4)
        for cut in 1..<(framed.count - 4) {
            #expect(throws: MulticastError.malformedMessage(type: 4)) { try ControlMessage.decode(framed.dropFirst(4).dropLast(cut)) }
        }
    }

    @Test func controlMessagesRoundTrip() throws {
        let messages: [ControlMessage] = [
            .hello(version: 1, client: "lab-pc-7"),
            .welcome(.init(version: 1, sessionID: 77, identity: Array(0..<32), diskBytes: 1 << 30, group: [239, 1, 2, 3], dataPort: 7800, dataRate: 6_000_000,
                           dataSource: [10, 0, 0, 9])),
            .manifest([ManifestEntry(diskOffset: 0, length: 1 << 20, storedLength: 1234, codec: 0x8000_0005, sha256: Array(repeating: 9, count: 32))]),
            .report(.init(received: 5, writeRate: 100, missing: [(1, 2), (10, 1)], fragments: [(4, [1, 9]), (7, [])])),
            .report(.init(received: 0, writeRate: 0, missing: [(0, 9)], position: (3, 0), quiet: true)),
            .report(.init(received: 0, writeRate: 0, missing: [], position: (0, 7))),
            .report(.init(received: 0, writeRate: 0, missing: [], surveying: true)),
            .report(.init(received: 9, writeRate: 0, missing: [], packets: 1 << 40, verifying: true, verified: 5, verifyTotal: 1 << 33)),
            .done(failure: nil),
            .done(failure: "the target does not match the image"),
            .drop(reason: "too slow"),
            .signature(signed: []),
            .signature(signed: Array(repeating: 4, count: 104)),
            .fragmentDigestsWanted(chunk: 12),
            .fragmentDigests(chunk: 12, digests: Array(repeating: 5, count: 3 * ControlMessage.fragmentDigestBytes)),
        ]
        #expect(messages[3] != messages[4] && messages[4] != messages[5], "position and quiet are part of a report")
        for m in messages {
            let framed = m.encoded()
            let length = Int(framed[0]) << 24 | Int(framed[1]) << 16 | Int(framed[2]) << 8 | Int(framed[3])
            #expect(length == framed.count - 4)
            #expect(try ControlMessage.decode(framed.dropFirst(4)) == m)
        }
    }

    /// Random bytes and mutations of valid messages never crash the decoders, and what
    /// decodes encodes back to a frame that decodes the same.
    @Test func randomizedMutationNeverCrashes() {
        let seed = SplitMix64.seed(default: 0x5EED_0F_3172)
        print("WireTests.randomizedMutationNeverCrashes: seed \(seed)")  // a crash leaves no failure message
        var rng = SplitMix64(seed: seed)
        let seeds: [[UInt8]] = [
            ControlMessage.report(.init(received: 5, writeRate: 100, missing: [(1, 2)])).encoded(),
            ControlMessage.manifest([ManifestEntry(diskOffset: 0, length: 512, storedLength: 10, codec: 1, sha256: Array(repeating: 1, count: 32))]).encoded(),
            ControlMessage.hello(version: 1, client: "x").encoded(),
        ]
        for _ in 0..<20_000 {
            var bytes = seeds.randomElement(using: &rng)!
            for _ in 0..<Int.random(in: 1...6, using: &rng) {
                bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { bytes.removeLast(Int.random(in: 0..<bytes.count, using: &rng)) }
            if let message = try? ControlMessage.decode(bytes.dropFirst(4)), case .report = message {
                #expect((try? ControlMessage.decode(message.encoded().dropFirst(4))) == message, "seed \(seed): \(bytes)")
            }
            if let packet = DataPacket.decode(bytes[...]) {
                var again: [UInt8] = []
                packet.encode(into: &again)
                #expect(DataPacket.decode(again[...]) == packet, "seed \(seed): \(bytes)")
            }
            let noise = (0..<Int.random(in: 0...64, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            _ = try? ControlMessage.decode(noise[...])
            _ = DataPacket.decode(noise[...])
        }
    }
}

@Suite struct CarouselAndAssemblerTests {
    static func manifest(_ stored: [UInt32]) -> [ManifestEntry] {
        stored.enumerated().map { i, s in
            ManifestEntry(diskOffset: UInt64(i) << 20, length: 1 << 20, storedLength: s, codec: 1, sha256: Array(repeating: 0, count: 32))
        }
    }

    @Test func zeroChunksNeverTravel() {
        var s = Carousel(manifest: Self.manifest([100, 0, 100, 100]))
        #expect(s.sendable == [0, 2, 3])
        s.update(1, with: .init(received: 0, writeRate: 0, missing: [(0, 4)]))
        #expect([s.next(), s.next(), s.next()].map { $0?.chunk } == [0, 2, 3])
    }

    func packets(chunk: Int, stored: [UInt8], session: UInt64 = 1) -> [DataPacket] {
        let count = (stored.count + DataPacket.maxPayload - 1) / DataPacket.maxPayload
        return (0..<count).map { f in
            let start = f * DataPacket.maxPayload
            return DataPacket(fragmentCount: UInt16(count), sessionID: session, pass: 0, chunk: UInt32(chunk), fragment: UInt16(f),
                              storedLength: UInt32(stored.count), payload: stored[start..<min(start + DataPacket.maxPayload, stored.count)])
        }
    }

    @Test func fragmentsAssembleInAnyOrder() {
        let stored = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        var a = ChunkAssembler(manifest: Self.manifest([5000, 0]))
        #expect(a.completeCount == 1, "zero chunks need no packets")
        var done: (chunk: Int, stored: ChunkBuffer)?
        for p in packets(chunk: 0, stored: stored).reversed() {
            #expect(done == nil)
            done = a.accept(p)
        }
        #expect(done?.chunk == 0)
        #expect(done.map { Array($0.stored.bytes) } == stored)
        #expect(a.need(from: 0).missing.isEmpty, "received: not asked for again")
        #expect(!a.isComplete, "complete only once written")
        a.reject(0)
        #expect(a.need(from: 0).missing.map { [$0.0, $0.1] } == [[0, 1]], "a rejected chunk is missing again")
        let some = packets(chunk: 0, stored: stored)
        _ = a.accept(some[1])
        #expect(a.need(from: 0).missing.isEmpty, "in part: asked for by fragment")
        #expect(a.need(from: 0).fragments.map { $0.missing } == [[0, 2, 3]])
        for p in packets(chunk: 0, stored: stored) { done = a.accept(p) }
        #expect(done?.chunk == 0)
        a.markWritten(0)
        #expect(a.isComplete)
    }

    @Test func packetsThatDisagreeWithTheManifestAreDropped() {
        var a = ChunkAssembler(manifest: Self.manifest([3000]))
        let wrongSize = packets(chunk: 0, stored: Array(repeating: 1, count: 2000))
        #expect(wrongSize.allSatisfy { a.accept($0) == nil })
        let unknown = packets(chunk: 5, stored: Array(repeating: 1, count: 3000))
        #expect(unknown.allSatisfy { a.accept($0) == nil })
        var a2 = ChunkAssembler(manifest: Self.manifest([3000, 3000]), memoryBudget: 3000)
        _ = a2.accept(packets(chunk: 0, stored: Array(repeating: 1, count: 3000))[0])
        #expect(a2.accept(packets(chunk: 1, stored: Array(repeating: 1, count: 3000))[0]) == nil, "over the memory budget")
    }

    /// A forged fragment that always arrives first spoils a chunk once: after it fails its
    /// SHA-256 the client asks for the fragment digests, and from then on keeps only
    /// fragments that match, including the one it held.
    @Test func fragmentDigestsKeepForgedFragmentsOut() {
        let stored = (0..<5000).map { UInt8(truncatingIfNeeded: $0 * 13) }
        let real = packets(chunk: 0, stored: stored)
        var forged = real[0]
        forged.payload = ArraySlice(repeating: 0xEE, count: forged.payload.count)
        let digests = stride(from: 0, to: stored.count, by: DataPacket.maxPayload).flatMap {
            SHA256.hash(data: stored[$0..<min($0 + DataPacket.maxPayload, stored.count)]).prefix(ControlMessage.fragmentDigestBytes)
        }
        var a = ChunkAssembler(manifest: Self.manifest([5000]))
        a.trust(0, fragmentDigests: digests)
        _ = a.accept(forged)
        #expect(a.need(from: 0).missing.isEmpty, "digests nobody asked for are ignored")
        var done: (chunk: Int, stored: ChunkBuffer)?
        for p in real.dropFirst() { done = a.accept(p) }
        #expect(done.map { Array($0.stored.bytes) } != stored, "the forged copy came first")
        a.reject(0)
        #expect(a.takeSuspects() == [0])
        #expect(a.takeSuspects().isEmpty, "asked for once")
        _ = a.accept(forged)
        _ = a.accept(real[1])
        a.trust(0, fragmentDigests: Array(digests.dropLast()))
        a.trust(0, fragmentDigests: digests)
        #expect(a.need(from: 0).fragments.first?.missing == [0, 2, 3], "the forged fragment held is dropped")
        done = nil
        for p in [forged] + real { done = a.accept(p) ?? done }
        #expect(done.map { Array($0.stored.bytes) } == stored)
        a.reject(0)
        #expect(a.takeSuspects().isEmpty, "digests in hand: nothing more to ask")
    }
}
