import Foundation
import Synchronization

/// Set from a SIGINT/SIGTERM handler. Every parallel pipeline stops at its next result, so
/// long operations unwind through their normal cleanup (temporary files, target wipe).
public enum Interruption {
    private static let flag = Atomic<Bool>(false)
    public static var requested: Bool { flag.load(ordering: .relaxed) }
    public static func request() { flag.store(true, ordering: .relaxed) }
}

/// Runs `produce` for 0..<count on all cores and hands the results to `consume` on the
/// calling thread in index order. At most `window` results exist at once, so memory stays
/// bounded whatever `count` is. The first error stops the workers and is rethrown.
public func orderedParallelMap<R: Sendable>(
    count: Int,
    workers: Int = ProcessInfo.processInfo.activeProcessorCount,
    window: Int? = nil,
    produce: @escaping @Sendable (Int) throws -> R,
    consume: (Int, R) throws -> Void
) throws {
    guard count > 0 else { return }
    let workers = max(1, min(workers, count))
    let state = PipelineState<R>(window: window ?? workers * 3)
    let group = DispatchGroup()
    for _ in 0..<workers {
        DispatchQueue.global().async(group: group) {
            while let index = state.take(limit: count) {
                do { state.finish(index, .success(try produce(index))) } catch { state.finish(index, .failure(error)) }
            }
        }
    }
    defer {
        state.cancel()
        group.wait()
    }
    for index in 0..<count {
        if Interruption.requested { throw UDIFError("interrupted") }
        switch state.await(index) {
        case .success(let r): try consume(index, r)
        case .failure(let e): throw e
        }
    }
}

private final class PipelineState<R: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var nextToTake = 0
    private var nextToConsume = 0
    private var cancelled = false
    private var ready: [Int: Result<R, any Error>] = [:]
    private let window: Int

    init(window: Int) { self.window = max(1, window) }

    func take(limit: Int) -> Int? {
        condition.lock()
        defer { condition.unlock() }
        while !cancelled && nextToTake < limit && nextToTake >= nextToConsume + window { condition.wait() }
        guard !cancelled, nextToTake < limit else { return nil }
        nextToTake += 1
        return nextToTake - 1
    }

    func finish(_ index: Int, _ result: Result<R, any Error>) {
        condition.lock()
        ready[index] = result
        if case .failure = result { cancelled = true }
        condition.broadcast()
        condition.unlock()
    }

    func await(_ index: Int) -> Result<R, any Error> {
        condition.lock()
        defer { condition.unlock() }
        while ready[index] == nil { condition.wait() }
        nextToConsume = index + 1
        condition.broadcast()
        return ready.removeValue(forKey: index)!
    }

    func cancel() {
        condition.lock()
        cancelled = true
        condition.broadcast()
        condition.unlock()
    }
}
