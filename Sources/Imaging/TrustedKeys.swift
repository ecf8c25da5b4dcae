import Crypto
import Foundation
import SystemSupport
import UDIF

/// The keys whose signatures a command accepts: `--trust PUB.pem` files and every `*.pem` in
/// /etc/asr/trusted.d. With none, images are taken unsigned, as before. With any, an image
/// must carry a signature by one of them over its identity, and that is checked before a byte
/// is written or shown; the identity itself comes from the scan, which is checked against the
/// chunk table, and every chunk is then checked against the scan.
public struct TrustedKeys: Sendable {
    public static let directory = "/etc/asr/trusted.d"
    public var keys: [[UInt8]] = []

    /// Trusts no key: images are taken unsigned.
    public init() {}

    /// Fails closed: a directory that exists but cannot be listed (no permission, not a
    /// directory, a dangling link), or a key file that cannot be read, is an error, never
    /// "no keys" (which would take unsigned images). Only a missing directory holds no keys.
    public init(files: [String], directory: String? = TrustedKeys.directory) throws(ImagingError) {
        var paths = files
        if let directory { paths += try Self.keyFiles(in: directory) }
        for path in paths {
            let bytes: [UInt8]
            do { bytes = try FileIO.readSmallFile(path, limit: 64 << 10) } catch {
                throw .unusableKey(path: path, "cannot be read (\(error.errno.map { "\($0)" } ?? "\(error)")); "
                                   + "no image is trusted until every trusted key can be read")
            }
            guard bytes.count <= 64 << 10, let key = Ed25519PEM.publicKey(String(decoding: bytes, as: UTF8.self)) else {
                throw .unusableKey(path: path, "is not an Ed25519 public key in PEM form (openssl pkey -pubout writes one)")
            }
            keys.append(key)
        }
    }

    /// The `*.pem` files in `directory`, sorted; none when it does not exist.
    private static func keyFiles(in directory: String) throws(ImagingError) -> [String] {
        func unreadable(_ code: Int32) -> ImagingError {
            .unusableKey(path: directory, "cannot be read (\(errnoString(code))); no image is trusted until it can be, or it is removed")
        }
        var st = stat()
        if lstat(directory, &st) != 0 {
            if errno == ENOENT { return [] }
            throw unreadable(errno)
        }
        guard let dir = opendir(directory) else { throw unreadable(errno) }
        defer { closedir(dir) }
        var names: [String] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw unreadable(errno) }
                break
            }
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name.hasSuffix(".pem") { names.append(name) }
        }
        return names.sorted().map { directory + "/" + $0 }
    }

    public var isEmpty: Bool { keys.isEmpty }

    /// Throws unless `source` (a scanned UDIF image, or a raw one with its chunk digests) has
    /// the pinned identity and is signed by a trusted key (nothing to ask when neither is
    /// given). A scanned UDIF source checks every chunk it decodes against its scan from then
    /// on, asked or not; its table is returned.
    @discardableResult
    public func check(_ source: ImageSource, pin: IdentityPin?, blockMap: String? = nil) throws -> ChunkTable? {
        guard let plan = try VerificationPlan(ifScanned: source, blockMap: blockMap) else {
            if !keys.isEmpty || pin != nil { throw ImagingError.notScanned(path: source.path, restoring: false) }
            return nil
        }
        try plan.check(pin: pin, trusted: self, source: source.path)
        return plan.table
    }

    /// Throws unless `signature` is a trusted key's over `identity` (nothing to check when no
    /// key is trusted).
    public func check(identity: [UInt8], signature: ImageSignature?, source: String) throws(ImagingError) {
        guard !keys.isEmpty else { return }
        guard let signature else { throw .unsigned(path: source) }
        guard keys.contains(signature.publicKey) else {
            throw .untrustedSigner(path: source, fingerprint: Ed25519PEM.fingerprint(signature.publicKey))
        }
        guard signature.isValid(for: identity) else { throw .badSignature(path: source) }
    }
}

/// The private key `imagescan --sign` signs with: Ed25519 in the PEM form
/// `openssl genpkey -algorithm ed25519` writes.
public struct SigningKey: Sendable {
    /// The 32 raw key bytes (swift-crypto's key type is not Sendable).
    private let raw: [UInt8]

    public init(pemFile path: String) throws(ImagingError) {
        guard let bytes = try? FileIO.readSmallFile(path, limit: 64 << 10), bytes.count <= 64 << 10,
              let key = Ed25519PEM.privateKey(String(decoding: bytes, as: UTF8.self)) else {
            throw .unusableKey(path: path, "is not an Ed25519 private key in PEM form (openssl genpkey -algorithm ed25519 writes one)")
        }
        raw = Array(key.rawRepresentation)
    }

    public func sign(_ identity: [UInt8]) throws -> ImageSignature {
        try ImageSignature(signing: identity, with: Curve25519.Signing.PrivateKey(rawRepresentation: raw))
    }
}

/// An image identity given on the command line (`--image-sha256 HEX`, or `?sha256=HEX` in an
/// asr:// URL): only that image is accepted, with or without keys.
public struct IdentityPin: Sendable, Equatable {
    public let identity: [UInt8]

    public init(hex text: String) throws(ImagingError) {
        let digits = Array(text.lowercased().utf8)
        guard digits.count == 64, digits.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else {
            throw .badPin(text)
        }
        identity = stride(from: 0, to: 64, by: 2).map { UInt8(String(decoding: digits[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
    }

    public var hex: String { SystemSupport.hex(identity) }

    public func check(identity found: [UInt8], source: String) throws(ImagingError) {
        guard found == identity else { throw .notThePinnedImage(path: source, found: SystemSupport.hex(found)) }
    }
}
