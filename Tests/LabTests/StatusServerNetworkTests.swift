import Foundation
import TestSupport
import Testing

/// `asr server --status` during real sessions in the namespace lab: a headless Chromium
/// watching the page, the JSON against the server's log, the metrics through promtool, the
/// HTTP refusals and 200 pollers, and where the server listens.
@Suite(.serialized) struct StatusServerNetworkTests {
    static let enabled = Lab.enabled
    let net = Lab()

    /// HTTP from inside a namespace host, with Python's standard library (curl is not a
    /// dependency). Prints one JSON line.
    static let probe = #"""
        import http.client, json, socket, sys, threading, time
        mode = sys.argv[1]
        def raw(host, port, data, timeout=10):
            """Sends bytes; returns the status code of the answer and whether the server closed."""
            s = socket.create_connection((host, port), timeout=timeout)
            try:
                s.sendall(data)
            except OSError:
                pass  # closed while we still sent: the answer may be there all the same
            got = b""
            try:
                while True:
                    piece = s.recv(65536)
                    if not piece:
                        break
                    got += piece
            except OSError:
                pass
            s.close()
            line = got.split(b"\r\n", 1)[0].decode(errors="replace")
            headers = got.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
            return {"status": int(line.split(" ")[1]) if line.startswith("HTTP/1.1 ") else 0, "head": headers}
        if mode == "get":
            host, port, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
            try:
                c = http.client.HTTPConnection(host, port, timeout=5)
                c.request("GET", path)
                r = c.getresponse()
                print(json.dumps({"status": r.status, "type": r.getheader("Content-Type"), "body": r.read().decode()}))
            except OSError as e:
                print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
        elif mode == "refusals":
            host, port = sys.argv[2], int(sys.argv[3])
            pad = "a" * 9000
            out = {
                "post": raw(host, port, b"POST /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"),
                "delete": raw(host, port, b"DELETE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                "missing": raw(host, port, b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
                "bigHeader": raw(host, port, ("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + pad + "\r\n\r\n").encode()),
                "longURL": raw(host, port, ("GET /" + pad + " HTTP/1.1\r\nHost: x\r\n\r\n").encode()),
                "bigBody": raw(host, port, b"GET /status.json HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"b" * 100000),
                "garbage": raw(host, port, b"\x16\x03\x01 not http\r\n\r\n"),
            }
            print(json.dumps(out))
        elif mode == "pollers":
            host, port, count, rounds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
            ok, failed, errors, lock = [0], [0], [], threading.Lock()
            start = threading.Barrier(count)
            def poller(k):
                c = None
                for r in range(rounds):
                    try:
                        if c is None:
                            # 8 to a source address, as from a lab of hosts: under the per-address cap.
                            c = http.client.HTTPConnection(host, port, timeout=20, source_address=("127.0.2.%d" % (1 + k // 8), 0))
                        if r == 0:
                            start.wait()  # all at once, each on its own kept-alive connection
                        c.request("GET", "/status.json" if k % 4 else "/metrics")
                        resp = c.getresponse()
                        body = resp.read()
                        good = resp.status == 200 and (k % 4 == 0 or "clients" in json.loads(body))
                        with lock:
                            (ok if good else failed)[0] += 1
                    except Exception as e:
                        with lock:
                            failed[0] += 1
                            errors.append(type(e).__name__ + ": " + str(e))
                        c = None
                    time.sleep(0.2)
            threads = [threading.Thread(target=poller, args=(k,)) for k in range(count)]
            for t in threads: t.start()
            for t in threads: t.join()
            print(json.dumps({"ok": ok[0], "failed": failed[0], "errors": errors[:5]}))
        """#

    /// Chromium, headless, driven by Selenium: loads the page and prints what each client row
    /// shows every half second until the stop file appears, then saves a screenshot.
    static let browser = #"""
        import json, os, sys, time
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        url, shot, stop, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,980", "--hide-scrollbars"]:
            options.add_argument(a)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url)
            started = time.time()
            while time.time() - started < limit and not os.path.exists(stop):
                rows = driver.execute_script("""return [...document.querySelectorAll('#clients tbody tr')].map(tr => ({
                    state: tr.dataset.state, progress: Number(tr.dataset.progress), repairs: Number(tr.dataset.repairs),
                    address: tr.querySelector('td.address').textContent, name: tr.querySelector('td.name').textContent, reason: tr.querySelector('.reason').textContent,
                    shown: tr.querySelector('.label').textContent, repairsShown: tr.querySelector('td.repairs').textContent}))""")
                stream = driver.execute_script("return document.getElementById('stream-state').className")
                print(json.dumps({"t": round(time.time() - started, 2), "stream": stream, "rows": rows}), flush=True)
                time.sleep(0.5)
            time.sleep(1.5)  # the last poll's numbers settle into the page
            driver.save_screenshot(shot)
            print(json.dumps({"screenshot": shot}), flush=True)
        finally:
            driver.quit()
        """#

    static func script(_ name: String, _ text: String, in dir: TemporaryDirectory) -> String {
        let path = dir.file(name)
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) }
        return path
    }

    /// Runs a probe mode inside `host`; its JSON line.
    func probe(_ bed: Testbed, _ host: String, _ args: [String], dir: TemporaryDirectory, timeout: TimeInterval = 120) throws -> [String: Any] {
        let out = try bed.run(host, ["/usr/bin/python3", Self.script("probe.py", Self.probe, in: dir)] + args, timeout: timeout)
        guard let line = out.stdout.split(separator: "\n").last,
              let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
            throw TestFailure("probe \(args): \(out.stdout) \(out.stderr)")
        }
        return object
    }

    /// `/status.json` from inside the server's host.
    func status(_ bed: Testbed, port: Int = 8080, dir: TemporaryDirectory) throws -> [String: Any] {
        let answer = try probe(bed, "server", ["get", "127.0.0.1", String(port), "/status.json"], dir: dir)
        guard let body = answer["body"] as? String, let json = try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
            throw TestFailure("no status: \(answer)")
        }
        return json
    }

    func startServer(_ bed: Testbed, _ f: Lab.Fixture, _ extra: [String] = ["--status", "8080"], log: String,
                     config: String? = nil) throws -> Process {
        try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", config ?? f.config] + extra, log: log)
    }

    /// The small fixture served with its status page up, and one client host "c1", for `body`.
    func withStatusServer(_ body: (Lab.Fixture, Testbed, Process, String) throws -> Void) throws {
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let serverLog = f.dir.file("server.log")
        let server = try startServer(bed, f, log: serverLog)
        #expect(net.eventually(seconds: 30) { net.log(serverLog).contains("status page on") })
        try body(f, bed, server, serverLog)
    }

    /// Two clients, one losing 5% of the data, and a third that hears none of it, watched by a
    /// real browser: both rows appear and fill, the lossy one asks for repairs, both end done,
    /// and the deaf one shows that it was dropped and why. The last screenshot becomes
    /// docs/status-page.png.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func aBrowserWatchesTheSession() throws {
        // A slow rate, so the page sees every client part-way.
        let f = try Lab.Fixture(rate: 800_000, megabytes: 8)
        let bed = try Testbed(hosts: ["server", "c1", "c2", "deaf"])
        defer { bed.teardown() }
        try bed.dropIncoming("c2", percent: 5, port: 7800)
        try bed.dropIncoming("deaf", percent: 100, port: 7800)
        let serverLog = f.dir.file("server.log")
        let server = try startServer(bed, f, log: serverLog)
        #expect(net.eventually(seconds: 30) { net.log(serverLog).contains("status page on http://127.0.0.1:8080/") }, "\(net.log(serverLog))")
        let shot = f.dir.file("page.png"), stop = f.dir.file("stop"), browserLog = f.dir.file("browser.log")
        let browser = try bed.start("server", ["/usr/bin/python3", Self.script("browser.py", Self.browser, in: f.dir), "http://127.0.0.1:8080/",
                                               shot, stop, "300"], log: browserLog)
        #expect(net.eventually(seconds: 90) { net.log(browserLog).contains("\"rows\"") }, "the browser loads the page: \(net.log(browserLog))")
        // Each in a UTS namespace of its own, named as a lab machine would be (the name is the host's).
        let clients = try zip(["c1", "c2", "deaf"], ["lab-pc-01", "lab-pc-02", "lab-pc-03"]).map { h, name in
            try bed.start(h, ["/usr/bin/unshare", "--uts", "/bin/sh", "-c", "hostname \(name) && exec \"$0\" \"$@\"", CLI.binary, "restore",
                              "--source", "asr://\(bed.address("server"))", "--target", f.dir.file("\(h).raw"), "--erase", "--noprompt",
                              "--timeout", "60"], log: f.dir.file("\(h).log"))
        }
        #expect(net.wait(clients[0], seconds: 180), "\(net.log(f.dir.file("c1.log")))")
        #expect(net.wait(clients[1], seconds: 180), "\(net.log(f.dir.file("c2.log")))")
        #expect(!net.wait(clients[2], seconds: 180), "the deaf client is dropped")
        for h in ["c1", "c2"] { #expect(try sha256(file: f.dir.file("\(h).raw")) == f.sha, "\(h)") }
        // The page has caught up with every ending before the browser stops and takes its picture.
        let addresses = ["c1", "c2", "deaf"].map(bed.address)
        let ended = net.eventually(seconds: 30) {
            let last = Self.observations(net.log(browserLog)).last ?? []
            return zip(addresses, ["done", "done", "dropped"]).allSatisfy { a, s in last.contains { $0.address == a && $0.state == s } }
        }
        #expect(ended, "\(net.log(browserLog).suffix(2000))")
        _ = FileManager.default.createFile(atPath: stop, contents: nil)
        #expect(net.wait(browser, seconds: 60), "\(net.log(browserLog).suffix(2000))")
        server.terminate()
        #expect(net.wait(server, seconds: 10))

        let seen = Self.observations(net.log(browserLog))
        func rows(_ host: String) -> [Row] { seen.compactMap { $0.first { $0.address == bed.address(host) } } }
        for h in ["c1", "c2"] {
            let progress = rows(h).map(\.progress)
            #expect(progress.contains { $0 > 0 && $0 < 1 }, "\(h) seen part-way: \(progress)")
            #expect(zip(progress, progress.dropFirst()).allSatisfy { $0 <= $1 }, "\(h) only rises: \(progress)")
            #expect(rows(h).last?.state == "done" && rows(h).last?.shown == "100.0%", "\(h): \(rows(h).last.map { "\($0)" } ?? "never seen")")
        }
        #expect(rows("c2").contains { $0.repairs > 0 && $0.repairsShown != "0" }, "the lossy client asked for repairs: \(rows("c2").map(\.repairs))")
        let deaf = rows("deaf").last
        #expect(deaf?.state == "dropped" && deaf?.reason.hasPrefix("no progress in") == true, "\(deaf.map { "\($0)" } ?? "never seen")")
        #expect(Set(seen.last?.map(\.name) ?? []) == ["lab-pc-01", "lab-pc-02", "lab-pc-03"], "each row shows its client's name")
        // The picture the README shows.
        let png = try Data(contentsOf: URL(fileURLWithPath: shot))
        #expect(png.starts(with: [0x89, 0x50, 0x4E, 0x47]))
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../docs/status-page.png").standardized
        try? png.write(to: docs)
    }

    struct Row {
        var address: String
        var name: String
        var state: String
        var progress: Double
        var repairs: Int
        var repairsShown: String
        var shown: String
        var reason: String
    }

    /// The rows of each observation the browser printed, in order.
    static func observations(_ log: String) -> [[Row]] {
        log.split(separator: "\n").compactMap { line in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let rows = object["rows"] as? [[String: Any]] else { return nil }
            return rows.map { r in
                Row(address: r["address"] as? String ?? "", name: r["name"] as? String ?? "", state: r["state"] as? String ?? "", progress: r["progress"] as? Double ?? -1,
                    repairs: r["repairs"] as? Int ?? Int(r["repairs"] as? Double ?? -1), repairsShown: r["repairsShown"] as? String ?? "",
                    shown: r["shown"] as? String ?? "", reason: r["reason"] as? String ?? "")
            }
        }
    }

    /// Every join, finish, failure and drop the server logs is in `/status.json`, with the
    /// same client, state and reason: a client that finishes, one interrupted (its DONE says
    /// so), and one that hears nothing and is dropped.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func theJSONAgreesWithTheServerLog() throws {
        let f = try Lab.Fixture()
        let bed = try Testbed(hosts: ["server", "c1", "deaf", "quitter"])
        defer { bed.teardown() }
        try bed.dropIncoming("deaf", percent: 100, port: 7800)
        try bed.dropIncoming("quitter", percent: 100, port: 7800)
        let serverLog = f.dir.file("server.log")
        let server = try startServer(bed, f, log: serverLog)
        #expect(net.eventually(seconds: 30) { net.log(serverLog).contains("status page on") })
        let deaf = try net.restore(bed, "deaf", from: "server", into: f.dir.file("deaf.raw"), log: f.dir.file("deaf.log"))
        let quitter = try net.restore(bed, "quitter", from: "server", into: f.dir.file("quitter.raw"), log: f.dir.file("quitter.log"))
        let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"))
        #expect(net.eventually(seconds: 30) { net.log(serverLog).contains("(\(bed.address("quitter"))) joined") })
        usleep(1_000_000)
        quitter.interrupt()  // an admin's Ctrl-C: the client says why it stopped
        #expect(!net.wait(quitter, seconds: 30))
        #expect(net.wait(c1, seconds: 120), "\(net.log(f.dir.file("c1.log")))")
        #expect(!net.wait(deaf, seconds: 120))
        #expect(net.eventually(seconds: 30) {
            let text = net.log(serverLog)
            return text.contains("dropped client") && text.contains("failed: interrupted")
        }, "\(net.log(serverLog))")
        let json = try status(bed, dir: f.dir)
        server.terminate()
        #expect(net.wait(server, seconds: 10))

        let text = net.log(serverLog)
        let clients = json["clients"] as? [[String: Any]] ?? []
        func client(_ address: String) -> [String: Any]? { clients.first { $0["address"] as? String == address } }
        let lines = text.split(separator: "\n")
        func peers(_ marker: String) -> [String] {
            lines.filter { $0.contains(marker) }.compactMap { line in
                guard let open = line.firstIndex(of: "("), let close = line.firstIndex(of: ")") else { return nil }
                return String(line[line.index(after: open)..<close])
            }
        }
        #expect(Set(peers(") joined")) == Set(clients.compactMap { $0["address"] as? String }), "\(text)\n\(clients)")
        #expect(peers(") joined").count == clients.count)
        for peer in peers(") finished; ") { #expect(client(peer)?["state"] as? String == "done", "\(peer)") }
        for line in lines where line.contains(") failed: ") {
            let peer = String(line[line.index(after: line.firstIndex(of: "(")!)..<line.firstIndex(of: ")")!])
            // "failed: REASON; N bytes sent so far": the reason may hold "; " itself.
            let rest = line[line.range(of: ") failed: ")!.upperBound...]
            let reason = rest[..<(rest.range(of: "; ", options: .backwards)?.lowerBound ?? rest.endIndex)]
            #expect(client(peer)?["state"] as? String == "failed" && client(peer)?["reason"] as? String == String(reason), "\(peer)")
        }
        for line in lines where line.contains("dropped client ") {
            let peer = String(line[line.index(after: line.firstIndex(of: "(")!)..<line.firstIndex(of: ")")!])
            let reason = line[line.range(of: "): ")!.upperBound...]
            #expect(client(peer)?["state"] as? String == "dropped" && client(peer)?["reason"] as? String == String(reason), "\(peer)")
        }
        #expect(client(bed.address("c1"))?["state"] as? String == "done")
        #expect(client(bed.address("quitter"))?["state"] as? String == "failed")
        #expect(client(bed.address("deaf"))?["state"] as? String == "dropped")
        let counts = json["counts"] as? [String: Int] ?? [:]
        #expect(counts["done"] == 1 && counts["failed"] == 1 && counts["dropped"] == 1 && counts.values.reduce(0, +) == 3, "\(counts)")
        let finishedAt = Lab.ServerLog(text).finished.map(\.sent).max() ?? .max
        let sent = (json["stream"] as? [String: Any])?["bytesSent"] as? UInt64 ?? 0
        #expect(sent >= finishedAt, "the JSON's bytes sent include the log's")
    }

    /// Two scrapes, one mid-session and one after: both pass `promtool check metrics`, and no
    /// counter went down between them.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func metricsPassPromtoolAndCountersOnlyRise() throws {
        try withStatusServer { f, bed, server, serverLog in
            let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"))
            #expect(net.eventually(seconds: 30) { net.log(serverLog).contains("sending what") })
            usleep(1_000_000)
            let first = try scrape(bed, f.dir, "first")
            #expect(net.wait(c1, seconds: 120), "\(net.log(f.dir.file("c1.log")))")
            #expect(net.eventually(seconds: 10) { net.log(serverLog).contains("finished") })
            usleep(1_500_000)  // past the snapshot's age and a throughput sample
            let second = try scrape(bed, f.dir, "second")
            server.terminate()
            #expect(net.wait(server, seconds: 10))

            for (name, text) in [("first", first), ("second", second)] {
                let check = try Run.process("/bin/bash", ["-c", "/usr/bin/promtool check metrics < '\(f.dir.file(name))'"])
                #expect(check.status == 0, "\(name): \(check.stdout) \(check.stderr)\n\(text)")
            }
            let before = Self.counters(first), after = Self.counters(second)
            #expect(before.count >= 6, "\(first)")
            for (series, value) in before {
                #expect((after[series] ?? -1) >= value, "\(series): \(value) then \(after[series].map { "\($0)" } ?? "gone")")
            }
            let c1Labels = "address=\"\(bed.address("c1"))\""
            let values = SeriesValues(second)
            #expect(values.first("asr_client_progress_ratio", with: c1Labels) == 1, "\(second)")
            #expect(values.first("asr_server_clients", with: "state=\"done\"") == 1)
            #expect((values.first("asr_server_sent_bytes_total") ?? 0) >= Double(Lab.ServerLog(net.log(serverLog)).stored ?? .max))
        }
    }

    func scrape(_ bed: Testbed, _ dir: TemporaryDirectory, _ name: String) throws -> String {
        let answer = try probe(bed, "server", ["get", "127.0.0.1", "8080", "/metrics"], dir: dir)
        let body = answer["body"] as? String ?? ""
        #expect(answer["status"] as? Int == 200 && (answer["type"] as? String)?.hasPrefix("text/plain; version=0.0.4") == true, "\(answer)")
        _ = FileManager.default.createFile(atPath: dir.file(name), contents: Data(body.utf8))
        return body
    }

    /// Counter series (families whose TYPE is counter) and their values.
    static func counters(_ text: String) -> [String: Double] {
        let counterFamilies = Set(text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") && $0.hasSuffix(" counter") }
            .map { String($0.split(separator: " ")[2]) })
        return SeriesValues(text).all.filter { series, _ in counterFamilies.contains(String(series.prefix { $0 != "{" })) }
    }

    struct SeriesValues {
        let all: [String: Double]
        init(_ text: String) {
            var values: [String: Double] = [:]
            for line in text.split(separator: "\n") where !line.hasPrefix("#") {
                if let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) { values[String(line[..<space])] = v }
            }
            all = values
        }
        func first(_ family: String, with label: String = "") -> Double? {
            all.first { $0.key.prefix { $0 != "{" } == family && (label.isEmpty || $0.key.contains(label)) }?.value
        }
    }

    /// Methods other than GET and HEAD, unknown paths, oversized heads and bodies and garbage
    /// are refused with the right status while a client restores, and 200 pollers at once (8
    /// to a source address) all get answers; the client finishes byte-identical.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func refusalsAnd200Pollers() throws {
        try withStatusServer { f, bed, server, serverLog in
            let c1 = try net.restore(bed, "c1", from: "server", into: f.dir.file("c1.raw"), log: f.dir.file("c1.log"), timeout: 120)
            let refusals = try probe(bed, "server", ["refusals", "127.0.0.1", "8080"], dir: f.dir)
            func status(_ key: String) -> Int { (refusals[key] as? [String: Any])?["status"] as? Int ?? -1 }
            func head(_ key: String) -> String { (refusals[key] as? [String: Any])?["head"] as? String ?? "" }
            #expect(status("post") == 405 && head("post").contains("Allow: GET, HEAD"), "\(refusals)")
            #expect(status("delete") == 405)
            #expect(status("missing") == 404)
            #expect(status("bigHeader") == 431 && status("longURL") == 431, "\(refusals)")
            #expect(status("bigBody") == 413, "\(refusals)")
            #expect(status("garbage") == 400, "\(refusals)")
            let pollers = try probe(bed, "server", ["pollers", "127.0.0.1", "8080", "200", "10"], dir: f.dir, timeout: 300)
            #expect(pollers["ok"] as? Int == 2000 && pollers["failed"] as? Int == 0, "\(pollers)")
            #expect(net.wait(c1, seconds: 180), "\(net.log(f.dir.file("c1.log")))")
            #expect(try sha256(file: f.dir.file("c1.raw")) == f.sha)
            // Still answering after all that.
            #expect(try self.status(bed, dir: f.dir)["clients"] != nil)
            server.terminate()
            #expect(net.wait(server, seconds: 10))
        }
    }

    /// A bare port listens on 127.0.0.1: another host cannot reach it, the server's own host
    /// can. `Status Address` 0.0.0.0:PORT in the configuration opens it to the LAN. A port
    /// already taken is an error line and exit 1, before anything is served.
    @Test(.enabled(if: enabled, "needs root and network namespaces"))
    func listensOnLoopbackUnlessTold() throws {
        let f = try Lab.Fixture(rate: 2_500_000)
        let bed = try Testbed(hosts: ["server", "other"])
        defer { bed.teardown() }
        let server = bed.address("server")
        let localLog = f.dir.file("local.log"), openLog = f.dir.file("open.log")
        let local = try startServer(bed, f, ["--status", "8080"], log: localLog)
        let open = f.dir.file("open.plist")
        Lab.writeConfig(open, rate: 2_500_000, group: "239.77.0.2",
                                          extra: "<key>Port</key><integer>7801</integer><key>Status Address</key><string>0.0.0.0:8081</string>")
        let everywhere = try startServer(bed, f, [], log: openLog, config: open)
        #expect(net.eventually(seconds: 30) { net.log(localLog).contains("status page on http://127.0.0.1:8080/") }, "\(net.log(localLog))")
        #expect(net.eventually(seconds: 30) { net.log(openLog).contains("status page on http://0.0.0.0:8081/") }, "\(net.log(openLog))")

        let fromOther = try probe(bed, "other", ["get", server, "8080", "/status.json"], dir: f.dir)
        #expect(fromOther["error"] as? String != nil, "127.0.0.1 only: \(fromOther)")
        let fromServer = try probe(bed, "server", ["get", "127.0.0.1", "8080", "/status.json"], dir: f.dir)
        #expect(fromServer["status"] as? Int == 200, "\(fromServer)")
        let opened = try probe(bed, "other", ["get", server, "8081", "/status.json"], dir: f.dir)
        #expect(opened["status"] as? Int == 200, "Status Address 0.0.0.0:8081: \(opened)")

        let taken = try bed.run("server", [CLI.binary, "server", "--source", f.image, "--config", f.config, "--status", "127.0.0.1:8080"], timeout: 60)
        #expect(taken.status == 1, "\(taken.stderr)")
        #expect(taken.stderrLines.count == 1 && taken.stderr.hasPrefix("asr: cannot serve the status page on 127.0.0.1:8080: "), "\(taken.stderr)")
        for p in [local, everywhere] {
            p.terminate()
            #expect(net.wait(p, seconds: 10))
        }
    }

    /// A status address that is not one is refused before anything else happens: one line, exit 1.
    @Test func aBadStatusAddressIsOneLine() throws {
        let dir = TemporaryDirectory()
        let config = dir.file("cfg.plist")
        Lab.writeConfig(config, rate: 1_000_000, group: "239.77.0.1")
        for bad in ["nonsense", "0", "70000", "1.2.3:80", "host:8080", "[::1]", "[zz]:80", "127.0.0.1:", ":8080"] {
            let out = try CLI.run(["server", "--source", dir.file("none.dmg"), "--config", config, "--status", bad])
            #expect(out.status == 1, "\(bad)")
            #expect(out.stderrLines == ["asr: bad status address \(bad): give PORT or ADDRESS:PORT (8080, 0.0.0.0:8080)"], "\(bad): \(out.stderr)")
        }
        let wrongType = dir.file("wrong.plist")
        Lab.writeConfig(wrongType, rate: 1_000_000, group: "239.77.0.1", extra: "<key>Status Address</key><integer>8080</integer>")
        let out = try CLI.run(["server", "--source", dir.file("none.dmg"), "--config", wrongType])
        #expect(out.status == 1 && out.stderrLines.count == 1 && out.stderr.contains("\"Status Address\" must be a string"), "\(out.stderr)")
    }
}
