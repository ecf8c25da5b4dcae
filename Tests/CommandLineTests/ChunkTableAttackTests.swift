import Foundation
import TestSupport
import Testing
import UDIF

/// Attacks on the rule that an image's identity covers everything that decides the bytes
/// written (docs/FORMAT.md, "Chunk table and identity"): each one must be refused before the
/// target is touched, under a pin and under a trusted key alike.
@Suite struct ChunkTableAttackTests {
    typealias Fixture = SignatureTests.Fixture

    /// A signed image and its identity.
    func signedImage() throws -> (Fixture, identity: String) {
        let f = try Fixture()
        let signed = try CLI.run(["imagescan", "--source", f.image, "--sign", f.key])
        #expect(signed.status == 0, "\(signed.stderr)")
        let identity = try #require(try CLI.run(["info", "--source", f.image]).stdout.split(separator: "\n")
            .first { $0.hasPrefix("Identity: ") }).dropFirst(10)
        return (f, String(identity))
    }

    /// A copy of the image whose first zlib chunk's type is `type` in its block table.
    func retypedCopy(_ f: Fixture, to type: ChunkType, name: String) throws -> String {
        try f.copyEditingOneBlockTable(name) { table in
            guard let i = table.chunks.indices.first(where: { table.chunks[$0].type == .zlib }) else { return false }
            table.chunks[i].type = type
            return true
        }
    }

    /// Retyped to zero-fill, to free space, or to another codec: restore and verify refuse
    /// under `--image-sha256` and under `--trust`, and nothing is written. (Before identity
    /// version 2, zero-fill kept the identity: restore wrote zeros there and exited 0.)
    @Test func retypedChunksAreRefusedBeforeAnythingIsWritten() throws {
        let (f, identity) = try signedImage()
        let cases: [(ChunkType, String, [String])] = [
            (.zeroFill, "zero-fill", ["altered or is damaged"]),
            (.ignore, "ignore", ["altered or is damaged"]),
            (.bzip2, "bzip2", ["is not the pinned image", "signature does not match"]),
        ]
        for (type, name, words) in cases {
            let image = try retypedCopy(f, to: type, name: "\(name).dmg")
            for (k, check) in [["--image-sha256", identity], ["--trust", f.pub]].enumerated() {
                let target = "\(name)-\(k).raw"
                let restored = try CLI.run(["restore", "--source", image, "--file", f.dir.file(target), "--erase", "--noprompt"] + check)
                let said = words.count == 1 ? words[0] : words[k]
                SignatureTests().expectRefused(restored, f, target, saying: said)
                let verified = try CLI.run(["verify", "--source", image] + check)
                #expect(verified.status == 1 && verified.stderrLines.count == 1 && verified.stderr.contains(said), "\(name): \(verified.stderr)")
            }
        }
        // Without a pin or key, the zero-fill and free-space forgeries are still refused: their
        // scan digests are not those of zeros or of nothing.
        for name in ["zero-fill", "ignore"] {
            let out = try CLI.run(["restore", "--source", f.dir.file("\(name).dmg"), "--file", f.dir.file("\(name)-plain.raw"), "--erase", "--noprompt"])
            SignatureTests().expectRefused(out, f, "\(name)-plain.raw", saying: "altered or is damaged")
        }
    }

    /// A scan by an earlier asr names an identity that did not cover stored ranges: refused
    /// under a pin or key with a line that says how to fix it, and `imagescan --sign` does.
    @Test func earlierScansAreRefusedUnderAPinOrKeyUntilRescanned() throws {
        let (f, identity) = try signedImage()
        let image = try UDIFImage(path: f.image)
        var bytes = try #require(image.resourceFork.resources[ScanData.resourceKey]?.first).data
        bytes.replaceSubrange(0..<8, with: Array("ASRSCAN1".utf8))
        try ImageRewriter(image, replacing: f.image, reorder: false)
            .finish(replacingResources: [ScanData.resourceKey: [ResourceEntry(data: bytes, id: "0", name: "asr chunk checksums")]])
        for check in [["--image-sha256", identity], ["--trust", f.pub]] {
            let out = try CLI.run(["restore", "--source", f.image, "--file", f.dir.file("old.raw"), "--erase", "--noprompt"] + check)
            SignatureTests().expectRefused(out, f, "old.raw", saying: "scanned by an earlier asr")
            #expect(out.stderr.contains("asr imagescan --source") && out.stderr.contains("--sign"), "\(out.stderr)")
        }
        let plain = try CLI.run(["restore", "--source", f.image, "--file", f.dir.file("plain.raw"), "--erase", "--noprompt"])
        #expect(plain.status == 0, "without a pin or key an earlier scan still restores: \(plain.stderr)")
        #expect(try CLI.run(["imagescan", "--source", f.image, "--sign", f.key]).status == 0)
        let again = try CLI.run(["restore", "--source", f.image, "--file", f.dir.file("again.raw"), "--erase", "--noprompt", "--trust", f.pub])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try sha256(file: f.dir.file("again.raw")) == f.sha)
    }

    /// Raw images are checked chunk by chunk against the digests `imagescan` records beside
    /// their block map, before anything is written: a changed byte stops the restore at that
    /// chunk, and with a pin nothing is written at all.
    @Test func rawSourcesAreCheckedBeforeTheyAreWritten() throws {
        let f = try Fixture()
        #expect(try CLI.run(["imagescan", "--source", f.raw]).status == 0)
        #expect(FileManager.default.fileExists(atPath: f.raw + ".asrc"))
        let identity = try #require(try CLI.run(["info", "--source", f.raw]).stdout.split(separator: "\n")
            .first { $0.hasPrefix("Identity: ") }).dropFirst(10)
        let good = try CLI.run(["restore", "--source", f.raw, "--file", f.dir.file("good.raw"), "--erase", "--noprompt", "--image-sha256", String(identity)])
        #expect(good.status == 0, "\(good.stderr)")
        #expect(try sha256(file: f.dir.file("good.raw")) == f.sha)
        // Two MiB in, after the scan: the chunk fails before it is written.
        try Run.shell("printf 'X' | dd of='\(f.raw)' bs=1 seek=\(2 << 20 + 100) conv=notrunc status=none")
        let bad = try CLI.run(["restore", "--source", f.raw, "--file", f.dir.file("bad.raw"), "--erase", "--noprompt"])
        #expect(bad.status == 1 && bad.stderr.contains("bytes 2097152-3145727"), "\(bad.stderr)")
        let written = (try? Data(contentsOf: URL(fileURLWithPath: f.dir.file("bad.raw")))) ?? Data()
        #expect(written.count <= 2 << 20 + 100 || written[2 << 20 + 100] != UInt8(ascii: "X"), "the changed byte never reached the target")
    }

    /// `convert` of a scanned image decodes through the same check: stored bytes changed after
    /// the scan (the block table untouched) stop it with one line, and no output is left.
    @Test func convertChecksEveryChunkOfAScannedImage() throws {
        let f = try Fixture()
        // Raw chunks: a changed byte still decodes, so only the digest can catch it.
        let udro = f.dir.file("raw-chunks.dmg")
        #expect(try CLI.run(["create", "--source", f.raw, "--output", udro, "--format", "UDRO"]).status == 0)
        #expect(try CLI.run(["imagescan", "--source", udro]).status == 0)
        let image = try UDIFImage(path: udro)
        let i = try #require(image.chunks.indices.first { image.chunks[$0].type == .raw })
        try Run.shell("printf 'Z' | dd of='\(udro)' bs=1 seek=\(image.chunks[i].fileOffset + 100) conv=notrunc status=none")
        for format in ["RAW", "UDZO"] {
            let out = try CLI.run(["convert", "--source", udro, "--format", format, "--output", f.dir.file("out-\(format)")])
            #expect(out.status == 1 && out.stderrLines.count == 1 && out.stderr.contains("chunk \(i) "), "\(format): \(out.stderr)")
            #expect(!FileManager.default.fileExists(atPath: f.dir.file("out-\(format)")))
        }
    }

    /// With only a bmaptool block map (no chunk digests), a raw source is checked by the
    /// read-back: the restore fails, and the range that failed is zeroed with the target's
    /// ends, so the changed bytes do not stay on it. A pin refuses such a source outright.
    @Test func blockMapOnlySourcesAreWipedWhereTheReadBackFails() throws {
        let f = try Fixture()
        #expect(try CLI.run(["imagescan", "--source", f.raw]).status == 0)
        try FileManager.default.removeItem(atPath: f.raw + ".asrc")
        let at = 2 << 20 + 100
        try Run.shell("printf 'X' | dd of='\(f.raw)' bs=1 seek=\(at) conv=notrunc status=none")
        let out = try CLI.run(["restore", "--source", f.raw, "--file", f.dir.file("bad.raw"), "--erase", "--noprompt"])
        #expect(out.status == 1 && out.stderr.contains("verification failed") && out.stderr.contains("erased"), "\(out.stderr)")
        let written = try Data(contentsOf: URL(fileURLWithPath: f.dir.file("bad.raw")))
        #expect(written.count > at && written[at] == 0, "the failed range is zeroed")
        #expect(written.prefix(1 << 20).allSatisfy { $0 == 0 }, "the first MiB is wiped")
        let pinned = try CLI.run(["restore", "--source", f.raw, "--file", f.dir.file("pinned.raw"), "--erase", "--noprompt",
                                  "--image-sha256", String(repeating: "ab", count: 32)])
        SignatureTests().expectRefused(pinned, f, "pinned.raw", saying: "has only a bmaptool block map")
    }

    /// A relay between client and server that forwards everything but rewrites MANIFEST:
    /// `zero` gives a data chunk a stored length of 0 (what an earlier client wrote as zeros
    /// and "verified"); `zeros` makes it a consistent zero chunk (codec, digest of zeros) and
    /// rewrites WELCOME's identity to match; `swap` swaps two data chunks' stored bytes and
    /// digests and rewrites WELCOME likewise; `pass` changes nothing.
    static let relay = #"""
        import hashlib, socket, struct, sys, threading
        mode, listen_port, server = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        def read_exact(s, n):
            b = b""
            while len(b) < n:
                c = s.recv(n - len(b))
                if not c: raise EOFError
                b += c
            return b
        def frame(t, p): return struct.pack(">IB", len(p) + 1, t) + p
        def identity(disk, entries):
            h = hashlib.sha256(b"asr image identity 2" + struct.pack(">QQ", disk, len(entries)))
            for off, length, soff, slen, codec, sha in entries:
                kind = 1 if codec == 2 else (2 if slen == 0 else 0)
                h.update(struct.pack(">QQBIQQ", off, length, kind, codec, soff, slen) + sha)
            return h.digest()
        def pump_up(c, s):
            try:
                while True:
                    d = c.recv(65536)
                    if not d: break
                    s.sendall(d)
            except OSError: pass
        def handle(c):
            s = socket.create_connection((server, 7800))
            threading.Thread(target=pump_up, args=(c, s), daemon=True).start()
            welcome = None
            try:
                while True:
                    n, t = struct.unpack(">IB", read_exact(s, 5)); p = read_exact(s, n - 1)
                    if t == 2 and mode != "pass":
                        welcome = bytearray(p); continue
                    if t == 3 and mode != "pass":
                        count = struct.unpack(">I", p[:4])[0]
                        es = [list(struct.unpack(">QQQII", p[4 + 64 * i:4 + 64 * i + 32])) + [p[4 + 64 * i + 32:4 + 64 * (i + 1)]] for i in range(count)]
                        data = [i for i, e in enumerate(es) if e[3] > 0 and e[4] not in (0, 2)]
                        a, b = data[1], data[2]
                        if mode == "zero":
                            es[a][3] = 0
                        elif mode == "zeros":
                            es[a][2], es[a][3], es[a][4] = 0, 0, 0
                            es[a][5] = hashlib.sha256(bytes(es[a][1])).digest()
                        elif mode == "swap":
                            for k in (2, 3, 4, 5): es[a][k], es[b][k] = es[b][k], es[a][k]
                        p = struct.pack(">I", count) + b"".join(struct.pack(">QQQII", *e[:5]) + e[5] for e in es)
                        if mode != "zero":
                            disk = struct.unpack(">Q", welcome[42:50])[0]
                            welcome[10:42] = identity(disk, es)
                        c.sendall(frame(2, bytes(welcome)))
                    c.sendall(frame(t, p))
            except (EOFError, OSError): pass
            c.close(); s.close()
        ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("0.0.0.0", listen_port)); ls.listen(16)
        print("relaying", flush=True)
        while True:
            c, _ = ls.accept()
            threading.Thread(target=handle, args=(c,), daemon=True).start()
        """#

    /// The rogue relay against `--trust` and against `?sha256=`: the client refuses before it
    /// writes the first byte, in one line, exit 1. Through the same relay changing nothing, the
    /// same client restores byte-identical, so the relay itself works.
    @Test(.enabled(if: Lab.enabled, "needs root and network namespaces"))
    func rogueRelayRewritingTheManifestIsRefused() throws {
        let (f, identity) = try signedImage()
        let net = Lab()
        let config = f.dir.file("cfg.plist")
        Lab.writeConfig(config, rate: 30_000_000, group: "239.77.0.1")
        let bed = try Testbed(hosts: ["server", "c1"])
        defer { bed.teardown() }
        let script = f.dir.file("relay.py")
        _ = FileManager.default.createFile(atPath: script, contents: Data(Self.relay.utf8))
        try bed.start("server", [CLI.binary, "server", "--source", f.image, "--config", config], log: f.dir.file("server.log"))
        #expect(net.eventually(seconds: 30) { net.log(f.dir.file("server.log")).contains("waiting for clients") })
        for (port, mode) in [(7901, "zero"), (7902, "zeros"), (7903, "swap"), (7904, "pass")] {
            try bed.start("server", ["/usr/bin/python3", script, mode, String(port), "127.0.0.1"], log: f.dir.file("relay-\(mode).log"))
            #expect(net.eventually(seconds: 10) { net.log(f.dir.file("relay-\(mode).log")).contains("relaying") })
        }
        let host = bed.address("server")
        for (port, mode) in [(7901, "zero"), (7902, "zeros"), (7903, "swap")] {
            for (k, check) in [["--trust", f.pub], []].enumerated() {
                let source = "asr://\(host):\(port)" + (check.isEmpty ? "?sha256=\(identity)" : "")
                let target = "\(mode)-\(k).raw"
                let out = try bed.run("c1", [CLI.binary, "restore", "--source", source, "--file", f.dir.file(target), "--erase", "--noprompt",
                                             "--timeout", "20"] + check, timeout: 120)
                SignatureTests().expectRefused(out, f, target, saying: mode == "zero" ? "manifest is refused" : (check.isEmpty ? "is not the pinned image" : "signature does not match"))
            }
        }
        let good = try bed.run("c1", [CLI.binary, "restore", "--source", "asr://\(host):7904?sha256=\(identity)", "--file", f.dir.file("good.raw"),
                                      "--erase", "--noprompt", "--timeout", "20", "--trust", f.pub], timeout: 120)
        #expect(good.status == 0, "\(good.stderr) \(net.log(f.dir.file("server.log")))")
        #expect(try sha256(file: f.dir.file("good.raw")) == f.sha)
    }
}
