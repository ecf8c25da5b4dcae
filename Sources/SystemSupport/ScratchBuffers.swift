import Synchronization

/// Reusable buffers for reads served one after another (FUSE requests): a fresh 1 MiB buffer
/// costs 256 page faults and a kernel memset each time, more than the read itself.
public enum ScratchBuffers {
    /// A buffer handed between threads; only one borrower holds it at a time.
    private struct Buffer: @unchecked Sendable { let memory: UnsafeMutableRawBufferPointer }  // a raw buffer lent to one borrower at a time
    private static let spare = Locked<[Buffer]>([])
    private static let capacity = 1 << 20
    private static let spareLimit = 32

    public static func borrow<R>(_ count: Int, _ body: (UnsafeMutableRawBufferPointer) throws -> R) throws -> R {
        guard count <= capacity else {
            let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
            defer { memory.deallocate() }
            return try body(memory)
        }
        let buffer = spare.withLock { $0.popLast() } ?? Buffer(memory: .allocate(byteCount: capacity, alignment: 4096))
        defer {
            let kept = spare.withLock { list -> Bool in
                guard list.count < spareLimit else { return false }
                list.append(buffer)
                return true
            }
            if !kept { buffer.memory.deallocate() }
        }
        return try body(UnsafeMutableRawBufferPointer(rebasing: buffer.memory[0..<count]))
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
