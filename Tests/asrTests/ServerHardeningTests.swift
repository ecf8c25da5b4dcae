import Foundation
import TestSupport
import Testing

/// Attacks on `asr server` from other hosts of the LAN, each from a namespace host of its own,
/// while a real client restores: none may stall the session or keep the server alive past a
/// SIGTERM.
@Suite(.serialized) struct ServerHardeningTests {
    static let enabled = MulticastNetworkTests.enabled
    /// The control protocol's version (docs/PROTOCOL.md); a HELLO of another is dropped at once.
    static let protocolVersion = 5

    /// The attacker: raw control frames (4-byte length, type byte, payload) from Python.
    static let attacker = #"""
        import resource, socket, struct, sys, time
        mode, host, version = sys.argv[1], sys.argv[2], int(sys.argv[3])
        def frame(body): return struct.pack(">I", len(body)) + body
        hello = frame(b"\x01ASRC" + struct.pack(">HH", version, 8) + b"attacker")
        lacking_all = frame(b"\x04" + struct.pack(">IQBIII", 0, 0, 0, 0, 0, 1) + struct.pack(">II", 0, 12) + struct.pack(">I", 0))
        def connect():
            s = socket.create_connection((host, 7800))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        if mode == "reader":  # joins, lacks everything, asks again and again, never reads
            s = connect()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            try:
                s.sendall(hello + lacking_all)
                for _ in range(100000): s.sendall(hello)
            except OSError:
                pass
            time.sleep(60)
        elif mode == "idle":  # as many connections as it can hold, saying nothing
            resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
            held = []
            for _ in range(int(sys.argv[4])):
                try: held.append(connect())
                except OSError: pass
            print("held", len(held), flush=True)
            time.sleep(60)
        elif mode == "big":  # frames claiming 64 MiB, 8 MiB of them sent, on 4 connections
            held = [connect() for _ in range(4)]
            junk = b"\x04" + bytes(65535)
            for s in held:
                try:
                    s.sendall(struct.pack(">I", (64 << 20) - 1))
                    for _ in range(128): s.sendall(junk)
                except OSError:
                    pass
            time.sleep(60)
        elif mode == "touch":  # HELLO, a REPORT lacking all 12 chunks, and gone
            s = connect()
            s.sendall(hello + lacking_all)
            time.sleep(0.5)
            s.close()
        """#

    func startAttack(_ bed: Testbed, _ host: String, _ mode: String, _ args: [String] = [], dir: TemporaryDirectory) throws -> Process {
        let script = dir.file("attacker.py")
        if !FileManager.default.fileExists(atPath: script) {
            _ = FileManager.default.createFile(atPath: script, contents: Data(Self.attacker.utf8))
        }
        return try bed.start(host, ["/usr/bin/python3", script, mode, bed.address("server"), String(Self.protocolVersion)] + args,
                             log: dir.file("\(host).log"))
    }

    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func noLANHostStallsTheSession() throws {
        let net = MulticastNetworkTests()
        let f = try MulticastNetworkTests.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1", "reader", "idle", "big"])
        defer { bed.teardown() }
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", f.config], log: f.dir.file("server.log"))
        usleep(300_000)
        _ = try startAttack(bed, "reader", "reader", dir: f.dir)
        _ = try startAttack(bed, "idle", "idle", ["2000"], dir: f.dir)
        _ = try startAttack(bed, "big", "big", dir: f.dir)
        usleep(2_000_000)
        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"), timeout: 60)
        #expect(net.wait(c1, seconds: 90), "\(net.log(f.dir.file("c1.log")))\n\(net.log(f.dir.file("server.log")))")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        let log = net.log(f.dir.file("server.log"))
        #expect(log.contains("refusing control connections from \(bed.address("idle"))"), "\(log)")
        // The reader joined and never read: given up on once a send to it timed out (or
        // dropped for its silence, its DROP never read).
        let reader = "client attacker (\(bed.address("reader")))"
        #expect(net.eventually(seconds: 30) {
            let text = net.log(f.dir.file("server.log"))
            return text.contains("\(reader) left before finishing") || text.contains("dropped \(reader)")
        }, "\(net.log(f.dir.file("server.log")))")
        let asked = Date()
        server.terminate()
        #expect(net.wait(server, seconds: 5), "SIGTERM ends the server")
        #expect(Date().timeIntervalSince(asked) < 2, "within a second or so: \(Date().timeIntervalSince(asked)) s")
    }

    /// About 70 bytes (HELLO, a REPORT, gone) must not start a stream that never stops.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func aClientThatLeavesStopsTheStream() throws {
        let net = MulticastNetworkTests()
        let f = try MulticastNetworkTests.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "touch"])
        defer { bed.teardown() }
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", f.config], log: f.dir.file("server.log"))
        usleep(300_000)
        let touch = try startAttack(bed, "touch", "touch", dir: f.dir)
        #expect(net.wait(touch, seconds: 10))
        #expect(net.eventually(seconds: 10) { net.log(f.dir.file("server.log")).contains("left before finishing") }, "\(net.log(f.dir.file("server.log")))")
        let sent = { MulticastNetworkTests.ServerLog(net.log(f.dir.file("server.log"))) }
        #expect(net.eventually(seconds: 10) { !sent().idle.isEmpty }, "the stream stops: \(net.log(f.dir.file("server.log")))")
        let idleAt = sent().idle.last ?? 0
        usleep(2_000_000)
        server.terminate()
        #expect(net.wait(server, seconds: 5))
        let stopped = sent().stopped ?? .max
        #expect(stopped == idleAt, "nothing was sent after the stream went idle: \(idleAt) then \(stopped)")
        #expect(stopped < 2 * (sent().stored ?? 0), "less than two images' worth went out")
    }
}
