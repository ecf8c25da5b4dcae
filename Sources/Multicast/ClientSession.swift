import SystemSupport
import Foundation
import UDIF

extension MulticastClient {
    /// The control connection and what the server said on it.
    struct Session {
        var connection: ControlConnection
        var welcome: ControlMessage.Welcome
        var manifest: [ManifestEntry]
        /// The manifest as a chunk table: its identity is WELCOME's, and every chunk is checked
        /// against it before it is written.
        var table: ChunkTable
        var signature: ImageSignature?
        /// Chunks the target held before anything was written (an incremental restore).
        var held: [Bool]?
        let host: String
        let port: UInt16
        let name: String

        /// Connects, asking again while the server is not there, until `timeout`.
        static func connect(host: String, port: UInt16, name: String, timeout: TimeInterval) throws(MulticastError) -> Session {
            let deadline = Date().addingTimeInterval(timeout)
            var lastError = MulticastError.noAnswer(host: host, port: port)
            while Date() < deadline && !Interruption.requested {
                do {
                    return try handshake(host: host, port: port, name: name, timeout: timeout)
                } catch where error.serverAway {
                    lastError = error
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
            throw lastError
        }

        /// HELLO, then the server's WELCOME and manifest, both checked.
        private static func handshake(host: String, port: UInt16, name: String, timeout: TimeInterval) throws(MulticastError) -> Session {
            let connection = try ControlConnection.connect(host: host, port: port, timeout: 5)
            connection.setReceiveTimeout(min(timeout, 30))
            try connection.send(.hello(version: ControlMessage.protocolVersion, client: name))
            guard case .welcome(let welcome)? = try connection.receive() else { throw .notWelcomed(host: host) }
            guard case .manifest(let manifest)? = try connection.receive() else { throw .noManifest(host: host) }
            guard case .signature(let signed)? = try connection.receive() else { throw .noManifest(host: host) }
            guard welcome.identity.count == 32, welcome.group.count == 4, welcome.group[0] >= 224, welcome.group[0] <= 239 else {
                throw .malformedWelcome(host: host)
            }
            let table = try ManifestEntry.table(of: manifest, diskBytes: welcome.diskBytes)
            guard table.identity == welcome.identity else { throw .manifestNotOfIdentity(host: host) }
            connection.setReceiveTimeout(0.05)
            let signature = signed.isEmpty ? nil : try? ImageSignature(parsing: signed)
            return Session(connection: connection, welcome: welcome, manifest: manifest, table: table, signature: signature,
                           host: host, port: port, name: name)
        }

        /// After the server restarted: the same image carries on under its new session.
        mutating func reconnect(timeout: TimeInterval) throws(MulticastError) {
            let again = try Session.connect(host: host, port: port, name: name, timeout: timeout)
            guard again.welcome.identity == welcome.identity, again.manifest == manifest else {
                throw .differentImage(host: host)
            }
            let held = self.held
            self = again
            self.held = held
        }
    }
}
