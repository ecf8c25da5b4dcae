import Foundation
import Glibc
import Imaging
import Testing
import UDIF
@testable import Multicast

/// Control-connection failures as the client meets them, on loopback: each is its own case,
/// and only a server that is away is asked again.
@Suite struct ConnectionErrorTests {
    @Test func addressesAreParsedOrRefusedByCase() throws {
        #expect(try MulticastClient.parse("asr://lab-server") == ("lab-server", 7800))
        #expect(try MulticastClient.parse("ASR://10.0.0.1:7900/x") == ("10.0.0.1", 7900))
        #expect(throws: MulticastError.notAnASRAddress("http://x")) { try MulticastClient.parse("http://x") }
        #expect(throws: MulticastError.noServerName(url: "asr://")) { try MulticastClient.parse("asr://") }
        #expect(throws: MulticastError.badPort(url: "asr://h:0")) { try MulticastClient.parse("asr://h:0") }
        let hex = String(repeating: "ab", count: 32)
        #expect(try MulticastClient.parse("asr://lab?sha256=\(hex)") == ("lab", 7800))
        #expect(try MulticastClient.parse("asr://lab:7900/?sha256=\(hex)") == ("lab", 7900))
        #expect(try MulticastClient.pin(in: "asr://lab/?x=1&sha256=\(hex)")?.hex == hex)
        #expect(try MulticastClient.pin(in: "asr://lab") == nil)
        #expect(throws: ImagingError.self) { try MulticastClient.pin(in: "asr://lab?sha256=abc") }
    }

    /// A loopback port bound but not listening: connecting to it is refused.
    func refusingPort() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        var addr = sockaddrIn(in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        try #require(ok)
        return (fd, UInt16(bigEndian: addr.sin_port))
    }

    @Test func aRefusedConnectionIsAServerAwayAndIsRetriedUntilTheTimeout() throws {
        let (fd, port) = try refusingPort()
        defer { close(fd) }
        let e = #expect(throws: MulticastError.self) { try ControlConnection.connect(host: "127.0.0.1", port: port, timeout: 1) }
        #expect(e == .cannotConnect(host: "127.0.0.1", port: port, .connectionRefused))
        #expect(e?.serverAway == true)
        let started = Date()
        #expect(throws: MulticastError.cannotConnect(host: "127.0.0.1", port: port, .connectionRefused)) {
            try MulticastClient.Session.connect(host: "127.0.0.1", port: port, name: "test", timeout: 1)
        }
        #expect(Date().timeIntervalSince(started) >= 0.9, "asked again until the timeout")
    }

    @Test func aPeerThatHangsUpIsClosed() throws {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let connection = ControlConnection(fd: fds[0], peer: "peer")
        close(fds[1])
        let e = #expect(throws: MulticastError.self) { try connection.receive() }
        #expect(e == .closed(peer: "peer"))
        #expect(e?.serverAway == true)
        let lost = #expect(throws: MulticastError.self) { try connection.send(.done(failure: nil)) }
        guard case .connectionLost(peer: "peer", .brokenPipe)? = lost else { Issue.record("\(String(describing: lost))"); return }
    }

    @Test func aDropReadsAsOneLineAndIsNotRetried() throws {
        var fds: [Int32] = [0, 0]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let client = ControlConnection(fd: fds[0], peer: "server")
        let server = ControlConnection(fd: fds[1], peer: "client")
        try server.send(.drop(reason: "full\nup"))
        let e = #expect(throws: MulticastError.self) {
            guard case .drop(let reason)? = try client.receive() else { return }
            throw MulticastError.droppedByServer(reason: reason)
        }
        #expect(e == .droppedByServer(reason: "full\nup"))
        #expect(e?.serverAway == false)
        #expect(e?.description == #"the server dropped this client: "full\nup""#, "one line")
    }
}

/// The client takes the image to be the identity WELCOME names, and refuses a manifest that
/// gives another.
@Suite struct ManifestIdentityTests {
    /// Two zlib chunks around one of free space.
    let manifest: [ManifestEntry] = [
        ManifestEntry(diskOffset: 0, length: 1 << 20, storedLength: 900, codec: 0x8000_0005, sha256: [UInt8](repeating: 1, count: 32)),
        ManifestEntry(diskOffset: 1 << 20, length: 1 << 20, storedLength: 0, codec: 2, sha256: [UInt8](repeating: 0, count: 32)),
        ManifestEntry(diskOffset: 2 << 20, length: 1 << 20, storedLength: 900, codec: 0x8000_0005, sha256: [UInt8](repeating: 3, count: 32)),
    ]

    /// A one-connection server on loopback that answers HELLO with `identity` and the manifest.
    func handshake(announcing identity: [UInt8]) throws -> Result<MulticastClient.Session, MulticastError> {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        try #require(fd >= 0)
        defer { close(fd) }
        var addr = sockaddrIn(in_addr(s_addr: UInt32(0x7F00_0001).bigEndian), 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        try #require(ok && listen(fd, 1) == 0)
        let manifest = self.manifest
        let served = Thread {
            let peer = accept(fd, nil, nil)
            guard peer >= 0 else { return }
            let connection = ControlConnection(fd: peer, peer: "client")
            _ = try? connection.receive()
            try? connection.send(.welcome(ControlMessage.Welcome(version: ControlMessage.protocolVersion, sessionID: 1, identity: identity,
                                                                diskBytes: 3 << 20, group: [239, 1, 2, 3], dataPort: 7801, dataRate: 1000)))
            try? connection.send(.manifest(manifest))
            try? connection.send(.signature(signed: []))
            Thread.sleep(forTimeInterval: 1)
            close(peer)
        }
        served.start()
        return Result { () throws(MulticastError) in
            try MulticastClient.Session.connect(host: "127.0.0.1", port: UInt16(bigEndian: addr.sin_port), name: "test", timeout: 2)
        }
    }

    @Test func theManifestMustGiveTheAnnouncedIdentity() throws {
        let identity = try ManifestEntry.table(of: manifest, diskBytes: 3 << 20).identity
        #expect(try handshake(announcing: identity).get().manifest == manifest)
        var other = identity
        other[0] ^= 1
        #expect(throws: MulticastError.manifestNotOfIdentity(host: "127.0.0.1")) { try handshake(announcing: other).get() }
    }
}
