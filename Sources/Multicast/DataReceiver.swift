import SystemSupport
import SystemPackage
import Glibc

/// The multicast data socket of a client: joined to the group for the server's source address
/// only (source-specific: the kernel drops what other hosts send to the group), short receive
/// timeouts so the loop can report and notice silence. Datagrams arrive in batches
/// (`recvmmsg`, UDP GRO) into a fixed ring and are parsed where they lie.
final class DataReceiver {
    private let fd: Int32
    private var membership = ip_mreq_source()
    private let ring = DatagramRing()
    private var joined = false
    private let group: [UInt8]
    /// A server that could not name its source (zeros): any source is heard.
    private let anySource: Bool

    /// `rate`: the stream's bytes/s, to size the socket's buffer.
    init(group: [UInt8], source: [UInt8], port: UInt16, interfaceName: String?, rate: UInt64) throws(MulticastError) {
        let groupAddress = in_addr(s_addr: group.withUnsafeBytes { $0.load(as: UInt32.self) })
        let interface = try interfaceName.map(interfaceAddress) ?? in_addr(s_addr: INADDR_ANY)
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw .socket(.create, lastErrno()) }
        setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
        setOption(fd, SOL_SOCKET, SO_REUSEPORT, 1)
        // A second of data (the kernel doubles it for its overhead), so a moment when this
        // process is not scheduled loses nothing. Past the rmem_max limit where we may (root).
        let size = Int32(clamping: max(16 << 20, min(rate, 1 << 30)))
        if !setOption(fd, SOL_SOCKET, Kernel.receiveBufferForce, size) { setOption(fd, SOL_SOCKET, SO_RCVBUF, size) }
        // The server's GSO runs arrive whole where the kernel can keep them so; if it cannot,
        // datagrams arrive one by one, as before.
        setOption(fd, Int32(IPPROTO_UDP), Kernel.udpGRO, 1)
        do throws(Errno) {
            try bind(fd, groupAddress, port)  // bound to the group: only its traffic arrives
        } catch {
            close(fd)
            throw .socket(.bind(port: port), error)
        }
        membership.imr_multiaddr = groupAddress
        membership.imr_interface = interface
        membership.imr_sourceaddr = in_addr(s_addr: source.count == 4 ? source.withUnsafeBytes { $0.load(as: UInt32.self) } : 0)
        anySource = membership.imr_sourceaddr.s_addr == 0
        self.group = group
        do throws(MulticastError) {
            try join()
        } catch {
            close(fd)
            throw error
        }
        setTimeout(fd, SO_RCVTIMEO, 0.05)
    }

    /// Joins the group, unless joined.
    func join() throws(MulticastError) {
        guard !joined else { return }
        var any = ip_mreq(imr_multiaddr: membership.imr_multiaddr, imr_interface: membership.imr_interface)
        let result = anySource
            ? setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_MEMBERSHIP, &any, socklen_t(MemoryLayout<ip_mreq>.size))
            : setsockopt(fd, Int32(IPPROTO_IP), IP_ADD_SOURCE_MEMBERSHIP, &membership, socklen_t(MemoryLayout<ip_mreq_source>.size))
        guard result == 0 else {
            throw .socket(.join(group: group.map(String.init).joined(separator: ".")), lastErrno())
        }
        joined = true
    }

    deinit {
        leave()
        close(fd)
    }

    /// Hands `body` every well-formed packet queued, header parsed and payload in place (valid
    /// only during the call), after a short wait for the first.
    func receive(_ body: (DataPacketHeader, UnsafeRawBufferPointer) -> Void) {
        _ = try? ring.receive(from: fd) { datagram in
            guard let header = DataPacketHeader(datagram) else { return }
            body(header, UnsafeRawBufferPointer(rebasing: datagram[DataPacket.headerSize...]))
        }
    }

    /// Leaves the group: the stream stops reaching this host's interface for us.
    func leave() {
        guard joined else { return }
        joined = false
        var any = ip_mreq(imr_multiaddr: membership.imr_multiaddr, imr_interface: membership.imr_interface)
        _ = anySource
            ? setsockopt(fd, Int32(IPPROTO_IP), IP_DROP_MEMBERSHIP, &any, socklen_t(MemoryLayout<ip_mreq>.size))
            : setsockopt(fd, Int32(IPPROTO_IP), IP_DROP_SOURCE_MEMBERSHIP, &membership, socklen_t(MemoryLayout<ip_mreq_source>.size))
    }
}
