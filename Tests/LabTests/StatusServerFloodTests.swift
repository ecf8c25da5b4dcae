import Foundation
import StatusServer
import TestSupport
import Testing

/// Attacks on the status server that aim at the multicast server's process: memory through
/// pipelined requests never read, descriptors through held connections. Each runs beside a
/// real restore, which must finish byte-identical.
@Suite(.serialized) struct StatusServerFloodTests {
    static let enabled = Lab.enabled
    let net = Lab()
    let http = StatusServerNetworkTests()

    /// The attacker, in Python's standard library, run in the server's host. `flood`: CONNS
    /// connections each send up to MEGABYTES of pipelined `GET /` and never read; prints how
    /// much went out, then holds them until STOP exists. `hold`: COUNT connections from
    /// ADDRESSES source addresses in 127.0.1.0/24 and up, each sending a byte of a request head
    /// every 5 s (under the 30 s idle timeout); prints how many the server still holds after
    /// each round, until STOP exists.
    static let attacker = #"""
        import json, os, resource, socket, sys, time
        mode = sys.argv[1]
        if mode == "flood":
            host, port, conns, megabytes, stop = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
            request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            block = request * (65536 // len(request))
            held, sent, stalled, closed = [], 0, 0, 0
            for k in range(conns):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # never read: the answers back up at once
                s.connect((host, port))
                s.settimeout(3)
                total = 0
                try:
                    while total < megabytes << 20:
                        total += s.send(block)
                except socket.timeout:
                    stalled += 1  # the server stopped reading us
                except OSError:
                    closed += 1  # the server closed us
                sent += total
                held.append(s)
            print(json.dumps({"sent": sent, "stalled": stalled, "closed": closed}), flush=True)
            while not os.path.exists(stop):
                time.sleep(0.2)
        elif mode == "hold":
            host, port, count, addresses, stop = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            socks, connected = [], 0
            for i in range(count):
                a = i % addresses
                s = socket.socket()
                try:
                    s.bind(("127.0.%d.%d" % (1 + a // 250, 1 + a % 250), 0))
                    s.settimeout(5)
                    s.connect((host, port))
                    connected += 1
                    s.sendall(b"GET / HTTP/1.1\r\nX-Held: ")
                    s.setblocking(False)
                    socks.append(s)
                except OSError:
                    s.close()  # refused, or closed by the server at once
            rounds = 0
            while not os.path.exists(stop):
                still = []
                for s in socks:
                    try:
                        if s.recv(1) == b"":
                            raise OSError("closed")
                    except BlockingIOError:
                        pass  # nothing to read: still open
                    except OSError:
                        s.close()
                        continue
                    try:
                        s.send(b"a")
                        still.append(s)
                    except OSError:
                        s.close()
                socks = still
                rounds += 1
                print(json.dumps({"round": rounds, "connected": connected, "held": len(socks)}), flush=True)
                for _ in range(25):
                    if os.path.exists(stop):
                        break
                    time.sleep(0.2)
        """#

    /// A number from /proc/PID/status (VmRSS, VmHWM), in bytes.
    static func memory(_ pid: Int32, _ field: String) -> UInt64? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
              let kB = UInt64(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kB * 1024
    }

    /// The JSON lines the attacker has printed so far.
    func reports(_ log: String) -> [[String: Any]] {
        net.log(log).split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// Several MB of pipelined `GET /` on connections that never read: the server stops
    /// reading them once an answer is unflushed and closes those pipelining past the cap, so
    /// its peak RSS stays within 64 MiB of where it was before, and a restore beside the flood
    /// finishes byte-identical. (Without backpressure the server read and answered all of it:
    /// about 700 MB per MB of requests.)
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func aPipelinedFloodDoesNotGrowTheServer() throws {
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let serverLog = f.dir.file("server.log")
        let server = try http.startServer(bed, f, log: serverLog)
        #expect(net.eventually(seconds: 30) { net.log(serverLog).contains("status page on") }, "\(net.log(serverLog))")
        let pid = server.processIdentifier
        #expect((try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8)) == "asr\n", "the server itself, not a wrapper")
        // Answered once, so the baseline has the page's own allocations in it.
        #expect(try http.status(bed, dir: f.dir)["clients"] != nil)
        let baseline = try #require(Self.memory(pid, "VmRSS"))
        try "5".write(toFile: "/proc/\(pid)/clear_refs", atomically: false, encoding: .utf8)  // VmHWM from here on

        let stop = f.dir.file("stop"), floodLog = f.dir.file("flood.log")
        let script = StatusServerNetworkTests.script("attacker.py", Self.attacker, in: f.dir)
        let flood = try bed.start("server", ["/usr/bin/python3", script, "flood", "127.0.0.1", "8080", "4", "1", stop], log: floodLog)
        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"), timeout: 120)
        #expect(net.eventually(seconds: 120) { reports(floodLog).contains { $0["sent"] != nil } }, "\(net.log(floodLog))")
        #expect(net.wait(c1, seconds: 180), "\(net.log(f.dir.file("c1.log")))")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        // Still answering, with the flood's connections held.
        #expect(try http.status(bed, dir: f.dir)["clients"] != nil)
        let peak = try #require(Self.memory(pid, "VmHWM"))
        let grew = Int64(peak) - Int64(baseline)
        #expect(grew < 64 << 20, "peak RSS \(peak >> 20) MiB, \(grew >> 20) MiB over the baseline of \(baseline >> 20) MiB; flood: \(net.log(floodLog))")
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        #expect(net.wait(flood, seconds: 30), "\(net.log(floodLog))")
        server.terminate()
        #expect(net.wait(server, seconds: 10), "\(net.log(serverLog))")
        print("pipelined flood: \(net.log(floodLog).trimmingCharacters(in: .whitespacesAndNewlines)); baseline \(baseline >> 10) KiB, peak \(peak >> 10) KiB")
    }

    /// 1,100 status connections from 100 source addresses (11 each, under the per-address
    /// cap), each kept alive by a byte every 5 s, against a server started with systemd's
    /// default descriptor limit of 1024 (soft and hard, so it cannot raise it): the status
    /// server holds no more than its share, the server says it shared the limit, and a client
    /// joins and restores byte-identical while they are held. (Before, the status server took
    /// every descriptor and joins failed: "did not welcome us".)
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func heldStatusConnectionsDoNotStopJoins() throws {
        // The attacker's side needs 1,100 descriptors and more.
        var rl = rlimit()
        getrlimit(RLIMIT_NOFILE_, &rl)
        if rl.rlim_max < 4096 {
            rl.rlim_max = 4096
            rl.rlim_cur = 4096
            #expect(setrlimit(RLIMIT_NOFILE_, &rl) == 0, "raising this process's descriptor limit")
        }
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let serverLog = f.dir.file("server.log")
        let server = try bed.start("server", ["/bin/sh", "-c", "ulimit -n 1024 && exec \"$0\" \"$@\"", CLI.binary, "server", "--source", f.image,
                                              "--config", f.config, "--status", "8080"], log: serverLog)
        #expect(net.eventually(seconds: 30) { net.log(serverLog).contains("status page on") }, "\(net.log(serverLog))")

        let stop = f.dir.file("stop"), holdLog = f.dir.file("hold.log")
        let script = StatusServerNetworkTests.script("attacker.py", Self.attacker, in: f.dir)
        let holder = try bed.start("server", ["/usr/bin/python3", script, "hold", "127.0.0.1", "8080", "1100", "100", stop], log: holdLog)
        // Every connection made, and a keep-alive round after it.
        #expect(net.eventually(seconds: 120) { reports(holdLog).contains { ($0["round"] as? Int ?? 0) >= 2 } }, "\(net.log(holdLog))")
        let before = reports(holdLog).last ?? [:]
        #expect(before["connected"] as? Int == 1100, "the attacker connected them all: \(before)")

        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"), timeout: 120)
        #expect(net.wait(c1, seconds: 180), "\(net.log(f.dir.file("c1.log")))")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        let after = reports(holdLog).last ?? [:]
        let held = after["held"] as? Int ?? -1
        #expect(held > 0 && held <= StatusServer.maxConnections, "held while the client restored: \(after)")
        #expect(net.log(serverLog).contains("the descriptor limit (1024) is below"), "\(net.log(serverLog))")
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        #expect(net.wait(holder, seconds: 30), "\(net.log(holdLog))")
        server.terminate()
        #expect(net.wait(server, seconds: 10), "\(net.log(serverLog))")
        print("held connections: \(before) then \(after)")
    }
}

private let RLIMIT_NOFILE_ = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
