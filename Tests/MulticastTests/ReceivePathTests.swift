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
        let manifest = CarouselAndAssemblerTests.manifest([3000, 3000, 3000])
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
        #expect(a.need(from: 0).missing.map { [$0.0, $0.1] } == [[1, 2]])
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

@Suite struct ChunkWritersTests {
    /// Raw chunks (codec 1) of 3000 bytes of 7; the first has that content's SHA-256, the
    /// second a wrong one.
    @Test func workersWriteCheckedChunksAtTheirOffsetsAndRejectTheRest() throws {
        let sha = Array("48c187767dddb44e5b7af78dabdec2b14f0f983e86e1fe695c65bc6a2a3cb42f".utf8)
        let digest = stride(from: 0, to: sha.count, by: 2).map { UInt8(String(decoding: sha[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
        let manifest = [
            ManifestEntry(diskOffset: 0, length: 3000, storedLength: 3000, codec: 1, sha256: digest),
            ManifestEntry(diskOffset: 3000, length: 3000, storedLength: 3000, codec: 1, sha256: [UInt8](repeating: 0, count: 32)),
        ]
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("writers-\(getpid()).raw").path
        defer { unlink(path) }
        let file = try FileIO(path: path, flags: O_RDWR | O_CREAT | O_TRUNC)
        var assembler = ChunkAssembler(manifest: manifest)
        let writers = ChunkWriters(file: file, table: try ManifestEntry.table(of: manifest, diskBytes: 6000), workers: 2)
        defer { writers.stop() }
        let stored = [UInt8](repeating: 7, count: 3000)
        for (index, _) in manifest.enumerated() {
            for p in ReceivePathTests().packets(chunk: index, stored: stored) {
                if let (chunk, buffer) = assembler.accept(p) { writers.submit(chunk, buffer, manifest[chunk]) }
            }
        }
        #expect(assembler.heldBytes == 6000)
        let deadline = Date().addingTimeInterval(10)
        while (assembler.completeCount < 1 || assembler.received[1]) && Date() < deadline {
            writers.waitForOutcome(seconds: 0.1)
            _ = try writers.collect(into: &assembler)
        }
        try writers.finish()
        #expect(assembler.complete == [true, false])
        #expect(!assembler.received[1], "the bad copy is forgotten, to be fetched again")
        #expect(assembler.heldBytes == 0)
        #expect(writers.bytesWritten == 3000)
        #expect(try file.read(at: 0, count: 3000) == stored)
    }
}
