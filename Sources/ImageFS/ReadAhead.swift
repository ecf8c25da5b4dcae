import SystemSupport
import Foundation
import Synchronization
import UDIF

/// Decodes the chunks after a sequential reader's position on other cores, so a reader of
/// `disk.img` waits for one decode at the start and then mostly for copies. Random readers
/// trigger nothing.
final class ReadAhead: Sendable {
    let image: UDIFImage
    /// Chunks decoded ahead of a sequential reader.
    let depth: Int
    /// Where each open handle's last read ended, in disk bytes.
    private let lastEnd = Locked<[UInt64: UInt64]>([:])
    /// The kernel runs read-ahead requests of one reader on several threads, so they arrive
    /// a little out of order; this much slack still counts as sequential.
    static let slack: UInt64 = 4 << 20

    init(image: UDIFImage, depth: Int = 2 * ProcessInfo.processInfo.activeProcessorCount + 2) {
        self.image = image
        self.depth = depth
    }

    /// `starts`: this read is at the start of what the handle reads (a file under volumes/
    /// starts anywhere on the disk), so it counts as the start of a sequential run.
    func noteRead(handle: UInt64, at offset: UInt64, count: Int, starts: Bool = false) {
        let end = offset + UInt64(count)
        let sequential = lastEnd.withLock { ends -> Bool in
            let prior = ends[handle]
            ends[handle] = max(prior ?? 0, end)
            guard let prior else { return offset == 0 || starts }
            return offset + Self.slack >= prior && offset <= prior + Self.slack
        }
        guard sequential, let next = image.chunkIndex(containing: end) else { return }
        for i in next..<min(next + depth, image.chunks.count) { image.prefetch(i) }
    }

    func forget(handle: UInt64) {
        _ = lastEnd.withLock { $0.removeValue(forKey: handle) }
    }
}
