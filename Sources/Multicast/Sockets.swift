import SystemSupport
import SystemPackage
import Foundation
import Glibc
import Synchronization
import UDIF

/// Thin POSIX socket adapters for the multicast server and client. The protocol logic lives
/// in the state machines; these only move bytes.

/// The errno a socket call just set.
func lastErrno() -> Errno { Errno(rawValue: errno) }

func ipv4(_ text: String) -> in_addr? {
    var addr = in_addr()
    return inet_pton(AF_INET, text, &addr) == 1 ? addr : nil
}

func sockaddrIn(_ addr: in_addr, _ port: UInt16) -> sockaddr_in {
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = port.bigEndian
    sa.sin_addr = addr
    return sa
}

/// Sets an integer socket option; false when the kernel refuses it.
@discardableResult
func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Bool {
    var v = value
    return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0
}

/// Sets SO_RCVTIMEO or SO_SNDTIMEO.
func setTimeout(_ fd: Int32, _ name: Int32, _ seconds: TimeInterval) {
    var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1e6))
    setsockopt(fd, SOL_SOCKET, name, &tv, socklen_t(MemoryLayout<timeval>.size))
}

/// Binds `fd` to `address`, or throws with the errno.
func bind(_ fd: Int32, _ address: in_addr, _ port: UInt16) throws(Errno) {
    var addr = sockaddrIn(address, port)
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw lastErrno() }
}

/// A NUL-terminated C string in a fixed buffer, as text.
func string(fromCBuffer buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The IPv4 address of a network interface, for choosing the multicast interface.
func interfaceAddress(_ name: String) throws(MulticastError) -> in_addr {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0 else { throw .socket(.listInterfaces, lastErrno()) }
    defer { freeifaddrs(list) }
    var cursor = list
    while let entry = cursor {
        if String(cString: entry.pointee.ifa_name) == name, let sa = entry.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) {
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        }
        cursor = entry.pointee.ifa_next
    }
    throw .noInterfaceAddress(interface: name)
}

/// A connected TCP stream carrying framed control messages. One thread reads; any may send.
/// Bytes of partly received frames, across every connection of a server: a peer's claimed
/// length costs nothing until its bytes arrive, and all of them together at most `limit`.
final class FrameBudget: Sendable {
    let limit: Int
    private let held = Locked(0)

    init(limit: Int) { self.limit = limit }

    func take(_ n: Int) -> Bool {
        held.withLock { held in
            guard held + n <= limit else { return false }
            held += n
            return true
        }
    }

    func give(_ n: Int) { held.withLock { $0 -= n } }
}

final class ControlConnection: Sendable {
    let fd: Int32
    let peer: String
    /// Whole frames only: two senders must not interleave their bytes.
    private let writeLock = Locked(())
    /// The server's: frame bytes held across connections are bounded, and a frame must be
    /// complete `frameDeadline` after its first byte (a client takes a large manifest as
    /// slowly as its link needs).
    private let budget: FrameBudget?
    /// The server's: the largest frame it takes of each message type, checked on the type
    /// byte before the rest is read.
    private let limit: (@Sendable (UInt8) -> Int)?
    static let frameDeadline: TimeInterval = 10

    init(fd: Int32, peer: String, budget: FrameBudget? = nil, limit: (@Sendable (UInt8) -> Int)? = nil) {
        self.fd = fd
        self.peer = peer
        self.budget = budget
        self.limit = limit
        setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1)
    }

    deinit { close(fd) }

    static func connect(host: String, port: UInt16, timeout: TimeInterval) throws(MulticastError) -> ControlConnection {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else { throw .cannotResolve(host: host) }
        defer { freeaddrinfo(result) }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw .socket(.create, lastErrno()) }
        setTimeout(fd, SO_SNDTIMEO, Double(Int(timeout)))
        guard Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let e = lastErrno()
            close(fd)
            throw .cannotConnect(host: host, port: port, e)
        }
        return ControlConnection(fd: fd, peer: "\(host):\(port)")
    }

    /// Shuts the stream down both ways: the reading thread sees it closed.
    func shutDown() { shutdown(fd, Int32(SHUT_RDWR)) }

    func send(_ message: ControlMessage) throws(MulticastError) {
        let bytes = message.encoded()
        try writeLock.withLock { _ throws(MulticastError) in
            var done = 0
            while done < bytes.count {
                do throws(Errno) {
                    done += try retryingInterrupts {
                        bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
                    }
                } catch {
                    throw .connectionLost(peer: peer, error)
                }
            }
        }
    }

    /// Sets how long `receive` waits before giving up with nil.
    func setReceiveTimeout(_ seconds: TimeInterval) { setTimeout(fd, SO_RCVTIMEO, seconds) }

    /// The next message; nil on a timeout; throws when the peer closes or sends garbage.
    func receive() throws(MulticastError) -> ControlMessage? {
        guard let header = try read(4) else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard length >= 1, length <= ControlMessage.maxFrame else { throw .frameSize(peer: peer, length: length) }
        guard let limit else {
            guard let body = try read(length, waitingForAll: true) else { throw .stalledMidMessage(peer: peer) }
            return try ControlMessage.decode(body[...])
        }
        guard let type = try read(1, waitingForAll: true)?.first else { throw .stalledMidMessage(peer: peer) }
        let most = limit(type)
        guard length <= most else { throw .frameTooLarge(peer: peer, type: type, length: length, limit: most) }
        guard let rest = length == 1 ? [] : try read(length - 1, waitingForAll: true) else { throw .stalledMidMessage(peer: peer) }
        return try ControlMessage.decode(([type] + rest)[...])
    }

    /// The buffer grows with what arrives, never ahead of it: a frame's length is only the
    /// peer's claim, and one claiming 64 MiB and sending nothing must not cost 64 MiB.
    private func read(_ count: Int, waitingForAll: Bool = false) throws(MulticastError) -> [UInt8]? {
        var buffer: [UInt8] = []
        var piece = [UInt8](repeating: 0, count: min(count, 1 << 16))
        let limited = budget != nil
        var deadline = limited && waitingForAll ? Date().addingTimeInterval(Self.frameDeadline) : nil
        defer { budget?.give(buffer.count) }
        while buffer.count < count {
            if let deadline, Date() > deadline { throw .stalledMidMessage(peer: peer) }
            let want = min(piece.count, count - buffer.count)
            let n: Int
            do throws(Errno) {
                n = try retryingInterrupts { piece.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, want, 0) } }
            } catch where error == .resourceTemporarilyUnavailable {
                // The receive timeout: nothing yet.
                if buffer.isEmpty && !waitingForAll { return nil }
                if Interruption.requested { throw .interrupted }
                continue
            } catch {
                throw .closed(peer: peer)
            }
            guard n > 0 else { throw .closed(peer: peer) }
            if let budget, !budget.take(n) { throw .frameSize(peer: peer, length: count) }
            buffer += piece[0..<n]
            if limited && deadline == nil { deadline = Date().addingTimeInterval(Self.frameDeadline) }
        }
        return buffer
    }
}
