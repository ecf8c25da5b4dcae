import Imaging

/// One line per pass: `\tPass 2  ....x.....`, a mark per 2% of the chunks as the pass goes
/// by it: `.` when every chunk of that section is in, `x` when some were missed. With
/// --puppetstrings: PPRG lines of the share of chunks written.
struct PassProgress {
    let chunks: Int
    let reporter: Reporter
    let sections = 50
    private var marks = 0
    private var open = false

    init(chunks: Int, reporter: Reporter) {
        self.chunks = chunks
        self.reporter = reporter
        if case .puppet = reporter.style { reporter.begin("", key: "receive") }
    }

    private var human: Bool { if case .human = reporter.style { true } else { false } }

    /// Last chunk index of a section.
    private func end(of section: Int) -> Int { max((section + 1) * chunks / sections, section * chunks / sections + 1) - 1 }

    mutating func startPass(_ pass: UInt32, _ assembler: ChunkAssembler) {
        closeLine(assembler)
        // Everything is in and only being written: no pass left to show.
        guard human, assembler.received.contains(false) else { return }
        emit("\tPass \(pass + 1)  ")
        open = true
        marks = 0
    }

    /// The pass has gone past chunk `index`: mark every section it finished.
    mutating func reached(_ index: Int, _ assembler: ChunkAssembler) {
        guard human, open else { return }
        while marks < sections && end(of: marks) < index { mark(assembler) }
    }

    mutating func completed(_ count: Int) {
        if case .puppet = reporter.style { reporter.update(UInt64(count), of: UInt64(chunks)) }
    }

    mutating func note(_ text: String) {
        if open { emit("\n"); open = false }
        reporter.info(text)
    }

    mutating func finish(_ assembler: ChunkAssembler) {
        closeLine(assembler)
        if case .puppet = reporter.style { reporter.end() }
    }

    private mutating func closeLine(_ assembler: ChunkAssembler) {
        guard open else { return }
        while marks < sections { mark(assembler) }
        emit("\n")
        open = false
    }

    private mutating func mark(_ assembler: ChunkAssembler) {
        let lo = marks * chunks / sections
        let hi = min(end(of: marks), chunks - 1)
        emit(lo > hi || (lo...hi).allSatisfy { assembler.received[$0] } ? "." : "x")
        marks += 1
    }

    private func emit(_ s: String) { reporter.write(s) }
}
