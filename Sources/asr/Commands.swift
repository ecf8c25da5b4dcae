import ArgumentParser
import SystemSupport
import Foundation
import Imaging
import Multicast
import StatusServer
import UDIF

struct ImageScan: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "imagescan",
        abstract: "Record checksums for an image so it can be verified, restored and served.",
        discussion: """
            A UDIF image gets a SHA-256 per chunk (its identity is the digest of that table) \
            and Apple's linear SHA-1 and SHA-256 of the whole disk (unless --no-apple-digests), \
            and its data fork is rewritten in logical order (unless --nostream), through a \
            temporary file that replaces the image only when complete. A raw image or block \
            device gets a bmaptool 2.0 .bmap sidecar. Scanning a scanned image changes nothing.
            """)

    @Option(help: "The image (UDIF or raw) or block device to scan.") var source: String
    @Flag(help: "Do not reorder the data fork for streaming.") var nostream = false
    @Flag(help: "Skip Apple's whole-disk digests (nsiz), which hash every byte of the disk; for images that never go back to a Mac.")
    var noAppleDigests = false
    @Option(help: "Where to write the block map of a raw source (default: SOURCE.bmap).") var bmap: String?
    @Option(help: ArgumentHelp("Sign the image with this Ed25519 private key (PEM, as openssl genpkey -algorithm ed25519 writes).",
                               valueName: "key.pem")) var sign: String?
    @OptionGroup var output: OutputOptions

    func run() throws {
        var scanner = ImageScanner(reporter: output.reporter)
        scanner.signingKey = try sign.map { try SigningKey(pemFile: $0) }
        scanner.reorder = !nostream
        scanner.appleDigests = !noAppleDigests
        scanner.blockMapPath = bmap
        switch try scanner.scan(source) {
        case .scanned: print("asr: successfully scanned image \"\(source)\"")
        case .alreadyScanned: print("asr: image \"\(source)\" is already scanned")
        case .wroteBlockMap(let path): print("asr: successfully scanned image \"\(source)\" (block map \"\(path)\")")
        }
    }
}

struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check an image against the checksums imagescan recorded.",
        discussion: "Names the first chunk or byte range that does not match and exits 1.")

    @Option(help: "A scanned UDIF image, or a raw image or block device with its .bmap.") var source: String
    @Option(help: "The block map of a raw source, when it is not SOURCE.bmap (a device's, say).") var bmap: String?
    @OptionGroup var trust: TrustOptions
    @OptionGroup var output: OutputOptions

    func run() throws {
        var verifier = ImageVerifier(reporter: output.reporter)
        verifier.blockMapPath = bmap
        verifier.trusted = try trust.keys()
        verifier.pin = try trust.pin()
        let free = try verifier.verify(source)
        print("asr: successfully verified image \"\(source)\"" + (free > 0 ? " (\(free) bytes of free space hold no data and were not verified)" : ""))
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write an image onto a block device or file.",
        discussion: """
            SOURCE is a UDIF image, a raw image (with its .bmap, if any), a block device, or an \
            http:// or https:// URL. TARGET is a block device or a regular file (created or \
            replaced). The target is refused when mounted or in use, when it is the source, or \
            when it is too small, before anything is written. After writing, the target is read \
            back and checked against the source's scan, unless --noverify. If the restore fails \
            once writing has begun, the target's first and last MiB are erased. Free space the \
            image left out (UDIF ignore runs) is neither written nor verified: the target keeps \
            what it held there, unless --erase-free. With --incremental the target is read \
            first and only the chunks it does not already hold are fetched and written (the source \
            must be scanned; asr:// clients report what they hold, and the server sends only what some \
            client lacks); the target is not emptied, and a restore that was cut short can \
            be run again this way to finish it.
            """)

    @Option(help: "Image file, block device, http(s):// URL, or asr://SERVER[:PORT] for multicast.") var source: String
    @Option(help: "Block device or file to restore onto.") var target: String?
    @Option(help: "An image file to restore into (instead of --target).") var file: String?
    @Option(help: "Multicast: give up when nothing is heard for this many seconds.") var timeout: Double = 60
    @Option(help: "Multicast: the network interface to receive on.") var interface: String?
    @Flag(help: "Required: the target's contents are erased.") var erase = false
    @Flag(help: "Do not ask before erasing.") var noprompt = false
    @Flag(help: "Skip checksum verification (needed for unscanned sources).") var noverify = false
    @Flag(help: "Zero the image's free space on the target too (a byte-identical disk), and verify it.") var eraseFree = false
    @Flag(help: "Fetch and write only the chunks the target does not already hold (scanned sources; not asr://).")
    var incremental = false
    @Option(help: "The block map of a raw source, when it is not SOURCE.bmap (a device's, say).") var bmap: String?
    @OptionGroup var trust: TrustOptions
    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (target == nil) != (file == nil) else { throw ValidationError("give exactly one of --target and --file") }
        guard timeout > 0 else { throw ValidationError("--timeout must be positive") }
    }

    func run() throws {
        let target = self.target ?? file!
        guard erase else { throw CommandLineError.eraseNotConfirmed(target: target) }
        let confirm: ((String) throws -> Bool)? = noprompt ? nil : { target in
                guard isatty(STDIN_FILENO) != 0 else {
                throw CommandLineError.noTerminalToConfirm(target: target)
            }
            print("\tErase contents of \(target)? [ny]: ", terminator: "")
            fflush(nil)
            return readLine()?.trimmingCharacters(in: .whitespaces).lowercased().hasPrefix("y") == true
        }
        let reuse: TargetComparison?
        if source.lowercased().hasPrefix("asr://") {
            var client = MulticastClient(reporter: output.reporter)
            client.verify = !noverify
            client.eraseFree = eraseFree
            client.timeout = timeout
            client.interfaceName = interface
            client.confirmErase = confirm
            client.trusted = try trust.keys()
            client.pin = try trust.pin()
            client.incremental = incremental
            reuse = try client.restore(source: source, target: target)
        } else {
            var restorer = Restorer(reporter: output.reporter)
            restorer.verify = !noverify
            restorer.trusted = try trust.keys()
            restorer.pin = try trust.pin()
            restorer.eraseFree = eraseFree
            restorer.blockMapPath = bmap
            restorer.confirmErase = confirm
            restorer.incremental = incremental
            reuse = try restorer.restore(source: source, target: target)
        }
        print("asr: restored \"\(source)\" to \"\(target)\"" + (noverify ? " (not verified)" : "") + (reuse.map { ": " + $0.restoreSummary } ?? ""))
    }
}

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Count the chunks of a scanned image that a target does not hold. Writes nothing.",
        discussion: """
            Reads TARGET (a block device or file) and checks each chunk of SOURCE against the \
            SHA-256 its scan recorded: chunks the same, chunks different (those with data, and \
            their stored bytes, are what restore --incremental would fetch; the others are \
            zeros), and free space, which is not compared. JSON keys: source, target, unit \
            ("chunk", or "range" for a raw image's block map), diskBytes, chunks, bytes, \
            sameChunks, sameBytes, differentChunks, differentBytes, fetchChunks, fetchBytes, \
            fetchStoredBytes, zeroChunks, zeroBytes, freeChunks, freeBytes.
            """)

    @Option(help: "A scanned UDIF image or http(s):// URL, or a raw image with its .bmap.") var source: String
    @Option(help: "The block device or file to compare with it.") var target: String
    @Option(help: "The block map of a raw source, when it is not SOURCE.bmap (a device's, say).") var bmap: String?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        var comparer = TargetComparer(reporter: json ? Reporter(.quiet) : .terminalOnly)
        comparer.blockMapPath = bmap
        let comparison = try comparer.compare(source: source, target: target)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(String(decoding: try encoder.encode(comparison), as: UTF8.self))
        } else {
            print(comparison.text(), terminator: "")
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find multicast sessions announced on the network (DNS Service Discovery, through Avahi).",
        discussion: "Restore from one with asr restore --source asr://NAME.")

    @Option(help: "Seconds to listen for announcements.") var timeout: Double = 3
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let sessions = try ServiceBrowser().browse(timeout: timeout)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            print(terminalSafeJSON(String(decoding: try encoder.encode(sessions), as: UTF8.self)))
            return
        }
        for s in sessions {
            let size = s.size.map { ByteSize.format($0) } ?? "?"
            let rate = s.rate.map { ByteSize.format($0) + "/s" } ?? "?"
            // Names, hosts and images come from the network: escaped, never raw on a terminal.
            print("\(displayable(s.name))\t\(displayable(s.host)) (\(displayable(s.address)):\(s.port))\t\(displayable(s.image ?? "?"))\t\(size)\t\(rate)")
        }
    }
}

struct Server: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a scanned image to many clients at once over UDP multicast.",
        discussion: """
            The configuration plist uses Apple's keys: Data Rate and Multicast Address (required), \
            Client Data Rate, DNS Service Discovery, Loop Suspend, Multicast TTL, Port (7800). The \
            server sends only what its clients lack, round the image in disk order at no more than \
            the data rate, and nothing while nobody lacks anything, until it gets SIGINT or SIGTERM \
            (exit 0). Clients: asr restore --source asr://HOST.
            With --status (or the Status Address key), a page at http://ADDRESS:PORT/ shows the \
            session live, /status.json has the same as JSON and /metrics as Prometheus metrics \
            (docs/STATUS.md). A bare PORT listens on 127.0.0.1 only; 0.0.0.0:PORT on every interface.
            """)

    @Option(help: "A scanned UDIF image, a raw image with its .bmap, or a block device.") var source: String
    @Option(help: "The configuration plist.") var config: String
    @Option(help: "The network interface to send on.") var interface: String?
    @Option(help: ArgumentHelp("Serve the session page, /status.json and /metrics here (PORT: on 127.0.0.1).",
                               valueName: "[address:]port")) var status: String?

    func run() throws {
        var cfg = try ServerConfig.load(config)
        let statusAddress = try status.map { text throws(MulticastError) in
            guard let address = StatusAddress(parsing: text) else { throw .badStatusAddress(text) }
            return address
        } ?? cfg.statusAddress
        // Each listener's connections within its own share of the descriptors.
        let (budget, note) = try DescriptorBudget.forServer(control: cfg.maxConnections,
                                                            status: statusAddress == nil ? 0 : StatusServer.maxConnections)
        cfg.maxConnections = budget.control
        let feed = try ImageFeed(source: ImageSource.open(source))
        let log: @Sendable (String) -> Void = { line in FileHandle.standardError.write(Data("asr server: \(line)\n".utf8)) }
        if let note { log(note) }
        let server = try MulticastServer(feed: feed, path: source, config: cfg, interfaceName: interface, log: log)
        // Bound before the stream starts: a taken port is an error now, not a page that never comes.
        let statusServer = try statusAddress.map { try StatusServer(address: $0, source: server.board, maxConnections: budget.status) }
        defer { statusServer?.stop() }
        if let statusServer { log("status page on \(statusServer.url) (also status.json and metrics)") }
        let image = URL(fileURLWithPath: source).lastPathComponent
        let announcer = cfg.dnsServiceDiscovery ? ServiceAnnouncer(
            name: "\(URL(fileURLWithPath: source).deletingPathExtension().lastPathComponent)@\(ProcessInfo.processInfo.hostName)",
            port: cfg.port, image: image, size: feed.diskBytes, identity: feed.identity, rate: cfg.effectiveRate,
            group: "\(cfg.multicastAddress):\(cfg.port)", log: log) : nil
        defer { announcer?.stop() }
        try server.run()
    }
}

/// `--trust`, for the commands that read an image someone else made.
struct TrustOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Accept only images signed by this Ed25519 public key (PEM); repeatable. Keys in \(TrustedKeys.directory) count too.",
                               valueName: "pub.pem")) var trust: [String] = []
    @Option(help: ArgumentHelp("Accept only the image with this identity (the 64 hex digits asr info prints).", valueName: "hex"))
    var imageSha256: String?

    /// ASR_TRUSTED_DIR replaces /etc/asr/trusted.d (asr.1, ENVIRONMENT).
    func keys() throws -> TrustedKeys {
        let directory = ProcessInfo.processInfo.environment["ASR_TRUSTED_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        return try TrustedKeys(files: trust, directory: directory ?? TrustedKeys.directory)
    }
    func pin() throws -> IdentityPin? { try imageSha256.map { try IdentityPin(hex: $0) } }
}
