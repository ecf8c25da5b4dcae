import SystemSupport
import Foundation

/// Sends a message every `interval` from a thread of its own until stopped: the server hears
/// how a client's read-back goes while the restoring thread verifies. A failed send ends it.
final class Heartbeat: Sendable {
    private let stopped = Monitor(false)
    private let ended = Monitor(false)

    init(connection: ControlConnection, interval: TimeInterval, message: @escaping @Sendable () -> ControlMessage) {
        Thread { [stopped, ended] in
            defer { ended.update { $0 = true } }
            while true {
                do { try connection.send(message()) } catch { return }
                let stop = stopped.wait(until: { $0 }, deadline: Date().addingTimeInterval(interval)) { stop, _ in stop }
                if stop { return }
            }
        }.start()
    }

    /// Returns once the last message is sent: nothing follows what the caller sends next.
    func stop() {
        stopped.update { $0 = true }
        ended.wait(until: { $0 }) { _ in }
    }
}
