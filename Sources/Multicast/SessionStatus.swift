import Foundation

/// What `asr server` is doing at one moment, as the status server shows it (`/status.json`,
/// docs/STATUS.md): the image, the stream's counters and every client the session has seen.
/// A plain value, copied out of `SessionBoard`; times are Unix seconds, sizes bytes, rates
/// bytes per second, shares 0 to 1.
public struct SessionStatus: Codable, Sendable, Equatable {
    /// This document's layout; bumped when a key changes meaning or goes away.
    public static let layoutVersion = 1

    public var version = SessionStatus.layoutVersion
    public var server: Server
    public var image: Image
    public var stream: Stream
    /// In the order they joined; ended clients stay (the last `SessionBoard.keptEnded`).
    public var clients: [Client]
    /// Clients by state: every state is present, 0 when none.
    public var counts: [String: Int]
    /// The send rate, one sample a second, oldest first (filled by the status server).
    public var throughput: [ThroughputSample] = []

    public struct Server: Codable, Sendable, Equatable {
        public var startedAt: Double
        public var now: Double
        /// The control protocol's version (docs/PROTOCOL.md).
        public var protocolVersion: Int
        public var sessionID: String
    }

    public struct Image: Codable, Sendable, Equatable {
        /// The source's file name, and its path as given.
        public var name: String
        public var path: String
        /// hdiutil's name for a UDIF image (UDZO, UDBZ, ULMO, ...), RAW or DEVICE.
        public var format: String
        public var diskBytes: UInt64
        /// Bytes that travel (the stored chunks), and free space that never does.
        public var storedBytes: UInt64
        public var freeBytes: UInt64
        public var chunks: Int
        /// The image's identity in hex (docs/FORMAT.md).
        public var identity: String
        public var signed: Bool
        /// The signing key's Ed25519 public key in hex, when signed.
        public var signer: String?

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(name, forKey: .name)
            try c.encode(path, forKey: .path)
            try c.encode(format, forKey: .format)
            try c.encode(diskBytes, forKey: .diskBytes)
            try c.encode(storedBytes, forKey: .storedBytes)
            try c.encode(freeBytes, forKey: .freeBytes)
            try c.encode(chunks, forKey: .chunks)
            try c.encode(identity, forKey: .identity)
            try c.encode(signed, forKey: .signed)
            try c.encode(signer, forKey: .signer)  // null, not absent: every key is always there
        }
    }

    public struct Stream: Codable, Sendable, Equatable {
        /// `waiting` (nobody has asked yet), `sending`, `idle` (nobody lacks anything),
        /// `suspended` (Loop Suspend) or `stopped`.
        public var state: String
        public var group: String
        public var port: Int
        public var ttl: Int
        public var dataRate: UInt64
        public var clientDataRate: UInt64?
        /// What the server sends at: the data rate, capped by the client data rate.
        public var effectiveRate: UInt64
        /// UDP payload bytes, headers included, and datagrams.
        public var bytesSent: UInt64
        public var packetsSent: UInt64
        /// Chunk sends in all; of them, repairs (behind the cursor, for a client that lost
        /// them); fragments sent as part-chunks (only the fragments clients lacked).
        public var chunksSent: UInt64
        public var repairsSent: UInt64
        public var fragmentRepairsSent: UInt64
        /// Times the cursor went round the image (the pass under way has this number).
        public var passes: UInt64
        /// Bytes sent over the last second (filled by the status server).
        public var rate: Double = 0

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(state, forKey: .state)
            try c.encode(group, forKey: .group)
            try c.encode(port, forKey: .port)
            try c.encode(ttl, forKey: .ttl)
            try c.encode(dataRate, forKey: .dataRate)
            try c.encode(clientDataRate, forKey: .clientDataRate)
            try c.encode(effectiveRate, forKey: .effectiveRate)
            try c.encode(bytesSent, forKey: .bytesSent)
            try c.encode(packetsSent, forKey: .packetsSent)
            try c.encode(chunksSent, forKey: .chunksSent)
            try c.encode(repairsSent, forKey: .repairsSent)
            try c.encode(fragmentRepairsSent, forKey: .fragmentRepairsSent)
            try c.encode(passes, forKey: .passes)
            try c.encode(rate, forKey: .rate)
        }
    }

    public struct Client: Codable, Sendable, Equatable {
        public var id: Int
        public var name: String
        public var address: String
        public var joinedAt: Double
        /// `joining`, `restoring`, `verifying`, `done`, `failed`, `dropped` or `left`.
        public var state: String
        /// Why it failed (the client's words), was dropped (the server's) or left.
        public var reason: String?
        /// Chunks written and checked, as it last reported (zero and free chunks count from
        /// the start), of `chunkCount`.
        public var chunks: Int
        public var chunkCount: Int
        /// Share of the chunks that travel it holds.
        public var progress: Double
        /// Share of its read-back done, once verifying.
        public var verifyProgress: Double?
        /// Chunks it held in part after the stream had passed them: repairs it asked for.
        public var repairsAsked: Int
        /// Share of the packets sent since its first report that it did not take; nil until
        /// enough were sent to tell.
        public var loss: Double?
        public var writeRate: UInt64
        public var packetsReceived: UInt64
        /// Seconds until its present phase (restoring or verifying) ends, at its recent pace.
        public var eta: Double?
        public var lastReportAt: Double?
        public var endedAt: Double?

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(name, forKey: .name)
            try c.encode(address, forKey: .address)
            try c.encode(joinedAt, forKey: .joinedAt)
            try c.encode(state, forKey: .state)
            try c.encode(reason, forKey: .reason)
            try c.encode(chunks, forKey: .chunks)
            try c.encode(chunkCount, forKey: .chunkCount)
            try c.encode(progress, forKey: .progress)
            try c.encode(verifyProgress, forKey: .verifyProgress)
            try c.encode(repairsAsked, forKey: .repairsAsked)
            try c.encode(loss, forKey: .loss)
            try c.encode(writeRate, forKey: .writeRate)
            try c.encode(packetsReceived, forKey: .packetsReceived)
            try c.encode(eta, forKey: .eta)
            try c.encode(lastReportAt, forKey: .lastReportAt)
            try c.encode(endedAt, forKey: .endedAt)
        }
    }

    public struct ThroughputSample: Codable, Sendable, Equatable {
        public var t: Double
        public var bytesPerSecond: Double

        public init(t: Double, bytesPerSecond: Double) {
            self.t = t
            self.bytesPerSecond = bytesPerSecond
        }
    }
}
