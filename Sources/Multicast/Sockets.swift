import SystemSupport
import Foundation
import Glibc
import UDIF

/// Thin POSIX socket adapters for the multicast server and client. The protocol logic lives
/// in the state machines; these only move bytes.

func socketError(_ what: String) -> MulticastError { MulticastError("\(what): \(String(cString: strerror(errno)))") }

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

/// The IPv4 address of a network interface, for choosing the multicast interface.
func interfaceAddress(_ name: String) throws -> in_addr {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0 else { throw socketError("cannot list interfaces") }
    defer { freeifaddrs(list) }
    var cursor = list
    while let entry = cursor {
        if String(cString: entry.pointee.ifa_name) == name, let sa = entry.pointee.ifa_addr, sa.pointee.sa_family == sa_family_t(AF_INET) {
            return sa.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        }
        cursor = entry.pointee.ifa_next
    }
    throw MulticastError("interface \(name) has no IPv4 address")
}

/// A connected TCP stream carrying framed control messages.
final class ControlConnection: @unchecked Sendable {
    let fd: Int32
    let peer: String
    private let writeLock = NSLock()

    init(fd: Int32, peer: String) {
        self.fd = fd
        self.peer = peer
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    static func connect(host: String, port: UInt16, timeout: TimeInterval) throws -> ControlConnection {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw MulticastError("cannot resolve \(host)")
        }
        defer { freeaddrinfo(result) }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw socketError("socket") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        guard Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
            let e = socketError("cannot connect to \(host):\(port)")
            close(fd)
            throw e
        }
        return ControlConnection(fd: fd, peer: "\(host):\(port)")
    }

    func send(_ message: ControlMessage) throws {
        let bytes = message.encoded()
        writeLock.lock()
        defer { writeLock.unlock() }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw socketError("control connection to \(peer) lost") }
            done += n
        }
    }

    /// Sets how long `receive` waits before giving up with nil.
    func setReceiveTimeout(_ seconds: TimeInterval) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next message; nil on a timeout; throws when the peer closes or sends garbage.
    func receive() throws -> ControlMessage? {
        guard let header = try read(4) else { return nil }
        let length = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        guard length >= 1, length <= ControlMessage.maxFrame else { throw MulticastError("\(peer) sent a frame of \(length) bytes") }
        guard let body = try read(length, waitingForAll: true) else { throw MulticastError("\(peer) stalled mid-message") }
        return try ControlMessage.decode(body[...])
    }

    /// The buffer grows with what arrives, never ahead of it: a frame's length is only the
    /// peer's claim, and one claiming 64 MiB and sending nothing must not cost 64 MiB.
    private func read(_ count: Int, waitingForAll: Bool = false) throws -> [UInt8]? {
        var buffer: [UInt8] = []
        var piece = [UInt8](repeating: 0, count: min(count, 1 << 16))
        while buffer.count < count {
            let want = min(piece.count, count - buffer.count)
            let n = piece.withUnsafeMutableBytes { recv(fd, $0.baseAddress!, want, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                if buffer.isEmpty && !waitingForAll { return nil }
                if Interruption.requested { throw MulticastError("interrupted") }
                continue
            }
            guard n > 0 else { throw MulticastError("control connection to \(peer) closed") }
            buffer += piece[0..<n]
        }
        return buffer
    }
}
