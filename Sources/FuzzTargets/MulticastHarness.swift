import Foundation
import Multicast

/// The multicast inputs: the server's config plist, data packets from the network, and the
/// control connection's frames, acted on the way the client and server act on them.
enum MulticastHarness {
    static func config(_ input: [UInt8]) throws {
        do {
            let c = try ServerConfig(plist: Data(input))
            let octets = c.multicastAddress.split(separator: ".").compactMap { Int($0) }
            try check(c.dataRate > 0 && c.multicastTTL > 0 && c.port > 0, "config accepted with a zero rate, TTL or port")
            try check(octets.count == 4 && (224...239).contains(octets[0]), "config accepted \(c.multicastAddress)")
        } catch let e as MulticastError {
            try check(!e.description.contains("\n"), "config error is not one line: \(e)")
        } catch {
            throw FuzzFailure("config threw \(type(of: error)), not MulticastError")
        }
    }

    /// The chunks the packet harness's assembler expects: sizes on both sides of a fragment
    /// boundary, a zero chunk, and one needing many fragments.
    static let manifest: [ManifestEntry] = [1, 1400, 1401, 4000, 0, 9000].enumerated().map { i, stored in
        ManifestEntry(diskOffset: UInt64(i) << 20, length: 1 << 20, storedLength: UInt32(stored), codec: 1,
                      sha256: [UInt8](repeating: UInt8(i), count: 32))
    }

    /// Input: packets, each u16 length then the datagram. The assembler holds less than the
    /// manifest's total, so its memory budget is exercised too.
    static func packets(_ input: [UInt8]) throws {
        var r = InputReader(input)
        var assembler = ChunkAssembler(manifest: manifest, memoryBudget: 8000)
        while let n = r.u16(), let datagram = r.take(n) {
            guard let p = DataPacket.decode(datagram) else { continue }
            var again: [UInt8] = []
            p.encode(into: &again)
            try check(DataPacket.decode(again[...]) == p, "data packet does not survive encode")
            guard let (chunk, stored) = assembler.accept(p) else { continue }
            try check(chunk < manifest.count && stored.bytes.count == Int(manifest[chunk].storedLength),
                      "assembled chunk \(chunk) of \(stored.bytes.count) bytes")
            // The chunk's first byte decides its fate: written, or a bad copy to fetch again.
            if stored.bytes.first.map({ $0 & 1 == 0 }) ?? true { assembler.markWritten(chunk) } else { assembler.reject(chunk) }
        }
        let need = assembler.need(from: Int(input.first ?? 0) % (manifest.count + 1), maxRanges: 3)
        try check(need.missing.count <= 3, "\(need.missing.count) ranges past the limit")
        for (first, count) in need.missing {
            try check(Int(first) + Int(count) <= manifest.count, "missing range past the manifest")
        }
        for c in manifest.indices where !assembler.received[c] {
            try check(need.missing.contains { Int($0.0) <= c && c < Int($0.0) + Int($0.1) } || need.fragments.contains { Int($0.chunk) == c },
                      "chunk \(c) is lacking but not reported")
        }
        for (chunk, missing) in need.fragments {
            try check(missing.allSatisfy { Int($0) < manifest[Int(chunk)].fragmentCount }, "missing fragment past its chunk")
        }
    }

    /// Input: frames as read from the socket. A welcome and a manifest set up a session as the
    /// client checks it; reports then go to the server's carousel.
    static func control(_ input: [UInt8]) throws {
        var r = InputReader(input)
        var diskBytes: UInt64?
        var manifest: [ManifestEntry] = []
        var carousel: Carousel?
        // ControlConnection.receive's framing: a length it refuses ends the connection.
        while let length = r.u32(), length >= 1, length <= ControlMessage.maxFrame, let body = r.take(length) {
            guard let message = try? ControlMessage.decode(body) else { continue }
            try checkReencodes(message)
            switch message {
            case .welcome(let w):
                diskBytes = w.diskBytes
            case .manifest(let entries):
                guard let disk = diskBytes, (try? ManifestEntry.table(of: entries, diskBytes: disk)) != nil else { continue }
                manifest = entries
                carousel = Carousel(manifest: entries)
            case .report(let report):
                guard var s = carousel else { continue }
                s.update(1, with: report)
                // Every chunk sent has data, and only fragments it has.
                for _ in 0..<(2 * manifest.count + 1) {
                    guard let next = s.next() else { break }
                    try check(next.chunk < manifest.count && manifest[next.chunk].storedLength > 0,
                              "scheduled chunk \(next.chunk) of \(manifest.count), which has no data")
                    let fragments = manifest[next.chunk].fragmentCount
                    try check(next.fragments?.allSatisfy { Int($0) < fragments } ?? true,
                              "scheduled fragments \(next.fragments ?? []) of a chunk with \(fragments)")
                }
                s.forget(1)
                try check(s.isIdle, "the carousel still wants chunks nobody needs")
                carousel = s
            default:
                break
            }
        }
    }

    /// What was decoded encodes to a frame that decodes again, to the same message unless
    /// text was cleaned up on the way (invalid UTF-8, over-long strings).
    static func checkReencodes(_ message: ControlMessage) throws {
        let framed = message.encoded()
        let again = try? ControlMessage.decode(framed.dropFirst(4))
        switch message {
        case .hello, .drop, .done: try check(again != nil, "control message does not survive encoded()")
        default: try check(again == message, "control message does not survive encoded()")
        }
    }
}
