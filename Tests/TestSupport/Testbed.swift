import Foundation
import SystemSupport

/// Hosts on a bridge, each in a network namespace the test makes and deletes: one server and
/// clients, 10.77.N.0/24 addresses that exist only inside them.
public final class Testbed {
    public let prefix: String
    public let hosts: [String]
    private static let subnet = Int.random(in: 1...250)
    private var background: [Process] = []

    public init(hosts: [String]) throws {
        prefix = "asr\(UInt16.random(in: 1000...9999))"
        self.hosts = hosts
        var script = """
            ip netns add \(prefix)-net
            ip -n \(prefix)-net link add br0 type bridge mcast_snooping 0
            ip -n \(prefix)-net link set br0 up
            """
        for (i, h) in hosts.enumerated() {
            let ns = "\(prefix)-\(h)"
            script += """

                ip netns add \(ns)
                ip link add \(prefix)\(i) type veth peer name eth0 netns \(ns)
                ip link set \(prefix)\(i) netns \(prefix)-net
                ip -n \(prefix)-net link set \(prefix)\(i) master br0 up
                ip -n \(ns) addr add 10.77.\(Self.subnet).\(i + 1)/24 dev eth0
                ip -n \(ns) link set eth0 up
                ip -n \(ns) link set lo up
                ip -n \(ns) route add 224.0.0.0/4 dev eth0
                """
        }
        do { try Run.shell(script) } catch {
            teardown()
            throw error
        }
    }

    public func address(_ host: String) -> String { "10.77.\(Self.subnet).\(hosts.firstIndex(of: host)! + 1)" }

    /// Runs a command inside a host and waits for it.
    public func run(_ host: String, _ args: [String], timeout: TimeInterval = 300) throws -> CLI.Output {
        try Run.process("/usr/sbin/ip", ["netns", "exec", "\(prefix)-\(host)"] + args, timeout: timeout)
    }

    /// Starts a command inside a host; its output goes to `log`.
    @discardableResult
    public func start(_ host: String, _ args: [String], log: String) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", "\(prefix)-\(host)"] + args
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = FileHandle(forWritingAtPath: log)
        p.standardOutput = handle
        p.standardError = handle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        background.append(p)
        return p
    }

    /// Random drop of `percent`% of the multicast data arriving at a host.
    public func dropIncoming(_ host: String, percent: Int, port: Int) throws {
        let match = percent >= 100 ? "" : "numgen random mod 100 '<' \(percent)"
        try Run.shell("""
            ip netns exec \(prefix)-\(host) nft add table inet asrloss
            ip netns exec \(prefix)-\(host) nft add chain inet asrloss input '{ type filter hook input priority 0; }'
            ip netns exec \(prefix)-\(host) nft add rule inet asrloss input udp dport \(port) \(match) drop
            """)
    }

    public func teardown() {
        for p in background where p.isRunning { p.terminate() }
        let deadline = Date().addingTimeInterval(5)
        while background.contains(where: \.isRunning) && Date() < deadline { usleep(50_000) }
        for p in background where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in background { p.waitUntilExit() }
        background.removeAll()
        let all = hosts.map { "\(prefix)-\($0)" } + ["\(prefix)-net"]
        for ns in all {
            _ = try? Run.shell("for p in $(ip netns pids \(ns) 2>/dev/null); do kill -9 $p; done; ip netns del \(ns) 2>/dev/null || true")
        }
    }

    deinit { teardown() }
}
