import Foundation
@testable import Imaging
import SystemSupport
import TestSupport
import Testing
import UDIF

/// `Interruption` (what SIGINT/SIGTERM set in `asr`) is one flag for the whole process: set
/// here, it would also stop whatever other suite runs at that moment. So the interrupted
/// operations run in a child process of this test bundle, filtered to that one suite.
@Suite struct InterruptionTests {
    static let isChild = ProcessInfo.processInfo.environment["ASR_INTERRUPTION_CHILD"] == "1"

    @Test(.enabled(if: !isChild)) func interruptedOperationsCleanUpInAProcessOfTheirOwn() throws {
        let dir = TemporaryDirectory()
        _ = FileManager.default.createFile(atPath: dir.file("out"), contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        p.arguments = ["--testing-library", "swift-testing", "--filter", "InterruptedOperations"]
        p.environment = ProcessInfo.processInfo.environment.merging(["ASR_INTERRUPTION_CHILD": "1", "NO_COLOR": "1"]) { $1 }
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: dir.file("out"))
        p.standardError = p.standardOutput
        try p.run()
        // A hang must fail the test, not the whole run.
        let deadline = Date().addingTimeInterval(300)
        while p.isRunning && Date() < deadline { usleep(20_000) }
        if p.isRunning { kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
        let output = (try? String(contentsOfFile: dir.file("out"), encoding: .utf8)) ?? ""
        #expect(p.terminationStatus == 0, "child run failed:\n\(output)")
        // Not vacuous: every test of the suite ran (a skipped test counts in "Test run with N tests").
        let ran = output.split(separator: "\n").filter { $0.contains("() passed after") }
        #expect(ran.count == InterruptedOperations.count, "\(output)")
        #expect(!output.contains("skipped"), "\(output)")
    }
}

/// Each test requests the interruption at a known point and checks what is left behind.
/// Runs only in the child process above.
@Suite(.serialized, .enabled(if: InterruptionTests.isChild))
struct InterruptedOperations {
    static let count = 4
    let reporter = Reporter(.quiet)

    init() { Interruption.clear() }

    /// Interrupted before the first chunk: the image is untouched, the temporary copy gone,
    /// and a later scan works.
    @Test func scanInterruptedAtTheStart() throws {
        let dir = TemporaryDirectory()
        let path = try makeImage(sampleDisk(mebibytes: 6), in: dir)
        let before = try contents(path)
        Interruption.request()
        let e = #expect(throws: SystemError.self) { try ImageScanner(reporter: reporter).scan(path) }
        #expect(e == .interrupted)
        Interruption.clear()
        #expect(try contents(path) == before)
        #expect(try partialFiles(in: dir).isEmpty)
        #expect(try ImageScanner(reporter: reporter).scan(path) == .scanned)
        try ImageVerifier(reporter: reporter).verify(path)
    }

    /// Interrupted while reading chunk 3 of 8, with the rewritten copy under way: the scan's
    /// own pieces (`ImageRewriter`, `computeScan`) over a file that requests the interruption.
    @Test func scanInterruptedMidway() throws {
        let dir = TemporaryDirectory()
        let path = try makeImage(sampleDisk(mebibytes: 8), in: dir, format: .udro)
        let before = try contents(path)
        let at = try UDIFImage(path: path).chunks[3].fileOffset
        let file = HookedFile(try FileIO(path: path, flags: O_RDONLY)) { offset in
            guard offset == at else { return false }
            Interruption.request()
            return true
        }
        do {
            let image = try UDIFImage(file: file)
            let rewriter = try ImageRewriter(image, replacing: path, reorder: true)
            #expect(try partialFiles(in: dir).count == 1, "the new image is being written")
            let e = #expect(throws: SystemError.self) { _ = try ImageScanner(reporter: reporter).computeScan(image, copyingInto: rewriter) }
            #expect(e == .interrupted)
        }
        #expect(Interruption.requested, "the hook ran")
        Interruption.clear()
        #expect(try contents(path) == before)
        #expect(try partialFiles(in: dir).isEmpty)
    }

    /// Interrupted once the target is validated and before anything is written (from the
    /// erase confirmation): the target exists, holds only zeros, and the error says it was erased.
    @Test func restoreInterruptedBeforeWriting() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 4)
        let image = try scannedImage(disk, in: dir)
        var restorer = Restorer(reporter: reporter)
        restorer.confirmErase = { _ in Interruption.request(); return true }
        let target = dir.file("t.raw")
        let e = #expect(throws: ImagingError.self) { try restorer.restore(source: image, target: target) }
        Interruption.clear()
        guard case .targetErased(let path, let cause)? = e, cause as? SystemError == .interrupted else {
            Issue.record("wrong error: \(String(describing: e))"); return
        }
        #expect(path == target)
        #expect(!e!.description.contains("\n"))
        let left = try contents(target)
        #expect(left.count == disk.count && left.allSatisfy { $0 == 0 })
    }

    /// Interrupted after two of four MiB were written by a pipeline, as a multicast client
    /// writes through `RestoreTarget`: the first and last MiB are wiped, the error says so.
    @Test func restoreInterruptedMidWrite() throws {
        let dir = TemporaryDirectory()
        let disk = sampleDisk(mebibytes: 4)
        let target = try RestoreTarget.validate(dir.file("t.raw"), source: nil)
        let e = #expect(throws: ImagingError.self) {
            try target.restore(diskBytes: UInt64(disk.count), verifying: nil, reporter: reporter) { file, _ in
                try orderedParallelMap(count: 4) { m in Array(disk[(m * mib)..<((m + 1) * mib)]) } consume: { m, bytes in
                    try file.write(bytes, at: UInt64(m * mib))
                    if m == 1 { Interruption.request() }
                }
            }
        }
        Interruption.clear()
        guard case .targetErased(_, let cause)? = e, cause as? SystemError == .interrupted else {
            Issue.record("wrong error: \(String(describing: e))"); return
        }
        let left = try contents(dir.file("t.raw"))
        #expect(try endsAreZero(dir.file("t.raw")))
        #expect(left[mib..<(2 * mib)] == disk[mib..<(2 * mib)], "MiB 1 was written before the interruption")
        #expect(left[(2 * mib)...].allSatisfy { $0 == 0 }, "nothing after it")
    }
}
