import Foundation
import Glibc
import Multicast
import SystemSupport
import Testing

@Suite struct ReceivePathTests {
    @Test func groRunsSplitIntoTheirDatagrams() {
        let run = (0..<(3 * 100 + 40)).map { UInt8(truncatingIfNeeded: $0) }
        var pieces: [[UInt8]] = []
        let n = run.withUnsafeBytes { DatagramRing.split($0, segmentSize: 100) { pieces.append(Array($0)) } }
        #expect(n == 4)
        #expect(pieces.map(\.count) == [100, 100, 100, 40], "the last may be short")
        #expect(Array(pieces.joined()) == run)
        for size in [0, 340, 1000] {
            var whole: [[UInt8]] = []
            run.withUnsafeBytes { _ = DatagramRing.split($0, segmentSize: size) { whole.append(Array($0)) } }
            #expect(whole == [run], "segment size \(size): one datagram")
        }
        var exact: [Int] = []
        run.prefix(300).withUnsafeBytes { _ = DatagramRing.split($0, segmentSize: 100) { exact.append($0.count) } }
        #expect(exact == [100, 100, 100])
    }

    @Test func headersParseInPlaceAsDecodeDoes() {
        let payload = (0..<1400).map { UInt8(truncatingIfNeeded: $0 * 3) }[...]
        let p = DataPacket(fragmentCount: 4, sessionID: 0x0102_0304_0506_0708, pass: 3, chunk: 77, fragment: 1, storedLength: 5000,
                           payload: payload)
        var bytes: [UInt8] = []
        p.encode(into: &bytes)
        let header = bytes.withUnsafeBytes { DataPacketHeader($0) }
        #expect(header == DataPacketHeader(fragmentCount: 4, sessionID: 0x0102_0304_0506_0708, pass: 3, chunk: 77, fragment: 1,
                                           payloadLength: 1400, storedLength: 5000))
        #expect(bytes.dropLast().withUnsafeBytes { DataPacketHeader($0) } == nil, "payload shorter than its length")
        #expect((bytes + [0]).withUnsafeBytes { DataPacketHeader($0) } == nil, "bytes past the payload")
        var wrongVersion = bytes
        wrongVersion[4] = 2
        #expect(wrongVersion.withUnsafeBytes { DataPacketHeader($0) } == nil)
    }

    func packets(chunk: Int, stored: [UInt8]) -> [DataPacket] {
        let count = (stored.count + DataPacket.maxPayload - 1) / DataPacket.maxPayload
        return (0..<count).map { f in
            let start = f * DataPacket.maxPayload
            return DataPacket(fragmentCount: UInt16(count), sessionID: 1, pass: 0, chunk: UInt32(chunk), fragment: UInt16(f),
                              storedLength: UInt32(stored.count), payload: stored[start..<min(start + DataPacket.maxPayload, stored.count)])
        }
    }

    @Test func handedOnChunksCountAgainstTheBudgetUntilWrittenOrRejected() throws {
        let manifest = SchedulerAndAssemblerTests.manifest([3000, 3000, 3000])
        var a = ChunkAssembler(manifest: manifest, memoryBudget: 6000)
        let stored = [UInt8](repeating: 9, count: 3000)
        var done: (chunk: Int, stored: ChunkBuffer)?
        for p in packets(chunk: 0, stored: stored) { done = a.accept(p) ?? done }
        #expect(done?.chunk == 0)
        #expect(a.heldBytes == 3000, "assembled, not yet written")
        _ = a.accept(packets(chunk: 1, stored: stored)[0])
        #expect(a.heldBytes == 6000)
        #expect(a.accept(packets(chunk: 2, stored: stored)[0]) == nil, "over the budget")
        a.markWritten(0)
        #expect(a.heldBytes == 3000)
        for p in packets(chunk: 1, stored: stored) { done = a.accept(p) ?? done }
        #expect(done?.chunk == 1)
        a.reject(1)
        #expect(a.heldBytes == 0)
        #expect(a.missing(below: 3).map { [$0.0, $0.1] } == [[1, 2]])
        a.markWritten(0)
        #expect(a.heldBytes == 0, "a chunk is released once")
    }

    @Test func chunkBuffersAreReused() {
        var first: UnsafeRawPointer?
        do {
            // A size class no real chunk uses, so no other test takes the spare buffer.
            let b = ChunkBuffer(count: 7_000_000)
            #expect(b.bytes.count == 7_000_000)
            first = b.bytes.baseAddress
        }
        let again = ChunkBuffer(count: 6_000_000)
        #expect(again.bytes.count == 6_000_000)
        #expect(again.bytes.baseAddress == first, "same size class: the spare buffer")
    }

    /// A GSO send over loopback comes out as the datagrams that went in, whether the kernel
    /// keeps the run together (UDP_GRO) or not.
    @Test func ringReceivesASegmentedSendAsItsDatagrams() throws {
        let receiver = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        let sender = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(receiver); close(sender) }
        var one: Int32 = 1
        setsockopt(receiver, Int32(IPPROTO_UDP), Kernel.udpGRO, &one, 4)
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(receiver, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &addr) { a in
            try a.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                try #require(bind(receiver, $0, len) == 0)
                try #require(getsockname(receiver, $0, &len) == 0)
            }
        }
        let segment: Int32 = 1432
        let segmented = setsockopt(sender, Int32(IPPROTO_UDP), Kernel.udpSegment, [segment], 4) == 0
        let run = (0..<(3 * 1432 + 100)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let sent = run.withUnsafeBytes { b in
            withUnsafePointer(to: &addr) { a in
                a.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(sender, b.baseAddress, b.count, 0, $0, len) }
            }
        }
        try #require(sent == run.count || !segmented)
        if !segmented { return }  // no GSO here: nothing to check
        let ring = DatagramRing(slots: 4)
        var got: [[UInt8]] = []
        while got.count < 4 {
            let n = try ring.receive(from: receiver) { got.append(Array($0)) }
            try #require(n > 0, "timed out with \(got.count) datagrams")
        }
        #expect(got.map(\.count) == [1432, 1432, 1432, 100])
        #expect(Array(got.joined()) == run)
    }
}
