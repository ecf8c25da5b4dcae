import Foundation
import Synchronization

/// Set from a SIGINT/SIGTERM handler. Every parallel pipeline stops at its next result, so
/// long operations unwind through their normal cleanup (temporary files, target wipe).
public enum Interruption {
    private static let flag = Atomic<Bool>(false)
    public static var requested: Bool { flag.load(ordering: .relaxed) }
    public static func request() { flag.store(true, ordering: .relaxed) }
    /// For tests, which interrupt an operation and then run another in the same process.
    package static func clear() { flag.store(false, ordering: .relaxed) }
}

/// Runs `produce` for 0..<count on all cores and hands the results to `consume` on the
/// calling thread in index order. At most `window` results exist at once, so memory stays
/// bounded whatever `count` is. The first error stops the workers and is rethrown.
/// `ownThreads`: workers that mostly wait (on the network) get threads of their own. On Linux
/// a global queue runs only about as many blocks at once as there are cores, so eight
/// workers there would keep only two requests in flight on a 2-core machine.
public func orderedParallelMap<R: Sendable>(
    count: Int,
    workers: Int = ProcessInfo.processInfo.activeProcessorCount,
    window: Int? = nil,
    ownThreads: Bool = false,
    produce: @escaping @Sendable (Int) throws -> R,
    consume: (Int, R) throws -> Void
) throws {
    guard count > 0 else { return }
    let workers = max(1, min(workers, count))
    let window = max(1, window ?? workers * 3)
    let state = Monitor(PipelineState<R>())
    let group = DispatchGroup()
    let work: @Sendable () -> Void = {
        while let index = state.wait(until: { $0.cancelled || $0.nextToTake >= count || $0.nextToTake < $0.nextToConsume + window },
                                     then: { $0.take(limit: count) }) {
            let result = Result { try produce(index) }
            state.update { s in
                s.ready[index] = result
                if case .failure = result { s.cancelled = true }
            }
        }
    }
    for _ in 0..<workers {
        if ownThreads {
            group.enter()
            Thread {
                work()
                group.leave()
            }.start()
        } else {
            DispatchQueue.global().async(group: group, execute: work)
        }
    }
    defer {
        state.update { $0.cancelled = true }
        group.wait()
    }
    for index in 0..<count {
        if Interruption.requested { throw SystemError.interrupted }
        let result = state.wait(until: { $0.ready[index] != nil }) { s in
            s.nextToConsume = index + 1
            return s.ready.removeValue(forKey: index)!
        }
        try consume(index, result.get())
    }
}

private struct PipelineState<R: Sendable>: Sendable {
    var nextToTake = 0
    var nextToConsume = 0
    var cancelled = false
    var ready: [Int: Result<R, any Error>] = [:]

    mutating func take(limit: Int) -> Int? {
        guard !cancelled, nextToTake < limit else { return nil }
        nextToTake += 1
        return nextToTake - 1
    }
}
