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
