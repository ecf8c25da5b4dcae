import Foundation
import TestSupport
import Testing

/// Attacks on `asr server` from other hosts of the LAN, each from a namespace host of its own,
/// while a real client restores: none may stall the session or keep the server alive past a
/// SIGTERM.
@Suite(.serialized) struct ServerHardeningTests {
    static let enabled = Lab.enabled
    /// The control protocol's version (docs/PROTOCOL.md); a HELLO of another is dropped at once.
    static let protocolVersion = 9

    /// The attacker: raw control frames (4-byte length, type byte, payload) from Python.
    static let attacker = #"""
        import resource, socket, struct, sys, time
        mode, host, version = sys.argv[1], sys.argv[2], int(sys.argv[3])
        def frame(body): return struct.pack(">I", len(body)) + body
        hello = frame(b"\x01ASRC" + struct.pack(">HH", version, 8) + b"attacker")
        # REPORT (protocol 8): received, write rate, flags, pass, chunk, packets, verified, to verify; 1 range; no partial chunks
        lacking_all = frame(b"\x04" + struct.pack(">IQBIIQQQI", 0, 0, 0, 0, 0, 0, 0, 0, 1) + struct.pack(">II", 0, 12) + struct.pack(">I", 0))
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
        elif mode == "forge":  # learns the session as a client would, then sends garbage fragments of every chunk
            rate, spoof = int(sys.argv[4]), len(sys.argv) > 5 and sys.argv[5] == "spoof"
            s = connect()
            s.sendall(hello)
            def read_frame():
                n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
                return s.recv(n, socket.MSG_WAITALL)
            welcome, manifest = read_frame(), read_frame()
            session = welcome[3:11]
            group = socket.inet_ntoa(welcome[51:55])
            port = struct.unpack(">H", welcome[55:57])[0]
            count = struct.unpack(">I", manifest[1:5])[0]
            # offset, length, stored length, codec (the stored offset between them is skipped)
            chunks = [(lambda t: (t[0], t[1], t[3], t[4]))(struct.unpack(">QQQII", manifest[5 + 64 * i:5 + 64 * i + 32])) for i in range(count)]
            s.close()
            if spoof:  # raw IPv4 with the server's address as the source: past the clients' source filter
                u = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
                def udp(body): return struct.pack(">HHHH", port, port, 8 + len(body), 0) + body
                def ip(body): return struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0, 3, 17, 0,
                                                 socket.inet_aton(host), socket.inet_aton(group)) + body
                wrap = lambda body: ip(udp(body))
            else:
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                u.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 3)
                wrap = lambda body: body
            print("forging for", group, port, count, "chunks", flush=True)
            # Fragment 0 of every chunk, over and over: whenever a client starts a chunk, a
            # forged first fragment is there before the real one, and the first copy is kept.
            forged = []
            for index, (offset, length, stored, codec) in enumerate(chunks):
                if stored == 0: continue
                fragments, size = (stored + 1399) // 1400, min(1400, stored)
                header = b"ASRD\x01\x00" + struct.pack(">H", fragments) + session + struct.pack(">IIHHI", 0, index, 0, size, stored)
                forged.append(wrap(header + bytes([index & 255]) * size))
            sent, started = 0, time.time()
            while time.time() - started < 120:
                for packet in forged:
                    u.sendto(packet, (group, 0 if spoof else port))
                    sent += len(packet)
                while sent > rate * (time.time() - started): time.sleep(0.0005)
        elif mode == "stall":  # says nothing, or stops inside a frame; reports when the server closes
            s = connect()
            if sys.argv[4] == "midframe": s.sendall(hello + struct.pack(">I", 100) + bytes(10))
            s.settimeout(40)
            started = time.time()
            try:
                while s.recv(65536): pass
                print("closed after %.0f s" % (time.time() - started), flush=True)
            except OSError as e:
                print("still open:", e, flush=True)
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

    /// The server, once it listens: an attacker whose connection is refused attacks nothing.
    func startServer(_ bed: Testbed, _ f: Lab.Fixture) throws -> Process {
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", f.config], log: f.dir.file("server.log"))
        let net = Lab()
        #expect(net.eventually(seconds: 30) { net.log(f.dir.file("server.log")).contains("waiting for clients") },
                "\(net.log(f.dir.file("server.log")))")
        return server
    }

    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func noLANHostStallsTheSession() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1", "reader", "idle", "big"])
        defer { bed.teardown() }
        let server = try startServer(bed, f)
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
        // Before the deadlines, a server whose stream was stuck behind the reader never ended.
        server.terminate()
        #expect(net.wait(server, seconds: 5), "SIGTERM ends the server")
    }

    /// Another host sends the first fragment of every chunk, with the session's id and right
    /// sizes but wrong bytes, over and over at ten times the data rate (for 2 minutes): the
    /// client hears the server's source only, and finishes byte-identical well before.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func forgedFragmentsFromAnotherHostDoNotStallAClient() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1", "forger"])
        defer { bed.teardown() }
        let server = try startServer(bed, f)
        _ = try startAttack(bed, "forger", "forge", ["25000000"], dir: f.dir)
        #expect(net.eventually(seconds: 10) { net.log(f.dir.file("forger.log")).contains("forging for") }, "\(net.log(f.dir.file("forger.log")))")
        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"), timeout: 30)
        #expect(net.wait(c1, seconds: 60), "\(net.log(f.dir.file("c1.log")))\n\(net.log(f.dir.file("server.log")))")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        server.terminate()
        #expect(net.wait(server, seconds: 5))
    }

    /// The same from a host that puts the server's address on its packets, so the clients'
    /// source filter lets them in: a chunk spoiled by a forged fragment is asked for again
    /// with its fragment digests, and forged copies are dropped from then on.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func spoofedForgedFragmentsDoNotStallAClient() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1", "forger"])
        defer { bed.teardown() }
        let server = try startServer(bed, f)
        _ = try startAttack(bed, "forger", "forge", ["25000000", "spoof"], dir: f.dir)
        #expect(net.eventually(seconds: 10) { net.log(f.dir.file("forger.log")).contains("forging for") }, "\(net.log(f.dir.file("forger.log")))")
        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"), timeout: 30)
        #expect(net.wait(c1, seconds: 90), "\(net.log(f.dir.file("c1.log")))\n\(net.log(f.dir.file("server.log")))\n\(net.log(f.dir.file("forger.log")))")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        let log = net.log(f.dir.file("server.log"))
        #expect(log.contains("sending fragment digests"), "the forged fragments reached the client: \(log)")
        server.terminate()
        #expect(net.wait(server, seconds: 5))
    }

    /// A connection that never says HELLO, and one that stops partway through a frame, are
    /// closed by the server's deadlines (10 s each) rather than held open.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func silentAndHalfSentConnectionsAreClosed() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "silent", "midframe"])
        defer { bed.teardown() }
        let server = try startServer(bed, f)
        let attacks = try ["silent", "midframe"].map { try startAttack(bed, $0, "stall", [$0], dir: f.dir) }
        for (host, attack) in zip(["silent", "midframe"], attacks) {
            #expect(net.wait(attack, seconds: 60), "\(host): \(net.log(f.dir.file("\(host).log")))")
            #expect(net.log(f.dir.file("\(host).log")).contains("closed after"), "\(host): \(net.log(f.dir.file("\(host).log")))")
        }
        server.terminate()
        #expect(net.wait(server, seconds: 5))
    }

    /// About 70 bytes (HELLO, a REPORT, gone) must not start a stream that never stops.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func aClientThatLeavesStopsTheStream() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "touch"])
        defer { bed.teardown() }
        let server = try startServer(bed, f)
        let touch = try startAttack(bed, "touch", "touch", dir: f.dir)
        #expect(net.wait(touch, seconds: 10))
        #expect(net.eventually(seconds: 10) { net.log(f.dir.file("server.log")).contains("left before finishing") }, "\(net.log(f.dir.file("server.log")))")
        let sent = { Lab.ServerLog(net.log(f.dir.file("server.log"))) }
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
