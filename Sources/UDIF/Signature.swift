import Crypto
import SystemSupport
import Foundation

/// An Ed25519 signature over an image's identity (`ChunkTable`), which covers every chunk's
/// kind, stored range, codec and digest. Stored in resource `asrs` of a UDIF image, or in a
/// detached `IMAGE.sig` beside a raw image's chunk digests. Layout: "ASRSIG01" (8), public key
/// (32), signature (64). The signed message is `domain` and the 32 identity bytes, so
/// `openssl pkeyutl -verify -rawin` checks it with no asr code. Signatures by an earlier asr
/// signed "asr image signature 2" over an identity that left stored ranges out; they never
/// verify against this message.
public struct ImageSignature: Sendable, Equatable {
    public static let resourceKey = "asrs"
    static let magic = Array("ASRSIG01".utf8)
    public static let size = 8 + 32 + 64
    /// Keeps a signature over an identity from meaning anything else a key might sign.
    public static let domain = Array("asr image signature 3\n".utf8)

    public var publicKey: [UInt8]
    public var signature: [UInt8]

    public static func message(identity: [UInt8]) -> [UInt8] { domain + identity }

    public init(signing identity: [UInt8], with key: Curve25519.Signing.PrivateKey) throws {
        publicKey = Array(key.publicKey.rawRepresentation)
        signature = Array(try key.signature(for: Self.message(identity: identity)))
    }

    public init(parsing bytes: [UInt8]) throws(UDIFError) {
        guard bytes.count == Self.size, Array(bytes[0..<8]) == Self.magic else { throw .badSignatureData }
        publicKey = Array(bytes[8..<40])
        signature = Array(bytes[40..<104])
    }

    public func serialized() -> [UInt8] { Self.magic + publicKey + signature }

    public func resources() -> [String: [ResourceEntry]] {
        [Self.resourceKey: [ResourceEntry(data: serialized(), id: "0", name: "asr signature")]]
    }

    /// Whether this signature is `publicKey`'s over `identity`.
    public func isValid(for identity: [UInt8]) -> Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return false }
        return key.isValidSignature(signature, for: Self.message(identity: identity))
    }

    /// The signature stored in `image`, nil if it has none.
    public static func stored(in image: UDIFImage) throws(UDIFError) -> ImageSignature? {
        guard let entry = image.resourceFork.resources[resourceKey]?.first else { return nil }
        return try ImageSignature(parsing: entry.data)
    }
}

/// Ed25519 keys in the PEM forms `openssl genpkey -algorithm ed25519` and `openssl pkey
/// -pubout` write. Their DER is fixed apart from the 32 key bytes (RFC 8410), so it is
/// matched byte for byte rather than parsed.
public enum Ed25519PEM {
    static let privatePrefix: [UInt8] = [0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]
    static let publicPrefix: [UInt8] = [0x30, 0x2A, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x21, 0x00]

    public static func privateKey(_ text: String) -> Curve25519.Signing.PrivateKey? {
        guard let der = der(text, label: "PRIVATE KEY"), der.count == 48, Array(der.prefix(16)) == privatePrefix else { return nil }
        return try? Curve25519.Signing.PrivateKey(rawRepresentation: der.suffix(32))
    }

    public static func publicKey(_ text: String) -> [UInt8]? {
        guard let der = der(text, label: "PUBLIC KEY"), der.count == 44, Array(der.prefix(12)) == publicPrefix else { return nil }
        return Array(der.suffix(32))
    }

    /// Short form of a public key for messages: the first 8 bytes of its SHA-256, in hex.
    public static func fingerprint(_ key: [UInt8]) -> String {
        hex(Array(SHA256.hash(data: key).prefix(8)))
    }

    private static func der(_ text: String, label: String) -> [UInt8]? {
        let begin = "-----BEGIN \(label)-----", end = "-----END \(label)-----"
        guard let b = text.range(of: begin), let e = text.range(of: end, range: b.upperBound..<text.endIndex) else { return nil }
        let body = text[b.upperBound..<e.lowerBound].filter { !$0.isWhitespace }
        return Data(base64Encoded: String(body)).map { [UInt8]($0) }
    }
}
