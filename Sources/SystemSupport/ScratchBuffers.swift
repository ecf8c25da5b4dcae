import Synchronization

/// Page-aligned memory at a fixed address that goes back to a shared pool when its last
/// reference goes: a fresh 1 MiB buffer costs 256 page faults and a kernel memset each time,
/// more than decoding or reading into it. Decoded UDIF chunks, multicast chunks being
/// assembled and scratch reads all draw from here.
public final class PooledBuffer: @unchecked Sendable {  // owns its memory; one writer, then readers
    public let storage: UnsafeMutableRawBufferPointer
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(storage) }

    /// Spare memory by capacity; at most `spareBytes` of it is kept.
    private struct Spare: @unchecked Sendable { let memory: UnsafeMutableRawBufferPointer }  // memory no buffer uses
    private static let spare = Locked<(list: [Spare], bytes: Int)>(([], 0))
    private static let spareBytes = 64 << 20

    public init(count: Int) {
        let capacity = Self.capacity(count)
        let reused = Self.spare.withLock { pool -> Spare? in
            guard let i = pool.list.lastIndex(where: { $0.memory.count == capacity }) else { return nil }
            pool.bytes -= capacity
            return pool.list.remove(at: i)
        }
        let memory = reused?.memory ?? .allocate(byteCount: capacity, alignment: 4096)
        storage = UnsafeMutableRawBufferPointer(rebasing: memory[0..<count])
    }

    deinit {
        let whole = Spare(memory: UnsafeMutableRawBufferPointer(start: storage.baseAddress, count: Self.capacity(storage.count)))
        let kept = Self.spare.withLock { pool -> Bool in
            guard pool.bytes + whole.memory.count <= Self.spareBytes else { return false }
            pool.bytes += whole.memory.count
            pool.list.append(whole)
            return true
        }
        if !kept { whole.memory.deallocate() }
    }

    /// Sizes rounded up to a power of two (64 KiB at least), so chunks of any size reuse memory.
    static func capacity(_ count: Int) -> Int { max(64 << 10, 1 << (Int.bitWidth - max(0, count - 1).leadingZeroBitCount)) }
}

/// A pooled buffer for the length of one call, for reads served one after another.
public enum ScratchBuffers {
    public static func borrow<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) rethrows -> R {
        let buffer = PooledBuffer(count: count)
        return try withExtendedLifetime(buffer) { try body(buffer.storage) }
    }
}

/// A page-aligned buffer owned by one thread at a time; freed when the last reference goes.
public final class PageBuffer: @unchecked Sendable {  // handed between threads, one owner at a time
    public let memory: UnsafeMutableRawBufferPointer

    public init(count: Int) { memory = .allocate(byteCount: max(count, 1), alignment: 4096) }
    deinit { memory.deallocate() }

    /// The first `count` bytes.
    public func prefix(_ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: memory[0..<count])
    }
}

/// Buffers of one size handed out and taken back, so a pipeline touches the same pages
/// again instead of faulting in fresh ones for every chunk. A buffer never given back
/// (a failed chunk) is simply freed.
public final class BufferPool: Sendable {
    public let bufferSize: Int
    private let keep: Int
    private let spare = Locked<[PageBuffer]>([])

    /// `keep`: how many returned buffers to hold for reuse.
    public init(bufferSize: Int, keep: Int) {
        self.bufferSize = bufferSize
        self.keep = keep
    }

    public func take() -> PageBuffer {
        spare.withLock { $0.popLast() } ?? PageBuffer(count: bufferSize)
    }

    public func giveBack(_ buffer: PageBuffer) {
        spare.withLock { if $0.count < keep { $0.append(buffer) } }
    }
}
