import SystemSupport
import Foundation
import Synchronization

/// Everything a workflow tells the user, in one of three styles:
/// - `human`: Apple's TAB-indented lines (`\tValidating target...done`) and progress bars
///   `....10....20....` to `....100` (a dot every 2%, the figure every 10%);
/// - `puppet`: `--puppetstrings`, TAB-separated lines for wrapper programs (see asr(1));
/// - `quiet`: nothing.
public final class Reporter: Sendable {
    public enum Style: Sendable { case human(bars: Bool), puppet, quiet }

    public let style: Style
    /// Told of every progress update, with its phase's key (`restore`, `verify`): a multicast
    /// client passes its read-back's progress on to the server.
    public let observer: (@Sendable (_ key: String, _ done: UInt64, _ total: UInt64) -> Void)?
    /// The progress phase under way; held while emitting, so lines from threads never interleave.
    private let phase = Locked<(key: String, shown: Int)?>(nil)

    public init(_ style: Style, observer: (@Sendable (_ key: String, _ done: UInt64, _ total: UInt64) -> Void)? = nil) {
        self.style = style
        self.observer = observer
    }

    /// Bars only on a terminal: what `create` and `convert` do.
    public static var terminalOnly: Reporter { Reporter(.human(bars: isatty(STDOUT_FILENO) != 0)) }

    /// Runs `work` as a named step: `\tValidating target...done`.
    public func step<T>(_ label: String, _ work: () throws -> T) rethrows -> T {
        if case .human = style { emit("\t\(label)...") }
        do {
            let value = try work()
            switch style {
            case .human: emit("done\n")
            case .puppet: emit("PINF\t\(label)...done\n")
            case .quiet: break
            }
            return value
        } catch {
            if case .human = style { emit("\n") }
            throw error
        }
    }

    /// A line of information: `\ttext` or `PINF\ttext`.
    public func info(_ text: String) {
        switch style {
        case .human: emit("\t\(text)\n")
        case .puppet: emit("PINF\t\(text)\n")
        case .quiet: break
        }
    }

    /// Text as it is, for a line a workflow builds piece by piece (multicast's pass marks);
    /// people's style only.
    public func write(_ text: String) {
        if case .human = style { emit(text) }
    }

    /// Starts a progress phase: `label` for people (`Restoring  `), `key` for programs (`restore`).
    public func begin(_ label: String, key: String) {
        phase.withLock { phase in
            phase = (key, 0)
            switch style {
            case .human(let bars): if bars { emit(label) }
            case .puppet: emit("PSTT\t0\t100\t\(key)\n")
            case .quiet: break
            }
        }
    }

    public func update(_ done: UInt64, of total: UInt64) {
        let key = phase.withLock { phase in
            advance(&phase, done, of: total)
            return phase?.key
        }
        if let key, let observer { observer(key, done, total) }
    }

    private func advance(_ phase: inout (key: String, shown: Int)?, _ done: UInt64, of total: UInt64) {
        guard var p = phase, total > 0 else { return }
        switch style {
        case .human(let bars):
            guard bars else { return }
            let steps = Int(min(done, total) * 50 / total)
            while p.shown < steps {
                p.shown += 1
                emit(p.shown % 5 == 0 ? String(p.shown * 2) : ".")
            }
        case .puppet:
            let percent = Int(min(done, total) * 100 / total)
            if percent > p.shown {
                p.shown = percent
                emit("PPRG\t\(percent)\t100\t\(p.key)\n")
            }
        case .quiet: break
        }
        phase = p
    }

    public func end() {
        phase.withLock { phase in
            advance(&phase, 1, of: 1)
            guard let p = phase else { return }
            switch style {
            case .human(let bars): if bars { emit("\n") }
            case .puppet: emit("PSTP\t100\t100\t\(p.key)\n")
            case .quiet: break
            }
            phase = nil
        }
    }

    /// After an error in a phase: finish the bar's line so the error starts on its own.
    public func abandon() {
        phase.withLock { phase in
            if phase != nil, case .human(true) = style { emit("\n") }
            phase = nil
        }
    }

    private func emit(_ s: String) {
        FileHandle.standardOutput.write(Data(s.utf8))
    }
}
