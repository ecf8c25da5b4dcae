import SystemSupport
import Foundation
import TestSupport
import Testing

/// DNS Service Discovery with a real avahi-daemon on its own D-Bus bus, inside a namespace
/// host the test makes: servers announce, `asr list` finds them, clients restore by name.
@Suite(.serialized, .enabled(if: Lab.enabled, "needs root and network namespaces"))
struct ServiceDiscoveryTests {
    /// A host running dbus-daemon and avahi-daemon; commands run there see that bus.
    final class AvahiHost {
        let bed: Testbed
        let dir = TemporaryDirectory()
        var bus: String { dir.file("bus") }

        init(avahi: Bool = true) throws {
            bed = try Testbed(hosts: ["srv"])
            guard avahi else { return }
            let config = """
                <!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
                 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
                <busconfig><type>system</type><listen>unix:path=\(bus)</listen><auth>EXTERNAL</auth>
                <policy context="default"><allow user="*"/><allow own="*"/>
                <allow send_destination="*" eavesdrop="true"/><allow receive_sender="*"/></policy></busconfig>
                """
            try config.write(toFile: dir.file("bus.conf"), atomically: true, encoding: .utf8)
            try "[server]\nuse-ipv4=yes\nuse-ipv6=no\nallow-interfaces=eth0\nenable-dbus=yes\n[publish]\npublish-hinfo=no\npublish-workstation=no\n"
                .write(toFile: dir.file("avahi.conf"), atomically: true, encoding: .utf8)
            try bed.start("srv", ["dbus-daemon", "--config-file=\(dir.file("bus.conf"))", "--nofork", "--nopidfile"], log: dir.file("dbus.log"))
            try waitFor { FileManager.default.fileExists(atPath: self.bus) }
            // Its pid file goes on a private tmpfs: no clash with a system avahi-daemon or a stale file.
            try bed.start("srv", env + ["unshare", "-m", "sh", "-c", """
                mkdir -p /run/avahi-daemon && mount -t tmpfs tmpfs /run/avahi-daemon &&
                exec avahi-daemon -f '\(dir.file("avahi.conf"))' --no-drop-root --no-chroot --no-rlimits
                """], log: dir.file("avahi.log"))
            try waitFor { ((try? String(contentsOfFile: self.dir.file("avahi.log"), encoding: .utf8)) ?? "").contains("Server startup complete") }
        }

        var env: [String] { ["/usr/bin/env", "DBUS_SYSTEM_BUS_ADDRESS=unix:path=\(bus)"] }

        func waitFor(_ condition: () -> Bool) throws {
            let deadline = Date().addingTimeInterval(45)  // avahi probes its name first; slow under load
            while !condition() {
                guard Date() < deadline else { throw TestFailure("a daemon did not start: \((try? String(contentsOfFile: dir.file("avahi.log"), encoding: .utf8)) ?? "")") }
                usleep(50_000)
            }
        }

        func asr(_ args: [String]) throws -> CLI.Output { try bed.run("srv", env + [CLI.binary] + args) }

        func server(_ f: Lab.Fixture, config: String? = nil) throws -> Process {
            try bed.start("srv", env + [CLI.binary, "server", "--source", f.image, "--config", config ?? f.config], log: dir.file("server.log"))
        }

        var serverLog: String { (try? String(contentsOfFile: dir.file("server.log"), encoding: .utf8)) ?? "" }

        deinit { bed.teardown() }
    }

    @Test func serverAnnouncesListFindsItAndClientsRestoreByName() throws {
        let f = try Lab.Fixture()
        let host = try AvahiHost()
        _ = try host.server(f)
        let name = "image-one@\(ProcessInfo.processInfo.hostName)"
        try host.waitFor { host.serverLog.contains("announced as \"\(name)\"") }
        let list = try host.asr(["list", "--timeout", "3", "--json"])
        #expect(list.status == 0, "\(list.stderr)")
        let sessions = try JSONSerialization.jsonObject(with: Data(list.stdout.utf8)) as! [[String: Any]]
        let session = try #require(sessions.first { $0["name"] as? String == name }, "\(list.stdout)")
        #expect(session["image"] as? String == "image-one.dmg")
        #expect(session["size"] as? Int == 12 << 20)
        #expect(session["rate"] as? Int == 30_000_000)
        #expect(session["group"] as? String == "239.77.0.1:7800")
        #expect(session["protocolVersion"] as? Int == ServerHardeningTests.protocolVersion)
        #expect(session["port"] as? Int == 7800)
        #expect(session["address"] as? String == host.bed.address("srv"))
        // The whole identity, as asr info prints it: a pin is compared with all of it.
        let info = try CLI.run(["info", "--source", f.image])
        let announced = session["identity"] as? String ?? "-"
        #expect(announced.count == 64 && info.stdout.contains("Identity: " + announced + "\n"), "\(announced) \(info.stdout)")
        let text = try host.asr(["list", "--timeout", "3"])
        #expect(text.stdout.hasPrefix(name + "\t"), "\(text.stdout)")

        let target = f.dir.file("by-name.raw")
        let out = try host.asr(["restore", "--source", "asr://\(name)", "--target", target, "--erase", "--noprompt", "--timeout", "30"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: target) == f.sha)
        let unknown = try host.asr(["restore", "--source", "asr://no-such-session", "--target", target, "--erase", "--noprompt", "--timeout", "2"])
        #expect(unknown.status == 1 && unknown.stderrLines.count == 1 && unknown.stderr.contains("asr list"), "\(unknown.stderr)")
    }

    /// A rogue server that announces the name first pushes the real one to "NAME #2": a client
    /// asking for NAME is told there are two, and takes the one its pin names.
    @Test func aRogueServerAnnouncingTheSameNameFirstIsNotTaken() throws {
        let rogue = try Lab.Fixture(port: 7801)
        let real = try Lab.Fixture()
        let host = try AvahiHost()
        let name = "image-one@\(ProcessInfo.processInfo.hostName)"
        let rogueLog = host.dir.file("rogue.log")
        try host.bed.start("srv", host.env + [CLI.binary, "server", "--source", rogue.image, "--config", rogue.config], log: rogueLog)
        try host.waitFor { ((try? String(contentsOfFile: rogueLog, encoding: .utf8)) ?? "").contains("announced as \"\(name)\"") }
        _ = try host.server(real)
        try host.waitFor { host.serverLog.contains("announced as \"\(name) #2\"") }

        let target = real.dir.file("target.raw")
        let ambiguous = try host.asr(["restore", "--source", "asr://\(name)", "--file", target, "--erase", "--noprompt", "--timeout", "10"])
        #expect(ambiguous.status == 1 && ambiguous.stderrLines.count == 1 && ambiguous.stderr.contains("2 servers announce"), "\(ambiguous.stderr)")
        #expect(!FileManager.default.fileExists(atPath: target))
        let info = try CLI.run(["info", "--source", real.image]).stdout
        let identity = try #require(info.split(separator: "\n").first { $0.hasPrefix("Identity: ") }).dropFirst(10)
        let pinned = try host.asr(["restore", "--source", "asr://\(name)?sha256=\(identity)", "--file", target, "--erase", "--noprompt",
                                   "--timeout", "30"])
        #expect(pinned.status == 0, "\(pinned.stderr)")
        #expect(try sha256(file: target) == real.sha)
    }

    /// Announces `name` from the host as a rogue would (avahi-publish), with these TXT strings;
    /// returns the name it was established under.
    func publish(_ host: AvahiHost, _ name: String, port: Int, txt: [String], log: String) throws -> String {
        try host.bed.start("srv", host.env + ["avahi-publish", "-s", name, "_asr._tcp", "\(port)"] + txt, log: dir(log))
        var established: String?
        defer { if established == nil { Issue.record("avahi-publish: \((try? String(contentsOfFile: dir(log), encoding: .utf8)) ?? "")") } }
        try host.waitFor {
            let text = (try? String(contentsOfFile: dir(log), encoding: .utf8)) ?? ""
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Established under name '") }) else { return false }
            established = String(line.dropFirst("Established under name '".count).dropLast())
            return true
        }
        return established!
        func dir(_ file: String) -> String { host.dir.file(file) }
    }

    /// Rogues announce the real server's name: one with an empty identity, which once matched
    /// every pin (an empty prefix), in front of a server of another image; one with the real
    /// identity copied, in front of a port where nothing answers; one with it copied in front of
    /// the other image's server. A client pinning the real identity restores the real image.
    @Test func roguesWithAnEmptyOrACopiedIdentityAreNotTaken() throws {
        let rogue = try Lab.Fixture(port: 7801, seed: "rogue", extra: "\n<key>DNS Service Discovery</key><false/>")
        let real = try Lab.Fixture()
        let host = try AvahiHost()
        let name = "image-one@\(ProcessInfo.processInfo.hostName)"
        let info = try CLI.run(["info", "--source", real.image]).stdout
        let identity = String(try #require(info.split(separator: "\n").first { $0.hasPrefix("Identity: ") }).dropFirst(10))
        #expect(identity.count == 64)
        let rogueLog = host.dir.file("rogue.log")
        try host.bed.start("srv", host.env + [CLI.binary, "server", "--source", rogue.image, "--config", rogue.config], log: rogueLog)
        try host.waitFor { ((try? String(contentsOfFile: rogueLog, encoding: .utf8)) ?? "").contains("waiting for clients") }
        let proto = "proto=\(ServerHardeningTests.protocolVersion)"
        let names = [
            try publish(host, name, port: 7801, txt: ["image=image-one.dmg", "identity=", proto], log: "empty.log"),
            try publish(host, name + " #2", port: 7809, txt: ["image=image-one.dmg", "identity=\(identity)", proto], log: "copied-nowhere.log"),
            try publish(host, name + " #3", port: 7801, txt: ["image=image-one.dmg", "identity=\(identity)", proto], log: "copied-other.log"),
        ]
        #expect(names == [name, name + " #2", name + " #3"], "\(names)")
        _ = try host.server(real)
        try host.waitFor { host.serverLog.contains("announced as \"\(name) #4\"") || host.serverLog.contains("cannot announce") }
        #expect(host.serverLog.contains("announced as \"\(name) #4\""), "\(host.serverLog)")

        let target = real.dir.file("target.raw")
        let pinned = try host.asr(["restore", "--source", "asr://\(name)?sha256=\(identity)", "--file", target, "--erase", "--noprompt",
                                   "--timeout", "30"])
        #expect(pinned.status == 0, "\(pinned.stderr)")
        #expect(try sha256(file: target) == real.sha)
        #expect(!((try? String(contentsOfFile: rogueLog, encoding: .utf8)) ?? "").contains("finished"), "nothing restored from the rogue")

        // A short identity matches no pin either (once a prefix of every identity it began).
        let shortTarget = real.dir.file("short.raw")
        let shortName = "short-\(UInt16.random(in: 1000...9999))"
        _ = try publish(host, shortName, port: 7801, txt: ["identity=\(identity.prefix(16))", proto], log: "short.log")
        let short = try host.asr(["restore", "--source", "asr://\(shortName)?sha256=\(identity)", "--file", shortTarget, "--erase", "--noprompt",
                                  "--timeout", "5"])
        #expect(short.status == 1 && short.stderrLines.count == 1 && short.stderr.contains("asr list"), "\(short.stderr)")
        #expect(!FileManager.default.fileExists(atPath: shortTarget))
    }

    /// A session name with ESC, a C1 CSI and a right-to-left override: escaped by `asr list`,
    /// exact (and JSON-escaped) in `asr list --json`.
    @Test func namesFromTheNetworkArePrintedEscaped() throws {
        let host = try AvahiHost()
        let hostile = "evil\u{1B}[31m\u{9B}2J\u{202E}gpj"
        let published = try publish(host, hostile, port: 7800, txt: ["image=x\u{1B}]0;title\u{7}.dmg", "size=1"], log: "evil.log")
        #expect(published == hostile)
        let text = try host.asr(["list", "--timeout", "3"])
        #expect(text.status == 0, "\(text.stderr)")
        #expect(text.stdout.hasPrefix(#""evil\x1b[31m\u{9B}2J\u{202E}gpj""# + "\t"), "\(text.stdout.debugDescription)")
        #expect(text.stdout.contains("\t" + #""x\x1b]0;title\x07.dmg""# + "\t"), "\(text.stdout.debugDescription)")
        #expect(EscapingTests.isInert(text.stdout), "\(text.stdout.debugDescription)")
        let json = try host.asr(["list", "--timeout", "3", "--json"])
        #expect(EscapingTests.isInert(json.stdout), "\(json.stdout.debugDescription)")
        let sessions = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [[String: Any]] ?? []
        #expect(sessions.contains { $0["name"] as? String == hostile && $0["image"] as? String == "x\u{1B}]0;title\u{7}.dmg" }, "\(sessions)")
    }

    @Test func nothingIsAnnouncedWhenTheKeyIsFalse() throws {
        let f = try Lab.Fixture(extra: "\n<key>DNS Service Discovery</key><false/>")
        let host = try AvahiHost()
        _ = try host.server(f)
        try host.waitFor { host.serverLog.contains("waiting for clients") }
        let list = try host.asr(["list", "--timeout", "3"])
        #expect(list.status == 0 && list.stdout.isEmpty, "\(list.stdout) \(list.stderr)")
        #expect(!host.serverLog.contains("announced"))
    }

    @Test func withoutAvahiTheServerServesAndSaysSoOnce() throws {
        let f = try Lab.Fixture()
        let host = try AvahiHost(avahi: false)
        _ = try host.server(f)
        try host.waitFor { host.serverLog.contains("waiting for clients") }
        let target = f.dir.file("plain.raw")
        let out = try host.asr(["restore", "--source", "asr://\(host.bed.address("srv"))", "--target", target, "--erase", "--noprompt", "--timeout", "30"])
        #expect(out.status == 0, "\(out.stderr)")
        #expect(try sha256(file: target) == f.sha)
        let lines = host.serverLog.split(separator: "\n").filter { $0.contains("Avahi") }
        #expect(lines.count == 1 && lines[0].contains("not running"), "\(host.serverLog)")
        let list = try host.asr(["list", "--timeout", "1"])
        #expect(list.status == 1 && list.stderrLines.count == 1 && list.stderr.contains("Avahi is not running"))
    }
}
