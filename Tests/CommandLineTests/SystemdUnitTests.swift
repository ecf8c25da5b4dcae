import Foundation
import Multicast
import StatusServer
import TestSupport
import Testing

/// `asr-server@.service` as `make install` writes it: systemd's own checker accepts it, its
/// command line serves a session (run as systemd would run it, with its environment file),
/// and `make uninstall` takes it away.
@Suite(.serialized) struct SystemdUnitTests {
    static let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../..").standardized.path

    /// What `make install-systemd` wrote under `prefix`, with the paths it filled in.
    func install(_ dir: TemporaryDirectory) throws -> (unit: String, prefix: String, conf: String) {
        let prefix = dir.file("usr"), conf = dir.file("etc-asr")
        try Run.shell("make -s -C '\(Self.repo)' install-systemd PREFIX='\(prefix)' CONFDIR='\(conf)'")
        try FileManager.default.createDirectory(atPath: prefix + "/bin", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: prefix + "/bin/asr", withDestinationPath: CLI.binary)
        try FileManager.default.createDirectory(atPath: conf, withIntermediateDirectories: true)
        return (prefix + "/lib/systemd/system/asr-server@.service", prefix, conf)
    }

    @Test(.enabled(if: Privileged.required || FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze"), "needs systemd-analyze"))
    func systemdAcceptsTheUnitAndUninstallRemovesIt() throws {
        let dir = TemporaryDirectory()
        let (unit, prefix, conf) = try install(dir)
        let text = try String(contentsOfFile: unit, encoding: .utf8)
        #expect(text.contains("ExecStart=\(prefix)/bin/asr server --source ${ASR_SOURCE} --config \(conf)/%i.plist $ASR_OPTIONS"), "\(text)")
        #expect(text.contains("EnvironmentFile=\(conf)/%i.env") && text.contains("Restart=on-failure"))
        #expect(!text.contains("@BINDIR@") && !text.contains("@CONFDIR@"))
        // An instance, as `systemctl start asr-server@lab` makes one.
        let instance = dir.file("asr-server@lab.service")
        try FileManager.default.copyItem(atPath: unit, toPath: instance)
        // The man page is installed with the binary (make install), not here.
        let verify = try Run.process("/usr/bin/systemd-analyze", ["verify", "--man=no", instance])
        #expect(verify.status == 0 && verify.stderr.isEmpty, "\(verify.stdout) \(verify.stderr)")
        try Run.shell("make -s -C '\(Self.repo)' uninstall PREFIX='\(prefix)' CONFDIR='\(conf)'")
        #expect(!FileManager.default.fileExists(atPath: unit))
    }

    /// The unit's LimitNOFILE holds the control port's default `Max Connections`, the status
    /// server's connections and the spare descriptors, so neither listener is cut down.
    @Test func theDescriptorLimitHoldsBothListeners() throws {
        let text = try String(contentsOfFile: Self.repo + "/mount-helpers/asr-server@.service", encoding: .utf8)
        let limit = try #require(text.split(separator: "\n").first { $0.hasPrefix("LimitNOFILE=") }.flatMap { Int($0.dropFirst("LimitNOFILE=".count)) },
                                 "the unit sets LimitNOFILE")
        let control = ServerConfig(dataRate: 1, multicastAddress: "239.0.0.1").maxConnections
        #expect(limit >= control + StatusServer.maxConnections + DescriptorBudget.reserve)
        #expect(try DescriptorBudget.share(limit: limit, control: control, status: StatusServer.maxConnections)
                == DescriptorBudget(limit: limit, control: control, status: StatusServer.maxConnections))
    }

    /// The unit's ExecStart, its `%i` and environment file expanded as systemd expands them
    /// (`${VAR}` one word, `$VAR` split on spaces), serves a client and the status page, and
    /// SIGTERM ends it with 0 (so Restart=on-failure leaves it stopped).
    @Test(.enabled(if: Lab.enabled, "needs root and network namespaces"))
    func theUnitsCommandServes() throws {
        let net = Lab()
        let f = try Lab.Fixture(rate: 20_000_000)
        let dir = TemporaryDirectory()
        let (unit, _, conf) = try install(dir)
        try FileManager.default.copyItem(atPath: f.config, toPath: conf + "/lab.plist")
        _ = FileManager.default.createFile(atPath: conf + "/lab.env", contents: Data("""
            # what an admin writes
            ASR_SOURCE=\(f.image)
            ASR_OPTIONS="--status 8080"

            """.utf8))
        let text = try String(contentsOfFile: unit, encoding: .utf8)
        let exec = try #require(text.split(separator: "\n").first { $0.hasPrefix("ExecStart=") }?.dropFirst("ExecStart=".count))
        let command = exec.replacingOccurrences(of: "%i", with: "lab").replacingOccurrences(of: "${ASR_SOURCE}", with: "\"${ASR_SOURCE}\"")
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let log = dir.file("journal.log")
        let server = try bed.start("server", ["/bin/bash", "-c", "set -a; . '\(conf)/lab.env'; set +a; exec \(command)"], log: log)
        #expect(net.eventually(seconds: 30) { net.log(log).contains("waiting for clients") }, "\(net.log(log))")
        #expect(net.log(log).contains("status page on http://127.0.0.1:8080/"), "ASR_OPTIONS reached the server: \(net.log(log))")
        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"))
        #expect(net.wait(c1), "\(net.log(f.dir.file("c1.log")))")
        #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
        server.terminate()
        #expect(net.wait(server, seconds: 10), "SIGTERM: exit 0, not a failure to restart")
    }
}
