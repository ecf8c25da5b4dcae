import CLinux
import Synchronization

/// `Mutex` that ThreadSanitizer can see. On Linux a contended `Mutex` is handed over by the
/// kernel (a priority-inheritance futex), a release/acquire pair TSan never observes, so it
/// reports races on correctly locked state; the annotations below say what the lock means.
/// Outside a TSan build they are two calls that return at once.
package struct Locked<Value: ~Copyable>: ~Copyable, Sendable {
    private let mutex: Mutex<Value>

    package init(_ value: consuming sending Value) { mutex = Mutex(value) }

    package borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        // The lock's own address names it to TSan; a borrowed ~Copyable value is never copied.
        let token = withUnsafePointer(to: self) { UnsafeMutableRawPointer(mutating: $0) }
        return try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            asr_tsan_acquire(token)
            defer { asr_tsan_release(token) }
            return try body(&value)
        }
    }
}
