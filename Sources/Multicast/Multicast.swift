// Multicast: one image to many machines at once over UDP multicast.
//
// This module owns the server configuration plist, the wire protocol (docs/PROTOCOL.md), the
// policy as plain values with no I/O and no clock of their own (`Carousel` decides what is
// sent from what each client lacks, `ClientRoster` who is connected, whom to drop and when to pause,
// `ChunkAssembler` what a client holds), DNS Service Discovery through Avahi, and the thin
// socket adapters that run the policy: `MulticastServer` and `MulticastClient`. It prints only
// through the `Reporter` (client) or the `log` function (server) it is handed. What a server is
// doing is kept on its `SessionBoard` for the status server (a module of its own) to read.

import SystemPackage
import SystemSupport

/// A multicast failure, by what went wrong; `description` is the one line a user reads.
public enum MulticastError: UserFacingError, Equatable {
    // The configuration plist.
    case unreadableConfig(path: String)
    case configTooLarge(path: String)
    /// Refused before decoding (binary, not UTF-8, nested too deep...): `reason` says which.
    case configNotXML(name: String, reason: String)
    case configNotDictionary(name: String)
    case configKey(name: String, key: String, ConfigProblem)

    // Where the server is.
    case notAnASRAddress(String)
    case noServerName(url: String)
    case badPort(url: String)
    case unknownSession(String)
    case severalSessions(name: String, identities: [String])
    case notTheAnnouncedImage(host: String)
    case cannotResolve(host: String)
    case noInterfaceAddress(interface: String)
    case badMulticastAddress(String)
    case badStatusAddress(String)

    // Sockets.
    case socket(SocketCall, Errno)
    case cannotConnect(host: String, port: UInt16, Errno)
    /// Sending on the control connection failed.
    case connectionLost(peer: String, Errno)
    /// The peer closed the control connection (or it broke while we read).
    case closed(peer: String)

    // The control protocol.
    case emptyMessage
    case malformedMessage(type: UInt8)
    case unknownMessage(type: UInt8)
    case frameSize(peer: String, length: Int)
    /// Larger than the server takes of that message type (a REPORT naming more than the image has).
    case frameTooLarge(peer: String, type: UInt8, length: Int, limit: Int)
    case stalledMidMessage(peer: String)
    case noAnswer(host: String, port: UInt16)
    case notWelcomed(host: String)
    case noManifest(host: String)
    case malformedWelcome(host: String)
    /// The manifest breaks the chunk-table rule: why.
    case malformedManifest(String)
    case manifestNotOfIdentity(host: String)
    case differentImage(host: String)
    case droppedByServer(reason: String)
    case noData(seconds: Int)
    case interrupted

    // What the server serves.
    case sourceNotScanned(path: String)
    case sourceNotOrdered(path: String)
    case blockMapMismatch(map: String, source: String)

    // DNS Service Discovery.
    case avahiNotRunning(String)
    case cannotBrowse(String)
    case browsingFailed(String)

    /// What is wrong with one key of the configuration.
    public enum ConfigProblem: Sendable, Equatable {
        case missing
        /// Present with the wrong type: `expected` says what it must be ("a boolean").
        case wrongType(expected: String)
        case notPositive
        case notMulticast(address: String)
        case outOfRange(UInt64, ClosedRange<UInt64>)
        case notAnAddress(String)
    }

    /// The socket call that failed.
    public enum SocketCall: Sendable, Equatable {
        case create, listInterfaces, send
        case bind(port: UInt16), join(group: String), listen(port: UInt16)
    }

    /// The server is not (or no longer) there: worth asking again.
    package var serverAway: Bool {
        switch self {
        case .cannotConnect, .closed: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .unreadableConfig(let path): "cannot read configuration \(path)"
        case .configTooLarge(let path): "configuration \(path) is too large to be a plist"
        case .configNotXML(let name, let reason): "\(name) \(reason)"
        case .configNotDictionary(let name): "\(name) is not a property list dictionary"
        case .configKey(let name, let key, let problem):
            switch problem {
            case .missing: "\(name): required key \"\(key)\" is missing"
            case .wrongType(let expected): "\(name): \"\(key)\" must be \(expected)"
            case .notPositive: "\(name): \"\(key)\" must be a positive integer (bytes per second)"
            case .notMulticast(let address):
                "\(name): \"\(key)\" \(displayable(address)) is not an IPv4 multicast address (224.0.0.0/4)"
            case .outOfRange(let value, let range): "\(name): \"\(key)\" must be \(range.lowerBound) to \(range.upperBound), not \(value)"
            case .notAnAddress(let text): "\(name): \"\(key)\" must be PORT or ADDRESS:PORT (8080, 0.0.0.0:8080), not \(displayable(text))"
            }
        case .notAnASRAddress(let url): "\(displayable(url)) is not an asr:// address"
        case .noServerName(let url): "\(displayable(url)): no server name"
        case .badPort(let url): "\(displayable(url)): bad port"
        case .unknownSession(let name): "\(displayable(name)) is neither a host nor an asr session announced on the network (see asr list)"
        case .severalSessions(let name, let identities):
            "\(identities.count) servers announce \(displayable(name)) (images \(identities.map { displayable($0) }.joined(separator: ", "))...); "
                + "name the image: asr://\(displayable(name))?sha256=IDENTITY (asr info prints it)"
        case .notTheAnnouncedImage(let host): "\(host) serves another image than the one its announcement names"
        case .cannotResolve(let host): "cannot resolve \(displayable(host))"
        case .noInterfaceAddress(let name): "interface \(displayable(name)) has no IPv4 address"
        case .badMulticastAddress(let address): "bad multicast address \(displayable(address))"
        case .badStatusAddress(let text): "bad status address \(displayable(text)): give PORT or ADDRESS:PORT (8080, 0.0.0.0:8080)"
        case .socket(let call, let e):
            switch call {
            case .create: "socket: \(e)"
            case .listInterfaces: "cannot list interfaces: \(e)"
            case .send: "cannot send to the multicast group: \(e)"
            case .bind(let port): "cannot bind the multicast port \(port): \(e)"
            case .join(let group): "cannot join the multicast group \(group): \(e)"
            case .listen(let port): "cannot listen on port \(port): \(e)"
            }
        case .cannotConnect(let host, let port, let e): "cannot connect to \(displayable(host)):\(port): \(e)"
        case .connectionLost(let peer, let e): "control connection to \(peer) lost: \(e)"
        case .closed(let peer): "control connection to \(peer) closed"
        case .emptyMessage: "empty control message"
        case .malformedMessage(let type): "malformed control message (type \(type))"
        case .unknownMessage(let type): "unknown control message type \(type)"
        case .frameSize(let peer, let length): "\(peer) sent a frame of \(length) bytes"
        case .frameTooLarge(let peer, let type, let length, let limit): "\(peer) sent a message of type \(type) and \(length) bytes (at most \(limit))"
        case .stalledMidMessage(let peer): "\(peer) stalled mid-message"
        case .noAnswer(let host, let port): "no answer from \(displayable(host)):\(port)"
        case .notWelcomed(let host): "\(displayable(host)) did not welcome us"
        case .noManifest(let host): "\(displayable(host)) sent no manifest"
        case .malformedWelcome(let host): "\(displayable(host)) sent a malformed welcome"
        case .malformedManifest(let why): "the server's manifest is refused: \(why)"
        case .manifestNotOfIdentity(let host): "the manifest from \(host) does not match the image identity it announced"
        case .differentImage(let host): "the server at \(displayable(host)) now serves a different image"
        case .droppedByServer(let reason): "the server dropped this client: \(displayable(reason))"
        case .noData(let seconds): "no data from the server for \(seconds) s"
        case .interrupted: "interrupted"
        case .sourceNotScanned(let path): "\(path) is not scanned; run asr imagescan --source \(path) first"
        case .sourceNotOrdered(let path): "\(path) is not in logical order; run asr imagescan without --nostream"
        case .blockMapMismatch(let map, let source): "\(map) does not describe \(source)"
        case .avahiNotRunning(let why): "cannot browse for asr servers: Avahi is not running (\(why))"
        case .cannotBrowse(let why): "cannot browse for asr servers: \(why)"
        case .browsingFailed(let why): "browsing for asr servers failed: \(why)"
        }
    }
}
