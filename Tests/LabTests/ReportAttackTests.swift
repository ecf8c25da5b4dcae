import Foundation
import TestSupport
import Testing

/// Clients that lie in their REPORTs, each from a namespace host of its own, while a real
/// client restores: the liar is dropped, and the real client's restore costs the server no
/// more than an image and a tenth (bytes sent, from the server's log).
@Suite(.serialized) struct ReportAttackTests {
    static let enabled = Lab.enabled

    /// The rogue: raw control frames (4-byte length, type byte, payload; docs/PROTOCOL.md).
    static let rogue = #"""
        import socket, struct, sys, threading, time
        mode, host, version = sys.argv[1], sys.argv[2], int(sys.argv[3])
        def frame(body): return struct.pack(">I", len(body)) + body
        hello = frame(b"\x01ASRC" + struct.pack(">HH", version, 8) + b"attacker")
        HAS_POSITION, QUIET = 1, 2
        def report(received, ranges, partial=b"", partial_count=0):
            # received, write rate, flags, pass, chunk, packets, verified, to verify, ranges;
            # a position past the stream (the server takes it as "has seen all so far") and quiet
            # ("nothing is on its way"): everything behind the cursor counts as lost.
            body = b"\x04" + struct.pack(">IQBIIQQQI", received, 0, HAS_POSITION | QUIET, 0xFFFFFFFF, 0, received * 1000, 0, 0, len(ranges))
            body += b"".join(struct.pack(">II", first, n) for first, n in ranges)
            return frame(body + struct.pack(">I", partial_count) + partial)
        def connect():
            s = socket.create_connection((host, 7800))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s
        def listen(s, name):  # prints the server's DROP, if it sends one
            try:
                while True:
                    head = s.recv(4, socket.MSG_WAITALL)
                    if len(head) < 4: break
                    body = s.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL)
                    if body[:1] == b"\x06": print(name, "dropped:", body[3:].decode(), flush=True)
            except OSError:
                pass
            print(name, "closed", flush=True)
        if mode == "claims":  # claims ever more chunks, asks for all 12 every 20 ms
            s = connect()
            threading.Thread(target=listen, args=(s, "claims"), daemon=True).start()
            s.sendall(hello)
            sent, started = 0, time.time()
            try:
                while time.time() - started < 120:
                    sent += 1
                    s.sendall(report(sent, [(0, 12)]))
                    time.sleep(0.02)
            except OSError:
                pass
            print("sent", sent, "reports", flush=True)
        elif mode == "big":  # on 4 connections, 8 MB REPORTs: 1024 chunks in part, 4000 fragments each
            fragments = b"".join(struct.pack(">H", f) for f in range(4000))
            partial = b"".join(struct.pack(">IH", c % 12, 4000) + fragments for c in range(1024))
            big = report(1, [(0, 12)], partial, 1024)
            print("REPORT of", len(big), "bytes", flush=True)
            def attack(k):
                started = time.time()
                while time.time() - started < 40:
                    try:
                        s = connect()
                        threading.Thread(target=listen, args=(s, "big%d" % k), daemon=True).start()
                        s.sendall(hello)
                        while True: s.sendall(big)
                    except OSError:
                        time.sleep(0.2)
            threads = [threading.Thread(target=attack, args=(k,)) for k in range(4)]
            for t in threads: t.start()
            for t in threads: t.join()
        """#

    func startRogue(_ bed: Testbed, _ mode: String, dir: TemporaryDirectory) throws -> Process {
        let script = dir.file("rogue.py")
        _ = FileManager.default.createFile(atPath: script, contents: Data(Self.rogue.utf8))
        return try bed.start("rogue", ["/usr/bin/python3", script, mode, bed.address("server"), String(ServerHardeningTests.protocolVersion)],
                             log: dir.file("rogue.log"))
    }

    /// The real client first (so bytes counted at its end are its session's), the rogue once it
    /// has joined; the real client must finish byte-identical with at most 1.10 images sent.
    func restoreBeside(_ mode: String, _ bed: Testbed, _ f: Lab.Fixture) throws -> Process {
        let net = Lab()
        let server = try ServerHardeningTests().startServer(bed, f)
        let serverLog = { net.log(f.dir.file("server.log")) }
        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"), timeout: 60)
        #expect(net.eventually(seconds: 30) { serverLog().contains("(\(bed.address("c1"))) joined") }, "\(serverLog())")
        _ = try startRogue(bed, mode, dir: f.dir)
        #expect(net.eventually(seconds: 10) { serverLog().contains("client attacker (\(bed.address("rogue"))) joined") }, "\(serverLog())")
        #expect(net.wait(c1, seconds: 120), "\(net.log(f.dir.file("c1.log")))\n\(serverLog())")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        let sent = Lab.ServerLog(serverLog())
        let stored = sent.stored ?? 0, complete = sent.complete[bed.address("c1")] ?? .max
        #expect(stored > 0 && complete <= stored * 110 / 100,
                "the real client had every chunk after \(complete) bytes; the image stores \(stored)\n\(serverLog())")
        return server
    }

    /// The endless-claims client: its `received` grows at every report (past the chunk count,
    /// where a client once counted as verifying), its need set is always every chunk, and
    /// it says every chunk behind the cursor was lost. The server judges it by its need set,
    /// which never shrinks: it earns no repairs and is dropped by the slow-client rule, and
    /// then the stream stops.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func aClientThatOnlyClaimsProgressIsDropped() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1", "rogue"])
        defer { bed.teardown() }
        let server = try restoreBeside("claims", bed, f)
        let serverLog = { net.log(f.dir.file("server.log")) }
        let dropped = "dropped client attacker (\(bed.address("rogue"))): no progress in"
        #expect(net.eventually(seconds: 60) { serverLog().contains(dropped) }, "\(serverLog())")
        #expect(net.eventually(seconds: 10) { net.log(f.dir.file("rogue.log")).contains("claims dropped: no progress") },
                "\(net.log(f.dir.file("rogue.log")))")
        // Nobody left to serve: the stream goes idle after the drop and sends nothing more.
        #expect(net.eventually(seconds: 10) {
            serverLog().split(separator: "\n").drop { !$0.contains(dropped) }.contains { $0.contains("idle: no client needs anything") }
        }, "\(serverLog())")
        let idleAt = Lab.ServerLog(serverLog()).idle.last ?? 0
        server.terminate()
        #expect(net.wait(server, seconds: 5))
        #expect(Lab.ServerLog(serverLog()).stopped == idleAt, "\(serverLog())")
    }

    /// The big-REPORT client: 8 MB REPORTs, again and again on four connections. A REPORT
    /// can name no more than the image has (here about 10 KB); a larger one is a protocol
    /// error, refused on its header before its bytes are read, and the client is dropped.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func aClientSendingHugeReportsIsDropped() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1", "rogue"])
        defer { bed.teardown() }
        let server = try restoreBeside("big", bed, f)
        let serverLog = { net.log(f.dir.file("server.log")) }
        #expect(serverLog().contains("dropped client attacker (\(bed.address("rogue"))): protocol error: a message of type 4 and 8"),
                "\(serverLog())")
        #expect(net.log(f.dir.file("rogue.log")).contains("dropped: protocol error"), "\(net.log(f.dir.file("rogue.log")))")
        server.terminate()
        #expect(net.wait(server, seconds: 5))
    }
}
