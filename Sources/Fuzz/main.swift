// Fuzz: the runner behind `make fuzz` (fuzz/run.sh). Linked with -sanitize=fuzzer,address it
// is a libFuzzer binary for the harness ASR_FUZZ_TARGET names; built plainly (make test builds
// every target) it runs the same harness under the seeded mutation loop instead.
//
//   Fuzz --list                        the harness names
//   Fuzz --write-seeds DIR FILE...     seed corpora DIR/<harness>/ and dictionaries DIR/<harness>.dict
//                                      (FILE: a .dmg, or a raw filesystem such as apfs.raw)
//   ASR_FUZZ_TARGET=NAME Fuzz [libFuzzer flags] CORPUS_DIR...

import CFuzzer
import Foundation
import FuzzTargets

/// Read once, where the C callback (which cannot capture) can reach it.
enum Selected {
    static let target = ProcessInfo.processInfo.environment["ASR_FUZZ_TARGET"].flatMap(FuzzTarget.init(rawValue:))
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("Fuzz: \(message)\n".utf8))
    exit(2)
}

func writeSeeds(to dir: String, images: [String]) {
    let bytes = images.map { path -> [UInt8] in
        guard let data = FileManager.default.contents(atPath: path) else { fail("cannot read \(path)") }
        return [UInt8](data)
    }
    let raw = images.indices.filter { !images[$0].hasSuffix(".dmg") }
    let seeds = Seeds(images: bytes.indices.filter { !raw.contains($0) }.map { bytes[$0] }, filesystems: raw.map { bytes[$0] })
    for target in FuzzTarget.allCases {
        let corpus = dir + "/" + target.rawValue
        try? FileManager.default.createDirectory(atPath: corpus, withIntermediateDirectories: true)
        for (i, seed) in seeds.inputs(for: target).enumerated() {
            _ = FileManager.default.createFile(atPath: corpus + "/seed-\(i)", contents: Data(seed))
        }
        _ = FileManager.default.createFile(atPath: dir + "/" + target.rawValue + ".dict", contents: Data(target.dictionaryFile.utf8))
    }
}

/// Without libFuzzer: mutants of the corpus files for -max_total_time seconds, reported in
/// libFuzzer's words so fuzz/run.sh reads either.
func mutationLoop(_ target: FuzzTarget, arguments: [String]) -> Int32 {
    var seconds = 60.0
    var seeds: [[UInt8]] = []
    for a in arguments {
        if a.hasPrefix("-max_total_time=") { seconds = Double(a.dropFirst(16)) ?? seconds }
        guard !a.hasPrefix("-"), let names = try? FileManager.default.contentsOfDirectory(atPath: a) else { continue }
        for name in names.sorted() {
            if let data = FileManager.default.contents(atPath: a + "/" + name) { seeds.append([UInt8](data)) }
        }
    }
    print("Fuzz: built without libFuzzer; seeded mutation loop over \(seeds.count) inputs for \(Int(seconds)) s")
    let run = MutationRun.run(target, seeds: seeds, seed: UInt64(Date().timeIntervalSince1970), seconds: seconds)
    for (i, f) in run.failures.enumerated() {
        _ = FileManager.default.createFile(atPath: "crash-\(target)-\(i)", contents: Data(f.input))
        print("==failure== \(f.failure) (input in crash-\(target)-\(i))")
    }
    print("stat::number_of_executed_units: \(run.executions)")
    print("stat::average_exec_per_sec:     \(Int(Double(run.executions) / max(run.seconds, 0.001)))")
    return run.failures.isEmpty ? 0 : 1
}

let arguments = CommandLine.arguments
if arguments.count == 2 && arguments[1] == "--list" {
    print(FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))
    exit(0)
}
if arguments.count >= 3 && arguments[1] == "--write-seeds" {
    writeSeeds(to: arguments[2], images: Array(arguments.dropFirst(3)))
    exit(0)
}
guard let target = Selected.target else {
    fail("set ASR_FUZZ_TARGET to one of: " + FuzzTarget.allCases.map(\.rawValue).joined(separator: " "))
}
guard asr_have_libfuzzer() != 0 else { exit(mutationLoop(target, arguments: Array(arguments.dropFirst()))) }

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
    let input = size == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: data, count: size))
    do {
        try Selected.target!.run(input)
    } catch {
        fatalError("\(Selected.target!): \(error)")  // libFuzzer saves the input as a crash
    }
    return 0
})
