import Foundation

/// Apple's progress style, `....10....20....` to `....100`: a dot every 2%, the figure every
/// 10%. Shown only when standard output is a terminal, unless forced on.
public final class ProgressBar: @unchecked Sendable {
    private let enabled: Bool
    private var printedSteps = 0
    private let lock = NSLock()

    public init(label: String, enabled: Bool = isatty(STDOUT_FILENO) != 0) {
        self.enabled = enabled
        if enabled { emit(label) }
    }

    public func update(_ done: UInt64, of total: UInt64) {
        guard enabled, total > 0 else { return }
        lock.lock()
        defer { lock.unlock() }
        let steps = Int(min(done, total) * 50 / total)
        while printedSteps < steps {
            printedSteps += 1
            emit(printedSteps % 5 == 0 ? String(printedSteps * 2) : ".")
        }
    }

    public func finish() {
        guard enabled else { return }
        lock.lock()
        let done = printedSteps >= 50
        lock.unlock()
        if !done { update(1, of: 1) }
        emit("\n")
    }

    private func emit(_ s: String) {
        FileHandle.standardOutput.write(Data(s.utf8))
    }
}
