import Foundation
import SystemSupport

/// What the namespace labs share: whether they can run, a scanned image with its server
/// configuration, restores started in a lab host, waits on conditions, and the server's log
/// read as numbers. Suites conform to use them unqualified; `Lab()` serves the rest.
public protocol LabHelpers {}

public struct Lab: LabHelpers {
    public init() {}
}

extension LabHelpers {
    public typealias Fixture = LabFixture
    public typealias ServerLog = LabServerLog

    public static var enabled: Bool {
        Privileged.required || (getuid() == 0 && (try? Run.shell("ip netns list")) != nil)
    }


    /// Writes an `asr server` configuration: Apple's two required keys, then `extra` plist keys.
    public static func writeConfig(_ path: String, rate: Int, group: String, extra: String = "") {
        _ = FileManager.default.createFile(atPath: path, contents: Data("""
            <?xml version="1.0" encoding="UTF-8"?>
            <plist version="1.0"><dict>
            <key>Data Rate</key><integer>\(rate)</integer>
            <key>Multicast Address</key><string>\(group)</string>\(extra)
            </dict></plist>
            """.utf8))
    }

    public func restore(_ bed: Testbed, _ host: String, from server: String, into target: String, log: String, timeout: Int = 30) throws -> Process {
        try bed.start(host, [CLI.binary, "restore", "--source", "asr://\(bed.address(server))", "--target", target,
                             "--erase", "--noprompt", "--timeout", "\(timeout)"], log: log)
    }

    /// Polls until `condition` holds or `seconds` pass; whether it held.
    public func eventually(seconds: TimeInterval = 60, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(50_000)
        }
        return condition()
    }


    /// True if the process ended with status 0 in time; one that hangs is killed.
    public func wait(_ p: Process, seconds: TimeInterval = 120) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while p.isRunning && Date() < deadline { usleep(50_000) }
        if p.isRunning {
            kill(p.processIdentifier, SIGKILL)
            p.waitUntilExit()
            return false
        }
        return p.terminationStatus == 0
    }

    public func log(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
}

public struct LabFixture {
    public let dir = TemporaryDirectory()
    public let image: String
    public let sha: String
    public let config: String

    public init(port: Int = 7800, rate: Int = 30_000_000, seed: String = "one", megabytes: Int = 12, extra: String = "") throws {
        let raw = dir.file("disk-\(seed).raw")
        try Run.shell("""
            { head -c \(megabytes / 2)M /dev/urandom; seq 1 \(megabytes * 60000); } > '\(raw)'
            truncate -s \(megabytes)M '\(raw)'
            printf '\(seed)' | dd of='\(raw)' bs=1 seek=100 conv=notrunc status=none
            """)
        image = dir.file("image-\(seed).dmg")
        guard try CLI.run(["create", "--source", raw, "--output", image]).status == 0,
              try CLI.run(["imagescan", "--source", image]).status == 0 else { throw TestFailure("cannot make the image") }
        sha = try sha256(file: raw)
        config = dir.file("cfg-\(seed).plist")
        Lab.writeConfig(config, rate: rate, group: "239.77.0.1", extra: "<key>Port</key><integer>\(port)</integer>" + extra)
    }
}

/// The numbers the server logs: stored bytes of the image, bytes sent at each client's
/// DONE (with its peer, in order), and bytes sent when it stopped.
public struct LabServerLog {
    public var stored: UInt64?
    public var finished: [(peer: String, sent: UInt64)] = []
    /// Bytes sent when each client (by peer) had every chunk.
    public var complete: [String: UInt64] = [:]
    public var idle: [UInt64] = []
    public var stopped: UInt64?

    public init(_ text: String) {
        func number(_ line: Substring, after marker: String) -> UInt64? {
            guard let r = line.range(of: marker) else { return nil }
            return UInt64(line[r.upperBound...].prefix { $0.isNumber })
        }
        for line in text.split(separator: "\n") {
            if line.contains(": serving "), let r = line.range(of: " bytes, ") { stored = UInt64(line[r.upperBound...].prefix { $0.isNumber }) }
            if line.contains(") finished; "), let open = line.firstIndex(of: "("), let close = line.firstIndex(of: ")"),
               let sent = number(line, after: "finished; ") {
                finished.append((String(line[line.index(after: open)..<close]), sent))
            }
            if line.contains(") has every chunk; "), let open = line.firstIndex(of: "("), let close = line.firstIndex(of: ")"),
               let sent = number(line, after: "has every chunk; ") {
                complete[String(line[line.index(after: open)..<close])] = sent
            }
            if let sent = number(line, after: "idle: no client needs anything; ") { idle.append(sent) }
            if let sent = number(line, after: "stopped after ") { stopped = sent }
        }
    }
}
