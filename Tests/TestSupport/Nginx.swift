import SystemSupport
import Foundation
import TestSupport

/// A real nginx serving a folder on 127.0.0.1 at a free port, for HTTP restore tests.
/// `/flaky/` answers 503 to every request beyond 2 per second, to exercise retries; `/slow/`
/// sends each response at 512 KiB/s after its first 512 KiB (nginx lets a response's first
/// second of data go at once), so a restore can be killed partway and the requests it has in
/// flight overlap. Its access log counts the body bytes sent per request.
public final class Nginx {
    public let root: String
    public let port: Int
    private let dir: TemporaryDirectory
    private let process: Process

    public init(serving root: String) throws {
        self.root = root
        dir = TemporaryDirectory()
        port = try Self.freePort()
        let conf = """
            daemon off;
            worker_processes 2;
            pid \(dir.file("nginx.pid"));
            error_log \(dir.file("error.log"));
            user root;
            events {}
            http {
                log_format asrbytes '$request_method $uri $status $body_bytes_sent';
                access_log \(dir.file("access.log")) asrbytes;
                log_format asrtimes '$msec $request_time $request_uri';
                access_log \(dir.file("times.log")) asrtimes;
                client_body_temp_path \(dir.file("body"));
                proxy_temp_path \(dir.file("proxy"));
                fastcgi_temp_path \(dir.file("fastcgi"));
                uwsgi_temp_path \(dir.file("uwsgi"));
                scgi_temp_path \(dir.file("scgi"));
                sendfile on;
                limit_req_zone $server_port zone=flaky:1m rate=2r/s;
                server {
                    listen 127.0.0.1:\(port);
                    root \(root);
                    location /slow/ {
                        alias \(root)/;
                        limit_rate 512k;
                    }
                    location /flaky/ {
                        alias \(root)/;
                        limit_req zone=flaky burst=1 nodelay;
                        limit_req_status 503;
                    }
                }
            }
            """
        _ = FileManager.default.createFile(atPath: dir.file("nginx.conf"), contents: Data(conf.utf8))
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/nginx")
        process.arguments = ["-c", dir.file("nginx.conf")]
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<100 {
            if (try? Run.shell("exec 3<>/dev/tcp/127.0.0.1/\(port)")) != nil { return }
            usleep(50_000)
        }
        process.terminate()
        throw TestFailure("nginx did not start: " + ((try? String(contentsOfFile: dir.file("error.log"), encoding: .utf8)) ?? ""))
    }

    public func url(_ name: String) -> String { "http://127.0.0.1:\(port)/\(name)" }

    /// Body bytes nginx has sent for `uri` ("/disk.dmg"), from its access log.
    public func bytesSent(for uri: String) -> UInt64 {
        let log = (try? String(contentsOfFile: dir.file("access.log"), encoding: .utf8)) ?? ""
        return log.split(separator: "\n").reduce(0) { sum, line in
            let f = line.split(separator: " ")
            return f.count == 4 && f[1] == uri ? sum + (UInt64(f[3]) ?? 0) : sum
        }
    }

    /// Requests nginx has answered for `uri`.
    public func requests(for uri: String) -> Int {
        let log = (try? String(contentsOfFile: dir.file("access.log"), encoding: .utf8)) ?? ""
        return log.split(separator: "\n").filter { $0.split(separator: " ").dropFirst().first.map(String.init) == uri }.count
    }

    /// The most requests for `requestURI` (query included) that nginx was sending at once,
    /// from when each ended and how long it took.
    public func mostAtOnce(for requestURI: String) -> Int {
        let log = (try? String(contentsOfFile: dir.file("times.log"), encoding: .utf8)) ?? ""
        var events: [(Double, Int)] = []
        for line in log.split(separator: "\n") {
            let f = line.split(separator: " ")
            guard f.count == 3, f[2] == requestURI, let end = Double(f[0]), let took = Double(f[1]), took > 0 else { continue }
            events += [(end - took, 1), (end, -1)]
        }
        var now = 0, most = 0
        for (_, step) in events.sorted(by: { ($0.0, $0.1) < ($1.0, $1.1) }) {
            now += step
            most = max(most, now)
        }
        return most
    }

    /// Waits until the access log has not grown for `quiet` seconds (at most `limit`): nginx
    /// logs a request whose client was killed only once it notices the connection is gone.
    public func settle(quiet: Double = 1, limit: Double = 15) {
        let deadline = Date().addingTimeInterval(limit)
        var size = fileSize(dir.file("access.log")), still = Date()
        while Date() < deadline {
            usleep(100_000)
            let now = fileSize(dir.file("access.log"))
            if now != size { size = now; still = Date() } else if Date().timeIntervalSince(still) >= quiet { return }
        }
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
    }

    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard bound else { throw TestFailure("no free port") }
        return Int(UInt16(bigEndian: addr.sin_port))
    }
}
