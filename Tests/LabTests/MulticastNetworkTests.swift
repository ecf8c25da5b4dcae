import SystemSupport
import Foundation
import TestSupport
import Testing

/// Multicast between real processes in namespaces: a server host and three client hosts.
@Suite(.serialized) struct MulticastNetworkTests: LabHelpers {
    /// Two clients from the start, one of them losing 5% of the data, and one joining once the
    /// stream is under way: the late joiner takes the stream from where it is and gets the head
    /// afterwards, so the client that lost nothing has every chunk no later than it (by bytes
    /// sent; when each finishes verifying is up to its CPU). The lossy one may not: its last
    /// repairs can lose 5% again, and each round waits for its next report.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func threeClientsWithLossAndALateJoiner() throws {
        let f = try Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1", "c2", "late"])
        defer { bed.teardown() }
        try bed.dropIncoming("c2", percent: 5, port: 7800)
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", f.config], log: f.dir.file("server.log"))
        usleep(300_000)
        let early = try ["c1", "c2"].map { try restore(bed, $0, from: "server", into: f.dir.file("\($0).raw"), log: f.dir.file("\($0).log")) }
        #expect(eventually { log(f.dir.file("server.log")).contains("sending what") }, "\(log(f.dir.file("server.log")))")
        // Well into the first pass: c1 has marked at least 15 of its 50 sections.
        let intoThePass = eventually(seconds: 60) {
            let line = log(f.dir.file("c1.log")).components(separatedBy: "\tPass 1  ").dropFirst().first ?? ""
            return line.prefix { $0 == "." || $0 == "x" }.count >= 15
        }
        try #require(intoThePass, "c1 never got a third into the first pass: \(log(f.dir.file("c1.log")))")
        let late = try restore(bed, "late", from: "server", into: f.dir.file("late.raw"), log: f.dir.file("late.log"))
        for (c, h) in zip(early + [late], ["c1", "c2", "late"]) {
            #expect(wait(c), "\(h): \(log(f.dir.file("\(h).log")))")
            #expect(try sha256(file: f.dir.file("\(h).raw")) == f.sha, "\(h)")
        }
        #expect(log(f.dir.file("c1.log")).contains("\tPass 1  "))
        server.terminate()
        #expect(wait(server, seconds: 10), "SIGTERM is a clean exit")
        let text = log(f.dir.file("server.log"))
        let record = ServerLog(text)
        #expect(record.finished.count == 3, "\(text)")
        let complete = { (host: String) in record.complete[bed.address(host)] ?? .max }
        #expect(complete("late") < .max, "\(text)")
        // On a loaded machine c1 can lose datagrams too (a full socket buffer); then it is a
        // lossy client like c2, and its repairs may come after the late joiner's head.
        let firstPass = log(f.dir.file("c1.log")).split(separator: "\n").first { $0.contains("\tPass 1  ") } ?? ""
        if !firstPass.contains("x") {
            #expect(complete("c1") <= complete("late"), "\(text)\nc1: \(log(f.dir.file("c1.log")))")
        }
        #expect(text.components(separatedBy: "joined").count == 4, "\(text)")
    }

    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func aClientThatCannotKeepUpIsDroppedAndTheOthersFinish() throws {
        let f = try Fixture()
        let bed = try Testbed(hosts: ["server", "c1", "deaf"])
        defer { bed.teardown() }
        try bed.dropIncoming("deaf", percent: 100, port: 7800)
        try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", f.config], log: f.dir.file("server.log"))
        usleep(300_000)
        let deaf = try restore(bed, "deaf", from: "server", into: f.dir.file("deaf.raw"), log: f.dir.file("deaf.log"))
        let c1 = try restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"))
        #expect(wait(c1), "\(log(f.dir.file("c1.log")))")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        #expect(!wait(deaf, seconds: 60))
        #expect(log(f.dir.file("deaf.log")).contains("the server dropped this client: no progress in"), "\(log(f.dir.file("deaf.log")))")
        #expect(log(f.dir.file("server.log")).contains("dropped client"), "\(log(f.dir.file("server.log")))")
    }

    /// With nobody lacking anything the stream stops (before any Loop Suspend count), and the
    /// next request starts it again.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func theStreamStopsWhenNobodyNeedsAnythingAndTheNextRequestResumes() throws {
        let f = try Fixture(rate: 60_000_000, extra: "<key>Loop Suspend</key><integer>2</integer>")
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", f.config], log: f.dir.file("server.log"))
        usleep(300_000)
        #expect(try bed.run("c1", [CLI.binary, "restore", "--source", "asr://\(bed.address("server"))", "--file", f.dir.file("a.raw"),
                                   "--erase", "--noprompt"]).status == 0)
        #expect(eventually(seconds: 10) { !ServerLog(log(f.dir.file("server.log"))).idle.isEmpty }, "\(log(f.dir.file("server.log")))")
        let again = try bed.run("c1", [CLI.binary, "restore", "--source", "asr://\(bed.address("server"))", "--file", f.dir.file("b.raw"),
                                       "--erase", "--noprompt"])
        #expect(again.status == 0, "a new request resumes the stream: \(again.stdout) \(again.stderr)")
        #expect(try sha256(file: f.dir.file("b.raw")) == f.sha)
        #expect(eventually(seconds: 10) { ServerLog(log(f.dir.file("server.log"))).idle.count == 2 }, "\(log(f.dir.file("server.log")))")
        server.terminate()
        #expect(wait(server, seconds: 10))
        let numbers = ServerLog(log(f.dir.file("server.log")))
        #expect(numbers.stopped != nil && numbers.stopped == numbers.idle.last, "nothing sent while idle: \(log(f.dir.file("server.log")))")
    }

    /// 30 clients, each on its own host, started together: the server sends about one copy
    /// of the image (not one per client), and nothing once they are done.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func thirtyClientsStartedTogetherCostAboutOneImage() throws {
        // A slow rate for a small image: joining a fraction of a second apart costs little of it.
        let f = try Fixture(rate: 250_000, megabytes: 4)
        let names = (1...30).map { "c\($0)" }
        let bed = try Testbed(hosts: ["server"] + names)
        defer { bed.teardown() }
        let server = try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", f.config], log: f.dir.file("server.log"))
        #expect(eventually { log(f.dir.file("server.log")).contains("waiting for clients") })
        // Held while 30 processes start on a busy machine (the kernel still accepts their
        // connections), so all of them are there when it goes on: started together.
        kill(server.processIdentifier, SIGSTOP)
        let started = Date()
        let clients = try names.map { try restore(bed, $0, from: "server", into: f.dir.file("\($0).raw"), log: f.dir.file("\($0).log"), timeout: 90) }
        let connected = eventually(seconds: 60) {
            let out = try? bed.run("server", ["/usr/bin/ss", "-Htn", "state", "established", "( sport = :7800 )"], timeout: 10).stdout
            return (out?.split(separator: "\n").count ?? 0) >= names.count
        }
        kill(server.processIdentifier, SIGCONT)
        let resumed = Date()
        #expect(connected, "every client connected")
        for (c, h) in zip(clients, names) {
            #expect(wait(c, seconds: 150), "\(h): \(log(f.dir.file("\(h).log")))")
        }
        let took = Date().timeIntervalSince(started), streamed = Date().timeIntervalSince(resumed)
        for h in names { #expect(try sha256(file: f.dir.file("\(h).raw")) == f.sha, "\(h)") }
        usleep(1_000_000)  // long enough to see a stream that did not stop
        server.terminate()
        #expect(wait(server, seconds: 10))
        let text = log(f.dir.file("server.log"))
        let numbers = ServerLog(text)
        let last = numbers.finished.map(\.sent).max() ?? 0
        let stored = numbers.stored ?? 1
        let ratio = Double(last) / Double(stored)
        print("30 clients: \(last) bytes sent for \(stored) stored (\(ratio)x) in \(Int(took)) s, \(Int(streamed)) s after all had connected")
        #expect(numbers.finished.count == 30, "\(text)")
        #expect(ratio <= 1.10, "\(last) bytes sent for an image of \(stored) stored: \(text)")
        #expect(numbers.stopped == last, "the stream stopped with the last client: \(text)")
    }

    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func lateJoinerAndServerRestart() throws {
        let f = try Fixture(rate: 4_000_000, megabytes: 16)
        let bed = try Testbed(hosts: ["server", "c1", "c2"])
        defer { bed.teardown() }
        let args = [CLI.binary, "server", "--source", f.image, "--config", f.config]
        let first = try bed.start("server", args, log: f.dir.file("server1.log"))
        usleep(300_000)
        let c1 = try restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"))
        usleep(800_000)  // the first pass is under way
        let c2 = try restore(bed, "c2", from: "server", into: f.dir.file("c2.raw"), log: f.dir.file("c2.log"))
        usleep(400_000)
        first.terminate()  // killed mid-session...
        #expect(wait(first, seconds: 10))
        usleep(500_000)
        let second = try bed.start("server", args, log: f.dir.file("server2.log"))  // ...and started again
        #expect(wait(c1), "\(log(f.dir.file("c1.log")))")
        #expect(wait(c2), "\(log(f.dir.file("c2.log")))")
        second.terminate()
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        #expect(try sha256(file: f.dir.file("c2.raw")) == f.sha)
        #expect(log(f.dir.file("c1.log")).contains("reconnecting"), "\(log(f.dir.file("c1.log")))")
    }

    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func anotherServerOnTheSameGroupAndGarbageAreIgnored() throws {
        let one = try Fixture(seed: "one")
        let two = try Fixture(seed: "two")
        #expect(one.sha != two.sha)
        let bed = try Testbed(hosts: ["s1", "s2", "c1", "c2", "noise"])
        defer { bed.teardown() }
        try bed.start("s1", [CLI.binary, "server", "--source", one.image, "--config", one.config], log: one.dir.file("s1.log"))
        try bed.start("s2", [CLI.binary, "server", "--source", two.image, "--config", two.config], log: two.dir.file("s2.log"))
        usleep(300_000)
        // Garbage to the data group and the control port while restores run.
        let noise = """
            end=$((SECONDS + 8))
            while [ $SECONDS -lt $end ]; do
              head -c $((RANDOM % 1500 + 1)) /dev/urandom > /dev/udp/239.77.0.1/7800 || true
              { printf 'ASRD\\001'; head -c $((RANDOM % 200)) /dev/urandom; } > /dev/udp/239.77.0.1/7800 || true
              head -c $((RANDOM % 300)) /dev/urandom > /dev/tcp/\(bed.address("s1"))/7800 2>/dev/null || true
            done
            """
        try bed.start("noise", ["/bin/bash", "-c", "ip route add 224.0.0.0/4 dev eth0 2>/dev/null; " + noise], log: one.dir.file("noise.log"))
        let c1 = try restore(bed, "c1", from: "s1", into: one.dir.file("c1.raw"), log: one.dir.file("c1.log"))
        let c2 = try restore(bed, "c2", from: "s2", into: two.dir.file("c2.raw"), log: two.dir.file("c2.log"))
        #expect(wait(c1), "\(log(one.dir.file("c1.log")))")
        #expect(wait(c2), "\(log(two.dir.file("c2.log")))")
        #expect(try sha256(file: one.dir.file("c1.raw")) == one.sha, "never a byte of the other image")
        #expect(try sha256(file: two.dir.file("c2.raw")) == two.sha)
        let check = try bed.run("c1", [CLI.binary, "restore", "--source", "asr://\(bed.address("s1"))", "--target", one.dir.file("again.raw"),
                                       "--erase", "--noprompt", "--timeout", "30"])
        #expect(check.status == 0, "the server survived the garbage: \(check.stderr)")
    }
}
