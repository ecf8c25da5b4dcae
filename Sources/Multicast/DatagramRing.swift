import CLinux
import SystemPackage
import SystemSupport
import Glibc

/// Fixed receive buffers for a UDP socket: one `recvmmsg` fills as many as are queued, and
/// with UDP_GRO each may hold a run of same-size datagrams the kernel kept together (what the
/// server's GSO sent as one). Nothing is allocated per packet: each datagram is lent to the
/// caller where it lies, valid until the next `receive`.
package final class DatagramRing {
    /// Room for the largest UDP datagram, so a GRO run is never truncated.
    package static let slotSize = 1 << 16
    package let slots: Int
    private let memory: UnsafeMutableRawBufferPointer
    private let buffers: UnsafeMutablePointer<UnsafeMutableRawPointer?>
    private let lengths: UnsafeMutablePointer<Int32>
    private let segments: UnsafeMutablePointer<Int32>

    package init(slots: Int = 32) {
        self.slots = max(1, min(slots, 64))  // the shim's limit
        memory = .allocate(byteCount: self.slots * Self.slotSize, alignment: 4096)
        buffers = .allocate(capacity: self.slots)
        lengths = .allocate(capacity: self.slots)
        segments = .allocate(capacity: self.slots)
        for i in 0..<self.slots { buffers[i] = memory.baseAddress! + i * Self.slotSize }
    }

    deinit {
        memory.deallocate()
        buffers.deallocate()
        lengths.deallocate()
        segments.deallocate()
    }

    /// Waits up to the socket's receive timeout for data, then hands `body` every datagram
    /// queued (GRO runs split back into their datagrams). Returns how many came; 0 after a
    /// timeout. Truncated ones are skipped.
    @discardableResult
    package func receive(from fd: Int32, _ body: (UnsafeRawBufferPointer) -> Void) throws(Errno) -> Int {
        let n: Int32
        do {
            n = try retryingInterrupts { asr_receive_batch(fd, buffers, Int32(Self.slotSize), Int32(slots), lengths, segments) }
        } catch where error == .resourceTemporarilyUnavailable {
            return 0
        }
        var count = 0
        for i in 0..<Int(n) where lengths[i] >= 0 {
            let datagram = UnsafeRawBufferPointer(start: buffers[i], count: Int(lengths[i]))
            count += Self.split(datagram, segmentSize: Int(segments[i]), body)
        }
        return count
    }

    /// The datagrams of a GRO run: `segmentSize` bytes each, the last possibly shorter; the
    /// whole as one when there is no segment size. Returns how many.
    @discardableResult
    package static func split(_ run: UnsafeRawBufferPointer, segmentSize: Int, _ body: (UnsafeRawBufferPointer) -> Void) -> Int {
        guard segmentSize > 0, segmentSize < run.count else {
            body(run)
            return 1
        }
        var count = 0
        for start in stride(from: 0, to: run.count, by: segmentSize) {
            body(UnsafeRawBufferPointer(rebasing: run[start..<min(start + segmentSize, run.count)]))
            count += 1
        }
        return count
    }
}
