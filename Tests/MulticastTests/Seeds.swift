import Foundation

/// A seed for a randomized test: ASR_TEST_SEED when set (to replay a failure), otherwise a
/// fresh one. Tests put it in every failure message.
func testSeed() -> UInt64 {
    if let text = ProcessInfo.processInfo.environment["ASR_TEST_SEED"], let seed = UInt64(text) { return seed }
    return UInt64.random(in: 0...UInt64.max)
}
