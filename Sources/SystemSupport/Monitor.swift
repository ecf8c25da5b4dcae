import Foundation

/// State behind a lock with a condition to wait on: what `Locked` is, plus waiting. Every
/// type that must block until another thread changes shared state builds on this one.
package final class Monitor<State>: @unchecked Sendable {  // `state` is touched only under the condition's lock
    private let condition = NSCondition()
    private var state: State

    package init(_ state: State) { self.state = state }

    /// Runs `body` under the lock and wakes every waiter afterwards.
    package func update<R>(_ body: (inout State) throws -> R) rethrows -> R {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        return try body(&state)
    }

    /// Waits until `ready` holds, then runs `body` under the same lock and wakes the others.
    package func wait<R>(until ready: (State) -> Bool, then body: (inout State) throws -> R) rethrows -> R {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        while !ready(state) { condition.wait() }
        return try body(&state)
    }

    /// As `wait(until:then:)`, giving up at `deadline`: `body` then sees the state as it is.
    package func wait<R>(until ready: (State) -> Bool, deadline: Date, then body: (inout State, Bool) throws -> R) rethrows -> R {
        condition.lock()
        defer {
            condition.broadcast()
            condition.unlock()
        }
        var met = ready(state)
        while !met && condition.wait(until: deadline) { met = ready(state) }
        if !met { met = ready(state) }
        return try body(&state, met)
    }

    /// Reads under the lock without waking anyone.
    package func read<R>(_ body: (State) throws -> R) rethrows -> R {
        condition.lock()
        defer { condition.unlock() }
        return try body(state)
    }
}
